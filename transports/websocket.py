"""The WebSocket transport: one ``send`` is one binary WebSocket message.

Built on the ``websockets`` library's asyncio API (``websockets.asyncio``).
:class:`WebSocketTransport` connects to ``ws://`` and ``wss://`` URLs and listens
on ``ws://host:port``; :class:`WebSocketConnection` wraps either end of a
connection, including a ``ServerConnection`` that a server running its own
``websockets`` ``serve()`` hands to its handler (the relay does this so that it
can route HTTP paths itself)::

    async def handler(ws):                       # websockets.asyncio.server.serve(handler, ...)
        conn = WebSocketConnection(ws)
        conn.path, conn.query                    # "/notes", {"token": "..."}
        await conn.send(await conn.recv())

What the wrapper adds to a raw ``websockets`` connection:

* **One error tree.** No ``websockets`` exception escapes: a closed connection is
  :class:`~crdtsync.errors.ConnectionClosedError`, anything else that breaks it
  :class:`~crdtsync.errors.TransportError` (both ``OSError``), like every transport.
* **Binary only.** crdtsync and y-protocols speak binary messages: a text message
  is a protocol violation, answered by closing with 1003 (unsupported data).
* **Bounded memory.** Incoming messages are capped (``max_message``; larger ones
  close the connection with 1009), at most a few are queued before reading from
  the socket pauses (so a sender that outpaces its reader meets TCP
  backpressure), and ``send`` waits while more than ``write_limit`` bytes are
  buffered. Servers that must not wait on a slow reader check
  :attr:`WebSocketConnection.buffered_amount` and :meth:`WebSocketConnection.abort`.
* **No compression.** permessage-deflate costs CPU on both ends and memory per
  connection, and crdtsync already compresses what is worth it.

Declared abilities (:class:`~crdtsync.net.Ability`): ``MESSAGES`` (one ``send``
is one message), ``FLOW`` (``buffered_amount``, ``abort``) and ``CLOSE_CODES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.frames import CloseCode

from crdtsync.errors import ConnectionClosedError, TransportError, UnsupportedAddressError
from crdtsync.net import Ability

__all__ = ["WebSocketConnection", "WebSocketListener", "WebSocketTransport"]

#: Messages received and not yet read before the socket stops being read: a
#: high-water mark of 4 and a low one of 1 (counted in frames; we never fragment).
_MAX_QUEUE = (4, 1)
#: Close code for an abnormal end without any close frame (RFC 6455 7.1.5).
_ABNORMAL = 1006
#: What every WebSocket connection can do beyond a byte pipe.
ABILITIES = Ability.MESSAGES | Ability.FLOW | Ability.CLOSE_CODES


def _format_peer(addr: Any) -> str:
    """``host:port`` of a socket address (``[host]:port`` for IPv6)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = str(addr[0]), addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(addr) if addr else "?"


