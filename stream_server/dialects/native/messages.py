"""Protocol v1: client messages parsed strictly into typed requests.

Every client message is one JSON object in a text frame with a ``type``.
Unknown types and unknown fields are errors (a typo must not be silently
ignored), and every error carries a stable ``code``.  See docs/protocol.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streamvox.stream_server.dialects.native.events import PROTOCOL_VERSION, error_event
from streamvox.stream_server.text_checks import text_problem

__all__ = ["PROTOCOL_VERSION", "ProtocolError", "parse_client_message"]
CONTEXT_ID_MAX = 64


class ProtocolError(Exception):
    """A client input problem, reported as an ``error`` event with a stable code."""

    def __init__(self, code: str, message: str, fatal: bool = False, context_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.context_id = context_id

    def event(self) -> dict[str, Any]:
        return error_event(self.code, self.message, self.fatal, self.context_id)


@dataclass(frozen=True)
class FormatRequest:
    codec: str
    sample_rate: int | None = None
    bitrate: int | None = None
    application: str | None = None


@dataclass(frozen=True)
class Configure:
    voice: str | None = None
    format: FormatRequest | None = None
    speed: float | None = None
    seed: int | None = None
    noise: bool | None = None
    speaker: int | None = None
    idle_timeout_s: float | None = None
    timestamps: str | None = None
    """``"none"``, ``"word"`` or ``"char"`` (see :data:`TIMESTAMPS`)."""


TIMESTAMPS = ("none", "word", "char")
"""Timing events a session may ask for: none, ``words`` events, or ``words`` and ``alignment``."""


@dataclass(frozen=True)
class Keepalive:
    """Nothing to do: the client is still there (restarts the session's inactivity clock)."""


@dataclass(frozen=True)
class Text:
    text: str
    context_id: str | None = None


@dataclass(frozen=True)
class Flush:
    context_id: str | None = None


@dataclass(frozen=True)
class End:
    context_id: str | None = None


@dataclass(frozen=True)
class Cancel:
    context_id: str | None = None
    played_ms: float | None = None
    """How much of the context the listener had played when it barged in."""


@dataclass(frozen=True)
class Report:
    """The listener's playback state: lets the server pace generation and count underruns."""

    played_ms: float
    underruns: int | None = None
    underrun_ms: float | None = None
    context_id: str | None = None


ClientMessage = Configure | Text | Flush | End | Cancel | Report | Keepalive

_FIELDS: dict[str, set[str]] = {
    "configure": {"voice", "format", "speed", "seed", "noise", "speaker", "idle_timeout_s", "timestamps"},
    "text": {"text", "context_id"},
    "flush": {"context_id"},
    "end": {"context_id"},
    "cancel": {"context_id", "played_ms"},
    "report": {"played_ms", "underruns", "underrun_ms", "context_id"},
    "keepalive": set(),
}
IDLE_TIMEOUT_MAX_S = 3600.0
_FORMAT_FIELDS = {"codec", "sample_rate", "bitrate", "application"}


def _expect(value: Any, kind: type | tuple[type, ...], name: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ProtocolError("invalid_value", f"{name} must be a number, not a boolean")
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ProtocolError("invalid_value", f"{name} must be {expected}, got {type(value).__name__}")
    return value


def _context_id(raw: dict[str, Any]) -> str | None:
    if "context_id" not in raw or raw["context_id"] is None:
        return None
    cid = _expect(raw["context_id"], str, "context_id")
    if not cid or len(cid) > CONTEXT_ID_MAX:
        raise ProtocolError("invalid_value", f"context_id must be 1..{CONTEXT_ID_MAX} characters")
    return cid


def _format(raw: Any) -> FormatRequest:
    if isinstance(raw, str):
        return FormatRequest(codec=raw)
    _expect(raw, dict, "format")
    unknown = set(raw) - _FORMAT_FIELDS
    if unknown:
        raise ProtocolError("unknown_field", f"unknown format field(s): {', '.join(sorted(unknown))}")
    if "codec" not in raw:
        raise ProtocolError("invalid_value", "format.codec is required")
    rate = raw.get("sample_rate")
    bitrate = raw.get("bitrate")
    application = raw.get("application")
    return FormatRequest(
        codec=_expect(raw["codec"], str, "format.codec"),
        sample_rate=None if rate is None else _expect(rate, int, "format.sample_rate"),
        bitrate=None if bitrate is None else _expect(bitrate, int, "format.bitrate"),
        application=None if application is None else _expect(application, str, "format.application"),
    )


def parse_client_message(data: str, max_text_chars: int) -> ClientMessage:
    """Parse one text frame; raises ``ProtocolError`` with the matching code."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"message is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("invalid_message", "message must be a JSON object")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", 'message needs a string "type"')
    allowed = _FIELDS.get(kind)
    if allowed is None:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected one of {', '.join(_FIELDS)}")
    unknown = set(raw) - allowed - {"type"}
    if unknown:
        raise ProtocolError("unknown_field", f"unknown field(s) for {kind}: {', '.join(sorted(unknown))}")
    cid = _context_id(raw) if "context_id" in allowed else None
    if kind == "text":
        if "text" not in raw:
            raise ProtocolError("invalid_value", "text message needs a text field", context_id=cid)
        text = _expect(raw["text"], str, "text")
        if (problem := text_problem(text)) is not None:
            raise ProtocolError("invalid_value", problem, context_id=cid)
        if len(text) > max_text_chars:
            raise ProtocolError(
                "text_too_long", f"text of {len(text)} characters exceeds {max_text_chars} per message", context_id=cid
            )
        return Text(text=text, context_id=cid)
    if kind == "keepalive":
        return Keepalive()
    if kind == "flush":
        return Flush(cid)
    if kind == "end":
        return End(cid)
    if kind == "cancel":
        played = raw.get("played_ms")
        if played is None:
            return Cancel(cid)
        played = float(_expect(played, (int, float), "played_ms"))
        if not 0 <= played < float("inf"):
            raise ProtocolError("invalid_value", "cancel played_ms must be >= 0", context_id=cid)
        return Cancel(cid, played)
    if kind == "report":
        if "played_ms" not in raw:
            raise ProtocolError("invalid_value", "report needs played_ms", context_id=cid)
        played = float(_expect(raw["played_ms"], (int, float), "played_ms"))
        underruns = raw.get("underruns")
        underrun_ms = raw.get("underrun_ms")
        report = Report(
            played_ms=played,
            underruns=None if underruns is None else _expect(underruns, int, "underruns"),
            underrun_ms=None if underrun_ms is None else float(_expect(underrun_ms, (int, float), "underrun_ms")),
            context_id=cid,
        )
        if not 0 <= report.played_ms < float("inf") or (report.underruns or 0) < 0 or (report.underrun_ms or 0) < 0:
            raise ProtocolError("invalid_value", "report values must be >= 0", context_id=cid)
        return report
    speed = raw.get("speed")
    seed = raw.get("seed")
    noise = raw.get("noise")
    speaker = raw.get("speaker")
    voice = raw.get("voice")
    idle = raw.get("idle_timeout_s")
    timestamps = raw.get("timestamps")
    if timestamps is not None and _expect(timestamps, str, "timestamps") not in TIMESTAMPS:
        raise ProtocolError("invalid_value", f"timestamps must be one of {', '.join(TIMESTAMPS)}, not {timestamps!r}")
    config = Configure(
        voice=None if voice is None else _expect(voice, str, "voice"),
        format=None if raw.get("format") is None else _format(raw["format"]),
        speed=None if speed is None else float(_expect(speed, (int, float), "speed")),
        seed=None if seed is None else _expect(seed, int, "seed"),
        noise=None if noise is None else _expect(noise, bool, "noise"),
        speaker=None if speaker is None else _expect(speaker, int, "speaker"),
        idle_timeout_s=None if idle is None else float(_expect(idle, (int, float), "idle_timeout_s")),
        timestamps=timestamps,
    )
    if config.idle_timeout_s is not None and not 0 < config.idle_timeout_s <= IDLE_TIMEOUT_MAX_S:
        raise ProtocolError(
            "invalid_value", f"idle_timeout_s must be within 0..{IDLE_TIMEOUT_MAX_S:.0f} (exclusive of 0)"
        )
    if config.speed is not None and not 0.25 <= config.speed <= 4.0:
        raise ProtocolError("invalid_value", f"speed must be within 0.25..4.0, got {config.speed}")
    if config.seed is not None and not 0 <= config.seed < 2**63:
        raise ProtocolError("invalid_value", "seed must be within 0..2**63-1")
    return config
