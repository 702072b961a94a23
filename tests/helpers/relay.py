"""Helpers of the relay tests: raw y-protocols and crdtsync clients, HTTP, metrics, waiting.

Everything here talks to a real relay over real sockets on 127.0.0.1. The raw
clients are deliberately dumb: they send exactly what a test tells them to and
record exactly what they receive, so that a test can say "nothing of the
document arrived before the close" or "the connection was closed with 4401".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import re
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crdtsync import Doc, InvalidRoomError, InvalidUpdateError, Peer, ProtocolError
from crdtsync.format.yupdate import UpdateLimits, parse_update
from crdtsync.net import Ability
from crdtsync.peer.peer import Backoff
from crdtsync.protocol import messages as m
from crdtsync.protocol import session as p
from crdtsync.protocol import yprotocol as y
from crdtsync.protocol.awareness import Awareness, decode_awareness
from crdtsync.protocol.session import SessionOptions
from crdtsync.relay import Relay, RelayConfig, validate_room
from crdtsync.transports.websocket import WebSocketTransport

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"

#: Reconnect quickly: tests wait for reconnections.
QUICK = Backoff(initial=0.05, factor=2.0, cap=0.4, jitter=0.2)
#: A client that never pings on its own (keeps message counters exact).
NO_PINGS = SessionOptions(ping_interval=3600.0, idle_timeout=7200.0)
#: How long any single wait in these tests may take before it is a failure.
WAIT = 10.0


# -- waiting ---------------------------------------------------------------------------------


# -- relays and peers ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_relay(tmp_path: Path, **options: Any) -> AsyncIterator[Relay]:
    """An in-process relay on 127.0.0.1, any free port, SQLite file in ``tmp_path``."""
    options.setdefault("port", 0)
    options.setdefault("host", "127.0.0.1")
    options.setdefault("data", str(tmp_path / "r.db"))
    hooks = options.pop("hooks", None)
    relay = Relay(RelayConfig(**options), hooks=hooks)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


def ws_peer(**kw: Any) -> Peer:
    """A Peer on the WebSocket transport that reconnects quickly."""
    ssl_ctx = kw.pop("ssl", None)
    kw.setdefault("backoff", QUICK)
    return Peer(transport=WebSocketTransport(ssl=ssl_ctx, ping_interval=None), **kw)


async def room_state(relay: Relay, room: str) -> dict[str, Any]:
    """The relay's copy of ``room``, as plain Python values."""
    return (await relay.peer.open(room)).to_py()


# -- HTTP and metrics ------------------------------------------------------------------------


def http_url(relay: Relay, path: str) -> str:
    return relay.url.replace("ws", "http", 1) + path  # wss:// -> https://


def http_get_sync(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), exc.read().decode()
        finally:
            exc.close()


async def http_get(
    relay: Relay, path: str, context: ssl.SSLContext | None = None
) -> tuple[int, str]:
    """GET ``path`` from the relay in a thread (the relay runs on this loop)."""
    return await asyncio.to_thread(http_get_sync, http_url(relay, path), context)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """A parsed Prometheus text exposition."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float:
        """One sample's value (0 when the series does not exist yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def parse_metrics(text: str) -> Metrics:
    out = Metrics()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            out.types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a Prometheus sample line: {line!r}"
        name, labels, value = match.groups()
        pairs = frozenset(_LABEL.findall(labels or ""))
        out.samples[(name, pairs)] = float(value)
    return out


async def scrape(relay: Relay, context: ssl.SSLContext | None = None) -> Metrics:
    status, body = await http_get(relay, "/metrics", context)
    assert status == 200, (status, body)
    return parse_metrics(body)


async def errors(relay: Relay, kind: str) -> float:
    return (await scrape(relay)).get("crdtsync_relay_errors_total", kind=kind)


# -- a raw y-protocols client ----------------------------------------------------------------


