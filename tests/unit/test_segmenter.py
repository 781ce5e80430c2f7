"""Incremental segmentation: small first span, sentence spans, no false cuts, time caps, offsets."""

from __future__ import annotations

import pytest
from streamvox.engine.text.segmenter import Segmenter, SegmenterConfig, Span


def stream(text: str, step: int = 3, config: SegmenterConfig | None = None) -> list[str]:
    """Feed ``text`` a few characters at a time (no time passes), then flush."""
    seg = Segmenter(config or SegmenterConfig())
    spans = []
    for i in range(0, len(text), step):
        spans += seg.push(text[i : i + step], now=0.0)
    spans += seg.flush()
    return [s.text for s in spans]


def test_first_span_is_the_first_clause_then_sentences() -> None:
    text = "Hello there, my friend. This is the second sentence. And a third!"
    assert stream(text) == ["Hello there,", "my friend.", "This is the second sentence.", "And a third!"]


def spans_of(text: str, step: int = 3, config: SegmenterConfig | None = None) -> list[Span]:
    seg = Segmenter(config or SegmenterConfig())
    spans = []
    for i in range(0, len(text), step):
        spans += seg.push(text[i : i + step], now=0.0)
    return spans + seg.flush()


def test_first_span_is_cut_once_n_words_arrived_and_previews_the_last() -> None:
    six = SegmenterConfig(first_max_words=6)
    spans = spans_of("one two three four five six seven eight nine ten. Next sentence here.", config=six)
    assert [(s.text, s.lead, s.preview) for s in spans] == [
        ("one two three four five", "", "six"),
        ("six seven eight nine ten.", "one two three four five", ""),
        ("Next sentence here.", "", ""),
    ]


@pytest.mark.parametrize(
    ("text", "first", "preview"),
    [
        ("Here is a short summary of the meeting today.", "Here is a short summary", "of"),
        ("In the morning we will visit the castle.", "In the morning", "we will visit"),
        ("Your order shipped this morning and should arrive.", "Your order shipped this morning", "and"),
        ("Go to the shop to buy the milk.", "Go to the shop", "to buy"),
        ("It is to the of a thing.", "It is", "to the of a"),  # never fewer than first_min_words
    ],
)
def test_a_first_span_cut_by_words_never_ends_on_a_word_that_leans_on_the_next(
    text: str, first: str, preview: str
) -> None:
    """ "summary of | the meeting" is heard as two sentences; "summary | of the meeting" is not."""
    spans = spans_of(text, config=SegmenterConfig(first_max_words=6))
    assert (spans[0].text, spans[0].preview) == (first, preview)
    assert spans[1].lead == first and spans[1].text.startswith(preview)


def test_a_preview_is_spoken_by_the_next_span_whatever_releases_it() -> None:
    """Flushed, hurried or timed out, the previewed words come next, led by the first span."""
    for release in ("flush", "hurry", "time"):
        seg = Segmenter(SegmenterConfig(first_max_words=4))
        first = seg.push("The train to Chicago leaves ", now=0.0)
        assert [(s.text, s.preview) for s in first] == [("The train", "to Chicago")]
        if release == "flush":
            rest = seg.flush()
        elif release == "hurry":
            rest = seg.poll(0.1, hurry="word")
        else:
            rest = seg.poll(5.0)
        assert [(s.text, s.lead, s.preview) for s in rest] == [("to Chicago leaves", "The train", "")]


def test_no_preview_when_punctuation_or_the_time_cap_cuts() -> None:
    """A clause or sentence among the words that arrived cuts there, whole; so does the time cap."""
    spans = spans_of("Sure thing my friend, I will do it now.", step=100, config=SegmenterConfig(first_max_words=4))
    assert [(s.text, s.preview) for s in spans[:1]] == [("Sure thing my friend,", "")]
    assert spans[1].lead == ""
    seg = Segmenter(SegmenterConfig(first_wait_s=0.3))
    seg.push("one two thr", now=0.0)
    assert [(s.text, s.preview) for s in seg.poll(0.31)] == [("one two", "")]


@pytest.mark.parametrize(
    "text",
    [
        "Prices rose 3.5 percent to $10.25 today.",
        "Dr. Smith and Mr. Jones met Prof. Lee.",
        "Visit example.com or docs.python.org for more.",
        "J. R. R. Tolkien wrote it, e.g. this one.",
        "It was 10:30 a.m. in the U.S. office.",
    ],
)
def test_no_false_sentence_cuts(text: str) -> None:
    spans = stream(text, step=2, config=SegmenterConfig(first_max_words=50))  # sentence cuts only
    assert " ".join(spans) == text
    assert len([s for s in spans if s.endswith(".")]) == 1


def test_abbreviation_that_ends_a_sentence_before_a_capital() -> None:
    assert stream("We sold apples, pears, etc. Then we left.") == ["We sold apples,", "pears, etc.", "Then we left."]


