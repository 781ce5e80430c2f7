"""Send a burst of small writes as a few full TCP segments (``TCP_CORK``).

A finished vocoder window becomes a burst of 20 ms Opus packets, each its own
frame and its own write.  With ``TCP_NODELAY`` (which aiohttp sets) each write
leaves as its own segment, and the kernel's transmit path (on loopback, the
receiver's too) runs once per packet.  Corked, the writes only fill the socket
buffer and the burst leaves as full segments when the cork is pulled, at once.
Measured side by side on ``bench latency``'s paragraph: the event loop took 3.13
against 3.58 ms of CPU per audio second, the whole server 0.985 of its CPU
(``scripts/ab.py``).  Nothing waits for the cork: it is pulled as soon as the
burst is written (the kernel would send a corked tail after 200 ms anyway).

Linux only; elsewhere, and on sockets that are not TCP, :func:`corked` does
nothing.  Event-loop only (the socket options are the transport's).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

_CORK = getattr(socket, "TCP_CORK", None)


@contextmanager
def corked(transport: asyncio.BaseTransport | None) -> Iterator[None]:
    """Hold back partial TCP segments of ``transport`` while inside; send them on leaving.

    A socket that closed meanwhile, or one that refuses the option, is left as it is."""
    sock = _tcp_socket(transport)
    if sock is None or not _set_cork(sock, True):
        yield
        return
    try:
        yield
    finally:
        _set_cork(sock, False)


def _tcp_socket(transport: asyncio.BaseTransport | None) -> socket.socket | None:
    if _CORK is None or transport is None or transport.is_closing():
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return None
    return sock


def _set_cork(sock: socket.socket, on: bool) -> bool:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1 if on else 0)
    except OSError as exc:  # closed under us, or an unusual socket
        log.debug("TCP_CORK %s refused: %s", "on" if on else "off", exc)
        return False
    return True
