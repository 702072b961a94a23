"""The relay's budgets against read-only and unauthenticated attackers (issue 18).

Each test puts a client at one budget over real sockets on 127.0.0.1 and checks
that the budget holds in counts, bytes, closes and what reaches the store, never
in timings (``scripts/relay_budgets.py`` measures what each costs other rooms).
Items 1, 2, 7, 8 and 9 of the issue are the regressions here; the rest come
from the adversarial pass that followed (``docs/SECURITY.md``, "Budgets").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import (
    WAIT,
    Metrics,
    RawSync,
    YClient,
    errors,
    parse_metrics,
    running_relay,
    ws_peer,
)
from helpers.waiting import eventually
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from crdtsync import Doc, ErrorCode, ProtocolError
from crdtsync.format.varint import write_varuint
from crdtsync.format.version import Version
from crdtsync.format.yupdate import parse_update
from crdtsync.protocol import messages as m
from crdtsync.protocol import session as p
from crdtsync.protocol import yprotocol as y
from crdtsync.protocol.awareness import Awareness, decode_awareness, encode_awareness
from crdtsync.relay import Relay, mint_token
from crdtsync.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio
SECRET = b"budget-test-secret-0123456789abcdef"


def token(room: str = "notes", *, write: bool = True) -> str:
    return mint_token(SECRET, room, write=write, ttl=600)


def skip(client: int, clock: int, length: int = 1) -> bytes:
    """An update of one Skip struct: 8 bytes that write nothing yet ask to be held."""
    out = bytearray([1, 1])
    write_varuint(out, client)
    write_varuint(out, clock)
    out.append(10)  # Skip
    write_varuint(out, length)
    out.append(0)  # no delete set
    return bytes(out)


def delete_only(client: int, clock: int, length: int = 1) -> bytes:
    """An update of no struct and one deleted range: a few bytes."""
    out = bytearray([0, 1])
    write_varuint(out, client)
    out.append(1)
    write_varuint(out, clock)
    write_varuint(out, length)
    return bytes(out)


def text(n: int, seed: int) -> str:
    rnd = random.Random(seed)
    return "".join(rnd.choices(string.ascii_letters + string.digits, k=n))


def doc_errors(raw: RawSync) -> list[m.DocError]:
    return [msg for msg in raw.messages if isinstance(msg, m.DocError)]


def close_code(raw: RawSync) -> int | None:
    return next((msg.code for msg in raw.messages if isinstance(msg, m.Close)), None)


def local_metrics(relay: Relay) -> Metrics:
    """The relay's metrics read in-process (an HTTP scrape would be a connection too)."""
    return parse_metrics(relay.metrics.render())


def stored(relay: Relay, room: str) -> tuple[bytes | None, list[bytes]]:
    """What the relay's store holds for ``room``: its snapshot and its log."""
    found = relay.peer._store.load(room)  # the store itself: nothing else tells what is on disk
    assert found is not None, f"{room!r} is not in the store"
    return found.snapshot, [u for _, u in found.updates]


async def reopen(raw: RawSync, name: str, doc: Doc) -> None:
    """Open ``name`` again on a raw session (after the relay closed it) and sync it."""
    raw.docs[name] = doc
    raw.session.open_doc(name, b"", doc.version)
    await raw.flush()
    await raw.until(lambda: raw.session.is_synced(name))


# -- item 1: a large room after compaction; a broken room --------------------------------------


async def test_a_room_larger_than_max_update_loads_again_after_compaction(
    tmp_path: Path,
) -> None:
    """Issue 18, item 1: ten updates within max_update make a room larger than it.

    Its snapshot was read under the per-update limit: after an idle unload, and
    after a restart, every client was closed with 1011 ("corrupt: ... exceed
    max_update_bytes") although the data was intact.
    """
    options: dict[str, Any] = {"max_update": 64 << 10, "max_frame": 64 << 10}
    chunks = [text(60_000, i) for i in range(10)]
    async with running_relay(tmp_path, idle_unload=0.05, **options) as relay:
        writer = await YClient.open(relay.url, "big")
        await writer.sync()
        for chunk in chunks:
            await writer.edit(lambda d, c=chunk: d.text("body").insert(0, c))
        await writer.sync()  # a round trip: every edit is in
        await writer.aclose()
        await eventually(lambda: "big" not in relay.peer.docs(), what="the idle room unloads")
        snapshot, log = stored(relay, "big")
        assert snapshot is not None  # compacted
        assert log == []
        reader = await YClient.open(relay.url, "big")
        await reader.sync()
        assert len(reader.text()) == 600_000
        await reader.aclose()
        assert await errors(relay, "internal") == 0
        assert await errors(relay, "store") == 0
    # A restart: the room loads from its snapshot.
    async with running_relay(tmp_path, **options) as relay, ws_peer() as peer:
        doc = await peer.open("big")
        await peer.connect(relay.url)
        assert await peer.wait_synced("big", WAIT)
        assert len(str(doc.text("body"))) == 600_000


