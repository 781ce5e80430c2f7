"""Just enough of the MPEG audio frame header to find a frame's length.

libsndfile starts every MP3 with a LAME/Xing "Info" frame that it fills in
when the file is closed (it seeks back to it).  A live stream's bytes are
gone by then, so that frame would stay all zeros: a frame of silence to some
decoders and a zero-length file to others.  The stream drops it, as live
MP3 streams carry no Info frame.  Pure functions.
"""

from __future__ import annotations

_BITRATES_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_BITRATES_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""The sample rates MPEG-1, 2 and 2.5 Layer III can carry."""
MP3_DECODED_DELAY = 1105
"""Samples of silence before the audio when a stream is decoded without gapless trimming:
LAME's 576-sample encoder delay plus the 529 of the decoder's filter bank (measured with
libmpg123 at every rate above; the padding at the end is under one frame)."""


def frame_length(header: bytes) -> int | None:
    """Bytes in the Layer III frame whose 4-byte header starts ``header``, or ``None`` if it
    is not one (or uses the free format, whose length the header does not give)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3
    layer = (header[1] >> 1) & 3
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    padding = (header[2] >> 1) & 1
    rate = _RATES[version][rate_index]
    if version == 3:
        return 144 * _BITRATES_V1[bitrate_index] * 1000 // rate + padding
    return 72 * _BITRATES_V2[bitrate_index] * 1000 // rate + padding


def samples_per_frame(header: bytes) -> int:
    """Samples each Layer III frame decodes to: 1152 for MPEG-1, 576 for MPEG-2 and 2.5."""
    return 1152 if (header[1] >> 3) & 3 == 3 else 576


class FrameTrimmer:
    """Follows a stream's frames so its end can drop frames that hold only padding.

    LAME pads the end with up to 613 samples beyond a whole frame; a frame whose decoded
    samples all fall after the real audio (past the encoder delay plus the samples
    encoded) is silence a player need not play, and without it the decoded length is the
    real one plus less than one frame.  If the bytes ever stop parsing as frames, it stops
    trimming (the stream stays valid, only longer).  Not thread-safe: one per stream."""

    def __init__(self) -> None:
        self.frames = 0
        self._skip = 0
        """Bytes of the current frame still to come before the next header."""
        self._carry = b""
        """The start of a header cut off at the end of the last bytes followed."""
        self._spf = 0
        self.lost = False

    def _starts(self, data: bytes) -> tuple[list[int], bytes]:
        """Offsets in ``carry + data`` of the frames starting there, and that buffer."""
        buffer = self._carry + data
        starts = []
        at = self._skip if not self._carry else 0
        while not self.lost and at + 4 <= len(buffer):
            length = frame_length(buffer[at : at + 4])
            if length is None:
                self.lost = True
                break
            self._spf = samples_per_frame(buffer[at : at + 4])
            starts.append(at)
            at += length
        return starts, buffer

    def follow(self, data: bytes) -> None:
        """Count the frames in ``data``, the next bytes of the stream."""
        starts, buffer = self._starts(data)
        self.frames += len(starts)
        end = starts[-1] + (frame_length(buffer[starts[-1] : starts[-1] + 4]) or 0) if starts else self._skip
        if not starts and self._carry:
            end = 0
        if end >= len(buffer):
            self._skip, self._carry = end - len(buffer), b""
        else:
            self._skip, self._carry = 0, buffer[end:]

    def trim_end(self, data: bytes, samples: int) -> bytes:
        """``data``, the stream's last bytes (not yet followed), less its frames of pure padding
        for a stream of ``samples`` real samples."""
        carried = len(self._carry)
        starts, _ = self._starts(data)
        if self.lost or not self._spf:
            return data
        excess = ((self.frames + len(starts)) * self._spf - MP3_DECODED_DELAY - samples) // self._spf
        drop = max(0, min(excess, len(starts)))
        if drop and starts[len(starts) - drop] >= carried:
            return data[: starts[len(starts) - drop] - carried]
        return data


def drop_blank_first_frame(data: bytes) -> tuple[bytes, bool]:
    """``data`` without a leading frame whose body is all zeros; the flag says whether the
    first frame is settled (``False``: not all of it has arrived yet, keep ``data``)."""
    length = frame_length(data[:4])
    if length is None:
        return data, True
    if len(data) < length:
        return data, False
    if not any(data[4:length]):
        return data[length:], True
    return data, True
