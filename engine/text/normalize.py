"""Turn chat-style text (Markdown, URLs, emoji) into text espeak-ng reads well.

Applied to each speakable span just before phonemization, never to the
buffer the segmenter scans, so offsets the client sees stay in its own text.
"""

from __future__ import annotations

import re

_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_URL = re.compile(r"\b(?:https?://|www\.)([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(?:[/?#:][^\s)\]]*[^\s)\].,;:!?'\"])?/?")
_EMPHASIS = re.compile(r"(?<![\w*~])(\*\*|__|\*|~~)(?=\S)(.+?)(?<=\S)\1(?![\w*~])")
_UNPUNCTUATED_LINE_END = re.compile(r"(?<=[^\s.,;:!?])[ \t]*\n+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.MULTILINE)
_QUOTE = re.compile(r"^\s*>\s?", re.MULTILINE)
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|[\s:|-]*$", re.MULTILINE)
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d]")
_SPACES = re.compile(r"\s+")


def normalize_for_speech(text: str) -> str:
    """Strip Markdown markup, shorten URLs to their host, drop emoji, collapse whitespace."""
    text = _CODE_BLOCK.sub(" ", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub(lambda m: m.group(1).removeprefix("www.").rstrip("."), text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    text = _QUOTE.sub("", text)
    text = _TABLE_RULE.sub(" ", text)
    text = text.replace("|", ", ")
    for _ in range(2):
        text = _EMPHASIS.sub(r"\2", text)
    text = _EMOJI.sub("", text)
    text = _UNPUNCTUATED_LINE_END.sub(". ", text)
    return _SPACES.sub(" ", text).strip()