def _corrupt_room(path: Path) -> None:
    """A store with a good room and one whose snapshot is garbage (a disk that lied)."""
    store = SQLiteStore(path)
    try:
        store.create("good", b"")
        writer = Doc()
        writer.text("body").insert(0, "fine")
        store.append("good", writer.export_yjs_update())
        store.create("broken", b"")
        store.compact("broken", b"\xa3\x00garbage, not a snapshot", 0)
    finally:
        store.close()


async def test_a_broken_room_closes_its_channel_not_the_session(tmp_path: Path) -> None:
    """Issue 18, item 1: one room the store cannot give cost a session all its rooms."""
    _corrupt_room(tmp_path / "r.db")
    async with running_relay(tmp_path) as relay:
        good, broken = Doc(), Doc()
        raw = await RawSync.open(relay.url, docs=[("broken", broken), ("good", good)])
        await raw.until(lambda: raw.session.is_synced("good"))
        await raw.until(lambda: bool(doc_errors(raw)))
        refusal = doc_errors(raw)[0]
        assert refusal.name == "broken"
        assert refusal.code == ErrorCode.INTERNAL_ERROR
        assert str(good.text("body")) == "fine"
        assert raw.session.state is p.State.OPEN  # the session and its other room live on
        assert await errors(relay, "store") == 1
        # A y-protocols client of the broken room: 1011, counted as a store error.
        client = await YClient.open(relay.url, "broken")
        code, _, received = await client.closed()
        assert code == 1011
        assert received == []
        assert await errors(relay, "store") == 2
        assert await errors(relay, "internal") == 0
        # ... and the relay serves the good room to newcomers all along.
        other = await YClient.open(relay.url, "good")
        await other.sync()
        assert other.text() == "fine"
        await other.aclose()
        await raw.aclose()


# -- the size cap of a room --------------------------------------------------------------------


async def test_a_room_at_its_size_limit_refuses_writes_and_stays_readable(
    tmp_path: Path,
) -> None:
    cap = 100_000
    options: dict[str, Any] = {"max_room_bytes": cap}
    async with running_relay(tmp_path, **options) as relay:
        writer = await YClient.open(relay.url, "notes")
        await writer.sync()
        for i in range(8):  # 8 x 30 KB: over the cap after four
            await writer.edit(lambda d, i=i: d.text("body").insert(0, text(30_000, i)))

        def denied() -> int:
            return sum(isinstance(msg, y.AuthDenied) for msg in writer.received)

        # The first four fit (the fourth crosses the cap), then each is refused.
        await writer.pump_until(lambda: denied() == 4)
        assert await errors(relay, "room_full") == 4
        room = await relay.peer.open("notes")
        assert len(str(room.text("body"))) == 120_000  # at most one update past the cap
        # A crdtsync writer: the room is closed on its session (LIMIT_EXCEEDED).
        author = Doc()
        author.text("body").insert(0, "more")
        raw = await RawSync.open(relay.url, docs=[("notes", author)])
        await raw.until(lambda: bool(doc_errors(raw)))
        assert doc_errors(raw)[0].code == ErrorCode.LIMIT_EXCEEDED
        assert "size limit" in doc_errors(raw)[0].reason
        assert await errors(relay, "room_full") == 5
        # Readers still join, and a catch-up that repeats what the room has is taken.
        reader = await YClient.open(relay.url, "notes")
        await reader.sync()
        assert len(reader.text()) == 120_000
        await reader.ws.send(y.encode_sync_step2(reader.doc.export_yjs_update()))
        await reader.sync()
        assert not any(isinstance(msg, y.AuthDenied) for msg in reader.received)
        for c in (writer, reader):
            await c.aclose()
        await raw.aclose()
    async with running_relay(tmp_path, **options) as relay:  # measured again at load
        writer = await YClient.open(relay.url, "notes")
        await writer.sync()
        await writer.edit(lambda d: d.text("body").insert(0, "x"))
        await writer.pump_until(lambda: any(isinstance(x, y.AuthDenied) for x in writer.received))
        assert len(str((await relay.peer.open("notes")).text("body"))) == 120_000
        await writer.aclose()


