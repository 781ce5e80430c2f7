"""Decode MP3 bytes with libmpg123 (the system library libsndfile itself uses), via ctypes.

soundfile's MP3 reader trusts a stream's first frames for its length and
stops early on a live stream (measured: 9797 of 44100 samples), so the tests
decode with libmpg123's feed API, which reads every frame.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

_OK, _NEED_MORE, _NEW_FORMAT, _DONE = 0, -10, -11, -12
_MONO = 1
_ENC_SIGNED_16 = 0xD0


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("mpg123") or "libmpg123.so.0"
    lib = ctypes.CDLL(name)
    lib.mpg123_new.restype = ctypes.c_void_p
    lib.mpg123_new.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    lib.mpg123_open_feed.argtypes = [ctypes.c_void_p]
    lib.mpg123_format_none.argtypes = [ctypes.c_void_p]
    lib.mpg123_format.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_int]
    lib.mpg123_decode.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_size_t),
    ]  # fmt: skip
    lib.mpg123_delete.argtypes = [ctypes.c_void_p]
    lib.mpg123_init()
    return lib


def decode_mp3(data: bytes, rate: int) -> np.ndarray:
    """Every sample of an MP3 stream at ``rate`` as float32 mono (no gapless trimming: a live
    stream carries no tag to trim by)."""
    lib = _library()
    error = ctypes.c_int()
    handle = lib.mpg123_new(None, ctypes.byref(error))
    assert handle, f"mpg123_new failed ({error.value})"
    try:
        lib.mpg123_format_none(handle)
        assert lib.mpg123_format(handle, rate, _MONO, _ENC_SIGNED_16) == _OK
        assert lib.mpg123_open_feed(handle) == _OK
        out = ctypes.create_string_buffer(1 << 16)
        done = ctypes.c_size_t()
        pcm = bytearray()
        feed: bytes | None = data
        while True:
            code = lib.mpg123_decode(handle, feed, len(feed or b""), out, len(out), ctypes.byref(done))
            feed = None
            pcm += out.raw[: done.value]
            if code in (_NEED_MORE, _DONE):
                break
            assert code in (_OK, _NEW_FORMAT), f"mpg123_decode failed ({code})"
        return np.frombuffer(bytes(pcm), dtype="<i2").astype(np.float32) / 32768
    finally:
        lib.mpg123_delete(handle)
