"""Dialogue speaker tags: ``[S1]`` and ``[S2]`` name who speaks next (Dia reads them).

The segmenter cuts turns at them and the Dia backend turns them into its
encoder's bytes; both find them with :data:`SPEAKER_TAG`.  Pure: thread-safe.
"""

from __future__ import annotations

import re

SPEAKER_TAG = re.compile(r"\[S[12]\]")


def without_tags(text: str) -> str:
    """``text`` with its speaker tags removed."""
    return SPEAKER_TAG.sub("", text)
