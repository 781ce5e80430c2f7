"""The voices a server offers, and the table of voice families that can load them.

``BACKENDS`` maps a voice kind to ``"module:Class"``; a backend's module is
imported only when a voice of its kind is loaded, so a Piper-only server never
imports torch.  A new voice family is one folder under ``engine/backends/``
plus one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from streamvox.engine.api import Backend, UnknownBackendError, UnknownVoiceError, Voice, VoiceLoadError

BACKENDS: dict[str, str] = {
    "piper": "streamvox.engine.backends.piper.backend:PiperBackend",
    "gpt-sovits": "streamvox.engine.backends.gpt_sovits.backend:GptSovitsBackend",
    "dia": "streamvox.engine.backends.dia.backend:DiaBackend",
}
BUNDLED_KIND = "piper"
"""The family whose bundled voice is served (first, as the default) unless told otherwise."""


@dataclass(frozen=True)
class VoiceSpec:
    """A voice to load: its family and a local path (a file or a directory, as the family takes)."""

    kind: str
    path: str

    @classmethod
    def parse(cls, text: str) -> VoiceSpec:
        """``KIND=PATH`` (as ``--voice-dir`` takes it)."""
        kind, sep, path = text.partition("=")
        if not sep or not kind or not path:
            raise ValueError(f"expected KIND=PATH, got {text!r} (kinds: {', '.join(BACKENDS)})")
        if kind not in BACKENDS:
            raise ValueError(f"unknown voice kind {kind!r} (kinds: {', '.join(BACKENDS)})")
        return cls(kind, path)


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


def load_backend(kind: str) -> Backend:
    """A fresh backend of ``kind``, its module imported now."""
    try:
        target = BACKENDS[kind]
    except KeyError:
        raise UnknownBackendError(f"unknown voice kind {kind!r} (kinds: {', '.join(BACKENDS)})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)()


class VoiceRegistry:
    """Loaded voices by id, and one backend instance per kind in use.

    Built before serving, read-only afterwards: safe to share between threads."""

    def __init__(self) -> None:
        self._voices: dict[str, Voice] = {}
        self._backends: dict[str, Backend] = {}
        self.default_id: str | None = None

    @classmethod
    def load(
        cls,
        specs: Iterable[VoiceSpec] = (),
        include_bundled: bool = True,
        threads: int = 0,
        warm_up: bool = True,
    ) -> VoiceRegistry:
        """The bundled voice (first, the default) and each voice in ``specs``, warmed up."""
        registry = cls()
        if include_bundled:
            bundled = registry.backend(BUNDLED_KIND).bundled(threads)
            if bundled is not None:
                registry.add(bundled)
        for spec in specs:
            registry.add(registry.backend(spec.kind).load(spec.path, threads=threads))
        if warm_up:
            for voice in registry._voices.values():
                voice.warm_up()
        if not registry._voices:
            raise VoiceLoadError("no voices: give at least one voice or keep the bundled voice")
        return registry

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str | Path] = (),
        include_bundled: bool = True,
        threads: int = 0,
        warm_up: bool = True,
        gpt_sovits_dirs: Iterable[str | Path] = (),
    ) -> VoiceRegistry:
        """:meth:`load` with Piper ``.onnx`` paths and GPT-SoVITS directories given apart."""
        specs = [VoiceSpec("piper", str(p)) for p in paths] + [VoiceSpec("gpt-sovits", str(d)) for d in gpt_sovits_dirs]
        return cls.load(specs, include_bundled, threads, warm_up)

    def backend(self, kind: str) -> Backend:
        """The backend serving voices of ``kind`` (created, and its module imported, on first use)."""
        backend = self._backends.get(kind)
        if backend is None:
            backend = self._backends[kind] = load_backend(kind)
        return backend

    def add_backend(self, kind: str, backend: Backend) -> None:
        """Serve voices of ``kind`` with ``backend`` (one not in :data:`BACKENDS`: a wrapper, a plugin)."""
        if kind in self._backends:
            raise VoiceLoadError(f"a backend for {kind!r} is loaded already")
        self._backends[kind] = backend

    def add(self, voice: Voice) -> None:
        if voice.id in self._voices:
            raise VoiceLoadError(f"two voices share the id {voice.id!r}")
        self.backend(voice.kind)
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

    def ids(self) -> list[str]:
        return list(self._voices)

    def loaded(self) -> list[Voice]:
        return list(self._voices.values())

    def infos(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(v.id, v.language, v.sample_rate, v.kind, v.id == self.default_id) for v in self._voices.values()
        ]
