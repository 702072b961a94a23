"""How long store commits block the event loop: SQLite vs PostgreSQL, direct vs StoreWorker.

Usage::

    python benchmarks/store_blocking.py [--dsn postgresql://...] [--quick]

Without ``--dsn`` it starts a throwaway PostgreSQL (Debian's server, in a temp
dir, as ``tests/helpers/postgres.py`` does). Both stores run in the same
process and the same run, so the ratios hold even on a loaded machine; the
absolute figures do not (report them as "measured under load").

Part 1 (direct): each store call made on the loop thread blocks the loop for
its whole duration: this is what the Peer does today.

Part 2 (loop lag under load): C concurrent writers each store an update and
wait for it to be durable, N times; a ticker measures how late the loop wakes
it (the stall every other connection suffers). Direct: ``store.append`` on the
loop. Worker: ``StoreWorker.submit`` + ``await durable`` (group commit on one
thread).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crdtsync.relay.cluster.leases import Leases
from crdtsync.store.base import Store
from crdtsync.store.postgres import PostgresStore
from crdtsync.store.sqlite import SQLiteStore
from crdtsync.store.worker import StoreWorker

UPDATE = os.urandom(40)  # a keystroke-sized Yjs update


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def direct(store: Store, quick: bool) -> dict[str, tuple[float, float]]:
    k = 4 if quick else 1
    store.create("bench", b"")
    res = {}
    res["append 40 B"] = timed(lambda: store.append("bench", UPDATE), 300 // k)
    res["append_many 10"] = timed(lambda: store.append_many([("bench", UPDATE)] * 10), 100 // k)
    res["append_many 100"] = timed(lambda: store.append_many([("bench", UPDATE)] * 100), 50 // k)
    # Fresh bytes each time: SQLite skips writing a row whose content did not change.
    res["compact 10 KB"] = timed(
        lambda: store.compact("bench", os.urandom(10_000), 10**12), 30 // k
    )
    res["compact 1 MB"] = timed(lambda: store.compact("bench", os.urandom(1_000_000), 10**12), 10)
    return {k: (statistics.median(v), pct(v, 99)) for k, v in res.items()}


async def lag_run(
    store: Store, use_worker: bool, writers: int, per_writer: int
) -> dict[str, float]:
    store.create("lag", b"")
    worker = StoreWorker(store) if use_worker else None
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.001)
            lags.append((loop.time() - t - 0.001) * 1e6)

    async def writer() -> None:
        for _ in range(per_writer):
            if worker is not None:
                ticket = worker.submit("lag", UPDATE)
                failures = await worker.durable(ticket)
                assert not failures
            else:
                store.append("lag", UPDATE)
                await asyncio.sleep(0)

    tick = asyncio.ensure_future(ticker())
    t0 = time.perf_counter()
    cpu0 = time.thread_time()  # CPU time of the loop thread only
    await asyncio.gather(*(writer() for _ in range(writers)))
    cpu = time.thread_time() - cpu0
    elapsed = time.perf_counter() - t0
    stop.set()
    await tick
    commits = writers * per_writer
    if worker is not None:
        commits = worker.commits
        await worker.close()
    total = writers * per_writer
    return {
        "updates/s": total / elapsed,
        "updates/commit": total / max(1, commits),
        "loop cpu us/update": cpu / total * 1e6,
        "lag p50 us": statistics.median(lags) if lags else 0.0,
        "lag p99 us": pct(lags, 99) if lags else 0.0,
        "lag max us": max(lags) if lags else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", help="a PostgreSQL database to use (default: start one)")
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = ap.parse_args()
    server = None
    dsn = args.dsn
    if dsn is None:
        from helpers.postgres import PgServer

        server = PgServer()
        server.start()
        dsn = server.create_database("bench")
    tmp = tempfile.mkdtemp(prefix="crdtsync-bench-")
    try:
        leases: list[Leases] = []

        def fenced(tag: str) -> Store:
            # A cluster node's store: every write checks the room's lease epoch.
            node = Leases(dsn, "ws://bench:1", schema=f"fenced_{tag}")
            node.register()
            for room in ("bench", "lag"):
                node.acquire(room)
            leases.append(node)
            return PostgresStore(dsn, schema=f"fenced_{tag}", fence=node.fence)

        makers: dict[str, Callable[[str], Store]] = {
            "SQLite": lambda tag: SQLiteStore(Path(tmp) / f"{tag}.db"),
            "PostgreSQL": lambda tag: PostgresStore(dsn, schema=f"bench_{tag}"),
            "PG fenced": fenced,
        }
        print("Part 1: one call on the loop thread blocks it for (us, median / p99):")
        rows: dict[str, dict[str, tuple[float, float]]] = {}
        for name, make in makers.items():
            store = make("direct")
            try:
                rows[name] = direct(store, args.quick)
            finally:
                store.close()
        ops = list(next(iter(rows.values())))
        print(f"  {'operation':<18}" + "".join(f"{n:>24}" for n in rows))
        for op in ops:
            cells = "".join(f"{rows[n][op][0]:>12.0f} / {rows[n][op][1]:>9.0f}" for n in rows)
            print(f"  {op:<18}{cells}")
        writers, per = (20, 10) if args.quick else (50, 20)
        print(
            f"\nPart 2: {writers} writers x {per} durable updates each; loop lag of a 1 ms ticker:"
        )
        for name, make in makers.items():
            for use_worker in (False, True):
                store = make(f"lag_{int(use_worker)}")
                try:
                    r = asyncio.run(lag_run(store, use_worker, writers, per))
                finally:
                    store.close()
                how = "StoreWorker" if use_worker else "direct"
                print(
                    f"  {name:<10} {how:<11} {r['updates/s']:>8.0f} updates/s "
                    f"{r['updates/commit']:>6.1f} per commit "
                    f"loop CPU {r['loop cpu us/update']:>5.0f} us/update  "
                    f"lag p50 {r['lag p50 us']:>7.0f} us "
                    f"p99 {r['lag p99 us']:>7.0f} us  max {r['lag max us']:>7.0f} us"
                )
    finally:
        for node in leases:
            node.close()
        if server is not None:
            server.destroy()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
