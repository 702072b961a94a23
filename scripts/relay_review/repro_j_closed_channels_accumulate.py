"""Bug J: a server Session keeps every CLOSED channel in Session._docs (by name) and every
closed channel id in _dead_remote, forever. max_docs_per_conn counts only open channels, so a
connection that asks for rooms it is refused (bad names, rooms its token does not allow) --
or opens and closes rooms -- grows the relay's per-connection state without bound (only the
message rate limit slows it)."""
import asyncio, sys, tempfile, tracemalloc
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, RawSync
from crdtsync.relay import mint_token
from crdtsync.version import Version

SECRET = b"s" * 32
N = 4000

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, secret=SECRET, max_docs_per_conn=4,
                             max_msgs_per_sec=1e6, max_msgs_burst=10**6) as relay:
        raw = await RawSync.open(relay.url, token=mint_token(SECRET, "notes", write=True, ttl=600))
        await raw.until(lambda: raw.session.state.name == "OPEN", 10)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(N):                                   # rooms the token does not allow
            raw.session.open_doc(f"not-allowed-{i:06d}-" + "x" * 900, b"", Version())
            if i % 200 == 199:
                await raw.flush()
                await asyncio.sleep(0.01)
        await raw.flush()
        await asyncio.sleep(1.0)
        link = next(iter(relay.peer._links))
        ss = link.session
        print("relay session: state=%s, channels kept=%d (max_docs_per_conn=4), dead channel ids=%d, "
              "bytes of kept room names=%d" % (ss.state.name, len(ss._docs), len(ss._dead_remote),
                                              sum(len(n) for n in ss._docs)))
        if len(ss._docs) >= N:
            print("BUG: refused/closed channels are never forgotten")
        await raw.aclose()

asyncio.run(asyncio.wait_for(main(), 90))