# -- item 2: nothing a reader sends is stored; nothing is held forever ------------------------


async def _room_with_text(relay: Relay, name: str = "notes", body: str = "hello") -> Doc:
    room = await relay.peer.open(name)
    room.text("body").insert(0, body)
    await relay.peer.flush()  # stored (the relay commits on its store's worker thread)
    return room


async def test_read_only_skip_updates_are_refused_and_never_stored(tmp_path: Path) -> None:
    """Issue 18, item 2: 8-byte Skip updates from a reader were acknowledged, held, stored."""
    async with running_relay(tmp_path, secret=SECRET, max_refused_updates=5) as relay:
        room = await _room_with_text(relay)
        log_before = stored(relay, "notes")[1]
        mine = Doc()
        raw = await RawSync.open(relay.url, docs=[("notes", mine)], token=token(write=False))
        await raw.until(lambda: raw.session.is_synced("notes"))
        for i in range(6):
            raw.session.send_update("notes", skip(4242, 10 + i))
            await raw.flush()
            if i < 5:
                await raw.until(lambda i=i: len(doc_errors(raw)) == i + 1)
                assert doc_errors(raw)[-1].code == ErrorCode.READ_ONLY
                await reopen(raw, "notes", mine)
        assert await raw.closed() is not None
        assert close_code(raw) == ErrorCode.LIMIT_EXCEEDED  # the sixth refusal: closed
        assert room.pending == 0
        assert stored(relay, "notes")[1] == log_before
        # Over y-protocols: "permission denied" five times, then closed (1008).
        client = await YClient.open(relay.url, "notes", token=token(write=False))
        await client.sync()
        for i in range(2000):
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(y.encode_update(skip(4343, 10 + i)))
        code, _, received = await client.closed()
        assert code == 1008
        denied = [msg for msg in client.received + received if isinstance(msg, y.AuthDenied)]
        assert len(denied) == 5
        assert room.pending == 0
        assert stored(relay, "notes")[1] == log_before


async def test_held_updates_are_bounded_per_writer_and_dropped_once_it_left(
    tmp_path: Path,
) -> None:
    """Issue 18, item 2: 2,000 held Skip updates from one writer stayed in every snapshot."""
    async with running_relay(tmp_path) as relay:
        room = await _room_with_text(relay)
        raw = await RawSync.open(relay.url, docs=[("notes", Doc())])
        await raw.until(lambda: raw.session.is_synced("notes"))
        for i in range(2000):
            raw.session.send_update("notes", skip(raw.session.local_peer_id, 10 + 2 * i))
        await raw.flush()
        await raw.until(lambda: bool(doc_errors(raw)))
        assert doc_errors(raw)[0].code == ErrorCode.LIMIT_EXCEEDED
        assert "waiting" in doc_errors(raw)[0].reason
        assert room.pending == 32  # MAX_HELD_PER_SENDER; the 33rd was refused unimported
        assert len(stored(relay, "notes")[1]) == 1 + 32  # the room's text, and what was held
        # A y-protocols writer: the same budget, then closed (1008: reconnecting resends).
        client = await YClient.open(relay.url, "notes")
        await client.sync()
        for i in range(40):
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(y.encode_update(skip(client.doc.peer_id, 10 + 2 * i)))
        code, _, _ = await client.closed()
        assert code == 1008
        assert room.pending == 64
        await raw.aclose()
        await eventually(lambda: relay.peer.users("notes") == 0, what="both writers left")
        # Their senders left: the compaction keeps none of it.
        await relay.peer.close_doc("notes", compact=True)
        snapshot, log = stored(relay, "notes")
        assert snapshot is not None
        assert log == []
        reloaded = Doc.load(snapshot)
        assert reloaded.pending == 0
        assert str(reloaded.text("body")) == "hello"


