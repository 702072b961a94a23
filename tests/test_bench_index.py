"""benchmarks/bench_index.py measures the Rust index's pass and size (no timing asserted)."""

from __future__ import annotations

import pytest

pytest.importorskip("crdtsync._native")

import bench_index

from crdtsync import UpdateLimits, _native  # type: ignore[attr-defined]


def test_measure_reports_the_pass_and_the_index_size() -> None:
    v1 = bench_index.tree_history(n_nodes=50, n_moves=200)
    m = bench_index.measure(v1, runs=1)
    # Every struct of the tree's history is a map entry or a type: one run
    # each (map entries never merge into runs).
    limits = UpdateLimits()
    assert m["runs"] == _native.parse_update(v1, limits).struct_count() > 250
    assert m["index pass ms"] > 0
    assert m["parse ms"] > 0
    assert m["index bytes"] >= 40 * m["runs"]


def test_quick_run_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_index.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| history | parse ms |" in out
    assert "| tree 1,000 nodes + 10,000 moves |" in out
