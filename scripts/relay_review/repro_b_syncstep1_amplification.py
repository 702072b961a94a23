"""Bug B: every sync step 2 a y-protocols connection is sent is flagged catch_up and
moves yc.catch_up_end to the end of the buffer, so _check_queue never counts it. A client
that sends tiny SyncStep1 messages (3 bytes) and never reads makes the relay buffer one
whole-room copy per message, without bound, and is never dropped as a slow consumer."""
import asyncio, sys, tempfile, resource
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, stalled_y_client, scrape
from websockets.frames import Frame, Opcode
from crdtsync.sync import yprotocol as y
from crdtsync.version import Version

LIMIT = 256 << 10

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, max_send_queue=LIMIT) as relay:
        doc = await relay.peer.open("big")
        import random, string; rnd = random.Random(1)
        doc.text("body").insert(0, "".join(rnd.choices(string.ascii_letters + string.digits, k=200 << 10)))  # a 200 KB room
        loop = asyncio.get_running_loop()
        sock = await stalled_y_client(relay, "big")          # never reads
        step1 = y.encode_sync_step1(Version())
        frame = Frame(Opcode.BINARY, step1).serialize(mask=True, extensions=[])
        print("request size:", len(step1), "bytes; max_send_queue:", LIMIT)
        for i in range(300):                                  # bounded: 300 < default burst 2000
            await loop.sock_sendall(sock, frame)
        await asyncio.sleep(1.0)
        m = await scrape(relay)
        q = m.get("crdtsync_relay_send_queue_bytes", stat="max")
        print("relay connections:", relay.connections,
              "| send queue of the stalled client: %.1f MB" % (q / 1e6),
              "| slow_consumer errors:", m.get("crdtsync_relay_errors_total", kind="slow_consumer"))
        print("relay process max RSS: %.0f MB" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        if q > 10 * LIMIT and relay.connections == 1:
            print("BUG: send queue %.0fx max_send_queue and the client is still connected" % (q / LIMIT))
        sock.close()

asyncio.run(asyncio.wait_for(main(), 90))
