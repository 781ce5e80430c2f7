"""Checks every dialect applies to client text before it reaches a context.

JSON may escape a lone UTF-16 surrogate (``"\\ud800"``): it parses into a
Python string that no encoder accepts, so it would fail deep in the engine.
Each dialect refuses it at its edge, in its own error shape.  Pure functions.
"""

from __future__ import annotations


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be spoken as sent, or ``None`` if it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"text holds a lone surrogate (\\u{ord(text[exc.start]):04x}) at character {exc.start}: not valid Unicode"
        )
    return None
