"""The exhaustive small-scope model check of the movable tree, at a bound small enough for CI.

``python proofs/tree_model_check.py`` runs the bound reported in proofs/TREE.md.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "proofs"))

import tree_model_check

from crdtsync.model.tree import _TreeState

# Part C at the CI bound: batches integrated exactly above a floor, and refused below it.
TRUNCATED, REFUSED = 13_504, 17_536


def test_tree_model_check_small_scope() -> None:
    stats = tree_model_check.check(tree_model_check.SMALL)
    assert stats.histories == 64 + 6144
    assert stats.transitions == 403_520
    assert stats.duplicates == 198_656
    assert (stats.truncated, stats.refused) == (TRUNCATED, REFUSED)
    assert stats.executions == 2 * 100  # under both truncation policies


def test_model_check_detects_a_floor_that_lets_old_operations_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Truncating the log but still accepting operations below it gives wrong trees."""

    def forgetful(self: _TreeState, t: int) -> None:
        del self.log[: bisect_left(self.log, (t,))]  # ...and the floor stays where it was

    monkeypatch.setattr(_TreeState, "truncate_at", forgetful)
    with pytest.raises(AssertionError):
        tree_model_check.part_c("moves", 2, 2, tree_model_check.Stats())


def test_model_check_detects_a_missing_cycle_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: an engine that applies cycle-making moves fails it."""
    real = _TreeState._do

    def blind(self: _TreeState, op: Any) -> None:
        t, n, p, k = op
        if n in self.parent and p in self.parent and n not in (p,):
            # Pretend the move is legal: make it without walking up from p.
            old = self.parent[n]
            oldk = self._unplace(n, old)
            self._place(n, p, k)
            self.log.append((t, n, p, k, old, oldk))
            return
        real(self, op)

    monkeypatch.setattr(_TreeState, "_do", blind)
    with pytest.raises(AssertionError):
        tree_model_check.part_a("moves", 2, 2, tree_model_check.Stats())


def test_model_check_detects_arrival_order_dependence(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that forgets to undo later operations before applying an older one fails it."""

    def no_undo(self: _TreeState, new: list[Any], old: Any = None, trim: bool = True) -> bool:
        known = {e[0] for e in self.log}
        fresh = sorted(op for op in set(new) if op[0] not in known)
        for op in fresh:
            self.clock = max(self.clock, op[0] >> 64)
            w = op[0] & ((1 << 64) - 1)
            self.last[w] = max(self.last.get(w, 0), op[0] >> 64)
            log, self.log = self.log, []
            self._do(op)
            self.log = sorted(log + self.log)
        return bool(fresh)

    monkeypatch.setattr(_TreeState, "integrate", no_undo)
    with pytest.raises(AssertionError):
        tree_model_check.part_a("moves", 2, 2, tree_model_check.Stats())