# -- item 7: read-only checks cost the message, and refusals are budgeted -----------------------


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the relay checked an update against a room, and exported a room.

    ``contains``: ``Doc.contains`` calls (each costs the update: the document's
    validator index answers); ``exports``: a room's state exported (what a check
    reading the room's whole delete set would cost; catch-ups export too).
    """
    counts = {"contains": 0, "exports": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kw: Any) -> Any:
            counts[name] += 1
            return real(*args, **kw)

        return call

    monkeypatch.setattr(Doc, "contains", counting("contains", Doc.contains))
    monkeypatch.setattr(Doc, "export_yjs_update", counting("exports", Doc.export_yjs_update))
    return counts


async def test_read_only_writes_are_refused_on_their_parse_alone(
    tmp_path: Path, checks: dict[str, int]
) -> None:
    """Issue 18, item 7: nine bytes deleting what the room lacks made it export its delete set."""
    async with running_relay(tmp_path, secret=SECRET, max_refused_updates=3) as relay:
        room = await _room_with_text(relay, body="abcdef")
        del room.text("body")[1:3]
        client = await YClient.open(relay.url, "notes", token=token(write=False))
        await client.sync()
        checks.update(contains=0, exports=0)
        for update in (
            delete_only(room.peer_id, 1_000, 5),  # a deletion past the room's clocks
            skip(room.peer_id, 1_000),  # a Skip past them
            delete_only(777, 0, 1),  # a client the room never saw
            delete_only(room.peer_id, 1_000, 5),
        ):
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(y.encode_update(update))
        code, _, _ = await client.closed()
        assert code == 1008  # the fourth refusal
        assert checks == {"contains": 0, "exports": 0}  # the parse was enough
        assert await errors(relay, "read_only") == 3


async def test_read_only_updates_that_need_the_room_checked_are_budgeted(
    tmp_path: Path, checks: dict[str, int]
) -> None:
    """Issue 18, item 7: known deletions repeated at the rate limit read the whole room each."""
    async with running_relay(tmp_path, secret=SECRET, max_refused_updates=4) as relay:
        room = await _room_with_text(relay, body="abcdef")
        del room.text("body")[1:3]
        ((client, ranges),) = parse_update(room.export_yjs_update()).delete_set.items()
        known = delete_only(client, *ranges[0])  # deleted already: harmless, but checked
        client = await YClient.open(relay.url, "notes", token=token(write=False))
        checks.update(contains=0, exports=0)
        # The catch-up (the first sync step 2) is checked for free...
        await client.ws.send(y.encode_sync_step2(known))
        await client.ws.send(y.encode_sync_step1(Version()))
        while not isinstance(y.decode(await client.ws.recv()), y.SyncStep2):
            pass  # the relay's own step 1 is left unanswered: one step 2 from us
        assert checks == {"contains": 1, "exports": 1}  # (the export: our step 1's answer)
        # ... later ones cost the reader's budget: four, then closed; and none
        # reads the room (a check costs the update, however large the room).
        for _ in range(100):
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(y.encode_update(known))
        code, reason, _ = await client.closed()
        assert code == 1008, reason
        assert checks == {"contains": 1 + 4, "exports": 1}
        assert not any(isinstance(msg, y.AuthDenied) for msg in client.received)
        assert room.pending == 0
        # A change of the room: checks still answer from the document's index.
        room.text("body").insert(0, "x")
        await relay.peer.flush()
        checks.update(contains=0, exports=0)
        again = await YClient.open(relay.url, "notes", token=token(write=False))
        await again.ws.send(y.encode_sync_step2(known))
        await again.ws.send(y.encode_sync_step1(Version()))
        replies = []
        while not isinstance(replies[-1] if replies else None, y.SyncStep2):
            replies.append(y.decode(await again.ws.recv()))
        # (the export: its answer, made again since the room changed)
        assert checks == {"contains": 1, "exports": 1}
        assert not any(isinstance(msg, y.AuthDenied) for msg in replies)
        await again.aclose()


def test_doc_contains_answers_known_deletions_as_an_import_would() -> None:
    """What the relay's own copy of a room's deletions answered, Doc.contains answers.

    (The relay kept one, read again after each change, before ``Doc.contains``
    answered from the validator's index; the ground truth here is an import.)
    """
    rnd = random.Random(7)
    doc = Doc(peer_id=5)
    body = doc.text("body")
    body.insert(0, text(400, 3))
    for _ in range(60):
        at = rnd.randrange(len(body))
        del body[at : at + rnd.randrange(1, 4)]
    saved = doc.save()
    before = Doc.load(saved).export_yjs_update()
    clock = doc.version.get(5) or 0
    answers = set()
    for _ in range(300):
        start, length = rnd.randrange(clock), rnd.randrange(1, 6)
        update = delete_only(5, start, length)
        copy = Doc.load(saved)
        copy.import_yjs_update(update)
        unchanged = copy.export_yjs_update() == before
        assert doc.contains(update) == unchanged, update
        answers.add(unchanged)
        # Interleaved with changes of the document, as a room's are.
        if rnd.random() < 0.1:
            at = rnd.randrange(len(body))
            del body[at : at + 1]
            saved = doc.save()
            before = Doc.load(saved).export_yjs_update()
    assert answers == {True, False}


# -- item 8: connections that never authenticate ----------------------------------------------


async def _silent(port: int, source: str, *, upgrade: bool) -> socket.socket | None:
    """A socket from ``source`` that says nothing (after the WebSocket upgrade, if asked).

    Returns it while the relay keeps it; None when the relay closed it first.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await loop.sock_connect(sock, ("127.0.0.1", port))
    if not upgrade:
        return sock
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        await loop.sock_sendall(sock, request.encode())
        head = b""
        async with asyncio.timeout(WAIT):
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 1)
                if not chunk:
                    break
                head += chunk
    except ConnectionError:
        head = b""
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        return None
    return sock


