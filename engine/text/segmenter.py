"""Incremental text segmentation: when has enough text arrived to start speaking?

Text arrives a few characters at a time (an LLM's tokens).  The first span of
a context is cut small for latency: at the first clause boundary, once
``first_max_words`` complete words have arrived, or when ``first_wait_s`` has
passed since its first word arrived.  A cut by word count keeps the last of those
words (and any before it that lean on the next, such as "the" or "of") as the
span's *preview*: the voice reads them for the prosody of the words it speaks, so
the span's last word is said as mid-sentence, not as an utterance's end, and the
next span speaks them, with the first span's words as its *lead* (read, not
spoken again), so the seam falls mid-sentence inside one continuous reading.
Later spans are whole sentences for natural prosody, split at a clause or word
boundary only past ``max_chars``.  A boundary counts only once the character
after it has arrived, so "3." in "3.50", "Dr." in "Dr. Smith" and "example." in
"example.com" never cut.  A dialogue speaker tag (``[S1]``, ``[S2]``) starts a
turn: the text before it is a span of its own, and no cut leaves a tag at the
end of a span, away from the words it introduces.

Not thread-safe: one segmenter per context, driven by its session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from streamvox.engine.text.speakers import SPEAKER_TAG, without_tags

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft vs fig figs no nos vol vols ch sec approx dept est gen gov lt col sgt "
    "capt cmdr rev hon e.g i.e cf al jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
"""Words that end in a period without ending a sentence."""
_ABBREVIATIONS_AT_END = frozenset("etc inc ltd co corp a.m p.m u.s u.k".split())
"""Abbreviations that end the sentence only when a capitalised word follows."""
_LEANING_WORDS = frozenset(
    "a an the this that these those my your his her its our their some any no every each "
    "to of in on at by for from with into onto about over under after before than as like "
    "and or but nor so if because while when where "
    "i we you he she it they is are was were be been am will would can could should shall may might must "
    "do does did have has had not".split()
)
"""English words that lean on the word after them: a word-count cut never leaves one at the end
of a first span ("a short summary of | the meeting" is heard as two sentences)."""
_CLOSERS = "\"')]}»”’"
_SENTENCE_END = re.compile(r"(?:[.!?]+|…)[" + re.escape(_CLOSERS) + r"]*(?=\s|$)|\n")
_CLAUSE_END = re.compile(r"[,;:][" + re.escape(_CLOSERS) + r"]*(?=\s|$)|\s[-–—]+(?=\s)|—")
_WORD = re.compile(r"\S+")
_SPEAKABLE = re.compile(r"\w")
_TURN = re.compile(r"\s+" + SPEAKER_TAG.pattern)
"""A speaker tag after some text: a new dialogue turn starts there."""
_TRAILING_TAG = re.compile(r"\s*" + SPEAKER_TAG.pattern + r"\s*$")


@dataclass(frozen=True)
class SegmenterConfig:
    """How eagerly text is released for synthesis."""

    first_max_words: int = 4
    """The first span is cut once this many complete words have arrived, if no clause ended sooner;
    its last word (with any leaning words before it) is its preview, spoken by the next span.
    4 words: first audio within 200 ms of the first word at 20 words/s, at the intelligibility of
    whole-sentence synthesis (``streamvox bench first-span``; the figures are in the README)."""
    first_min_words: int = 2
    """A clause boundary cuts the first span only after this many words (a sentence end always does)."""
    first_wait_s: float = 0.35
    """Time cap for the first span, counted from its first character."""
    later_wait_s: float = 1.5
    """Time cap for later spans: text with no punctuation still gets spoken."""
    max_chars: int = 300
    """Longest span; longer sentences split at their last clause, else word, boundary."""

    def __post_init__(self) -> None:
        if self.first_max_words < 1 or self.first_min_words < 1:
            raise ValueError("word counts must be >= 1")
        if self.first_wait_s <= 0 or self.later_wait_s <= 0:
            raise ValueError("time caps must be > 0")
        if self.max_chars < 20:
            raise ValueError("max_chars must be >= 20")


@dataclass(frozen=True)
class Span:
    """A speakable piece of the context's text, with its offsets in that text."""

    text: str
    start: int
    end: int
    lead: str = ""
    """The text spoken just before this span in the same sentence: the voice may read it for context
    (it is not spoken again)."""
    preview: str = ""
    """The words that follow this span, already known: the voice may read them for context (the next
    span speaks them)."""


