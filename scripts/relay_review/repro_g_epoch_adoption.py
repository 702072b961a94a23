"""Bug G (two parts), a room the relay has loaded but empty (here: a y client is in it), and a
crdtsync peer whose copy is another incarnation (epoch) with content:
 G1 peer.py:1168-1170: Peer._on_doc_requested adopts the peer's epoch via _forget(), which sends
    DOC_REFUSED "document closed" to every session -- including the requester, whose channel
    is then CLOSED, so the following `if doc_state is REMOTE: open_doc` never runs (and with
    announce=False nothing re-offers it). The peer is left unsynced until it reconnects.
 G2 server.py:615/640: the y connection keeps the Doc object captured when it joined and answers
    every later SyncStep1 from that detached Doc: stale (empty) state forever."""
import asyncio, sys, tempfile
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, ws_peer, YClient, room_state
from crdtsync import Doc
from crdtsync.sync import yprotocol as y
from crdtsync.version import Version

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp) as relay:
        yc = await YClient.open(relay.url, "r")
        await yc.sync()                                      # room "r" now loaded, empty
        async with ws_peer() as peer:
            statuses = []
            peer.on_status(lambda s: statuses.append((s.kind, s.reason)))
            await peer.open("r")
            await peer.delete("r")                           # a new incarnation (random epoch)
            doc = await peer.open("r")
            doc.text("body").insert(0, "hello from the new incarnation")
            await peer.connect(relay.url)
            ok = await peer.wait_synced("r", 5)
            print("G1: peer synced within 5 s:", ok, "| statuses:", statuses)
            print("    relay adopted the peer's epoch:", relay.peer.epoch("r") == peer.epoch("r"),
                  "| relay's room:", await room_state(relay, "r"))
            if not ok:
                print("    BUG G1: the requesting session was refused by the adoption itself")
            await peer.disconnect(relay.url)
            await peer.connect(relay.url)
            print("    after a reconnect: synced:", await peer.wait_synced("r", 10),
                  "| relay's room:", await room_state(relay, "r"))
            # G2: a fresh sync step 1 from the still-connected y client
            await yc.ws.send(y.encode_sync_step1(Version()))
            got = None
            for _ in range(20):
                msg = await yc.recv(5)
                if isinstance(msg, y.SyncStep2):
                    got = Doc(); got.import_yjs_update(msg.update); break
            print("G2: sync step 2 the y client gets:", got.to_py())
            if got.to_py() != await room_state(relay, "r"):
                print("    BUG G2: the y connection answers from a detached Doc")
        await yc.aclose()

asyncio.run(asyncio.wait_for(main(), 60))
