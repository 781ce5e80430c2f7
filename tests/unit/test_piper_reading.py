"""A segment read with its lead and preview: only its own words are decoded, cut on the encoder's own
durations, and the windowed decode equals the whole reading's one-shot decode over those frames."""

from __future__ import annotations

import numpy as np
import pytest
from streamvox.engine.audio.windows import WindowPlan
from streamvox.engine.backends.piper.reading import own_timings, read, spoken_frames
from streamvox.engine.backends.piper.segment import PiperSegment
from streamvox.engine.backends.piper.voice import HOP_LENGTH, PiperVoice
from streamvox.engine.backends.piper.words import phoneme_words, word_timings
from streamvox.engine.events import WordTiming

from tests.helpers.audio import snr_db


def test_a_reading_knows_which_words_are_the_segments(voice: PiperVoice) -> None:
    reading = read(voice, "to Chicago leaves", lead="The train", preview="from platform")
    assert reading.raw == "The train to Chicago leaves from platform"
    assert reading.raw[reading.text_offset :].startswith("to Chicago leaves")
    assert [w.text for w in reading.words[reading.first_word : reading.end_word]] == ["to", "Chicago", "leaves"]
    assert reading.in_context
    alone = read(voice, "to Chicago leaves")
    assert (alone.first_word, alone.end_word, alone.in_context) == (0, 3, False)


@pytest.mark.parametrize(
    ("lead", "preview"), [("The train", ""), ("", "from platform four"), ("The train", "from platform four")]
)
def test_only_the_segments_own_frames_are_decoded(voice: PiperVoice, lead: str, preview: str) -> None:
    reading = read(voice, "to Chicago leaves", lead, preview)
    front = voice.front(reading.ids, np.random.default_rng(3))
    labels = phoneme_words(reading.phonemes, reading.words, voice.config.espeak_voice)
    frames = spoken_frames(reading, labels, front.durations)
    assert frames is not None
    start, end = frames
    assert (start > 0) == bool(lead) and (end < front.frames) == bool(preview)
    timings = word_timings(reading.words, labels, reading.sources, front.durations, HOP_LENGTH)
    own = [t for t in timings if reading.text_offset <= t.char_start < reading.text_offset + len("to Chicago leaves")]
    assert start * HOP_LENGTH <= own[0].start_sample and own[-1].end_sample <= end * HOP_LENGTH
    # The windowed decode of those frames (and a crossfade's worth past them) is the whole reading's.
    tail = 220 if preview else 0
    plan = WindowPlan(first_frames=8, later_first_frames=8, max_frames=32)
    segment = PiperSegment(voice, front, plan, frames=frames, tail_samples=tail)
    pieces = []
    while not segment.done:
        pieces.append(segment.next_window())
    audio = np.concatenate(pieces)
    whole = voice.decode(voice.flow(front.z_p))
    assert len(audio) == segment.samples == (end - start) * HOP_LENGTH + tail
    assert snr_db(whole[start * HOP_LENGTH : start * HOP_LENGTH + len(audio)], audio) >= 60


def test_words_that_cannot_be_cut_out_in_order_give_no_frames(voice: PiperVoice) -> None:
    reading = read(voice, "b", lead="a", preview="c")
    assert reading.phonemes == ["ɐ", " ", "b", "ˈ", "i", "ː", " ", "s", "ˈ", "i", "ː"]
    durations = np.ones(len(reading.sources), dtype=np.int64)
    in_order = [0, -1, 1, 1, 1, 1, -1, 2, 2, 2, 2]
    assert spoken_frames(reading, in_order, durations) is not None
    lead_after = [0, -1, 1, 0, 0, 0, -1, 2, 2, 2, 2]  # a lead word's sound after the segment's first
    preview_before = [0, -1, 2, 1, 1, 1, -1, 2, 2, 2, 2]  # a preview word's sound before the segment's last
    for labels in (lead_after, preview_before, [-1] * len(reading.phonemes)):
        assert spoken_frames(reading, labels, durations) is None


def test_own_timings_point_into_the_segments_text_and_audio(voice: PiperVoice) -> None:
    reading = read(voice, "to Chicago", lead="The train", preview="leaves")
    offset = reading.text_offset
    timings = [
        WordTiming(0, 3, 0, 100),  # "The": lead
        WordTiming(offset, offset + 2, 3000, 4000),  # "to"
        WordTiming(offset + 3, offset + 10, 4000, 9000),  # "Chicago"
        WordTiming(offset + 11, offset + 17, 9000, 12000),  # "leaves": preview
    ]
    assert own_timings(reading, timings, 2560) == [WordTiming(0, 2, 440, 1440), WordTiming(3, 10, 1440, 6440)]
