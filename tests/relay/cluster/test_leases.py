"""Room leases and fencing on a real PostgreSQL: races, expiry, takeover, stale writers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from helpers.waiting import until

from crdtsync import StoreError, StoreLockedError
from crdtsync.relay.cluster.events import LeaseEvent, LeaseEvents
from crdtsync.relay.cluster.leases import Lease, LeaseFence, Leases, Owner
from crdtsync.store.postgres import PostgresStore


def expire(dsn: str, node: Node) -> None:
    """End ``node``'s lease now, as if its TTL had run out on the database's clock.

    Deterministic where waiting for a TTL would be timing-dependent on a loaded
    machine; the real TTL path has tests of its own (and the partition tests).
    """
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "UPDATE crdtsync.nodes SET expires_at = now() - interval '1 second' WHERE id = %s",
            (node.leases.node_id,),
        )


class Node:
    """A test node: its leases and its fenced store, on one database."""

    def __init__(self, dsn: str, name: str, ttl: float = 3600.0) -> None:
        self.leases = Leases(dsn, f"ws://{name}.test:1234", ttl=ttl)
        self.leases.register()
        self.store = PostgresStore(dsn, fence=self.leases.fence)

    def close(self) -> None:
        self.store.close()
        self.leases.close()


@pytest.fixture
def nodes(pg_dsn: str) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(name: str, ttl: float = 3600.0) -> Node:
        node = Node(pg_dsn, name, ttl)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def log_of(store: PostgresStore, room: str) -> list[bytes]:
    doc = store.load(room)
    assert doc is not None
    return [u for _, u in doc.updates]


def test_two_nodes_race_for_rooms_and_exactly_one_wins_each(nodes: Callable[..., Node]) -> None:
    a, b = nodes("a"), nodes("b")
    rooms = [f"room-{i}" for i in range(40)]
    barrier = threading.Barrier(2)

    def race(node: Node) -> list[Lease | Owner]:
        out = []
        for room in rooms:
            barrier.wait(30)  # both ask for each room at the same moment
            out.append(node.leases.acquire(room))
        return out

    with ThreadPoolExecutor(2) as pool:
        ra, rb = pool.map(race, [a, b])
    for room, x, y in zip(rooms, ra, rb, strict=True):
        winners = [r for r in (x, y) if isinstance(r, Lease)]
        assert len(winners) == 1, (room, x, y)
        loser = y if isinstance(x, Lease) else x
        assert isinstance(loser, Owner)
        winner_node = a if isinstance(x, Lease) else b
        assert loser.node == winner_node.leases.node_id
        assert loser.url == winner_node.leases.url
        assert loser.epoch == winners[0].epoch == 1
    assert set(a.leases.held()) | set(b.leases.held()) == set(rooms)
    assert not set(a.leases.held()) & set(b.leases.held())
    # Acquiring what one already holds is not a new epoch (no reload needed).
    holder = a if a.leases.held() else b
    mine = next(iter(holder.leases.held()))
    again = holder.leases.acquire(mine)
    assert isinstance(again, Lease)
    assert (again.epoch, again.fresh) == (1, False)


def test_two_nodes_racing_to_take_over_a_dead_owners_rooms_never_both_win(
    nodes: Callable[..., Node], pg_dsn: str
) -> None:
    # The takeover race: both lock the row; the second must see the first's takeover
    # (a locking query with a join re-checks the joined rows of its first snapshot:
    # it saw the dead owner, and took the room from the live winner; found by the
    # kill -9 runs of scripts/cluster_kill.py).
    dead, a, b = nodes("dead"), nodes("a"), nodes("b")
    rooms = [f"room-{i}" for i in range(40)]
    for room in rooms:
        assert isinstance(dead.leases.acquire(room), Lease)
    expire(pg_dsn, dead)
    barrier = threading.Barrier(2)

    def race(node: Node) -> list[Lease | Owner]:
        out = []
        for room in rooms:
            barrier.wait(30)
            out.append(node.leases.acquire(room))
        return out

    with ThreadPoolExecutor(2) as pool:
        ra, rb = pool.map(race, [a, b])
    for room, x, y in zip(rooms, ra, rb, strict=True):
        winners = [r for r in (x, y) if isinstance(r, Lease)]
        assert len(winners) == 1, (room, x, y)
        assert winners[0].epoch == 2
        loser = y if isinstance(x, Lease) else x
        assert isinstance(loser, Owner)
        assert loser.epoch == 2
    assert not set(a.leases.held()) & set(b.leases.held())


def test_an_expired_lease_is_taken_over_with_a_higher_epoch(nodes: Callable[..., Node]) -> None:
    a = nodes("a", ttl=3.0)
    b = nodes("b")
    a.leases.heartbeat()
    assert isinstance(a.leases.acquire("r"), Lease)
    # Alive (A's session is open and its heartbeat fresh): B is sent to A.
    taken = b.leases.acquire("r")
    assert isinstance(taken, Owner)
    assert taken.url == "ws://a.test:1234"
    # A stops renewing (a pause): on the database's clock its lease runs out.
    until(lambda: b.leases.owner("r") is None, what="A's lease to expire")
    lease = b.leases.acquire("r")
    assert isinstance(lease, Lease)
    assert (lease.epoch, lease.fresh) == (2, True)
    # A learns it at its next heartbeat: the room is gone from what it holds.
    assert "r" not in a.leases.heartbeat()
    assert "r" not in a.leases.held()
    assert a.leases.acquire("r") == Owner("r", b.leases.node_id, "ws://b.test:1234", 2)


def test_a_stale_owner_writes_nothing(nodes: Callable[..., Node], pg_dsn: str) -> None:
    a = nodes("a")
    b = nodes("b")
    rooms = [f"r{i}" for i in range(5)]
    for room in rooms:
        assert isinstance(a.leases.acquire(room), Lease)
        a.store.create(room, b"")
        a.store.append(room, b"a1")
    # A pauses past its lease (no heartbeat, no write), and B takes every room.
    expire(pg_dsn, a)
    assert all(b.leases.owner(r) is None for r in rooms)
    for room in rooms:
        lease = b.leases.acquire(room)
        assert isinstance(lease, Lease)
        assert lease.epoch == 2
        b.store.append(room, b"b1")
    # A wakes up still believing it owns the rooms: the database refuses every
    # kind of write, in the write's own transaction, and stores nothing.
    assert set(a.leases.held()) == set(rooms)
    writes = [
        lambda: a.store.append("r0", b"a2"),
        lambda: a.store.append_many([("r1", b"a3"), ("r1", b"a4")]),
        lambda: a.store.compact("r2", b"a-snapshot", 10**9),
        lambda: a.store.create("r3", b"a-epoch"),
        lambda: a.store.delete("r4"),
    ]
    for write in writes:
        with pytest.raises(StoreLockedError, match="fenced"):
            write()
    assert a.leases.fence.refused == 5
    for room in rooms:
        doc = b.store.load(room)
        assert doc is not None
        assert doc.epoch == b""
        assert doc.snapshot is None
        assert [u for _, u in doc.updates] == [b"a1", b"b1"]
    # Once fenced, A refuses locally, without asking the database.
    assert a.leases.held() == {}
    with pytest.raises(StoreLockedError, match="not owned"):
        a.store.append("r0", b"a5")
    assert isinstance(a.leases.fence, LeaseFence)


def test_a_write_in_flight_and_a_takeover_are_serialized(
    nodes: Callable[..., Node], pg_dsn: str
) -> None:
    """A write that passed the fence commits before the takeover can: the new owner sees it."""
    a = nodes("a")
    b = nodes("b")
    assert isinstance(a.leases.acquire("r"), Lease)
    a.store.create("r", b"")
    checked = threading.Event()
    go = threading.Event()

    class Pausing:
        """A's fence, pausing after its check (the share lock is held)."""

        def check(self, conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
            a.leases.fence.check(conn, names)
            checked.set()
            assert go.wait(60)

    paused = PostgresStore(pg_dsn, fence=Pausing())
    try:
        with ThreadPoolExecutor(2) as pool:
            write = pool.submit(paused.append, "r", b"in-flight")
            assert checked.wait(60)
            expire(pg_dsn, a)  # A's lease runs out while its write is in flight
            assert b.leases.owner("r") is None
            take = pool.submit(b.leases.acquire, "r")
            # B's takeover waits on the row lock A's write holds.
            until(lambda: _waiting_on_lock(pg_dsn, f"crdtsync-node-{b.leases.node_id:x}"))
            assert not take.done()
            go.set()
            write.result(60)
            lease = take.result(60)
        assert isinstance(lease, Lease)
        assert lease.fresh
        # B loads after its takeover committed: A's acknowledged write is there.
        assert log_of(b.store, "r") == [b"in-flight"]
        # And A's next write is fenced.
        with pytest.raises(StoreLockedError):
            paused.append("r", b"after")
        assert log_of(b.store, "r") == [b"in-flight"]
    finally:
        go.set()
        paused.close()


def _waiting_on_lock(dsn: str, application_name: str) -> bool:
    with psycopg.connect(dsn) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
    return row is not None and row[0] > 0


def test_a_node_killed_with_sigkill_is_seen_dead_without_waiting_for_its_ttl(
    nodes: Callable[..., Node], pg_dsn: str
) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from crdtsync.relay.cluster.leases import Leases
        from crdtsync.store.postgres import PostgresStore
        leases = Leases({pg_dsn!r}, "ws://victim.test:1", ttl=3600)
        leases.register()
        print(type(leases.acquire("r")).__name__, flush=True)
        store = PostgresStore({pg_dsn!r}, fence=leases.fence)
        store.create("r", b"")
        store.append("r", b"acked")
        print("ready", flush=True)
        sys.stdin.readline()
        """
    )
    b = nodes("b")
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as victim:
        try:
            assert victim.stdout is not None
            assert victim.stdout.readline().strip() == "Lease"
            assert victim.stdout.readline().strip() == "ready"
            assert isinstance(b.leases.acquire("r"), Owner)
        finally:
            victim.kill()
            victim.wait(60)
    # The lease had an hour to run; the dead session ends it as soon as
    # PostgreSQL notices the closed connection.
    until(lambda: isinstance(b.leases.acquire("r"), Lease), what="the takeover")
    assert b.leases.held() == {"r": 2}
    assert log_of(b.store, "r") == [b"acked"]


def test_an_expired_node_that_nobody_replaced_may_renew_and_write_again(
    nodes: Callable[..., Node], pg_dsn: str
) -> None:
    a = nodes("a")
    b = nodes("b")
    assert isinstance(a.leases.acquire("r"), Lease)
    a.store.create("r", b"")
    expire(pg_dsn, a)
    assert b.leases.owner("r") is None
    with pytest.raises(StoreLockedError):
        a.store.append("r", b"while-expired")
    # The refusal made A drop the room locally; the heartbeat shows the
    # database still names A at the same epoch (nobody took it over).
    assert a.leases.heartbeat() == {"r": 1}
    lease = a.leases.acquire("r")
    assert isinstance(lease, Lease)
    assert lease.epoch == 1
    assert not lease.fresh
    a.store.append("r", b"renewed")
    assert log_of(a.store, "r") == [b"renewed"]


def test_clock_skew_of_nodes_is_irrelevant(
    nodes: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expiry is judged on the database's clock: a node whose clock is hours off changes nothing."""
    a = nodes("a", ttl=3.0)
    real_time, real_mono = time.time, time.monotonic
    # B's clock is two hours ahead: by its own reckoning A expired long ago.
    monkeypatch.setattr(time, "time", lambda: real_time() + 7200)
    b = nodes("b", ttl=3.0)
    a.leases.heartbeat()
    assert isinstance(a.leases.acquire("r"), Lease)
    assert isinstance(b.leases.acquire("r"), Owner)
    # A's clock two hours behind: its heartbeats still renew for 3 s of the database's time.
    monkeypatch.setattr(time, "time", lambda: real_time() - 7200)
    a.leases.heartbeat()
    assert isinstance(b.leases.acquire("r"), Owner)
    monkeypatch.setattr(time, "time", real_time)
    assert time.monotonic is real_mono
    until(lambda: b.leases.owner("r") is None, what="A's lease to expire")
    b.leases.heartbeat()  # B has been idle as long: it renews, as its shell would
    assert isinstance(b.leases.acquire("r"), Lease)


def test_release_hands_a_room_over_at_once_and_is_announced(
    nodes: Callable[..., Node], pg_dsn: str
) -> None:
    a, b = nodes("a"), nodes("b")

    async def main() -> list[LeaseEvent]:
        got: list[LeaseEvent] = []
        async with LeaseEvents(pg_dsn) as events:
            it = aiter(events)
            await asyncio.to_thread(a.leases.acquire, "r")
            got.append(await asyncio.wait_for(anext(it), 30))
            assert await asyncio.to_thread(a.leases.release, "r")
            got.append(await asyncio.wait_for(anext(it), 30))
            lease = await asyncio.to_thread(b.leases.acquire, "r")
            assert isinstance(lease, Lease)
            assert lease.epoch == 2
            got.append(await asyncio.wait_for(anext(it), 30))
        return got

    got = asyncio.run(main())
    assert got == [
        LeaseEvent("r", 1, a.leases.node_id, "ws://a.test:1234"),
        LeaseEvent("r", 1, None, None),
        LeaseEvent("r", 2, b.leases.node_id, "ws://b.test:1234"),
    ]
    assert not a.leases.release("r"), "releasing what one does not hold is a no-op"
    with pytest.raises(StoreLockedError):
        a.store.append("r", b"x")


def test_unregister_releases_every_room(nodes: Callable[..., Node]) -> None:
    a, b = nodes("a"), nodes("b")
    for i in range(5):
        assert isinstance(a.leases.acquire(f"r{i}"), Lease)
    a.leases.unregister()
    assert a.leases.held() == {}
    for i in range(5):
        lease = b.leases.acquire(f"r{i}")
        assert isinstance(lease, Lease)
        assert lease.epoch == 2
    with pytest.raises(StoreLockedError, match="no longer registered"):
        a.leases.heartbeat()
    with pytest.raises(StoreLockedError, match="not alive"):
        a.leases.acquire("new")


def test_an_unreachable_database_is_a_store_error() -> None:
    from helpers.postgres import free_port

    leases = Leases(f"postgresql://postgres@127.0.0.1:{free_port()}/x", "ws://x", timeout=2)
    with pytest.raises(StoreError, match="cannot reach"):
        leases.register()
    leases.close()


def test_lease_tables_of_another_version_are_refused(pg_dsn: str) -> None:
    first = Leases(pg_dsn, "ws://a.test:1234")
    first.register()  # creates the tables
    first.close()
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("UPDATE crdtsync.meta SET value = '7' WHERE key = 'cluster'")
    with pytest.raises(StoreError, match=r"has cluster tables of version 7, this release reads 1"):
        Leases(pg_dsn, "ws://b.test:1234").register()
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        # Nothing was written over the other release's tables.
        assert c.execute("SELECT value FROM crdtsync.meta WHERE key = 'cluster'").fetchone() == (
            "7",
        )
