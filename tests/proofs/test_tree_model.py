"""The exhaustive small-scope model check of the movable tree, at a bound small enough for CI.

``python proofs/tree_model_check.py`` runs the bound reported in proofs/TREE.md.
Every test runs on the pure-Python reference state and on the Rust one
(``crdtsync._native.TreeCore`` behind ``_NativeState``); the tests that break
an engine on purpose break the one they check.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from pathlib import Path
from typing import Any

import pytest
from helpers.native import require_native

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "proofs"))

import tree_model_check

from crdtsync.model.tree import ROOT, TRASH, _NativeState, _TreeState

# Part C at the CI bound: batches integrated exactly above a floor, and refused below it.
TRUNCATED, REFUSED = 13_504, 17_536
# Part C's truncated states at the CI bound, each compared with the reference on
# the native run: 64 histories of 4 operations, 2**4 subsets, 5 floors each.
PART_C_STATES = 64 * 2**4 * 5


@pytest.fixture(params=tree_model_check.STATES)
def kind(request: pytest.FixtureRequest) -> str:
    """The state checked: ``"python"`` (the reference) or ``"native"`` (the Rust port)."""
    if request.param == "native":
        require_native()
    return str(request.param)


def test_tree_model_check_small_scope(kind: str) -> None:
    stats = tree_model_check.check(tree_model_check.SMALL, kind=kind)
    assert stats.histories == 64 + 6144
    assert stats.transitions == 403_520
    assert stats.duplicates == 198_656
    assert (stats.truncated, stats.refused) == (TRUNCATED, REFUSED)
    assert stats.executions == 2 * 100  # under both truncation policies
    # On the Rust state, every E(S) and every truncated one also equals the reference's.
    assert stats.compared == (stats.states + PART_C_STATES if kind == "native" else 0)


def test_part_b_gives_the_same_trees_on_both_states() -> None:
    """Each move combination's tree on the Rust state is the one the reference gives."""
    require_native()
    trees: dict[Any, str] = {}
    tree_model_check.part_b(2, 2, 1, tree_model_check.Stats(), "python", trees)
    assert len(trees) == 25  # every combination of one move per replica
    tree_model_check.part_b(2, 2, 1, tree_model_check.Stats(), "native", trees)
    # A disagreement is caught: the same combinations with other trees on record.
    wrong = {k: v + "?" for k, v in trees.items()}
    with pytest.raises(AssertionError, match="the states disagree"):
        tree_model_check.part_b(2, 2, 1, tree_model_check.Stats(), "native", wrong)


def test_state_native_without_the_extension_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tree_model_check.tree_mod, "_tree_core_class", lambda: None)
    with pytest.raises(SystemExit) as exc:
        tree_model_check.main(["--state", "native", "--scope", "moves", "1", "1"])
    assert exc.value.code == 2
    assert "crdtsync._native" in capsys.readouterr().err


# -- the check can fail ---------------------------------------------------------------------


def _native_integrate(monkeypatch: pytest.MonkeyPatch, wrap: Any) -> None:
    """Replace ``_NativeState.integrate`` by ``wrap(real, self, new, old, trim)``."""
    real = _NativeState.integrate

    def integrate(self: _NativeState, new: list[Any], old: Any = None, trim: bool = True) -> bool:
        return bool(wrap(real, self, new, old, trim))

    monkeypatch.setattr(_NativeState, "integrate", integrate)


def test_model_check_detects_a_floor_that_lets_old_operations_in(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Truncating the log but still accepting operations below it gives wrong trees."""

    def forgetful(self: _TreeState, t: int) -> None:
        del self.log[: bisect_left(self.log, (t,))]  # ...and the floor stays where it was

    def forgetful_native(self: _NativeState, t: int) -> None:
        m = self.mirror()
        self.core.load(
            [(n, p, "" if p == TRASH else m.kids[p][n]) for n, p in m.parent.items()],
            m.last,
            m.clock,
            m.floor,  # ...stays where it was
            [e for e in m.log if e[0] >= t],
            m.trim_at,
        )

    # Both states forget alike, so that the native run's own Part C checks (not
    # its comparison with the reference) must catch it.
    monkeypatch.setattr(_TreeState, "truncate_at", forgetful)
    if kind == "native":
        monkeypatch.setattr(_NativeState, "truncate_at", forgetful_native)
    with pytest.raises(AssertionError, match="accepted below the floor"):
        tree_model_check.part_c("moves", 2, 2, tree_model_check.Stats(), kind)


def test_model_check_detects_a_missing_cycle_check(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check is not vacuous: an engine that applies cycle-making moves fails it."""
    if kind == "python":
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
    else:

        def blind_native(real: Any, self: _NativeState, new: Any, old: Any, trim: bool) -> bool:
            changed = False
            for op in sorted(set(new)):
                t, n, p, k = op
                top = self.core.log_top()
                newer = top is None or t > top
                if newer and p not in (ROOT, TRASH, n) and n in self.parent and p in self.parent:
                    # Pretend the move is legal: apply_local makes it unchecked.
                    self.core.apply_local(t, n, p, k, False)
                    changed = True
                else:
                    changed |= real(self, [op], old, trim)
            return changed

        _native_integrate(monkeypatch, blind_native)
    with pytest.raises(AssertionError) as exc:
        tree_model_check.part_a("moves", 2, 2, tree_model_check.Stats(), kind)
    assert "reference" not in str(exc.value)  # the specification caught it


def test_model_check_detects_arrival_order_dependence(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine that mishandles operations older than its newest one fails it."""
    if kind == "python":
        # Forgets to undo later operations before applying an older one.
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
    else:
        # Drops them (a state built from nothing in one batch is still right).
        def drops_late(real: Any, self: _NativeState, new: Any, old: Any, trim: bool) -> bool:
            top = self.core.log_top()
            return bool(real(self, [op for op in new if top is None or op[0] > top], old, trim))

        _native_integrate(monkeypatch, drops_late)
    with pytest.raises(AssertionError) as exc:
        tree_model_check.part_a("moves", 2, 2, tree_model_check.Stats(), kind)
    assert "reference" not in str(exc.value)  # the transitions caught it


def test_model_check_compares_the_native_state_with_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Rust state that differs from the reference where the specification cannot see
    (here its floor: every tree right, every transition consistent) fails the check."""
    require_native()

    def high_floor(real: Any, self: _NativeState, new: Any, old: Any, trim: bool) -> bool:
        changed = real(self, new, old, trim)
        self.core.truncate_at(1 << 64)  # below every operation: nothing refused
        return bool(changed)

    _native_integrate(monkeypatch, high_floor)
    with pytest.raises(AssertionError, match="differs from the Python reference"):
        tree_model_check.part_a("moves", 2, 2, tree_model_check.Stats(), "native")
    # Not caught on the way by anything else: without the comparison it passes.
    monkeypatch.setattr(tree_model_check, "agrees", lambda *args: None)
    tree_model_check.part_a("moves", 2, 2, tree_model_check.Stats(), "native")
