"""The relay: a WebSocket server where peers that are not on one LAN meet.

One process serves two protocols on one port:

* ``ws://host:port`` (path ``/``): the crdtsync sync protocol (many documents per
  connection, acknowledgements, presence), driven by a :class:`~crdtsync.peer.peer.Peer`
  that owns the rooms and their store;
* ``ws://host:port/<room>``: plain y-protocols, so that a stock y-websocket
  ``WebsocketProvider`` (a browser) edits the same document as Python peers.

Both kinds of connection meet in the same :class:`~crdtsync.model.doc.Doc` per room, so
every update is validated once, written to the store, and only then sent on
(crdtsync sessions acknowledge it only then). A relay restarted after ``kill -9``
serves its rooms from the store.

What keeps it up under hostile or careless clients (limits in
:class:`~crdtsync.relay.config.RelayConfig`): WebSocket messages above
``max_frame`` are refused by the WebSocket layer (1009); updates above
``max_update`` are refused; each connection has a token bucket of messages; a
connection may send only ``max_unauth_bytes`` before it is authenticated; a
connection whose unsent data exceeds ``max_send_queue`` is dropped (a slow
consumer resyncs when it reconnects); a malformed message closes that connection
only. Rooms nobody uses are unloaded after ``idle_unload`` seconds (compacted first).

Operations: ``/healthz``, ``/readyz`` and Prometheus ``/metrics`` on the same port;
JSON log lines (``serve`` installs them); SIGTERM drains gracefully: every
connection is closed with 1001 so clients reconnect elsewhere or later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from websockets.asyncio.server import Server, ServerConnection, broadcast
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State as WsState

from crdtsync.errors import (
    AuthError,
    ConnectionClosedError,
    ForbiddenWriterError,
    FrameTooLargeError,
    InvalidRoomError,
    InvalidUpdateError,
    LimitExceededError,
    MalformedFrameError,
    ProtocolError,
    RoomNotAllowedError,
    StoreError,
    TokenError,
)
from crdtsync.format.yupdate import UpdateLimits, parse_update
from crdtsync.model.doc import Doc
from crdtsync.peer.peer import (
    MAX_PRESENCE_PER_CONNECTION,
    Grant,
    HelloInfo,
    Peer,
    Status,
    presence_fits,
)
from crdtsync.protocol import session as p
from crdtsync.protocol import yprotocol as y
from crdtsync.protocol.awareness import decode_awareness
from crdtsync.relay.config import RelayConfig
from crdtsync.relay.metrics import Registry
from crdtsync.relay.names import room_from_path, validate_room
from crdtsync.relay.tokens import TokenClaims, check_secret, verify_token
from crdtsync.store.base import Store
from crdtsync.store.memory import MemoryStore
from crdtsync.transports.websocket import WebSocketConnection

__all__ = ["CLOSE_CODES", "Relay", "serve"]

log = logging.getLogger("crdtsync.relay")

#: WebSocket close codes the relay sends, and why.
CLOSE_CODES: dict[int, str] = {
    1001: "the relay is shutting down (reconnect later)",
    1002: "malformed message",
    1003: "text message (the protocols are binary)",
    1007: "invalid update",
    1008: "policy: forged client id, or too much data before authentication",
    1009: "message too big",
    1011: "internal error (store failure)",
    1013: "too many connections (try again later)",
    4400: "invalid room name",
    4401: "missing, invalid or expired token",
    4403: "the token does not allow this room",
    # 45xx, not 44xx: y-websocket gives up for good on 4400-4499 and retries 45xx.
    4529: "message rate limit exceeded (reconnect later)",
}

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class _Bucket:
    """A token bucket: ``rate`` messages per second, bursts of ``burst``."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = now

    def take(self, now: float, n: int = 1) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


class _FrameCounter:
    """Counts crdtsync frames starting in a byte stream, across message boundaries.

    The rate limit is per frame: one WebSocket message may carry any number of
    frames (the session reads a stream), so counting messages would let a
    client pack thousands of frames into one. Only the length prefixes are
    read (``varuint(len) || body || 4-byte check``); the session validates
    everything else.
    """

    __slots__ = ("_len", "_shift", "_skip")

    def __init__(self) -> None:
        self._skip = 0  # bytes of the current frame still to come
        self._len = 0  # length prefix being read
        self._shift = -1  # -1: between frames; else bits of the prefix read so far

    def feed(self, data: bytes) -> int:
        frames = 0
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            if self._shift < 0:
                frames += 1
                self._shift, self._len = 0, 0
            b = data[i]
            i += 1
            self._len |= (b & 0x7F) << self._shift
            self._shift += 7
            if not b & 0x80 or self._shift > 35:
                # A prefix longer than 5 bytes is malformed: the session says so.
                self._skip, self._shift = self._len + 4, -1
        return frames


