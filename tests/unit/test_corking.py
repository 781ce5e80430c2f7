"""``corked``: TCP_CORK on a transport's socket for the length of a burst, and nothing elsewhere."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable

import pytest
import uvloop
from streamvox.stream_server.corking import corked

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_CORK is Linux's")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _cork_state(transport: asyncio.BaseTransport) -> int:
    return transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)


async def _tcp_pair() -> tuple[asyncio.StreamWriter, asyncio.StreamReader, asyncio.Server]:
    """A loopback connection: the server side's writer and the client side's reader."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    accepted = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, client_writer = await asyncio.open_connection("127.0.0.1", port)
    server_reader, server_writer = await accepted
    _KEPT.extend((client_writer, server_reader))  # a stream dropped closes its socket
    return server_writer, reader, server


_KEPT: list[object] = []


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_the_socket_is_corked_inside_and_everything_written_arrives(loop: str) -> None:
    async def scenario() -> None:
        writer, reader, server = await _tcp_pair()
        transport = writer.transport
        assert _cork_state(transport) == 0
        packets = [bytes([i]) * (60 + i) for i in range(14)]
        with corked(transport):
            assert _cork_state(transport) == 1
            for packet in packets:
                transport.write(packet)
        assert _cork_state(transport) == 0
        expected = b"".join(packets)
        received = await asyncio.wait_for(reader.readexactly(len(expected)), 5)
        assert received == expected
        writer.close()
        server.close()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_the_cork_is_pulled_when_the_burst_fails(loop: str) -> None:
    async def scenario() -> None:
        writer, _reader, server = await _tcp_pair()
        with pytest.raises(RuntimeError), corked(writer.transport):
            writer.transport.write(b"x")
            raise RuntimeError("the burst failed")
        assert _cork_state(writer.transport) == 0
        writer.close()
        server.close()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())


def test_no_transport_a_closing_one_and_a_unix_socket_are_left_alone() -> None:
    async def scenario() -> None:
        with corked(None):
            pass
        writer, _reader, server = await _tcp_pair()
        writer.close()
        with corked(writer.transport):  # closing: no setsockopt on a socket on its way out
            pass
        server.close()

        left, right = socket.socketpair()
        unix_reader, unix_writer = await asyncio.open_connection(sock=left)
        with corked(unix_writer.transport):
            unix_writer.transport.write(b"plain")
        right.setblocking(True)
        assert right.recv(16) == b"plain"
        unix_writer.close()
        right.close()
        del unix_reader

    asyncio.run(scenario())
