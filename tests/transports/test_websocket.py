"""The WebSocket transport: the shared suite (plain and TLS), close codes, limits, Peers over it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.tlsutil import self_signed_cert
from helpers.waiting import eventually, started
from websockets.asyncio.client import connect as raw_connect
from websockets.exceptions import ConnectionClosed

from crdtsync import ConnectionClosedError, Peer, TransportError
from crdtsync.net import Connection, Listener, Transport
from crdtsync.peer.peer import Backoff
from crdtsync.testing import check_transport
from crdtsync.transports.websocket import (
    WebSocketConnection,
    WebSocketListener,
    WebSocketTransport,
)

LOCAL = "ws://127.0.0.1:0"
STEP = 10.0  # seconds allowed for any single wait


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    """Poll ``cond`` until it holds; fail after ``timeout`` seconds."""
    await eventually(cond, timeout, what)


async def step(aw: Awaitable[Any], what: str = "step") -> Any:
    try:
        return await asyncio.wait_for(aw, STEP)
    except TimeoutError:
        raise AssertionError(f"timed out: {what}") from None


class Server:
    """A listener whose handler hands each accepted connection to the test."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[WebSocketConnection] = asyncio.Queue()
        self.release = asyncio.Event()
        self.listener: WebSocketListener | None = None

    async def handler(self, conn: Any) -> None:
        await self.accepted.put(conn)
        await self.release.wait()

    async def accept(self) -> WebSocketConnection:
        return await step(self.accepted.get(), "accept")


@contextlib.asynccontextmanager
async def serving(transport: WebSocketTransport | None = None) -> AsyncIterator[Server]:
    server = Server()
    server.listener = await (transport or WebSocketTransport()).listen(LOCAL, server.handler)
    try:
        yield server
    finally:
        server.release.set()
        await server.listener.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the shared suite ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_websocket_transport_passes_the_suite() -> None:
    await check_transport(lambda: (WebSocketTransport(), WebSocketTransport(), LOCAL))


def test_protocols_are_satisfied() -> None:
    async def main() -> None:
        t = WebSocketTransport()
        assert isinstance(t, Transport)
        async with serving() as server:
            assert server.listener is not None
            assert isinstance(server.listener, Listener)
            assert re.fullmatch(r"ws://127\.0\.0\.1:\d+", server.listener.address)
            assert server.listener.port == int(server.listener.address.rsplit(":", 1)[1]) > 0
            client = await t.connect(server.listener.address)
            conn = await server.accept()
            assert isinstance(client, Connection)
            assert isinstance(conn, Connection)
            assert re.fullmatch(r"127\.0\.0\.1:\d+", conn.remote_address)
            assert client.remote_address == server.listener.address
            await client.close()

    asyncio.run(main())


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def tls_contexts(files: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = files
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@pytest.mark.anyio
async def test_tls_passes_the_suite(tls_files: tuple[Path, Path]) -> None:
    server_ctx, client_ctx = tls_contexts(tls_files)
    await check_transport(
        lambda: (WebSocketTransport(ssl=server_ctx), WebSocketTransport(ssl=client_ctx), LOCAL)
    )


@pytest.mark.anyio
async def test_tls_listener_is_wss_and_untrusted_certificates_are_refused(
    tls_files: tuple[Path, Path],
) -> None:
    server_ctx, client_ctx = tls_contexts(tls_files)
    async with serving(WebSocketTransport(ssl=server_ctx)) as server:
        assert server.listener is not None
        address = server.listener.address
        assert re.fullmatch(r"wss://127\.0\.0\.1:\d+", address)
        client = await step(WebSocketTransport(ssl=client_ctx).connect(address))
        conn = await server.accept()
        await step(client.send(b"secret"))
        assert await step(conn.recv()) == b"secret"
        await step(client.close())
        # Without our CA the system's trust store does not know the certificate.
        with pytest.raises(TransportError, match=r"TLS|certificate|SSL"):
            await step(WebSocketTransport().connect(address))
        # Plain ws:// to a TLS port is no WebSocket handshake either.
        with pytest.raises(TransportError):
            await step(WebSocketTransport(open_timeout=2).connect(address.replace("wss", "ws")))
    with pytest.raises(TransportError, match="ssl"):
        await WebSocketTransport().listen("wss://127.0.0.1:0", Server().handler)


# -- connecting ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "address", ["http://127.0.0.1:1/x", "127.0.0.1:80", "ws://", "", "ws://127.0.0.1:99999/"]
)
async def test_bad_urls_are_transport_errors(address: str) -> None:
    with pytest.raises(TransportError):
        await step(WebSocketTransport().connect(address))


