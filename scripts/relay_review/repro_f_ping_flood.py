"""Bug F: control frames bypass every per-connection limit. websockets answers each PING with
a PONG written straight to the transport; pings are not messages, so neither the token bucket
nor max_send_queue (checked only when the relay itself sends) sees them. A client that sends
pings and never reads makes the relay buffer the pongs without bound -- before any
authentication, on either protocol."""
import asyncio, sys, tempfile, os, socket, base64
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", "tests"))
sys.dont_write_bytecode = True
from pathlib import Path
from relay_helpers import running_relay, scrape
from websockets.frames import Frame, Opcode

LIMIT = 256 << 10

async def main(path):
    tmp = Path(tempfile.mkdtemp())
    async with running_relay(tmp, secret=b"k" * 32 if path == "/" else None, max_send_queue=LIMIT,
                             max_msgs_per_sec=10, max_msgs_burst=50) as relay:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", relay.port))
        key = base64.b64encode(os.urandom(16)).decode()
        # path "/": the crdtsync protocol, no token needed to get this far
        req = (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await loop.sock_sendall(sock, req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        ping = Frame(Opcode.PING, b"p" * 125).serialize(mask=True, extensions=[])
        burst = ping * 1000
        for i in range(150):                                   # 150,000 pings, bounded
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, burst), 5)
            except (TimeoutError, OSError) as exc:
                print("relay stopped reading after", i * 1000, "pings:", type(exc).__name__)
                break
        await asyncio.sleep(0.5)
        m = await scrape(relay)
        buf = m.get("crdtsync_relay_send_queue_bytes", stat="max")
        print(path, "connection still open: %s; relay write buffer for it: %.1f MB "
              "(max_send_queue %d KB); rate_limited=%s unauthenticated_data=%s"
              % (relay.connections == 1, buf / 1e6, LIMIT >> 10,
                 m.get("crdtsync_relay_errors_total", kind="rate_limited"),
                 m.get("crdtsync_relay_errors_total", kind="unauthenticated_data")))
        if buf > 10 * LIMIT:
            print("BUG: pongs to an unread, unauthenticated connection pile up without bound")
        sock.close()

for path in ("/", "/room"):
    print("--- path", path, "(crdtsync, unauthenticated)" if path == "/" else "(y-protocols)")
    asyncio.run(asyncio.wait_for(main(path), 90))
