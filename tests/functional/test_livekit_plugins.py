"""LiveKit Agents' own ElevenLabs, Cartesia and OpenAI TTS plugins, in their own environment
(``.ref/livekit``, a child process) against a real server."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamvox.bench.asr import transcribe, wer
from streamvox.stream_server.app import RUNTIME

from tests.helpers.clients import run_reference_client

pytestmark = [pytest.mark.dialect, pytest.mark.asr, pytest.mark.reference]

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back home before the rain starts."
LONG = " ".join(["This reply goes on for a long while, sentence after sentence, until the user interrupts it."] * 6)


async def _run(plugin: str, base: str, tmp_path: Path, text: str, interrupt: float | None = None) -> Any:
    out = tmp_path / f"{plugin}.json"
    extra = [] if interrupt is None else ["--interrupt-after", str(interrupt)]
    return await run_reference_client("livekit", "livekit_tts.py", [plugin, base, str(out), *extra, text], out)


@pytest.mark.parametrize("plugin", ["elevenlabs", "cartesia", "openai"])
async def test_livekit_speaks_through_the_dialect(
    dialect_server: tuple[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture, plugin: str
) -> None:
    base, _ = dialect_server
    with caplog.at_level(logging.ERROR, logger="streamvox"):
        result = await _run(plugin, base, tmp_path, TEXT)
    assert not result["logged_errors"], result["logged_errors"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    pcm = np.frombuffer(base64.b64decode(result["audio"]), dtype="<i2").astype(np.float32) / 32768
    assert len(pcm) > result["sample_rate"] * 2
    assert wer(TEXT, transcribe(pcm, result["sample_rate"])) <= 0.10


@pytest.mark.parametrize("plugin", ["elevenlabs", "cartesia", "openai"])
async def test_closing_a_livekit_stream_stops_the_server_too(
    dialect_server: tuple[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture, plugin: str
) -> None:
    base, app = dialect_server
    engine = app[RUNTIME].engine
    with caplog.at_level(logging.ERROR, logger="streamvox"):
        result = await _run(plugin, base, tmp_path, LONG, interrupt=1.0)
    assert result["closed_at"] is not None and not result["logged_errors"], result["logged_errors"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    gone = time.monotonic()
    while engine.active_streams and time.monotonic() < gone + 5:
        await asyncio.sleep(0.01)
    assert engine.active_streams == 0
