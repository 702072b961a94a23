"""A relay with access tokens: a writer and a read-only viewer share a room.

The relay runs in this process (on a free port, with its rooms in a temporary
folder); in real life it is `crdtsync relay --secret-file relay.key` on a server
and each device gets its token from your app's backend (`crdtsync token`, or
`mint_token` below).

Run: python examples/relay_with_tokens.py
"""

from __future__ import annotations

import asyncio
import tempfile

from crdtsync import Peer, Status
from crdtsync.relay import Relay, RelayConfig, mint_token
from crdtsync.relay.tokens import generate_secret


async def main(folder: str) -> None:
    secret = generate_secret()  # the relay's key: whoever holds it can mint tokens
    config = RelayConfig(port=0, data=f"{folder}/relay.db", secret=secret)
    async with Relay(config) as relay:
        # Tokens name the rooms they open; read-only unless write=True; they expire.
        editor_token = mint_token(secret, "team/notes", write=True, ttl=3600, subject="ana")
        viewer_token = mint_token(secret, "team/*", write=False, ttl=3600, subject="wall-screen")

        ana = Peer(store=f"{folder}/ana.db")
        wall = Peer(store=f"{folder}/wall.db")
        async with ana, wall:
            refused = asyncio.Event()
            refusals: list[Status] = []

            def on_status(status: Status) -> None:
                if status.kind == "error":
                    refusals.append(status)
                    refused.set()

            wall.on_status(on_status)

            notes = await ana.open("team/notes")
            notes.list("agenda").append("ship the demo")
            await ana.connect(relay.url, token=editor_token)
            assert await ana.wait_synced("team/notes", timeout=10)

            shown = await wall.open("team/notes")
            await wall.connect(relay.url, token=viewer_token)
            assert await wall.wait_synced("team/notes", timeout=10)
            print("the wall screen shows:", shown.to_py())

            # The viewer may edit its own copy, but the relay refuses to take it.
            shown.list("agenda").append("written by the viewer")
            await asyncio.wait_for(refused.wait(), timeout=10)
            print("the relay refused the viewer's edit:", refusals[0].reason)
            print("the room on the relay still reads:", notes.to_py())


with tempfile.TemporaryDirectory() as folder:
    asyncio.run(main(folder))
