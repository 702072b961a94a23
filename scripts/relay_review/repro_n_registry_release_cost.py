"""Bug N: WriterRegistry.release() (protocol.py:335-338) scans the whole registry on every
connection close (sessions and y connections alike). HELLO `writers` lets any connection --
read-only or, on an open relay, anyone -- claim thousands of ids (an unauthenticated 64 KiB
HELLO carries ~7,000). With a few dozen such connections held open, every ordinary
disconnect blocks the event loop for the whole scan."""
import asyncio, random, sys, tempfile, time
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, NO_PINGS, YClient
from websockets.asyncio.client import connect
from crdtsync.sync import protocol as p

CONNS, IDS = 40, 7000

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp) as relay:
        hold = []
        base = 2**40
        for c in range(CONNS):
            ws = await connect(relay.url, proxy=None, compression=None, ping_interval=None, max_size=None)
            s = p.Session.client(random.randrange(1, 2**31), docs=[], writers=range(base, base + IDS),
                                 options=NO_PINGS)
            base += IDS
            data = b"".join(s.data_to_send())
            await ws.send(data)
            s.receive_data(await asyncio.wait_for(ws.recv(), 5))
            hold.append(ws)
        reg = relay.peer._registry
        print("HELLO size per connection: %d bytes; registry entries: %d" % (len(data), len(reg._owner)))
        # cost of one ordinary release
        dummy = object()
        t = time.perf_counter()
        for _ in range(10):
            reg.release(dummy)
        per = (time.perf_counter() - t) / 10
        print("one release() (run on every disconnect): %.1f ms of event-loop time" % (per * 1000))
        # an ordinary y client's disconnect, timed from the loop's point of view
        lag = []
        async def ticker():
            last = time.perf_counter()
            for _ in range(200):
                await asyncio.sleep(0.001)
                now = time.perf_counter(); lag.append(now - last); last = now
        t2 = asyncio.create_task(ticker())
        for _ in range(20):
            c = await YClient.open(relay.url, "room"); await c.aclose()
        await t2
        print("max event-loop stall while 20 clients came and went: %.1f ms" % (max(lag) * 1000))
        if per > 0.005:
            print("BUG: each disconnect costs O(all claimed ids) of blocking work")
        for ws in hold: await ws.close()

asyncio.run(asyncio.wait_for(main(), 90))
