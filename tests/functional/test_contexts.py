"""Protocol 2 over a real server: several contexts speaking at once on one socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from tests.helpers.ws import Multiplex, collect_until, read_until_finished, recv_json, send, speak_whole

TEXTS = {
    "a": "The first reply starts here, and it keeps going for a couple of sentences. Then it stops.",
    "b": "A second reply begins while the first one is still speaking.",
    "c": "And a third one joins them, with a number: 42.",
}
SEED = 11
"""The session's seed: every context it starts is seeded from it."""
PCM = {"codec": "pcm_s16le"}


def v2(url: str) -> str:
    return f"{url}?protocol=2"


async def alone(url: str, text: str, seed: int) -> bytes:
    """The context's bytes on a socket of its own (protocol 1)."""
    async with websockets.connect(url, max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="configure", format=PCM, seed=seed)
        await recv_json(ws)
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        return b"".join((await collect_until(ws)).audio)


async def test_three_staggered_contexts_each_equal_their_solo_bytes(server: str) -> None:
    solo = {cid: await alone(server, TEXTS[cid], SEED) for cid in TEXTS}
    mux = Multiplex()
    async with websockets.connect(v2(server), max_size=None) as ws:
        ready = await recv_json(ws)
        assert ready["protocol"] == 2 and ready["limits"]["max_contexts"] == 8
        await send(ws, type="configure", format=PCM, seed=SEED)
        await recv_json(ws)
        await send(ws, type="text", text=TEXTS["a"], context_id="a")
        await send(ws, type="end", context_id="a")
        while not mux.audio.get("a"):  # "a" is speaking
            mux.take(await asyncio.wait_for(ws.recv(), 30))
        for cid in ("b", "c"):
            await send(ws, type="text", text=TEXTS[cid], context_id=cid)
            await send(ws, type="end", context_id=cid)
            await asyncio.sleep(0.05)
        await read_until_finished(ws, set(TEXTS), mux)
    assert mux.after_finish == []
    assert {e["context_id"]: e["channel"] for e in mux.events if e["type"] == "context"} == {"a": 1, "b": 2, "c": 3}
    order = [(e["type"], e["context_id"]) for e in mux.events if e["type"] in ("context", "done")]
    assert order.index(("context", "c")) < order.index(("done", "a"))  # they really spoke at the same time
    for cid in TEXTS:
        assert mux.finished[cid]["type"] == "done" and len(mux.of(cid)) == 2 * mux.finished[cid]["samples"]
        assert mux.of(cid) == solo[cid], cid


async def test_cancelling_one_context_leaves_the_others_speaking(server: str) -> None:
    async with websockets.connect(v2(server), max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="configure", format=PCM, seed=3)
        await recv_json(ws)
        for cid in ("long", "short"):
            await send(ws, type="text", text=TEXTS["a"] * 3, context_id=cid)
            await send(ws, type="end", context_id=cid)
        mux = Multiplex()
        while not mux.audio.get("long"):
            mux.take(await asyncio.wait_for(ws.recv(), 30))
        await send(ws, type="cancel", context_id="long")
        await read_until_finished(ws, {"long", "short"}, mux)
        assert mux.finished["long"]["type"] == "cancelled" and mux.finished["short"]["type"] == "done"
        assert mux.after_finish == []
        assert len(mux.of("long")) == 2 * mux.finished["long"]["samples"]
        await send(ws, type="cancel", context_id="long")
        error = await recv_json(ws)
        assert error["code"] == "context_ended" and error["context_id"] == "long"


async def test_the_context_limit_is_a_typed_error_and_loses_nothing_else(server: str) -> None:
    settings: dict[str, Any] = {"seed": 5}
    reference = b"".join((await collect_until_spoken(server, settings)).audio)
    other = asyncio.create_task(collect_until_spoken(server, settings))
    async with websockets.connect(v2(server), max_size=None) as ws:
        await recv_json(ws)
        for i in range(8):
            await send(ws, type="text", text="Waiting for more words", context_id=f"c{i}")
        mux = Multiplex()
        await send(ws, type="text", text="One too many.", context_id="c8")
        while (event := mux.take(await asyncio.wait_for(ws.recv(), 30))) is None or event["type"] != "error":
            pass
        assert event["code"] == "too_many_contexts" and event["context_id"] == "c8" and not event["fatal"]
        await send(ws, type="cancel", context_id="c0")
        await read_until_finished(ws, {"c0"}, mux)
        await send(ws, type="text", text="Now there is room.", context_id="c8")
        await send(ws, type="end", context_id="c8")
        await read_until_finished(ws, {"c8"}, mux)
        assert mux.finished["c8"]["type"] == "done"
        for i in range(1, 8):
            await send(ws, type="cancel", context_id=f"c{i}")
        await read_until_finished(ws, {f"c{i}" for i in range(1, 8)}, mux)
    assert b"".join((await other).audio) == reference


async def collect_until_spoken(url: str, settings: dict[str, Any]) -> Any:
    return await speak_whole(url, TEXTS["a"] * 2, settings)


async def test_protocol_1_still_speaks_one_context_at_a_time(server: str) -> None:
    async with websockets.connect(server, max_size=None) as ws:
        ready = await recv_json(ws)
        assert ready["protocol"] == 1 and "max_contexts" not in ready["limits"]
        await send(ws, type="text", text=TEXTS["a"], context_id="a")
        await send(ws, type="text", text=TEXTS["b"], context_id="b")
        while isinstance(message := await asyncio.wait_for(ws.recv(), 30), bytes) or json.loads(message)["type"] in (
            "segment",
        ):
            pass
        assert json.loads(message)["code"] == "context_busy"
        await send(ws, type="cancel", context_id="a")
        await collect_until(ws, kinds=("cancelled",))


@pytest.mark.parametrize("asked", ["3", "two", ""])
async def test_an_unknown_protocol_version_is_refused(server: str, asked: str) -> None:
    async with websockets.connect(f"{server}?protocol={asked}") as ws:
        error = await recv_json(ws)
        assert error["code"] == "invalid_value" and error["fatal"] and "1, 2" in error["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
