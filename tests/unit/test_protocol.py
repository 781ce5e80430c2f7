"""Strict parsing of client messages: every bad input has its own stable code."""

from __future__ import annotations

import json

import pytest
from streamvox.stream_server.dialects.native.messages import (
    Cancel,
    Configure,
    End,
    Flush,
    FormatRequest,
    Keepalive,
    ProtocolError,
    Report,
    Text,
    parse_client_message,
)


def parse(message: object) -> object:
    return parse_client_message(message if isinstance(message, str) else json.dumps(message), max_text_chars=100)


def test_valid_messages() -> None:
    assert parse({"type": "text", "text": "hi"}) == Text("hi")
    assert parse({"type": "text", "text": "hi", "context_id": "c1"}) == Text("hi", "c1")
    assert parse({"type": "flush"}) == Flush()
    assert parse({"type": "end", "context_id": "c1"}) == End("c1")
    assert parse({"type": "cancel"}) == Cancel()
    assert parse({"type": "report", "played_ms": 1500, "underruns": 1, "underrun_ms": 20.5}) == Report(1500.0, 1, 20.5)
    assert parse({"type": "configure", "voice": "v", "format": "pcm_s16le", "speed": 1.5, "seed": 3}) == Configure(
        voice="v", format=FormatRequest("pcm_s16le"), speed=1.5, seed=3
    )
    assert parse({"type": "configure", "format": {"codec": "pcm_s16le", "sample_rate": 16000}}) == Configure(
        format=FormatRequest("pcm_s16le", 16000)
    )
    assert parse({"type": "keepalive"}) == Keepalive()
    assert parse({"type": "configure", "idle_timeout_s": 20}) == Configure(idle_timeout_s=20.0)
    assert parse({"type": "configure", "timestamps": "char"}) == Configure(timestamps="char")
    assert parse({"type": "cancel", "played_ms": 1200}) == Cancel(None, 1200.0)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ({"text": "no type"}, "invalid_message"),
        ({"type": "speak"}, "unknown_type"),
        ({"type": "keepalive", "context_id": "c"}, "unknown_field"),
        ({"type": "configure", "idle_timeout_s": 0}, "invalid_value"),
        ({"type": "configure", "idle_timeout_s": 3601}, "invalid_value"),
        ({"type": "configure", "idle_timeout_s": "soon"}, "invalid_value"),
        ({"type": "text", "text": "x", "colour": "red"}, "unknown_field"),
        ({"type": "configure", "format": {"codec": "opus", "quality": 3}}, "unknown_field"),
        ({"type": "text"}, "invalid_value"),
        ({"type": "text", "text": 5}, "invalid_value"),
        ({"type": "text", "text": "x", "context_id": ""}, "invalid_value"),
        ({"type": "text", "text": "x", "context_id": "c" * 65}, "invalid_value"),
        ({"type": "configure", "speed": 9}, "invalid_value"),
        ({"type": "configure", "speed": True}, "invalid_value"),
        ({"type": "configure", "seed": -1}, "invalid_value"),
        ({"type": "configure", "format": {"sample_rate": 8000}}, "invalid_value"),
        ({"type": "text", "text": "x" * 101}, "text_too_long"),
        ({"type": "report"}, "invalid_value"),
        ({"type": "report", "played_ms": "1"}, "invalid_value"),
        ({"type": "report", "played_ms": 5, "underruns": -1}, "invalid_value"),
        ('{"type": "report", "played_ms": NaN}', "invalid_value"),
        ('{"type": "text", "text": "Hello \\ud800 world"}', "invalid_value"),
        ({"type": "configure", "timestamps": "words"}, "invalid_value"),
        ({"type": "configure", "timestamps": 1}, "invalid_value"),
        ({"type": "cancel", "played_ms": -1}, "invalid_value"),
        ('{"type": "cancel", "played_ms": Infinity}', "invalid_value"),
    ],
)
def test_bad_messages_get_typed_errors(message: object, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(message)
    assert info.value.code == code
    event = info.value.event()
    assert event["type"] == "error" and event["code"] == code and event["fatal"] is False and event["message"]


def test_deeply_nested_json_is_rejected_cleanly() -> None:
    with pytest.raises(ProtocolError) as info:
        parse("[" * 100000 + "]" * 100000)
    assert info.value.code in ("invalid_json", "invalid_message")
