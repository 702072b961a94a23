"""Presence: who else is here, and where their cursor is, without touching the document.

Presence (awareness) states are small JSON values each peer publishes per
document; they are never stored, and a peer that goes silent disappears from
everyone's view after 30 seconds (at once if it says goodbye). The format is
y-protocols' awareness, so browsers using y-websocket see the same states.

Run: python examples/presence.py
"""

from __future__ import annotations

import asyncio
import tempfile

from crdtsync import AwarenessChange, Peer
from crdtsync.transports.memory import MemoryNetwork


async def main(folder: str) -> None:
    net = MemoryNetwork()
    async with Peer(store=f"{folder}/ana.db", transport=net.transport("ana")) as ana, \
               Peer(store=f"{folder}/bob.db", transport=net.transport("bob")) as bob:  # fmt: skip
        await bob.listen("mem://bob")
        await ana.open("notes")
        await bob.open("notes")
        arrived = asyncio.Event()
        left = asyncio.Event()

        def on_presence(doc: str, change: AwarenessChange) -> None:
            if change.added or change.updated:
                arrived.set()
            if change.removed:
                left.set()

        bob.on_presence(on_presence)
        await ana.connect("mem://bob")
        assert await ana.wait_synced("notes", timeout=10)

        ana.set_presence("notes", {"user": {"name": "ana", "color": "#e91e63"}, "cursor": 12})
        await asyncio.wait_for(arrived.wait(), timeout=10)
        others = {cid: s for cid, s in bob.presence("notes").states.items() if cid != bob.peer_id}
        print("bob sees:", others)

        ana.set_presence("notes", None)  # ana closes the document: she says goodbye
        await asyncio.wait_for(left.wait(), timeout=10)
        print("after ana left, bob sees:", bob.presence("notes").states)


with tempfile.TemporaryDirectory() as folder:
    asyncio.run(main(folder))
