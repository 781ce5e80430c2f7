"""One place to scrape every Ray Serve replica's metrics.

Each replica renders its Prometheus metrics with a ``replica`` label and
posts them every few seconds to one named Ray actor, the board
(:class:`MetricsBoard`, detached, no CPU).  ``GET /metrics`` on the Serve
URL, whichever replica answers it, returns the board's merge: the same metric
names as one server, one series per replica.  A replica that stops posting
(removed, or killed) drops off after ``max_age_s``; a removed one takes its
series off as it shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import ray
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from streamvox.stream_server.asgi import StreamvoxAsgi

log = logging.getLogger(__name__)

BOARD_NAME = "streamvox-metrics"
BOARD_NAMESPACE = "streamvox"
REPORT_PERIOD_S = 5.0
MAX_AGE_S = 3 * REPORT_PERIOD_S


def merge_expositions(texts: Iterable[str]) -> bytes:
    """Several Prometheus text expositions as one: families of the same name merged (each
    replica's samples carry their own labels, so none collide)."""
    families: dict[str, Metric] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            merged.samples.extend(family.samples)

    class _Merged:
        def collect(self) -> Iterator[Metric]:
            yield from families.values()

    return generate_latest(_Merged())


@ray.remote(num_cpus=0)
class MetricsBoard:
    """The latest exposition of each replica (a Ray actor; its methods run one at a time)."""

    def __init__(self) -> None:
        self._texts: dict[str, tuple[float, str]] = {}

    def post(self, replica: str, text: str) -> None:
        self._texts[replica] = (time.monotonic(), text)

    def remove(self, replica: str) -> None:
        self._texts.pop(replica, None)

    def gather(self, max_age_s: float = MAX_AGE_S) -> bytes:
        now = time.monotonic()
        self._texts = {r: (t, text) for r, (t, text) in self._texts.items() if now - t <= max_age_s}
        return merge_expositions(text for _, text in self._texts.values())


def board() -> Any:
    """The cluster's board, made by the first replica that asks."""
    return MetricsBoard.options(name=BOARD_NAME, namespace=BOARD_NAMESPACE, get_if_exists=True,
                                lifetime="detached").remote()  # fmt: skip


class MetricsReporter:
    """A replica's side of the board: posts this replica's metrics, answers ``/metrics`` with
    every replica's."""

    def __init__(self, app: StreamvoxAsgi, replica: str, period_s: float = REPORT_PERIOD_S) -> None:
        self.app = app
        self.replica = replica
        self.period_s = period_s
        self._board = board()

    def _own(self) -> str:
        return self.app.runtime.metrics.render({"replica": self.replica}).decode()

    async def run(self) -> None:
        """Post every ``period_s`` until cancelled; on cancel, take this replica's series off."""
        try:
            while True:
                try:
                    await self._board.post.remote(self.replica, self._own())
                except ray.exceptions.RayError as exc:
                    log.warning("could not post metrics: %s", exc)
                    self._board = board()
                await asyncio.sleep(self.period_s)
        finally:
            self._board.remove.remote(self.replica)

    async def gather(self) -> bytes:
        """Every live replica's metrics, this one's fresh."""
        await self._board.post.remote(self.replica, self._own())
        return await self._board.gather.remote()
