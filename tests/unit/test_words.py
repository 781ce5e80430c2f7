"""Spoken words tied back to the raw text, and proportional timings."""

from __future__ import annotations

import pytest
from streamvox.engine.text.words import SpokenWord, core_of, proportional_timings, spoken_words


def _raw(text: str) -> list[str]:
    return [text[w.char_start : w.char_end] for w in spoken_words(text)[1]]


def test_plain_words_are_themselves_without_their_punctuation() -> None:
    assert _raw('"Hello," she said (quietly).') == ["Hello", "she", "said", "quietly"]


def test_a_url_read_as_its_host_stands_for_the_whole_url() -> None:
    text = "Visit https://www.example.com/a/b?c=1, then stop."
    normalized, words = spoken_words(text)
    assert "example.com" in normalized
    assert _raw(text) == ["Visit", "https://www.example.com/a/b?c=1", "then", "stop"]
    assert words[1].text.startswith("example.com")


def test_markup_is_not_part_of_a_word() -> None:
    assert _raw("a [link](http://x.org) and **bold** foo|bar") == ["a", "link", "and", "bold", "foo", "bar"]


def test_emoji_and_bare_punctuation_are_not_words() -> None:
    assert _raw("Great 🎉 news — we did it!") == ["Great", "news", "we", "did", "it"]


def test_numbers_keep_their_written_form() -> None:
    assert _raw("Pay $3.50 on 2024-01-05 at 10:30.") == ["Pay", "$3.50", "on", "2024-01-05", "at", "10:30"]


def test_offsets_move_forward_through_repeated_words() -> None:
    words = spoken_words("the cat and the dog")[1]
    assert [(w.char_start, w.char_end) for w in words] == [(0, 3), (4, 7), (8, 11), (12, 15), (16, 19)]


def test_core_strips_wrapping_punctuation_only() -> None:
    assert core_of("(“quoted”),") == "quoted"
    assert core_of("e.g.") == "e.g"


def test_proportional_timings_share_the_length_and_leave_pauses_empty() -> None:
    words = [SpokenWord("one,", 0, 3), SpokenWord("two", 5, 8), SpokenWord("three.", 9, 14)]
    timings = proportional_timings(words, [2, 2, 4], [2, 0, 0], 1000)
    assert [(t.start_sample, t.end_sample) for t in timings] == [(0, 200), (400, 600), (600, 1000)]
    assert [(t.char_start, t.char_end) for t in timings] == [(0, 3), (5, 8), (9, 14)]


def test_an_unlocated_word_keeps_its_time_but_gets_no_timing() -> None:
    words = [SpokenWord("a", 0, 1), SpokenWord("lost", 2, 2), SpokenWord("b", 3, 4)]
    timings = proportional_timings(words, [1, 1, 1], [0, 0, 0], 300)
    assert [(t.start_sample, t.end_sample) for t in timings] == [(0, 100), (200, 300)]


def test_mismatched_weights_are_refused() -> None:
    with pytest.raises(ValueError):
        proportional_timings([SpokenWord("a", 0, 1)], [1, 2], [0], 10)
