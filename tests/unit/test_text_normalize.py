"""Chat text to speakable text."""

from __future__ import annotations

import pytest
from streamvox.engine.text.normalize import normalize_for_speech


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("**Bold** and *italic* and `code`.", "Bold and italic and code."),
        ("# Title\n- item one\n- item two", "Title. item one. item two"),
        ("See [the docs](https://x.y/z) now.", "See the docs now."),
        ("Go to https://www.example.com/a/b?c=1.", "Go to example.com."),
        ("Hi 👋 there!", "Hi there!"),
        ("2*3*4 is snake_case_name", "2*3*4 is snake_case_name"),
        ("> quoted text", "quoted text"),
        ("```python\nprint(1)\n```\nDone.", "Done."),
        ("  lots   of\tspace  ", "lots of space"),
    ],
)
def test_normalize(raw: str, spoken: str) -> None:
    assert normalize_for_speech(raw) == spoken
