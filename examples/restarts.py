"""A peer survives crashes and restarts: every local edit is stored before anything else.

1. A child process edits a document and is killed with SIGKILL (no clean exit).
2. A new Peer on the same store finds every edit the child made.
3. It starts offline: the relay is not running yet. `connect` keeps retrying
   with backoff in the background; when the relay comes up, the peer syncs.

Run: python examples/restarts.py
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile

from crdtsync import Peer
from crdtsync.relay import Relay, RelayConfig


async def child(store: str) -> None:
    """Edit, say so, then wait to be killed."""
    async with Peer(store=store) as peer:
        doc = await peer.open("journal")
        for n in range(3):
            doc.list("entries").append(f"entry {n}")  # durable when append returns
        print("edited", flush=True)
        await asyncio.Event().wait()


async def main(folder: str) -> None:
    store = f"{folder}/laptop.db"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", store], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "edited"
    os.kill(proc.pid, signal.SIGKILL)  # no goodbye, no flush, no close
    proc.wait()
    proc.stdout.close()
    print("child killed with SIGKILL")

    with socket.socket() as s:  # a port for the relay that is not running yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async with Peer(store=store) as peer:
        doc = await peer.open("journal")
        print("after the restart:", doc.to_py())
        doc.list("entries").append("written offline")
        # Offline: nobody listens on the port yet. connect() retries with backoff.
        connecting = asyncio.create_task(peer.connect(f"ws://127.0.0.1:{port}", timeout=None))
        config = RelayConfig(port=port, data=f"{folder}/relay.db")  # no secret: an open relay
        async with Relay(config):
            await connecting
            assert await peer.wait_synced("journal", timeout=10)
            print("synced with the relay once it came up")

    # The relay's own store now has the journal too.
    phone = Peer(store=f"{folder}/phone.db")
    async with Relay(RelayConfig(port=0, data=f"{folder}/relay.db")) as relay, phone:
        mirror = await phone.open("journal")
        await phone.connect(relay.url)
        assert await phone.wait_synced("journal", timeout=10)
        print("a phone reads it from the restarted relay:", mirror.to_py())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(sys.argv[2]))
    else:
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(main(folder))
