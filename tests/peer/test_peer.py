"""The asyncio Peer over the in-memory transport (virtual time unless it touches disk)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import eventually

from crdtsync import AuthError, Doc, EpochMismatchError, ErrorCode, InvalidOperationError, Peer
from crdtsync.errors import ConnectionClosedError, StoreError
from crdtsync.net import Ability
from crdtsync.peer.peer import Backoff, Grant, HelloInfo, Status
from crdtsync.protocol import messages as m
from crdtsync.protocol import session as p
from crdtsync.protocol.session import SessionOptions
from crdtsync.store.memory import MemoryStore
from crdtsync.testing import advance, run_virtual
from crdtsync.transports.memory import Faults, MemoryNetwork

FAST = SessionOptions(handshake_timeout=2.0, ack_timeout=4.0, ping_interval=0.5, idle_timeout=2.0)
QUICK = Backoff(initial=0.05, cap=1.0)


def make(net: MemoryNetwork, host: str, **kw: Any) -> Peer:
    kw.setdefault("options", FAST)
    kw.setdefault("backoff", QUICK)
    return Peer(transport=net.transport(host), seed=hash(host) % 1000, **kw)


def test_two_peers_sync_both_ways_with_status_events() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        events: list[Status] = []
        async with make(net, "a") as a, make(net, "b") as b:
            a.on_status(events.append)
            await b.listen("mem://b")
            da = await a.open("shopping")
            da.list("items").append("milk")
            await a.connect("mem://b")
            assert await a.wait_synced("shopping", timeout=5)
            db = await b.open("shopping")
            assert db.to_py() == {"items": ["milk"]}
            db.list("items").append("eggs")
            assert not b.is_synced("shopping")
            assert await b.wait_synced("shopping", timeout=5)
            assert da.to_py() == {"items": ["milk", "eggs"]}
            kinds = [e.kind for e in events]
            assert kinds[:2] == ["connected", "synced"]
            assert events[1].doc == "shopping"
            assert events[0].peer_id == b.peer_id
        assert events[-1].kind == "disconnected"

    run_virtual(main())


def test_wait_synced_is_false_while_unreachable_and_true_after() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        async with make(net, "a") as a, make(net, "b") as b:
            await a.open("d")
            with pytest.raises(TimeoutError):
                await a.connect("mem://b", timeout=1.0)  # nobody listens yet
            assert not await a.wait_synced("d", timeout=2.0)
            await b.listen("mem://b")  # the supervisor's next attempt gets through
            assert await a.wait_synced("d", timeout=10.0)

    run_virtual(main())


def test_reconnects_after_faults_and_partitions() -> None:
    async def main() -> None:
        net = MemoryNetwork(seed=5, latency=0.001)
        async with make(net, "a") as a, make(net, "b") as b:
            await b.listen("mem://b")
            da, db = await a.open("d"), await b.open("d")
            await a.connect("mem://b")
            net.set_faults(
                Faults(drop=0.1, corrupt=0.05, duplicate=0.05, reorder=0.05, disconnect=0.02)
            )
            for i in range(50):
                (da if i % 2 else db).text("t").insert(0, str(i % 10))
                await advance(0.05)
            net.partition(["a"], ["b"])
            da.counter("c").increment(5)
            db.counter("c").increment(7)
            await advance(5)
            assert not a.is_synced("d")
            assert not b.is_synced("d")
            net.heal()
            net.set_faults(None)
            assert await a.wait_synced("d", timeout=30)
            assert await b.wait_synced("d", timeout=30)
            assert da.to_py() == db.to_py()
            assert da.to_py()["c"] == 12
            assert len(da.to_py()["t"]) == 50
            assert net.stats.connections > 1, "it had to reconnect"

    run_virtual(main())


def test_chain_forwards_with_default_policy() -> None:
    """a -> b <- c: b relays between its two clients; each client only writes its own ids."""

    async def main() -> None:
        net = MemoryNetwork()
        async with make(net, "a") as a, make(net, "b") as b, make(net, "c") as c:
            await b.listen("mem://b")
            docs = [await p.open("d") for p in (a, b, c)]
            await a.connect("mem://b")
            await c.connect("mem://b")
            docs[0].text("t").insert(0, "A")
            docs[2].text("t").insert(0, "C")
            for p in (a, b, c):
                assert await p.wait_synced("d", timeout=5)
            assert docs[0].to_py() == docs[1].to_py() == docs[2].to_py()
            assert sorted(docs[0].to_py()["t"]) == ["A", "C"]

    run_virtual(main())


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    b = Backoff(initial=0.1, factor=2, cap=5, jitter=0.5)
    delays = [b.delay(i, rng) for i in range(20)]
    assert all(0.05 <= d <= 5 for d in delays)
    assert max(delays[:3]) < 0.5
    assert min(delays[10:]) >= 2.5
    assert len(set(delays[10:])) > 5, "jitter spreads reconnects"
    assert b.delay(10_000, rng) <= 5


def test_authorize_hook() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        seen: list[HelloInfo] = []

        def authorize(info: HelloInfo) -> bool | Grant:
            seen.append(info)
            if info.auth != {"token": "ok"}:
                raise AuthError("bad token")
            return Grant(docs=frozenset({"public"}))

        async with (
            make(net, "s", authorize=authorize) as s,
            make(net, "bad", auth={"token": "no"}) as bad,
        ):
            await s.listen("mem://s")
            await bad.open("public")
            with pytest.raises(AuthError, match="bad token"):
                await bad.connect("mem://s")
            assert seen
            assert seen[0].docs == ("public",)
            async with make(net, "good", auth={"token": "ok"}) as good:
                errors: list[Status] = []
                good.on_status(lambda st: st.kind == "error" and errors.append(st))
                await good.open("public")
                await good.open("secret")
                await good.connect("mem://s")
                assert await good.wait_synced("public", timeout=5)
                assert not await good.wait_synced("secret", timeout=1)
                assert "secret" not in s.docs()
                assert any(
                    e.doc == "secret" and e.error and e.error.code == ErrorCode.DOC_REFUSED
                    for e in errors
                )

    run_virtual(main())


def test_deleted_and_recreated_document_is_not_merged_back() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        async with make(net, "server") as server, make(net, "old") as old:
            await server.listen("mem://s")
            nb = await old.open("nb")
            nb.list("cells").append("cell 1")
            await old.connect("mem://s")
            assert await old.wait_synced("nb", timeout=5)
            await old.disconnect("mem://s")
            # The server deletes the notebook and someone creates a new one.
            await server.delete("nb")
            (await server.open("nb")).list("cells").append("fresh")
            errors: list[Status] = []
            old.on_status(lambda st: st.kind == "error" and errors.append(st))
            await old.connect("mem://s")
            assert not await old.wait_synced("nb", timeout=2)
            assert (await server.open("nb")).to_py() == {"cells": ["fresh"]}, "old cells not merged"
            assert nb.to_py() == {"cells": ["cell 1"]}
            assert errors
            assert isinstance(errors[0].error, EpochMismatchError)
            # A peer with nothing of its own joins the new incarnation.
            async with make(net, "new") as new:
                await new.open("nb")
                await new.connect("mem://s")
                assert await new.wait_synced("nb", timeout=5)
                assert (await new.open("nb")).to_py() == {"cells": ["fresh"]}
                assert new.epoch("nb") == server.epoch("nb")
            # The old peer adopts it explicitly with the epoch it was told about.
            doc = await old.open("nb", epoch=server.epoch("nb"))
            assert await old.wait_synced("nb", timeout=5)
            assert doc.to_py() == {"cells": ["fresh"]}

    run_virtual(main())


def test_presence_travels_and_times_out() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        async with make(net, "a") as a, make(net, "b") as b:
            await b.listen("mem://b")
            await a.open("d")
            await b.open("d")
            changes: list[Any] = []
            b.on_presence(lambda name, ch: changes.append((name, ch)))
            await a.connect("mem://b")
            a.set_presence("d", {"user": "ann", "cursor": 3})
            await advance(0.1)
            assert b.presence("d").states[a.peer_id] == {"user": "ann", "cursor": 3}
            await advance(100)  # renewed every 15 s: still there
            assert a.peer_id in b.presence("d").states
            await a.disconnect("mem://b")
            await advance(0.1)
            assert a.peer_id not in b.presence("d").states, "removed when the peer leaves"
            assert next(ch.added for _, ch in changes) == (a.peer_id,)

    run_virtual(main())


def test_hostile_bytes_never_reach_the_loop_or_the_documents() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        async with make(net, "victim") as victim:
            await victim.listen("mem://v")
            doc = await victim.open("d")
            doc.text("t").insert(0, "safe")
            errors: list[Status] = []
            victim.on_status(lambda st: st.kind == "error" and errors.append(st))
            for payload in (
                b"\xff" * 10,
                b"\x05garbage",
                m.FrameWriter().frame(m.Ping()),
                b"\x00" * 1000,
            ):
                conn = await net.transport("evil").connect("mem://v")
                await conn.send(payload)
                await advance(0.1)
                await conn.close()
            await advance(3)
            assert doc.to_py() == {"t": "safe"}
            assert errors, "each bad session is reported"
            assert victim.connections() == []

    run_virtual(main())


def test_edits_outside_the_running_loop() -> None:
    """Regression: an edit made while the loop is not running must not fail."""
    net = MemoryNetwork()
    loop = asyncio.new_event_loop()
    try:
        a, b = make(net, "a"), make(net, "b")
        loop.run_until_complete(a.start())
        loop.run_until_complete(b.start())
        loop.run_until_complete(b.listen("mem://b"))
        da = loop.run_until_complete(a.open("d"))
        loop.run_until_complete(a.connect("mem://b"))
        da.text("t").insert(0, "outside")  # no running loop here
        assert loop.run_until_complete(b.wait_synced("d", timeout=5))
        assert loop.run_until_complete(b.open("d")).to_py() == {"t": "outside"}
        loop.run_until_complete(a.close())
        loop.run_until_complete(b.close())
    finally:
        loop.close()


@pytest.mark.anyio
async def test_acknowledged_means_stored(tmp_path: Path) -> None:
    """Real time and real SQLite files: what b acknowledged survives b's restart."""
    net = MemoryNetwork()
    async with Peer(tmp_path / "a.db", transport=net.transport("a")) as a:
        async with Peer(tmp_path / "b.db", transport=net.transport("b")) as b:
            await b.listen("mem://b")
            doc = await a.open("d")
            await a.connect("mem://b")
            for i in range(20):
                doc.list("l").append(i)
            assert await a.wait_synced("d", timeout=20)
        # b is closed; everything a saw acknowledged is in b's file.
        async with Peer(tmp_path / "b.db") as b2:
            assert (await b2.open("d")).to_py() == {"l": list(range(20))}


