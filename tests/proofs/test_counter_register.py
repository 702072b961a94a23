"""The exhaustive small-scope checks of proofs/, at a bound small enough for CI."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "proofs"))

import check_counter_register


def test_counter_register_exhaustive_small_scope() -> None:
    stats = check_counter_register.check(length=3)
    assert stats.histories == 726
    assert stats.executions == 792
    assert stats.max_writes == 3


def test_model_check_detects_a_broken_register(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The check is not vacuous: a register that forgets concurrent values fails it."""
    from crdtsync.model.containers import Register

    real = Register.conflicts.fget
    assert real is not None
    monkeypatch.setattr(Register, "conflicts", property(lambda self: real(self)[:1]))
    try:
        check_counter_register.check(length=3)
    except AssertionError:
        return
    raise AssertionError("the model check accepted a register that drops conflicts")
