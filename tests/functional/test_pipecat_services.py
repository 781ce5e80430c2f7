"""Pipecat's own ElevenLabs, Cartesia and OpenAI TTS services, run by Pipecat's test pipeline in
their own environment (``.ref/pipecat``, a child process) against a real server."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamvox.bench.asr import transcribe, wer

from tests.helpers.clients import run_reference_client

pytestmark = [pytest.mark.dialect, pytest.mark.asr, pytest.mark.reference]

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Then it runs back home before the rain starts."]
LONG = " ".join(["This reply goes on for a long while, sentence after sentence, until the user interrupts it."] * 6)


async def _run(service: str, base: str, tmp_path: Path, texts: list[str], interrupt: float | None = None) -> Any:
    out = tmp_path / f"{service}.json"
    extra = [] if interrupt is None else ["--interrupt-after", str(interrupt)]
    return await run_reference_client("pipecat", "pipecat_tts.py", [service, base, str(out), *extra, *texts], out)


@pytest.mark.parametrize("service", ["elevenlabs", "cartesia", "openai"])
async def test_pipecat_speaks_through_the_dialect(
    dialect_server: tuple[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture, service: str
) -> None:
    base, _ = dialect_server
    with caplog.at_level(logging.ERROR, logger="streamvox"):
        result = await _run(service, base, tmp_path, SENTENCES)
    assert not result["error_frames"] and not result["logged_errors"], result["logged_errors"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    pcm = np.frombuffer(base64.b64decode(result["audio"]), dtype="<i2").astype(np.float32) / 32768
    assert len(pcm) > result["sample_rate"] * 2
    assert wer(" ".join(SENTENCES), transcribe(pcm, result["sample_rate"])) <= 0.10


@pytest.mark.parametrize("service", ["elevenlabs", "cartesia", "openai"])
async def test_pipecat_interruption_stops_the_audio(
    dialect_server: tuple[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture, service: str
) -> None:
    base, app = dialect_server
    with caplog.at_level(logging.ERROR, logger="streamvox"):
        result = await _run(service, base, tmp_path, [LONG], interrupt=1.5)
    assert not result["error_frames"] and not result["logged_errors"], result["logged_errors"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    cut = result["interrupted_at"]
    assert cut is not None and result["arrivals"] and result["arrivals"][0] < cut
    late = [t - cut for t in result["arrivals"] if t > cut]
    print(f"{service}: audio frames after the interruption: {len(late)}, last {max(late, default=0) * 1000:.0f} ms")
    assert max(late, default=0.0) < 0.3
