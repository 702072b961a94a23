"""A client that joins a room while the relay unloads it (during the unload's compaction).

Regression: the crdtsync client's document was closed under it ("document
closed", its later edits were never synced while it stayed connected), and a
y-protocols client was closed with 1011 (KeyError in _serve_y). Fixed by
``Peer.close_doc(keep=...)``: the relay keeps a room someone joined meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Self

import pytest
from websockets.asyncio.client import connect as ws_connect

from crdtsync import Doc, Peer
from crdtsync.protocol import yprotocol as y
from crdtsync.relay import Relay, RelayConfig
from crdtsync.transports.websocket import WebSocketTransport

pytestmark = pytest.mark.anyio



class UnloadGate:
    """Holds the relay's unload compaction until released; tells when the unload ended."""

    def __init__(self, relay: Relay) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.unloaded = asyncio.Event()
        store: Any = relay.peer._store
        compact = store.compact
        close_doc = relay.peer.close_doc

        def gated_compact(*args: Any) -> None:
            self.entered.set()
            assert self.release.wait(20)
            compact(*args)

        async def watched_close_doc(*args: Any, **kwargs: Any) -> Any:
            try:
                return await close_doc(*args, **kwargs)
            finally:
                self.unloaded.set()

        store.compact = gated_compact
        relay.peer.close_doc = watched_close_doc  # type: ignore[method-assign]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 20)


async def write_and_leave(url: str, room: str, item: str) -> None:
    async with Peer(transport=WebSocketTransport()) as peer:
        await peer.connect(url)
        (await peer.open(room)).list("items").append(item)
        assert await peer.wait_synced(room, timeout=10)


async def stored_items(data: Path, room: str) -> list[Any]:
    relay = Relay(RelayConfig(port=0, data=str(data)))
    async with relay, Peer(transport=WebSocketTransport()) as peer:
        await peer.connect(relay.url)
        doc = await peer.open(room)
        assert await peer.wait_synced(room, timeout=10)
        return sorted(doc.list("items").to_py())


async def test_peer_joining_during_unload_keeps_syncing(tmp_path: Path) -> None:
    data = tmp_path / "relay.db"
    async with Relay(RelayConfig(port=0, data=str(data), idle_unload=0.1)) as relay:
        await write_and_leave(relay.url, "idle", "first")
        with UnloadGate(relay) as gate:
            await gate.wait_entered()  # the sweeper is unloading "idle", compaction held
            await join_during_unload(relay, gate)
    assert await stored_items(data, "idle") == ["first", "second", "third"]


async def join_during_unload(relay: Relay, gate: UnloadGate) -> None:
    async with Peer(transport=WebSocketTransport()) as peer:
        await peer.connect(relay.url)
        doc = await peer.open("idle")
        doc.list("items").append("second")
        assert await peer.wait_synced("idle", timeout=10)
        gate.release.set()
        await asyncio.wait_for(gate.unloaded.wait(), 20)
        # The room stayed loaded for the client that joined.
        assert "idle" in relay.peer.docs()
        doc.list("items").append("third")
        assert await peer.wait_synced("idle", timeout=10)


async def test_y_client_joining_during_unload_is_served(tmp_path: Path) -> None:
    data = tmp_path / "relay.db"
    async with Relay(RelayConfig(port=0, data=str(data), idle_unload=0.1)) as relay:
        await write_and_leave(relay.url, "idle", "first")
        with UnloadGate(relay) as gate:
            await gate.wait_entered()
            await y_join_during_unload(relay, gate)
    assert await stored_items(data, "idle") == ["first", "from y"]


async def y_join_during_unload(relay: Relay, gate: UnloadGate) -> None:
    ydoc = Doc()
    async with ws_connect(f"{relay.url}/idle", proxy=None) as ws:
        first = y.decode(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(first, y.SyncStep1)  # not a 1011 close
        gate.release.set()
        await asyncio.wait_for(gate.unloaded.wait(), 20)
        updates: list[bytes] = []
        ydoc.observe_updates(lambda u, _o, local: updates.append(u) if local else None)
        ydoc.list("items").append("from y")
        for update in updates:
            await ws.send(y.encode_update(update))
        # The answer to a sync step 1 sent after the update means it was handled.
        await ws.send(y.encode_sync_step1(ydoc.version))
        async with asyncio.timeout(10):
            while not isinstance(y.decode(await ws.recv()), y.SyncStep2):
                pass
