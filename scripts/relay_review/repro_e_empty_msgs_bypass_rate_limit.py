"""Bug E: WebSocketConnection.recv() silently loops over empty binary messages, so they never
reach _SyncConn.recv(): they are not counted (metrics), not charged to the token bucket, and
never close the connection. With max_msgs_per_sec=10 / burst=50, a crdtsync client sends
20,000 messages and is not rate limited (a y-protocols client is closed after 50)."""
import asyncio, sys, tempfile, time
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, scrape
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, max_msgs_per_sec=10, max_msgs_burst=50) as relay:
        async with connect(relay.url, proxy=None, compression=None, ping_interval=None) as ws:
            t = time.monotonic()
            for _ in range(20_000):                          # bounded
                await ws.send(b"")
            await ws.ping()                                   # round trip: all were read
            await asyncio.sleep(0.3)
            m = await scrape(relay)
            print("sent 20000 empty messages in %.2f s; connection open: %s; rate_limited=%s; "
                  "messages_received_total{crdtsync}=%s"
                  % (time.monotonic() - t, ws.state.name,
                     m.get("crdtsync_relay_errors_total", kind="rate_limited"),
                     m.get("crdtsync_relay_messages_received_total", protocol="crdtsync")))
            if ws.state.name == "OPEN":
                print("BUG: the per-connection message rate limit does not apply to empty messages")

asyncio.run(asyncio.wait_for(main(), 60))
