"""The GPT-SoVITS v2 backend: the shared autoregressive backend over GPT-SoVITS voices.

Prefills and batched steps are T2S calls, chunks are SoVITS decodes; the
scheduling (lanes, slots, continuous batching, a segment's end) is
``engine/ar/backend.py``'s, the same for every autoregressive family.
"""

from __future__ import annotations

from streamvox.engine.ar.backend import ARBackend
from streamvox.engine.backends.gpt_sovits.voice import GptSovitsVoice


class GptSovitsBackend(ARBackend):
    """Loads GPT-SoVITS v2 voice directories and runs their streams."""

    kind = "gpt-sovits"
    voice_type = GptSovitsVoice
