"""The movable tree against Loro's LoroTree: one run, one table, ratios.

Measured (the same random choices for both engines, drawn before timing):

* create 10,000 nodes, each under a random earlier node or at the top level;
* 100,000 random local moves on that tree (random node, random new parent or
  the top level; about 1% would make a cycle and are refused by both), appended
  (``move(n, p)`` / ``mov``) and, separately, at index 0 (``mov_to``);
* two replicas of the 10,000-node tree each make 10,000 random moves
  concurrently; the time for one to import the other's and read the result,
  and the part of it that is the tree's own work (the rest is the document's
  import path: validation of the update, pycrdt), against Loro's total;
* the saved size after create + 100,000 moves (crdtsync ``save()``, Loro
  snapshot) and the time to load it and read the tree;
* position key lengths after 100,000 random moves and inserts at random
  indexes (crdtsync: base-62 characters; Loro: bytes of its fractional index);
* memory: how much the process grows (resident set) to hold the document
  after create + moves, and after loading its save, each in a fresh child
  process.

Each measurement runs ``--runs`` times, the engines alternating, and the best
is kept. The clock is process CPU time (other processes on a shared machine
then disturb it less); ``--wall`` uses the wall clock.

Run: ``python benchmarks/bench_tree.py`` (about two minutes) or ``--quick``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import loro

from crdtsync import Doc, InvalidOperationError

Clock = Callable[[], float]
ROOT = Path(__file__).resolve().parents[1]


def plan(
    n_nodes: int, n_moves: int, seed: int
) -> tuple[list[int | None], list[tuple[int, int | None]]]:
    rng = random.Random(seed)
    parents: list[int | None] = [
        None if i == 0 or rng.random() < 0.1 else rng.randrange(i) for i in range(n_nodes)
    ]
    moves = [
        (rng.randrange(n_nodes), None if rng.random() < 0.05 else rng.randrange(n_nodes))
        for _ in range(n_moves)
    ]
    return parents, moves


# -- crdtsync ---------------------------------------------------------------------------


def ours_create(parents: list[int | None], peer: int = 1) -> tuple[Doc, list[str]]:
    doc = Doc(peer_id=peer)
    t = doc.tree("t")
    ids: list[str] = []
    create = t.create
    for p in parents:
        ids.append(create(None if p is None else ids[p]))
    return doc, ids


def ours_moves(
    doc: Doc, ids: list[str], moves: list[tuple[int, int | None]], index: int | None
) -> int:
    move = doc.tree("t").move
    refused = 0
    for n, p in moves:
        try:
            move(ids[n], None if p is None else ids[p], index)
        except InvalidOperationError:
            refused += 1
    return refused


# -- Loro -------------------------------------------------------------------------------


def loro_create(parents: list[int | None]) -> tuple[Any, list[Any]]:
    doc = loro.LoroDoc()
    t = doc.get_tree("t")
    t.enable_fractional_index(0)
    ids: list[Any] = []
    create = t.create
    for p in parents:
        ids.append(create(None if p is None else ids[p]))
    return doc, ids


def loro_moves(
    doc: Any, ids: list[Any], moves: list[tuple[int, int | None]], index: int | None
) -> int:
    t = doc.get_tree("t")
    refused = 0
    if index is None:
        mov = t.mov
        for n, p in moves:
            try:
                mov(ids[n], None if p is None else ids[p])
            except BaseException:  # Loro raises bare BaseException
                refused += 1
    else:
        mov_to = t.mov_to
        for n, p in moves:
            try:
                mov_to(ids[n], index, None if p is None else ids[p])
            except BaseException:
                refused += 1
    doc.commit()
    return refused


# -- measurements -------------------------------------------------------------------------


def timed(fn: Callable[[], Any], clock: Clock) -> tuple[float, Any]:
    gc.collect()
    gc.disable()
    try:
        t0 = clock()
        out = fn()
        return clock() - t0, out
    finally:
        gc.enable()


def measure_once(
    parents: list[int | None],
    moves: list[tuple[int, int | None]],
    moves_b: list[tuple[int, int | None]],
    moves_c: list[tuple[int, int | None]],
    clock: Clock,
    keep: Callable[[str, str, float], None],
    notes: dict[str, Any],
) -> None:
    """One round of every measurement, crdtsync then Loro each time."""
    # create + local moves (append), crdtsync then Loro
    dt, (odoc, oids) = timed(lambda: ours_create(parents), clock)
    keep("create", "crdtsync", dt)
    dt, orefused = timed(lambda: ours_moves(odoc, oids, moves, None), clock)
    keep("moves", "crdtsync", dt)
    dt, (ldoc, lids) = timed(lambda: loro_create(parents), clock)
    keep("create", "loro", dt)
    dt, lrefused = timed(lambda: loro_moves(ldoc, lids, moves, None), clock)
    keep("moves", "loro", dt)
    notes["refused"] = (orefused, lrefused)

    # saved size and load
    saved = odoc.save()
    snap = ldoc.export(loro.ExportMode.Snapshot())
    notes["size"] = (len(saved), len(snap))
    notes["saved"], notes["snapshot"] = saved, snap

    tree_s = [0.0]

    def load_ours() -> Any:
        d = Doc.load(saved)
        t0 = clock()
        out = d.tree("t").children(None)  # any tree work left for the first read
        tree_s[0] += clock() - t0
        return out

    from crdtsync.model import tree as tree_mod

    offer = getattr(tree_mod, "offer_cache", None)  # absent before saved shapes
    if offer is not None:

        def timed_offer(doc: Any, blob: bytes) -> None:
            t0 = clock()
            offer(doc, blob)
            tree_s[0] += clock() - t0

        tree_mod.offer_cache = timed_offer

    def load_loro() -> Any:
        d = loro.LoroDoc()
        d.import_(snap)
        return d.get_tree("t").children(None)

    dt, a = timed(load_ours, clock)
    if offer is not None:
        tree_mod.offer_cache = offer
    keep("load", "crdtsync", dt)
    notes["load_tree_s"] = min(notes.get("load_tree_s", float("inf")), tree_s[0])
    dt, b = timed(load_loro, clock)
    keep("load", "loro", dt)
    assert len(a) == len(b)

    # local moves at index 0
    odoc, oids = ours_create(parents)
    ldoc, lids = loro_create(parents)
    dt, _ = timed(lambda: ours_moves(odoc, oids, moves, 0), clock)
    keep("moves0", "crdtsync", dt)
    dt, _ = timed(lambda: loro_moves(ldoc, lids, moves, 0), clock)
    keep("moves0", "loro", dt)

    # concurrent moves on two replicas, then one imports the other's
    a_doc, aids = ours_create(parents, peer=1)
    b_doc = Doc.load(a_doc.save(), peer_id=2)
    b_doc.tree("t").children(None)
    fork = b_doc.version
    ours_moves(a_doc, aids, moves_b, None)
    ours_moves(b_doc, aids, moves_c, None)
    update = b_doc.export_update(since=fork)

    tree_t = a_doc.tree("t")

    def merge_ours() -> Any:
        a_doc.import_update(update)
        t_tree = clock()
        out = tree_t.children(None)  # folds the 10,000 operations into the tree
        notes["merge_tree_s"] = min(notes.get("merge_tree_s", float("inf")), clock() - t_tree)
        return out

    dt, _ = timed(merge_ours, clock)
    keep("merge", "crdtsync", dt)
    la, llids = loro_create(parents)
    lb = loro.LoroDoc()
    lb.import_(la.export(loro.ExportMode.Snapshot()))
    vv = lb.oplog_vv
    loro_moves(la, llids, moves_b, None)
    loro_moves(lb, llids, moves_c, None)
    lupdate = lb.export(loro.ExportMode.Updates(vv))

    def merge_loro() -> Any:
        la.import_(lupdate)
        return la.get_tree("t").children(None)

    dt, _ = timed(merge_loro, clock)
    keep("merge", "loro", dt)
    # Both replicas must agree after the merge (ours: full exchange).
    b_doc.import_update(a_doc.export_update(since=b_doc.version))
    assert a_doc.tree("t").to_py() == b_doc.tree("t").to_py()
    notes["update"] = (len(update), len(lupdate))


MEMORY_CHILD = r"""
import gc, sys
sys.path[:0] = [ROOT, ROOT + "/benchmarks"]
import bench_tree, loro
from crdtsync import Doc

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

