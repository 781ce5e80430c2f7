"""Text to Piper phonemes with espeak-ng, the way Piper voices were trained.

Piper voices were trained on espeak-ng IPA output where each clause keeps its
terminating punctuation (``,`` ``:`` ``;`` followed by a space, ``.`` ``!`` ``?``
ending a sentence) and phonemes are split into Unicode NFD code points.  This
module reproduces that through the plain ``espeak_TextToPhonemes`` C API (via
``ctypes``), recovering each clause's terminator from how far espeak advanced
its text pointer.

espeak-ng keeps global state, so every call is serialised by a module lock:
the phonemizer is safe to call from any thread, one call at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02

_SENTENCE_END = ".!?"
_CLAUSE_END = ",:;"
_CLOSERS = "\"')]}»”’"
_LANGUAGE_SWITCH = re.compile(r"\([^)]+\)")

BOS, EOS, PAD = "^", "$", "_"


class PhonemizerError(RuntimeError):
    """espeak-ng could not be loaded or rejected a voice."""


@dataclass(frozen=True)
class Clause:
    """One espeak clause: its IPA phonemes and the punctuation that ended it."""

    phonemes: str
    terminator: str
    ends_sentence: bool


def _terminator_of(consumed: str, at_end: bool) -> tuple[str, bool]:
    """Find the punctuation that closed a clause from the text espeak consumed.

    espeak reads one word ahead before returning a clause, so unless the input
    is exhausted the consumed text ends with the start of the next clause.
    """
    if not at_end:
        cut = max(consumed.rfind(" "), consumed.rfind("\n"), consumed.rfind("\t"))
        consumed = consumed[:cut] if cut >= 0 else ""
    tail = consumed.rstrip().rstrip(_CLOSERS).rstrip()
    if tail.endswith("...") or tail.endswith("…"):
        return "", False
    run = len(tail) - len(tail.rstrip(_SENTENCE_END + _CLAUSE_END))
    if run == 0:
        return "", at_end
    first = tail[len(tail) - run]
    return first, first in _SENTENCE_END or at_end


class _Espeak:
    """The loaded libespeak-ng with the three functions we use."""

    def __init__(self) -> None:
        lib_path, data_dir = _locate_espeak()
        self.lib = ctypes.CDLL(lib_path)
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        parent = str(Path(data_dir).parent).encode() if data_dir else None
        if self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, parent, 0) <= 0:
            raise PhonemizerError(f"espeak-ng failed to initialise (library {lib_path})")
        self.voice: str | None = None

    def set_voice(self, voice: str) -> None:
        if voice != self.voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise PhonemizerError(f"espeak-ng has no voice {voice!r}")
            self.voice = voice

    def clauses(self, text: str) -> list[Clause]:
        raw = text.encode("utf-8")
        buf = ctypes.create_string_buffer(raw)
        base = ctypes.addressof(buf)
        ptr = ctypes.c_void_p(base)
        out: list[Clause] = []
        while ptr.value:
            start = ptr.value - base
            phonemes = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA)
            end = ptr.value - base if ptr.value else len(raw)
            consumed = raw[start:end].decode("utf-8", errors="ignore")
            terminator, ends = _terminator_of(consumed, at_end=not ptr.value or end >= len(raw))
            out.append(Clause((phonemes or b"").decode("utf-8"), terminator, ends))
        return out


def _locate_espeak() -> tuple[str, str | None]:
    """Prefer the pinned espeakng-loader build; fall back to the system library."""
    try:
        import espeakng_loader

        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except (ImportError, RuntimeError):
        found = ctypes.util.find_library("espeak-ng")
        if not found:
            raise PhonemizerError(
                "libespeak-ng not found: install espeakng-loader or the Debian package libespeak-ng1"
            ) from None
        return found, None


_lock = threading.Lock()
_engine: _Espeak | None = None


def phonemize(text: str, voice: str) -> list[list[str]]:
    """Phonemes of ``text`` grouped by sentence, each a list of NFD code points.

    Thread-safe (serialised); the first call loads espeak-ng.
    """
    global _engine
    with _lock:
        if _engine is None:
            _engine = _Espeak()
        _engine.set_voice(voice)
        clauses = _engine.clauses(text)
    sentences: list[list[str]] = []
    current: list[str] = []
    for clause in clauses:
        spoken = _LANGUAGE_SWITCH.sub("", clause.phonemes) + clause.terminator
        if clause.terminator and clause.terminator in _CLAUSE_END:
            spoken += " "
        current.extend(unicodedata.normalize("NFD", spoken))
        if clause.ends_sentence:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def phoneme_ids(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]) -> list[int]:
    """Piper ids: BOS, then each known phoneme followed by PAD, then EOS.

    Phonemes the voice does not know are dropped, as Piper drops them.
    """
    return phoneme_ids_with_sources(phonemes, id_map)[0]


def phoneme_ids_with_sources(
    phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]
) -> tuple[list[int], list[int]]:
    """:func:`phoneme_ids` and, for each id, the index of the phoneme it came from.

    A phoneme's PAD counts as its own (the model spends that time on it); BOS, the
    first PAD and EOS come from no phoneme (-1)."""
    ids = [*id_map[BOS], *id_map[PAD]]
    sources = [-1] * len(ids)
    for index, phoneme in enumerate(phonemes):
        mapped = id_map.get(phoneme)
        if mapped is not None:
            ids.extend(mapped)
            ids.extend(id_map[PAD])
            sources.extend([index] * (len(mapped) + len(id_map[PAD])))
    ids.extend(id_map[EOS])
    sources.extend([-1] * len(id_map[EOS]))
    return ids, sources