class WebSocketConnection:
    """One end of a WebSocket connection, as a crdtsync :class:`Connection`.

    Args:
        ws: a ``websockets`` asyncio connection, client or server side (e.g. the
            ``ServerConnection`` given to a ``serve()`` handler).
        remote: what :attr:`remote_address` reports (default: the peer's
            ``host:port``).
    """

    def __init__(self, ws: ClientConnection | ServerConnection, *, remote: str | None = None):
        # The websockets connection we drive; nothing outside this class touches it.
        self._ws = ws
        # What status events and logs call the other side.
        self._remote = remote if remote is not None else _format_peer(self._peer_sockname())
        # Set by abort(): close codes then say "abnormal" whatever was queued.
        self._aborted = False
        path, query = "/", {}
        request = ws.request if isinstance(ws, ServerConnection) else None
        if request is not None:
            parts = urlsplit(request.path)
            path = parts.path or "/"
            # Repeated keys: the last one wins (dict() keeps the last).
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
        # The request path and query (server side; "/" and {} on the client side).
        self._path: str = path
        self._query: dict[str, str] = query

    def _peer_sockname(self) -> Any:
        # The transport's peer name: None once the socket is gone.
        return self._ws.transport.get_extra_info("peername")

    # -- Connection ------------------------------------------------------------------

    @property
    def abilities(self) -> Ability:
        """``MESSAGES | FLOW | CLOSE_CODES``: see :mod:`crdtsync.net`."""
        return ABILITIES

    @property
    def remote_address(self) -> str:
        """Who is on the other side: ``host:port``, or the URL we connected to."""
        return self._remote

    async def send(self, data: bytes) -> None:
        """Send ``data`` as one binary message; waits while the write buffer is full.

        Raises:
            ConnectionClosedError: the connection is closed.
            TransportError: the connection broke.
        """
        try:
            await self._ws.send(bytes(data), text=False)
        except ConnectionClosed as exc:
            raise ConnectionClosedError(f"connection closed: {self._describe(exc)}") from None
        except (WebSocketException, OSError, RuntimeError) as exc:
            raise TransportError(f"send failed: {exc}") from exc

    async def recv(self) -> bytes:
        """The next non-empty binary message.

        Raises:
            ConnectionClosedError: the connection is closed (after every message
                received before the close was read), or the peer sent a text
                message (we close with 1003).
            TransportError: the connection broke in another way.
        """
        while True:
            data = await self.recv_message()
            if data:
                return data

    # -- declared abilities (MESSAGES, FLOW, CLOSE_CODES) and extras for servers -------------

    async def recv_message(self) -> bytes:
        """The next binary message, empty ones included (:class:`~crdtsync.net.MessageConnection`).

        For servers that meter what clients send: an empty message costs
        nothing to send, so it must still count against a message-rate limit.

        Raises:
            ConnectionClosedError: as :meth:`recv`.
            TransportError: as :meth:`recv`.
        """
        try:
            data = await self._ws.recv()
        except ConnectionClosed as exc:
            raise ConnectionClosedError(f"connection closed: {self._describe(exc)}") from None
        except (WebSocketException, OSError, RuntimeError) as exc:
            raise TransportError(f"receive failed: {exc}") from exc
        if isinstance(data, str):
            await self.close_with(CloseCode.UNSUPPORTED_DATA, "binary messages only")
            raise ConnectionClosedError("the peer sent a text message (closed with 1003)")
        return bytes(data)

    def limit_message_size(self, max_size: int | None) -> None:
        """Refuse (close with 1009) any later message larger than ``max_size`` bytes.

        websockets checks it as each frame header arrives, before buffering the
        payload: so a server can hold an unauthenticated client to a few KiB
        even while a message is unfinished, and lift the limit once it knows
        who the client is.
        """
        self._ws.protocol.max_message_size = max_size

    async def close(self) -> None:
        """Close normally (1000) and wait for the closing handshake; idempotent."""
        await self.close_with(CloseCode.NORMAL_CLOSURE, "")

    async def close_with(self, code: int, reason: str) -> None:
        """Close with WebSocket close ``code`` and ``reason``; idempotent.

        Waits for the peer to answer the close (at most the close timeout, then
        the TCP connection is dropped). A no-op once closing or closed.
        """
        with contextlib.suppress(WebSocketException, OSError, RuntimeError):
            await self._ws.close(code, reason[:120])

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake or waiting.

        For slow consumers: whatever is buffered is discarded, the peer sees an
        abnormal closure (1006) and the pending ``recv``/``send`` calls end with
        :class:`ConnectionClosedError`.
        """
        self._aborted = True
        self._ws.transport.abort()

    @property
    def close_code(self) -> int | None:
        """The close code the peer sent, else the one we sent (1006 if none); None while open."""
        proto = self._ws.protocol
        if proto.close_rcvd is not None:
            return int(proto.close_rcvd.code)
        if proto.close_sent is not None and not self._aborted:
            return int(proto.close_sent.code)
        if self._closed:
            return _ABNORMAL
        return None

    @property
    def close_reason(self) -> str | None:
        """The close reason matching :attr:`close_code` (``""`` when none); None while open."""
        proto = self._ws.protocol
        if proto.close_rcvd is not None:
            return str(proto.close_rcvd.reason)
        if proto.close_sent is not None and not self._aborted:
            return str(proto.close_sent.reason)
        if self._closed:
            return ""
        return None

    @property
    def _closed(self) -> bool:
        return self._ws.connection_lost_waiter.done() or self._aborted

    @property
    def closed(self) -> bool:
        """Whether the connection is closed or closing."""
        return self._closed or self._ws.protocol.close_expected()

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted by ``send`` and not yet written to the socket."""
        transport = self._ws.transport
        if transport.is_closing():
            return 0
        return int(transport.get_write_buffer_size())

    @property
    def path(self) -> str:
        """The request path, e.g. ``"/notes"`` (server side; ``"/"`` on the client side)."""
        return self._path

    @property
    def query(self) -> dict[str, str]:
        """The request's query parameters (server side; a repeated key keeps its last value)."""
        return dict(self._query)

    @property
    def request_headers(self) -> dict[str, str]:
        """The handshake request's headers, lower-cased names (server side; else empty)."""
        request = self._ws.request if isinstance(self._ws, ServerConnection) else None
        if request is None:
            return {}
        return {k.lower(): v for k, v in request.headers.raw_items()}

    @staticmethod
    def _describe(exc: ConnectionClosed) -> str:
        frame = exc.rcvd if exc.rcvd is not None else exc.sent
        if frame is None:
            return "no close frame (1006)"
        return f"{int(frame.code)} {frame.reason}".rstrip()

    def __repr__(self) -> str:
        return f"<WebSocketConnection {self._remote} code={self.close_code}>"


