"""Drive one of Pipecat's own TTS services against a streamvox server, in Pipecat's environment.

Runs under ``.ref/pipecat/bin/python`` (Pipecat pins audio libraries below
ours), started by ``tests/functional/test_pipecat_services.py``::

    python pipecat_tts.py SERVICE HTTP_BASE OUT.json [--interrupt-after S] TEXT...

``SERVICE`` is ``elevenlabs``, ``cartesia`` or ``openai``; the service is
Pipecat's, unchanged but for its URL and key, run by Pipecat's own test
pipeline (``pipecat.tests.utils.run_test``).  Each TEXT is one
``TTSSpeakFrame``; with ``--interrupt-after`` an ``InterruptionFrame`` follows
the last one that many seconds after it, as a user barging in.  Writes JSON:
the audio (base64, 16-bit mono), its rate, when each audio frame arrived, when
the interruption was sent, and every ERROR Pipecat logged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from typing import Any

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, InterruptionFrame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

RATE = 24000


class Recorder(FrameProcessor):
    """Keeps every audio frame (with its arrival time) and every error frame; passes all on."""

    def __init__(self) -> None:
        super().__init__()
        self.audio: list[tuple[float, bytes]] = []
        self.errors: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio.append((time.monotonic(), frame.audio))
        elif isinstance(frame, ErrorFrame):
            self.errors.append(str(frame.error))
        await self.push_frame(frame, direction)


class MarkInterruption(FrameProcessor):
    """Notes when the interruption passes (it is sent by the test pipeline's source)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame) and self.at is None:
            self.at = time.monotonic()
        await self.push_frame(frame, direction)


def service(name: str, http: str) -> Any:
    ws = http.replace("http://", "ws://")
    if name == "elevenlabs":
        from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

        return ElevenLabsTTSService(api_key="not-checked", voice_id="21m00Tcm4TlvDq8ikWAM", url=ws)
    if name == "cartesia":
        from pipecat.services.cartesia.tts import CartesiaTTSService

        return CartesiaTTSService(api_key="not-checked", voice_id="joe", url=f"{ws}/tts/websocket")
    from pipecat.services.openai.tts import OpenAITTSService

    return OpenAITTSService(api_key="not-checked", base_url=f"{http}/v1", voice="nova")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("service", choices=("elevenlabs", "cartesia", "openai"))
    parser.add_argument("http")
    parser.add_argument("out")
    parser.add_argument("--interrupt-after", type=float, default=None)
    parser.add_argument("texts", nargs="+")
    args = parser.parse_args()
    logged: list[str] = []
    logger.add(lambda message: logged.append(str(message)), level="ERROR")
    mark, recorder = MarkInterruption(), Recorder()
    tts = service(args.service, args.http)
    frames: list[Frame] = []
    for text in args.texts:
        frames += [TTSSpeakFrame(text), SleepFrame(0.2)]
    if args.interrupt_after is not None:
        frames += [SleepFrame(args.interrupt_after), InterruptionFrame(), SleepFrame(1.5)]
    else:
        frames.append(SleepFrame(4.0))
    await run_test(
        Pipeline([mark, tts, recorder]),
        frames_to_send=frames,
        pipeline_params=PipelineParams(audio_out_sample_rate=RATE),
        start_timeout=10.0,
    )
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(
            {
                "sample_rate": RATE,
                "audio": base64.b64encode(b"".join(a for _, a in recorder.audio)).decode(),
                "arrivals": [t for t, _ in recorder.audio],
                "interrupted_at": mark.at,
                "error_frames": recorder.errors,
                "logged_errors": logged,
            },
            out,
        )


if __name__ == "__main__":
    asyncio.run(main())
