"""A sample of ``scripts/fuzz_lazy_load.py``: lazy loads against eager ones on forged saves.

The long runs (docs/LONG_RUNS.md) check tens of thousands of generated saves;
CI checks a fixed sample of the same inputs, and that the comparison is not
vacuous (a lazy answer made wrong is reported).
"""

from __future__ import annotations

from types import ModuleType

import pytest
from helpers.native import require_native
from helpers.traces import script_module

from crdtsync.model.doc import Doc


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native()  # lazy loads need the Rust checker


def _fuzz() -> ModuleType:
    return script_module("fuzz_lazy_load")


def test_lazy_load_differential_sample() -> None:
    fz = _fuzz()
    res = fz.run_range(seed=20261207, start=0, stop=300)
    assert res.problems == []
    assert res.count == 300
    outcomes = res.outcomes
    # Every kind of input ran; some loads stayed lazy through every tree read,
    # some fell back to the engine at load, some were refused.
    for kind in fz.KINDS:
        assert sum(n for k, n in outcomes.items() if k.startswith(f"{kind}:")) > 0, kind
    for got in ("ok-lazy-reads", "ok-lazy", "ok-eager", "MalformedUpdateError"):
        assert sum(n for k, n in outcomes.items() if k.endswith(f":{got}")) > 0, (got, outcomes)
    # Forged shapes and forged engines both reach documents that stay lazy.
    assert outcomes["shapes:ok-lazy-reads"] > 0
    assert outcomes["update:ok-lazy-reads"] > 0


def test_a_wrong_lazy_answer_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's kind read before hydration, made to say "tree" for every
    root: forged registries (a map, a counter... where the shapes say tree)
    then show a tree lazily and refuse it eagerly."""
    fz = _fuzz()
    real = Doc._lazy_registry_kind

    def always_tree(self: Doc, name: str) -> str | None:
        got = real(self, name)
        return None if got is None else "tree"

    monkeypatch.setattr(Doc, "_lazy_registry_kind", always_tree)
    res = fz.run_range(seed=20261207, start=0, stop=300)
    assert res.problems, res.outcomes
    assert any("registry-kind" in what for _, what in res.problems), res.problems