class WebSocketListener:
    """A listening WebSocket server (returned by :meth:`WebSocketTransport.listen`)."""

    def __init__(self, server: Server, address: str) -> None:
        # The websockets server; its asyncio server does the accepting.
        self._server = server
        # The URL peers connect to, with the real port.
        self._address = address

    @property
    def address(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS), with the port actually bound."""
        return self._address

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(urlsplit(self._address).port or 0)

    async def close(self) -> None:
        """Stop accepting connections; open ones stay open. Idempotent."""
        # Stop listening now (synchronously), so that a connect right after fails;
        # then let websockets finish its own bookkeeping in the background.
        self._server.server.close()
        self._server.close(close_connections=False)
        await asyncio.sleep(0)


class WebSocketTransport:
    """Connects to and listens on WebSocket URLs.

    Example::

        transport = WebSocketTransport()
        async with Peer(transport=transport) as peer:
            url = await peer.listen("ws://127.0.0.1:0")     # e.g. ws://127.0.0.1:40123

    Args:
        ssl: TLS context: a server context for ``listen`` (the listener is then
            ``wss://``), a client context for ``connect`` to ``wss://`` URLs
            (default: the system's trusted CAs).
        max_message: largest message received, in bytes; a larger one closes
            the connection with 1009 (message too big).
        open_timeout: seconds allowed for the TCP, TLS and WebSocket handshakes.
        write_limit: bytes buffered for writing before ``send`` waits.
        ping_interval: seconds between keepalive pings (a peer that does not
            answer within as long again is dropped); None disables them.
        close_timeout: seconds a close waits for the peer's answer before the
            TCP connection is dropped.
    """

    def __init__(
        self,
        *,
        ssl: _ssl.SSLContext | None = None,
        max_message: int = 16 << 20,
        open_timeout: float = 10.0,
        write_limit: int = 64 << 10,
        ping_interval: float | None = 20.0,
        close_timeout: float = 5.0,
    ) -> None:
        # TLS context for wss://.
        self.ssl = ssl
        # Incoming message size limit.
        self.max_message = max_message
        # Handshake time limit.
        self.open_timeout = open_timeout
        # Write buffer high-water mark.
        self.write_limit = write_limit
        # Keepalive period (and pong timeout).
        self.ping_interval = ping_interval
        # How long a close waits for the peer.
        self.close_timeout = close_timeout

    def _options(self) -> dict[str, Any]:
        return {
            "compression": None,
            "open_timeout": self.open_timeout,
            "ping_interval": self.ping_interval,
            "ping_timeout": self.ping_interval,
            "close_timeout": self.close_timeout,
            "max_size": self.max_message,
            "max_queue": _MAX_QUEUE,
            "write_limit": self.write_limit,
        }

    @property
    def abilities(self) -> Ability:
        """``MESSAGES | FLOW | CLOSE_CODES``: see :mod:`crdtsync.net`."""
        return ABILITIES

    async def connect(self, address: str) -> WebSocketConnection:
        """Connect to a ``ws://`` or ``wss://`` URL (path and query are sent as given).

        Raises:
            UnsupportedAddressError: not a ``ws://`` or ``wss://`` URL with a host
                (a TransportError and a ValueError: retrying cannot help).
            TransportError: nobody listening, a failed TLS or WebSocket
                handshake (with the HTTP status when the server refused the
                upgrade), or no answer within ``open_timeout``.
        """
        parts = urlsplit(address)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            # Never retried: no attempt can make this address work.
            shown_bad = parts._replace(query="", fragment="").geturl()
            raise UnsupportedAddressError(f"not a ws:// or wss:// URL: {shown_bad!r}")
        kwargs = self._options()
        if parts.scheme == "wss" and self.ssl is not None:
            kwargs["ssl"] = self.ssl
        # Shown in status events and logs: without the query, which may hold a token.
        shown = parts._replace(query="", fragment="").geturl()
        try:
            # proxy=None: never pick a proxy up from the environment.
            ws = await ws_connect(address, proxy=None, **kwargs)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise TransportError(
                f"{shown} refused the WebSocket upgrade: HTTP {status} "
                f"{exc.response.reason_phrase}".rstrip()
            ) from None
        except InvalidURI:
            raise UnsupportedAddressError(f"not a valid WebSocket URL: {shown!r}") from None
        except InvalidHandshake as exc:
            raise TransportError(f"WebSocket handshake with {shown} failed: {exc}") from None
        except TimeoutError:
            raise TransportError(
                f"no WebSocket handshake with {shown} within {self.open_timeout} s"
            ) from None
        except _ssl.SSLError as exc:
            raise TransportError(f"TLS handshake with {shown} failed: {exc}") from None
        except (OSError, WebSocketException, ValueError) as exc:
            raise TransportError(f"cannot connect to {shown}: {exc}") from None
        return WebSocketConnection(ws, remote=shown)

    async def listen(
        self, address: str, handler: Callable[[WebSocketConnection], Awaitable[None]]
    ) -> WebSocketListener:
        """Accept WebSocket connections at ``ws://host:port`` (port 0: any free port).

        ``handler`` runs for each connection (any path); the connection is
        closed when it returns.

        Raises:
            TransportError: a bad address, or the port cannot be bound.
        """
        parts = urlsplit(address)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise TransportError(f"listen needs ws://host:port, not {address!r}")
        if parts.scheme == "wss" and self.ssl is None:
            raise TransportError("listening on wss:// needs an ssl context")
        try:
            port = parts.port or 0
        except ValueError:
            raise TransportError(f"bad port in {address!r}") from None

        async def run(ws: ServerConnection) -> None:
            await handler(WebSocketConnection(ws))

        try:
            server = await ws_serve(
                run, parts.hostname, port, ssl=self.ssl, server_header=None, **self._options()
            )
        except OSError as exc:
            raise TransportError(f"cannot listen on {address}: {exc}") from None
        sockname = server.sockets[0].getsockname()
        host = str(sockname[0])
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.ssl is not None else "ws"
        return WebSocketListener(server, f"{scheme}://{host}:{sockname[1]}")
