"""The Dia backend: the shared autoregressive backend over Dia voices.

Prefills and batched steps are decoder calls (every request two rows, for
guidance), chunks are DAC windows with 10 frames of context each side, so the
streamed audio is the offline decode; the scheduling (lanes, slots, continuous
batching, a segment's end) is ``engine/ar/backend.py``'s.  Each segment is its
own Dia request; one that names no speaker speaks as the last speaker its
stream named (``[S1]`` at first).
"""

from __future__ import annotations

from streamvox.engine.ar.backend import ARBackend
from streamvox.engine.backends.dia.voice import DiaVoice


class DiaBackend(ARBackend):
    """Loads Dia voice directories and runs their streams."""

    kind = "dia"
    voice_type = DiaVoice