def test_one_thousand_documents_small_scale() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        async with make(net, "a") as a, make(net, "b") as b:
            await b.listen("mem://b")
            for i in range(100):
                (await a.open(f"doc-{i}")).map("m")["i"] = i
            await a.connect("mem://b")
            for i in range(100):
                assert await a.wait_synced(f"doc-{i}", timeout=10)
            assert len(b.docs()) == 100
            assert (await b.open("doc-42")).to_py() == {"m": {"i": 42}}

    run_virtual(main())


def test_doc_loaded_from_store_has_our_peer_id() -> None:
    async def main() -> None:
        async with Peer(peer_id=77) as p:
            doc = await p.open("x")
            assert doc.peer_id == 77
            assert isinstance(doc, Doc)

    run_virtual(main())


@pytest.mark.anyio
async def test_wait_synced_wakes_on_each_ack_in_real_time() -> None:
    """Regression: a channel that was synced, sent, and was acked again did not wake waiters.

    Under virtual time the next keepalive hid it; in real time each keystroke
    waited for the 15 s ping.
    """
    net = MemoryNetwork()
    async with Peer(transport=net.transport("a")) as a, Peer(transport=net.transport("b")) as b:
        await b.listen("mem://b")
        doc = await a.open("d")
        await a.connect("mem://b")
        assert await a.wait_synced("d", timeout=5)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(20):
            doc.text("t").insert(0, str(i % 10))
            assert await a.wait_synced("d", timeout=5)
        assert loop.time() - start < 5, "each keystroke must be acknowledged promptly"
        assert len((await b.open("d")).to_py()["t"]) == 20


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.anyio
async def test_held_update_is_stored_before_it_is_acknowledged(
    tmp_path: Path, compact: bool
) -> None:
    # An update that arrives ahead of its predecessor is held by the Doc (no
    # transaction happens), yet the session acknowledges it: it must be durable.
    src = Doc()
    src.text("t").insert(0, "a")
    first = src.export_yjs_update()
    v1 = src.version
    src.text("t").insert(1, "b")
    second = src.export_yjs_update(since=v1)
    db = tmp_path / "held.db"
    async with Peer(store=db) as peer:
        doc = await peer.open("d")
        peer.import_update("d", second)
        assert doc.pending == 1
        assert str(doc.text("t")) == ""
        if compact:
            await peer.close_doc("d", compact=True)
    async with Peer(store=db) as peer:
        doc = await peer.open("d")
        assert doc.pending == 1, "the held update was lost"
        peer.import_update("d", first)
        assert doc.pending == 0
        assert str(doc.text("t")) == "ab"
    async with Peer(store=db) as peer:
        assert str((await peer.open("d")).text("t")) == "ab"


