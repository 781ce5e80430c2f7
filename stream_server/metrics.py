"""Prometheus metrics for one server (a registry per app, so test apps never collide)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from streamvox.engine.core import EngineCore
from streamvox.stream_server.thread_cpu import ThreadCpuCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Everything ``GET /metrics`` exposes.  prometheus-client objects are thread-safe."""

    def __init__(self, engine: EngineCore) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("streamvox_sessions", "Open WebSocket sessions", registry=r)
        self.sessions_rejected = Counter(
            "streamvox_sessions_rejected", "Sessions refused at the session limit (closed with 1013)", registry=r
        )
        self.contexts = Counter(
            "streamvox_contexts", "Contexts (utterances) finished, by outcome", ["outcome"], registry=r
        )
        self.ttfa = Histogram(
            "streamvox_ttfa_seconds",
            "Server time to first audio: first span speakable to first packet written",
            buckets=(0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.rtf = Histogram(
            "streamvox_rtf",
            "Engine compute time / audio duration per context",
            buckets=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0),
            registry=r,
        )
        self.audio_seconds = Counter("streamvox_audio_seconds", "Audio seconds sent to clients", registry=r)
        self.client_underruns = Counter(
            "streamvox_client_underruns", "Playback underruns reported by clients", registry=r
        )
        self.client_underrun_seconds = Counter(
            "streamvox_client_underrun_seconds", "Silence from underruns reported by clients", registry=r
        )
        self.errors = Counter("streamvox_errors", "Error events sent, by code", ["code"], registry=r)
        self.thread_cpu = ThreadCpuCollector()
        r.register(self.thread_cpu)
        live = {
            "streamvox_engine_streams": ("Streams the engine thread holds", lambda: engine.active_streams),
            "streamvox_engine_queue_depth": (
                "Streams with work waiting for the engine thread",
                lambda: engine.streams_with_work,
            ),
            "streamvox_engine_units": ("Units of work (windows) executed since start", lambda: engine.units_executed),
            "streamvox_engine_late_units": (
                "Units finished after their listener's buffer ran dry (the engine's view of underruns)",
                lambda: engine.late_units,
            ),
            "streamvox_engine_late_seconds": (
                "How late the late units finished, summed (seconds)",
                lambda: engine.late_seconds,
            ),
            "streamvox_engine_late_units_behind_lead_work": (
                "Late units that started while a worker ran work over lead_work_s ahead of its listener",
                lambda: engine.late_behind_lead_work,
            ),
            "streamvox_engine_units_in_flight": (
                "Units running on the engine's workers now",
                lambda: engine.units_in_flight,
            ),
        }
        for name, (documentation, read) in live.items():
            Gauge(name, documentation, registry=r).set_function(read)
        # Windows are not batched into one call (``streamvox bench batch``: parallel single-thread
        # calls beat batched calls at every size); what runs together is this many units at once.
        parallel = Gauge(
            "streamvox_engine_units_by_parallelism",
            "Units started while this many units (itself included) were running on the workers",
            ["running"],
            registry=r,
        )
        for k in range(1, engine.workers + 1):
            parallel.labels(str(k)).set_function(lambda k=k: engine.units_by_concurrency.get(k, 0))

        steps = Gauge(
            "streamvox_engine_ar_steps_by_batch",
            "Batched T2S steps (GPT-SoVITS voices) by how many streams each advanced",
            ["streams"],
            registry=r,
        )
        for k in range(1, 17):  # a voice's slot pool bounds a batch; 16 covers the sizes we serve
            steps.labels(str(k)).set_function(lambda k=k: engine.batch_sizes.get(k, 0))

    def render(self, labels: Mapping[str, str] | None = None) -> bytes:
        """The text exposition; ``labels`` are added to every sample (a Ray Serve replica adds
        its ``replica``, so several replicas' series can be gathered in one place)."""
        if not labels:
            return generate_latest(self.registry)
        return exposition(_labelled(family, labels) for family in self.registry.collect())


def exposition(families: Iterable[Metric]) -> bytes:
    """The text exposition of these metric families (prometheus-client renders only a collector)."""

    class _Families:
        def collect(self) -> Iterator[Metric]:
            yield from families

    return generate_latest(_Families())


def _labelled(family: Metric, labels: Mapping[str, str]) -> Metric:
    """``family`` with ``labels`` added to each of its samples."""
    labelled = Metric(family.name, family.documentation, family.type, family.unit)
    for sample in family.samples:
        labelled.add_sample(sample.name, {**sample.labels, **labels}, sample.value, sample.timestamp, sample.exemplar)
    return labelled
