"""pytest-benchmark versions of bench_tree.py, small enough to run in seconds.

Run with ``pytest benchmarks/test_bench_tree.py --benchmark-only``. Each group
holds crdtsync and Loro doing the same work (the same random choices, from
``bench_tree.plan``), so the report shows the ratio within a group; nothing here
asserts a timing.
"""

from __future__ import annotations

from typing import Any

import bench_tree
import loro
import pytest

from crdtsync import Doc

NODES = 1_000
MOVES = 5_000
CONCURRENT = 1_000

PARENTS, MOVE_PLAN = bench_tree.plan(NODES, MOVES, seed=1)
_, MOVES_B = bench_tree.plan(NODES, CONCURRENT, seed=2)
_, MOVES_C = bench_tree.plan(NODES, CONCURRENT, seed=3)
ENGINES = ("crdtsync", "loro")


@pytest.mark.parametrize("engine", ENGINES)
def test_create(benchmark: Any, engine: str) -> None:
    benchmark.group = f"create {NODES:,} nodes"
    fn = bench_tree.ours_create if engine == "crdtsync" else bench_tree.loro_create
    benchmark.pedantic(fn, args=(PARENTS,), rounds=5, iterations=1)


@pytest.mark.parametrize("engine", ENGINES)
def test_local_moves(benchmark: Any, engine: str) -> None:
    benchmark.group = f"{MOVES:,} random local moves"
    create = bench_tree.ours_create if engine == "crdtsync" else bench_tree.loro_create
    moves = bench_tree.ours_moves if engine == "crdtsync" else bench_tree.loro_moves

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        doc, ids = create(PARENTS)
        return (doc, ids, MOVE_PLAN, None), {}

    benchmark.pedantic(moves, setup=setup, rounds=5, iterations=1)


def _ours_merge_setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
    a, ids = bench_tree.ours_create(PARENTS, peer=1)
    b = Doc.load(a.save(), peer_id=2)
    b.tree("t").children(None)
    fork = b.version
    bench_tree.ours_moves(a, ids, MOVES_B, None)
    bench_tree.ours_moves(b, ids, MOVES_C, None)
    return (a, b.export_update(since=fork)), {}


def _ours_merge(a: Doc, update: bytes) -> Any:
    a.import_update(update)
    return a.tree("t").children(None)


def _loro_merge_setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
    la, ids = bench_tree.loro_create(PARENTS)
    lb = loro.LoroDoc()
    lb.import_(la.export(loro.ExportMode.Snapshot()))
    vv = lb.oplog_vv
    bench_tree.loro_moves(la, ids, MOVES_B, None)
    bench_tree.loro_moves(lb, ids, MOVES_C, None)
    return (la, lb.export(loro.ExportMode.Updates(vv))), {}


def _loro_merge(la: Any, update: bytes) -> Any:
    la.import_(update)
    return la.get_tree("t").children(None)


@pytest.mark.parametrize("engine", ENGINES)
def test_merge_concurrent_moves(benchmark: Any, engine: str) -> None:
    benchmark.group = f"merge 2 x {CONCURRENT:,} concurrent moves"
    if engine == "crdtsync":
        benchmark.pedantic(_ours_merge, setup=_ours_merge_setup, rounds=5, iterations=1)
    else:
        benchmark.pedantic(_loro_merge, setup=_loro_merge_setup, rounds=5, iterations=1)


@pytest.mark.parametrize("engine", ENGINES)
def test_load(benchmark: Any, engine: str) -> None:
    benchmark.group = f"load {NODES:,} nodes + {MOVES:,} moves and read"
    if engine == "crdtsync":
        doc, ids = bench_tree.ours_create(PARENTS)
        bench_tree.ours_moves(doc, ids, MOVE_PLAN, None)
        saved = doc.save()
        benchmark(lambda: Doc.load(saved).tree("t").children(None))
    else:
        ldoc, lids = bench_tree.loro_create(PARENTS)
        bench_tree.loro_moves(ldoc, lids, MOVE_PLAN, None)
        snap = ldoc.export(loro.ExportMode.Snapshot())

        def load() -> Any:
            d = loro.LoroDoc()
            d.import_(snap)
            return d.get_tree("t").children(None)

        benchmark(load)
