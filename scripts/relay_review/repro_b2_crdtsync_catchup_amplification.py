"""Bug B2: the crdtsync side of B. Peer exempts catch-up bytes (link.catch_up) from the
max_send_queue check. A client that closes and re-opens the same document over and over
(DOC_ERROR + SYNC, ~40 bytes) and never reads gets one whole-room catch-up queued per
cycle; none of it counts, so it is never dropped as a slow consumer."""
import asyncio, sys, tempfile, resource
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, RawSync, scrape
from crdtsync import Doc, ProtocolError, ErrorCode
from crdtsync.version import Version

LIMIT = 256 << 10

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, max_send_queue=LIMIT) as relay:
        doc = await relay.peer.open("big")
        import random, string; rnd = random.Random(1)
        doc.text("body").insert(0, "".join(rnd.choices(string.ascii_letters + string.digits, k=200 << 10)))  # a 200 KB room (incompressible: the relay zstd-compresses updates)
        raw = await RawSync.open(relay.url, docs=[("big", Doc())], max_queue=1, max_size=None)
        await raw.until(lambda: raw.session.is_synced("big"), 20)
        print("synced; now the client stops reading and cycles close/open of 'big'")
        sent = 0
        for i in range(300):                                  # bounded
            raw.session.refuse_doc("big", ProtocolError("bye", code=ErrorCode.DOC_REFUSED))
            raw.session.open_doc("big", b"", Version())
            before = raw.frames_sent
            frames = raw.session.data_to_send()
            for f in frames:
                raw.frames_sent += 1
                sent += len(f)
                await raw.ws.send(f)
            await asyncio.sleep(0.005)
        await asyncio.sleep(1.0)
        link = next(iter(relay.peer._links))
        m = await scrape(relay)
        queued = link.session.bytes_to_send + link.conn.buffered_amount
        print("client sent %d bytes; relay queued for it: %.1f MB (session %.1f MB + socket %.1f MB); "
              "link.catch_up exemption %.1f MB"
              % (sent, queued / 1e6, link.session.bytes_to_send / 1e6, link.conn.buffered_amount / 1e6,
                 link.catch_up / 1e6))
        print("metric crdtsync_relay_send_queue_bytes{stat=max} = %.1f MB (the session's queue is not in it)"
              % (m.get("crdtsync_relay_send_queue_bytes", stat="max") / 1e6))
        print("bytes sent to crdtsync:", m.get("crdtsync_relay_bytes_sent_total", protocol="crdtsync"), "errors:", {k: v for (n, k), v in m.samples.items() if n == "crdtsync_relay_errors_total"})
        print("crdtsync connections:", m.get("crdtsync_relay_connections", protocol="crdtsync"),
              "slow_consumer errors:", m.get("crdtsync_relay_errors_total", kind="slow_consumer"))
        print("relay process max RSS: %.0f MB" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        if queued > 10 * LIMIT:
            print("BUG: %.0fx max_send_queue queued for one connection, not dropped" % (queued / LIMIT))
        raw.ws.transport.abort()

asyncio.run(asyncio.wait_for(main(), 90))
