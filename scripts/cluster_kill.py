#!/usr/bin/env python3
"""SIGKILL a relay cluster node that owns a room while clients on every node write to it.

Usage::

    scripts/cluster_kill.py --runs 50 [--seed 1] [--dsn postgresql://...]

Three node processes (``crdtsync relay --store postgresql://...``) share one
PostgreSQL database (started here as the ``postgres`` user in a temp dir unless
``--dsn`` is given). Each run uses a fresh room. Three crdtsync Peers write to
it through a small TCP load balancer that spreads connections over the live
nodes (no stickiness: a node that does not own the room answers ROOM_MOVED and
the Peer connects to the owner too). Each writer inserts numbered tokens and
counts a token acknowledged once ``wait_synced`` says the relay acknowledged
everything up to it. After a random number of acknowledged tokens the room's
owner is SIGKILLed; the writers go on (another node takes the room at their
next offer) for 10 more acknowledged tokens; the killed node is started again.
Then a fresh y-protocols client on a node that was not killed reads the room:
every acknowledged token must be in it.

Exit status 0 when no acknowledged token was lost in any run. One line of JSON
per run, and a summary at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import psycopg
from helpers.cluster import Balancer, NodeProcess
from helpers.postgres import PgServer
from helpers.relay import YClient

from crdtsync import Peer
from crdtsync.peer.peer import Backoff
from crdtsync.transports.websocket import WebSocketTransport

QUICK = Backoff(initial=0.05, factor=2.0, cap=0.5, jitter=0.2)
WRITERS = 3
# Bounds of one run: tokens per writer and seconds for any wait.
MAX_TOKENS = 60
WAIT = 60.0


class ClusterKillError(AssertionError):
    """An acknowledged token was lost, or the cluster did not recover."""


def owner_url(dsn: str, room: str) -> str | None:
    """The URL of the node that owns ``room`` now, from the lease table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT n.url FROM crdtsync.leases l JOIN crdtsync.nodes n ON n.id = l.owner "
            "WHERE l.room = %s",
            (room.encode(),),
        ).fetchone()
    return None if row is None else str(row[0])


async def _writer(
    peer: Peer,
    room: str,
    tag: str,
    acked: list[str],
    stop: asyncio.Event,
    counter: Callable[[], None],
) -> None:
    doc = await peer.open(room)
    for j in range(MAX_TOKENS):
        if stop.is_set():
            return
        token = f"{tag}{j};"
        doc.text("body").insert(0, token)
        result = await peer.wait_synced(room, timeout=WAIT)
        if not result:
            raise ClusterKillError(
                f"writer {tag}: {token} never acknowledged: {result.reason}; "
                f"connections {peer.connections()}"
            )
        acked.append(token)
        counter()


