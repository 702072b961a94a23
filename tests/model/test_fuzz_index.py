"""A sample of ``scripts/fuzz_index.py``: the Rust document index against the Python one.

The long runs (docs/LONG_RUNS.md) feed both checkers hundreds of thousands of
generated updates; CI runs a fixed sample of the same sessions, and checks that
the comparison is not vacuous.
"""

from __future__ import annotations

from types import ModuleType

import pytest
from helpers.native import require_native
from helpers.traces import script_module

from crdtsync.format import checker as checker_module


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native()  # skips without cargo; fails where cargo could have built it


def _fuzz_index() -> ModuleType:
    return script_module("fuzz_index")


@pytest.mark.slow
def test_index_differential_sample() -> None:
    fi = _fuzz_index()
    res = fi.run_range(seed=20261207, start=0, stop=40)
    assert res.sessions == 40
    assert res.count >= 40 * 40, res.count
    assert res.problems == []
    outcomes = res.outcomes
    # the sample covers acceptance, each refusal class and rollbacks, on every kind of session
    for kind in fi.KINDS:
        assert sum(n for k, n in outcomes.items() if k.startswith(f"{kind}:")) > 0, kind
    for got in ("ok", "MalformedUpdateError", "MissingUpdatesError", "rolled-back"):
        assert sum(n for k, n in outcomes.items() if k.endswith(f":import:{got}")) > 0, got
    assert outcomes["doc-level sessions"] > 0


def test_index_differential_catches_disagreements(monkeypatch: pytest.MonkeyPatch) -> None:
    """A native checker that differs in what an update moves is reported."""
    fi = _fuzz_index()
    real = checker_module.NativeChecker.commit

    def skewed(self: checker_module.NativeChecker) -> list[int]:
        return [*real(self), 4_000_000_001]

    monkeypatch.setattr(checker_module.NativeChecker, "commit", skewed)
    res = fi.run_range(seed=20261207, start=0, stop=4)
    assert any("commit: moved clients" in problem for _, _, problem in res.problems), res.problems