@pytest.mark.anyio
async def test_read_only_grant_refuses_writes_but_accepts_known_catch_up() -> None:
    net = MemoryNetwork()
    async with (
        Peer(
            transport=net.transport("server"),
            authorize=lambda info: Grant(read_only=info.auth == "reader"),
        ) as server,
        Peer(
            transport=net.transport("reader"), auth="reader", backoff=Backoff(0.01, cap=0.05)
        ) as reader,
    ):
        await server.listen("mem://server")
        sdoc = await server.open("d")
        sdoc.text("t").insert(0, "hello")
        del sdoc.text("t")[0:1]  # a delete set: the reader's catch-up repeats it
        errors: list[Status] = []
        reader.on_status(lambda s: errors.append(s) if s.kind == "error" else None)
        rdoc = await reader.open("d")
        await reader.connect("mem://server")
        assert await reader.wait_synced("d", timeout=10)
        assert str(rdoc.text("t")) == "ello"
        assert not errors
        rdoc.text("t").insert(0, "X")
        await eventually(lambda: bool(errors), 10, "the read-only refusal")
        assert errors[0].error is not None
        assert errors[0].error.code == ErrorCode.READ_ONLY
        assert str(sdoc.text("t")) == "ello"


@pytest.mark.anyio
async def test_close_during_a_compaction_finishes_it(tmp_path: Path) -> None:
    # Regression: close() cancelled the running compaction and then awaited it,
    # so CancelledError escaped from close().
    db = tmp_path / "c.db"
    async with Peer(store=db, compact_every=50) as peer:
        doc = await peer.open("d")
        for i in range(60):
            doc.map("m")[str(i)] = i
    async with Peer(store=db) as peer:
        assert len((await peer.open("d")).map("m")) == 60


