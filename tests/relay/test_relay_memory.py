"""Catch-up answers and the memory of loaded rooms (issue 18, the budgets' follow-up).

A real relay on 127.0.0.1 and real y-protocols / crdtsync clients. The tests
hold each budget in counts, bytes and close codes, never in timings
(``scripts/relay_budgets.py`` measures what they cost other rooms).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import (
    WAIT,
    Metrics,
    RawSync,
    YClient,
    errors,
    http_get,
    parse_metrics,
    running_relay,
    ws_peer,
)
from helpers.waiting import eventually

from crdtsync import Doc, ErrorCode, RelayFullError, Status
from crdtsync.format.version import Version
from crdtsync.peer.guests import Guest
from crdtsync.protocol import messages as m
from crdtsync.protocol import yprotocol as y
from crdtsync.relay import Relay, RelayConfig
from crdtsync.relay.answers import Answers
from crdtsync.store.memory import MemoryStore

pytestmark = pytest.mark.anyio


def text(n: int, seed: int) -> str:
    rnd = random.Random(seed)
    return "".join(rnd.choices(string.ascii_letters + string.digits, k=n))


def exports(monkeypatch: pytest.MonkeyPatch) -> list[Version]:
    """The versions every catch-up the relay's rooms made was asked from."""
    asked: list[Version] = []
    real = Guest.catch_up

    def counting(self: Guest, since: Version) -> bytes:
        asked.append(since)
        return real(self, since)

    monkeypatch.setattr(Guest, "catch_up", counting)
    return asked


async def answer(client: YClient, since: Version) -> bytes:
    """Ask the room for what ``since`` lacks; the update of the sync step 2 that answers."""
    await client.ws.send(y.encode_sync_step1(since))
    while True:
        msg = await client.recv()
        if isinstance(msg, y.SyncStep2):
            return msg.update


def step2s(client: YClient) -> int:
    return sum(isinstance(msg, y.SyncStep2) for msg in client.received)


# -- the full-state answer: made once per change of the room -----------------------------------


async def test_full_catch_ups_are_made_once_per_change_of_the_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4 MB room cost a 4 MB export per sync step 1 from nothing, on the event loop."""
    async with running_relay(tmp_path) as relay:
        room = await relay.peer.open("notes")
        room.text("body").insert(0, text(50_000, 1))
        asked = exports(monkeypatch)
        clients = [await YClient.open(relay.url, "notes") for _ in range(3)]
        answers = [await answer(c, Version()) for c in clients]
        # A version naming only writers the room never had asks for all of it too.
        answers.append(await answer(clients[0], Version({987_654: 12})))
        assert len(set(answers)) == 1
        assert asked == [Version()]  # one export for four answers
        for c in clients:
            c.doc.import_yjs_update(answers[0])
            assert c.text() == str(room.text("body"))
        # A deletion changes no state vector: the cached answer must go all the same.
        writer = clients[1]
        await writer.edit(lambda d: d.text("body").delete(0, 10))
        await eventually(lambda: len(str(room.text("body"))) == 49_990, what="the deletion in")
        fresh = await answer(clients[2], Version())
        assert len(asked) == 2
        newcomer = Doc()
        newcomer.import_yjs_update(fresh)
        assert str(newcomer.text("body")) == str(room.text("body"))
        # A client that holds part of the room gets what it lacks, not the cache.
        partial = Doc()
        partial.import_yjs_update(fresh)
        await answer(clients[2], partial.version)
        assert asked[-1] == partial.version
        for c in clients:
            await c.aclose()


async def test_a_room_loaded_again_answers_from_its_new_state(tmp_path: Path) -> None:
    async with running_relay(tmp_path, idle_unload=0.05) as relay:
        room = await relay.peer.open("notes")
        room.text("body").insert(0, "before")
        client = await YClient.open(relay.url, "notes")
        first = Doc()
        first.import_yjs_update(await answer(client, Version()))
        assert str(first.text("body")) == "before"
        await client.aclose()
        await eventually(lambda: "notes" not in relay.peer.docs(), what="the room unloaded")
        again = await relay.peer.open("notes")
        again.text("body").insert(0, "after, ")
        await relay.peer.flush()  # stored (on the store's worker thread)
        await relay.peer.close_doc("notes")  # its cache must not outlive it
        client = await YClient.open(relay.url, "notes")
        second = Doc()
        second.import_yjs_update(await answer(client, Version()))
        assert str(second.text("body")) == "after, before"
        await client.aclose()


# -- whole answers: a byte budget per address ---------------------------------------------------


async def test_answers_are_budgeted_in_bytes_per_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reconnecting gave a reader a new burst of answers: four whole rooms per connection."""
    answered: list[str] = []  # the host of each answer sent, in order
    real = Answers.spend

    def spend(self: Answers, address: str, size: int, *, now: float) -> None:
        answered.append(address.rpartition(":")[0])
        real(self, address, size, now=now)

    monkeypatch.setattr(Answers, "spend", spend)
    rate = 5_000  # bytes a second per address, bursts of 20 KB
    async with running_relay(tmp_path, max_answer_bytes_per_sec=rate) as relay:
        room = await relay.peer.open("notes")
        room.text("body").insert(0, text(30_000, 2))
        first = await YClient.open(relay.url, "notes")
        await first.sync()  # sent whole (larger than the burst): 10 KB owed, 2 s
        assert len(first.text()) == 30_000

        # A second connection from the same address asks; the relay has read it...
        def received() -> float:
            return local_metrics(relay).get("crdtsync_relay_messages_received_total", protocol="y")

        before = received()
        second = await YClient.open(relay.url, "notes")
        await second.ws.send(y.encode_sync_step1(Version()))
        await eventually(lambda: received() == before + 1, what="the second question read")
        # ...and waits for the debt to be paid, while another address is answered
        # at once (the debt is seconds long; a join is milliseconds).
        other = await YClient.open(relay.url, "notes", local_addr=("127.0.0.2", 0))
        await other.sync()
        assert len(other.text()) == 30_000
        assert answered == ["127.0.0.1", "127.0.0.2"]
        # Paid (within the test's wait): answered, whole, and not closed.
        await second.pump_until(lambda: step2s(second) == 1)
        assert len(second.text()) == 30_000
        assert answered == ["127.0.0.1", "127.0.0.2", "127.0.0.1"]
        assert second.ws.close_code is None
        for c in (first, second, other):
            await c.aclose()


