"""Bug D: Relay.close() closes y-protocols connections one after another, awaiting each
closing handshake (close_timeout 2 s, wait_for 3 s). A client that does not answer the close
frame costs 2 s of drain time each, so N such clients stall SIGTERM drain for ~2N seconds
(and every other client waits that long for its 1001), blowing any orchestrator grace period."""
import asyncio, sys, tempfile, time
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import stalled_y_client, YClient
from crdtsync.relay import Relay, RelayConfig
from websockets.exceptions import ConnectionClosed

N = 6

async def main():
    tmp = Path(tempfile.mkdtemp())
    relay = Relay(RelayConfig(port=0, data=str(tmp / "r.db")))
    await relay.start()
    silent = [await stalled_y_client(relay, f"room{i}") for i in range(N)]  # never answer a close
    good = await YClient.open(relay.url, "zzz-last")
    await good.sync()
    for _ in range(50):
        if relay.connections == N + 1: break
        await asyncio.sleep(0.05)
    print("connections:", relay.connections)
    got_close_at = None
    t0 = time.monotonic()
    async def watch():
        nonlocal got_close_at
        try:
            while True:
                await good.ws.recv()
        except ConnectionClosed as exc:
            got_close_at = (time.monotonic() - t0, exc.rcvd.code if exc.rcvd else None)
    w = asyncio.create_task(watch())
    await relay.close()
    dt = time.monotonic() - t0
    await asyncio.wait_for(w, 5)
    print("drain took %.1f s with %d silent clients; a well-behaved client got its close (%s) after %.1f s"
          % (dt, N, got_close_at[1], got_close_at[0]))
    if dt > N * 1.5:
        print("BUG: drain time grows linearly (~2 s) with every unresponsive client")
    for s in silent: s.close()

asyncio.run(asyncio.wait_for(main(), 120))
