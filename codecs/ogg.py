"""Ogg/Opus files (RFC 7845): OpusHead, OpusTags, then one packet per page."""

from __future__ import annotations

import random
import struct
from typing import BinaryIO

from streamvox.codecs.opus import OPUS_RATE


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, no reflection, zero init."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


class OggOpusWriter:
    """Writes a mono Ogg/Opus stream to a binary file object.

    ``write_packet`` takes each Opus packet with the number of 48 kHz samples
    it carries; ``close`` marks the last page and trims the final granule to
    ``pre_skip + total_samples`` so players stop exactly at the end.
    Not thread-safe.
    """

    def __init__(
        self,
        out: BinaryIO,
        pre_skip: int,
        input_sample_rate: int = OPUS_RATE,
        vendor: str = "streamvox",
        serial: int | None = None,
    ) -> None:
        self._out = out
        self._serial = random.getrandbits(32) if serial is None else serial
        self._sequence = 0
        self._pre_skip = pre_skip
        self._granule = 0
        """Samples decoded so far, pre-skip included (RFC 7845 section 4: a page's granule
        counts every sample its packets decode to; players drop the first ``pre_skip``)."""
        self._pending: tuple[bytes, int] | None = None
        self._closed = False
        head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, input_sample_rate, 0, 0)
        self._write_page(head, granule=0, header_type=0x02)
        vendor_bytes = vendor.encode()
        tags = b"OpusTags" + struct.pack("<I", len(vendor_bytes)) + vendor_bytes + struct.pack("<I", 0)
        self._write_page(tags, granule=0, header_type=0x00)

    def write_packet(self, packet: bytes, samples: int) -> None:
        """Queue one packet; it is written when the next arrives (so the last page can be flagged)."""
        if self._closed:
            raise ValueError("write_packet after close")
        self._flush_pending(last=False)
        self._pending = (packet, samples)

    def write_packet_now(
        self, packet: bytes, samples: int, last: bool = False, total_samples: int | None = None
    ) -> None:
        """Write one packet's page at once (a live stream holds nothing back); ``last`` flags the
        end of the stream, and ``total_samples`` (48 kHz, without pre-skip) then trims the padding."""
        if self._closed:
            raise ValueError("write_packet_now after close")
        self._flush_pending(last=False)
        self._pending = (packet, samples)
        self._flush_pending(last=last, total_samples=total_samples)
        self._closed = last

    def close(self, total_samples: int | None = None) -> None:
        """Write the final page; ``total_samples`` (48 kHz, without pre-skip) trims the padding."""
        if self._closed:
            return
        if self._pending is None:
            self._write_page(b"", granule=self._granule, header_type=0x04)
        else:
            self._flush_pending(last=True, total_samples=total_samples)
        self._closed = True

    def _flush_pending(self, last: bool, total_samples: int | None = None) -> None:
        if self._pending is None:
            return
        packet, samples = self._pending
        self._pending = None
        self._granule += samples
        granule = self._granule
        if last and total_samples is not None:
            granule = min(granule, self._pre_skip + total_samples)
        self._write_page(packet, granule=granule, header_type=0x04 if last else 0x00)

    def _write_page(self, packet: bytes, granule: int, header_type: int) -> None:
        lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
        if len(lacing) > 255:
            raise ValueError("packet too large for one Ogg page")
        header = struct.pack(
            "<4sBBqIIIB", b"OggS", 0, header_type, granule, self._serial, self._sequence, 0, len(lacing)
        ) + bytes(lacing)
        page = bytearray(header + packet)
        struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
        self._out.write(bytes(page))
        self._sequence += 1
