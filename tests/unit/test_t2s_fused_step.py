"""The T2S decoder's step through the fused attention kernel gives torch's step's logits and cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamvox.bench.random_voice import write_t2s_checkpoint
from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder


@pytest.mark.parametrize("heads", [2, 4])  # head sizes 16 and 32 (v2's): both AVX-512 shapes
def test_fused_steps_equal_torch_steps(tmp_path: Path, heads: int) -> None:
    cfg = T2SConfig(hidden=64 * heads // 2, heads=heads, layers=3, ffn=256)
    write_t2s_checkpoint(tmp_path / "s1.ckpt", cfg, seed=5)
    weights = load_s1(tmp_path / "s1.ckpt").weights
    fused = T2SDecoder(weights, cfg, slots=4, max_len=96, fused_attention=True)
    plain = T2SDecoder(weights, cfg, slots=4, max_len=96, fused_attention=False)
    assert fused.attention is not None and plain.attention is None
    generator = torch.Generator().manual_seed(6)
    for slot in range(4):  # different lengths per slot
        phonemes = torch.randint(0, cfg.phoneme_vocab, (5 + 3 * slot,), generator=generator)
        prompt = torch.randint(0, cfg.vocab - 1, (7 + 2 * slot,), generator=generator)
        torch.testing.assert_close(fused.prefill(slot, phonemes, prompt), plain.prefill(slot, phonemes, prompt))
    # packed rows (views on torch's side), a gathered set out of order, one slot alone
    for slots in ([0, 1, 2, 3], [3, 1], [2], [0, 1, 2, 3], [1, 3, 0]):
        ids = torch.tensor(slots)
        tokens = torch.randint(0, cfg.vocab - 1, (len(slots),), generator=generator)
        torch.testing.assert_close(fused.step(ids, tokens), plain.step(ids, tokens), rtol=1e-5, atol=1e-5)
    assert torch.equal(fused.lengths, plain.lengths) and torch.equal(fused.audio_lengths, plain.audio_lengths)
    torch.testing.assert_close(fused.kv_cache, plain.kv_cache)


def test_the_kernel_is_only_used_where_it_applies(tmp_path: Path) -> None:
    cfg = T2SConfig.tiny()
    write_t2s_checkpoint(tmp_path / "s1.ckpt", cfg, seed=7)
    weights = load_s1(tmp_path / "s1.ckpt").weights
    assert T2SDecoder(weights, cfg, int8=True).attention is not None
    assert T2SDecoder(weights, cfg, dtype=torch.bfloat16).attention is None  # torch's products in bf16


def test_a_fused_step_refuses_a_slot_twice(tmp_path: Path) -> None:
    cfg = T2SConfig.tiny()
    write_t2s_checkpoint(tmp_path / "s1.ckpt", cfg, seed=8)
    decoder = T2SDecoder(load_s1(tmp_path / "s1.ckpt").weights, cfg, slots=2, max_len=32)
    decoder.prefill(0, torch.arange(1, 4), torch.arange(2, 6))
    with pytest.raises(ValueError, match="twice"):
        decoder.step(torch.tensor([0, 0]), torch.tensor([1, 2]))
    assert int(decoder.lengths[0]) == 7  # a refused step moves nothing


def worst_step_difference(decoder: T2SDecoder, exact: T2SDecoder) -> float:
    """The largest logit difference over six steps of slots 0 and 1, the same tokens fed to both."""
    worst = 0.0
    for token in range(6):
        tokens = torch.tensor([token, token + 7])
        got, want = decoder.step(torch.arange(2), tokens), exact.step(torch.arange(2), tokens)
        worst = max(worst, float((got - want).abs().max()))
    return worst


def test_a_bf16_cache_holds_the_rounded_keys_and_steps_near_float32(tmp_path: Path) -> None:
    cfg = T2SConfig(hidden=64, heads=2, layers=2, ffn=128)
    write_t2s_checkpoint(tmp_path / "s1.ckpt", cfg, seed=9)
    weights = load_s1(tmp_path / "s1.ckpt").weights
    exact = T2SDecoder(weights, cfg, slots=2, max_len=64)
    rounded = T2SDecoder(weights, cfg, slots=2, max_len=64, cache_dtype=torch.bfloat16)
    assert rounded.kv_cache.dtype == torch.bfloat16
    phonemes, prompt = torch.arange(1, 12), torch.arange(4, 20)
    for slot in range(2):
        torch.testing.assert_close(rounded.prefill(slot, phonemes, prompt), exact.prefill(slot, phonemes, prompt))
    assert torch.equal(rounded.kv_cache, exact.kv_cache.to(torch.bfloat16))
    worst = worst_step_difference(rounded, exact)
    assert 0 < worst < 0.05  # rounding moves the logits, a little
    # the first layer's new keys and values come from the token embeddings alone (no cache in
    # them), so the kernel's writes are fp32's, rounded to nearest even as torch rounds
    assert torch.equal(rounded.kv_cache[0], exact.kv_cache[0].to(torch.bfloat16))


def test_a_bf16_cache_needs_the_fused_step(tmp_path: Path) -> None:
    cfg = T2SConfig.tiny()
    write_t2s_checkpoint(tmp_path / "s1.ckpt", cfg, seed=10)
    weights = load_s1(tmp_path / "s1.ckpt").weights
    with pytest.raises(ValueError, match="fused attention kernel"):
        T2SDecoder(weights, cfg, cache_dtype=torch.bfloat16, fused_attention=False)
    decoder = T2SDecoder(weights, cfg, slots=1, max_len=32, cache_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="fixed-shape step"):
        decoder.step_all(torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.bool))


def test_an_int8_cache_holds_the_quantised_keys_and_steps_near_float32(tmp_path: Path) -> None:
    cfg = T2SConfig(hidden=64, heads=2, layers=2, ffn=128)
    write_t2s_checkpoint(tmp_path / "s1.ckpt", cfg, seed=11)
    weights = load_s1(tmp_path / "s1.ckpt").weights
    exact = T2SDecoder(weights, cfg, slots=2, max_len=60)
    small = T2SDecoder(weights, cfg, slots=2, max_len=60, cache_dtype=torch.int8)
    assert small.kv_cache.dtype == torch.int8 and small.kv_cache.shape[-2] == 64  # whole key blocks
    assert small.max_len == 60 and small.attention is not None
    phonemes, prompt = torch.arange(1, 12), torch.arange(4, 20)
    for slot in range(2):  # the prefill's own attention runs in float32: its logits are fp32's
        torch.testing.assert_close(small.prefill(slot, phonemes, prompt), exact.prefill(slot, phonemes, prompt))
    worst = worst_step_difference(small, exact)
    assert 0 < worst < 0.2  # quantisation moves the logits, a little
    # the stored rows are fp32's quantised (within half an int8 step of each row's largest): in
    # every layer for the prefill's positions (its attention ran in float32), in the first layer
    # for the steps' too (from the token embeddings alone, no cache in them)
    prefilled, length = len(phonemes) + len(prompt), int(small.lengths[0])
    for layer in range(cfg.layers):
        for kind in range(2):
            width = length if layer == 0 else prefilled
            want_rows = exact.kv_cache[layer, kind, 0, :, :width]
            got_rows = small.attention.stored(layer, kind, 0, width)
            half_step = want_rows.abs().amax(dim=-1, keepdim=True) / 254
            assert bool(((got_rows - want_rows).abs() <= half_step * (1 + 1e-5)).all())
    with pytest.raises(ValueError, match="holds"):
        T2SDecoder(weights, cfg, cache_dtype=torch.float16)


def test_no_bert_features_prefill_as_zero_features_do(tmp_path: Path) -> None:
    """Without BERT features the projection's product is skipped (zeros through it are its bias):
    the first logits and the cache are those zero features give, bit for bit."""
    cfg = T2SConfig.tiny()
    write_t2s_checkpoint(tmp_path / "t.ckpt", cfg, seed=4)
    weights = load_s1(tmp_path / "t.ckpt").weights
    phonemes, prompt = torch.arange(2, 12), torch.arange(5, 20)
    decoder = T2SDecoder(weights, cfg, slots=2, max_len=64)
    skipped = decoder.prefill(0, phonemes, prompt)
    zeros = decoder.prefill(1, phonemes, prompt, torch.zeros(1024, len(phonemes)))
    assert torch.equal(skipped, zeros)
    assert torch.equal(decoder.kv_cache[:, :, 0], decoder.kv_cache[:, :, 1])
    features = decoder.prefill(1, phonemes, prompt, torch.randn(1024, len(phonemes)))
    assert not torch.equal(features, skipped)  # the features do reach the logits
    with pytest.raises(ValueError, match="bert features"):
        decoder.prefill(1, phonemes, prompt, torch.zeros(1024, len(phonemes) + 1))
