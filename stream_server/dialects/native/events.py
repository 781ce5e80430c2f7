"""Protocol v1 server events, built from a session's and its contexts' state.

Every builder returns the JSON object of one text frame, in the field order
docs/protocol.md gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamvox.codecs.formats import OutputFormat
from streamvox.engine.api import Voice
from streamvox.engine.events import StreamDone
from streamvox.engine.text.segmenter import Span
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.contexts import Context
from streamvox.stream_server.timeline import Heard, TimedWord, char_alignment

PROTOCOL_VERSION = 1
"""What a client gets unless it asks for more (``?protocol=2``)."""
PROTOCOL_VERSIONS = (1, 2)


def error_event(code: str, message: str, fatal: bool = False, context_id: str | None = None) -> dict[str, Any]:
    """``{"type": "error"}``; ``fatal`` says the server will close the session after it."""
    event: dict[str, Any] = {"type": "error", "code": code, "message": message, "fatal": fatal}
    if context_id is not None:
        event["context_id"] = context_id
    return event


def ready_event(
    session_id: str, voice: Voice, fmt: OutputFormat, config: ServerConfig, protocol: int = PROTOCOL_VERSION
) -> dict[str, Any]:
    limits: dict[str, Any] = {
        "max_message_bytes": config.max_message_bytes,
        "max_text_chars": config.max_text_chars,
        "max_context_chars": config.max_context_chars,
    }
    if protocol >= 2:
        limits["max_contexts"] = config.max_contexts
    return {
        "type": "ready",
        "protocol": protocol,
        "session_id": session_id,
        "voice": {"id": voice.id, "sample_rate": voice.sample_rate, "language": voice.language},
        "format": fmt.describe(),
        "limits": limits,
    }


def context_event(ctx: Context, channel: int) -> dict[str, Any]:
    """Protocol 2: context ``ctx`` has started; its binary frames begin with byte ``channel``."""
    return {"type": "context", "context_id": ctx.id, "channel": channel}


def segment_event(ctx: Context, index: int, span: Span, start_sample: int) -> dict[str, Any]:
    """Segment ``index`` starts at ``start_sample`` (model rate) of the context's audio."""
    fmt = ctx.encoder.format
    start = round(start_sample * fmt.sample_rate / ctx.voice.sample_rate)
    return {
        "type": "segment",
        "context_id": ctx.id,
        "index": index,
        "text": span.text,
        "char_start": span.start,
        "char_end": span.end,
        "start_sample": start,
        "start_s": round(start / fmt.sample_rate, 4),
    }


def words_event(ctx: Context, index: int, words: Sequence[TimedWord], estimated: bool) -> dict[str, Any]:
    """Segment ``index``'s words: offsets in the context's text, times in its audio."""
    text = ctx.segmenter.text
    return {
        "type": "words",
        "context_id": ctx.id,
        "index": index,
        "estimated": estimated,
        "words": [
            {
                "text": text[w.char_start : w.char_end],
                "char_start": w.char_start,
                "char_end": w.char_end,
                "start_s": round(w.start_s, 3),
                "end_s": round(w.end_s, 3),
            }
            for w in words
        ],
    }


def alignment_event(
    ctx: Context, index: int, span: Span, words: Sequence[TimedWord], estimated: bool
) -> dict[str, Any]:
    """Segment ``index`` character by character (ElevenLabs style): every character of its span."""
    start_s = ctx.segment_start_s(index)
    aligned = char_alignment(span.text, span.start, words, start_s)
    return {
        "type": "alignment",
        "context_id": ctx.id,
        "index": index,
        "estimated": estimated,
        "char_start": aligned.char_start,
        "chars": list(aligned.text),
        "char_start_ms": list(aligned.start_ms),
        "char_duration_ms": list(aligned.duration_ms),
    }


def done_event(ctx: Context, done: StreamDone) -> dict[str, Any]:
    fmt = ctx.encoder.format
    return {
        "type": "done",
        "context_id": ctx.id,
        "samples": ctx.encoder.samples_out,
        "sample_rate": fmt.sample_rate,
        "seconds": round(ctx.seconds_sent, 4),
        "model_samples": done.samples,
        "segments": len(ctx.segments),
        "ttfa_ms": ctx.ttfa_ms(),
        "rtf": ctx.rtf(done),
    }


def cancelled_event(ctx: Context, reason: str, heard: Heard | None = None) -> dict[str, Any]:
    """The context stopped; ``heard`` (when the listener's position is known) says what of it
    they heard: the character offset reached, the text before it and the words begun."""
    fmt = ctx.encoder.format
    event: dict[str, Any] = {
        "type": "cancelled",
        "context_id": ctx.id,
        "reason": reason,
        "samples": ctx.encoder.samples_out,
        "seconds": round(ctx.encoder.samples_out / fmt.sample_rate, 4),
    }
    if heard is not None:
        text = ctx.segmenter.text
        event["played_s"] = round(heard.played_s, 3)
        event["heard_char_offset"] = heard.char_offset
        event["heard_text"] = text[: heard.char_offset]
        event["heard_words"] = [text[w.char_start : w.char_end] for w in heard.words]
    return event
