"""The Rust document index alone: its pass over a whole history, and its size.

``bench_tree_parts.py`` and ``bench_import.py`` time whole loads and imports;
this script times the part of them the index does, on the same histories
given as one Yjs v1 update each, through the native binding
(``crdtsync._native``): the parse (``parse_update``), then the index's pass
(``DocIndex.begin`` + ``commit`` on a fresh index: every check, every run
recorded), each the best of ``--runs`` (process CPU time, garbage collector
off). It prints the runs the index holds afterwards and its tables' bytes
(``heap_bytes``), per run.

Histories: the tree of ``bench_tree_parts`` (10,000 nodes + 100,000 moves,
seed 1: about 110,000 Y.Map entries) and the sequential traces
automerge-paper and seph-blog1 (``../shared/traces``; skipped when absent).

Run: ``python benchmarks/bench_index.py`` (about a minute), ``--runs N``,
``--quick`` (a tenth of the tree, one run, no traces).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_tree import ours_create, ours_moves, plan

from crdtsync import UpdateLimits

N_NODES, N_MOVES = 10_000, 100_000
TRACES = ("automerge-paper", "seph-blog1")


def native() -> Any:
    """The native module, or None when crdtsync was installed without Rust."""
    try:
        from crdtsync import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _native


def tree_history(n_nodes: int = N_NODES, n_moves: int = N_MOVES) -> bytes:
    """The v1 update of ``bench_tree_parts``'s tree after its moves."""
    parents, moves = plan(n_nodes, n_moves, seed=1)
    doc, ids = ours_create(parents)
    ours_moves(doc, ids, moves, None)
    return doc.export_yjs_update()


def trace_history(name: str) -> bytes | None:
    """The v1 update of a sequential trace's whole history (None if absent)."""
    import traces
    from bench_import import full_history

    if not traces.trace_path(name).exists():
        return None
    return full_history(name)[1]


def measure(v1: bytes, runs: int) -> dict[str, float]:
    """Best parse and pass times (ms) of ``v1``, and the index's size after it."""
    nat = native()
    limits = UpdateLimits()
    whole = UpdateLimits(max_update_bytes=max(limits.max_update_bytes, len(v1)))
    parse = index = float("inf")
    ix: Any = None
    for _ in range(runs):
        gc.collect()
        gc.disable()
        try:
            t0 = time.process_time()
            update = nat.parse_update(v1, whole)
            parse = min(parse, time.process_time() - t0)
            ix = nat.DocIndex(None)
            t0 = time.process_time()
            ix.begin(update, whole)
            ix.commit()
            index = min(index, time.process_time() - t0)
        finally:
            gc.enable()
    count = ix.runs()
    return {
        "parse ms": parse * 1e3,
        "index pass ms": index * 1e3,
        "runs": count,
        "index bytes": ix.heap_bytes(),
        "bytes per run": ix.heap_bytes() / count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tenth of the tree, one run")
    args = parser.parse_args(argv)
    if native() is None:
        print("crdtsync was installed without its Rust extension: nothing to measure")
        return 1
    runs = 1 if args.quick else args.runs
    sizes = (N_NODES // 10, N_MOVES // 10) if args.quick else (N_NODES, N_MOVES)
    histories: list[tuple[str, bytes | None]] = [
        (f"tree {sizes[0]:,} nodes + {sizes[1]:,} moves", tree_history(*sizes))
    ]
    if not args.quick:
        histories += [(name, trace_history(name)) for name in TRACES]
    print(f"process CPU time, best of {runs}")
    print("| history | parse ms | index pass ms | runs | index bytes | bytes per run |")
    print("|---|---|---|---|---|---|")
    for name, v1 in histories:
        if v1 is None:
            print(f"| {name} | (trace not found) | | | | |")
            continue
        m = measure(v1, runs)
        print(
            f"| {name} | {m['parse ms']:.2f} | {m['index pass ms']:.2f} | {m['runs']:,} "
            f"| {m['index bytes']:,} | {m['bytes per run']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
