"""A node cut off from PostgreSQL (a userspace TCP proxy that can be cut): nothing hangs,
nothing is stored without its lease, and the node recovers when the network heals."""

from __future__ import annotations

import asyncio

import pytest
from helpers.postgres import PgServer
from helpers.tcpproxy import TcpProxy
from helpers.waiting import eventually_blocking

from crdtsync import StoreError, StoreLockedError
from crdtsync.relay.cluster.leases import Lease, Leases, Owner
from crdtsync.store.postgres import PostgresStore


@pytest.mark.anyio
async def test_a_black_hole_partition_fails_writes_in_bounded_time_and_fences_the_node(
    pg_own_server: PgServer,
) -> None:
    dsn = pg_own_server.create_database("p")
    async with TcpProxy("127.0.0.1", pg_own_server.port) as proxy:
        far = dsn.replace(f":{pg_own_server.port}/", f":{proxy.port}/")
        # A's lease (15 s) outlives the failing calls (1 s each, a few of them) by far.
        a = Leases(far, "ws://a.test:1", ttl=15.0, timeout=1.0)
        b = Leases(dsn, "ws://b.test:1", ttl=60.0)
        # (the proxy runs on this loop: everything that talks through it runs in threads)
        a_store = await asyncio.to_thread(PostgresStore, far, fence=a.fence, timeout=1.0)
        b_store = PostgresStore(dsn, fence=b.fence)
        try:
            await asyncio.to_thread(a.register)
            await asyncio.to_thread(b.register)
            assert isinstance(await asyncio.to_thread(a.acquire, "r"), Lease)
            await asyncio.to_thread(a_store.create, "r", b"")
            await asyncio.to_thread(a_store.append, "r", b"before")

            proxy.cut()  # silence both ways: no RST, no FIN, nothing
            # Neither the write nor the heartbeat hangs: the watchdog ends them.
            with pytest.raises(StoreError):
                await asyncio.wait_for(asyncio.to_thread(a_store.append, "r", b"cut"), 60)
            with pytest.raises(StoreError):
                await asyncio.wait_for(asyncio.to_thread(a.heartbeat), 60)
            # A's sessions still exist on the server (the partition let no FIN through),
            # so B waits for A's lease to run out on the database's clock, then takes over.
            assert isinstance(await asyncio.to_thread(b.acquire, "r"), Owner)
            await eventually_blocking(lambda: b.owner("r") is None, what="A's lease to expire")
            lease = await asyncio.to_thread(b.acquire, "r")
            assert isinstance(lease, Lease)
            assert lease.epoch == 2
            await asyncio.to_thread(b_store.append, "r", b"b")

            proxy.restore()
            # A comes back believing it owns the room: fenced, and it stores nothing.
            with pytest.raises(StoreLockedError, match="fenced"):
                await asyncio.to_thread(a_store.append, "r", b"stale")
            # Its heartbeat works again (new connections) and tells it what it lost.
            assert await asyncio.to_thread(a.heartbeat) == {}
            assert isinstance(await asyncio.to_thread(a.acquire, "r"), Owner)
            doc = await asyncio.to_thread(b_store.load, "r")
            assert doc is not None
            assert [u for _, u in doc.updates] == [b"before", b"b"]
        finally:
            for closer in (a_store.close, b_store.close, a.close, b.close):
                await asyncio.to_thread(closer)


@pytest.mark.anyio
async def test_a_reset_partition_fails_fast_and_the_node_recovers_by_itself(
    pg_own_server: PgServer,
) -> None:
    dsn = pg_own_server.create_database("p")
    async with TcpProxy("127.0.0.1", pg_own_server.port) as proxy:
        far = dsn.replace(f":{pg_own_server.port}/", f":{proxy.port}/")
        a = Leases(far, "ws://a.test:1", ttl=60.0, timeout=5.0)
        store = await asyncio.to_thread(PostgresStore, far, fence=a.fence, timeout=5.0)
        try:
            await asyncio.to_thread(a.register)
            assert isinstance(await asyncio.to_thread(a.acquire, "r"), Lease)
            await asyncio.to_thread(store.create, "r", b"")
            proxy.cut(reset=True)
            with pytest.raises(StoreError):
                await asyncio.to_thread(store.append, "r", b"lost")
            with pytest.raises(StoreError):
                await asyncio.to_thread(store.append, "r", b"refused too")
            assert proxy.refused >= 1
            proxy.restore()
            # Nobody took the room meanwhile: reconnecting is all it takes.
            await asyncio.to_thread(store.append, "r", b"after")
            assert await asyncio.to_thread(a.heartbeat) == {"r": 1}
            doc = await asyncio.to_thread(store.load, "r")
            assert doc is not None
            assert [u for _, u in doc.updates] == [b"after"]
        finally:
            await asyncio.to_thread(store.close)
            await asyncio.to_thread(a.close)
