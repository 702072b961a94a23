"""Bug H: a READ-ONLY crdtsync connection claims writer ids in the registry: the ids it lists
in HELLO `writers` (Session.accept -> _claim) and the ids of updates it sends (_on_sync claims
before the Peer refuses the update as read-only). A y-websocket client's id is public as soon
as it publishes presence, before its first edit; a read-only token holder claims it, and the
victim's edits are then refused with 1008 -- also after it reconnects with its (unchanged)
client id -- for as long as the read-only connection stays open."""
import asyncio, random, sys, tempfile
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, YClient, errors, NO_PINGS
from websockets.asyncio.client import connect
from crdtsync.relay import mint_token
from crdtsync.sync import protocol as p
from crdtsync.sync import yprotocol as y

SECRET = b"s" * 32

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, secret=SECRET) as relay:
        rw = mint_token(SECRET, "notes", write=True, ttl=600)
        ro = mint_token(SECRET, "notes", write=False, ttl=600)
        victim = await YClient.open(relay.url, "notes", token=rw)
        await victim.sync()
        await victim.set_presence({"user": "vic"})            # its client id is now public
        X = victim.doc.peer_id
        # attacker: read-only token, HELLO declaring the victim's client id as its writer
        ws = await connect(relay.url, proxy=None, compression=None, ping_interval=None)
        s = p.Session.client(random.randrange(1, 2**31), docs=[], auth={"token": ro},
                             writers=[X], options=NO_PINGS)
        for f in s.data_to_send():
            await ws.send(f)
        s.receive_data(await asyncio.wait_for(ws.recv(), 5))
        print("read-only session open:", s.state.name, "| registry owner of victim id:",
              type(relay.peer._registry.owner(X)).__name__)
        await victim.edit(lambda d: d.text("body").insert(0, "my first edit"))
        code, reason, _ = await victim.closed()
        print("victim (read-write token) closed with", code, reason)
        # it reconnects, same Y.Doc => same client id, as y-websocket does
        again = await YClient.open(relay.url, "notes", token=rw, client_id=X)
        again.doc = victim.doc
        # its sync step 2 re-sends the unsaved edit (as y-websocket does on reconnect)
        await again.ws.send(y.encode_sync_step2(again.doc.export_yjs_update()))
        code2, reason2, _ = await again.closed()
        print("victim after reconnect closed with", code2, reason2)
        print("ForbiddenWriterError count:", await errors(relay, "ForbiddenWriterError"))
        if code == 1008 and code2 == 1008:
            print("BUG: a read-only connection locks a writer out of its own client id")
        await ws.close()

asyncio.run(asyncio.wait_for(main(), 60))