parents, moves = bench_tree.plan(N, M, seed=1)
data = open(SAVED, "rb").read() if SAVED else b""
gc.collect()
before = rss()
if ENGINE == "crdtsync":
    if data:
        doc = Doc.load(data)
    else:
        doc, ids = bench_tree.ours_create(parents)
        bench_tree.ours_moves(doc, ids, moves, None)
    doc.tree("t").children(None)
else:
    if data:
        doc = loro.LoroDoc()
        doc.import_(data)
    else:
        doc, ids = bench_tree.loro_create(parents)
        bench_tree.loro_moves(doc, ids, moves, None)
    doc.get_tree("t").children(None)
gc.collect()
print(rss() - before)
"""


def memory(n_nodes: int, n_moves: int, saved: bytes, snapshot: bytes) -> dict[str, Any]:
    """Resident-set growth to hold the document, built and loaded, per engine."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"crdtsync": os.path.join(tmp, "ours"), "loro": os.path.join(tmp, "loro")}
        with open(files["crdtsync"], "wb") as f:
            f.write(saved)
        with open(files["loro"], "wb") as f:
            f.write(snapshot)
        for engine in ("crdtsync", "loro"):
            for mode in ("built", "loaded"):
                code = (
                    f"ROOT = {str(ROOT)!r}; N = {n_nodes}; M = {n_moves}; "
                    f"ENGINE = {engine!r}; "
                    f"SAVED = {files[engine] if mode == 'loaded' else ''!r}\n" + MEMORY_CHILD
                )
                res = subprocess.run(
                    [sys.executable, "-c", code],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=600,
                )
                out[(engine, mode)] = int(res.stdout.split()[-1])
    return out