def test_question_and_exclamation_and_quotes() -> None:
    assert stream('Hi, how are you? "Great!" she said. Ok.') == ["Hi, how are you?", '"Great!"', "she said.", "Ok."]


def test_newlines_end_spans() -> None:
    assert stream("# Title\n- first item\n- second item\n")[:3] == ["# Title", "- first item", "- second item"]


def test_long_text_without_punctuation_is_split_at_word_boundaries() -> None:
    words = [f"word{i}" for i in range(200)]
    spans = stream(" ".join(words), step=7)
    assert " ".join(spans).split() == words
    assert all(len(s) <= SegmenterConfig().max_chars for s in spans)
    assert len(spans) >= 4


def test_long_sentence_prefers_a_clause_boundary() -> None:
    text = "a " * 140 + "b, " + "c " * 40 + "d."
    spans = stream(text)
    assert any(s.endswith("b,") for s in spans)


def test_boundary_waits_for_the_next_character() -> None:
    seg = Segmenter()
    assert seg.push("Pay 3.", now=0.0) == []
    assert seg.push("50 now.", now=0.0) == []
    assert [s.text for s in seg.push(" Ok", now=0.0)] == ["Pay 3.50 now."]


def test_time_cap_releases_complete_words_only() -> None:
    seg = Segmenter(SegmenterConfig(first_wait_s=0.3, later_wait_s=1.0))
    assert seg.push("one two thr", now=10.0) == []
    assert seg.deadline() == pytest.approx(10.3)
    assert seg.poll(10.2) == []
    assert [s.text for s in seg.poll(10.31)] == ["one two"]
    assert seg.pending == " thr"
    seg.push("ee four", now=10.4)
    assert seg.deadline() == pytest.approx(11.31)
    assert [s.text for s in seg.poll(11.4)] == ["three"]


def test_offsets_point_into_the_client_text() -> None:
    text = "  Hello there, world. Bye now.  "
    seg = Segmenter()
    spans = seg.push(text, now=0.0) + seg.flush()
    for span in spans:
        assert text[span.start : span.end] == span.text


def test_unspeakable_spans_are_dropped() -> None:
    assert stream("Hello. ... !!! ok.") == ["Hello.", "ok."]


def test_flush_text_matches_push_then_flush() -> None:
    text = "One, two. Three four five six seven eight nine. Ten!"
    assert [s.text for s in Segmenter().flush_text(text)] == stream(text, step=len(text))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SegmenterConfig(first_max_words=0)
    with pytest.raises(ValueError):
        SegmenterConfig(max_chars=5)


def test_hurry_releases_up_to_the_last_clause_then_words() -> None:
    seg = Segmenter()
    assert [s.text for s in seg.push("Hello! This is going, to be long and", now=0.0)] == ["Hello!"]
    assert seg.poll(0.1) == []  # no sentence end, time cap not reached
    assert [s.text for s in seg.poll(0.1, hurry="clause")] == ["This is going,"]
    assert seg.poll(0.15, hurry="clause") == []  # no clause boundary left: keep the sentence whole
    assert [s.text for s in seg.poll(0.2, hurry="word")] == ["to be long"]
    assert seg.pending == " and"
    assert seg.poll(0.3, hurry="word") == []  # "and" may not be a complete word yet
    with pytest.raises(ValueError):
        seg.poll(0.4, hurry="now")


def test_a_speaker_tag_starts_a_dialogue_turn() -> None:
    spans = Segmenter().flush_text("[S1] Hello there, how are you? [S2] Fine thanks. [S1] Good.")
    assert [s.text for s in spans] == ["[S1] Hello there,", "how are you?", "[S2] Fine thanks.", "[S1] Good."]
    spans = Segmenter().flush_text("[S1] Hi [S2] yo [S1] ok.")
    assert [s.text for s in spans] == ["[S1] Hi", "[S2] yo", "[S1] ok."]


def test_no_cut_leaves_a_speaker_tag_behind_its_words() -> None:
    """Streamed token by token, a word-count or time cut that would end on ``[S2]`` stops before it."""
    segmenter = Segmenter(SegmenterConfig(first_max_words=6))
    spans = []
    for token in ["[S1] Well", " I", " think", " so", " [S2]", " Really", "?", " Yes"]:
        spans += segmenter.push(token, now=0.0)
    spans += segmenter.poll(now=10.0)
    spans += segmenter.flush()
    assert [s.text for s in spans] == ["[S1] Well I think so", "[S2] Really?", "Yes"]
    tagged = Segmenter(SegmenterConfig(first_max_words=6))
    assert [(s.text, s.preview) for s in tagged.push("[S1] One two three four five [S2] ", now=0.0)] == [
        ("[S1] One two three four five", "")  # the turn ends among the words that arrived: no preview
    ]
    assert tagged.poll(now=10.0) == [] and tagged.pending.strip() == "[S2]"  # waits for its words
    assert [s.text for s in tagged.push("Sure.", now=10.0) + tagged.flush()] == ["[S2] Sure."]
