"""Fixtures of the model tests: the movable tree's two states (Rust and Python)."""

from __future__ import annotations

import pytest

from crdtsync.model import tree as tree_mod


@pytest.fixture(params=["native", "python"])
def tree_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a tree test on the Rust tree state and again on the pure-Python one.

    The tree modules use it with ``pytestmark = pytest.mark.usefixtures("tree_path")``.
    Only the tree's state is switched (``tree._tree_core_class``, asked whenever a
    tree is bound); the format layer stays on whatever path the run uses. The
    native run is skipped only where the extension cannot be there
    (:func:`helpers.native.require_native`).
    """
    if request.param == "python":
        monkeypatch.setattr(tree_mod, "_tree_core_class", lambda: None)
    else:
        from helpers.native import require_native

        require_native()
    return str(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of the pure-Python reference itself run on the Python path only (not skipped)."""
    if "pure_tree" in metafunc.fixturenames and "tree_path" in metafunc.fixturenames:
        # As a mark, so the fixture's own params give way to it (pytest's rule).
        metafunc.definition.add_marker(
            pytest.mark.parametrize("tree_path", ["python"], indirect=True)
        )


@pytest.fixture
def pure_tree(tree_path: str) -> None:
    """For tests of the pure-Python reference itself (they patch ``_TreeState``):
    run once, on the Python path (:func:`pytest_generate_tests`)."""
    assert tree_path == "python"
