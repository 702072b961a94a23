"""Bug K: the crdtsync rate limit counts WebSocket messages (_SyncConn.recv), but one
WebSocket message may carry any number of crdtsync frames (the session parses a byte
stream). With max_msgs_per_sec=10 / burst=20, a client packs 5,000 AWARENESS frames into
3 WebSocket messages; the relay processes and fans out all 5,000 (y-protocols clients are
limited per message, since there 1 WebSocket message = 1 y message)."""
import asyncio, sys, tempfile
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, RawSync, YClient, scrape
from crdtsync import Doc
from crdtsync.sync.awareness import encode_awareness

N = 5000

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, max_msgs_per_sec=10, max_msgs_burst=20) as relay:
        watcher = await YClient.open(relay.url, "notes")
        await watcher.sync()
        raw = await RawSync.open(relay.url, docs=[("notes", Doc())])
        await raw.until(lambda: raw.session.is_synced("notes"), 10)
        s = raw.session
        for i in range(N):
            s.send_awareness("notes", encode_awareness([(10_000 + i, 1, {"n": i})]))
        frames = s.data_to_send()
        blob = b"".join(frames)
        parts = [blob[i:i + (400 << 10)] for i in range(0, len(blob), 400 << 10)]
        for part in parts:
            await raw.ws.send(part)
        got = 0
        try:
            while got < N:
                await watcher.recv(3)
                got = len(watcher.awareness.states)
        except TimeoutError:
            pass
        m = await scrape(relay)
        print("crdtsync frames sent: %d in %d WebSocket messages; relay applied %d presence states; "
              "the y watcher received %d; rate_limited=%s; session still open: %s"
              % (len(frames), len(parts), len(relay.peer.presence("notes").states), got,
                 m.get("crdtsync_relay_errors_total", kind="rate_limited"),
                 next(iter(relay.peer._links)).session.state.name))
        if len(relay.peer.presence("notes").states) >= N:
            print("BUG: %d protocol messages processed under a limit of 10/s, burst 20" % N)
        await raw.aclose(); await watcher.aclose()

asyncio.run(asyncio.wait_for(main(), 60))
