"""Transports: the shared acceptance suite, and the in-memory network's faults."""

from __future__ import annotations

import asyncio

import pytest

from crdtsync import ConnectionClosedError, TransportError
from crdtsync.net import Connection, Listener, Transport
from crdtsync.testing import advance, check_transport, run_virtual
from crdtsync.transports.memory import Faults, MemoryNetwork


@pytest.mark.anyio
async def test_memory_transport_passes_the_suite() -> None:
    net = MemoryNetwork()
    await check_transport(lambda: (net.transport("server"), net.transport("client"), "mem://suite"))


@pytest.mark.anyio
async def test_memory_transport_with_latency_passes_the_suite() -> None:
    net = MemoryNetwork(latency=0.001)
    await check_transport(lambda: (net.transport("server"), net.transport("client"), "mem://suite"))


def test_protocols_are_satisfied() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        t = net.transport("a")
        assert isinstance(t, Transport)

        async def handler(conn: Connection) -> None:
            await conn.recv()

        lst = await t.listen("mem://x", handler)
        assert isinstance(lst, Listener)
        conn = await net.transport("b").connect("mem://x")
        assert isinstance(conn, Connection)
        await conn.close()

    run_virtual(main())


async def _exchange(net: MemoryNetwork, n: int) -> list[bytes]:
    got: list[bytes] = []
    done = asyncio.Event()

    async def handler(conn: Connection) -> None:
        try:
            while True:
                got.append(await conn.recv())
        except ConnectionClosedError:
            done.set()

    await net.transport("s").listen("mem://s", handler)
    conn = await net.transport("c").connect("mem://s")
    try:
        for i in range(n):
            await conn.send(b"%04d" % i)
        await advance(1.0)
        await conn.close()
    except ConnectionClosedError:
        pass
    await asyncio.wait_for(done.wait(), 10)
    return got


def test_faults_are_seeded_and_replay_exactly() -> None:
    faults = Faults(drop=0.1, duplicate=0.1, reorder=0.1, delay=0.2, corrupt=0.05, max_delay=0.01)
    runs = [run_virtual(_exchange(MemoryNetwork(seed=7, faults=faults), 300)) for _ in range(2)]
    assert runs[0] == runs[1], "same seed, same schedule"
    other = run_virtual(_exchange(MemoryNetwork(seed=8, faults=faults), 300))
    assert other != runs[0]
    clean = [b"%04d" % i for i in range(300)]
    assert runs[0] != clean


def test_each_fault_happens() -> None:
    for name in ("drop", "duplicate", "reorder", "delay", "corrupt"):
        net = MemoryNetwork(seed=1, faults=Faults(**{name: 0.3}))
        got = run_virtual(_exchange(net, 100))
        assert net.stats.faults.get(name, 0) > 0, name
        clean = [b"%04d" % i for i in range(100)]
        if name == "delay":
            assert got == clean, "delays keep order"
        else:
            assert got != clean, name


def test_disconnect_mid_stream() -> None:
    net = MemoryNetwork(seed=3, faults=Faults(disconnect=0.05))
    got = run_virtual(_exchange(net, 200))
    assert net.stats.faults["disconnect"] == 1
    assert len(got) < 200


def test_equal_delivery_times_keep_order() -> None:
    """Regression: two chunks due at the same instant used to swap (heap order)."""
    got = run_virtual(_exchange(MemoryNetwork(latency=0.001), 500))
    assert got == [b"%04d" % i for i in range(500)]


def test_partition_and_heal() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        received: list[bytes] = []

        async def handler(conn: Connection) -> None:
            while True:
                received.append(await conn.recv())

        await net.transport("a").listen("mem://a", handler)
        conn = await net.transport("b").connect("mem://a")
        net.partition(["a"], ["b"])
        await conn.send(b"lost")
        with pytest.raises(TransportError):
            await net.transport("b").connect("mem://a")
        assert net.transport("c").network.reachable("c", "c")
        net.heal()
        await conn.send(b"through")
        await advance(0.1)
        assert received == [b"through"]
        with pytest.raises(TransportError):
            await net.transport("b").connect("mem://nobody")

    run_virtual(main())
