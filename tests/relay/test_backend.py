"""The relay's room-backend seam: the default backend (a Peer) passes the acceptance suite.

``crdtsync.testing.check_room_backend`` is what any other backend (a cluster
sharing rooms through PostgreSQL) must pass too; a backend that breaks a rule
fails it (the suite can fail).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from crdtsync.peer.guests import DocWatcher
from crdtsync.peer.peer import Peer
from crdtsync.relay.backend import BackendSettings, RoomBackend, peer_backend
from crdtsync.testing import check_room_backend


@pytest.mark.anyio
async def test_the_peer_backend_passes_the_suite() -> None:
    await check_room_backend(peer_backend)


class _DeafPeer(Peer):
    """A backend that never tells its watchers anything (breaks "watchers hear everything")."""

    def watch(self, watcher: DocWatcher) -> Callable[[], None]:
        return lambda: None


async def _deaf_backend(settings: BackendSettings) -> RoomBackend:
    peer = _DeafPeer(
        store=settings.store,
        authorize=settings.authorize,
        options=settings.options,
        announce=False,
    )
    return await peer.start()


@pytest.mark.anyio
async def test_a_backend_breaking_a_rule_fails_the_suite() -> None:
    with pytest.raises(AssertionError, match="heard once"):
        await check_room_backend(_deaf_backend)


def test_a_peer_is_a_room_backend() -> None:
    # Structural: what the relay needs of a backend is exactly Peer's public API.
    backend: RoomBackend = Peer()
    assert backend.docs() == []