@pytest.mark.anyio
async def test_open_refuses_names_no_peer_could_sync() -> None:
    async with Peer() as peer:
        for bad in ("", "x" * 1025, "é" * 513):
            with pytest.raises(InvalidOperationError):
                await peer.open(bad)
        assert (await peer.open("é" * 512)).to_py() == {}


class _FailingStore(MemoryStore):
    """A memory store whose group commits fail while ``fail`` is set (a full disk)."""

    fail = False

    def append_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        if self.fail:
            raise StoreError("disk full")
        return super().append_many(items)


@pytest.mark.anyio
async def test_a_failed_group_commit_acknowledges_nothing_until_it_succeeds() -> None:
    net = MemoryNetwork()
    store = _FailingStore()
    async with (
        Peer(store=store, transport=net.transport("server")) as server,
        Peer(transport=net.transport("client"), backoff=Backoff(0.01, cap=0.05)) as client,
    ):
        await server.listen("mem://server")
        cdoc = await client.open("d")
        await client.connect("mem://server")
        assert await client.wait_synced("d", timeout=10)
        errors: list[Status] = []
        server.on_status(lambda s: errors.append(s) if s.kind == "error" else None)
        store.fail = True
        cdoc.text("t").insert(0, "kept")
        await eventually(lambda: bool(errors), 10, "the failed commit")
        assert not client.is_synced("d"), "acknowledged although not stored"
        stored = store.load("d")
        assert stored is not None
        assert not any(b"kept" in u for _, u in stored.updates)
        store.fail = False
        assert await client.wait_synced("d", timeout=10)
        stored = store.load("d")
        assert stored is not None
        assert any(b"kept" in u for _, u in stored.updates)


