"""The streaming token vocoder: chunk schedule, sample accounting, determinism, and closeness to
the one-shot decode, on a tiny SoVITS v2 checkpoint written by the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from streamvox.engine.ar.token_vocoder import ChunkSchedule, StreamingVocoder
from streamvox.engine.backends.gpt_sovits.vits import SoVITSDecoder, UtteranceDecoder, frame_noise, warm_up_lengths

from tests.helpers.audio import snr_db
from tests.helpers.gsv_runner import reference
from tests.helpers.sovits import TINY_HPS, reference_audio

pytestmark = pytest.mark.reference

SPT = 1280
RNG = np.random.default_rng(1)
TOKENS = RNG.integers(0, 1024, 150).tolist()
PHONEMES = torch.tensor(RNG.integers(0, 700, 40))


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> tuple[SoVITSDecoder, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("s2")
    path = tmp / "tiny-v2.pth"
    reference({"op": "make_s2", "hps": TINY_HPS, "seed": 11, "checkpoint": str(path)}, tmp)
    decoder = SoVITSDecoder.load(path)
    return decoder, decoder.speaker(decoder.reference_spectrogram(reference_audio()))


def stream(
    decoder: SoVITSDecoder, speaker: torch.Tensor, tokens: list[int], schedule: ChunkSchedule, step: int = 1
) -> list[np.ndarray]:
    vocoder = StreamingVocoder(UtteranceDecoder(decoder, PHONEMES.reshape(1, -1), speaker, 0.5, 3), schedule)
    pieces = []
    for i in range(0, len(tokens), step):
        vocoder.add(tokens[i : i + step])
        while vocoder.pending():
            pieces.append(vocoder.decode())
    pieces.append(vocoder.finish())
    return pieces


def test_schedule_starts_small_and_grows_to_its_cap() -> None:
    ends = ChunkSchedule(first=12, growth=2.0, cap=96).boundaries()
    assert [next(ends) for _ in range(6)] == [12, 36, 84, 180, 276, 372]
    with pytest.raises(ValueError):
        ChunkSchedule(first=2, overlap=2)


@pytest.mark.parametrize("count", [1, 5, 12, 13, 16, 17, 40, 150])
def test_every_token_yields_exactly_its_samples(voice: tuple[SoVITSDecoder, torch.Tensor], count: int) -> None:
    decoder, speaker = voice
    pieces = stream(decoder, speaker, TOKENS[:count], ChunkSchedule())
    assert sum(len(p) for p in pieces) == count * SPT
    if count >= 16:  # first chunk (12) + lookahead (4): audio before the tokens end
        assert len(pieces) > 1 and len(pieces[0]) == (12 - 2) * SPT


def test_first_audio_comes_after_first_chunk_plus_lookahead(voice: tuple[SoVITSDecoder, torch.Tensor]) -> None:
    decoder, speaker = voice
    vocoder = StreamingVocoder(
        UtteranceDecoder(decoder, PHONEMES.reshape(1, -1), speaker, 0.5, 3), ChunkSchedule(first=8, lookahead=3)
    )
    vocoder.add(TOKENS[:10])
    assert not vocoder.pending()
    vocoder.add(TOKENS[10:11])
    assert vocoder.pending()
    assert len(vocoder.decode()) == (8 - 2) * SPT


def test_a_first_lookahead_of_its_own_applies_to_the_first_chunk_only(
    voice: tuple[SoVITSDecoder, torch.Tensor],
) -> None:
    """A fast start: the first chunk (8 tokens) is decoded once 2 more exist; the second (ending
    at 24) waits for the usual 4."""
    decoder, speaker = voice
    schedule = ChunkSchedule(first=8, lookahead=4, first_lookahead=2)
    vocoder = StreamingVocoder(UtteranceDecoder(decoder, PHONEMES.reshape(1, -1), speaker, 0.5, 3), schedule)
    vocoder.add(TOKENS[:9])
    assert not vocoder.pending()
    vocoder.add(TOKENS[9:10])
    assert vocoder.pending()
    assert len(vocoder.decode()) == (8 - 2) * SPT
    vocoder.add(TOKENS[10:27])
    assert not vocoder.pending(), "the second chunk keeps the lookahead of 4"
    vocoder.add(TOKENS[27:28])
    assert vocoder.pending()
    assert len(vocoder.decode()) == (24 - 8) * SPT
    assert 10 in schedule.window_sizes(), "the first window (8 + 2) is warmed up"
    assert 12 not in schedule.window_sizes()
    assert ChunkSchedule(first=8).lookahead_after(8) == 4
    with pytest.raises(ValueError):
        ChunkSchedule(first_lookahead=-1)


@pytest.mark.parametrize("count", [5, 9, 10, 11, 40, 150])
def test_a_fast_start_still_yields_exactly_each_tokens_samples(
    voice: tuple[SoVITSDecoder, torch.Tensor], count: int
) -> None:
    decoder, speaker = voice
    pieces = stream(decoder, speaker, TOKENS[:count], ChunkSchedule(first=8, first_lookahead=2))
    assert sum(len(p) for p in pieces) == count * SPT
    if count >= 10:
        assert len(pieces) > 1 and len(pieces[0]) == (8 - 2) * SPT


def test_audio_does_not_depend_on_how_tokens_arrive(voice: tuple[SoVITSDecoder, torch.Tensor]) -> None:
    decoder, speaker = voice
    one = np.concatenate(stream(decoder, speaker, TOKENS, ChunkSchedule(), step=1))
    seven = np.concatenate(stream(decoder, speaker, TOKENS, ChunkSchedule(), step=7))
    assert np.array_equal(one, seven)


def test_windowed_synthesis_equals_one_shot_once_context_covers_the_receptive_field(
    voice: tuple[SoVITSDecoder, torch.Tensor],
) -> None:
    """The flow and HiFi-GAN are local: with 12 tokens (24 frames) of context each side a
    window reproduces the one-shot decode; with none it does not."""
    decoder, speaker = voice
    mean, log_scale = decoder.encode(torch.tensor([TOKENS]), decoder.encode_text(PHONEMES.reshape(1, -1)), speaker)
    noise = frame_noise(3, 0, mean.shape[2], mean.shape[1]).unsqueeze(0)
    full = decoder.synthesize(mean, log_scale, noise, speaker, 0.5)[0].numpy()
    a, b = 100, 160
    spf = decoder.config.samples_per_frame

    def window(context: int) -> np.ndarray:
        lo, hi = a - context, b + context
        out = decoder.synthesize(mean[..., lo:hi], log_scale[..., lo:hi], noise[..., lo:hi], speaker, 0.5)[0]
        return out.numpy()[(a - lo) * spf : (b - lo) * spf]

    reference_part = full[a * spf : b * spf]
    assert snr_db(reference_part, window(0)) < 30
    assert snr_db(reference_part, window(24)) > 100


def test_streamed_audio_approaches_the_one_shot_decode_with_more_context(
    voice: tuple[SoVITSDecoder, torch.Tensor],
) -> None:
    """The content encoder attends over every token, so a chunk decoded before later tokens
    exist cannot equal the one-shot decode exactly; more lookahead and left context bring it
    closer.  (A random tiny model attends far more diffusely than a trained one.)"""
    decoder, speaker = voice
    offline = decoder.decode(TOKENS, PHONEMES, speaker, noise_scale=0.5, seed=3).numpy()
    scores = [
        snr_db(offline, np.concatenate(stream(decoder, speaker, TOKENS, ChunkSchedule(left_context=lc, lookahead=la))))
        for lc, la in ((0, 0), (24, 4), (1000, 24))
    ]
    assert scores[0] < scores[1] < scores[2]
    assert scores[1] > 25
    whole = np.concatenate(stream(decoder, speaker, TOKENS, ChunkSchedule(lookahead=len(TOKENS))))
    np.testing.assert_allclose(
        whole, offline, atol=1e-5, err_msg="one chunk holding every token is the one-shot decode"
    )


@pytest.mark.parametrize(
    "schedule", [ChunkSchedule(bucket=16), ChunkSchedule(bucket=32), ChunkSchedule(first=8, first_lookahead=2)]
)
def test_decode_windows_come_from_a_few_recurring_sizes(
    voice: tuple[SoVITSDecoder, torch.Tensor], schedule: ChunkSchedule
) -> None:
    """Windows are stretched left to a bucket multiple, so new shapes (each a one-off setup cost
    in the convolution library) stay few; all of them, and HiFi-GAN's spans in them, are among
    the lengths a voice warms up (with the default bucket, just the window sizes)."""
    decoder, speaker = voice
    seen: list[int] = []
    vocoded: list[int] = []
    real = decoder.synthesize
    fpt = decoder.config.frames_per_token

    def recording(mean: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append(mean.shape[2] // fpt)
        out = real(mean, *args)  # type: ignore[arg-type]
        vocoded.append(out.shape[1] // decoder.config.samples_per_token)
        return out

    decoder.synthesize = recording  # type: ignore[method-assign]
    try:
        for count in (150, 97, 120):
            stream(decoder, speaker, TOKENS[:count], schedule)
    finally:
        del decoder.synthesize
    assert set(seen) <= set(schedule.window_sizes()), seen
    assert set(vocoded) <= set(warm_up_lengths(schedule.window_sizes())), vocoded
    assert warm_up_lengths(ChunkSchedule().window_sizes()) == ChunkSchedule().window_sizes()
    assert len(set(seen)) < len(seen)
    assert sum(vocoded) < sum(seen), "HiFi-GAN skips most of each window's left context"


class _WholeWindows:
    """An utterance decoder that ignores ``keep_from``: every window decoded whole, then cut."""

    def __init__(self, inner: UtteranceDecoder) -> None:
        self.inner = inner
        self.samples_per_token = inner.samples_per_token

    def decode(self, tokens: list[int], first_token: int, keep_from: int = 0) -> np.ndarray:
        return self.inner.decode(tokens, first_token)[keep_from * self.samples_per_token :]


def test_streaming_with_hifigan_over_the_kept_audio_only_gives_the_same_audio(
    voice: tuple[SoVITSDecoder, torch.Tensor],
) -> None:
    decoder, speaker = voice
    utterance = UtteranceDecoder(decoder, PHONEMES.reshape(1, -1), speaker, 0.5, 3)
    streamed = {}
    for name, token_decoder in (("kept", utterance), ("whole", _WholeWindows(utterance))):
        vocoder = StreamingVocoder(token_decoder, ChunkSchedule())
        pieces = []
        for token in TOKENS:
            vocoder.add([token])
            while vocoder.pending():
                pieces.append(vocoder.decode())
        pieces.append(vocoder.finish())
        streamed[name] = np.concatenate(pieces)
    np.testing.assert_allclose(streamed["kept"], streamed["whole"], atol=1e-5)
    assert snr_db(streamed["whole"], streamed["kept"]) > 100


def test_an_utterance_encodes_its_text_once_and_decodes_as_sovits_does(
    voice: tuple[SoVITSDecoder, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The utterance keeps its encoded text; each window gives the audio a plain decode gives."""
    decoder, speaker = voice
    windows = ((0, 16), (8, 40), (30, 62))
    plain = [decoder.decode(TOKENS[a:b], PHONEMES, speaker, 0.5, 3, first_token=a).numpy() for a, b in windows]
    utterance = UtteranceDecoder(decoder, PHONEMES.reshape(1, -1), speaker, 0.5, 3)

    def no_second_encoding(phonemes: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the text was encoded again")

    monkeypatch.setattr(decoder, "encode_text", no_second_encoding)
    for (a, b), expected in zip(windows, plain, strict=True):
        np.testing.assert_array_equal(utterance.decode(TOKENS[a:b], a), expected)
