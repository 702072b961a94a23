#!/usr/bin/env python3
"""The Rust core against the Python reference on the editing traces, in one run.

For each sequential trace (``benchmarks/traces.py``), the full history is
replayed through pycrdt once; its v1 update (``get_update()``) and its compact
save (``compact_encode`` of that update) are then timed through:

``parse``
    ``_yupdate.parse_update`` (Python) vs ``_native.parse_update`` (Rust, result
    kept in Rust) and ``_native.parse_update`` + ``accel.to_parsed_update``
    (Rust, then the same Python objects the reference builds).
``compact_encode`` / ``compact_decode``
    ``_columnar`` vs ``_native`` (same bytes out; both include the re-parse
    and the LZMA/zstd work, which is C on both sides).
``pycrdt apply``
    ``pycrdt.Doc().apply_update(v1)``: the engine itself, the floor any
    validation is measured against.

Each figure is the best of ``--repeat`` runs (the runs of the different
contenders interleaved, so background load hits them alike). Nothing here is
asserted: it reports.

Usage::

    .venv/bin/python benchmarks/bench_native.py [--repeat 5] [--traces automerge-paper ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pycrdt
from traces import SEQUENTIAL, PycrdtReplay, load_trace

from crdtsync.format import accel
from crdtsync.format import columnar as _columnar
from crdtsync.format import yupdate as _yupdate


def _native() -> Any:
    from crdtsync import _native  # type: ignore[attr-defined]

    return _native


def best_of(repeat: int, fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best wall time of each function over ``repeat`` interleaved rounds."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _apply(v1: bytes) -> None:
    pycrdt.Doc().apply_update(v1)


def bench_trace(name: str, repeat: int) -> list[tuple[str, str, float]]:
    """Rows ``(trace, measure, seconds)`` for one trace."""
    n = _native()
    limits = _yupdate.DEFAULT_LIMITS
    replay = PycrdtReplay(load_trace(name))
    replay.run()
    v1 = replay.doc.get_update()
    save = _columnar.compact_encode(v1)
    assert n.compact_encode(v1, limits) == save, "the two encoders disagree"
    assert n.compact_decode(save, limits) == v1 == _columnar.compact_decode(save, limits)
    structs = _yupdate.parse_update(v1).struct_count()
    print(
        f"{name}: v1 {len(v1):,} bytes, {structs:,} structs; compact save {len(save):,} bytes",
        flush=True,
    )
    rows: list[tuple[str, str, float]] = []
    t = best_of(
        repeat,
        {
            "pycrdt apply_update": lambda: _apply(v1),
            "parse: Python": lambda: _yupdate.parse_update(v1, limits),
            "parse: Rust": lambda: n.parse_update(v1, limits),
            "parse: Rust + Python objects": lambda: accel.to_parsed_update(
                n.parse_update(v1, limits)
            ),
            "compact_decode: Python": lambda: _columnar.compact_decode(save, limits),
            "compact_decode: Rust": lambda: n.compact_decode(save, limits),
        },
    )
    rows.extend((name, k, v) for k, v in t.items())
    t = best_of(
        max(1, repeat // 2),
        {
            "compact_encode: Python": lambda: _columnar.compact_encode(v1),
            "compact_encode: Rust": lambda: n.compact_encode(v1, limits),
        },
    )
    rows.extend((name, k, v) for k, v in t.items())
    return rows


def report(rows: Sequence[tuple[str, str, float]]) -> str:
    """A markdown table per trace with the ratios."""
    out: list[str] = []
    by_trace: dict[str, dict[str, float]] = {}
    for trace, measure, sec in rows:
        by_trace.setdefault(trace, {})[measure] = sec
    for trace, m in by_trace.items():
        floor = m["pycrdt apply_update"]
        out.append(f"\n### {trace}\n")
        out.append("| measure | ms | x pycrdt apply | Python / Rust |")
        out.append("|---|---:|---:|---:|")
        for measure, sec in m.items():
            ratio = ""
            if measure.endswith((": Rust", "Python objects")):
                py = m.get(measure.split(":")[0] + ": Python")
                if py:
                    ratio = f"{py / sec:.1f}x"
            out.append(f"| {measure} | {sec * 1000:,.1f} | {sec / floor:.2f} | {ratio} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--traces", nargs="*", default=list(SEQUENTIAL))
    args = ap.parse_args(argv)
    print(f"path in use by crdtsync.format.accel: {accel.PATH}")
    rows: list[tuple[str, str, float]] = []
    for name in args.traces:
        rows.extend(bench_trace(name, args.repeat))
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
