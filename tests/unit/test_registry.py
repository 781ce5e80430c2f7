"""The voice registry: the lazy backend table, voice specs, lookups and errors."""

from __future__ import annotations

import pytest
from streamvox.engine.api import SETTINGS, UnknownBackendError, UnknownVoiceError, VoiceLoadError
from streamvox.engine.ar.slots import SlotPool
from streamvox.engine.registry import BACKENDS, VoiceRegistry, VoiceSpec, load_backend


def test_every_table_entry_names_a_backend_of_its_kind() -> None:
    for kind in BACKENDS:
        assert load_backend(kind).kind == kind


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(UnknownBackendError, match="kinds: piper, gpt-sovits"):
        load_backend("espeak")
    with pytest.raises(UnknownBackendError):
        VoiceRegistry().backend("espeak")


def test_voice_specs_parse_kind_and_path() -> None:
    assert VoiceSpec.parse("gpt-sovits=/voices/narrator") == VoiceSpec("gpt-sovits", "/voices/narrator")
    assert VoiceSpec.parse("piper=a=b.onnx") == VoiceSpec("piper", "a=b.onnx")
    assert VoiceSpec.parse("dia=/voices/dialogue") == VoiceSpec("dia", "/voices/dialogue")
    for bad in ("piper", "=x", "piper=", "kokoro=/x"):
        with pytest.raises(ValueError):
            VoiceSpec.parse(bad)


def test_lookups_and_duplicates(registry: VoiceRegistry) -> None:
    voice = registry.get(None)
    assert registry.get(voice.id) is voice and registry.ids() == [voice.id]
    assert voice.honours <= set(SETTINGS) and voice.honours
    with pytest.raises(UnknownVoiceError):
        registry.get("nobody")
    copy = VoiceRegistry()
    copy.add(voice)
    with pytest.raises(VoiceLoadError, match="share the id"):
        copy.add(voice)


def test_no_voice_at_all_is_an_error() -> None:
    with pytest.raises(VoiceLoadError, match="no voices"):
        VoiceRegistry.load(include_bundled=False)


def test_a_missing_voice_file_is_a_load_error(tmp_path) -> None:
    with pytest.raises(VoiceLoadError, match="no voice model"):
        VoiceRegistry.load([VoiceSpec("piper", str(tmp_path / "none.onnx"))], include_bundled=False)


def test_slot_pool_hands_out_the_lowest_free_slot_and_clears_on_release() -> None:
    cleared: list[int] = []
    pool = SlotPool(3, cleared.append)
    assert [pool.acquire(), pool.acquire()] == [0, 1] and pool.free == 1
    pool.release(0)
    assert cleared == [0] and pool.acquire() == 0
    with pytest.raises(ValueError):
        pool.release(2)  # never handed out
    pool.acquire()
    with pytest.raises(RuntimeError):
        pool.acquire()