class _HeldConnection:
    """A connection whose sends wait for ``gate``, like a socket that stopped draining."""

    abilities = Ability(0)
    remote_address = "held:1"

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.gate = asyncio.Event()
        self.sending = asyncio.Event()  # a send is waiting for the gate
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sending.set()
        await self.gate.wait()
        self.sent.append(bytes(data))

    async def recv(self) -> bytes:
        data = await self.inbox.get()
        if not data:
            raise ConnectionClosedError("closed")
        return data

    async def close(self) -> None:
        self.gate.set()
        self.inbox.put_nowait(b"")


@pytest.mark.anyio
async def test_a_session_closed_while_its_writer_waits_on_the_socket_still_sends_its_close() -> (
    None
):
    # The writer takes a batch of frames, then waits on the socket (or the
    # store). A close that comes meanwhile queues its CLOSE after that batch: it
    # must still go out, or the peer sees the connection end with no reason
    # (and a client reads a refusal as a dropped connection, and retries).
    async with Peer() as server:
        conn = _HeldConnection()
        client = p.Session.client(7, writers=[7])
        serving = asyncio.ensure_future(server.serve(conn))
        for frame in client.data_to_send():
            conn.inbox.put_nowait(frame)
        await asyncio.wait_for(conn.sending.wait(), 10)  # its WELCOME waits on the socket
        conn.inbox.put_nowait(b"\xff" * 16)  # a malformed frame: the session closes meanwhile
        await eventually(lambda: server.connections() == [("held:1", 7, False)])
        conn.gate.set()
        await asyncio.wait_for(serving, 10)
        reader = m.FrameReader(max_frame=1 << 20)
        for data in conn.sent:
            reader.feed(data)
        sent = []
        while (body := reader.next_body()) is not None:
            sent.append(m.decode_message(body))
        assert [type(msg).__name__ for msg in sent] == ["Welcome", "Close"]
        assert sent[-1].code == ErrorCode.MALFORMED_FRAME  # type: ignore[attr-defined]


class _ClosedByPeerConnection:
    """A connection the peer closed after a last frame: it is still to be read, sends fail."""

    abilities = Ability(0)
    remote_address = "closed:1"

    def __init__(self, last: list[bytes]) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        for data in [*last, b""]:
            self.inbox.put_nowait(data)
        # recv() waits until a send has failed: the writer sees the close first.
        self.send_failed = asyncio.Event()

    async def send(self, data: bytes) -> None:
        self.send_failed.set()
        raise ConnectionClosedError("closed by the peer")

    async def recv(self) -> bytes:
        await self.send_failed.wait()
        data = await self.inbox.get()
        if not data:
            raise ConnectionClosedError("closed")
        return data

    async def close(self) -> None:
        self.send_failed.set()


@pytest.mark.anyio
async def test_a_send_that_fails_does_not_hide_the_close_the_peer_sent_before() -> None:
    # The server refused us and closed: its CLOSE is in our receive buffer, and
    # our next send fails. The session must end with the CLOSE's reason (here a
    # refusal, which a client does not retry), not as a dropped connection.
    server = p.Session.server(1)
    hello = p.Session.client(2, writers=[2])
    for frame in hello.data_to_send():
        server.receive_data(frame)
    server.reject(AuthError("bad token"))
    conn = _ClosedByPeerConnection(server.data_to_send())
    async with Peer() as client:
        ended: list[Status] = []
        client.on_status(lambda s: ended.append(s) if s.kind == "disconnected" else None)
        await asyncio.wait_for(client.attach(conn), 10)
        assert len(ended) == 1
        assert isinstance(ended[0].error, AuthError), ended[0]