# -- --max-loaded-bytes: idle rooms unloaded least recently used first ---------------------------


def local_metrics(relay: Relay) -> Metrics:
    return parse_metrics(relay.metrics.render())


async def _fill(relay: Relay, name: str, size: int, seed: int) -> YClient:
    """A writer in room ``name`` that wrote ``size`` characters (stored)."""
    client = await YClient.open(relay.url, name)
    await client.sync()
    await client.edit(lambda d: d.text("body").insert(0, text(size, seed)))
    await client.sync()  # answered after the commit: stored
    return client


async def test_loaded_rooms_are_capped_in_bytes(tmp_path: Path) -> None:
    cap = 100_000
    options: dict[str, Any] = {"max_loaded_bytes": cap, "idle_unload": 3600.0}
    async with running_relay(tmp_path, **options) as relay:
        a = await _fill(relay, "a", 60_000, 1)
        await a.aclose()  # "a" is idle (and stays loaded: idle_unload is an hour)
        await eventually(lambda: relay.peer.users("a") == 0, what="a left")
        b = await _fill(relay, "b", 60_000, 2)  # under the cap when it loaded
        assert relay.peer.docs() == ["a", "b"]
        gauge = local_metrics(relay).get("crdtsync_relay_loaded_bytes")
        assert gauge >= 120_000
        # Over the cap: a new room first unloads the idle one.
        c = await _fill(relay, "c", 60_000, 3)
        assert relay.peer.docs() == ["b", "c"]
        assert local_metrics(relay).get("crdtsync_relay_rooms_unloaded_total") == 1
        # Every loaded room in use: a new one is refused, retryably, and not created.
        d = await YClient.open(relay.url, "d")
        code, reason, _ = await d.closed()
        assert code == 1013
        assert "in use" in reason
        assert await errors(relay, "loaded_full") == 1
        assert "d" not in relay.peer._store.names()  # the store: nothing else tells
        # So is a crdtsync session's (LIMIT_EXCEEDED on that document only).
        raw = await RawSync.open(relay.url, docs=[("e", Doc()), ("b", Doc())])
        await raw.until(
            lambda: (
                raw.session.is_synced("b")
                and any(isinstance(msg, m.DocError) for msg in raw.messages)
            )
        )
        refusal = next(msg for msg in raw.messages if isinstance(msg, m.DocError))
        assert (refusal.name, refusal.code) == ("e", ErrorCode.LIMIT_EXCEEDED)
        assert refusal.detail == ErrorCode.TRY_AGAIN_LATER  # older peers read LIMIT_EXCEEDED
        assert await errors(relay, "loaded_full") == 2
        await raw.aclose()
        # Once a room is left, the client trying again gets in; the idle room's
        # content is intact in the store and comes back when asked for.
        await b.aclose()
        await eventually(lambda: relay.peer.users("b") == 0, what="b left")
        d = await _fill(relay, "d", 10, 4)
        assert "b" not in relay.peer.docs()
        await c.aclose()
        await eventually(lambda: relay.peer.users("c") == 0, what="c left")
        again = await YClient.open(relay.url, "a")
        await again.sync()
        assert again.text() == text(60_000, 1)
        for client in (d, again):
            await client.aclose()


async def test_loaded_rooms_that_grow_are_shed_by_the_sweep(tmp_path: Path) -> None:
    """Rooms grow while loaded: the sweep unloads idle ones until they fit again."""
    options: dict[str, Any] = {"max_loaded_bytes": 100_000, "idle_unload": 3600.0}
    async with running_relay(tmp_path, **options) as relay:
        b = await _fill(relay, "b", 10, 2)
        a = await _fill(relay, "a", 10, 1)
        await a.edit(lambda d: d.text("body").insert(0, text(150_000, 5)))
        await a.sync()
        await a.aclose()
        # "a" alone is over the cap: the sweep (every 5 s) unloads it, long before
        # idle_unload; "b", in use, stays.
        await eventually(lambda: "a" not in relay.peer.docs(), timeout=20.0, what="a shed")
        assert "b" in relay.peer.docs()
        await b.aclose()


