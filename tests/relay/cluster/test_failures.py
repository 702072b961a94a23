"""Cluster node processes under failure: a paused owner, a restarted database, a partition.

Every wait is bounded and waits on an event or polls a state (a node's
``/readyz``, a lease row) at a short interval; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import psycopg
import pytest
from helpers.cluster import NodeProcess, metric
from helpers.postgres import PgServer
from helpers.relay import YClient
from helpers.tcpproxy import TcpProxy
from helpers.waiting import eventually_blocking

from crdtsync import Peer
from crdtsync.peer.peer import Backoff
from crdtsync.transports.websocket import WebSocketTransport

pytestmark = pytest.mark.anyio

QUICK = Backoff(initial=0.05, factor=2.0, cap=0.5, jitter=0.2)


def ready(node: NodeProcess) -> bool:
    try:
        return node.http("/readyz", timeout=5)[0] == 200
    except OSError:
        return False


def not_ready(node: NodeProcess) -> bool:
    try:
        return node.http("/readyz", timeout=5)[0] == 503
    except OSError:
        return False


def lease_expired(dsn: str, node_url: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT expires_at < now() FROM crdtsync.nodes WHERE url = %s", (node_url,)
        ).fetchone()
    return row is not None and bool(row[0])


def stored_text(dsn: str, room: str) -> bytes:
    """Every update byte of ``room`` in the database (log and snapshot), for a substring check."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT d.snapshot, l.data FROM crdtsync.docs d "
            "LEFT JOIN crdtsync.log l ON l.name = d.name WHERE d.name = %s",
            (room.encode(),),
        ).fetchall()
    return b"".join((bytes(s or b"") + bytes(d or b"")) for s, d in rows)


@contextlib.asynccontextmanager
async def started(nodes: list[NodeProcess]) -> AsyncIterator[list[NodeProcess]]:
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(n.kill() for n in nodes))


async def test_a_paused_owner_is_fenced_and_its_clients_reconnect_to_the_new_owner(
    pg_server: PgServer, pg_dsn: str
) -> None:
    nodes = [NodeProcess(pg_dsn, name=f"node{i}", lease_ttl=2.0) for i in range(3)]
    async with started(nodes):
        old, new, third = nodes
        a = await YClient.open(old.url, "s")  # takes the room: old is the owner
        await a.sync(30)
        b = await YClient.open(new.url, "s")  # proxied to old
        await b.sync(30)
        await a.edit(lambda d: d.text("body").insert(0, "before;"))
        await b.pump_until(lambda: b.text() == "before;", 30)

        old.signal(signal.SIGSTOP)
        try:
            await eventually_blocking(
                lambda: lease_expired(pg_dsn, old.url), what="the paused owner's lease"
            )
            # b's proxy to the paused owner hangs; a fresh client through `new` takes the room.
            c = await YClient.open(new.url, "s")
            await c.sync(30)
            assert c.text() == "before;"
            await c.edit(lambda d: d.text("body").insert(0, "after;"))
            # While paused, a's update waits in the old owner's socket buffer.
            await a.edit(lambda d: d.text("body").insert(0, "stale;"))
        finally:
            old.signal(signal.SIGCONT)

        # On waking, the old owner cannot store it (fenced, or dropped with the room),
        # and closes its clients: a reconnects elsewhere (here: it just sees the close).
        code, _, _ = await a.closed(60)
        assert code is not None
        await old.wait_log("rooms dropped", timeout=60)
        _, text = await asyncio.to_thread(old.http, "/metrics")
        assert metric(text, "crdtsync_cluster_rooms_lost_total") >= 1
        assert metric(text, "crdtsync_cluster_rooms_owned") == 0
        # Ready again after its next heartbeat (a load balancer waits for that), a
        # client of the old node reaches the new owner through it.
        await eventually_blocking(lambda: ready(old), what="the old owner ready again")
        d = await YClient.open(old.url, "s")
        await d.sync(30)
        assert d.text() == "after;before;"
        fresh = await YClient.open(third.url, "s")
        await fresh.sync(30)
        assert fresh.text() == "after;before;"
        assert b"stale;" not in await asyncio.to_thread(stored_text, pg_dsn, "s")
        for client in (b, c, d, fresh):
            await client.aclose()


async def test_a_restarted_database_makes_nodes_not_ready_and_they_recover_alone(
    pg_own_server: PgServer,
) -> None:
    dsn = pg_own_server.create_database("restart")
    nodes = [NodeProcess(dsn, name=f"node{i}", lease_ttl=3.0) for i in range(2)]
    async with started(nodes):
        first, second = nodes
        writer = Peer(transport=WebSocketTransport(), backoff=QUICK)
        async with writer:
            await writer.connect(first.url)
            doc = await writer.open("db")
            doc.text("body").insert(0, "one;")
            assert await writer.wait_synced("db", timeout=30)

            await asyncio.to_thread(pg_own_server.stop)
            for node in nodes:
                await eventually_blocking(
                    lambda node=node: not_ready(node), what=f"{node.name} not ready"
                )
            # Nothing can be stored: nothing is acknowledged.
            doc.text("body").insert(0, "two;")
            assert not await writer.wait_synced("db", timeout=2)

            await asyncio.to_thread(pg_own_server.start, pg_own_server.port)
            for node in nodes:
                await eventually_blocking(
                    lambda node=node: ready(node), what=f"{node.name} ready again"
                )
            # The writer reconnects and resends; now it is stored and acknowledged.
            assert await writer.wait_synced("db", timeout=60)
        reader = await YClient.open(second.url, "db")
        await reader.sync(30)
        assert reader.text() == "two;one;"
        await reader.aclose()


async def test_a_node_cut_off_from_the_database_loses_its_rooms_and_recovers(
    pg_own_server: PgServer,
) -> None:
    dsn = pg_own_server.create_database("partition")
    async with TcpProxy("127.0.0.1", pg_own_server.port) as proxy:
        far = dsn.replace(f":{pg_own_server.port}/", f":{proxy.port}/")
        cut_off = NodeProcess(far, name="cut", lease_ttl=2.0)
        other = NodeProcess(dsn, name="other", lease_ttl=2.0)
        async with started([cut_off, other]):
            a = await YClient.open(cut_off.url, "p")  # cut_off owns the room
            await a.sync(30)
            await a.edit(lambda d: d.text("body").insert(0, "before;"))
            b = await YClient.open(other.url, "p")
            await b.sync(30)
            assert b.text() == "before;"
            await b.aclose()

            proxy.cut()  # a black hole: no RST, no FIN
            await eventually_blocking(lambda: not_ready(cut_off), what="the cut-off node not ready")
            await eventually_blocking(
                lambda: lease_expired(dsn, cut_off.url), what="its lease to expire"
            )
            # The other node takes the room and serves it from the database.
            c = await YClient.open(other.url, "p")
            await c.sync(30)
            assert c.text() == "before;"
            await c.edit(lambda d: d.text("body").insert(0, "after;"))
            # The cut-off node's client was dropped with the room.
            code, _, _ = await a.closed(60)
            assert code is not None

            proxy.restore()
            await eventually_blocking(lambda: ready(cut_off), what="the node ready again")
            d = await YClient.open(cut_off.url, "p")  # proxied to the new owner
            await d.sync(30)
            assert d.text() == "after;before;"
            for client in (c, d):
                await client.aclose()
