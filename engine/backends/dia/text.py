"""Dia's text input: UTF-8 bytes, with the speaker tags ``[S1]`` and ``[S2]`` as bytes 1 and 2.

A segment that names no speaker speaks as the last one named before it in its
stream (``[S1]`` at first), so a dialogue split across segments keeps its
turns.  Pure functions: thread-safe.
"""

from __future__ import annotations

from streamvox.engine.text.speakers import SPEAKER_TAG, without_tags

SPEAKER_BYTES = {"[S1]": 1, "[S2]": 2}


def speaker_text_ids(text: str) -> list[int]:
    """The encoder's byte ids for ``text`` (tags become their single byte)."""
    ids: list[int] = []
    position = 0
    for match in SPEAKER_TAG.finditer(text):
        ids.extend(text[position : match.start()].encode("utf-8"))
        ids.append(SPEAKER_BYTES[match.group()])
        position = match.end()
    ids.extend(text[position:].encode("utf-8"))
    return ids


def last_speaker(text: str, default: str) -> str:
    """The last speaker tag in ``text``, or ``default`` if it names none."""
    tags = SPEAKER_TAG.findall(text)
    return tags[-1] if tags else default


def with_speaker(text: str, speaker: str) -> str:
    """``text`` starting with a speaker tag: its own, or ``speaker``'s."""
    stripped = text.lstrip()
    return stripped if SPEAKER_TAG.match(stripped) else f"{speaker} {stripped}"


def has_speech(text: str) -> bool:
    """Whether ``text`` has a letter or digit outside its speaker tags."""
    return any(c.isalnum() for c in without_tags(text))