# -- group commit off the event loop ------------------------------------------------------------


class _SlowDisk(MemoryStore):
    """A store whose commits wait until the test lets them through (a slow fsync)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def append_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        if not self.gate.is_set():
            self.waiting.set()
            # Bounded: a relay that commits on its event loop would wait here with
            # its whole loop; the test then fails on its own timeouts, not a hang.
            self.gate.wait(30.0)
        return super().append_many(items)


async def test_the_commit_runs_off_the_event_loop_and_nothing_leaves_before_it(
    tmp_path: Path,
) -> None:
    """Each group commit (an fsync) ran on the event loop: every room waited for it."""
    store = _SlowDisk()
    relay = Relay(RelayConfig(port=0, host="127.0.0.1", data=None), store=store)
    await relay.start()
    try:
        writer = await YClient.open(relay.url, "notes")
        reader = await YClient.open(relay.url, "notes")
        for c in (writer, reader):
            await c.sync()
        store.gate.clear()  # the disk stalls
        await writer.edit(lambda d: d.text("body").insert(0, "hello"))
        await asyncio.to_thread(store.waiting.wait, WAIT)
        assert store.waiting.is_set(), "the update never reached the store"
        # Meanwhile the relay goes on: it answers HTTP probes, and reads and
        # imports what comes next (the next group commit's), in memory.
        status, _ = await http_get(relay, "/healthz")
        assert status == 200
        await writer.edit(lambda d: d.text("body").insert(5, ", world"))
        room = await relay.peer.open("notes")
        await eventually(lambda: str(room.text("body")) == "hello, world", what="imported")
        # Nothing that carries the update has left: the reader has not got it.
        assert reader.text() == ""
        with contextlib.suppress(AssertionError):
            await reader.pump_until(lambda: reader.text() != "", timeout=0.2)
        assert reader.text() == ""
        store.gate.set()  # stored: now it goes out
        await reader.pump_until(lambda: reader.text() == "hello, world")
        found = store.load("notes")
        assert found is not None
        assert len(found.updates) >= 2  # (each commit stored, the stalled one too)
        for c in (writer, reader):
            await c.aclose()
    finally:
        store.gate.set()
        await relay.close()


async def test_a_catch_up_during_a_stalled_commit_carries_what_was_imported(
    tmp_path: Path,
) -> None:
    """The cached full-state answer went stale until the commit completed.

    The relay heard of a transaction (and dropped the room's cached answer) only
    once it was stored; a client that synced from nothing meanwhile was answered
    from the cache made before the update, and never got it (the update's own
    send had already gone to the room's members of its time).
    """
    store = _SlowDisk()
    relay = Relay(RelayConfig(port=0, host="127.0.0.1", data=None), store=store)
    await relay.start()
    try:
        writer = await YClient.open(relay.url, "notes")
        await writer.sync()  # the room's (empty) full-state answer is cached
        store.gate.clear()  # the disk stalls
        await writer.edit(lambda d: d.text("body").insert(0, "hello"))
        room = await relay.peer.open("notes")
        await eventually(lambda: str(room.text("body")) == "hello", what="imported")
        newcomer = await YClient.open(relay.url, "notes")
        await newcomer.ws.send(y.encode_sync_step1(newcomer.doc.version))
        store.gate.set()  # stored: the answer may leave now
        await newcomer.pump_until(lambda: newcomer.text() == "hello")
        for c in (writer, newcomer):
            await c.aclose()
    finally:
        store.gate.set()
        await relay.close()


async def test_a_peer_refused_for_a_full_relay_tries_the_room_again_by_itself(
    tmp_path: Path,
) -> None:
    options: dict[str, Any] = {"max_loaded_bytes": 50_000, "idle_unload": 3600.0}
    async with running_relay(tmp_path, **options) as relay:
        busy = await _fill(relay, "busy", 60_000, 5)  # in use, and over the cap alone
        statuses: list[Status] = []
        async with ws_peer() as peer:
            peer.on_status(statuses.append)
            doc = await peer.open("later")
            doc.text("body").insert(0, "written while the relay was full")
            await peer.connect(relay.url)
            await eventually(
                lambda: any(s.kind == "error" and s.doc == "later" for s in statuses),
                what="the refusal",
            )
            refusal = next(s for s in statuses if s.kind == "error" and s.doc == "later")
            assert isinstance(refusal.error, RelayFullError)
            assert "later" not in relay.peer.docs()
            # The busy room is left: the peer's next try gets in, with no call from the app.
            await busy.aclose()
            await eventually(lambda: peer.is_synced("later"), timeout=30, what="the retry")
            assert str((await relay.peer.open("later")).text("body")) == (
                "written while the relay was full"
            )
        assert await errors(relay, "loaded_full") >= 1
