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
