"""The one bridge between the engine's threads and the event loop.

The engine calls a stream's sink on its own thread; :class:`EngineClient`
wraps each sink so the event is handed to the loop with
``call_soon_threadsafe`` and handled there, in the order the engine sent it.
Everything else forwards to the engine's thread-safe inbox.  Later, a remote
engine can stand behind the same methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from streamvox.engine.api import SynthesisParams, Voice
from streamvox.engine.core import EngineCore
from streamvox.engine.events import EngineEvent

EventHandler = Callable[[EngineEvent], None]


class EngineClient:
    """An engine as the sessions of one event loop see it.  Methods: event-loop thread."""

    def __init__(self, engine: EngineCore, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop

    def open(self, stream_id: str, voice_id: str | None, params: SynthesisParams, on_event: EventHandler) -> Voice:
        """Start a stream; ``on_event`` runs on the loop for each of its events."""

        def sink(event: EngineEvent) -> None:  # engine thread
            try:
                self.loop.call_soon_threadsafe(on_event, event)
            except RuntimeError:
                pass  # the loop is closed: the session is gone

        return self.engine.open(stream_id, voice_id, params, sink)

    def add_segment(self, stream_id: str, index: int, text: str, lead: str = "", preview: str = "") -> None:
        self.engine.add_segment(stream_id, index, text, lead, preview)

    def finish(self, stream_id: str) -> None:
        self.engine.finish(stream_id)

    def abort(self, stream_id: str) -> None:
        self.engine.abort(stream_id)

    def hold(self, stream_id: str, held: bool) -> None:
        self.engine.hold(stream_id, held)

    def report_playback(self, stream_id: str, position_s: float) -> None:
        self.engine.report_playback(stream_id, position_s)