@pytest.mark.anyio
async def test_connect_refused_is_a_transport_error() -> None:
    port = free_port()
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
        await step(WebSocketTransport().connect(f"ws://127.0.0.1:{port}/room?token=secret"))


@pytest.mark.anyio
async def test_refused_upgrade_reports_the_http_status_without_the_token() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TransportError, match="HTTP 403") as info:
            await step(WebSocketTransport().connect(f"ws://127.0.0.1:{port}/r?token=secret"))
        assert "secret" not in str(info.value)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_a_silent_server_times_out_as_a_transport_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # never answers the handshake
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TransportError, match=r"within 0\.3 s"):
            await step(WebSocketTransport(open_timeout=0.3).connect(f"ws://127.0.0.1:{port}"))
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_listen_on_a_busy_port_or_a_bad_address_is_a_transport_error() -> None:
    async with serving() as server:
        assert server.listener is not None
        with pytest.raises(TransportError):
            await WebSocketTransport().listen(server.listener.address, Server().handler)
    with pytest.raises(TransportError):
        await WebSocketTransport().listen("tcp://127.0.0.1:0", Server().handler)


@pytest.mark.anyio
async def test_closing_the_listener_keeps_open_connections() -> None:
    async with serving() as server:
        assert server.listener is not None
        address = server.listener.address
        client = await step(WebSocketTransport().connect(address))
        conn = await server.accept()
        await server.listener.close()
        await server.listener.close()  # idempotent
        with pytest.raises(TransportError):
            await step(WebSocketTransport().connect(address))
        await step(client.send(b"still here"))
        assert await step(conn.recv()) == b"still here"
        await step(conn.send(b"me too"))
        assert await step(client.recv()) == b"me too"
        await step(client.close())


# -- what the server sees: path and query -------------------------------------------------


@pytest.mark.anyio
async def test_path_and_query_are_parsed_on_the_server_side() -> None:
    async with serving() as server:
        assert server.listener is not None
        url = f"{server.listener.address}/rooms/n%C3%B6tes?token=abc&x=1&x=2&empty=&name=h%C3%A9"
        client = await step(WebSocketTransport().connect(url))
        conn = await server.accept()
        assert conn.path == "/rooms/n%C3%B6tes"  # the raw path: room names are the server's call
        assert conn.query == {"token": "abc", "x": "2", "empty": "", "name": "hé"}
        assert "token" not in client.remote_address
        assert client.path == "/"
        assert client.query == {}
        assert conn.request_headers["upgrade"].lower() == "websocket"
        await step(client.close())

        bare = await step(WebSocketTransport().connect(server.listener.address))
        conn = await server.accept()
        assert conn.path == "/"
        assert conn.query == {}
        await step(bare.close())


# -- close codes, limits, abuse -------------------------------------------------------------


@pytest.mark.anyio
async def test_close_with_a_code_is_seen_by_the_other_side() -> None:
    async with serving() as server:
        assert server.listener is not None
        client = await step(WebSocketTransport().connect(server.listener.address))
        conn = await server.accept()
        assert conn.close_code is None
        assert client.close_code is None
        assert client.close_reason is None
        await step(conn.close_with(4401, "token expired"))
        await step(conn.close_with(4000, "ignored: already closed"))  # idempotent
        with pytest.raises(ConnectionClosedError, match="4401"):
            await step(client.recv())
        assert client.close_code == 4401
        assert client.close_reason == "token expired"
        assert conn.close_code == 4401  # the client echoed it
        assert conn.closed
        with pytest.raises(ConnectionClosedError):
            await step(conn.send(b"x"))


@pytest.mark.anyio
async def test_an_oversized_message_closes_with_1009() -> None:
    async with serving(WebSocketTransport(max_message=1024)) as server:
        assert server.listener is not None
        client = await step(WebSocketTransport().connect(server.listener.address))
        conn = await server.accept()
        await step(client.send(b"x" * 1024))  # exactly the limit: fine
        assert await step(conn.recv()) == b"x" * 1024
        await step(client.send(b"y" * 1025))
        with pytest.raises(ConnectionClosedError):
            await step(conn.recv())
        with pytest.raises(ConnectionClosedError):
            await step(client.recv())
        assert conn.close_code == 1009
        assert client.close_code == 1009


