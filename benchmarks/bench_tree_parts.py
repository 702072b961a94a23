"""Where a tree move's and a tree load's time goes: the parts of bench_tree's two misses.

``bench_tree.py`` compares whole operations with Loro. This script takes the
two that miss the issue 17 targets (local move <= 2x Loro, load <= 3x Loro)
apart, on the same workload (10,000 nodes, 100,000 random moves, seed 1),
each part the best of ``--runs`` (process CPU time, garbage collector off):

moves (µs per move)
    * ``Tree.move`` as the benchmark calls it (each move its own transaction);
    * the same moves inside one ``doc.transaction()``;
    * the engine write alone: one Y.Map entry like a move's, written through
      ``_engine_private.entry_writer`` (what ``Tree.move`` calls) into a
      100,000-entry map, with a subscription like the tree's own (which
      ignores the write) and without one;
    * Loro's ``mov``, committed once at the end (as in ``bench_tree``: Loro
      keeps one pending transaction until ``commit``) and committed after
      every move.

load (ms)
    * Loro: import the snapshot, read the tree;
    * ``Doc.load(save())`` and a read of the tree (from its saved shape: the
      engine's apply of the history waits for its first use, ``docs/TREE.md``,
      "Saved shapes");
    * the same, then ``doc.version``: the first use of the engine, which
      applies the history (hydration);
    * ``envelope.unpack`` of that save: the compact decoder alone;
    * ``Doc().import_yjs_update(v1)`` of the same history: one parse, the
      checker's pass and the engine's apply, no tree;
    * pycrdt applying that v1 update alone (no checks): the engine's part,
      what a load that reads only the tree no longer pays.

Run: ``python benchmarks/bench_tree_parts.py`` (about a minute), ``--runs N``,
``--quick`` (a tenth of the sizes, one run).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import loro
import pycrdt
from bench_tree import loro_create, loro_moves, ours_create, ours_moves, plan

from crdtsync import Doc, UpdateLimits
from crdtsync.format import envelope
from crdtsync.model._engine_private import entry_writer, observe_entries

N_NODES, N_MOVES = 10_000, 100_000
QUICK_NODES, QUICK_MOVES = 1_000, 10_000


def best(runs: int, setup: Callable[[], Callable[[], Any]]) -> float:
    """Best CPU seconds of ``setup()()`` over ``runs`` (setup is not timed)."""
    out = float("inf")
    for _ in range(runs):
        fn = setup()
        gc.collect()
        gc.disable()
        try:
            t0 = time.process_time()
            fn()
            out = min(out, time.process_time() - t0)
        finally:
            gc.enable()
    return out


def move_parts(
    runs: int, n_nodes: int = N_NODES, n_moves: int = N_MOVES
) -> list[tuple[str, float]]:
    """``(part, µs per move)`` for each part of a local move (module docstring)."""
    parents, moves = plan(n_nodes, n_moves, seed=1)

    def ours() -> Callable[[], Any]:
        doc, ids = ours_create(parents)
        return lambda: ours_moves(doc, ids, moves, None)

    def ours_one_txn() -> Callable[[], Any]:
        doc, ids = ours_create(parents)

        def go() -> None:
            with doc.transaction():
                ours_moves(doc, ids, moves, None)

        return go

    def engine_write(observed: bool) -> Callable[[], Callable[[], Any]]:
        def setup() -> Callable[[], Any]:
            ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
            root: pycrdt.Map[Any] = ydoc.get("t", type=pycrdt.Map)
            root["1"] = pycrdt.Map()
            cont = root["1"]
            put = entry_writer(ydoc, cont)
            subs = [observe_entries(cont, lambda ev: None)] if observed else []
            keys = [str(n_nodes + i) for i in range(n_moves)]
            entries = [f"{n} {p} a{i % 62}" for i, (n, p) in enumerate(moves)]

            def go() -> None:
                for k, e in zip(keys, entries, strict=True):
                    put(k, e, None)
                del subs[:]

            return go

        return setup

    def loro_one_commit() -> Callable[[], Any]:
        doc, ids = loro_create(parents)
        return lambda: loro_moves(doc, ids, moves, None)

    def loro_commit_each() -> Callable[[], Any]:
        doc, ids = loro_create(parents)
        tree = doc.get_tree("t")

        def go() -> None:
            for n, p in moves:
                try:
                    tree.mov(ids[n], None if p is None else ids[p])
                except BaseException:  # Loro raises bare BaseException
                    continue
                doc.commit()

        return go

    parts = [
        ("crdtsync Tree.move (a transaction each)", ours),
        ("crdtsync Tree.move, all in one transaction", ours_one_txn),
        ("engine write alone, with an ignoring observer (the tree's)", engine_write(True)),
        ("engine write alone, no observer", engine_write(False)),
        ("Loro mov, one commit at the end (bench_tree)", loro_one_commit),
        ("Loro mov, commit after each move", loro_commit_each),
    ]
    return [(name, best(runs, fn) / n_moves * 1e6) for name, fn in parts]


def load_parts(
    runs: int, n_nodes: int = N_NODES, n_moves: int = N_MOVES
) -> list[tuple[str, float]]:
    """``(part, ms)`` for each part of loading the tree's save (module docstring)."""
    parents, moves = plan(n_nodes, n_moves, seed=1)
    odoc, oids = ours_create(parents)
    ours_moves(odoc, oids, moves, None)
    saved = odoc.save()
    v1 = odoc.export_yjs_update()
    ldoc, lids = loro_create(parents)
    loro_moves(ldoc, lids, moves, None)
    snap = ldoc.export(loro.ExportMode.Snapshot())
    lim = UpdateLimits()
    whole = UpdateLimits(max_update_bytes=max(lim.max_update_bytes, lim.max_document_bytes))

    def load_loro() -> Callable[[], Any]:
        def go() -> None:
            d = loro.LoroDoc()
            d.import_(snap)
            d.get_tree("t").children(None)

        return go

    def load_ours() -> Callable[[], Any]:
        return lambda: Doc.load(saved).tree("t").children(None)

    def load_hydrated() -> Callable[[], Any]:
        def go() -> None:
            d = Doc.load(saved)
            d.tree("t").children(None)
            d.version  # noqa: B018 - the first use of the engine: hydration

        return go

    def decoder() -> Callable[[], Any]:
        return lambda: envelope.unpack(saved, whole)

    def import_v1() -> Callable[[], Any]:
        d = Doc()
        return lambda: d.import_yjs_update(v1)

    def engine() -> Callable[[], Any]:
        d: pycrdt.Doc[Any] = pycrdt.Doc()
        return lambda: d.apply_update(v1)

    parts = [
        ("Loro: import the snapshot, read the tree", load_loro),
        ("crdtsync: Doc.load(save()), read the tree", load_ours),
        ("... then the first use of the engine (hydration)", load_hydrated),
        ("... the compact decoder alone (envelope.unpack)", decoder),
        ("... Doc().import_yjs_update(v1): parse, checks, engine", import_v1),
        ("... pycrdt apply_update(v1) alone: the engine's part", engine),
    ]
    return [(name, best(runs, fn) * 1e3) for name, fn in parts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run, a tenth of the sizes")
    args = parser.parse_args(argv)
    sizes = (QUICK_NODES, QUICK_MOVES) if args.quick else (N_NODES, N_MOVES)
    runs = 1 if args.quick else args.runs
    print(f"{sizes[0]:,} nodes, {sizes[1]:,} moves; process CPU time, best of {runs}")
    print("| move part | µs per move |\n|---|---|")
    for name, us in move_parts(runs, *sizes):
        print(f"| {name} | {us:.2f} |")
    print("\n| load part | ms |\n|---|---|")
    for name, ms in load_parts(runs, *sizes):
        print(f"| {name} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