async def one_run(
    nodes: list[NodeProcess], balancer: Balancer, dsn: str, run: int, rng: random.Random
) -> dict[str, Any]:
    room = f"kill-{run}-{rng.randrange(1 << 30)}"
    stop = asyncio.Event()
    acked: dict[str, list[str]] = {f"w{i}-": [] for i in range(WRITERS)}
    total = [0]
    kill_at = rng.randrange(3, 30)
    reached = asyncio.Event()

    def counted() -> None:
        total[0] += 1
        if total[0] >= kill_at:
            reached.set()

    peers = [Peer(transport=WebSocketTransport(), backoff=QUICK) for _ in range(WRITERS)]
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        for peer in peers:
            await stack.enter_async_context(peer)
        # Every writer connects to the load balancer (which picks the nodes in turn);
        # the nodes that do not own the room tell it where the room is.
        for peer in peers:
            await peer.connect(balancer.url, wait=False)
        tasks = [
            asyncio.ensure_future(_writer(peer, room, tag, acked[tag], stop, counted))
            for peer, tag in zip(peers, acked, strict=True)
        ]
        try:
            done, _ = await asyncio.wait(
                [asyncio.ensure_future(reached.wait()), *tasks],
                timeout=WAIT,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in tasks:
                if task in done and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            url = await asyncio.to_thread(owner_url, dsn, room)
            victim = next((n for n in nodes if n.url == url), None)
            if victim is None:
                raise ClusterKillError(f"no live owner for {room!r} ({url})")
            in_flight = sum(1 for p in peers if not p.is_synced(room))
            acked_before = total[0]
            await victim.kill()
            killed_at = time.monotonic()
            # Writers go on: 10 more acknowledged tokens in all (each waits for the failover).
            more = total[0] + 10
            while total[0] < more and not all(t.done() for t in tasks):
                reached.clear()
                kill_at = more
                await asyncio.wait(
                    [asyncio.ensure_future(reached.wait()), *tasks],
                    timeout=WAIT,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not reached.is_set() and total[0] < more:
                    for task in tasks:
                        if task.done() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                    if not any(t.done() for t in tasks):
                        raise ClusterKillError("no writer was acknowledged after the kill")
            failover = time.monotonic() - killed_at
        finally:
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
    await victim.start()  # the node comes back as a new process (a new node id)
    # A fresh client on a node that was not killed reads the room back.
    reader_node = next(n for n in nodes if n is not victim)
    reader = await YClient.open(reader_node.url, room)
    try:
        await reader.sync(WAIT)
        text = reader.text()
    finally:
        await reader.aclose()
    all_acked = [t for tokens in acked.values() for t in tokens]
    lost = [t for t in all_acked if t not in text]
    return {
        "run": run,
        "room": room,
        "acknowledged": len(all_acked),
        "acknowledged_before_kill": acked_before,
        "in_flight_at_kill": in_flight,
        "lost": len(lost),
        "lost_tokens": lost[:10],
        "kill_to_10_more_acks_s": round(failover, 3),
        "seconds": round(time.monotonic() - started, 2),
    }


async def run_async(
    runs: int, seed: int, dsn: str, report: Callable[[dict[str, Any]], None] = print
) -> dict[str, Any]:
    """Run ``runs`` kill runs against a 3-node cluster on ``dsn``; returns the totals."""
    rng = random.Random(seed)
    nodes = [NodeProcess(dsn, name=f"node{i}", lease_ttl=3.0) for i in range(3)]
    totals: dict[str, Any] = {
        "runs": 0,
        "acknowledged": 0,
        "lost": 0,
        "runs_with_in_flight": 0,
        "failover_s": [],
    }
    balancer = Balancer(lambda: [n.port for n in nodes if n.alive])
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        await balancer.start()
        for run in range(runs):
            row = await one_run(nodes, balancer, dsn, run, rng)
            report(row)
            totals["runs"] += 1
            totals["acknowledged"] += row["acknowledged"]
            totals["lost"] += row["lost"]
            totals["runs_with_in_flight"] += row["in_flight_at_kill"] > 0
            totals["failover_s"].append(row["kill_to_10_more_acks_s"])
            if row["lost"]:
                raise ClusterKillError(f"run {run}: acknowledged tokens lost: {row}")
    finally:
        await balancer.close()
        await asyncio.gather(*(n.kill() for n in nodes))
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dsn", help="the cluster's database (default: a server started here)")
    args = ap.parse_args(argv)

    def line(row: dict[str, Any]) -> None:
        print(json.dumps(row), flush=True)

    server: PgServer | None = None
    try:
        dsn = args.dsn
        if dsn is None:
            server = PgServer()
            server.init()
            server.start()
            dsn = server.create_database("cluster_kill")
        try:
            totals = asyncio.run(run_async(args.runs, args.seed, dsn, line))
        except ClusterKillError as exc:
            print(json.dumps({"error": str(exc)}), flush=True)
            return 1
        times = sorted(totals.pop("failover_s"))
        totals["failover_s_median"] = times[len(times) // 2] if times else None
        totals["failover_s_max"] = times[-1] if times else None
        print(json.dumps({"summary": totals}), flush=True)
        return 0 if totals["lost"] == 0 else 1
    finally:
        if server is not None:
            server.destroy()


if __name__ == "__main__":
    sys.exit(main())
