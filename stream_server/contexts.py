"""A context's life: text fed to the segmenter, spans to the engine, audio accounted for.

A context is one utterance: one engine stream.  It owns the segmenter (and
the timers that make it speak buffered text when the listener is about to run
dry), the stream's encoder and its sample accounting, and the slow-reader
guard: past ``max_unsent_s`` of audio the socket still owes, the engine holds
the stream, and if the socket then accepts nothing for
``slow_reader_timeout_s`` the owner is told to close.  It knows no wire format
and no web framework: dialects translate their messages into these calls.
Event-loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from streamvox.codecs.formats import StreamEncoder
from streamvox.engine.api import Voice
from streamvox.engine.events import StreamDone, WordTiming
from streamvox.engine.text.segmenter import Segmenter, Span
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.engine_client import EngineClient
from streamvox.stream_server.metrics import Metrics
from streamvox.stream_server.quotas import Usage
from streamvox.stream_server.timeline import Heard, TimedWord, Timeline


@dataclass
class Context:
    """One utterance of a session.  Event-loop only."""

    id: str
    stream_id: str
    voice: Voice
    encoder: StreamEncoder
    segmenter: Segmenter
    engine: EngineClient
    config: ServerConfig
    metrics: Metrics
    last_write: Callable[[], float]
    """When the owner's socket last accepted a frame."""
    on_slow_reader: Callable[[Context], None]
    """Called once the socket has accepted nothing for ``slow_reader_timeout_s`` while held."""
    segments: dict[int, tuple[Span, float]] = field(default_factory=dict)
    next_index: int = 0
    ended: bool = False
    cancel_requested: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    first_speakable_at: float | None = None
    first_audio_at: float | None = None
    header_sent: bool = False
    timer: asyncio.TimerHandle | None = None
    segments_finished: int = 0
    reported_underruns: int = 0
    reported_underrun_s: float = 0.0
    unsent_samples: int = 0
    """Model-rate samples the engine produced that are not yet written to the socket."""
    held: bool = False
    watchdog: asyncio.TimerHandle | None = None
    segment_starts: dict[int, int] = field(default_factory=dict)
    """Where each segment's audio begins, model-rate samples of the context's output."""
    timeline: Timeline = field(default_factory=Timeline)
    played_s: float | None = None
    """The listener's last reported playback position."""
    timestamps: str = "none"
    """Which timing events the session asked for: ``none``, ``word`` or ``char``."""
    usage: Usage | None = None
    """The session's key limits (``None``: anonymous): text is charged as it arrives, audio as it is sent."""

    @property
    def open(self) -> bool:
        return not self.finished.is_set()

    @property
    def speaking(self) -> bool:
        """Open, not ended and not cancelled: text may still arrive."""
        return self.open and not self.ended and not self.cancel_requested

    # --- text in ---------------------------------------------------------------------------

    def push_text(self, text: str, now: float, charge: bool = True) -> None:
        """Take ``text``; raises :class:`QuotaExceeded` (the text is then dropped) if the key is
        over a limit.  ``charge=False``: the caller charged it already (an HTTP route, before
        its response began)."""
        if self.usage is not None and charge:
            self.usage.take_text(len(text))
        self._submit(self.segmenter.push(text, now), now)
        self.arm_timer()

    def flush(self, now: float) -> None:
        self._submit(self.segmenter.flush(), now)
        self.arm_timer()

    def end(self, now: float) -> None:
        """No more text: speak what is buffered, then the engine finishes the stream."""
        self._submit(self.segmenter.flush(), now)
        self.ended = True
        self.disarm_timer()
        self.engine.finish(self.stream_id)

    def _submit(self, spans: list[Span], now: float) -> None:
        for span in spans:
            index = self.next_index
            self.next_index += 1
            self.segments[index] = (span, now)
            if self.first_speakable_at is None:
                self.first_speakable_at = now
            self.engine.add_segment(self.stream_id, index, span.text, span.lead, span.preview)

    # --- figures -------------------------------------------------------------------------------

    @property
    def seconds_sent(self) -> float:
        """Audio handed to the socket so far, padding excluded."""
        return self.encoder.samples_out / self.encoder.format.sample_rate

    def ttfa_ms(self) -> float | None:
        """First span speakable -> first payload written, or ``None`` before both."""
        if self.first_audio_at is None or self.first_speakable_at is None:
            return None
        return round((self.first_audio_at - self.first_speakable_at) * 1000, 2)

    def rtf(self, done: StreamDone) -> float | None:
        """Engine compute time over the audio's duration."""
        audio_s = done.samples / self.voice.sample_rate
        return round(done.compute_s / audio_s, 4) if audio_s else None

    # --- timings -------------------------------------------------------------------------------

    def segment_started(self, index: int, start_sample: int) -> None:
        self.segment_starts[index] = start_sample

    def segment_start_s(self, index: int) -> float:
        """Where segment ``index``'s audio begins, in seconds of the context's output."""
        return self.segment_starts.get(index, 0) / self.voice.sample_rate

    def segment_words(self, index: int, words: Sequence[WordTiming], estimated: bool) -> list[TimedWord]:
        """Segment ``index``'s word timings, lifted into the context's text and audio."""
        span, _ = self.segments[index]
        return self.timeline.add(span.start, self.segment_start_s(index), words, self.voice.sample_rate, estimated)

    def heard(self, played_ms: float | None = None) -> Heard | None:
        """What the listener heard at ``played_ms`` (else the last reported position), if known.

        A position past the audio sent is clamped to it: nothing unsent was heard."""
        played_s = self.played_s if played_ms is None else played_ms / 1000
        if played_s is None:
            return None
        return self.timeline.heard(min(played_s, self.seconds_sent))

    # --- hurry timers ------------------------------------------------------------------------

    def dry_at(self) -> float | None:
        """When the listener runs out of audio (``first_audio_at + seconds sent``), once the
        engine has finished every span submitted so far; ``None`` while it is still at work."""
        if self.first_audio_at is None or self.segments_finished < self.next_index:
            return None
        return self.first_audio_at + self.encoder.samples_out / self.encoder.format.sample_rate

    def hurry(self, now: float) -> str | None:
        """How urgently buffered text must be spoken mid-sentence (see ``hurry_margin_s``)."""
        dry = self.dry_at()
        margin = self.config.hurry_margin_s
        if dry is None or now < dry - margin:
            return None
        return "word" if now >= dry - margin / 2 else "clause"

    def arm_timer(self) -> None:
        self.disarm_timer()
        if self.ended or not self.segmenter.pending.strip():
            return
        deadlines = [d for d in (self.segmenter.deadline(),) if d is not None]
        dry = self.dry_at()
        if dry is not None:
            now = time.monotonic()
            margin = self.config.hurry_margin_s
            deadlines.append(dry - margin if now < dry - margin else dry - margin / 2)
        if deadlines:
            delay = max(0.0, min(deadlines) - time.monotonic())
            self.timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def rearm_if_buffered(self) -> None:
        """The listener's buffer or the engine's progress moved: the hurry deadline did too."""
        if not self.ended and self.segmenter.pending.strip():
            self.arm_timer()

    def disarm_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        if self.speaking:
            now = time.monotonic()
            self._submit(self.segmenter.poll(now, hurry=self.hurry(now)), now)
            self.arm_timer()

    # --- playback reports --------------------------------------------------------------------

    def report(self, played_ms: float, underruns: int | None, underrun_ms: float | None) -> None:
        """The listener's playback position paces the engine; its underruns feed the metrics."""
        if underruns:
            new = underruns - self.reported_underruns
            if new > 0:
                self.metrics.client_underruns.inc(new)
                self.reported_underruns = underruns
        if underrun_ms:
            new_s = underrun_ms / 1000 - self.reported_underrun_s
            if new_s > 0:
                self.metrics.client_underrun_seconds.inc(new_s)
                self.reported_underrun_s = underrun_ms / 1000
        self.played_s = played_ms / 1000
        if self.open and not self.cancel_requested:
            self.engine.report_playback(self.stream_id, played_ms / 1000)

    # --- stopping ----------------------------------------------------------------------------

    def stop_generation(self) -> None:
        """No more audio for this context: its timers stop and the engine drops its stream."""
        self.cancel_requested = True
        self.disarm_timer()
        self.disarm_watchdog()
        self.engine.abort(self.stream_id)

    # --- audio out: accounting and the slow-reader guard --------------------------------------

    def audio_queued(self, samples: int) -> None:
        """The engine produced ``samples`` (model rate) that now wait for the socket."""
        self.unsent_samples += samples
        self._update_hold()

    def audio_sent(self, samples: int) -> None:
        """``samples`` of queued audio have been encoded and written."""
        self.unsent_samples -= samples
        if self.usage is not None:
            self.usage.add_audio(samples / self.voice.sample_rate)
        if self.held:
            self._update_hold()

    def payloads(self) -> Iterator[bytes]:
        """The encoder's header (once) and every payload it has, stopping at once on a cancel.

        Consume it lazily, one write per payload, so a cancel lands between two packets."""
        if not self.header_sent:
            self.header_sent = True
            header = self.encoder.header()
            if header is not None:
                yield header
        sent = False
        while not self.cancel_requested and (payload := self.encoder.pop()) is not None:
            yield payload
            sent = True
            if self.first_audio_at is None:
                self.first_audio_at = time.monotonic()
        if sent:
            self.rearm_if_buffered()

    def _update_hold(self) -> None:
        """Hold the engine while more than ``max_unsent_s`` of audio waits for the socket; resume
        below half of it.  While held, a socket that accepts nothing for ``slow_reader_timeout_s``
        belongs to a client that stopped reading."""
        limit = self.config.max_unsent_s * self.voice.sample_rate
        if not self.held and self.unsent_samples > limit and self.open and not self.cancel_requested:
            self.held = True
            self.engine.hold(self.stream_id, True)
            self._arm_watchdog(self.last_write())
        elif self.held and self.unsent_samples <= limit / 2:
            self.held = False
            self.disarm_watchdog()
            if self.open and not self.cancel_requested:
                self.engine.hold(self.stream_id, False)

    def _arm_watchdog(self, last_write: float) -> None:
        loop = asyncio.get_running_loop()
        self.watchdog = loop.call_later(self.config.slow_reader_timeout_s, self._check_reader, last_write)

    def disarm_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def _check_reader(self, last_write: float) -> None:
        self.watchdog = None
        if not self.held:
            return
        if self.last_write() > last_write:
            self._arm_watchdog(self.last_write())  # slow, but reading: keep waiting
            return
        self.on_slow_reader(self)
