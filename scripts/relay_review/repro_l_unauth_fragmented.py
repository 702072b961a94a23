"""Bug L: max_unauth_bytes is charged only for *complete* WebSocket messages (_SyncConn.recv).
An unauthenticated crdtsync connection that sends a fragmented message (or one large frame)
and never finishes it makes the relay buffer up to max_frame (1 MiB) for the whole
handshake_timeout, without ever hitting max_unauth_bytes (here 4 KiB), and nothing is counted
in metrics. Parallel connections multiply it (max_connections 20,000 => ~20 GB)."""
import gc, tracemalloc, asyncio, base64, os, socket, sys, tempfile, time
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, scrape
from websockets.frames import Frame, Opcode

CONNS = 8

async def open_raw(port):
    loop = asyncio.get_running_loop()
    sock = socket.socket(); sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
        f"Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock

async def main():
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, secret=b"k" * 32, max_unauth_bytes=4096,
                             handshake_timeout=10.0) as relay:
        loop = asyncio.get_running_loop()
        socks = [await open_raw(relay.port) for _ in range(CONNS)]
        tracemalloc.start(); gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        chunk = os.urandom(64 << 10)
        first = Frame(Opcode.BINARY, chunk, fin=False).serialize(mask=True, extensions=[])
        cont = Frame(Opcode.CONT, chunk, fin=False).serialize(mask=True, extensions=[])
        for s in socks:
            await loop.sock_sendall(s, first + cont * 14)    # 960 KiB, never fin
        await asyncio.sleep(1.0)
        del chunk, first, cont; gc.collect()
        # (the sending side is raw sockets: what is traced now is the relay's)
        held = tracemalloc.get_traced_memory()[0] - base
        m = await scrape(relay)
        print("%d unauthenticated connections open: %d | relay's heap grew by %.1f MiB "
              "(max_unauth_bytes = 4 KiB) | unauthenticated_data errors: %s"
              % (CONNS, len(relay._sync_conns), held / 2**20,
                 m.get("crdtsync_relay_errors_total", kind="unauthenticated_data")))
        if held > CONNS * 4096 * 10:
            print("BUG: unauthenticated bytes not bounded by max_unauth_bytes")
        for s in socks: s.close()

asyncio.run(asyncio.wait_for(main(), 60))
