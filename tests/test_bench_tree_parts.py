"""benchmarks/bench_tree_parts.py runs and measures every part it names (no timing asserted)."""

from __future__ import annotations

import pytest

pytest.importorskip("loro")

import bench_tree_parts


def test_move_parts_measure_every_part() -> None:
    parts = bench_tree_parts.move_parts(1, n_nodes=200, n_moves=1_000)
    names = [name for name, _ in parts]
    assert len(names) == 6
    assert len(set(names)) == 6
    assert all(us > 0 for _, us in parts)


def test_load_parts_measure_every_part() -> None:
    parts = bench_tree_parts.load_parts(1, n_nodes=200, n_moves=1_000)
    assert len(parts) == 6
    assert all(ms > 0 for _, ms in parts)


def test_quick_run_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_tree_parts.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| move part |" in out
    assert "| load part |" in out
    assert out.count("\n| ") >= 13
