"""RIFF/WAVE headers, including the open-ended header used for streaming."""

from __future__ import annotations

import struct

STREAMING_SIZE = 0xFFFFFFFF
FORMAT_PCM = 1
FORMAT_MULAW = 7


def wav_header(
    sample_rate: int,
    channels: int = 1,
    bits_per_sample: int = 16,
    data_bytes: int | None = None,
    audio_format: int = FORMAT_PCM,
) -> bytes:
    """A 44-byte canonical WAV header.

    With ``data_bytes=None`` the RIFF and data sizes are 0xFFFFFFFF, which
    players (browsers, ffmpeg, sox) read as "until the stream ends".
    """
    block_align = channels * bits_per_sample // 8
    if data_bytes is None:
        riff_size = data_size = STREAMING_SIZE
    else:
        data_size = data_bytes
        riff_size = 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack(
            "<IHHIIHH",
            16,
            audio_format,
            channels,
            sample_rate,
            sample_rate * block_align,
            block_align,
            bits_per_sample,
        )
        + b"data"
        + struct.pack("<I", data_size)
    )
