"""The relay cluster on PostgreSQL against one node, in the same run.

Usage::

    python benchmarks/bench_cluster.py [--rooms 40] [--edits 10] [--dsn postgresql://...]

Without ``--dsn`` it starts a throwaway PostgreSQL (as the tests do). Node
processes are real (``crdtsync relay --store postgresql://...``); the clients
are raw y-protocols clients (``tests/helpers/relay.py``'s ``YClient``) in this
process, so the figures include this process's own load: compare the two
setups of one run, not absolute numbers (the machine is shared).

Parts:

1. **Rooms x 5 clients**: ``--rooms`` rooms, 5 clients each; every client
   sends ``--edits`` updates (one at a time, each waiting until the room's 4
   other clients received it). On one node (all clients on it) and on 3 nodes
   (client j of room i on node (i + j) % 3: 4 of 5 proxied or owner-local as
   it falls). Figures: updates delivered per second (each update counts once
   per receiver), p50/p99 of the time from send to the last receiver.
2. **Proxy cost**: one sender on the owner; one receiver on the owner and one
   on another node (proxied): p50/p99 of each receiver's latency.
3. **Failover**: SIGKILL of a room's owner, then time until a fresh client
   through another node has synced the room (the new owner loaded it).
4. **PostgreSQL writes**: updates stored per second during part 1 and updates
   per commit (``pg_stat_database.xact_commit``; includes heartbeats and
   lease transactions, so updates per commit is a lower bound of the group size).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import psycopg
from helpers.cluster import NodeProcess
from helpers.postgres import PgServer
from helpers.relay import YClient

CLIENTS = 5
WAIT = 60.0


class TimedYClient(YClient):
    """A YClient that notes when each message arrived (the text after it)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.arrivals: list[tuple[float, str]] = []

    async def handle(self, msg: Any) -> None:
        await super().handle(msg)
        self.arrivals.append((time.perf_counter(), self.text()))

    def arrived(self, token: str) -> float | None:
        return next((t for t, text in self.arrivals if token in text), None)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def db_counters(dsn: str) -> tuple[int, int]:
    """(commits of this database, log rows stored)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        commits = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        rows = conn.execute("SELECT count(*) FROM crdtsync.log").fetchone()
    assert commits is not None
    assert rows is not None
    return int(commits[0]), int(rows[0])


async def rooms_part(
    nodes: list[NodeProcess], dsn: str, rooms: int, edits: int, tag: str
) -> dict[str, Any]:
    """Part 1 on ``nodes`` (one or three)."""
    clients: list[list[YClient]] = []
    for i in range(rooms):
        room = f"{tag}-{i}"
        members = []
        for j in range(CLIENTS):
            node = nodes[(i + j) % len(nodes)]
            yc = await YClient.open(node.url, room)
            await yc.sync(WAIT)
            members.append(yc)
        clients.append(members)
    # Every client reads in the background from here on.
    for members in clients:
        for yc in members:
            yc.follow()
    await asyncio.sleep(0.5)  # deliberate: let PostgreSQL's statistics settle before reading them
    commits0, rows0 = await asyncio.to_thread(db_counters, dsn)
    latencies: list[float] = []

    async def room_writer(members: list[YClient], i: int) -> None:
        for k in range(edits):
            for j, yc in enumerate(members):
                token = f"{i}.{j}.{k};"
                others = [o for o in members if o is not yc]
                t0 = time.perf_counter()
                await yc.edit(lambda d, token=token: d.text("body").insert(0, token))
                deadline = time.monotonic() + WAIT
                while not all(token in o.text() for o in others):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{token} not delivered")
                    await asyncio.sleep(0.001)  # deliberate: polls the followers' state
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(room_writer(m, i) for i, m in enumerate(clients)))
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(0.5)  # deliberate: PostgreSQL's statistics lag by up to 500 ms
    commits1, rows1 = await asyncio.to_thread(db_counters, dsn)
    for members in clients:
        for yc in members:
            await yc.unfollow()
            await yc.aclose()
    updates = rooms * CLIENTS * edits
    stored = rows1 - rows0
    return {
        "nodes": len(nodes),
        "rooms": rooms,
        "clients": rooms * CLIENTS,
        "updates": updates,
        "seconds": round(elapsed, 2),
        "deliveries_per_s": round(updates * (CLIENTS - 1) / elapsed),
        "latency_ms_p50": round(pct(latencies, 0.5) * 1000, 1),
        "latency_ms_p99": round(pct(latencies, 0.99) * 1000, 1),
        "pg_updates_stored_per_s": round(stored / elapsed),
        "pg_updates_per_commit": round(stored / max(1, commits1 - commits0), 2),
    }


async def proxy_part(nodes: list[NodeProcess], samples: int) -> dict[str, Any]:
    owner, other = nodes[0], nodes[1]
    sender = await YClient.open(owner.url, "proxy-cost")
    await sender.sync(WAIT)
    local = await TimedYClient.open(owner.url, "proxy-cost")
    proxied = await TimedYClient.open(other.url, "proxy-cost")
    for yc in (local, proxied):
        await yc.sync(WAIT)
        yc.follow()
    lat: dict[str, list[float]] = {"owner": [], "proxied": []}
    for k in range(samples):
        token = f"p{k};"
        t0 = time.perf_counter()
        await sender.edit(lambda d, token=token: d.text("body").insert(0, token))
        deadline = time.monotonic() + WAIT
        while not (token in local.text() and token in proxied.text()):
            if time.monotonic() > deadline:
                raise AssertionError("proxy sample not delivered")
            await asyncio.sleep(0.005)  # deliberate: polls; the times come from arrivals
        for name, yc in (("owner", local), ("proxied", proxied)):
            arrived = yc.arrived(token)
            assert arrived is not None
            lat[name].append(arrived - t0)
            yc.arrivals.clear()
    for yc in (local, proxied):
        await yc.unfollow()
    for yc in (sender, local, proxied):
        await yc.aclose()
    return {
        f"{name}_ms_{q}": round(pct(v, p) * 1000, 2)
        for name, v in lat.items()
        for q, p in (("p50", 0.5), ("p99", 0.99))
    }


async def failover_part(nodes: list[NodeProcess]) -> dict[str, Any]:
    victim, survivor = nodes[2], nodes[0]
    yc = await YClient.open(victim.url, "failover")
    await yc.sync(WAIT)
    await yc.edit(lambda d: d.text("body").insert(0, "kept"))
    await survivor_sees(survivor, "kept")
    t0 = time.perf_counter()
    await victim.kill()
    attempts = 0
    while True:
        attempts += 1
        try:
            fresh = await YClient.open(survivor.url, "failover")
            await fresh.sync(5)
            if fresh.text() == "kept":
                await fresh.aclose()
                break
            await fresh.aclose()
        except Exception:  # the owner is dead, the proxy closes: try again
            if attempts > 200:
                raise
    seconds = time.perf_counter() - t0
    await victim.start()
    return {"failover_ms": round(seconds * 1000, 1), "attempts": attempts}


async def survivor_sees(node: NodeProcess, text: str) -> None:
    yc = await YClient.open(node.url, "failover")
    await yc.sync(WAIT)
    assert yc.text() == text
    await yc.aclose()


async def main_async(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    cluster = [NodeProcess(dsn, name=f"node{i}", lease_ttl=5.0) for i in range(3)]
    single = NodeProcess(dsn, name="single", lease_ttl=5.0)
    out: dict[str, Any] = {}
    try:
        await asyncio.gather(*(n.start() for n in [*cluster, single]))
        out["one_node"] = await rooms_part([single], dsn, args.rooms, args.edits, "one")
        out["three_nodes"] = await rooms_part(cluster, dsn, args.rooms, args.edits, "three")
        out["proxy"] = await proxy_part(cluster, args.samples)
        out["failover"] = await failover_part(cluster)
    finally:
        await asyncio.gather(*(n.kill() for n in [*cluster, single]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rooms", type=int, default=40)
    ap.add_argument("--edits", type=int, default=10)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--dsn")
    args = ap.parse_args(argv)
    server: PgServer | None = None
    try:
        dsn = args.dsn
        if dsn is None:
            server = PgServer()
            server.init()
            server.start()
            dsn = server.create_database("bench_cluster")
        result = asyncio.run(main_async(args, dsn))
        print(json.dumps(result, indent=2))
        one, three = result["one_node"], result["three_nodes"]
        rate = three["deliveries_per_s"] / one["deliveries_per_s"]
        p99 = three["latency_ms_p99"] / one["latency_ms_p99"]
        print(f"3 nodes / 1 node: deliveries/s x{rate:.2f}, p99 x{p99:.2f}")
        return 0
    finally:
        if server is not None:
            server.destroy()


if __name__ == "__main__":
    sys.exit(main())