def run(n_nodes: int, n_moves: int, n_concurrent: int, runs: int, clock: Clock) -> dict[str, Any]:
    parents, moves = plan(n_nodes, n_moves, seed=1)
    _, moves_b = plan(n_nodes, n_concurrent, seed=2)
    _, moves_c = plan(n_nodes, n_concurrent, seed=3)
    best: dict[str, dict[str, float]] = {}
    notes: dict[str, Any] = {}

    def keep(metric: str, engine: str, seconds: float) -> None:
        slot = best.setdefault(metric, {})
        slot[engine] = min(slot.get(engine, float("inf")), seconds)

    for _ in range(runs):
        measure_once(parents, moves, moves_b, moves_c, clock, keep, notes)

    notes["keys"] = key_lengths(n_nodes, n_moves)
    notes["memory"] = memory(n_nodes, n_moves, notes.pop("saved"), notes.pop("snapshot"))
    return {"best": best, "notes": notes}


def key_lengths(n_nodes: int, n_ops: int) -> dict[str, Any]:
    """Position key lengths after random moves and inserts at random indexes."""
    rng = random.Random(5)
    doc = Doc(peer_id=1)
    t = doc.tree("t")
    ld = loro.LoroDoc()
    lt = ld.get_tree("t")
    lt.enable_fractional_index(0)
    ids: list[str] = []
    lids: list[Any] = []
    for i in range(n_nodes // 10):
        p = None if i == 0 or rng.random() < 0.1 else rng.randrange(i)
        ids.append(t.create(None if p is None else ids[p]))
        lids.append(lt.create(None if p is None else lids[p]))
    for _ in range(n_ops):
        p = None if rng.random() < 0.05 else rng.randrange(len(ids))
        op = ids[p] if p is not None else None
        lp = lids[p] if p is not None else None
        if rng.random() < 0.1:
            k = rng.randrange(len(t.children(op)) + 1)
            ids.append(t.create(op, k))
            lids.append(lt.create_at(k, lp))
            continue
        n = rng.randrange(len(ids))
        others = [x for x in t.children(op) if x != ids[n]]
        k = rng.randrange(len(others) + 1)
        try:
            t.move(ids[n], op, k)
        except InvalidOperationError:
            continue
        lt.mov_to(lids[n], k, lp)
    b = t._binding()
    assert b is not None
    ours = [len(k) for k in b.state.positions.values() if k]
    theirs = [len(lt.fractional_index(x)) // 2 for x in lids if not lt.is_node_deleted(x)]
    assert [ids.index(x) for x in t.children(None)] == [
        next(i for i, y in enumerate(lids) if (y.peer, y.counter) == (x.peer, x.counter))
        for x in lt.children(None)
    ]
    return {
        "nodes": len(ids),
        "ours_mean": statistics.mean(ours),
        "ours_max": max(ours),
        "loro_mean": statistics.mean(theirs),
        "loro_max": max(theirs),
    }


def table(res: dict[str, Any], n_nodes: int, n_moves: int, n_conc: int) -> str:
    best, notes = res["best"], res["notes"]

    def row(name: str, metric: str, per: int | None, unit: str) -> str:
        o, lo = best[metric]["crdtsync"], best[metric]["loro"]
        if per:
            a, b = f"{o / per * 1e6:.2f} {unit}", f"{lo / per * 1e6:.2f} {unit}"
        else:
            a, b = f"{o * 1e3:.1f} ms", f"{lo * 1e3:.1f} ms"
        return f"| {name} | {a} | {b} | {o / lo:.2f} |"

    so, sl = notes["size"]
    uo, ul = notes["update"]
    mem = notes["memory"]

    def mem_row(name: str, mode: str) -> str:
        o, lo = mem[("crdtsync", mode)], mem[("loro", mode)]
        return f"| {name} | {o / 2**20:.1f} MiB | {lo / 2**20:.1f} MiB | {o / lo:.2f} |"

    k = notes["keys"]
    lines = [
        "| measurement | crdtsync | loro | crdtsync / loro |",
        "|---|---|---|---|",
        row(f"create {n_nodes:,} nodes", "create", n_nodes, "µs/node"),
        row(f"{n_moves:,} random local moves, appended", "moves", n_moves, "µs/move"),
        row(f"{n_moves:,} random local moves, at index 0", "moves0", n_moves, "µs/move"),
        row(f"merge 2 x {n_conc:,} concurrent moves (import + read)", "merge", None, ""),
        f"| ... of which the tree's own work (undo-do-redo of {n_conc:,} + "
        f"{n_conc:,} moves) | {notes['merge_tree_s'] * 1e3:.1f} ms | | "
        f"{notes['merge_tree_s'] / best['merge']['loro']:.2f} |",
        f"| saved size after create + moves | {so:,} B | {sl:,} B | {so / sl:.2f} |",
        row("load that and read the tree", "load", None, ""),
        f"| ... of which the tree's own work | {notes['load_tree_s'] * 1e3:.1f} ms | | "
        f"{notes['load_tree_s'] / best['load']['loro']:.2f} |",
        mem_row("memory to hold it (create + moves)", "built"),
        mem_row("memory to hold it (loaded)", "loaded"),
        f"| update carrying {n_conc:,} moves | {uo:,} B | {ul:,} B | {uo / ul:.2f} |",
        f"| position key length after {n_moves:,} random moves/inserts (mean / max) "
        f"| {k['ours_mean']:.2f} / {k['ours_max']} chars | {k['loro_mean']:.2f} / "
        f"{k['loro_max']} bytes | |",
    ]
    ro, rl = notes["refused"]
    lines.append("")
    lines.append(f"Cycle-making moves refused: crdtsync {ro:,}, loro {rl:,}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run, a tenth of the sizes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wall", action="store_true", help="wall clock instead of CPU time")
    args = parser.parse_args(argv)
    n_nodes, n_moves, n_conc = (10_000, 100_000, 10_000)
    runs = args.runs
    if args.quick:
        n_nodes, n_moves, n_conc, runs = 1_000, 10_000, 1_000, 1
    clock: Clock = time.perf_counter if args.wall else time.process_time
    res = run(n_nodes, n_moves, n_conc, runs, clock)
    print(f"clock: {'wall' if args.wall else 'process CPU time'}, best of {runs}")
    print(table(res, n_nodes, n_moves, n_conc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
