"""``Peer(async_commits=True)``: commits on the store worker's thread, acks only once stored."""

from __future__ import annotations

import pytest
from helpers.stores import GatedStore

from crdtsync import MemoryStore, Peer, StoreError
from crdtsync.transports.memory import MemoryNetwork

pytestmark = pytest.mark.anyio


def logged(store: MemoryStore, name: str) -> bytes:
    stored = store.load(name)
    return b"" if stored is None else b"".join(update for _, update in stored.updates)


async def test_an_update_is_acknowledged_only_once_the_worker_stored_it() -> None:
    net = MemoryNetwork()
    store = GatedStore()
    server = Peer(store=store, transport=net.transport("s"), async_commits=True)
    client = Peer(transport=net.transport("c"))
    async with server, client:
        await server.listen("mem://s")
        doc = await client.open("notes")
        await client.connect("mem://s")
        assert await client.wait_synced("notes", timeout=10)

        store.gate.clear()  # the commit hangs on the worker thread
        doc.text("body").insert(0, "held")
        # Not acknowledged while it is not stored (the loop is free meanwhile).
        assert not await client.wait_synced("notes", timeout=0.5)
        assert b"held" not in logged(store, "notes")
        store.gate.set()
        assert await client.wait_synced("notes", timeout=10)
        assert b"held" in logged(store, "notes")
        assert store.threads == {"crdtsync-store"}  # never on the event loop's thread


async def test_an_update_that_cannot_be_stored_is_never_acknowledged() -> None:
    net = MemoryNetwork()
    store = GatedStore()
    server = Peer(store=store, transport=net.transport("s"), async_commits=True)
    client = Peer(transport=net.transport("c"))
    async with server, client:
        await server.listen("mem://s")
        doc = await client.open("notes")
        await client.connect("mem://s")
        assert await client.wait_synced("notes", timeout=10)
        store.failing = True
        doc.text("body").insert(0, "lost?")
        assert not await client.wait_synced("notes", timeout=1.0)
        with pytest.raises(StoreError):
            await server.flush()
        # The store is back: the client reconnects, resends, and is acknowledged.
        store.failing = False
        assert await client.wait_synced("notes", timeout=20)
        assert b"lost?" in logged(store, "notes")
