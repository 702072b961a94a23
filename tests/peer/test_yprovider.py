"""YProvider, our y-websocket client: against the real node server and hostile fakes.

The node side is the real thing: ``@y/websocket-server`` (tests/interop/yws_server.mjs)
and y-websocket's ``WebsocketProvider`` with yjs (tests/interop/yws_peer.mjs),
installed from tests/interop/package.json by ``ensure_node_modules``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.nodeenv import ensure_node_modules
from helpers.waiting import eventually

from crdtsync import (
    AuthError,
    Doc,
    FrameTooLargeError,
    InvalidRoomError,
    InvalidUpdateError,
    LimitExceededError,
    LocalProtocolError,
    MalformedFrameError,
    ReadOnlyError,
    RoomNotAllowedError,
    TokenError,
    TokenExpiredError,
    TransportError,
)
from crdtsync.format.version import Version
from crdtsync.peer.peer import Backoff, Status
from crdtsync.peer.yprovider import YProvider
from crdtsync.protocol import yprotocol as y
from crdtsync.protocol.awareness import Awareness, decode_awareness, encode_awareness
from crdtsync.transports.websocket import WebSocketConnection, WebSocketTransport

STEP = 15.0  # seconds allowed for any single wait
QUICK = Backoff(initial=0.02, factor=2.0, cap=0.2, jitter=0.0)


@pytest.fixture(scope="module")
def interop() -> Path:
    return ensure_node_modules()


async def step(aw: Awaitable[Any], what: str = "step") -> Any:
    try:
        return await asyncio.wait_for(aw, STEP)
    except TimeoutError:
        raise AssertionError(f"timed out: {what}") from None


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    """Poll ``cond`` until it holds; fail after ``timeout`` seconds."""
    await eventually(cond, timeout, what)


def provider(doc: Doc, url: str, room: str, **kw: Any) -> YProvider:
    kw.setdefault("backoff", QUICK)
    kw.setdefault("seed", 1)
    return YProvider(doc, url, room, **kw)


def body(doc: Doc) -> str:
    return str(doc.text("body"))


# -- node processes ------------------------------------------------------------------------


class NodeServer:
    """The real @y/websocket-server, in a node process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        node = shutil.which("node")
        assert node
        self.proc = await asyncio.create_subprocess_exec(
            node,
            str(self.folder / "yws_server.mjs"),
            str(port),
            cwd=self.folder,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await step(self.proc.stdout.readline(), "the node server to listen")
        assert line, "the node server exited before listening"
        self.port = int(json.loads(line)["port"])

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # the server exits when its stdin closes
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def node_server(folder: Path) -> AsyncIterator[NodeServer]:
    server = NodeServer(folder)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class NodePeer:
    """A stock y-websocket WebsocketProvider with yjs, driven line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def cmd(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await step(self.proc.stdout.readline(), f"node peer: {op}")
        assert line, f"the node peer exited during {op}"
        answer: dict[str, Any] = json.loads(line)
        return answer


@contextlib.asynccontextmanager
async def node_peer(folder: Path) -> AsyncIterator[NodePeer]:
    node = shutil.which("node")
    assert node
    proc = await asyncio.create_subprocess_exec(
        node,
        str(folder / "yws_peer.mjs"),
        cwd=folder,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield NodePeer(proc)
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# -- against the real node server ------------------------------------------------------------


@pytest.mark.anyio
async def test_two_providers_converge_through_the_node_server(interop: Path) -> None:
    a, b = Doc(), Doc()
    a.text("body").insert(0, "from a (offline). ")
    b.text("body").insert(0, "from b (offline). ")
    events: list[Status] = []
    async with node_server(interop) as server:
        pa = provider(a, server.url, "room-1")
        pa.on_status(events.append)
        async with pa, provider(b, server.url, "room-1") as pb:
            assert await pa.wait_synced(timeout=STEP)
            assert await pb.wait_synced(timeout=STEP)
            # Concurrent live edits, both sides, many small transactions.
            for i in range(20):
                a.text("body").insert(len(body(a)), f"a{i} ")
                b.text("body").insert(0, f"b{i} ")
                await asyncio.sleep(0)  # (noqa: sleep) interleave the two editors
            await wait_until(
                lambda: body(a) == body(b) and "a19" in body(b) and "b19" in body(a), "convergence"
            )
            assert "from a (offline)" in body(a)
            assert "from b (offline)" in body(b)
            assert a.to_py() == b.to_py()
            assert pa.synced
            assert repr(pa).endswith("synced>")
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["connected", "synced"]
    assert events[0].address == f"{server.url}/room-1"
    assert events[0].doc == "room-1"
    assert kinds[-1] == "disconnected"
    assert "error" not in kinds


@pytest.mark.anyio
async def test_provider_and_a_stock_yjs_client_edit_concurrently_and_share_presence(
    interop: Path,
) -> None:
    doc = Doc()
    doc.text("body").insert(0, "py offline ✓ ")
    async with node_server(interop) as server, node_peer(interop) as js:
        # Both sides edit before either sees the other: concurrent inserts at 0.
        await js.cmd("insert", index=0, text="js offline 🎉 ")
        await js.cmd("presence", state={"user": "js", "cursor": 3})
        async with provider(doc, server.url, "shared") as py:
            py.set_presence({"user": "py", "cursor": 0})
            changes: list[Any] = []
            py.on_presence(changes.append)
            await js.cmd("connect", url=server.url, room="shared")
            assert await py.wait_synced(timeout=STEP)
            # Live concurrent typing on both sides.
            typing = asyncio.ensure_future(js.cmd("type", text="JS"))
            for ch in "PY":
                doc.text("body").insert(len(body(doc)), ch)
                await asyncio.sleep(0.002)  # (noqa: sleep) typing pace, not a wait
            await step(typing)
            got = await js.cmd(
                "wait",
                contains=["py offline ✓", "P", "Y"],
                presence=[{"user": "py", "cursor": 0}],
                synced=True,
                timeout=int(STEP * 1000),
            )
            assert got["ok"], got
            # The Python presence sits under the document's Yjs client id.
            assert got["presence"][str(doc.peer_id)] == {"user": "py", "cursor": 0}
            # Typed concurrently, "JS" and "PY" may interleave (J, P, S, Y): the
            # characters arrive, in whatever order the merge puts them.
            await wait_until(
                lambda: (
                    "js offline 🎉" in body(doc)
                    and body(doc).count("J") + body(doc).count("S") == 2
                ),
                "js edits in Python",
            )
            js_id = got["clientID"]
            await wait_until(lambda: js_id in py.awareness.states, "js presence in Python")
            assert py.awareness.states[js_id] == {"user": "js", "cursor": 3}
            assert any(js_id in c.added for c in changes)
            # No more edits anywhere: both replicas hold the same text.
            final = (await js.cmd("state"))["text"]
            await wait_until(lambda: body(doc) == final, "the same text on both sides")
            assert sorted(final) == sorted("py offline ✓ js offline 🎉 JSPY")

            # Presence changes travel too, and a client that leaves is dropped.
            py.set_presence({"user": "py", "cursor": 7})
            got = await js.cmd("wait", presence=[{"user": "py", "cursor": 7}], timeout=10000)
            assert got["ok"], got
            await js.cmd("quit")
            await wait_until(lambda: js_id not in py.awareness.states, "js presence dropped")
            assert any(js_id in c.removed for c in changes)


@pytest.mark.anyio
async def test_closing_the_provider_tells_the_room_we_left(interop: Path) -> None:
    doc = Doc()
    async with node_server(interop) as server, node_peer(interop) as js:
        await js.cmd("connect", url=server.url, room="leave")
        async with provider(doc, server.url, "leave") as py:
            py.set_presence({"user": "py"})
            got = await js.cmd("wait", presence=[{"user": "py"}], synced=True, timeout=10000)
            assert got["ok"], got
        assert not py.connected
        assert not await py.wait_synced(timeout=STEP)  # closed: False at once
        got = await js.cmd("wait", alone=True, timeout=int(STEP * 1000))
        assert got["ok"], got
        assert got["presence"] == {}


@pytest.mark.anyio
async def test_provider_reconnects_and_resyncs_after_a_server_restart(interop: Path) -> None:
    a, b = Doc(), Doc()
    server = NodeServer(interop)
    await server.start()
    port = server.port
    statuses: list[str] = []
    try:
        async with (
            provider(a, server.url, "restart") as pa,
            provider(b, server.url, "restart") as pb,
        ):
            pa.on_status(lambda s: statuses.append(s.kind))
            a.text("body").insert(0, "before. ")
            await wait_until(lambda: body(b) == "before. ", "the first edit")
            await server.stop()
            await wait_until(lambda: not pa.connected and not pb.connected, "disconnects")
            assert not pa.synced
            a.text("body").insert(len(body(a)), "while a was offline. ")
            b.text("body").insert(0, "while b was offline. ")
            await server.start(port)  # a new, empty server on the same port
            assert await pa.wait_synced(timeout=STEP)
            assert await pb.wait_synced(timeout=STEP)
            await wait_until(
                lambda: body(a) == body(b) and "while a" in body(b) and "while b" in body(a),
                "offline edits on both sides",
            )
            # Live edits flow again.
            a.text("body").insert(0, "after. ")
            await wait_until(lambda: body(b).startswith("after. "), "a live edit after restart")
    finally:
        await server.stop()
    assert statuses.count("synced") >= 1
    assert "disconnected" in statuses


# -- hostile and refusing servers (Python fakes) -------------------------------------------


class FakeServer:
    """A y-websocket server that runs one script per accepted connection."""

    def __init__(self, scripts: list[Callable[[WebSocketConnection], Awaitable[None]]]) -> None:
        self.scripts = scripts
        self.conns: list[WebSocketConnection] = []
        self.done: list[asyncio.Event] = []
        self.url = ""
        self._listener: Any = None

    async def __aenter__(self) -> FakeServer:
        self._listener = await WebSocketTransport().listen("ws://127.0.0.1:0", self.handler)
        self.url = self._listener.address
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._listener.close()

    async def handler(self, conn: Any) -> None:
        index = len(self.conns)
        self.conns.append(conn)
        finished = asyncio.Event()
        self.done.append(finished)
        try:
            script = self.scripts[min(index, len(self.scripts) - 1)]
            await script(conn)
        finally:
            finished.set()

    async def finished(self, index: int) -> WebSocketConnection:
        await wait_until(lambda: len(self.done) > index, f"connection {index}")
        await step(self.done[index].wait(), f"script {index}")
        return self.conns[index]


async def recv_message(conn: WebSocketConnection) -> y.YMessage:
    return y.decode(await step(conn.recv(), "a message from the provider"))


async def expect_close(conn: WebSocketConnection) -> None:
    """Read until the provider closes the connection."""
    for _ in range(100):
        try:
            await step(conn.recv(), "the provider to close")
        except TransportError:
            return
    raise AssertionError("the provider kept the connection open")


def sending(*messages: bytes, then_close: bool = True) -> Callable[[Any], Awaitable[None]]:
    async def script(conn: WebSocketConnection) -> None:
        for m in messages:
            await conn.send(m)
        if then_close:
            await expect_close(conn)
        else:
            with contextlib.suppress(TransportError):
                for _ in range(1000):
                    await conn.recv()

    return script


def text_update(text: str, peer_id: int = 4242) -> bytes:
    d = Doc(peer_id=peer_id)
    d.text("body").insert(0, text)
    return d.export_yjs_update()


@pytest.mark.anyio
async def test_hostile_messages_are_reported_and_leave_the_document_unchanged() -> None:
    doc = Doc()
    doc.text("body").insert(0, "mine")
    before, version = doc.to_py(), doc.version
    bogus_awareness = b"\x01\x05\x01\x03{x}"  # one entry whose JSON does not parse
    scripts = [
        sending(b"\xff\xff\xff"),  # not a y-protocols message
        sending(b"\x00\x01\x05ab"),  # truncated payload
        sending(y.encode_sync_step2(b"\x01\x02\x03\x04\x05\x06")),  # not an update
        sending(y.encode_update(b"\x00\x00" + b"junk")),  # trailing junk after an update
        sending(b"\x00\x02" + b"\xff\xff\xff\x7f"),  # claims a 256 MiB payload
        sending(y.encode_awareness(bogus_awareness)),
        sending(b"\x00\x07\x00"),  # unknown sync step
        sending(b"\x09"),  # unknown message type
        sending(y.encode_sync_step1(Version()), then_close=False),  # finally a sane server
    ]
    errors: list[Status] = []
    async with FakeServer(scripts) as server:
        async with provider(doc, server.url, "hostile", max_payload=1 << 20) as p:
            p.on_status(lambda s: errors.append(s) if s.kind == "error" else None)
            await wait_until(lambda: len(server.conns) == len(scripts), "every script to run")
            for i in range(len(scripts) - 1):
                await server.finished(i)
            assert doc.to_py() == before
            assert doc.version == version
            assert p.error is None  # none of this stops the provider
            await wait_until(lambda: p.connected, "the last connection")
        codes = [c.close_code for c in server.conns[:-1]]
    kinds = [type(s.error) for s in errors]
    assert len(errors) == len(scripts) - 1, [s.reason for s in errors]
    assert kinds.count(MalformedFrameError) == 5, kinds
    assert kinds.count(FrameTooLargeError) == 1
    assert sum(issubclass(k, InvalidUpdateError) for k in kinds) == 2
    assert all(e.address is not None and e.address.endswith("/hostile") for e in errors)
    # The provider closed each bad connection itself: 1009 for the oversized
    # payload, 1002 (protocol error) for the rest.
    assert codes == [1002, 1002, 1002, 1002, 1009, 1002, 1002, 1002]
    assert doc.to_py() == before


@pytest.mark.anyio
async def test_the_sync_exchange_message_by_message() -> None:
    doc = Doc()
    doc.text("body").insert(0, "local")
    v0 = doc.version
    seen: dict[str, Any] = {}
    ready = asyncio.Event()

    async def script(conn: WebSocketConnection) -> None:
        first = await recv_message(conn)
        assert isinstance(first, y.SyncStep1)
        seen["step1"] = first.version
        presence = await recv_message(conn)
        assert isinstance(presence, y.AwarenessMessage)
        seen["presence"] = decode_awareness(presence.data)
        # Our step 1 (empty): the provider answers with everything it has.
        await conn.send(y.encode_sync_step1(Version()))
        answer = await recv_message(conn)
        assert isinstance(answer, y.SyncStep2)
        seen["step2"] = answer.update
        # Step 2 with the server's content, then a live update.
        await conn.send(y.encode_sync_step2(text_update("server ")))
        # Someone else's presence, then a query for everyone's.
        other = encode_awareness([(99, 1, {"user": "other"})])
        await conn.send(y.encode_awareness(other))
        await conn.send(y.encode_query_awareness())
        reply = await recv_message(conn)
        assert isinstance(reply, y.AwarenessMessage)
        seen["query"] = decode_awareness(reply.data)
        # A local edit arrives as an update message.
        ready.set()
        live = await recv_message(conn)
        assert isinstance(live, y.SyncUpdate)
        seen["live"] = live.update
        # Someone claims we left: we are still here, with a newer clock.
        clock = seen["presence"][0][1]
        await conn.send(y.encode_awareness(encode_awareness([(doc.peer_id, clock, None)])))
        back = await recv_message(conn)
        assert isinstance(back, y.AwarenessMessage)
        seen["outbid"] = decode_awareness(back.data)
        await conn.close_with(1001, "going away")

    events: list[Status] = []
    async with FakeServer([script, sending(then_close=False)]) as server:
        p = provider(doc, server.url, "exchange")
        p.on_status(events.append)
        p.set_presence({"user": "me"})  # before start: sent on connect
        async with p:
            assert await p.wait_synced(timeout=STEP)
            assert "server " in body(doc)
            await wait_until(lambda: 99 in p.awareness.states, "the other presence")
            await step(ready.wait())
            doc.text("body").insert(0, "live ")
            await server.finished(0)
            # The connection ended: presence learned through it is dropped.
            await wait_until(lambda: 99 not in p.awareness.states, "presence dropped on close")
            await wait_until(lambda: len(server.conns) == 2, "a reconnect after 1001")
            assert p.error is None
    assert seen["step1"] == v0
    assert seen["presence"] == [(doc.peer_id, 1, {"user": "me"})]
    replica = Doc()
    replica.import_yjs_update(seen["step2"])
    assert str(replica.text("body")) == "local"
    assert {c: s for c, _, s in seen["query"]} == {
        doc.peer_id: {"user": "me"},
        99: {"user": "other"},
    }
    replica.import_yjs_update(text_update("server "))
    replica.import_yjs_update(seen["live"])
    assert str(replica.text("body")) == body(doc)
    [(client, clock, state)] = seen["outbid"]
    assert (client, state) == (doc.peer_id, {"user": "me"})
    assert clock > seen["presence"][0][1]
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["connected", "synced"]
    assert "disconnected" in kinds
    assert "error" not in kinds


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (4401, "missing token", TokenError),
        (4401, "token expired", TokenExpiredError),
        (4403, "token does not allow this room", RoomNotAllowedError),
        (4400, "invalid room name", InvalidRoomError),
        (4499, "", AuthError),
    ],
)
async def test_refusal_close_codes_stop_reconnecting(
    code: int, reason: str, error: type[Exception]
) -> None:
    async def refuse(conn: WebSocketConnection) -> None:
        await conn.close_with(code, reason)

    doc = Doc()
    errors: list[Status] = []
    async with (
        FakeServer([refuse]) as server,
        provider(doc, server.url, "closed", token="t0ken") as p,
    ):
        p.on_status(lambda s: errors.append(s) if s.kind == "error" else None)
        assert not await p.wait_synced(timeout=STEP)  # returns once refused
        assert p._task is not None
        await step(p._task, "the connection loop to stop")
        assert isinstance(p.error, error)
        assert type(p.error) is error
        assert len(server.conns) == 1
    [status] = errors
    assert type(status.error) is error
    assert str(code) in status.reason
    assert "t0ken" not in status.reason


@pytest.mark.anyio
@pytest.mark.parametrize("code", [1001, 1011, 1013, 4408, 4429, 4500, 4529])
async def test_other_close_codes_reconnect(code: int) -> None:
    async def drop(conn: WebSocketConnection) -> None:
        await conn.close_with(code, "try again")

    async with (
        FakeServer(
            [drop, drop, sending(y.encode_sync_step2(b"\x00\x00"), then_close=False)]
        ) as server,
        provider(Doc(), server.url, "again") as p,
    ):
        assert await p.wait_synced(timeout=STEP)
        assert len(server.conns) == 3
        assert p.error is None


@pytest.mark.anyio
async def test_permission_denied_before_sync_stops_after_sync_does_not() -> None:
    doc = Doc()
    denied = sending(y.encode_auth_denied("no access"), then_close=False)
    async with FakeServer([denied]) as server, provider(doc, server.url, "denied") as p:
        assert not await p.wait_synced(timeout=STEP)
        assert isinstance(p.error, AuthError)
        assert "no access" in str(p.error)
        assert p._task is not None
        await step(p._task)
        assert len(server.conns) == 1

    # After a sync, a denial is a refused write (read-only): reported, connection kept.
    errors: list[Status] = []
    script = sending(
        y.encode_sync_step2(b"\x00\x00"), y.encode_auth_denied("read-only"), then_close=False
    )
    async with FakeServer([script]) as server, provider(doc, server.url, "read-only") as p:
        p.on_status(lambda s: errors.append(s) if s.kind == "error" else None)
        assert await p.wait_synced(timeout=STEP)
        await wait_until(lambda: bool(errors), "the denial to be reported")
        assert isinstance(errors[0].error, ReadOnlyError)  # a refused write, exactly
        assert p.synced
        assert p.error is None


@pytest.mark.anyio
async def test_url_carries_room_token_and_params() -> None:
    async with FakeServer([sending(then_close=False)]) as server:
        doc = Doc()
        room = "team/notes 2024 é"
        async with provider(doc, server.url + "/", room, token="a b&c", params={"v": "1"}) as p:
            conn = await step(_first(server))
            assert conn.path == "/team/notes%202024%20%C3%A9"
            assert conn.query == {"v": "1", "token": "a b&c"}
            assert p.url == f"{server.url}/team/notes%202024%20%C3%A9?v=1&token=a%20b%26c"
            assert p.address == f"{server.url}/team/notes%202024%20%C3%A9"
            assert p.room == room


async def _first(server: FakeServer) -> WebSocketConnection:
    await wait_until(lambda: bool(server.conns), "a connection")
    return server.conns[0]


@pytest.mark.anyio
async def test_a_backlog_over_max_pending_drops_the_connection_and_resyncs() -> None:
    doc = Doc()
    received: list[bytes] = []

    async def collect(conn: WebSocketConnection) -> None:
        await conn.send(y.encode_sync_step1(Version()))
        await conn.send(y.encode_sync_step2(b"\x00\x00"))
        with contextlib.suppress(TransportError):
            for _ in range(1000):
                msg = y.decode(await conn.recv())
                if isinstance(msg, y.SyncStep2 | y.SyncUpdate):
                    received.append(msg.update)

    errors: list[Status] = []
    async with (
        FakeServer([collect]) as server,
        provider(doc, server.url, "backlog", max_pending=256) as p,
    ):
        p.on_status(lambda s: errors.append(s) if s.kind == "error" else None)
        assert await p.wait_synced(timeout=STEP)
        for _ in range(10):  # a backlog of 10 updates before the writer runs
            doc.text("body").insert(0, "x" * 100)
        await wait_until(lambda: len(server.conns) >= 2, "a new connection")
        assert isinstance(errors[0].error, LimitExceededError)

        def replica_text() -> str:
            r = Doc()
            for u in received:
                r.import_yjs_update(u)
            return str(r.text("body"))

        # The next connection's step 2 carries the edit the backlog dropped.
        await wait_until(lambda: replica_text() == "x" * 1000, "the edit via step 2")


@pytest.mark.anyio
async def test_an_unreachable_server_is_retried_until_it_appears() -> None:
    doc = Doc()
    doc.text("body").insert(0, "patient")
    statuses: list[Status] = []
    transport = WebSocketTransport()

    async def ignore(conn: object) -> None:
        """Nobody connects: the listener is closed at once."""

    listener = await transport.listen("ws://127.0.0.1:0", ignore)
    url = listener.address
    await listener.close()  # nobody listens there now
    p = provider(doc, url, "later")
    p.on_status(statuses.append)
    async with p:
        await wait_until(lambda: len(statuses) >= 3, "a few failed attempts")
        assert all(s.kind == "disconnected" for s in statuses)
        assert all(s.error is not None for s in statuses)
        assert not p.synced
        got: list[bytes] = []

        async def serve(conn: Any) -> None:
            await conn.send(y.encode_sync_step1(Version()))
            await conn.send(y.encode_sync_step2(b"\x00\x00"))
            with contextlib.suppress(TransportError):
                for _ in range(100):
                    msg = y.decode(await conn.recv())
                    if isinstance(msg, y.SyncStep2):
                        got.append(msg.update)

        port = int(url.rsplit(":", 1)[1])
        back = await transport.listen(f"ws://127.0.0.1:{port}", serve)
        try:
            assert await p.wait_synced(timeout=STEP)
            await wait_until(lambda: bool(got), "our state")
        finally:
            await back.close()
    replica = Doc()
    replica.import_yjs_update(got[0])
    assert str(replica.text("body")) == "patient"


def test_awareness_defaults_to_the_document_client_id() -> None:
    doc = Doc(peer_id=1234)
    p = YProvider(doc, "ws://127.0.0.1:1", "r")
    assert isinstance(p.awareness, Awareness)
    assert p.awareness.client_id == 1234
    mine = Awareness(1234)
    assert YProvider(doc, "ws://127.0.0.1:1", "r", awareness=mine).awareness is mine


@pytest.mark.anyio
async def test_wait_synced_times_out_offline_and_a_closed_provider_cannot_restart() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = provider(Doc(), f"ws://127.0.0.1:{port}", "r")
    async with p:
        assert not await p.wait_synced(timeout=0.05)
        assert not p.connected
        assert p.error is None  # unreachable is not a refusal: it keeps trying
    await p.close()  # idempotent
    with pytest.raises(LocalProtocolError):
        await p.start()
