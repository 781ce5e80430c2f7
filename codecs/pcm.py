"""Float to integer PCM and G.711 mu-law conversions."""

from __future__ import annotations

import numpy as np

_MULAW_BIAS = 0x84
_MULAW_CLIP14 = 8159
_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def float_to_s16(samples: np.ndarray) -> np.ndarray:
    """Clip to [-1, 1] and scale to int16 (rounding to nearest)."""
    scaled = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0
    return np.rint(scaled).astype(np.int16)


def s16_to_float(samples: np.ndarray) -> np.ndarray:
    """int16 samples to float32 in [-1, 1)."""
    return np.asarray(samples, dtype=np.int16).astype(np.float32) / 32768.0


def float_to_s16le_bytes(samples: np.ndarray) -> bytes:
    """Little-endian signed 16-bit PCM bytes of a float32 signal."""
    return float_to_s16(samples).astype("<i2").tobytes()


def s16_to_mulaw(samples: np.ndarray) -> np.ndarray:
    """Encode int16 samples as G.711 mu-law bytes (uint8), bit-exact with the ITU/Sun reference."""
    value = np.asarray(samples, dtype=np.int32) >> 2
    negative = value < 0
    magnitude = np.minimum(np.abs(value), _MULAW_CLIP14) + (_MULAW_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude, side="left")
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F))
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)


def mulaw_to_s16(codes: np.ndarray) -> np.ndarray:
    """Decode G.711 mu-law bytes to int16 samples."""
    inverted = ~np.asarray(codes, dtype=np.int32) & 0xFF
    sign = inverted & 0x80
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def s16_to_alaw(samples: np.ndarray) -> np.ndarray:
    """Encode int16 samples as G.711 A-law bytes (uint8), bit-exact with the ITU/Sun reference."""
    value = np.asarray(samples, dtype=np.int32) >> 3
    negative = value < 0
    magnitude = np.where(negative, -value - 1, value)
    mask = np.where(negative, 0x55, 0xD5)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude, side="left")
    shift = np.where(segment < 2, 1, segment)
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def alaw_to_s16(codes: np.ndarray) -> np.ndarray:
    """Decode G.711 A-law bytes to int16 samples."""
    value = np.asarray(codes, dtype=np.int32) ^ 0x55
    segment = (value & 0x70) >> 4
    base = ((value & 0x0F) << 4) + np.where(segment == 0, 8, 0x108)
    magnitude = np.where(segment > 1, base << np.maximum(segment - 1, 0), base)
    return np.where(value & 0x80, magnitude, -magnitude).astype(np.int16)