class _SyncConn:
    """A crdtsync-protocol connection as the Peer sees it: metered and limited."""

    def __init__(self, relay: Relay, inner: WebSocketConnection, address: str) -> None:
        self.relay = relay
        self.inner = inner
        self.address = address
        self._authenticated = False
        self.unauth_bytes = 0
        self.bucket = _Bucket(relay.config.max_msgs_per_sec, relay.config.max_msgs_burst, _now())
        self.frames = _FrameCounter()
        self.t0 = 0.0  # when the message being processed arrived
        # Until authenticated, no message (finished or not) may exceed what is
        # left of max_unauth_bytes: websockets refuses it at the frame header.
        inner.limit_message_size(relay.config.max_unauth_bytes)

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        self._authenticated = value
        if value:
            self.inner.limit_message_size(self.relay.config.max_frame)

    @property
    def remote_address(self) -> str:
        return self.address

    @property
    def buffered_amount(self) -> int:
        return int(self.inner.buffered_amount)

    async def send(self, data: bytes) -> None:
        await self.inner.send(data)
        self.relay._count_out("crdtsync", len(data))

    async def recv(self) -> bytes:
        while True:
            try:
                data: bytes = await self.inner.recv_message()
            except ConnectionClosedError:
                if self.inner.close_code == 1009 and not self.authenticated:
                    self.relay._error("unauthenticated_data")
                raise
            now = _now()
            self.t0 = now
            self.relay._count_in("crdtsync", len(data))
            if not self.authenticated:
                self.unauth_bytes += len(data)
                left = self.relay.config.max_unauth_bytes - self.unauth_bytes
                if left < 0:
                    self.relay._error("unauthenticated_data")
                    await self.inner.close_with(1008, "too much data before authentication")
                    raise ConnectionClosedError("too much data before authentication")
                self.inner.limit_message_size(max(left, 1))
            # Every message costs one token, an empty one too; a message carrying
            # several frames costs one per frame.
            if not self.bucket.take(now, max(1, self.frames.feed(data))):
                self.relay._error("rate_limited")
                await self.inner.close_with(4529, "message rate limit exceeded")
                raise ConnectionClosedError("message rate limit exceeded")
            if data:
                return data

    async def close(self) -> None:
        if self.relay._draining:
            await self.inner.close_with(1001, "relay shutting down")
        else:
            await self.inner.close()

    def abort(self) -> None:
        # The Peer aborts a connection only when it is a slow consumer: count it
        # under the same kind as a slow y-protocols client.
        self.relay._error("slow_consumer")
        log.warning("slow consumer", extra={"fields": {"remote": self.address}})
        self.inner.abort()


class _RelayConnection(ServerConnection):
    """A server connection that stops reading while its write buffer is over the limit.

    websockets answers every PING with a PONG written straight to the socket,
    whatever the buffer holds: a client that pings and never reads (before any
    authentication, on either protocol) would grow the relay's memory without
    bound, and no message limit sees control frames. Not reading from it until
    it reads what we wrote pushes back on it through TCP instead.
    """

    #: Write-buffer bytes above which reading pauses (the relay's max_send_queue).
    write_limit = 8 << 20

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._paused_for_writes = False
        # websockets resumes reading when its message queue drains: not while
        # we hold reading for the write buffer.
        queue_resume = self.recv_messages.resume

        def resume() -> None:
            if not self._paused_for_writes:
                queue_resume()

        self.recv_messages.resume = resume

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        transport = self.transport
        if (
            not self._paused_for_writes
            and transport is not None
            and transport.get_write_buffer_size() > self.write_limit
        ):
            self._paused_for_writes = True
            transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._paused_for_writes:
            self._paused_for_writes = False
            if not self.recv_messages.paused:
                self.transport.resume_reading()


