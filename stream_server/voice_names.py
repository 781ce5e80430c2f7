"""Voice names the compatible dialects accept, mapped to our voices.

Clients built for a hosted service send that service's voice names (Pipecat
refuses any but OpenAI's thirteen).  A name resolves, in order: a configured
alias (``--voice-alias NAME=VOICE_ID``), one of our voice ids, or (for
OpenAI's built-in names, unless an alias says otherwise) the default voice.
Pure lookups: safe anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

from streamvox.engine.api import UnknownVoiceError, Voice
from streamvox.engine.registry import VoiceRegistry

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage", "shimmer", "verse",
)  # fmt: skip
"""OpenAI's built-in voice names: each means the default voice unless aliased."""


def resolve_voice(
    voices: VoiceRegistry, name: str | None, aliases: Mapping[str, str], fallback_names: tuple[str, ...] = ()
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
