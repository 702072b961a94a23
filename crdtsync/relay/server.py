"""The relay: a WebSocket server where peers that are not on one LAN meet.

One process serves two protocols on one port:

* ``ws://host:port`` (path ``/``): the crdtsync sync protocol (many documents per
  connection, acknowledgements, presence), served by the room backend (a
  :class:`~crdtsync.peer.peer.Peer` by default) on a metered
  :class:`~crdtsync.relay.limits.SyncConnection`;
* ``ws://host:port/<room>``: plain y-protocols, so that a stock y-websocket
  ``WebsocketProvider`` (a browser) edits the same document as Python peers
  (:class:`~crdtsync.relay.yconn.YConnection`, a guest in the room).

Both kinds of connection meet in the same document per room, so every update
is validated once, written to the store, and only then sent on (crdtsync
sessions acknowledge it only then). A relay restarted after ``kill -9`` serves
its rooms from the store.

This module is the lifecycle (start, drain), the HTTP endpoints and the routing
of each connection; the rest is in its siblings:

=========================== =====================================================
module                      what it owns
=========================== =====================================================
``relay.backend``           the seam to where rooms live (``RoomBackend``), and
                            the default: a Peer on the relay's store
``relay.rooms``             who is in each room, the outbox (sent after the
                            commit), fan-out, slow consumers, idle unloading
``relay.yconn``             one y-protocols client: the shell of a ``YSession``
``relay.limits``            the crdtsync side's rate and pre-auth limits, and the
                            connection that stops reading while its buffer is full
``relay.metrics``           ``/metrics``; ``relay.logs``: JSON log lines
``relay.tokens``,           access tokens, room names, settings
``relay.names``,
``relay.config``
=========================== =====================================================

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
import signal
import ssl
import sys
from dataclasses import replace
from functools import partial
from http import HTTPStatus
from urllib.parse import parse_qsl

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from crdtsync.errors import (
    AuthError,
    CrdtSyncError,
    DocumentFullError,
    InvalidRoomError,
    LimitExceededError,
    LocalProtocolError,
    NoSuchDocumentError,
    RateLimitError,
    ReadOnlyError,
    RelayFullError,
    RoomNotAllowedError,
    StoreError,
    TokenError,
)
from crdtsync.format.yupdate import UpdateLimits
from crdtsync.peer.peer import Grant, HelloInfo, Peer, Status
from crdtsync.protocol import ysession as ys
from crdtsync.protocol.session import SessionOptions
from crdtsync.relay.admission import FD_SLACK, ConnectionBudget, RoomBudget, raise_open_files
from crdtsync.relay.backend import (
    BackendFactory,
    BackendSettings,
    ClusterHooks,
    RoomBackend,
    peer_backend,
)
from crdtsync.relay.config import RelayConfig
from crdtsync.relay.hooks import AuthRequest, HookRunner, RelayHooks
from crdtsync.relay.limits import (
    ANSWER_RATE,
    PRESENCE_BURST,
    PRESENCE_RATE,
    SYNC_OPEN_BURST,
    Y_ANSWER_BURST,
    ConnectionGate,
    ReadPausingConnection,
    SyncConnection,
    byte_budget,
    now,
)
from crdtsync.relay.logs import log, setup_logging
from crdtsync.relay.metrics import RelayMetrics
from crdtsync.relay.names import room_from_path, validate_room
from crdtsync.relay.rooms import Rooms
from crdtsync.relay.tokens import TokenClaims, check_secret, verify_token
from crdtsync.relay.yconn import YConnection
from crdtsync.store.base import Store
from crdtsync.store.memory import MemoryStore
from crdtsync.transports.websocket import WebSocketConnection

__all__ = ["CLOSE_CODES", "Relay", "serve"]

#: WebSocket close codes the relay sends, and why.
CLOSE_CODES: dict[int, str] = {
    ys.CLOSE_GOING_AWAY: "the relay is shutting down (reconnect later)",
    ys.CLOSE_PROTOCOL_ERROR: "malformed message",
    ys.CLOSE_UNSUPPORTED_DATA: "text message (the protocols are binary)",
    ys.CLOSE_INVALID_DATA: "invalid update",
    ys.CLOSE_POLICY: "policy: forged client id, or too much data before authentication",
    ys.CLOSE_TOO_BIG: "message too big",
    ys.CLOSE_INTERNAL_ERROR: "internal error (store failure)",
    ys.CLOSE_TRY_AGAIN_LATER: "too many connections, or every loaded room in use (try again later)",
    ys.CLOSE_INVALID_ROOM: "invalid room name",
    ys.CLOSE_BAD_TOKEN: "missing, invalid or expired token",
    ys.CLOSE_ROOM_NOT_ALLOWED: "the token does not allow this room",
    ys.CLOSE_NO_SUCH_ROOM: "the room does not exist, and a reader does not create it",
    ys.CLOSE_ROOM_LIMIT: "the relay holds as many rooms as it may",
    # 45xx, not 44xx: y-websocket gives up for good on 4400-4499 and retries 45xx.
    ys.CLOSE_RATE_LIMITED: "message rate limit exceeded (reconnect later)",
}

#: The interpreter's GIL switch interval in a relay process (``serve``): see there.
SWITCH_INTERVAL = 0.0005

# Room refusals logged per crdtsync connection (the metrics count them all).
_MAX_ROOM_REFUSALS_LOGGED = 16

# Seconds a graceful shutdown waits for clients to answer their close frames,
# all together (websockets' own close timeout is 2 s per connection, but run at
# once they overlap); whoever has not answered by then is cut off.
_DRAIN_TIMEOUT = 3.0


class Relay:
    """The relay server (see the module docs).

    Example::

        async with Relay(RelayConfig(port=0, data="relay.db")) as relay:
            print(relay.url)            # ws://127.0.0.1:PORT
            await relay.wait_closed()   # or close() it

    Args:
        config: the settings.
        store: a store to use instead of ``config.data`` (tests).
        backend: makes the backend where rooms live (default:
            :func:`~crdtsync.relay.backend.peer_backend`, a Peer on the store).
        cluster: the node's side of a relay cluster (``crdtsync.relay.cluster.node``):
            where y-protocols rooms are served, readiness, extra metrics.
        hooks: the application's extension points (:mod:`crdtsync.relay.hooks`).
    """

    def __init__(
        self,
        config: RelayConfig,
        *,
        store: Store | None = None,
        backend: BackendFactory | None = None,
        cluster: ClusterHooks | None = None,
        hooks: RelayHooks | None = None,
    ) -> None:
        if config.secret is not None:
            check_secret(config.secret)  # fail at start, not at every connection
        self.config = config
        self._store_arg = store
        self._backend_factory: BackendFactory = backend or peer_backend
        self._cluster = cluster
        self._hooks = hooks
        self._hook_runner: HookRunner | None = None
        self._backend: RoomBackend | None = None
        self._rooms: Rooms | None = None
        self._server: Server | None = None
        self._sync_conns: dict[str, SyncConnection] = {}
        # Room refusals logged per crdtsync connection (one HELLO may name a thousand).
        self._rooms_refused: dict[str, int] = {}
        self._ready = False
        self._draining = False
        self._closed = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._limits = UpdateLimits(max_update_bytes=config.max_update)
        # Every y-protocols connection's session limits. A client granted writes
        # has its updates parsed and its client ids bound (its first presence
        # message declares them); a read-only one writes nothing, so it owns
        # nothing and is not parsed (its updates are refused by the write policy).
        self._y_writer = ys.YSessionOptions(
            max_payload=config.max_update,
            rate=config.max_msgs_per_sec,
            burst=config.max_msgs_burst,
            verify_writers=True,
            declare_presence=True,
            limits=self._limits,
            answer_burst=Y_ANSWER_BURST,
            answer_rate=ANSWER_RATE,
            presence_rate=PRESENCE_RATE,
            presence_burst=PRESENCE_BURST,
        )
        self._y_reader = replace(self._y_writer, verify_writers=False, declare_presence=False)
        self.port = 0
        self.url = ""
        #: The relay's metrics (``/metrics``).
        self.metrics = RelayMetrics(
            self._connection_counts, lambda: self.rooms, self._queues, self._pending
        )
        # Connections not yet authenticated, budgeted from their TCP accept on;
        # and the rooms each client address may create.
        self._gate = ConnectionGate(
            ConnectionBudget(
                config.max_unauth_connections,
                config.max_unauth_per_address,
                config.max_new_conns_per_sec,
                # A room's owner: clients proxied by other nodes were budgeted there.
                exempt=cluster.node_host if cluster is not None else None,
            ),
            self.metrics,
        )
        self._room_budget = RoomBudget(config.max_new_rooms_per_min)

    def _pending(self) -> int:
        return self._gate.budget.pending

    def _connection_counts(self) -> tuple[int, int]:
        return len(self._sync_conns), self._rooms.count if self._rooms is not None else 0

    def _queues(self) -> list[int]:
        depths = self._rooms.queue_depths() if self._rooms is not None else []
        if self._backend is not None:  # frames still in sessions count too, not only sockets
            depths += self._backend.send_queues()
        return depths

    @property
    def rooms(self) -> int:
        """How many rooms are loaded in memory."""
        return len(self._backend.docs()) if self._backend is not None else 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Relay:
        """Open the store and start listening.

        Raises:
            StoreError: the store cannot be opened.
            OSError: the port cannot be bound, or the TLS files cannot be loaded.
        """
        cfg = self.config
        store: Store | str
        if self._store_arg is not None:
            store = self._store_arg
        elif cfg.data is None:
            store = MemoryStore()
        else:
            store = cfg.data
        options = SessionOptions(
            max_frame=cfg.max_frame,
            limits=self._limits,
            handshake_timeout=cfg.handshake_timeout,
            max_docs=cfg.max_docs_per_conn,
            open_burst=max(SYNC_OPEN_BURST, 2 * cfg.max_docs_per_conn),
            open_rate=ANSWER_RATE,
            presence_rate=PRESENCE_RATE,
            presence_burst=PRESENCE_BURST,
        )
        backend = await self._backend_factory(
            BackendSettings(
                store=store,
                authorize=self._authorize,
                options=options,
                compact_every=cfg.compact_every,
                max_send_queue=cfg.max_send_queue,
                max_room_bytes=cfg.max_room_bytes,
                max_rooms=cfg.max_rooms,
                # Decompressed: a small compressed frame may carry a whole update.
                import_rate=cfg.max_bytes_per_sec,
            )
        )
        self._backend = backend
        self._rooms = rooms = Rooms(backend, cfg, self.metrics)
        self.metrics.registry.gauge(
            "crdtsync_relay_loaded_bytes",
            "What the rooms loaded in memory cost (their sizes and cached answers).",
            lambda: [({}, float(rooms.loaded_bytes()))],
        )
        backend.on_status(self._on_status)
        if self._hooks is not None:
            runner = HookRunner(self._hooks, backend.commit, lambda _: self.metrics.error("hook"))
            self._hook_runner = runner
            backend.watch(runner)
            loaded = self._hooks.loaded
            backend.on_open(lambda name, _doc: runner.call("loaded", loaded, name))
        self._raise_open_files()
        tls: ssl.SSLContext | None = None
        try:
            if cfg.tls_cert and cfg.tls_key:
                tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
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
                create_connection=ReadPausingConnection.with_limit(cfg.max_send_queue, self._gate),
                # The TLS and HTTP handshakes of a connection that is not yet
                # authenticated (its slot is budgeted: max_unauth_connections).
                open_timeout=cfg.handshake_timeout,
                # asyncio's default backlog (100) makes a storm of joins wait 1 s for
                # a SYN retry (measured: 200 clients at once, 0.8-1.2 s against 0.6 s).
                backlog=1024,
            )
        except OSError:
            self._rooms.close()
            await backend.close()
            raise
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
        self.url = f"{'wss' if tls else 'ws'}://{host}:{self.port}"
        self._sweeper = asyncio.get_running_loop().create_task(self._rooms.sweep())
        self._sweeper.add_done_callback(self._sweeper_done)
        self._ready = True
        auth = "token" if cfg.secret is not None else "none"
        log.info("listening", extra={"fields": {"url": self.url, "data": cfg.data, "auth": auth}})
        return self

    def _raise_open_files(self) -> None:
        """One descriptor per connection: make sure the process may open that many."""
        cfg = self.config
        need = cfg.max_connections + cfg.max_unauth_connections + FD_SLACK
        soft, hard = raise_open_files(need)
        if soft < need:
            log.warning(
                "open files limited",
                extra={
                    "fields": {
                        "limit": soft,
                        "hard_limit": hard,
                        "needed": need,
                        "reason": "the connection limits need more descriptors than the "
                        "process may open: connections beyond it fail to be accepted "
                        "(raise the hard RLIMIT_NOFILE, or lower --max-connections)",
                    }
                },
            )

    def _sweeper_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Idle rooms are no longer unloaded: say so loudly, the relay still serves.
            self.metrics.error("internal")
            log.error("the idle-room sweeper failed", exc_info=exc)

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
        rooms = self._rooms
        yconns = rooms.connections() if rooms is not None else []
        if rooms is not None:
            await rooms.drain()  # what was stored goes out before the close frames
        # Every connection at once, under one deadline: one after another, each
        # client that never answers the close would cost the close timeout.
        y_closing = asyncio.ensure_future(
            asyncio.wait_for(
                asyncio.gather(
                    *(yc.ws.close(ys.CLOSE_GOING_AWAY, "relay shutting down") for yc in yconns),
                    return_exceptions=True,
                ),
                _DRAIN_TIMEOUT,
            )
        )
        if self._backend is not None:
            # Sends GOING_AWAY on every session (SyncConnection.close then closes with
            # 1001), under its own deadline, and closes the store: never cut short.
            await self._backend.close()
        try:
            await y_closing
        except TimeoutError:
            for yc in yconns:
                yc.drop()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            except TimeoutError:
                log.warning("the server did not finish closing in 5 s")
        if rooms is not None:
            rooms.close()
        if self._hook_runner is not None:
            self._hook_runner.flush()
        log.info("stopped", extra={"fields": {}})
        self._closed.set()

    async def wait_closed(self) -> None:
        """Return once the relay has stopped."""
        await self._closed.wait()

    async def drop_rooms(self, rooms: set[str] | None, reason: str) -> None:
        """Close the connections of ``rooms`` (None: all) so their clients reconnect.

        A cluster node calls it when it lost rooms: y-protocols clients of those
        rooms are closed with 1013 (try again later); crdtsync sessions may carry
        any room, so every one is closed (their peers reconnect and resend what
        was not acknowledged).
        """
        closing: list[asyncio.Future[object]] = []
        if self._rooms is not None:
            for yc in self._rooms.connections():
                if rooms is None or yc.room in rooms:
                    closing.append(
                        asyncio.ensure_future(yc.ws.close(ys.CLOSE_TRY_AGAIN_LATER, reason))
                    )
        for conn in list(self._sync_conns.values()):
            closing.append(asyncio.ensure_future(conn.close()))
        if closing:
            fields = {"count": len(closing), "reason": reason}
            log.info("dropping connections", extra={"fields": fields})
            _, pending = await asyncio.wait(closing, timeout=_DRAIN_TIMEOUT)
            for fut in pending:
                fut.cancel()

    @property
    def connections(self) -> int:
        """Open connections (both protocols)."""
        sync, y = self._connection_counts()
        return sync + y

    @property
    def backend(self) -> RoomBackend:
        """Where the rooms live.

        Raises:
            LocalProtocolError: the relay is not started.
        """
        if self._backend is None:
            raise LocalProtocolError("the relay is not started")
        return self._backend

    @property
    def peer(self) -> Peer:
        """The Peer holding the rooms, with the default backend (for tests and embedding).

        Raises:
            LocalProtocolError: the relay is not started, or its backend is not a Peer.
        """
        backend = self.backend
        if not isinstance(backend, Peer):
            raise LocalProtocolError(f"the relay's backend is a {type(backend).__name__}")
        return backend

    # -- HTTP --------------------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/healthz":
            return _text(connection, HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            cluster_ready = self._cluster is None or self._cluster.ready()
            if self._ready and not self._draining and cluster_ready:
                return _text(connection, HTTPStatus.OK, "ready\n")
            return _text(connection, HTTPStatus.SERVICE_UNAVAILABLE, "not ready\n")
        if path == "/metrics":
            text = self.metrics.render()
            if self._cluster is not None:
                text += self._cluster.metrics()
            resp = _text(connection, HTTPStatus.OK, text)
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
            await ws.close(ys.CLOSE_GOING_AWAY, "relay shutting down")
            return
        # Connections still authenticating have their own budget (the gate).
        if self._gate.budget.authenticated_count >= self.config.max_connections:
            self.metrics.error("too_many_connections")
            await ws.close(ys.CLOSE_TRY_AGAIN_LATER, "too many connections")
            return
        # The raw request target, not urlsplit's view of it: urlsplit reads
        # "//evil/x" as a host and a path, and drops tabs and newlines.
        target = ws.request.path if ws.request is not None else "/"
        raw_path, _, raw_query = target.partition("?")
        if self._gate.exempted(ws):
            client = self._forwarded_client(ws, raw_path)
            if client is not None:
                # Proxied by a node of the cluster, signed: the client is who it serves.
                self._gate.forwarded(ws)
                address = client
            elif not self._gate.charge(ws, address):
                # From a node's host but not proxied: its own address's budget, as anyone's.
                log.info(
                    "refused",
                    extra={"fields": {"remote": address, "reason": "too many connections"}},
                )
                await ws.close(ys.CLOSE_TRY_AGAIN_LATER, "too many connections from this address")
                return
        try:
            if raw_path in ("", "/"):
                await self._serve_sync(ws, address)
            else:
                query = dict(parse_qsl(raw_query, keep_blank_values=True))
                await self._serve_y(ws, address, target, query)
        except Exception:  # a failing connection never takes the server down: logged, counted
            self.metrics.error("internal")
            log.exception("connection failed", extra={"fields": {"remote": address}})
            await ws.close(ys.CLOSE_INTERNAL_ERROR, "internal error")

    def _forwarded_client(self, ws: ServerConnection, raw_path: str) -> str | None:
        """The client a cluster node proxied on ``ws`` (a valid signed hop header), or None."""
        if self._cluster is None or ws.request is None or raw_path in ("", "/"):
            return None  # (crdtsync sessions are never proxied)
        try:
            room = room_from_path(raw_path)
        except InvalidRoomError:
            return None
        return self._cluster.forwarded_client(ws.request.headers, room)

    async def _serve_sync(self, ws: ServerConnection, address: str) -> None:
        conn = SyncConnection(
            WebSocketConnection(ws),
            address,
            self.config,
            self.metrics,
            lambda: self._draining,
            on_authenticate=lambda: self._gate.authenticated(ws),
            wait_closed=ws.wait_closed,
        )
        self.metrics.connections_total.inc(protocol="crdtsync")
        self._sync_conns[address] = conn
        try:
            await self.backend.serve(conn)
        finally:
            self._sync_conns.pop(address, None)
            self._rooms_refused.pop(address, None)

    def _authorize(self, info: HelloInfo) -> Grant:
        """The backend's hook for crdtsync handshakes: check the token, grant its rooms."""
        claims = None
        secret = self.config.secret
        if secret is not None:
            token = info.auth.get("token") if isinstance(info.auth, dict) else None
            try:
                if not isinstance(token, str):
                    raise TokenError("this relay needs an access token")
                claims = verify_token(secret, token)
            except TokenError as exc:
                self.metrics.error("auth")
                _log_refusal(exc, info.address, "crdtsync", rooms=info.docs)
                raise
        self._authenticate_hook(
            AuthRequest(
                "crdtsync",
                info.address,
                tuple(info.docs),
                claims.subject if claims else None,
                claims is not None and not claims.write,
                info.auth,
            ),
            rooms=info.docs,
        )
        conn = self._sync_conns.get(info.address)
        if conn is not None:
            conn.authenticate()
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
            check=partial(self._check_room, claims, info.address),
            read_only=claims is not None and not claims.write,
            max_refused_updates=self.config.max_refused_updates,
            creating=partial(self._creating, info.address),
        )

    def _authenticate_hook(self, request: AuthRequest, rooms: tuple[str, ...] = ()) -> None:
        """Ask the ``authenticate`` hook; refuse (AuthError) unless it says yes.

        Fails closed: a hook that raises refuses the connection (logged, counted).
        """
        hook = self._hooks.authenticate if self._hooks is not None else None
        if hook is None or self._hook_runner is None:
            return
        # An exception is logged and counted by the runner, and reads as a refusal.
        if self._hook_runner.call("authenticate", hook, request) is True:
            return
        refusal = AuthError("refused by the relay's authenticate hook")
        if request.protocol == "crdtsync":  # (the y-protocols side counts and logs its own)
            self.metrics.error("auth")
            _log_refusal(refusal, request.address, request.protocol, rooms=rooms)
        raise refusal

    def _creating(self, address: str, name: str) -> None:
        """A client is about to create room ``name``: the address's budget of new rooms."""
        try:
            self._room_budget.create(address, now=now())
        except RateLimitError:
            self.metrics.error("room_rate")
            log.warning("room creation refused", extra={"fields": {"remote": address}})
            raise

    def _check_room(self, claims: TokenClaims | None, address: str, name: str) -> None:
        try:
            validate_room(name)
        except InvalidRoomError as exc:
            self.metrics.error("invalid_room")
            self._log_room_refusal(exc, address, name, None)
            raise
        if claims is not None and not claims.allows(name):
            self.metrics.error("room_not_allowed")
            refusal = RoomNotAllowedError(f"the token does not allow room {name!r}")
            self._log_room_refusal(refusal, address, name, claims.subject)
            raise refusal
        if self._rooms is not None:
            # max_loaded_bytes: idle rooms are unloaded meanwhile (the room may
            # load before they are gone: one room over, at most).
            try:
                self._rooms.shed(name)
            except RelayFullError as exc:
                self._log_room_refusal(exc, address, name, None)
                raise

    def _log_room_refusal(
        self, error: CrdtSyncError, address: str, room: str, subject: str | None
    ) -> None:
        """Log a room refused on a crdtsync session: the first ones of each connection."""
        count = self._rooms_refused.get(address, 0) + 1
        self._rooms_refused[address] = count
        if count <= _MAX_ROOM_REFUSALS_LOGGED:
            _log_refusal(error, address, "crdtsync", room=room, subject=subject)
            if count == _MAX_ROOM_REFUSALS_LOGGED:
                fields = {"remote": address, "protocol": "crdtsync", "logged": count}
                log.warning(
                    "further room refusals of this connection are not logged",
                    extra={"fields": fields},
                )

    def _on_status(self, status: Status) -> None:
        err = status.error
        if status.kind == "error" and err is not None:
            kind = "crdtsync_" + type(err).__name__
            if isinstance(err, StoreError):
                kind = "store"  # a room the store could not give, on one channel
            elif isinstance(err, DocumentFullError):
                kind = "room_full"
            self.metrics.error(kind)
            if isinstance(err, AuthError | InvalidRoomError) and not err.from_peer:
                return  # a refusal of ours, logged where it was decided (_authorize, _check_room)
            if isinstance(err, ReadOnlyError) and not err.from_peer:
                self._log_room_refusal(err, status.address or "", status.doc or "", None)
                return
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
        claims: TokenClaims | None = None
        room: str | None = None
        try:
            room = room_from_path(raw_path)
            if self.config.secret is not None:
                token = query.get("token")
                if not token:
                    raise TokenError("this relay needs an access token (?token=...)")
                claims = verify_token(self.config.secret, token)
                if not claims.allows(room):
                    raise RoomNotAllowedError(f"the token does not allow room {room!r}")
            params = {k: v for k, v in query.items() if k != "token"}
            subject = claims.subject if claims else None
            read_only = claims is not None and not claims.write
            request = AuthRequest("y", address, (room,), subject, read_only, params)
            self._authenticate_hook(request)
        except (AuthError, InvalidRoomError) as exc:
            self.metrics.error("invalid_room" if isinstance(exc, InvalidRoomError) else "auth")
            # A bad name is logged as its path, without the query (which holds the token).
            asked = room if room is not None else raw_path.partition("?")[0]
            _log_refusal(exc, address, "y", room=asked, subject=claims.subject if claims else None)
            await _refuse(ws, exc)
            return
        # Authenticated: out of the budget of connections still proving themselves
        # (a proxied one too: the owner checks its token again).
        self._gate.authenticated(ws)
        if self._cluster is not None and await self._cluster.route_y(ws, room, raw_path, address):
            return  # served by the room's owner, through this node
        read_only = claims is not None and not claims.write
        backend, rooms = self.backend, self._rooms
        assert rooms is not None  # started
        grant = Grant(
            read_only=read_only,
            max_refused_updates=self.config.max_refused_updates,
            creating=partial(self._creating, address),
        )
        try:
            await rooms.make_room(room)  # max_loaded_bytes: idle rooms unloaded first
            guest = await backend.join(room, grant=grant, address=address)
        except (LimitExceededError, NoSuchDocumentError, StoreError) as exc:
            await self._refuse_room(ws, address, room, exc)
            return
        options = self._y_reader if read_only else self._y_writer
        session = ys.YSession.server(now=now(), options=options, registry=backend.writers)
        yc = YConnection(
            ws,
            address=address,
            room=room,
            session=session,
            guest=guest,
            rooms=rooms,
            metrics=self.metrics,
            bytes_budget=byte_budget(self.config),
        )
        rooms.add(yc)
        self.metrics.connections_total.inc(protocol="y")
        log.info(
            "connected",
            extra={
                "fields": {
                    "remote": address,
                    "protocol": "y",
                    "room": room,
                    "read_only": read_only,
                    "subject": claims.subject if claims else None,
                }
            },
        )
        reason = "closed"
        try:
            yc.start()
            reason = await yc.run()
        except ConnectionClosed:
            reason = "disconnected"
        finally:
            session.receive_eof()  # releases its client ids
            rooms.remove(yc)
            guest.leave()
            log.info(
                "disconnected",
                extra={"fields": {"remote": address, "protocol": "y", "reason": reason}},
            )

    async def _refuse_room(
        self,
        ws: ServerConnection,
        address: str,
        room: str,
        error: LimitExceededError | NoSuchDocumentError | StoreError,
    ) -> None:
        """Refuse a y-protocols client the backend would not give the room (nothing sent)."""
        if isinstance(error, StoreError):
            # One broken room: its clients are refused, the relay serves the others.
            self.metrics.error("store")
            log.error("room unavailable", extra={"fields": {"room": room, "error": str(error)}})
            code, reason = ys.CLOSE_INTERNAL_ERROR, "the room cannot be loaded"
        elif isinstance(error, NoSuchDocumentError):
            self.metrics.error("no_such_room")
            code, reason = ys.CLOSE_NO_SUCH_ROOM, "no such room"
        elif isinstance(error, RelayFullError):
            # Counted by Rooms.shed; 1013: clients retry later.
            code, reason = ys.CLOSE_TRY_AGAIN_LATER, "every loaded room is in use: try again later"
        elif isinstance(error, RateLimitError):
            # Counted by _creating; 45xx: y-websocket retries later.
            code, reason = ys.CLOSE_RATE_LIMITED, "too many new rooms: try again later"
        else:
            self.metrics.error("room_limit")
            code, reason = ys.CLOSE_ROOM_LIMIT, "the relay holds as many rooms as it may"
        log.info(
            "refused",
            extra={"fields": {"remote": address, "protocol": "y", "room": room, "reason": reason}},
        )
        await ws.close(code, reason)


