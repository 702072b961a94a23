"""Fixtures shared by every test; helpers shared by several live in ``tests/helpers``.

The tests mirror the package: ``tests/format`` tests ``crdtsync.format``,
``tests/model`` ``crdtsync.model``, and so on; ``tests/interop`` runs real
Yjs, y-websocket and browser clients, ``tests/proofs`` the model checks of
``proofs/``.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, the loop crdtsync's shells use."""
    return "asyncio"


# PostgreSQL fixtures (pg_server, pg_dsn, pg_own_server): a server in a temp dir,
# started only when a test asks for one (tests/helpers/postgres.py).
from helpers.postgres import pg_dsn, pg_own_server, pg_server  # noqa: E402, F401


@pytest.fixture(params=["native", "python"])
def checker_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test on the Rust core and again on the pure-Python reference.

    Modules whose every test must hold on both paths (import safety, the
    crasher fixtures, the shared corpus, budgets) use it with
    ``pytestmark = pytest.mark.usefixtures("checker_path")``. The Python run
    switches the whole format layer (``crdtsync.format.accel``, which every
    ``Doc`` and decoder asks) as ``CRDTSYNC_PURE_PYTHON=1`` would at import;
    child processes get that variable (:func:`helpers.paths.child_env`). The
    native run is skipped only where the extension cannot be there
    (:func:`helpers.native.require_native`; CI builds it, and fails without it).
    """
    from crdtsync.format import accel

    monkeypatch.setenv(accel.PURE_PYTHON_ENV, "1" if request.param == "python" else "0")
    if request.param == "python":
        # The path is picked once at import; this is the same switch, made late.
        monkeypatch.setattr(accel, "NATIVE", False)
        monkeypatch.setattr(accel, "_NATIVE_MODULE", None)
    else:
        from helpers.native import require_native

        require_native()
    return str(request.param)
