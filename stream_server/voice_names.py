"""Voice names the compatible dialects accept, mapped to our voices.

Clients built for a hosted service send that service's voice names (Pipecat
refuses any but OpenAI's thirteen).  A name resolves, in order: a configured
alias (``--voice-alias NAME=VOICE_ID``), one of our voice ids, or (for
OpenAI's built-in names, unless an alias says otherwise) the default voice.
Pure lookups: safe anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from streamvox.engine.api import UnknownVoiceError, Voice
from streamvox.engine.registry import VoiceInfo

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage", "shimmer", "verse",
)  # fmt: skip
"""OpenAI's built-in voice names: each means the default voice unless aliased."""


class VoiceCatalog(Protocol):
    """The voices a session may use: the registry, or a key's or token's share of it."""

    def get(self, voice_id: str | None) -> Voice: ...
    def ids(self) -> list[str]: ...
    def infos(self) -> list[VoiceInfo]: ...


class ScopedVoices:
    """The voices of ``voices`` that ``allows`` lets through; any other id is unknown (a key's
    client is not told which voices exist beyond its own).  ``get(None)`` is the default voice
    if allowed, else the first allowed one."""

    def __init__(self, voices: VoiceCatalog, allows: Callable[[str], bool]) -> None:
        self._voices = voices
        self._allows = allows

    def get(self, voice_id: str | None) -> Voice:
        if voice_id is None:
            default = self._voices.get(None)
            if self._allows(default.id):
                return default
            allowed = self.ids()
            if not allowed:
                raise UnknownVoiceError(None)
            return self._voices.get(allowed[0])
        if not self._allows(voice_id):
            raise UnknownVoiceError(voice_id)
        return self._voices.get(voice_id)

    def ids(self) -> list[str]:
        return [v for v in self._voices.ids() if self._allows(v)]

    def infos(self) -> list[VoiceInfo]:
        return [info for info in self._voices.infos() if self._allows(info.id)]


def resolve_voice(
    voices: VoiceCatalog, name: str | None, aliases: Mapping[str, str], fallback_names: tuple[str, ...] = ()
) -> Voice:
    """The voice ``name`` means; :class:`UnknownVoiceError` if none."""
    if name is None:
        return voices.get(None)
    target = aliases.get(name, name)
    try:
        return voices.get(target)
    except UnknownVoiceError:
        if name in fallback_names and name not in aliases:
            return voices.get(None)
        raise
