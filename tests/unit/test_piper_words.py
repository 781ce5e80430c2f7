"""Piper word timings: each phoneme's word, and the frames each word spans."""

from __future__ import annotations

import numpy as np
from streamvox.engine.backends.piper.voice import HOP_LENGTH, PiperVoice
from streamvox.engine.backends.piper.words import phoneme_words, word_timings
from streamvox.engine.events import WordTiming
from streamvox.engine.text.words import SpokenWord, spoken_words


def _grouped(voice: PiperVoice, text: str) -> list[str]:
    """The phonemes of each word of ``text``, as the segment reads them."""
    normalized, words = spoken_words(text)
    phonemes = voice.phonemes(normalized)
    labels = phoneme_words(phonemes, words, voice.config.espeak_voice)
    return ["".join(p for p, label in zip(phonemes, labels, strict=True) if label == i) for i in range(len(words))]


def test_every_word_gets_its_own_sounds(voice: PiperVoice) -> None:
    groups = _grouped(voice, "paid $3.50 for a coffee at 10:30")
    assert all(groups), groups
    assert groups[1].startswith("dˈɑːlɚ")  # "$3.50" reads "dollar three point five zero"
    assert "θɹ" in groups[1] and "ɾi" in groups[-1]


def test_words_espeak_merged_are_split_again(voice: PiperVoice) -> None:
    groups = _grouped(voice, "one of the best")
    assert all(groups), groups  # "of the" is one espeak word, "ʌvðə"
    assert groups[1] == "ʌv" and groups[2] == "ðə"


def test_word_timings_follow_the_durations() -> None:
    words = [SpokenWord("ab", 0, 2), SpokenWord("c", 3, 4), SpokenWord("lost", 5, 5)]
    labels = [0, 0, -1, 1]  # phonemes: a b space c
    sources = [-1, -1, 0, 0, 1, 1, 2, 2, 3, 3, -1]  # BOS PAD (a PAD) (b PAD) (sp PAD) (c PAD) EOS
    durations = np.array([1, 1, 2, 1, 1, 1, 3, 1, 2, 2, 1])
    timings = word_timings(words, labels, sources, durations, HOP_LENGTH)
    assert timings == [
        WordTiming(0, 2, 2 * HOP_LENGTH, 7 * HOP_LENGTH),
        WordTiming(3, 4, 11 * HOP_LENGTH, 15 * HOP_LENGTH),
    ]


def test_timings_of_a_real_segment_are_ordered_and_inside_it(voice: PiperVoice) -> None:
    text = "Yesterday the quick brown fox jumped over the lazy dog, twice."
    normalized, words = spoken_words(text)
    phonemes = voice.phonemes(normalized)
    ids, sources = voice.ids_with_sources(phonemes)
    front = voice.front(ids, None)
    timings = word_timings(words, phoneme_words(phonemes, words, voice.config.espeak_voice), sources,
                           front.durations, HOP_LENGTH)  # fmt: skip
    assert [text[t.char_start : t.char_end] for t in timings] == [w.strip(",.") for w in text.split()]
    assert all(a.end_sample <= b.start_sample for a, b in zip(timings, timings[1:], strict=False))
    assert timings[-1].end_sample <= front.frames * HOP_LENGTH
