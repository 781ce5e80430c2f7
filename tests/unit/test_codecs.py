"""Codecs: resampling, PCM, mu-law, WAV, Opus packets, Ogg/Opus files, the stream encoder."""

from __future__ import annotations

import io
import struct
import warnings
import wave

import numpy as np
import pytest
import soundfile as sf

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the G.711 reference; deprecated but present on Python 3.11

from streamvox.codecs.formats import FormatError, StreamEncoder, resolve_format
from streamvox.codecs.mp3 import FrameTrimmer, drop_blank_first_frame, frame_length
from streamvox.codecs.ogg import OggOpusWriter, ogg_crc
from streamvox.codecs.opus import OpusFrameDecoder, OpusFrameEncoder, OpusSettings
from streamvox.codecs.pcm import alaw_to_s16, float_to_s16, mulaw_to_s16, s16_to_alaw, s16_to_mulaw
from streamvox.codecs.resample import StreamResampler
from streamvox.codecs.wav import wav_header

from tests.helpers.audio import sf_read_stream
from tests.helpers.mp3 import decode_mp3


def tone(seconds: float, rate: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rates", [(22050, 48000), (22050, 8000), (22050, 22050), (16000, 24000)])
def test_stream_resampler_length_and_content_match_one_shot(rates: tuple[int, int]) -> None:
    src, dst = rates
    x = tone(1.0, src)
    stream = StreamResampler(src, dst)
    pieces = [stream.process(x[i : i + 1000]) for i in range(0, len(x), 1000)] + [stream.flush()]
    y = np.concatenate(pieces)
    assert abs(len(y) - round(len(x) * dst / src)) <= 1
    reference = tone(1.0, dst)
    core = slice(len(y) // 10, len(y) * 9 // 10)
    assert np.max(np.abs(y[core] - reference[core])) < 0.01


def test_mulaw_matches_g711_reference() -> None:
    pcm = np.linspace(-32768, 32767, 4001).astype(np.int16)
    ours = s16_to_mulaw(pcm).tobytes()
    assert ours == audioop.lin2ulaw(pcm.astype("<i2").tobytes(), 2)
    decoded = mulaw_to_s16(np.frombuffer(ours, dtype=np.uint8))
    assert decoded.astype("<i2").tobytes() == audioop.ulaw2lin(ours, 2)


def test_alaw_matches_g711_reference() -> None:
    pcm = np.arange(-32768, 32768).astype(np.int16)  # every 16-bit input
    ours = s16_to_alaw(pcm).tobytes()
    assert ours == audioop.lin2alaw(pcm.astype("<i2").tobytes(), 2)
    codes = np.arange(256, dtype=np.uint8)
    assert alaw_to_s16(codes).astype("<i2").tobytes() == audioop.alaw2lin(codes.tobytes(), 2)


def _stream(
    codec: str, x: np.ndarray, rate: int, out_rate: int | None = None, chunk: int = 3000
) -> tuple[bytes, StreamEncoder]:
    encoder = StreamEncoder(resolve_format(codec, out_rate, rate), rate)
    out = [encoder.header() or b""]
    for i in range(0, len(x), chunk):
        encoder.feed(x[i : i + chunk])
        while (payload := encoder.pop()) is not None:
            out.append(payload)
    encoder.finish()
    while (payload := encoder.pop()) is not None:
        out.append(payload)
    return b"".join(out), encoder


@pytest.mark.parametrize(("codec", "seconds"), [("ogg_opus", 1.234), ("ogg_opus", 0.0001), ("flac", 1.234)])
def test_streamed_containers_decode_to_the_exact_sample_count(codec: str, seconds: float) -> None:
    x = tone(seconds, 22050)
    data, encoder = _stream(codec, x, 22050)
    decoded, rate = sf_read_stream(data)
    assert rate == encoder.format.sample_rate
    assert len(decoded) == encoder.samples_out == round(len(x) * rate / 22050)
    if codec == "flac":  # lossless: the 16-bit signal itself
        resampled = np.frombuffer(_stream("pcm_s16le", x, 22050)[0], dtype="<i2") / 32768.0
        assert np.max(np.abs(decoded - resampled)) < 2e-4


def test_a_cancelled_ogg_stream_ends_on_its_fade_page() -> None:
    encoder = StreamEncoder(resolve_format("ogg_opus", None, 48000), 48000)
    head = encoder.header() or b""
    encoder.feed(tone(0.5, 48000))
    pages = [p for p in iter(encoder.pop, None)]
    fade = encoder.fade_out()
    assert fade is not None and fade.startswith(b"OggS")
    flags = [fade[i + 5] for i in range(len(fade)) if fade.startswith(b"OggS", i)]
    assert flags[-1] & 0x04 and not any(f & 0x04 for f in flags[:-1])  # end of stream on the last page only
    assert encoder.pop() is None
    decoded, _ = sf_read_stream(head + b"".join(pages) + fade)
    assert len(decoded) == encoder.samples_out


def test_float_to_s16_clips_and_rounds() -> None:
    assert float_to_s16(np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5], dtype=np.float32)).tolist() == [
        0,
        32767,
        -32767,
        32767,
        -32767,
        16384,
    ]


