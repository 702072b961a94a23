"""The relay adopting a peer's incarnation (epoch) of a room it holds empty.

Regressions for the review of 2026-12-05 (bug G): the adoption refused the very
session that asked (G1), and y-protocols connections in the room kept
answering from the replaced Doc (G2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.relay import YClient, room_state, running_relay, ws_peer
from helpers.waiting import eventually

from crdtsync import Doc
from crdtsync.format.version import Version
from crdtsync.protocol import yprotocol as y


@pytest.mark.anyio
async def test_adopting_a_peers_incarnation_keeps_the_asker_and_the_y_clients(
    tmp_path: Path,
) -> None:
    async with running_relay(tmp_path) as relay:
        yc = await YClient.open(relay.url, "r")
        await yc.sync()  # the room is loaded, and empty
        yc.follow()
        async with ws_peer() as peer:
            await peer.open("r")
            await peer.delete("r")  # a new incarnation: another (random) epoch
            doc = await peer.open("r")
            doc.text("body").insert(0, "hello from the new incarnation")
            await peer.connect(relay.url)
            # G1: synced on this very connection, no reconnect needed.
            assert await peer.wait_synced("r", 10)
            assert relay.peer.epoch("r") == peer.epoch("r")
            assert (await room_state(relay, "r")) == {"body": "hello from the new incarnation"}
            # The y client in the room got the new content as it arrived...
            await eventually(lambda: yc.text() == "hello from the new incarnation")
            await yc.unfollow()
            # G2: ...and a fresh sync step 1 is answered from the room's current Doc.
            await yc.ws.send(y.encode_sync_step1(Version()))
            step2 = None
            while step2 is None:
                msg = await yc.recv()
                if isinstance(msg, y.SyncStep2):
                    step2 = msg
            fresh = Doc()
            fresh.import_yjs_update(step2.update)
            assert fresh.to_py() == {"body": "hello from the new incarnation"}
            # And its edits land in the new incarnation, where the peer sees them.
            await yc.edit(lambda d: d.text("body").insert(0, "> "))
            await eventually(lambda: str(doc.text("body")) == "> hello from the new incarnation")
        await yc.aclose()