def _log_refusal(
    error: CrdtSyncError,
    remote: str,
    protocol: str,
    *,
    room: str | None = None,
    rooms: tuple[str, ...] = (),
    subject: str | None = None,
) -> None:
    """Log one refusal, on either protocol: who, which room, why (never the token).

    Room names come from the client: the JSON lines escape them, and they are cut
    short (a HELLO may name thousands).
    """
    fields: dict[str, object] = {
        "remote": remote,
        "protocol": protocol,
        "room": None if room is None else room[:200],
        "rooms": [name[:200] for name in rooms[:16]] or None,
        "error": type(error).__name__,
        "reason": str(error)[:300],
        "subject": subject,
    }
    log.warning("refused", extra={"fields": fields})


async def _refuse(ws: ServerConnection, error: AuthError | InvalidRoomError) -> None:
    """Refuse a y-protocols client before anything of the room is sent (4400, 4401, 4403)."""
    session = ys.YSession.server()
    session.deny(error)
    try:
        for message in session.data_to_send():  # "permission denied", for a bad token
            await ws.send(message)
    except ConnectionClosed:
        pass  # it left already; the close below is a no-op then
    await ws.close(session.close_code or ys.CLOSE_BAD_TOKEN, session.close_reason or "")


def _text(connection: ServerConnection, status: HTTPStatus, body: str) -> Response:
    resp = connection.respond(status, body)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _address(ws: ServerConnection) -> str:
    addr = ws.remote_address
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


# -- the command-line entry point -----------------------------------------------------------


async def serve(config: RelayConfig) -> None:
    """Run a relay until SIGTERM or SIGINT, then drain and return (``crdtsync relay``).

    Logs JSON lines to stdout; the first ``{"event": "listening", "url": ...}``
    line means it accepts connections.
    """
    setup_logging(config.log_level)
    # Commits run on the store's worker thread. When the event loop is busy (a
    # writer's large updates being parsed, say), that thread waits for the GIL
    # at each step of a commit (queue, SQLite calls, the fsync's return, the
    # loop's wakeup) up to the switch interval each: 5 ms by default, which
    # made another room's p99 round trip 10x (scripts/relay_budgets.py, "full").
    # The relay owns this process: it asks the interpreter to hand the GIL
    # over sooner (a cost only while another thread is waiting for it).
    sys.setswitchinterval(SWITCH_INTERVAL)
    if config.store is not None:
        # A node of a relay cluster on PostgreSQL (needs the crdtsync[postgres] extra).
        from crdtsync.relay.cluster.node import ClusterNode

        relay = ClusterNode(config).relay
    else:
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