@pytest.mark.anyio
async def test_a_text_message_closes_with_1003() -> None:
    async with serving() as server:
        assert server.listener is not None
        async with raw_connect(server.listener.address, compression=None) as raw:
            conn = await server.accept()
            await raw.send(b"binary first")
            assert await step(conn.recv()) == b"binary first"
            await raw.send("then text")
            with pytest.raises(ConnectionClosedError, match="text"):
                await step(conn.recv())
            with pytest.raises(ConnectionClosed):
                await step(raw.recv())
            assert raw.close_code == 1003
            assert conn.close_code == 1003


@pytest.mark.anyio
async def test_empty_messages_are_skipped() -> None:
    async with serving() as server:
        assert server.listener is not None
        async with raw_connect(server.listener.address, compression=None) as raw:
            conn = await server.accept()
            await raw.send(b"")
            await raw.send(b"after")
            assert await step(conn.recv()) == b"after"


@pytest.mark.anyio
async def test_two_concurrent_recvs_are_a_transport_error_not_a_websockets_one() -> None:
    async with serving() as server:
        assert server.listener is not None
        client = await step(WebSocketTransport().connect(server.listener.address))
        await server.accept()
        first = await started(client.recv())  # the first recv is waiting
        with pytest.raises(TransportError):
            await step(client.recv())
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await step(client.close())


@pytest.mark.anyio
async def test_backpressure_then_abort_drops_a_slow_reader_at_once() -> None:
    async with serving(WebSocketTransport(write_limit=64 << 10)) as server:
        assert server.listener is not None
        client = await step(WebSocketTransport().connect(server.listener.address))
        conn = await server.accept()
        chunk = b"z" * (1 << 20)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for _ in range(256):  # bounded: far more than the socket buffers hold
                await conn.send(chunk)
                sent += 1

        writer = asyncio.ensure_future(flood())
        # The client reads nothing: its socket fills, then ours, then send() waits.
        await wait_until(lambda: conn.buffered_amount > 0, "the write buffer to fill")
        await wait_until(lambda: not writer.done() and conn.buffered_amount > 0, "send to block")
        assert not writer.done(), "send must wait for a reader that does not read"
        assert sent < 256
        conn.abort()
        with pytest.raises(ConnectionClosedError):
            await step(writer, "the blocked send to end")
        assert conn.close_code == 1006
        assert conn.buffered_amount == 0
        # The client gets what arrived before the drop, then the end (no close frame).
        received = 0

        async def drain() -> None:
            nonlocal received
            for _ in range(300):
                received += len(await step(client.recv()))

        with pytest.raises(ConnectionClosedError, match="1006"):
            await drain()
        assert received <= sent * len(chunk)
        assert client.close_code == 1006


@pytest.mark.anyio
async def test_a_peer_that_stops_answering_pings_is_dropped() -> None:
    # Pong timeout = ping interval; then the close handshake gets close_timeout.
    transport = WebSocketTransport(ping_interval=0.2, close_timeout=0.2)
    async with serving(transport) as server:
        assert server.listener is not None
        raw = await raw_connect(server.listener.address, compression=None, ping_interval=None)
        try:
            conn = await server.accept()
            await step(conn.send(b"alive"))
            assert await step(raw.recv()) == b"alive"
            raw.transport.pause_reading()  # a frozen peer: it never sees our pings
            with pytest.raises(ConnectionClosedError):
                await step(conn.recv(), "the keepalive to drop the frozen peer")
            assert conn.close_code in (1006, 1011)
        finally:
            raw.transport.abort()


# -- Peers over WebSockets -----------------------------------------------------------------


@pytest.mark.anyio
async def test_two_peers_sync_a_document_over_websockets() -> None:
    quick = Backoff(initial=0.02, cap=0.2)
    async with (
        Peer(transport=WebSocketTransport(), backoff=quick) as server,
        Peer(transport=WebSocketTransport(), backoff=quick) as client,
    ):
        address = await server.listen(LOCAL)
        assert address.startswith("ws://127.0.0.1:")
        doc = await client.open("notes")
        doc.text("body").insert(0, "hello")
        await step(client.connect(address))
        assert await client.wait_synced("notes", timeout=STEP)
        remote = await server.open("notes")
        assert str(remote.text("body")) == "hello"
        remote.text("body").insert(5, " world")
        doc.text("body").insert(0, ">> ")
        await wait_until(
            lambda: str(doc.text("body")) == str(remote.text("body")) == ">> hello world",
            "both edits on both sides",
        )
        [(_, peer_id, is_open)] = server.connections()
        assert peer_id == client.peer_id
        assert is_open
