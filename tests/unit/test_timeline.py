"""A context's timeline: lifting segment timings, barge-in accounts, character alignment."""

from __future__ import annotations

from streamvox.engine.events import WordTiming
from streamvox.stream_server.timeline import TimedWord, Timeline, char_alignment

RATE = 1000


def _timeline() -> Timeline:
    timeline = Timeline()
    # "Hello world. Again" — segment 0 at 0 s, segment 1 ("Again", offset 13) at 2 s
    timeline.add(0, 0.0, [WordTiming(0, 5, 100, 500), WordTiming(6, 11, 600, 1000)], RATE, False)
    timeline.add(13, 2.0, [WordTiming(0, 5, 100, 600)], RATE, True)
    return timeline


def test_segments_are_lifted_into_the_context() -> None:
    timeline = _timeline()
    assert timeline.words[2] == TimedWord(13, 18, 2.1, 2.6)
    assert timeline.estimated


def test_inside_a_word_the_offset_lands_in_that_word() -> None:
    heard = _timeline().heard(0.8)
    assert 6 <= heard.char_offset < 11
    assert [w.char_start for w in heard.words] == [0, 6]


def test_between_words_the_offset_is_the_end_of_the_last_one() -> None:
    heard = _timeline().heard(1.5)
    assert heard.char_offset == 11 and len(heard.words) == 2


def test_before_the_first_word_nothing_was_heard() -> None:
    heard = _timeline().heard(0.05)
    assert heard.char_offset == 0 and heard.words == ()


def test_char_alignment_times_every_character() -> None:
    words = [TimedWord(0, 2, 0.1, 0.3), TimedWord(3, 5, 0.4, 0.6)]
    aligned = char_alignment("ab cd!", 0, words, 0.0)
    assert aligned.text == "ab cd!"
    assert aligned.start_ms == (100.0, 200.0, 300.0, 400.0, 500.0, 600.0)
    assert aligned.duration_ms == (100.0, 100.0, 100.0, 100.0, 100.0, 0.0)


def test_char_alignment_skips_words_outside_the_span() -> None:
    aligned = char_alignment("xy", 10, [TimedWord(0, 2, 0.0, 1.0), TimedWord(10, 12, 0.5, 0.7)], 0.4)
    assert aligned.start_ms == (500.0, 600.0)