async def _still_open(sock: socket.socket) -> bool:
    """Whether the relay has not closed ``sock`` (it sends nothing to a silent client)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(0.05):
            return bool(await loop.sock_recv(sock, 1))
    except TimeoutError:
        return True
    except ConnectionError:
        return False


async def test_silent_sockets_from_one_address_do_not_lock_others_out(tmp_path: Path) -> None:
    """Issue 18, item 8: 40 silent sockets filled --max-connections 40 for a whole timeout."""
    options = {"max_connections": 40, "max_unauth_per_address": 8, "handshake_timeout": 60}
    async with running_relay(tmp_path, secret=SECRET, **options) as relay:
        upgraded = [await _silent(relay.port, "127.0.0.2", upgrade=True) for _ in range(40)]
        kept = [s for s in upgraded if s is not None]
        assert len(kept) == 8  # the address's share; the others were closed at once
        # Sockets that never even send their HTTP request (a slowloris): the same.
        http = [await _silent(relay.port, "127.0.0.3", upgrade=False) for _ in range(40)]
        alive = [s for s in http if s is not None and await _still_open(s)]
        assert len(alive) == 8
        metrics = local_metrics(relay)
        assert metrics.get("crdtsync_relay_errors_total", kind="too_many_unauthenticated") == 64
        assert metrics.get("crdtsync_relay_unauthenticated_connections") == 16
        # A client with a token gets in at once, over both protocols.
        async with ws_peer() as peer:
            await peer.open("notes")
            await peer.connect(relay.url, token=token(), timeout=WAIT)
            assert await peer.wait_synced("notes", WAIT)
        client = await YClient.open(relay.url, "notes", token=token())
        await client.sync()
        await client.aclose()
        assert await errors(relay, "too_many_connections") == 0
        for sock in http:
            if sock is not None:
                sock.close()
        for sock in kept:
            sock.close()


async def test_pending_connections_beyond_the_budget_evict_the_oldest(tmp_path: Path) -> None:
    options = {"max_unauth_connections": 10, "max_unauth_per_address": 4}
    async with running_relay(tmp_path, secret=SECRET, **options) as relay:
        sources = [f"127.0.0.{i}" for i in range(2, 8)]  # 6 addresses x 4: 24 attempts
        socks = [await _silent(relay.port, src, upgrade=True) for src in sources for _ in range(4)]
        assert all(s is not None for s in socks)  # each admitted, evicting the oldest
        metrics = local_metrics(relay)
        assert metrics.get("crdtsync_relay_errors_total", kind="unauthenticated_evicted") == 14
        assert metrics.get("crdtsync_relay_unauthenticated_connections") == 10
        open_now = [s for s in socks if s is not None and await _still_open(s)]
        assert socks[-10:] == open_now  # the newest ten: the oldest went first
        async with ws_peer() as peer:
            await peer.open("notes")
            await peer.connect(relay.url, token=token(), timeout=WAIT)
            assert await peer.wait_synced("notes", WAIT)
        for sock in socks:
            if sock is not None:
                sock.close()


# -- item 9: rooms a client may make -------------------------------------------------------


async def test_a_reader_opening_a_missing_room_creates_nothing(tmp_path: Path) -> None:
    """Issue 18, item 9: a viewers/* token made 300 permanent rooms in 4 s."""
    async with running_relay(tmp_path, secret=SECRET) as relay:
        reader = token("viewers/*", write=False)
        docs = [(f"viewers/{i}", Doc()) for i in range(20)]
        raw = await RawSync.open(relay.url, docs=docs, token=reader)
        await raw.until(lambda: len(doc_errors(raw)) == 20)
        assert {e.code for e in doc_errors(raw)} == {ErrorCode.DOC_REFUSED}
        assert raw.session.state is p.State.OPEN
        for i in range(20):
            client = await YClient.open(relay.url, f"viewers/y{i}", token=reader)
            code, _, received = await client.closed()
            assert code == 4404
            assert received == []
        assert relay.peer._store.names() == []  # nothing stored, no fsync spent
        assert relay.peer.docs() == []
        assert await errors(relay, "no_such_room") == 20
        # A room that exists is joined as before.
        await _room_with_text(relay, "viewers/real")
        client = await YClient.open(relay.url, "viewers/real", token=reader)
        await client.sync()
        assert client.text() == "hello"
        await client.aclose()
        await raw.aclose()


async def test_rooms_are_capped_in_all_and_per_address_per_minute(tmp_path: Path) -> None:
    async with running_relay(tmp_path, max_rooms=30, max_new_rooms_per_min=10) as relay:
        # One address: ten new rooms, then refused (crdtsync: LIMIT_EXCEEDED on each).
        docs = [(f"r{i}", Doc()) for i in range(15)]
        raw = await RawSync.open(relay.url, docs=docs)
        await raw.until(lambda: len(doc_errors(raw)) == 5)
        assert {e.code for e in doc_errors(raw)} == {ErrorCode.LIMIT_EXCEEDED}
        assert len(relay.peer._store.names()) == 10
        client = await YClient.open(relay.url, "r-y")
        code, _, _ = await client.closed()
        assert code == 4529  # y-websocket retries later
        assert await errors(relay, "room_rate") == 6
        # Rooms that exist are no new rooms.
        again = await YClient.open(relay.url, "r3")
        await again.sync()
        await again.aclose()
        await raw.aclose()
        # Other addresses fill the store up to max_rooms; then nobody creates one.
        for source in ("127.0.0.2", "127.0.0.3"):
            docs = [(f"{source}-{i}", Doc()) for i in range(10)]
            raw = await RawSync.open(relay.url, docs=docs, local_addr=(source, 0))
            names = [n for n, _ in docs]
            await raw.until(lambda r=raw, ns=names: sum(r.session.is_synced(n) for n in ns) == 10)
            await raw.aclose()
        assert len(relay.peer._store.names()) == 30
        client = await YClient.open(relay.url, "one-more", local_addr=("127.0.0.4", 0))
        code, _, _ = await client.closed()
        assert code == 4413
        assert await errors(relay, "room_limit") == 1
        assert len(relay.peer._store.names()) == 30


# -- presence: a byte budget per connection; cached answers ------------------------------------


def _awareness(entries: list[tuple[int, int, str]]) -> bytes:
    out = bytearray()
    write_varuint(out, len(entries))
    for client, clock, state in entries:
        write_varuint(out, client)
        write_varuint(out, clock)
        raw = state.encode()
        write_varuint(out, len(raw))
        out += raw
    return y.encode_awareness(bytes(out))


async def test_presence_of_one_connection_is_budgeted_in_bytes(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        await _room_with_text(relay)
        other = await YClient.open(relay.url, "notes")
        await other.sync()
        await other.set_presence({"user": "other"})
        big = json.dumps({"junk": "x" * 60_000})  # ~60 KB each: under the state cap
        client = await YClient.open(relay.url, "notes")
        await client.sync()
        for i in range(6):  # 360 KB: within the connection's budget
            await client.ws.send(_awareness([(5000 + i, 1, big)]))
        await client.sync()
        room = relay.peer.presence("notes")
        assert len(room.states) == 7
        with contextlib.suppress(ConnectionClosed):
            await client.ws.send(_awareness([(5006, 1, big)]))
        code, _, _ = await client.closed()
        assert code == 1008
        await eventually(lambda: len(room.states) == 1, what="its states leave with it")
        assert room.states.get(other.doc.peer_id) == {"user": "other"}
        await other.aclose()


async def test_presence_queries_are_answered_from_one_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encodings: list[int] = []
    real = Awareness.encode_update

    def counting(self: Awareness, clients: Any) -> bytes:
        encodings.append(1)
        return real(self, clients)

    async with running_relay(tmp_path) as relay:
        await _room_with_text(relay)
        members = [await YClient.open(relay.url, "notes") for _ in range(3)]
        for i, member in enumerate(members):
            await member.sync()
            await member.set_presence({"user": f"u{i}"})
        client = await YClient.open(relay.url, "notes")
        await client.sync()
        monkeypatch.setattr(Awareness, "encode_update", counting)
        for _ in range(3):  # Y_ANSWER_BURST is 4: its sync step 1 was one
            await client.ws.send(y.encode_query_awareness())
        answers: list[bytes] = []
        while len(answers) < 3:
            msg = await client.recv()
            if isinstance(msg, y.AwarenessMessage):
                answers.append(msg.data)
        assert len(set(answers)) == 1
        assert len(decode_awareness(answers[0])) == 3
        assert len(encodings) <= 1  # encoded once (or already cached), answered 3 times
        for c in [*members, client]:
            await c.aclose()


# -- the adversarial pass: whole answers asked for again and again ------------------------------


async def test_catch_ups_asked_again_and_again_are_budgeted(tmp_path: Path) -> None:
    """A client that reads fast can ask for a whole room at the full message rate."""
    async with running_relay(tmp_path) as relay:
        await _room_with_text(relay, body=text(50_000, 1))
        client = await YClient.open(relay.url, "notes")
        for _ in range(10):  # step 1 from nothing: the whole room each time
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(y.encode_sync_step1(Version()))
        code, _, received = await client.closed()
        assert code == 4529
        assert sum(isinstance(msg, y.SyncStep2) for msg in received) == 4  # Y_ANSWER_BURST
        assert await errors(relay, "rate_limited") == 1
        # crdtsync: opening and closing a room again and again (each open is a catch-up).
        raw = await RawSync.open(relay.url)
        await raw.until(lambda: raw.session.state is p.State.OPEN)
        opened = 0
        with contextlib.suppress(ConnectionClosed):
            for _ in range(200):
                await reopen(raw, "notes", Doc())
                opened += 1
                raw.session.refuse_doc("notes", ProtocolError("bye", code=ErrorCode.DOC_REFUSED))
                await raw.flush()
        assert opened == 128  # SYNC_OPEN_BURST (max_docs_per_conn is 64)
        assert await raw.closed() is not None
        assert close_code(raw) == ErrorCode.LIMIT_EXCEEDED


async def test_presence_churn_is_budgeted_in_bytes_per_second(tmp_path: Path) -> None:
    """Every presence message goes to the whole room: a fast one is dropped, not sent on."""
    async with running_relay(tmp_path, secret=SECRET) as relay:
        await _room_with_text(relay)
        observer = await YClient.open(relay.url, "notes", token=token(write=False))
        await observer.sync()
        churner = await YClient.open(relay.url, "notes", token=token(write=False))
        await churner.sync()
        for i in range(100):  # 100 x 60 KB: 6 MB of presence in a moment
            state = json.dumps({"n": i, "junk": "x" * 60_000})
            await churner.ws.send(_awareness([(6000, i + 1, state)]))
        await churner.sync()  # every one of them was handled
        await observer.sync()
        seen = [
            msg
            for msg in observer.received
            if isinstance(msg, y.AwarenessMessage)
            and any(c == 6000 for c, _, _ in decode_awareness(msg.data))
        ]
        # A burst of 512 KB (8 of them), and 64 KB/s after: far fewer than 100
        # however slow this machine is (the test takes seconds, not a minute).
        assert 8 <= len(seen) < 40
        assert not churner.ws.close_code  # dropped, not closed: the next one says it all
        await observer.aclose()
        await churner.aclose()


async def test_a_sender_past_its_byte_rate_is_read_more_slowly(tmp_path: Path) -> None:
    """200 messages of a megabyte a second were read as fast as they came (CPU, memory)."""
    options = {"max_update": 16 << 10, "max_bytes_per_sec": 1 << 10}  # a burst of 32 KiB
    async with running_relay(tmp_path, **options) as relay:
        writer = await YClient.open(relay.url, "notes")
        await writer.sync()  # two messages: its step 1, its step 2
        for i in range(4):
            await writer.edit(lambda d, i=i: d.text("body").insert(0, text(12_000, i)))
        room = await relay.peer.open("notes")
        # Three fit the burst (the third into debt); the fourth waits for the
        # debt to be paid (seconds), and nothing more is read of it meanwhile
        # (a round trip of another client shows it).
        await eventually(lambda: len(str(room.text("body"))) == 36_000, what="three updates in")
        other = await YClient.open(relay.url, "notes")
        await other.sync()
        assert len(other.text()) == 36_000
        await other.aclose()
        received = local_metrics(relay).get("crdtsync_relay_messages_received_total", protocol="y")
        assert received == 2 + 3 + 2  # (and the other client's two)
        assert writer.ws.close_code is None  # slowed, not closed
        await writer.aclose()


async def test_connections_opened_too_fast_from_one_address_are_closed(tmp_path: Path) -> None:
    """Each connection costs a handshake and a token check, whatever it does next."""
    async with running_relay(tmp_path, max_new_conns_per_sec=1.0) as relay:  # bursts of 10
        opened = 0
        for _ in range(15):
            with contextlib.suppress(OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
                client = await YClient.open(relay.url, "notes", local_addr=("127.0.0.2", 0))
                await client.sync()
                await client.aclose()
                opened += 1
        assert opened == 10
        assert local_metrics(relay).get("crdtsync_relay_errors_total", kind="connection_rate") == 5
        # Another address has its own budget.
        client = await YClient.open(relay.url, "notes", local_addr=("127.0.0.3", 0))
        await client.sync()
        await client.aclose()


async def test_compressed_updates_are_budgeted_by_what_they_inflate_to(tmp_path: Path) -> None:
    """A hundred bytes of zstd may carry a whole update: it is charged as such."""
    options = {"max_update": 64 << 10, "max_bytes_per_sec": 1 << 10}  # a burst of 128 KiB
    async with running_relay(tmp_path, **options) as relay:
        author = Doc()
        raw = await RawSync.open(relay.url, docs=[("notes", author)])
        await raw.until(lambda: raw.session.is_synced("notes"))
        for i in range(5):
            before = author.version
            author.text("body").insert(0, chr(ord("a") + i) * 60_000)  # 60 KB, compresses
            update = author.export_yjs_update(since=before)
            raw.session.send_update("notes", update)
        frames = raw.session.data_to_send()
        assert all(len(f) < 1000 for f in frames)  # tiny on the wire
        for frame in frames:
            raw.frames_sent += 1
            await raw.ws.send(frame)
        room = await relay.peer.open("notes")
        # Two fit the burst, the third takes it into debt: the rest waits.
        await eventually(lambda: len(str(room.text("body"))) == 180_000, what="three imported")
        # A round trip of another client: the two left were sent long before it,
        # and still are not read.
        other = await YClient.open(relay.url, "notes")
        await other.sync()
        assert len(other.text()) == 180_000
        assert raw.ws.close_code is None  # slowed, not closed
        await other.aclose()
        await raw.aclose()


async def test_a_crdtsync_sender_past_its_byte_rate_is_read_more_slowly(tmp_path: Path) -> None:
    """The wire budget of a crdtsync connection: presence frames, never imported, count too."""
    options = {"max_update": 64 << 10, "max_bytes_per_sec": 1 << 10}  # a burst of 128 KiB
    async with running_relay(tmp_path, **options) as relay:
        await _room_with_text(relay)
        raw = await RawSync.open(relay.url, docs=[("notes", Doc())])
        await raw.until(lambda: raw.session.is_synced("notes"))
        before = local_metrics(relay).get(
            "crdtsync_relay_bytes_received_total", protocol="crdtsync"
        )
        for i in range(10):  # 10 x 60 KB of presence, each its own WebSocket message
            raw.session.send_awareness(
                "notes", encode_awareness([(9, i + 1, {"x": text(60_000, i)})])
            )
            await raw.flush()
        other = await YClient.open(relay.url, "notes")
        await other.sync()  # a round trip: whatever the relay would read of them, it has
        got = local_metrics(relay).get("crdtsync_relay_bytes_received_total", protocol="crdtsync")
        assert 120_000 < got - before < 250_000  # three of them: the burst, into debt
        assert raw.ws.close_code is None  # slowed, not closed
        await other.aclose()
        await raw.aclose()
