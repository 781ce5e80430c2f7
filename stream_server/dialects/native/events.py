"""Protocol v1 server events, built from a session's and its contexts' state.

Every builder returns the JSON object of one text frame, in the field order
docs/protocol.md gives.
"""

from __future__ import annotations

from typing import Any

from streamvox.codecs.formats import OutputFormat
from streamvox.engine.api import Voice
from streamvox.engine.events import StreamDone
from streamvox.engine.text.segmenter import Span
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.contexts import Context

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


def done_event(ctx: Context, done: StreamDone) -> dict[str, Any]:
    fmt = ctx.encoder.format
    audio_s = done.samples / ctx.voice.sample_rate
    ttfa = None
    if ctx.first_audio_at is not None and ctx.first_speakable_at is not None:
        ttfa = round((ctx.first_audio_at - ctx.first_speakable_at) * 1000, 2)
    return {
        "type": "done",
        "context_id": ctx.id,
        "samples": ctx.encoder.samples_out,
        "sample_rate": fmt.sample_rate,
        "seconds": round(ctx.encoder.samples_out / fmt.sample_rate, 4),
        "model_samples": done.samples,
        "segments": len(ctx.segments),
        "ttfa_ms": ttfa,
        "rtf": round(done.compute_s / audio_s, 4) if audio_s else None,
    }


def cancelled_event(ctx: Context, reason: str) -> dict[str, Any]:
    fmt = ctx.encoder.format
    return {
        "type": "cancelled",
        "context_id": ctx.id,
        "reason": reason,
        "samples": ctx.encoder.samples_out,
        "seconds": round(ctx.encoder.samples_out / fmt.sample_rate, 4),
    }
