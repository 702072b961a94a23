"""A LAN peer process for the tests: a real Peer with ``start_lan``, driven by JSON lines.

Runs on 127.0.0.1 (the fast tests) or inside a lab namespace (``netns.py``).
It opens one document, starts the LAN on the given interfaces, and reports on
stdout, one JSON object a line (``t`` is ``time.time()`` everywhere, so that
the test can compare moments across processes)::

    {"starting": true, "t": ...}                   (just before start_lan)
    {"ready": FINGERPRINT, "address": "lan://10.77.0.2:40000", "peer_id": 123, "t": ...}
    {"status": "linked", "device": FP, "address": ..., "reason": ..., "t": ...}
    {"links": [FP, ...], "connections": 2, "t": ...}   (when the linked devices change)
    {"state": {"count": 3, "digest": "..."}, "t": ...}    (after changes, at most every 50 ms)

and takes commands on stdin, one JSON object a line::

    {"append": 1000, "tag": "a"}     append 1000 items ("a-0", "a-1", ...) to the list "items"
    {"report": true}                 print "links" and "state" now
    {"stop": true}                   close the Peer and exit 0 (SIGTERM does the same)
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import hashlib
import json
import random
import signal
import sys
import time
from typing import Any

from crdtsync import Peer, Status
from crdtsync.peer.lan import LanOptions
from crdtsync.peer.peer import Backoff
from crdtsync.transports.lan import DeviceIdentity, GroupKey

#: Quicker than the defaults where a test waits on them; still the real rules.
OPTIONS = LanOptions(
    dial_grace=0.5,
    backoff=Backoff(initial=0.1, factor=2.0, cap=2.0, jitter=0.5),
    probe_interval=2.0,
)


def emit(**fields: Any) -> None:
    fields["t"] = time.time()
    print(json.dumps(fields), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--identity", help="identity file (default: beside the store)")
    parser.add_argument("--doc", default="notes")
    parser.add_argument("--interface", action="append", default=[])
    parser.add_argument("--static", action="append", default=[])
    parser.add_argument("--jitter", type=float, default=0.0, help="wait up to this long first")
    parser.add_argument("--no-zeroconf", action="store_true", help="static addresses only")
    parser.add_argument("--relay", help="also sync through this relay")
    parser.add_argument("--token")
    args = parser.parse_args()
    # A test that times out sends SIGUSR1 first: every thread's stack goes to stderr.
    faulthandler.register(signal.SIGUSR1)
    if args.jitter:
        # A random start, as machines on a LAN come up (part of what the lab tests).
        await asyncio.sleep(random.uniform(0, args.jitter))  # (noqa: sleep) a random start

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Peer(store=args.store) as peer:
        doc = await peer.open(args.doc)
        identity = DeviceIdentity.load_or_create(args.identity) if args.identity else None
        links: set[str] = set()
        dirty = asyncio.Event()

        def report_links(force: bool = False) -> None:
            nonlocal links
            now = peer.lan.linked() if peer.lan is not None else set()
            if now != links or force:
                links = now
                emit(links=sorted(now), connections=len(peer.connections()))

        def on_status(status: Status) -> None:
            emit(
                status=status.kind,
                device=status.device,
                address=status.address,
                reason=status.reason,
            )
            report_links()

        emit(starting=True)
        # Before start_lan: links and updates may come while it starts.
        peer.on_status(on_status)
        peer.watch(_Watcher(dirty))
        dirty.set()  # the first state line, whatever happens
        lan = await peer.start_lan(
            GroupKey.load(args.key_file),
            interfaces=args.interface or None,
            static=args.static,
            identity=identity,
            zeroconf=not args.no_zeroconf,
            options=OPTIONS,
        )
        peer.on_open(lambda name, new: dirty.set())
        emit(ready=lan.fingerprint, address=lan.addresses[0], peer_id=peer.peer_id)
        if args.relay:
            await peer.connect(args.relay, token=args.token, timeout=None)

        def state() -> None:
            items = list(doc_now().list("items"))
            digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
            emit(state={"count": len(items), "digest": digest[:16]})

        def doc_now() -> Any:
            return docs[0]

        docs = [doc]
        peer.on_open(lambda name, new: docs.__setitem__(0, new) if name == args.doc else None)

        async def reporter() -> None:
            while True:
                await dirty.wait()
                dirty.clear()
                state()
                await asyncio.sleep(0.05)  # (noqa: sleep) at most one state line per 50 ms

        async def commands() -> None:
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while line := await reader.readline():
                command = json.loads(line)
                if "append" in command:
                    items = doc_now().list("items")
                    for i in range(int(command["append"])):
                        items.append(f"{command.get('tag', 'x')}-{i}")
                        if i % 50 == 49:
                            await asyncio.sleep(0)  # (noqa: sleep) let the links breathe
                if command.get("report"):
                    report_links(force=True)
                    state()
                if command.get("stop"):
                    break
            stop.set()

        tasks = [asyncio.ensure_future(reporter()), asyncio.ensure_future(commands())]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Watcher:
    """Tells the reporter that the document changed (any transaction)."""

    def __init__(self, dirty: asyncio.Event) -> None:
        self.dirty = dirty

    def updated(self, name: str, update: bytes, origin: object) -> None:
        self.dirty.set()

    def presence(self, name: str, data: bytes, origin: object) -> None:
        pass


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
