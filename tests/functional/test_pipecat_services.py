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
LONG_SENTENCE = "This reply goes on for a long while, sentence after sentence, until the user interrupts it."
LONG = " ".join([LONG_SENTENCE] * 40)
"""About 210 s of speech (3,700 characters, under OpenAI's 4,096), some 7 s of one core's work:
the interruption (1.5 s in) comes while the server is still making it, on a faster machine too
(on the 2-core VM 32-37 s of it had arrived)."""


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
    heard_s = len(base64.b64decode(result["audio"])) / 2 / result["sample_rate"]
    assert heard_s < 100, f"{heard_s:.0f} s of audio: the reply was not cut short"
    late = [t - cut for t in result["arrivals"] if t > cut]
    print(f"{service}: audio frames after the interruption: {len(late)}, last {max(late, default=0) * 1000:.0f} ms")
    assert max(late, default=0.0) < 0.3