class YClient:
    """A y-protocols client that does only what it is told, and records what it receives.

    ``doc`` follows the room as far as the messages read so far tell it.
    """

    def __init__(self, ws: ClientConnection, client_id: int | None = None) -> None:
        self.ws = ws
        self.doc = Doc(peer_id=client_id or random.randrange(1, 2**31))
        self.awareness = Awareness(self.doc.peer_id)
        self.received: list[y.YMessage] = []
        self.synced = False
        self._follower: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        room: str,
        *,
        token: str | None = None,
        client_id: int | None = None,
        **kw: Any,
    ) -> YClient:
        target = f"{url}/{room}" + (f"?token={token}" if token is not None else "")
        kw.setdefault("max_size", None)  # like y-websocket: a whole-room step 2 is one message
        kw.setdefault("compression", None)
        kw.setdefault("ping_interval", None)
        kw.setdefault("proxy", None)
        return cls(await connect(target, **kw), client_id)

    async def recv(self, timeout: float = WAIT) -> y.YMessage:
        """The next message, decoded and handled (raises ConnectionClosed at the end)."""
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, bytes), f"the relay sent a text message: {data!r}"
        msg = y.decode(data)
        self.received.append(msg)
        await self.handle(msg)
        return msg

    async def handle(self, msg: y.YMessage) -> None:
        if isinstance(msg, y.SyncStep1):
            await self.ws.send(y.encode_sync_step2(self.doc.export_yjs_update(since=msg.version)))
        elif isinstance(msg, y.SyncStep2 | y.SyncUpdate):
            self.doc.import_yjs_update(msg.update, origin="remote")
            if isinstance(msg, y.SyncStep2):
                self.synced = True
        elif isinstance(msg, y.AwarenessMessage):
            self.awareness.apply_update(msg.data, now=asyncio.get_running_loop().time())

    async def sync(self, timeout: float = WAIT) -> None:
        """Send our state vector and read until the answer (sync step 2) is in."""
        self.synced = False
        await self.ws.send(y.encode_sync_step1(self.doc.version))
        await self.pump_until(lambda: self.synced, timeout)

    async def pump_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Read and handle messages until ``predicate`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {predicate}")
            with contextlib.suppress(TimeoutError):
                await self.recv(min(remaining, 0.2))

    async def edit(self, change: Callable[[Doc], None]) -> bytes:
        """Make a local change and send its update; returns the update."""
        before = self.doc.version
        change(self.doc)
        update = self.doc.export_yjs_update(since=before)
        await self.ws.send(y.encode_update(update))
        return update

    async def set_presence(self, state: Any) -> None:
        now = asyncio.get_running_loop().time()
        await self.ws.send(y.encode_awareness(self.awareness.set_local_state(state, now=now)))

    def follow(self) -> None:
        """Read and handle every message in a background task (until ``unfollow``)."""

        async def run() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.recv(timeout=3600)

        self._follower = asyncio.get_running_loop().create_task(run())

    async def unfollow(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None

    def text(self, name: str = "body") -> str:
        return str(self.doc.text(name))

    async def closed(self, timeout: float = WAIT) -> tuple[int | None, str, list[y.YMessage]]:
        """Read until the relay closes; returns (close code, reason, messages received).

        Messages that do not decode are recorded as their raw bytes' failure, not
        hidden: the caller checks ``received``.
        """
        received: list[y.YMessage] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    data = await self.ws.recv()
                    assert isinstance(data, bytes), f"the relay sent a text message: {data!r}"
                    received.append(y.decode(data))
        except ConnectionClosed as exc:
            frame = exc.rcvd
            return (frame.code if frame else None), (frame.reason if frame else ""), received
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self.ws.close()


async def y_refusal(
    url: str, path: str, timeout: float = WAIT
) -> tuple[int | None, str, list[y.YMessage]]:
    """Connect to ``url + path`` and return how the relay closed it (and what came first)."""
    async with connect(url + path, compression=None, proxy=None, ping_interval=None) as ws:
        client = YClient(ws)
        return await client.closed(timeout)


# -- a raw crdtsync client -------------------------------------------------------------------


class RawSync:
    """The crdtsync protocol driven by hand: a sans-I/O Session over a raw WebSocket.

    Tests use it to see every message the relay sends and to send frames that a
    well-behaved Peer never would.
    """

    def __init__(self, ws: ClientConnection, session: p.Session, docs: dict[str, Doc]) -> None:
        self.ws = ws
        self.session = session
        # What it answers catch-ups from and imports updates into (like a Peer would).
        self.docs = docs
        # Frames sent so far: the index the next frame's check value must use.
        self.frames_sent = 0
        self.events: list[p.Event] = []
        self.messages: list[m.Message] = []
        self._reader = m.FrameReader(max_frame=1 << 24)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        peer_id: int | None = None,
        docs: list[tuple[str, Doc]] = (),  # type: ignore[assignment]
        token: str | None = None,
        **kw: Any,
    ) -> RawSync:
        kw.setdefault("compression", None)
        kw.setdefault("ping_interval", None)
        kw.setdefault("proxy", None)
        ws = await connect(url, **kw)
        pid = peer_id or random.randrange(1, 2**31)
        session = p.Session.client(
            pid,
            docs=[(name, b"", doc.version) for name, doc in docs],
            auth=None if token is None else {"token": token},
            writers=[pid],
            options=NO_PINGS,
        )
        self = cls(ws, session, dict(docs))
        await self.flush()
        return self

    async def flush(self) -> None:
        for frame in self.session.data_to_send():
            self.frames_sent += 1
            await self.ws.send(frame)

    def _handle(self, ev: p.Event) -> None:
        s = self.session
        if isinstance(ev, p.CatchUpNeeded) and ev.name in self.docs:
            s.send_catch_up(ev.name, self.docs[ev.name].export_yjs_update(since=ev.since))
        elif isinstance(ev, p.UpdateReceived) and ev.name in self.docs:
            self.docs[ev.name].import_yjs_update(ev.update)
            s.ack(ev.name, ev.seq)

    async def step(self, timeout: float = WAIT) -> list[p.Event]:
        """Receive one WebSocket message, feed it to the session, send what it queued."""
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, bytes)
        self._reader.feed(data)
        while (body := self._reader.next_body()) is not None:
            self.messages.append(m.decode_message(body))
        self.session.receive_data(data)
        events = self.session.events_received()
        for ev in events:
            self._handle(ev)
        self.events.extend(events)
        await self.flush()
        return events

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {predicate}")
            await self.step(remaining)

    async def closed(self, timeout: float = WAIT) -> int | None:
        """Read (recording messages) until the relay closes; returns the close code."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.step(timeout)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self.ws.close()


# -- a relay on its own thread (for hypothesis, whose examples are synchronous) --------------------


class RelayThread:
    """A relay running on an event loop in a background thread.

    The test thread talks to it over real sockets (``websockets.sync``, urllib) and
    looks at its state with :meth:`call`, which runs a coroutine on the relay's
    loop between two of its steps, so what it sees is consistent.
    """

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._relay: Relay | None = None

    @property
    def relay(self) -> Relay:
        assert self._relay is not None
        return self._relay

    def call(self, coro: Awaitable[T], timeout: float = WAIT) -> T:
        return asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop).result(timeout)

    def __enter__(self) -> RelayThread:
        self.thread.start()
        self._relay = self.call(Relay(self.config).start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._relay is not None:
                self.call(self._relay.close(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


T = TypeVar("T")


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


def doc_state(doc: Doc) -> tuple[dict[str, Any], bytes, int]:
    """What must agree between the relay's copy of a room and a model of it."""
    return doc.to_py(), doc.version.to_bytes(), doc.pending


# -- models of what the relay does with a connection's input ---------------------------------------


class _Owner:
    """A stand-in for another live connection in a model's writer registry."""

    def __init__(self, peer_id: int) -> None:
        self.peer_id = peer_id
        self.closed = False


def model_registry(foreign: dict[int, int]) -> p.WriterRegistry:
    """A writer registry in which ``client id -> peer id`` are owned by other connections."""
    registry = p.WriterRegistry()
    for client, peer_id in foreign.items():
        assert registry.declare(_Owner(peer_id), [client]) is None
    return registry


def y_model(
    mirror: Doc, messages: list[bytes], limits: UpdateLimits, foreign: set[int]
) -> list[bytes]:
    """Apply to ``mirror`` what the relay applies of these y-protocols messages.

    The relay handles messages in order and closes the connection at the first
    one it refuses; returns the updates applied.
    """
    applied: list[bytes] = []
    for data in messages:
        try:
            msg = y.decode(data, max_payload=limits.max_update_bytes)
        except ProtocolError:
            break
        if isinstance(msg, y.SyncStep2 | y.SyncUpdate):
            try:
                writes = parse_update(msg.update, limits).state_vector_after()
                if set(p.new_writes(writes, mirror.version)) & foreign:
                    break
                mirror.import_yjs_update(msg.update)
            except InvalidUpdateError:
                break
            applied.append(msg.update)
        elif isinstance(msg, y.AwarenessMessage):
            try:
                decode_awareness(msg.data)
            except ProtocolError:
                break
    return applied


class ServerModel:
    """The server side of one crdtsync connection, as the relay's Peer drives it.

    The same sans-I/O session the relay runs, fed the same bytes, with the
    Peer's reactions (accept, room check, open, catch-up, import then ack):
    what it imports into ``docs`` is what the relay must have imported.
    """

    def __init__(
        self, docs: dict[str, Doc], options: SessionOptions, registry: p.WriterRegistry
    ) -> None:
        self.docs = docs
        self.session = p.Session.server(1, options=options, registry=registry)

    def feed(self, data: bytes) -> None:
        self.session.receive_data(data)
        s = self.session
        while events := s.events_received():
            for ev in events:
                if s.state is p.State.CLOSED and isinstance(
                    ev, p.HelloReceived | p.DocRequested | p.CatchUpNeeded
                ):
                    continue  # failed after queueing these: nobody left to answer
                if isinstance(ev, p.HelloReceived):
                    s.accept(writers=[1], verify_writers=True)
                elif isinstance(ev, p.DocRequested):
                    try:
                        validate_room(ev.name)
                    except InvalidRoomError as exc:
                        s.refuse_doc(ev.name, exc)
                        continue
                    doc = self.docs.setdefault(ev.name, Doc())
                    if s.doc_state(ev.name) is p.DocState.REMOTE:
                        s.open_doc(ev.name, b"", doc.version)
                elif isinstance(ev, p.CatchUpNeeded) and ev.name in self.docs:
                    s.send_catch_up(ev.name, self.docs[ev.name].export_yjs_update(since=ev.since))
                elif isinstance(ev, p.UpdateReceived) and ev.name in self.docs:
                    known = self.docs[ev.name].version
                    if not s.check_writers(p.new_writes(ev.writes, known)):
                        continue
                    try:
                        self.docs[ev.name].import_yjs_update(ev.update)
                    except InvalidUpdateError as exc:
                        s.reject_update(ev.name, exc)
                    else:
                        s.ack(ev.name, ev.seq)
        s.data_to_send()  # what the relay would answer is not modelled


# -- mutations -------------------------------------------------------------------------------------


Mutation = tuple[str, int, int]


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    """Apply byte-level mutations: (kind, position, value)."""
    out = bytearray(data)
    for kind, pos, value in mutations:
        i = pos % (len(out) + 1)
        if kind == "flip" and out:
            out[i % len(out)] ^= 1 << (value % 8)
        elif kind == "set" and out:
            out[i % len(out)] = value
        elif kind == "insert":
            out[i:i] = bytes([value])
        elif kind == "delete" and out:
            del out[i % len(out)]
        elif kind == "truncate":
            del out[i:]
        elif kind == "extend":
            out += bytes([value]) * (1 + value % 16)
    return bytes(out)


def split_frame(frame: bytes) -> tuple[bytes, bytes]:
    """(length prefix, body) of one frame (the 4-byte check value dropped)."""
    n = shift = i = 0
    while True:
        b = frame[i]
        n |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            break
        shift += 7
    return frame[:i], frame[i : i + n]


# -- clients that stop reading ---------------------------------------------------------------------


async def raw_ws_socket(port: int, path: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket handshake done by hand on a raw socket; returns the socket after it.

    For clients that must do what no library would: never read, or send
    frames the library refuses to send.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    async with asyncio.timeout(WAIT):
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, 1)  # byte by byte: read nothing past the head
            assert chunk, "the relay closed during the handshake"
            head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def read_close(sock: socket.socket, timeout: float = WAIT) -> int | None:
    """Read server frames from a raw socket until a close frame; its code (None: EOF first)."""
    loop = asyncio.get_running_loop()
    buf = b""

    async def need(n: int) -> bool:
        nonlocal buf
        while len(buf) < n:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except OSError:
                return False
            if not chunk:
                return False
            buf += chunk
        return True

    async with asyncio.timeout(timeout):
        while True:
            if not await need(2):
                return None
            opcode, length, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if not await need(4):
                    return None
                length, at = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if not await need(10):
                    return None
                length, at = int.from_bytes(buf[2:10], "big"), 10
            if not await need(at + length):
                return None
            payload, buf = buf[at : at + length], buf[at + length :]
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


async def stalled_y_client(relay: Relay, room: str) -> socket.socket:
    """A y-protocols client that does the WebSocket handshake by hand, then never reads.

    Its receive buffer is made tiny, so what the relay sends piles up on the
    relay's side.
    """
    return await raw_ws_socket(relay.port, f"/{room}", rcvbuf=4096)


class PausableConnection:
    """A WebSocket connection whose reader can be paused (it then stops reading the socket).

    A plain byte pipe: it declares no optional ability.
    """

    abilities = Ability(0)

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reading = asyncio.Event()
        self.reading.set()

    @property
    def remote_address(self) -> str:
        return str(self.inner.remote_address)

    async def send(self, data: bytes) -> None:
        await self.inner.send(data)

    async def recv(self) -> bytes:
        await self.reading.wait()
        return bytes(await self.inner.recv())

    async def close(self) -> None:
        await self.inner.close()


class PausableTransport(WebSocketTransport):
    """A WebSocket transport whose connections can stop reading (slow consumers)."""

    abilities = Ability(0)  # type: ignore[assignment]  # its connections are PausableConnections

    def __init__(self, **kw: Any) -> None:
        super().__init__(ping_interval=None, **kw)
        self.connections: list[PausableConnection] = []

    async def connect(self, address: str) -> PausableConnection:  # type: ignore[override]
        conn = PausableConnection(await super().connect(address))
        self.connections.append(conn)
        return conn

    def pause(self) -> None:
        for conn in self.connections:
            conn.reading.clear()

    def resume(self) -> None:
        for conn in self.connections:
            conn.reading.set()


# -- TLS -------------------------------------------------------------------------------------------