@dataclass
class Segmenter:
    """See the module docstring.  Times are ``time.monotonic()`` seconds."""

    config: SegmenterConfig = field(default_factory=SegmenterConfig)
    _text: str = ""
    _pos: int = 0
    _pending_since: float | None = None
    _lead_from: int | None = None
    """Where the last span began, when it ended on a preview: the next span's lead starts there."""
    spans_emitted: int = 0

    @property
    def pending(self) -> str:
        """Text received but not yet released."""
        return self._text[self._pos :]

    @property
    def text(self) -> str:
        """Everything received so far (what offsets point into)."""
        return self._text

    @property
    def total_chars(self) -> int:
        return len(self._text)

    def push(self, text: str, now: float) -> list[Span]:
        """Append text; return the spans that became speakable."""
        if text and self._pending_since is None and text.strip():
            self._pending_since = now
        self._text += text
        return self._drain(final=False, now=now)

    def poll(self, now: float, hurry: str | None = None) -> list[Span]:
        """Apply the time cap: return complete words held longer than it allows.

        ``hurry`` (the listener is about to run out of audio) releases one span without
        waiting for a sentence end: ``"clause"`` up to the last clause boundary (if any),
        ``"word"`` up to it or else the last complete word.
        """
        if hurry not in (None, "clause", "word"):
            raise ValueError(f"hurry must be None, 'clause' or 'word', not {hurry!r}")
        return self._drain(final=False, now=now, hurry=hurry)

    def flush(self) -> list[Span]:
        """Release everything buffered (still cut into first-span and sentence-sized pieces)."""
        return self._drain(final=True, now=None)

    def flush_text(self, text: str) -> list[Span]:
        """Segment a whole text at once (offline synthesis): ``push`` then ``flush``."""
        return self.push(text, now=0.0) + self.flush()

    def deadline(self) -> float | None:
        """When ``poll`` would release text by the time cap, or ``None`` if nothing waits."""
        if self._pending_since is None:
            return None
        wait = self.config.first_wait_s if self.spans_emitted == 0 else self.config.later_wait_s
        return self._pending_since + wait

    def _drain(self, final: bool, now: float | None, hurry: str | None = None) -> list[Span]:
        spans: list[Span] = []
        while True:
            pending = self.pending
            cut, preview_end = self._next_cut(pending, final)
            if cut is None and hurry is not None:
                cut = _clause_end(pending, self.config.first_min_words, last=True)
                if cut is None and hurry == "word":
                    cut = _last_word_end(pending)
                hurry = None  # one span: the listener needs the next words, not all of them at once
            if cut is None and now is not None and (deadline := self.deadline()) is not None and now >= deadline:
                cut = _last_word_end(pending)
            if not cut:
                break
            cut = _keep_tag_with_its_words(pending, cut)
            if not final and SPEAKER_TAG.search(pending[:cut]) and not _has_words(pending[:cut]):
                break  # a speaker tag waits for the words it introduces
            start = self._pos
            self._pos += cut
            piece = self._text[start : self._pos]
            stripped = piece.strip()
            if _has_words(stripped):
                begin = start + len(piece) - len(piece.lstrip())
                lead = self._text[self._lead_from : begin].strip() if self._lead_from is not None else ""
                preview = self._text[self._pos : start + preview_end].strip() if preview_end else ""
                spans.append(Span(stripped, begin, begin + len(stripped), lead, preview))
                self._lead_from = begin if preview else None
                self.spans_emitted += 1
            rest = self.pending
            self._pending_since = (now if now is not None else self._pending_since) if rest.strip() else None
        return spans

    def _next_cut(self, pending: str, final: bool) -> tuple[int | None, int | None]:
        """Where the next span ends in ``pending`` (``None``: not yet), and where its preview ends."""
        if not pending.strip():
            return (len(pending) if final and pending else None), None
        if self.spans_emitted == 0:
            cut, preview_end = self._first_cut(pending, final)
            if cut is not None:
                return cut, preview_end
        sentence = _earliest(_sentence_end(pending, final), _turn_start(pending))
        limit = self.config.max_chars
        if sentence is not None and sentence <= limit:
            return sentence, None
        if sentence is not None or len(pending) > limit:
            return (_split_long(pending[:limit]) or limit), None
        return (len(pending) if final else None), None

    def _first_cut(self, pending: str, final: bool) -> tuple[int | None, int | None]:
        cfg = self.config
        sentence = _earliest(_sentence_end(pending, final), _turn_start(pending))
        clause = _clause_end(pending, cfg.first_min_words)
        punctuated = _earliest(sentence, clause)
        words = [m for m in _WORD.finditer(pending) if m.end() < len(pending)]
        if len(words) < cfg.first_max_words:
            return punctuated, None
        known = words[cfg.first_max_words - 1].end()
        if punctuated is not None and punctuated <= known:
            return punctuated, None  # a clause or sentence among the words that arrived: cut there, whole
        kept = max(1, cfg.first_max_words - 1)
        while kept > cfg.first_min_words and _leans_forward(words[kept - 1].group()):
            kept -= 1
        return words[kept - 1].end(), (known if kept < cfg.first_max_words else None)


