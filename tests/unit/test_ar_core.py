"""The model-agnostic AR pieces: end-of-speech policy, sampler edge cases, checkpoint loading."""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from streamvox.engine.ar.sampler import (
    EosPolicy,
    SamplingParams,
    apply_top_k,
    apply_top_p,
    draw,
    exponential_noise,
    logits_to_probs,
)
from streamvox.engine.backends.gpt_sovits.checkpoint import CheckpointError, load_s1, load_s2


def test_eos_is_banned_for_young_rows_only() -> None:
    policy = EosPolicy(eos=4, min_steps=11)
    logits = torch.zeros(2, 5)
    masked = policy.mask_banned(logits, torch.tensor([10, 11]))
    assert masked[0, 4] == float("-inf") and masked[1, 4] == 0.0
    assert torch.equal(masked[:, :4], logits[:, :4]) and logits[0, 4] == 0.0  # input untouched


def test_eos_policy_stops_on_argmax_draw_or_cap() -> None:
    policy = EosPolicy(eos=4, max_steps=20)
    finished = policy.finished(torch.tensor([4, 1, 1, 1]), torch.tensor([1, 4, 1, 1]), torch.tensor([12, 12, 12, 20]))
    assert finished.tolist() == [True, True, False, True]
    with pytest.raises(ValueError):
        EosPolicy(eos=-1)


def test_sampling_params_are_validated() -> None:
    for bad in ({"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}, {"temperature": 0.0}, {"repetition_penalty": 0.0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_top_p_keeps_the_most_likely_token_and_top_k_keeps_ties() -> None:
    logits = torch.tensor([[5.0, 1.0, 0.0, -1.0]])
    assert torch.isfinite(apply_top_p(logits, 0.01)).tolist() == [[True, False, False, False]]
    tied = torch.tensor([[2.0, 2.0, 1.0]])
    assert torch.isfinite(apply_top_k(tied, 1)).tolist() == [[True, True, False]]


def test_draw_follows_the_probabilities() -> None:
    probs = logits_to_probs(torch.log(torch.tensor([[0.7, 0.2, 0.1]])), None, SamplingParams(top_k=None))
    gen = torch.Generator().manual_seed(0)
    noise = exponential_noise((20000, 3), gen)
    counts = torch.bincount(draw(probs.expand(20000, 3), noise), minlength=3) / 20000
    assert torch.allclose(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)


def test_exponential_noise_is_exponential_finite_and_seeded() -> None:
    noise = exponential_noise((200000,), torch.Generator().manual_seed(3))
    assert bool(torch.isfinite(noise).all()) and float(noise.min()) >= 0.0
    assert abs(float(noise.mean()) - 1.0) < 0.01 and abs(float(noise.var()) - 1.0) < 0.03
    # P(q > t) = exp(-t): the tail at a few points
    for t in (0.1, 1.0, 3.0):
        assert abs(float((noise > t).double().mean()) - math.exp(-t)) < 0.005
    again = exponential_noise((200000,), torch.Generator().manual_seed(3))
    assert torch.equal(noise, again)


def _s1_bytes(payload: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def test_s1_checkpoint_loads_tensors_and_strips_the_prefix(tmp_path: Path) -> None:
    path = tmp_path / "gpt.ckpt"
    path.write_bytes(_s1_bytes({"weight": {"model.a.weight": torch.ones(2)}, "config": {"model": {"head": 2}}}))
    loaded = load_s1(path)
    assert list(loaded.weights) == ["a.weight"] and loaded.config == {"model": {"head": 2}}


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    path.write_bytes(_s1_bytes({"weight": {}, "config": {"x": _Exploit()}}))
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_s1(path)
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps({"weight": _Exploit()}))
    with pytest.raises(CheckpointError):
        load_s1(raw)


def test_s2_header_tag_is_restored_and_reported(tmp_path: Path) -> None:
    data = _s1_bytes({"weight": {"dec.w": torch.zeros(3, dtype=torch.float16)}, "config": {}, "info": "v2"})
    assert zipfile.is_zipfile(io.BytesIO(data)) and data[:2] == b"PK"
    path = tmp_path / "sovits.pth"
    path.write_bytes(b"05" + data[2:])
    loaded = load_s2(path)
    assert loaded.version_tag == "05" and loaded.weights["dec.w"].dtype == torch.float16
    path.write_bytes(b"XX" + data[2:])
    with pytest.raises(CheckpointError):
        load_s2(path)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_s2(tmp_path / "missing.pth")