@dataclass(eq=False)
class _YConn:
    """A y-protocols connection in a room."""

    ws: ServerConnection
    room: str
    read_only: bool
    peer_id: int  # negative: never equal to a crdtsync session's (unsigned) peer id
    address: str
    bucket: _Bucket
    clients: set[int] = field(default_factory=set)  # awareness client ids it announced
    declared: bool = False  # its first presence message named its own client id
    t0: float = 0.0
    closed: bool = False
    # Bytes of frames written to its transport so far, and where its latest sync
    # step 2 lies in that count: until that answer has left the buffer it is not
    # a backlog (a room larger than max_send_queue must still be joinable). Only
    # the latest: a client asking again and again without reading gets no more.
    sent: int = 0
    catch_up_start: int = 0
    catch_up_end: int = 0

    @property
    def state(self) -> p.State:
        # What the writer registry asks of an owner (it is shared with sessions).
        return p.State.CLOSED if self.closed else p.State.OPEN


@dataclass(eq=False)
class _Room:
    name: str
    doc: Doc
    yconns: set[_YConn] = field(default_factory=set)
    unsubscribe: Callable[[], None] = lambda: None
    idle_since: float | None = None


# Seconds a graceful shutdown waits for clients to answer their close frames,
# all together (websockets' own close timeout is 2 s per connection, but run at
# once they overlap); whoever has not answered by then is cut off.
_DRAIN_TIMEOUT = 3.0


def _now() -> float:
    return time.monotonic()


