"""Bug M: _y_update (server.py:717-720) and Session._on_update claim *every* client id whose
structs appear in an update, including structs the relay already has or that merely pass
through. A client that holds another client's edits (y-websocket tabs share edits over
BroadcastChannel; any mesh peer) and reconnects first becomes the 'owner' of the other
client's id; the real author is then refused (1008) on every reconnect, even for a
sync step 2 that contains nothing new, for as long as the forwarder stays connected."""
import asyncio, sys, tempfile
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, YClient, room_state

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp) as relay:
        # offline: tab A types, tab B receives it over BroadcastChannel
        a_id, b_id = 111111, 222222
        a = await YClient.open(relay.url, "notes", client_id=a_id)
        b = await YClient.open(relay.url, "notes", client_id=b_id)
        a.doc.text("body").insert(0, "typed in tab A")
        b.doc.import_yjs_update(a.doc.export_yjs_update())
        b.doc.text("body").insert(0, "[B] ")
        await a.aclose()
        # B's connection syncs first: its step 2 carries A's edit too
        await b.sync()
        await asyncio.sleep(0.3)
        print("relay after B synced:", await room_state(relay, "notes"))
        print("registry owner of A's id is B's connection:",
              relay.peer._registry.owner(a_id) is next(iter(relay._yconns)))
        # A reconnects (same Y.Doc => same client id) and answers sync step 1 as usual
        a2 = await YClient.open(relay.url, "notes", client_id=a_id)
        a2.doc = a.doc
        try:
            await a2.sync(timeout=3)
            await a2.edit(lambda d: d.text("body").insert(len(str(d.text("body"))), " and more"))
            code, reason, _ = await a2.closed(3)
        except Exception as exc:  # closed while syncing
            code, reason = getattr(getattr(exc, "rcvd", None), "code", None), str(exc)[:100]
        print("A (the real author of that id) is closed with:", code, reason)
        if code == 1008 or "1008" in str(reason):
            print("BUG: the author is locked out of its own client id by a client that forwarded its edit")
        await b.aclose()

asyncio.run(asyncio.wait_for(main(), 60))
