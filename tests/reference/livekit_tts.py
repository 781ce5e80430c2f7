"""Drive one of LiveKit Agents' TTS plugins against a streamvox server, in LiveKit's environment.

Runs under ``.ref/livekit/bin/python``, started by
``tests/functional/test_livekit_plugins.py``::

    python livekit_tts.py PLUGIN HTTP_BASE OUT.json [--interrupt-after S] TEXT

``PLUGIN`` is ``elevenlabs`` or ``cartesia`` (streamed: the text is pushed word by
word into ``tts.stream()``) or ``openai`` (``tts.synthesize``, as the plugin has
no streaming input).  The plugin is LiveKit's, unchanged but for its base URL
and key.  With ``--interrupt-after`` the stream is closed once that many seconds
of audio have arrived, as an agent does when the user barges in (counted in audio,
not wall time: a server faster than real time can deliver a whole reply within a
second of its first audio).  Writes JSON:
the audio (base64, 16-bit mono), its rate, each frame's arrival time, when the
stream was closed, and every ERROR the plugin logged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import time
from typing import Any

import aiohttp


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def plugin(name: str, http: str, session: aiohttp.ClientSession) -> Any:
    if name == "elevenlabs":
        from livekit.plugins import elevenlabs

        return elevenlabs.TTS(api_key="not-checked", voice_id="21m00Tcm4TlvDq8ikWAM", base_url=f"{http}/v1",
                              encoding="pcm_24000", http_session=session)  # fmt: skip
    if name == "cartesia":
        from livekit.plugins import cartesia

        return cartesia.TTS(api_key="not-checked", voice="joe", base_url=http, sample_rate=24000, http_session=session)
    from livekit.plugins import openai

    return openai.TTS(api_key="not-checked", base_url=f"{http}/v1", voice="nova", response_format="pcm")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("plugin", choices=("elevenlabs", "cartesia", "openai"))
    parser.add_argument("http")
    parser.add_argument("out")
    parser.add_argument("--interrupt-after", type=float, default=None)
    parser.add_argument("text")
    args = parser.parse_args()
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    audio: list[bytes] = []
    arrivals: list[float] = []
    rate = 24000
    closed_at: float | None = None
    received_s = 0.0
    async with aiohttp.ClientSession() as session:
        tts = plugin(args.plugin, args.http, session)
        if args.plugin == "openai":
            stream: Any = tts.synthesize(args.text)
        else:
            stream = tts.stream()
            for word in args.text.split():
                stream.push_text(word + " ")
            stream.flush()
            stream.end_input()
        async for event in stream:
            frame = event.frame
            rate = frame.sample_rate
            audio.append(bytes(frame.data))
            arrivals.append(time.monotonic())
            received_s += frame.samples_per_channel / frame.sample_rate
            if args.interrupt_after is not None and received_s >= args.interrupt_after:
                closed_at = time.monotonic()
                break
        await stream.aclose()
        await tts.aclose()
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump({"sample_rate": rate, "audio": base64.b64encode(b"".join(audio)).decode(), "arrivals": arrivals,
                   "closed_at": closed_at, "logged_errors": errors.messages}, out)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
