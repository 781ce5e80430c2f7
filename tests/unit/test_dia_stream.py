"""Dia requests streamed: windowed DAC = full decode, streamed audio = offline decode for any
chunk size, a request's rows alone = under continuous batching, the delay pattern and the text.
Random tiny voices in the real layout, written by ``streamvox.bench.dia_voice``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from streamvox.bench.dia_voice import write_dia_voice
from streamvox.engine.api import VoiceLoadError
from streamvox.engine.ar.token_vocoder import StreamingVocoder
from streamvox.engine.backends.dia.config import DiaConfig
from streamvox.engine.backends.dia.dac import DacConfig
from streamvox.engine.backends.dia.sampling import DiaDecodeState, DiaSampling, delayed_prompt, guide
from streamvox.engine.backends.dia.text import has_speech, last_speaker, speaker_text_ids, with_speaker
from streamvox.engine.backends.dia.voice import DiaRequest, DiaVoice

TEXT = "[S1] Hello there, how are you today?"


@pytest.fixture(scope="module")
def capped_voice(tmp_path_factory: pytest.TempPathFactory) -> DiaVoice:
    """Never ends on its own: each request runs to its 120-row cap (104 frames)."""
    directory = tmp_path_factory.mktemp("dia") / "capped"
    write_dia_voice(directory, DiaConfig.tiny(), DacConfig.tiny(), seed=1, std=0.3, voice={"max_rows": 120})
    return DiaVoice.load(directory)


@pytest.fixture(scope="module")
def ending_voice(tmp_path_factory: pytest.TempPathFactory) -> DiaVoice:
    """Ends after 30 to 90 rows, depending on the seed."""
    directory = tmp_path_factory.mktemp("dia") / "ending"
    settings = {"max_streams": 3, "max_rows": 300}
    write_dia_voice(directory, DiaConfig.tiny(), DacConfig.tiny(), seed=1, std=0.3, eos_scale=3.0, voice=settings)
    return DiaVoice.load(directory)


def run_alone(voice: DiaVoice, seed: int, text: str = TEXT, slot: int = 0) -> DiaRequest:
    request = voice.start_segment(0, slot, text, seed)
    while request.generating:
        voice.step([request])
    voice.release_slot(slot)
    return request


def test_the_delay_pattern_fixes_bos_then_the_prompt() -> None:
    """Channel ``c`` holds BOS on rows ``0..delay[c]``, as transformers' processor lays it out
    (nari-labs/dia stops one row earlier: BOS at row 15 of channel 8 is the documented difference)."""
    config = DiaConfig.tiny()
    table = delayed_prompt(config, None)
    assert table.shape == (16, 9)
    for channel, delay in enumerate(config.delay_pattern):
        assert (table[: delay + 1, channel] == config.bos).all() and (table[delay + 1 :, channel] == config.pad).all()
    prompt = torch.arange(27).view(3, 9)
    table = delayed_prompt(config, prompt)
    assert table.shape == (19, 9)
    assert table[1, 0] == 0 and table[3, 0] == 18 and table[4, 0] == config.pad
    assert table[9, 1] == 1 and table[11, 1] == 19 and table[12, 1] == config.pad  # channel 1 is 8 rows late


def test_guidance_follows_the_original_formula_at_every_scale() -> None:
    """transformers refuses a guidance scale below 1 and switches guidance off at exactly 1; like
    nari-labs/dia we apply ``cond + scale·(cond − uncond)`` at any scale (0: the conditional logits)."""
    generator = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(9, 1028, generator=generator), torch.randn(9, 1028, generator=generator)
    assert torch.equal(guide(cond, uncond, 0.0, None), cond)
    assert torch.allclose(guide(cond, uncond, 1.0, None), 2 * cond - uncond)
    kept = guide(cond, uncond, 3.0, 45)
    assert (kept > float("-inf")).sum(dim=-1).tolist() == [45] * 9
    assert torch.equal(kept[kept > float("-inf")], cond[kept > float("-inf")])


def test_frames_undo_the_delay_and_stop_before_channel_zero_eos() -> None:
    config = DiaConfig.tiny()
    state = DiaDecodeState(config, DiaSampling())
    for row in range(1, 30):
        state.rows.append(torch.tensor([row * 10 + c for c in range(9)]))
    frames = state.frames()
    assert frames.shape == (29 - 15, 9)
    assert frames[0].tolist() == [10 * (1 + d) + c for c, d in enumerate(config.delay_pattern)]
    state.rows[6][0] = config.eos
    assert len(state.frames()) == 5  # frames 0-4; row 6 of channel 0 would be frame 5


def test_speaker_tags_become_bytes_and_carry_over_segments() -> None:
    assert speaker_text_ids("[S1] Hi [S2] yo") == [1, 32, 72, 105, 32, 2, 32, 121, 111]
    assert speaker_text_ids("é") == [195, 169]
    assert with_speaker("and then.", "[S2]") == "[S2] and then." and with_speaker(" [S1] x", "[S2]") == "[S1] x"
    assert last_speaker("[S1] a [S2] b", "[S1]") == "[S2]" and last_speaker("plain", "[S2]") == "[S2]"
    assert not has_speech("[S1] ... [S2]") and has_speech("[S2] (laughs)")


def test_windowed_dac_equals_the_full_decode(capped_voice: DiaVoice) -> None:
    codes = torch.randint(0, 1024, (1, 9, 60), generator=torch.Generator().manual_seed(2))
    full = capped_voice.codec.decode(codes)[0]
    pieces = []
    for start in range(0, 60, 13):
        end = min(60, start + 13)
        low, high = max(0, start - 10), min(60, end + 10)
        window = capped_voice.codec.decode(codes[:, :, low:high])[0]
        pieces.append(window[(start - low) * 512 : (end - low) * 512])
    windowed = torch.cat(pieces)
    assert windowed.shape == full.shape
    assert (windowed - full).abs().max() <= 1e-5  # float rounding: the receptive field is 10 frames


@pytest.mark.parametrize("chunk", [1, 7, 16, 43])
def test_streamed_audio_equals_the_offline_decode(capped_voice: DiaVoice, chunk: int) -> None:
    """Frames handed to the vocoder as each decoder step completes them, decoded in chunks of
    ``chunk`` frames with 10 frames of context each side, against one decode of every frame."""
    schedule = replace(capped_voice.config.chunks, first=chunk, growth=1.0, cap=chunk)
    request = capped_voice.start_segment(0, 0, TEXT, seed=3)
    request.vocoder = StreamingVocoder(capped_voice.frame_decoder, schedule)
    pieces = []
    while request.generating:
        capped_voice.step([request])
        request.feed_vocoder()
        while request.vocoder.pending():
            pieces.append(request.vocoder.decode())
    capped_voice.release_slot(0)
    request.feed_vocoder()
    pieces.append(request.vocoder.finish())
    streamed = np.concatenate(pieces)
    frames = request.state.frames()
    assert len(frames) == 120 - 15 - 1
    offline = capped_voice.codec.decode(frames.T[None])[0].numpy()
    assert len(streamed) == len(frames) * 512 == len(offline)
    assert np.abs(streamed - offline).max() <= 1e-5, np.abs(streamed - offline).max()
    assert len(pieces) >= (len(frames) - 10) // chunk  # the last 10 frames wait for the end


def test_a_request_generates_the_same_rows_alone_and_batched_with_others_joining_and_leaving(
    ending_voice: DiaVoice,
) -> None:
    voice = ending_voice
    alone = {seed: torch.stack(run_alone(voice, seed).state.rows) for seed in (11, 12, 13)}
    lengths = {seed: len(rows) for seed, rows in alone.items()}
    assert len(set(lengths.values())) > 1, lengths  # they leave at different steps
    first = voice.start_segment(0, 0, TEXT, 11)
    running = [first]
    for step in range(400):
        if step == 5:
            running.append(voice.start_segment(1, 1, "[S2] A different text for the second request.", 12))
        if step == 9:
            running.append(voice.start_segment(2, 2, TEXT, 13))
        voice.step(running)
        for request in [r for r in running if not r.generating]:
            voice.release_slot(request.slot)
            running.remove(request)
        if not running:
            break
    assert torch.equal(torch.stack(first.state.rows), alone[11])
    third_alone = run_alone(voice, 13)
    assert torch.equal(torch.stack(third_alone.state.rows), alone[13])


@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_the_fixed_shape_step_generates_the_variable_step_s_rows(
    ending_voice: DiaVoice, tmp_path: Path, mode: str
) -> None:
    """The step over every cache row (what a GPU compiles or replays as a graph), with requests
    joining, idling and leaving, against the variable step's rows for each request alone."""
    settings = {"max_streams": 3, "max_rows": 300, "step": mode}
    directory = tmp_path / mode
    write_dia_voice(directory, DiaConfig.tiny(), DacConfig.tiny(), seed=1, std=0.3, eos_scale=3.0, voice=settings)
    fixed = DiaVoice.load(directory)
    assert fixed.stepper is not None and ending_voice.stepper is None
    alone = {seed: torch.stack(run_alone(ending_voice, seed).state.rows) for seed in (11, 12)}
    first = fixed.start_segment(0, 0, TEXT, 11)
    second = fixed.start_segment(1, 2, TEXT, 12)
    running = [first, second]
    for step in range(400):
        fixed.step(running if step % 4 else running[:1])  # the second request idles every fourth step
        for request in [r for r in running if not r.generating]:
            fixed.release_slot(request.slot)
            running.remove(request)
        if not running:
            break
    assert torch.equal(torch.stack(first.state.rows), alone[11])
    assert torch.equal(torch.stack(second.state.rows), alone[12])
    assert int(fixed.cache.lengths.max()) == 0  # every row released


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_rows(ending_voice: DiaVoice) -> None:
    a, b, c = (torch.stack(run_alone(ending_voice, seed).state.rows) for seed in (4, 4, 5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_greedy_requests_ignore_the_seed(ending_voice: DiaVoice) -> None:
    rows = []
    for seed in (1, 2):
        request = ending_voice.start_segment(0, 0, TEXT, seed, greedy=True)
        while request.generating:
            ending_voice.step([request])
        ending_voice.release_slot(0)
        rows.append(torch.stack(request.state.rows))
    assert torch.equal(rows[0], rows[1])


def test_an_audio_prompt_is_encoded_at_load_and_its_transcript_leads_the_text(tmp_path: Path) -> None:
    import soundfile as sf

    directory = write_dia_voice(tmp_path / "cloned", DiaConfig.tiny(), DacConfig.tiny(), seed=2, std=0.3)
    t = np.arange(22050) / 22050
    sf.write(directory / "prompt.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    (directory / "prompt.txt").write_text("[S1] This is how I sound.")
    voice = DiaVoice.load(directory)
    assert voice.prompt_codes is not None and voice.prompt_codes.shape == (87, 9)  # 1 s at 44.1 kHz: 87 frames
    assert voice.text_ids("[S2] Next.").tolist() == speaker_text_ids("[S1] This is how I sound. [S2] Next.")
    request = voice.start_segment(0, 0, "[S1] Next.", seed=1)
    assert len(request.state.rows) == 1 + 87 + 1  # BOS, the prompt's rows, the first generated row
    assert torch.equal(request.state.rows[1][0], voice.prompt_codes[0, 0])


def test_broken_voice_directories_are_refused_with_the_reason(tmp_path: Path) -> None:
    directory = write_dia_voice(tmp_path / "v", DiaConfig.tiny(), DacConfig.tiny(), seed=0)
    (directory / "voice.json").write_text('{"max_streams": 0}')
    with pytest.raises(VoiceLoadError, match="max_streams"):
        DiaVoice.load(directory)
    (directory / "voice.json").write_text('{"chunks": {"lookahead": 2}}')
    with pytest.raises(VoiceLoadError, match="chunks"):
        DiaVoice.load(directory)
    (directory / "voice.json").unlink()
    (directory / "dac" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(VoiceLoadError, match="cannot read"):
        DiaVoice.load(directory)
    with pytest.raises(VoiceLoadError, match="not a Dia voice"):
        DiaVoice.load(tmp_path / "missing")


def to_original_layout(weights: dict[str, torch.Tensor], config: DiaConfig) -> dict[str, torch.Tensor]:
    """Our (transformers-layout) tensors as nari-labs' ``DiaModel.state_dict()`` holds them: kernels
    ``(in, heads, head_dim)`` and ``(heads, head_dim, out)``, a ``(hidden, 2, ffn)`` MLP kernel, one
    embedding per channel, the head ``(hidden, channels, vocab)`` under ``decoder``."""
    d = config.decoder
    original: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        key = name.removeprefix("model.")
        parts = key.split(".")
        if key == "decoder.embeddings.embed.weight":
            for channel, table in enumerate(tensor.split(d.vocab)):
                original[f"decoder.embeddings.{channel}.weight"] = table
        elif key == "logits_dense.weight":
            original["decoder.logits_dense.weight"] = tensor.T.reshape(d.hidden, d.channels, d.vocab)
        elif parts[-2] in ("q_proj", "k_proj", "v_proj"):
            part = config.encoder if parts[0] == "encoder" else d
            cross = parts[3] == "cross_attention"
            head_dim = d.cross_head_dim if cross else part.head_dim
            original[key] = tensor.T.reshape(tensor.shape[1], -1, head_dim)
        elif parts[-2] == "o_proj":
            part = config.encoder if parts[0] == "encoder" else d
            head_dim = d.cross_head_dim if parts[3] == "cross_attention" else part.head_dim
            original[key] = tensor.T.reshape(-1, head_dim, tensor.shape[0])
        elif parts[-2] == "gate_up_proj":
            original[key.replace("gate_up_proj", "wi_fused")] = tensor.T.reshape(tensor.shape[1], 2, -1)
        elif parts[-2] == "down_proj":
            original[key.replace("down_proj", "wo")] = tensor.T
        else:
            original[key] = tensor
    original["encoder.layers.0.self_attention.rotary_emb.timescale"] = torch.ones(4)  # a buffer some saves hold
    return original


def test_a_nari_labs_checkpoint_loads_as_the_same_model(tmp_path: Path) -> None:
    """The original ``.pth`` layout (DenseGeneral kernels) gives the same logits as the safetensors."""
    from safetensors.torch import load_file

    directory = write_dia_voice(tmp_path / "v", DiaConfig.tiny(), DacConfig.tiny(), seed=3, std=0.3)
    reference = DiaVoice.load(directory)
    weights = load_file(str(directory / "model.safetensors"))
    torch.save(to_original_layout(weights, reference.network.config), directory / "dia-v0_1.pth")
    (directory / "model.safetensors").unlink()
    original = DiaVoice.load(directory)
    ours, theirs = (run_alone(v, seed=8).state.rows for v in (original, reference))
    assert torch.equal(torch.stack(ours), torch.stack(theirs))
    for name, tensor in reference.network.state_dict().items():
        assert torch.equal(original.network.state_dict()[name], tensor), name


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    directory = write_dia_voice(tmp_path / "v", DiaConfig.tiny(), DacConfig.tiny(), seed=3)
    (directory / "model.safetensors").unlink()
    torch.save({"model": {"x": torch.ones(1)}, "hook": DiaSampling()}, directory / "evil.pth")
    with pytest.raises(VoiceLoadError, match="refused to unpickle"):
        DiaVoice.load(directory)
