"""Piper word timings: the encoder's own per-phoneme durations, summed word by word.

espeak-ng phonemises a segment as a whole (so "of the" reads as one unit and
"$3.50" as "dollar three point five zero", reordered), which is what the
voice must hear.  To learn which of those phonemes belong to which word, each
word is also phonemised alone and the per-word phonemes are aligned to the
segment's with :class:`difflib.SequenceMatcher`; a phoneme left unmatched
(a stress mark, a sound espeak changed in context) takes the word of its
nearest matched neighbour inside the same espeak word.  Times then come from
the encoder's durations, which are the frames the decoder really renders: as
exact as the model's alignment, to one 256-sample frame.  Pure functions:
thread-safe, though each phonemisation takes espeak's module lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

import numpy as np
from streamvox.engine.events import WordTiming
from streamvox.engine.text.phonemes import phonemize
from streamvox.engine.text.words import SpokenWord

_SILENT = set(" \t\n.,;:!?¡¿…—–-\"'«»“”()[]")
"""Code points in espeak's output that carry no sound of a word: spaces and punctuation."""


def phoneme_words(phonemes: Sequence[str], words: Sequence[SpokenWord], espeak_voice: str) -> list[int]:
    """For each code point of ``phonemes`` (a segment's, as the voice reads them), the index
    of the word in ``words`` it belongs to, or -1 for spaces, punctuation and the unmatched."""
    spoken = [i for i, p in enumerate(phonemes) if p not in _SILENT]
    target = [phonemes[i] for i in spoken]
    alone: list[str] = []
    owner: list[int] = []
    for index, word in enumerate(words):
        for sentence in phonemize(word.text, espeak_voice):
            sounds = [p for p in sentence if p not in _SILENT]
            alone.extend(sounds)
            owner.extend([index] * len(sounds))
    labels = [-1] * len(phonemes)
    matcher = SequenceMatcher(None, alone, target, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            labels[spoken[b + k]] = owner[a + k]
    _fill_within_espeak_words(phonemes, labels)
    _give_unmatched_words_their_gaps(phonemes, labels)
    return labels


def _fill_within_espeak_words(phonemes: Sequence[str], labels: list[int]) -> None:
    """Give each unmatched sound of a partly matched espeak word a word.

    Sounds after the run's last match go partly to the words the alignment skipped before
    the next match (espeak writes "for a" as one word, "fɚɹə", and "a" alone reads "eɪ"),
    and so do sounds before its first match; the rest take their nearest match's word
    (ties to the following one: a stress mark precedes its syllable)."""
    runs = _espeak_words(phonemes)
    matched = [[k for k in run if labels[k] >= 0] for run in runs]
    for r, (run, known) in enumerate(zip(runs, matched, strict=True)):
        if not known:
            continue
        later = next((labels[m[0]] for m in matched[r + 1 :] if m), None)
        earlier = next((labels[m[-1]] for m in reversed(matched[:r]) if m), -1)
        tail = [k for k in run if k > known[-1]]
        if later is not None and later > labels[known[-1]] + 1 and tail:
            _share(tail, list(range(labels[known[-1]], later)), labels, keep_first=True)
        head = [k for k in run if k < known[0]]
        if earlier < labels[known[0]] - 1 and head:
            _share(head, list(range(earlier + 1, labels[known[0]] + 1)), labels, keep_first=False)
        for k in run:
            if labels[k] < 0:
                nearest = min(known, key=lambda m: (abs(m - k), m < k))
                labels[k] = labels[nearest]


def _share(positions: list[int], words: list[int], labels: list[int], keep_first: bool) -> None:
    """Split ``positions`` into ``len(words)`` runs in order; with ``keep_first`` the first run
    stays with ``words[0]`` (the matched word), else the last stays with ``words[-1]``; the
    skipped words get the larger runs, since each needs a sound to be heard at all."""
    order = positions[::-1] if keep_first else positions
    parts = [sorted(part) for part in np.array_split(np.asarray(order), len(words))]
    if keep_first:
        parts.reverse()
    for word, part in zip(words, parts, strict=True):
        if (keep_first and word == words[0]) or (not keep_first and word == words[-1]):
            continue
        for k in part:
            labels[int(k)] = word


def _espeak_words(phonemes: Sequence[str]) -> list[range]:
    """Runs of sounds between spaces or punctuation: the words as espeak wrote them."""
    runs = []
    i = 0
    while i < len(phonemes):
        if phonemes[i] in _SILENT:
            i += 1
            continue
        j = i
        while j < len(phonemes) and phonemes[j] not in _SILENT:
            j += 1
        runs.append(range(i, j))
        i = j
    return runs


def _give_unmatched_words_their_gaps(phonemes: Sequence[str], labels: list[int]) -> None:
    """A word that matched nothing ("a" alone is "eɪ", in a sentence "ɐ") owns the unmatched
    espeak words between its neighbours, when there are some."""
    runs = _espeak_words(phonemes)
    i = 0
    while i < len(runs):
        if labels[runs[i][0]] >= 0:
            i += 1
            continue
        j = i
        while j < len(runs) and labels[runs[j][0]] < 0:
            j += 1
        before = labels[runs[i - 1][-1]] if i > 0 else -1
        after = labels[runs[j][0]] if j < len(runs) else None
        if after is not None:
            missing = list(range(before + 1, after))
            for g, run in enumerate(runs[i:j]):
                if missing:
                    word = missing[min(len(missing) - 1, g * len(missing) // (j - i))]
                    for k in run:
                        labels[k] = word
        i = j


def id_words(labels: Sequence[int], sources: Sequence[int]) -> list[int]:
    """For each phoneme id, the word its phoneme belongs to (-1 for BOS, PAD, EOS and silence)."""
    return [labels[source] if source >= 0 else -1 for source in sources]


def frame_edges(durations: np.ndarray) -> np.ndarray:
    """The frame where each phoneme id starts, and after them the total: ``len(durations) + 1`` ints."""
    return np.concatenate([[0], np.cumsum(durations)]).astype(np.int64)


def word_timings(
    words: Sequence[SpokenWord], labels: Sequence[int], sources: Sequence[int], durations: np.ndarray, hop: int
) -> list[WordTiming]:
    """Each located word's span of frames, from the ids whose phonemes belong to it.

    ``sources[i]`` is the phoneme index of id ``i`` (-1 for BOS, PAD, EOS), ``durations[i]``
    its frames, ``hop`` the samples per frame."""
    if len(sources) != len(durations):
        raise ValueError(f"{len(sources)} id sources but {len(durations)} durations")
    edges = frame_edges(durations)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, word in enumerate(id_words(labels, sources)):
        if word >= 0:
            first.setdefault(word, i)
            last[word] = i
    timings = []
    for index, word in enumerate(words):
        if word.located and index in first:
            start, end = int(edges[first[index]]), int(edges[last[index] + 1])
            if end > start:
                timings.append(WordTiming(word.char_start, word.char_end, start * hop, end * hop))
    return timings