def test_wav_header_fixed_size_reads_back() -> None:
    pcm = float_to_s16(tone(0.1, 16000)).tobytes()
    data = wav_header(16000, data_bytes=len(pcm)) + pcm
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16000, 1, 2, 1600)


def test_wav_streaming_header_marks_unknown_size() -> None:
    header = wav_header(22050)
    assert len(header) == 44
    assert struct.unpack("<I", header[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", header[24:28])[0] == 22050


def test_opus_frames_round_trip() -> None:
    encoder = OpusFrameEncoder()
    decoder = OpusFrameDecoder()
    x = tone(0.5, 48000)
    out = np.concatenate([decoder.decode(encoder.encode(x[i : i + 960])) for i in range(0, len(x), 960)])
    assert encoder.lookahead == 312
    assert len(out) == len(x)
    ref = x[2000:20000]

    def snr_at(lag: int) -> float:
        err = out[lag + 2000 : lag + 20000] - ref
        return float(10 * np.log10(np.sum(ref**2) / np.sum(err**2)))

    assert max(snr_at(lag) for lag in range(0, 1000)) > 15


def test_opus_rejects_wrong_frame_size_and_bad_settings() -> None:
    with pytest.raises(ValueError):
        OpusFrameEncoder().encode(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError):
        OpusSettings(frame_ms=15)
    with pytest.raises(ValueError):
        OpusSettings(application="music")


def test_ogg_crc_known_value() -> None:
    # The Ogg CRC is CRC-32/MPEG-2 without the final inversion and with zero init:
    # check the table against a bitwise computation of the same polynomial.
    def bitwise(data: bytes) -> int:
        crc = 0
        for byte in data:
            crc ^= byte << 24
            for _ in range(8):
                crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
        return crc

    assert ogg_crc(b"") == 0
    for sample in (b"OggS", bytes(range(256)), b"streamvox" * 31):
        assert ogg_crc(sample) == bitwise(sample)


def test_ogg_opus_file_decodes_to_exact_duration(tmp_path) -> None:
    x = tone(1.234, 48000)
    encoder = StreamEncoder(resolve_format("opus", None, 48000), 48000)
    path = tmp_path / "a.ogg"
    with path.open("wb") as out:
        writer = OggOpusWriter(out, pre_skip=encoder.lookahead, serial=7)
        encoder.feed(x)
        encoder.finish()
        while (packet := encoder.pop()) is not None:
            writer.write_packet(packet, 960)
        writer.close(total_samples=encoder.samples_out)
    assert encoder.samples_out == len(x)
    data, rate = sf.read(str(path))
    assert rate == 48000
    assert abs(len(data) - len(x)) <= 960
    raw = path.read_bytes()
    assert raw[:4] == b"OggS" and b"OpusHead" in raw[:64] and b"OpusTags" in raw[:200]


def test_format_resolution() -> None:
    assert resolve_format("opus", None, 22050).sample_rate == 48000
    assert resolve_format("pcm_s16le", None, 22050).sample_rate == 22050
    assert resolve_format("pcm_s16le", 16000, 22050).sample_rate == 16000
    assert resolve_format("mulaw_8000", None, 22050).sample_rate == 8000
    assert resolve_format("alaw_8000", None, 22050).sample_rate == 8000
    assert resolve_format("ogg_opus", None, 22050).describe()["container"] == "ogg"
    assert resolve_format("flac", None, 32000).describe() == {
        "codec": "flac", "sample_rate": 32000, "channels": 1, "frame_ms": None, "container": "flac"
    }  # fmt: skip
    assert resolve_format("mp3", None, 22050).describe()["encoder_delay"] == 1105
    assert resolve_format("mp3", None, 32000).sample_rate == 32000
    assert resolve_format("mp3", None, 22000).sample_rate == 24000
    for rate in (8000, 12345, 48000):
        assert resolve_format("pcm_s16le", rate, 22050).sample_rate == rate
    bad = [("opus", 16000), ("ogg_opus", 24000), ("mulaw_8000", 16000), ("alaw_8000", 16000), ("pcm_s16le", 7999),
           ("pcm_s16le", 48001), ("flac", 96000), ("mp3", 22000), ("mp3", 96000)]  # fmt: skip
    for codec, rate in bad:
        with pytest.raises(FormatError):
            resolve_format(codec, rate, 22050)


@pytest.mark.parametrize("codec", ["opus", "pcm_s16le", "wav", "mulaw_8000", "alaw_8000", "ogg_opus", "flac", "mp3"])
def test_stream_encoder_accounts_for_every_sample(codec: str) -> None:
    fmt = resolve_format(codec, None, 22050)
    encoder = StreamEncoder(fmt, 22050)
    x = tone(0.77, 22050)
    payloads = []
    for i in range(0, len(x), 3000):
        encoder.feed(x[i : i + 3000])
        while (p := encoder.pop()) is not None:
            payloads.append(p)
    encoder.finish()
    while (p := encoder.pop()) is not None:
        payloads.append(p)
    expected = round(len(x) * fmt.sample_rate / 22050)
    assert abs(encoder.samples_out - expected) <= 1
    if codec == "opus":
        assert len(payloads) == -(-encoder.samples_out // 960)
    elif codec == "ogg_opus":  # the lookahead flush adds at most one packet
        assert len(payloads) in (-(-encoder.samples_out // 960), -(-encoder.samples_out // 960) + 1)
        assert all(p.startswith(b"OggS") for p in payloads)
    elif codec in ("mulaw_8000", "alaw_8000"):
        assert sum(len(p) for p in payloads) == encoder.samples_out
    elif codec == "flac":
        assert b"".join(payloads).startswith(b"fLaC")
    elif codec == "mp3":
        assert frame_length(b"".join(payloads)[:4]) is not None
    else:
        assert sum(len(p) for p in payloads) == 2 * encoder.samples_out
    assert (encoder.header() is not None) == (codec in ("wav", "ogg_opus"))


def test_fade_out_ends_in_silence() -> None:
    encoder = StreamEncoder(resolve_format("pcm_s16le", 22050, 22050), 22050)
    encoder.feed(np.full(5000, 0.5, dtype=np.float32))
    faded = np.frombuffer(encoder.fade_out(), dtype="<i2")
    assert len(faded) == 220
    assert faded[0] > 16000 and abs(int(faded[-1])) < 50
    assert np.all(np.diff(faded.astype(int)) <= 0)
    opus = StreamEncoder(resolve_format("opus", None, 48000), 48000)
    assert isinstance(opus.fade_out(), bytes)  # nothing buffered: a silent frame still flushes the encoder


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_mp3_decodes_to_every_sample_after_the_encoder_delay(rate: int) -> None:
    """libmpg123 (no gapless tag in a live stream) plays the documented delay, then the audio,
    then under one frame of padding; the audio lines up with PCM's."""
    t = np.arange(int(1.3 * 22050)) / 22050
    x = (0.4 * np.sin(2 * np.pi * (200 * t + 600 * t**2))).astype(np.float32)  # a chirp: one best lag
    data, encoder = _stream("mp3", x, 22050, rate)
    decoded = decode_mp3(data, rate)
    delay = encoder.format.describe()["encoder_delay"]
    frame = 1152 if rate >= 32000 else 576
    assert 0 <= len(decoded) - delay - encoder.samples_out < frame
    reference = np.frombuffer(_stream("pcm_s16le", x, 22050, rate)[0], dtype="<i2") / 32768.0
    window = reference[rate // 10 : rate // 10 + rate // 5]
    lag = int(np.argmax(np.correlate(decoded[: rate // 2 + 2 * delay], window, "valid"))) - rate // 10
    assert lag == delay


def test_mp3_stream_has_no_blank_info_frame_and_starts_with_the_first_window() -> None:
    encoder = StreamEncoder(resolve_format("mp3", None, 22050), 22050)
    encoder.feed(tone(8192 / 22050, 22050))  # one first window
    first = encoder.pop()
    assert first is not None and frame_length(first[:4]) is not None
    assert any(first[4 : frame_length(first[:4])])


def test_blank_first_frame_is_dropped_only_when_whole() -> None:
    header = bytes([0xFF, 0xF3, 0x80, 0xC4])  # MPEG-2 Layer III, 64 kbit/s, 22.05 kHz
    length = frame_length(header)
    assert length == 208
    blank = header + bytes(length - 4)
    assert drop_blank_first_frame(blank[:100]) == (blank[:100], False)
    assert drop_blank_first_frame(blank + b"next") == (b"next", True)
    real = header + b"\x01" + bytes(length - 5)
    assert drop_blank_first_frame(real) == (real, True)
    assert frame_length(b"RIFF") is None


def test_frame_trimmer_follows_frames_split_anywhere_and_drops_pure_padding() -> None:
    header = bytes([0xFF, 0xF3, 0x80, 0xC4])  # 208-byte frames of 576 samples
    frames = [header + bytes([i + 1]) * 204 for i in range(10)]
    stream = b"".join(frames[:7])
    trimmer = FrameTrimmer()
    for cut in (0, 3, 1, 250, 209, 500):  # through a header, mid-body, on a boundary
        trimmer.follow(stream[:cut])
        stream = stream[cut:]
    trimmer.follow(stream)
    assert trimmer.frames == 7 and not trimmer.lost
    tail = b"".join(frames[7:])
    # 10 frames decode to 5760 samples: 1105 of delay + 3500 real leave 1155, two whole frames
    assert trimmer.trim_end(tail, 3500) == frames[7]
    fresh = FrameTrimmer()
    fresh.follow(b"".join(frames[:7]))
    assert fresh.trim_end(tail, 5760 - 1105) == tail