def _leans_forward(word: str) -> bool:
    """A function word that belongs with what follows it (see ``_LEANING_WORDS``)."""
    return word.lower().strip(_CLOSERS + "\"'“‘(") in _LEANING_WORDS


def _earliest(*cuts: int | None) -> int | None:
    found = [c for c in cuts if c is not None]
    return min(found) if found else None


def _turn_start(text: str) -> int | None:
    """Where the first speaker tag that follows speakable text begins (the turn before it ends)."""
    for match in _TURN.finditer(text):
        if _has_words(text[: match.start()]):
            return match.start()
    return None


def _has_words(text: str) -> bool:
    return bool(_SPEAKABLE.search(without_tags(text)))


def _keep_tag_with_its_words(text: str, cut: int) -> int:
    """``cut`` moved before a speaker tag it would leave at the end of a span (if words precede it)."""
    match = _TRAILING_TAG.search(text[:cut])
    if match and _has_words(text[: match.start()]):
        return match.start()
    return cut


def _sentence_end(text: str, final: bool) -> int | None:
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if match.group() == "\n":
            return end
        if end == len(text) and not final:
            return None
        if match.group().startswith("."):
            verdict = _period_ends_sentence(text, match.start(), end)
            if verdict is None:
                if not final:
                    return None
                verdict = True
            if not verdict:
                continue
        return end
    return None


def _period_ends_sentence(text: str, dot: int, end: int) -> bool | None:
    """Whether the period at ``dot`` ends a sentence; ``None`` until the next word shows it."""
    word = text[:dot].rsplit(None, 1)[-1] if text[:dot].strip() else ""
    bare = word.lstrip(_CLOSERS + "(").lower()
    if len(bare) == 1 and bare.isalpha():
        return False
    if bare in _ABBREVIATIONS:
        return False
    if bare in _ABBREVIATIONS_AT_END:
        following = text[end:].lstrip()
        return following[0].isupper() if following else None
    return True


def _clause_end(text: str, min_words: int, last: bool = False) -> int | None:
    """End of the first (or ``last``) clause boundary preceded by ``min_words`` words."""
    found = None
    for match in _CLAUSE_END.finditer(text):
        end = match.end()
        if end == len(text):
            break
        if len(_WORD.findall(text[: match.start()])) >= min_words:
            if not last:
                return end
            found = end
    return found


def _split_long(text: str) -> int | None:
    clauses = [m.end() for m in _CLAUSE_END.finditer(text) if m.end() < len(text)]
    if clauses and clauses[-1] > len(text) // 3:
        return clauses[-1]
    return _last_word_end(text)


def _last_word_end(text: str) -> int | None:
    """End of the last word followed by whitespace (or the whole text if it ends in punctuation)."""
    stripped = text.rstrip()
    if stripped and stripped[-1] in ".!?,;:…" + _CLOSERS and len(stripped) < len(text):
        return len(stripped)
    space = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
    if space <= 0 or not text[:space].strip():
        return None
    return space
