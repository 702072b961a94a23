"""Bug I: PART reassembly buffers are bounded per channel (max_update), not per connection.
One connection opens max_docs_per_conn rooms and sends, on each, PART chunks just under
max_update without ever the closing UPDATE: the relay holds max_docs x max_update bytes for it
(defaults: 64 x 8 MiB = 512 MiB per connection, with 20,000 connections allowed). Nothing
is sent back, so max_send_queue does not apply either."""
import asyncio, os, sys, tempfile
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, RawSync
from crdtsync import Doc
from crdtsync.sync import messages as m

MAX_UPDATE = 1 << 20
DOCS = 24

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, max_update=MAX_UPDATE, max_docs_per_conn=DOCS,
                             max_frame=256 << 10) as relay:
        names = [f"d{i}" for i in range(DOCS)]
        raw = await RawSync.open(relay.url, docs=[(n, Doc()) for n in names])
        await raw.until(lambda: all(raw.session.is_synced(n) for n in names), 20)
        s = raw.session
        chunk = os.urandom(200 << 10)
        for n in names:
            ch = s._docs[n]
            seq = ch.send_seq + 1
            for _ in range(5):                                # 1,000 KiB < max_update
                s._send(m.Part(ch.local_chan, seq, chunk))
            await raw.flush()
        await asyncio.sleep(1.0)
        link = next(iter(relay.peer._links))
        held = sum(len(c.parts or b"") for c in link.session._docs.values())
        print("connection open:", link.session.state.name, "| relay holds %.1f MiB of partial updates "
              "for this one connection (max_update = %.1f MiB)" % (held / 2**20, MAX_UPDATE / 2**20))
        if held > 4 * MAX_UPDATE:
            print("BUG: per-connection reassembly memory is max_docs x max_update")
        await raw.aclose()

asyncio.run(asyncio.wait_for(main(), 60))