class Relay:
    """The relay server (see the module docs).

    Example::

        async with Relay(RelayConfig(port=0, data="relay.db")) as relay:
            print(relay.url)            # ws://127.0.0.1:PORT
            await relay.wait_closed()   # or close() it

    Args:
        config: the settings.
        store: a store to use instead of ``config.data`` (tests).
    """

    def __init__(self, config: RelayConfig, *, store: Store | None = None) -> None:
        if config.secret is not None:
            check_secret(config.secret)  # fail at start, not at every connection
        self.config = config
        self._store_arg = store
        self._peer: Peer | None = None
        self._server: Server | None = None
        self._rooms: dict[str, _Room] = {}
        self._yconns: set[_YConn] = set()
        self._sync_conns: dict[str, _SyncConn] = {}
        self._next_y = 0
        # y-protocols sends waiting for the Peer's group commit (see _queue).
        self._outbox: list[tuple[list[_YConn], bytes, float | None, bool]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._ready = False
        self._draining = False
        self._closed = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._limits = UpdateLimits(max_update_bytes=config.max_update)
        self.port = 0
        self.url = ""
        self._init_metrics()

    # -- metrics -----------------------------------------------------------------------

    def _init_metrics(self) -> None:
        r = self.metrics = Registry()
        r.gauge(
            "crdtsync_relay_connections",
            "Open connections by protocol.",
            lambda: [
                ({"protocol": "crdtsync"}, float(len(self._sync_conns))),
                ({"protocol": "y"}, float(len(self._yconns))),
            ],
        )
        self._m_conn_total = r.counter(
            "crdtsync_relay_connections_total", "Connections accepted, by protocol."
        )
        r.gauge(
            "crdtsync_relay_rooms", "Rooms loaded in memory.", lambda: [({}, float(self.rooms))]
        )
        self._m_msgs_in = r.counter(
            "crdtsync_relay_messages_received_total", "WebSocket messages received."
        )
        self._m_bytes_in = r.counter("crdtsync_relay_bytes_received_total", "Bytes received.")
        self._m_msgs_out = r.counter(
            "crdtsync_relay_messages_sent_total", "WebSocket messages sent."
        )
        self._m_bytes_out = r.counter("crdtsync_relay_bytes_sent_total", "Bytes sent.")
        self._m_updates = r.counter(
            "crdtsync_relay_updates_total", "Updates stored and sent on, by origin protocol."
        )
        self._m_errors = r.counter("crdtsync_relay_errors_total", "Errors, by kind.")
        self._m_unloaded = r.counter("crdtsync_relay_rooms_unloaded_total", "Idle rooms unloaded.")
        r.gauge(
            "crdtsync_relay_send_queue_bytes",
            "Bytes waiting to be sent: sum and largest over connections.",
            self._queue_depths,
        )
        self._m_latency = r.histogram(
            "crdtsync_relay_propagation_seconds",
            "From receiving an update to having stored it and queued it to every other "
            "connection in the room.",
            _LATENCY_BUCKETS,
        )

    def _queue_depths(self) -> list[tuple[dict[str, str], float]]:
        depths = [_buffered(yc.ws) for yc in self._yconns]
        if self._peer is not None:  # frames still in sessions count too, not only sockets
            depths += self._peer.send_queues()
        return [
            ({"stat": "sum"}, float(sum(depths))),
            ({"stat": "max"}, float(max(depths, default=0))),
        ]

    def _count_in(self, protocol: str, n: int) -> None:
        self._m_msgs_in.inc(protocol=protocol)
        self._m_bytes_in.inc(n, protocol=protocol)

    def _count_out(self, protocol: str, n: int, messages: int = 1) -> None:
        self._m_msgs_out.inc(messages, protocol=protocol)
        self._m_bytes_out.inc(n * messages, protocol=protocol)

    def _error(self, kind: str) -> None:
        self._m_errors.inc(kind=kind)

    @property
    def rooms(self) -> int:
        """How many rooms are loaded in memory."""
        return len(self._peer.docs()) if self._peer is not None else 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Relay:
        """Open the store and start listening."""
        cfg = self.config
        store: Store | str
        if self._store_arg is not None:
            store = self._store_arg
        elif cfg.data is None:
            store = MemoryStore()
        else:
            store = cfg.data
        options = p.SessionOptions(
            max_frame=cfg.max_frame,
            limits=self._limits,
            handshake_timeout=cfg.handshake_timeout,
            max_docs=cfg.max_docs_per_conn,
        )
        peer = Peer(
            store=store,
            authorize=self._authorize,
            options=options,
            compact_every=cfg.compact_every,
            max_send_queue=cfg.max_send_queue,
            # Rooms are private: a client learns only of the rooms it asks for.
            announce=False,
        )
        await peer.start()
        self._peer = peer
        peer.on_open(self._on_open)
        peer.on_presence_update(self._on_presence)
        peer.on_status(self._on_status)
        tls: ssl.SSLContext | None = None
        if cfg.tls_cert and cfg.tls_key:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        try:
            self._server = await ws_serve(
                self._handler,
                cfg.host,
                cfg.port,
                process_request=self._http,
                ssl=tls,
                max_size=cfg.max_frame,
                # crdtsync compresses updates itself; deflate would cost CPU per client.
                compression=None,
                # Few queued inbound messages: a fast sender waits on TCP, not on our memory.
                max_queue=16,
                write_limit=64 << 10,
                ping_interval=20.0,
                ping_timeout=20.0,
                close_timeout=2.0,
                server_header="crdtsync-relay",
                create_connection=type(
                    "_RelayConnection", (_RelayConnection,), {"write_limit": cfg.max_send_queue}
                ),
                # asyncio's default backlog (100) makes a storm of joins wait 1 s for
                # a SYN retry (measured: 200 clients at once, 0.8-1.2 s against 0.6 s).
                backlog=1024,
            )
        except OSError:
            await peer.close()
            raise
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
        self.url = f"{'wss' if tls else 'ws'}://{host}:{self.port}"
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        self._ready = True
        auth = "token" if cfg.secret is not None else "none"
        log.info("listening", extra={"fields": {"url": self.url, "data": cfg.data, "auth": auth}})
        return self

    async def __aenter__(self) -> Relay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Drain: stop accepting, close every connection with 1001, flush the store."""
        if self._draining:
            await self._closed.wait()
            return
        self._draining = True
        self._ready = False
        log.info("draining", extra={"fields": {"connections": self.connections}})
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            self._server.close(close_connections=False)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()  # what was stored goes out before the close frames
        # Every connection at once, under one deadline: one after another, each
        # client that never answers the close would cost the close timeout.
        y_closing = asyncio.ensure_future(
            asyncio.wait_for(
                asyncio.gather(
                    *(yc.ws.close(1001, "relay shutting down") for yc in list(self._yconns)),
                    return_exceptions=True,
                ),
                _DRAIN_TIMEOUT,
            )
        )
        if self._peer is not None:
            # Sends GOING_AWAY on every session (_SyncConn.close then closes with
            # 1001), under its own deadline, and closes the store: never cut short.
            await self._peer.close()
        try:
            await y_closing
        except TimeoutError:
            for yc in list(self._yconns):
                self._drop(yc)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
        for room in self._rooms.values():
            room.unsubscribe()
        self._rooms.clear()
        log.info("stopped", extra={"fields": {}})
        self._closed.set()

    async def wait_closed(self) -> None:
        """Return once the relay has stopped."""
        await self._closed.wait()

    @property
    def connections(self) -> int:
        """Open connections (both protocols)."""
        return len(self._yconns) + len(self._sync_conns)

    @property
    def peer(self) -> Peer:
        """The Peer holding the rooms (for tests and embedding)."""
        assert self._peer is not None, "the relay is not started"
        return self._peer

    # -- HTTP --------------------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/healthz":
            return _text(connection, HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            if self._ready and not self._draining:
                return _text(connection, HTTPStatus.OK, "ready\n")
            return _text(connection, HTTPStatus.SERVICE_UNAVAILABLE, "not ready\n")
        if path == "/metrics":
            resp = _text(connection, HTTPStatus.OK, self.metrics.render())
            resp.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return resp
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        # -- the demo page (crdtsync demo), only with RelayConfig.demo. The lead moves this
        # -- block when the relay is split into modules; the page itself is in crdtsync.apps.
        if self.config.demo and not upgrade:
            from crdtsync.relay.demo import demo_page

            page = demo_page().answer(
                request.method,
                request.path,
                host=request.headers.get("Host"),
                tls=bool(self.config.tls_cert and self.config.tls_key),
            )
            if page is not None:
                headers = Headers([*page.headers, ("Connection", "close")])
                return Response(page.status.value, page.status.phrase, headers, page.body)
        # -- end of the demo page block
        if not upgrade:
            return _text(connection, HTTPStatus.NOT_FOUND, "not found\n")
        return None

    # -- connections -------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        address = _address(ws)
        if self._draining:
            await ws.close(1001, "relay shutting down")
            return
        if self.connections >= self.config.max_connections:
            self._error("too_many_connections")
            await ws.close(1013, "too many connections")
            return
        # The raw request target, not urlsplit's view of it: urlsplit reads
        # "//evil/x" as a host and a path, and drops tabs and newlines.
        target = ws.request.path if ws.request is not None else "/"
        raw_path, _, raw_query = target.partition("?")
        try:
            if raw_path in ("", "/"):
                await self._serve_sync(ws, address)
            else:
                query = dict(parse_qsl(raw_query, keep_blank_values=True))
                await self._serve_y(ws, address, target, query)
        except Exception:  # a failing connection never takes the server down
            self._error("internal")
            log.exception("connection failed", extra={"fields": {"remote": address}})
            with contextlib.suppress(Exception):
                await ws.close(1011, "internal error")

    async def _serve_sync(self, ws: ServerConnection, address: str) -> None:
        conn = _SyncConn(self, WebSocketConnection(ws), address)
        self._m_conn_total.inc(protocol="crdtsync")
        self._sync_conns[address] = conn
        try:
            await self.peer.serve(conn)
        finally:
            self._sync_conns.pop(address, None)

    def _authorize(self, info: HelloInfo) -> Grant:
        """The Peer's hook for crdtsync handshakes: check the token, grant its rooms."""
        claims = None
        secret = self.config.secret
        if secret is not None:
            token = info.auth.get("token") if isinstance(info.auth, dict) else None
            if not isinstance(token, str):
                self._error("auth")
                raise TokenError("this relay needs an access token")
            try:
                claims = verify_token(secret, token)
            except TokenError:
                self._error("auth")
                raise
        conn = self._sync_conns.get(info.address)
        if conn is not None:
            conn.authenticated = True
        log.info(
            "authenticated",
            extra={
                "fields": {
                    "remote": info.address,
                    "protocol": "crdtsync",
                    "peer_id": info.peer_id,
                    "subject": claims.subject if claims else None,
                }
            },
        )
        return Grant(
            relay=False,
            check=partial(self._check_room, claims),
            read_only=claims is not None and not claims.write,
        )

    def _check_room(self, claims: TokenClaims | None, name: str) -> None:
        try:
            validate_room(name)
        except InvalidRoomError:
            self._error("invalid_room")
            raise
        if claims is not None and not claims.allows(name):
            self._error("room_not_allowed")
            raise RoomNotAllowedError(f"the token does not allow room {name!r}")

    def _on_status(self, status: Status) -> None:
        if status.kind == "error" and status.error is not None:
            kind = "crdtsync_" + type(status.error).__name__
            self._error(kind)
            log.warning(
                "session error",
                extra={
                    "fields": {"remote": status.address, "doc": status.doc, "reason": status.reason}
                },
            )
        elif status.kind in ("connected", "disconnected"):
            log.info(
                status.kind,
                extra={
                    "fields": {
                        "remote": status.address,
                        "protocol": "crdtsync",
                        "peer_id": status.peer_id,
                        "reason": status.reason if status.kind == "disconnected" else None,
                    }
                },
            )

    # -- y-protocols -------------------------------------------------------------------

    async def _serve_y(
        self, ws: ServerConnection, address: str, raw_path: str, query: dict[str, str]
    ) -> None:
        try:
            room = room_from_path(raw_path)
        except InvalidRoomError as exc:
            self._error("invalid_room")
            await ws.close(4400, str(exc)[:120])
            return
        claims: TokenClaims | None = None
        if self.config.secret is not None:
            try:
                token = query.get("token")
                if not token:
                    raise TokenError("this relay needs an access token (?token=...)")
                claims = verify_token(self.config.secret, token)
                if not claims.allows(room):
                    raise RoomNotAllowedError(f"the token does not allow room {room!r}")
            except AuthError as exc:
                self._error("auth")
                code = 4403 if isinstance(exc, RoomNotAllowedError) else 4401
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(y.encode_auth_denied(str(exc)))
                await ws.close(code, str(exc)[:120])
                return
        self._next_y += 1
        yc = _YConn(
            ws,
            room,
            read_only=claims is not None and not claims.write,
            peer_id=-self._next_y,
            address=address,
            bucket=_Bucket(self.config.max_msgs_per_sec, self.config.max_msgs_burst, _now()),
        )
        doc = await self.peer.open(room)
        state = self._rooms[room]
        state.yconns.add(yc)
        state.idle_since = None
        self._yconns.add(yc)
        self._m_conn_total.inc(protocol="y")
        log.info(
            "connected",
            extra={
                "fields": {
                    "remote": address,
                    "protocol": "y",
                    "room": room,
                    "read_only": yc.read_only,
                    "subject": claims.subject if claims else None,
                }
            },
        )
        reason = "closed"
        try:
            # What y-websocket's server sends first: its state vector and the presence.
            self._y_send(yc, y.encode_sync_step1(doc.version))
            awareness = self.peer.presence(room)
            if awareness.states:
                self._y_send(yc, y.encode_awareness(awareness.full_update()))
            reason = await self._y_loop(yc, doc)
        except ConnectionClosed:
            reason = "disconnected"
        finally:
            yc.closed = True
            self._yconns.discard(yc)
            state.yconns.discard(yc)
            self.peer._registry.release(yc)
            if yc.clients:
                self.peer.remove_presence(room, yc.clients, yc)
            log.info(
                "disconnected",
                extra={"fields": {"remote": address, "protocol": "y", "reason": reason}},
            )

    async def _y_loop(self, yc: _YConn, doc: Doc) -> str:
        ws = yc.ws
        max_payload = self.config.max_update
        async for message in ws:
            now = _now()
            yc.t0 = now
            if isinstance(message, str):
                self._error("text_message")
                await ws.close(1003, "binary messages only")
                return "text message"
            self._count_in("y", len(message))
            if not yc.bucket.take(now):
                self._error("rate_limited")
                await ws.close(4529, "message rate limit exceeded")
                return "rate limited"
            # The room's current Doc, not the one it had when the client joined:
            # adopting a peer's incarnation replaces it.
            room = self._rooms.get(yc.room)
            if room is not None:
                doc = room.doc
            try:
                msg = y.decode(message, max_payload=max_payload)
                if isinstance(msg, y.SyncStep1):
                    self._y_send(
                        yc,
                        y.encode_sync_step2(doc.export_yjs_update(since=msg.version)),
                        catch_up=True,
                    )
                elif isinstance(msg, y.SyncStep2 | y.SyncUpdate):
                    self._y_update(yc, doc, msg.update)
                elif isinstance(msg, y.AwarenessMessage):
                    self._y_awareness(yc, msg.data)
                elif isinstance(msg, y.QueryAwareness):
                    self._y_send(yc, y.encode_awareness(self.peer.presence(yc.room).full_update()))
                # AuthDenied from a client means nothing to a server: ignored.
            except FrameTooLargeError as exc:
                self._error("too_big")
                await ws.close(1009, str(exc)[:120])
                return "update too big"
            except (MalformedFrameError, InvalidUpdateError) as exc:
                kind = "invalid_update" if isinstance(exc, InvalidUpdateError) else "malformed"
                self._error(kind)
                await ws.close(1007 if kind == "invalid_update" else 1002, str(exc)[:120])
                return f"{kind}: {exc}"
            except ProtocolError as exc:  # a forged writer, too many presence states
                self._error(type(exc).__name__)
                await ws.close(1008, str(exc)[:120])
                return str(exc)
            except StoreError as exc:
                self._error("store")
                log.error("store failure", extra={"fields": {"room": yc.room, "error": str(exc)}})
                await ws.close(1011, "store failure")
                return "store failure"
        return "closed"

    def _y_update(self, yc: _YConn, doc: Doc, update: bytes) -> None:
        if yc.read_only:
            try:
                harmless = doc.contains(update)
            except InvalidUpdateError:
                harmless = False
            if not harmless:
                self._error("read_only")
                self._y_send(yc, y.encode_auth_denied("read-only access: update refused"))
            return
        # Writer binding, as for crdtsync sessions: new structs under a client id
        # another live connection owns cannot be written from here (known ones,
        # a resync or another tab's forwarded edit, claim nothing).
        parsed = parse_update(update, self._limits)
        fresh = p.new_writes(parsed.state_vector_after(), doc.version)
        bad = self.peer._registry.claim_writes(yc, fresh)
        if bad is not None:
            raise ForbiddenWriterError(f"client id {bad} belongs to another connection")
        self.peer.import_update(yc.room, update, origin=yc)

    def _y_awareness(self, yc: _YConn, data: bytes) -> None:
        entries = decode_awareness(data)
        if not yc.declared and not yc.read_only:
            # A client's first presence message is its own state (y-websocket
            # sends it on connect): its client id is what it writes under. Later
            # messages may echo other clients' states, so only the first counts,
            # and ids another live connection owns are skipped, not refused.
            yc.declared = True
            self.peer._registry.declare(
                yc, [c for c, _clock, state in entries if state is not None], strict=False
            )
        if not presence_fits(yc.clients, entries, self.peer.presence(yc.room)):
            raise LimitExceededError(
                f"more than {MAX_PRESENCE_PER_CONNECTION} presence states from one connection"
            )
        change = self.peer.apply_presence(yc.room, data, yc)
        # Its own states are those it changed; echoes of others' stay theirs.
        yc.clients.update(change.added + change.updated)
        yc.clients.difference_update(change.removed)

    def _y_send(self, yc: _YConn, message: bytes, *, catch_up: bool = False) -> None:
        self._queue([yc], message, catch_up=catch_up)

    def _queue(
        self,
        members: list[_YConn],
        message: bytes,
        t0: float | None = None,
        *,
        catch_up: bool = False,
    ) -> None:
        """Send ``message`` to y-protocols connections once what it may carry is stored.

        Every y-protocols send goes through here, in order: the Peer group-commits
        imported updates, and a sync step 2 or a forwarded update may carry some
        of them, so the outbox is flushed only after ``Peer.commit()``, on the next
        loop iteration (many updates, one fsync).
        """
        self._outbox.append((members, message, t0, catch_up))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        outbox, self._outbox = self._outbox, []
        try:
            self.peer.commit()
        except StoreError as exc:
            # Not stored: not sent. Those clients resend what we lack when they reconnect.
            self._error("store")
            log.error("store failure", extra={"fields": {"error": str(exc)}})
            for members, _, _, _ in outbox:
                for yc in members:
                    self._drop(yc)
            return
        now = _now()
        for members, message, t0, catch_up in outbox:
            live = [yc for yc in members if not yc.closed]
            if live:
                size = _fanout([yc.ws for yc in live], message)
                self._count_out("y", len(message), len(live))
                for yc in live:
                    if catch_up:
                        yc.catch_up_start = yc.sent
                    yc.sent += size
                    if catch_up:
                        yc.catch_up_end = yc.sent
                    self._check_queue(yc)
            if t0 is not None:
                self._m_latency.observe(now - t0)

    def _drop(self, yc: _YConn) -> None:
        if not yc.closed:
            yc.closed = True
            transport = yc.ws.transport
            if transport is not None:
                transport.abort()

    def _check_queue(self, yc: _YConn) -> None:
        queued = _buffered(yc.ws)
        # What is left of its latest sync step 2 does not count: one answer,
        # however large, is not a reader falling behind. The buffer holds the
        # last ``queued`` bytes sent; the exempt part is its overlap with that answer.
        catch_up_left = max(0, yc.catch_up_end - max(yc.catch_up_start, yc.sent - queued))
        if queued - catch_up_left > self.config.max_send_queue and not yc.closed:
            # Its close frame would wait behind what it is not reading: drop it.
            self._error("slow_consumer")
            log.warning("slow consumer", extra={"fields": {"remote": yc.address, "queued": queued}})
            self._drop(yc)

    # -- rooms -------------------------------------------------------------------------

    def _on_open(self, name: str, doc: Doc) -> None:
        old = self._rooms.pop(name, None)
        if old is not None:
            old.unsubscribe()
        room = _Room(name, doc)
        room.unsubscribe = doc.observe_updates(partial(self._on_update, room))
        if old is not None:
            room.yconns = old.yconns
        self._rooms[name] = room

    def _on_update(self, room: _Room, update: bytes, origin: Any, local: bool) -> None:
        """A transaction of a room, already stored by the Peer: send it to y-protocols clients."""
        members = [yc for yc in room.yconns if yc is not origin and not yc.closed]
        t0: float | None = None
        if isinstance(origin, _YConn):
            self._m_updates.inc(protocol="y")
            t0 = origin.t0
        else:
            conn = getattr(origin, "conn", None)
            if isinstance(conn, _SyncConn):
                self._m_updates.inc(protocol="crdtsync")
                t0 = conn.t0
        if members or t0 is not None:
            self._queue(members, y.encode_update(update) if members else b"", t0)

    def _on_presence(self, name: str, data: bytes, origin: Any) -> None:
        room = self._rooms.get(name)
        if room is None:
            return
        members = [yc for yc in room.yconns if yc is not origin and not yc.closed]
        if members:
            self._queue(members, y.encode_awareness(data))

    async def _sweep(self) -> None:
        """Unload rooms nobody has used for ``idle_unload`` seconds."""
        period = max(0.05, min(5.0, self.config.idle_unload / 2))
        while True:
            await asyncio.sleep(period)
            now = _now()
            for name in list(self.peer.docs()):
                room = self._rooms.get(name)
                if room is None:
                    continue
                if room.yconns or self.peer.users(name):
                    room.idle_since = None
                elif room.idle_since is None:
                    room.idle_since = now
                elif now - room.idle_since >= self.config.idle_unload:
                    await self._unload(room)

    async def _unload(self, room: _Room) -> None:
        name = room.name
        if room.yconns or self.peer.users(name):
            return

        def in_use() -> bool:
            # A client may have joined while the compaction ran: then the room stays.
            return bool(room.yconns) or self.peer.users(name) > 0

        try:
            unloaded = await self.peer.close_doc(name, compact=True, keep=in_use)
        except StoreError as exc:
            self._error("store")
            log.error("compaction failed", extra={"fields": {"room": name, "error": str(exc)}})
            unloaded = name not in self.peer.docs()
        if not unloaded:
            room.idle_since = None
            return
        room.unsubscribe()
        if self._rooms.get(name) is room:
            del self._rooms[name]
        self._m_unloaded.inc()
        log.debug("room unloaded", extra={"fields": {"room": name}})


def _fanout(connections: list[ServerConnection], message: bytes) -> int:
    """Send one binary message to many connections without waiting.

    Server-to-client frames are not masked and we negotiate no extensions, so
    the frame bytes are the same for every connection: they are built once and
    written to each transport (a third of the cost of websockets' ``broadcast``,
    which frames the message again per connection; measured 1.3 against 4.4 µs
    per connection). A connection that is closing, or in the middle of a
    fragmented ``send`` (never the relay's case), gets ``broadcast``'s treatment.
    Backpressure is the caller's: see ``Relay._check_queue``.

    Returns:
        The size of the frame written to each connection.
    """
    frame = Frame(Opcode.BINARY, message).serialize(mask=False, extensions=[])
    for ws in connections:
        transport = ws.transport
        if (
            ws.protocol.state is WsState.OPEN
            and ws.send_in_progress is None
            and transport is not None
            and not transport.is_closing()
        ):
            transport.write(frame)
        else:
            broadcast([ws], message)
    return len(frame)


def _text(connection: ServerConnection, status: HTTPStatus, body: str) -> Response:
    resp = connection.respond(status, body)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _buffered(ws: ServerConnection) -> int:
    transport = ws.transport
    return int(transport.get_write_buffer_size()) if transport is not None else 0


def _address(ws: ServerConnection) -> str:
    addr = ws.remote_address
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


# -- the command-line entry point -----------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger("crdtsync")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


async def serve(config: RelayConfig) -> None:
    """Run a relay until SIGTERM or SIGINT, then drain and return (``crdtsync relay``).

    Logs JSON lines to stdout; the first ``{"event": "listening", "url": ...}``
    line means it accepts connections.
    """
    _setup_logging(config.log_level)
    relay = Relay(config)
    await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await relay.close()
