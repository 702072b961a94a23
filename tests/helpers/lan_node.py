"""A LAN test host: announce, browse, and link to every group member it hears of.

Runs inside a lab namespace (see ``netns.py``), one per host. It listens with a
:class:`LanTransport`, announces itself with :class:`ZeroconfDiscovery` on the
given interface address, and for each hint opens a link and says hello; every
link it accepts prints what it heard. Lines on stdout are JSON::

    {"ready": FINGERPRINT, "address": "lan://10.77.0.2:40000"}
    {"hint": FINGERPRINT, "addresses": [...], "gone": false}
    {"linked": FINGERPRINT}                      (outbound link made)
    {"heard": FINGERPRINT, "text": "hello from ..."}   (inbound link's first message)
    {"error": "..."}

SIGTERM closes everything (the zeroconf goodbye included) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
from typing import Any

from crdtsync.errors import TransportError
from crdtsync.transports.lan import DeviceIdentity, GroupKey, LanConnection, LanTransport
from crdtsync.transports.lan.discovery import StaticDiscovery, ZeroconfDiscovery


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--ip", required=True, help="this host's interface address")
    parser.add_argument("--link", action="store_true", help="link to every member heard of")
    parser.add_argument("--peer", action="append", default=[], help="a manual lan:// address")
    parser.add_argument("--jitter", type=float, default=0.0, help="wait up to this long first")
    args = parser.parse_args()
    if args.jitter:
        # A random start, as machines on a LAN come up (part of what the lab tests).
        await asyncio.sleep(random.uniform(0, args.jitter))  # (noqa: sleep) a random start

    me = DeviceIdentity.load_or_create(args.identity)
    group = GroupKey.load(args.key_file)
    transport = LanTransport(me, group)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def handler(conn: LanConnection) -> None:  # type: ignore[override]
        try:
            text = (await conn.recv()).decode()
        except TransportError as exc:
            emit(error=f"inbound: {exc}")
            return
        emit(heard=conn.remote_identity.fingerprint, text=text)
        await conn.send(b"ack")

    listener = await transport.listen(f"lan://{args.ip}:0", handler)  # type: ignore[arg-type]
    emit(ready=me.fingerprint, address=listener.address)
    sources: list[Any] = [
        ZeroconfDiscovery(me, group, listener.port, interfaces=[args.ip], request_timeout=2.0)
    ]
    if args.peer:
        sources.append(StaticDiscovery(args.peer))
    linked: set[str] = set()

    async def link(addresses: tuple[str, ...]) -> None:
        for address in addresses:
            try:
                conn = await transport.connect(address)
            except TransportError as exc:
                emit(error=f"connect {address}: {exc}")
                continue
            fp = conn.remote_identity.fingerprint
            await conn.send(f"hello from {me.fingerprint}".encode())
            try:
                await conn.recv()
            except TransportError as exc:
                emit(error=f"no ack from {fp}: {exc}")
            emit(linked=fp)
            await conn.close()
            return

    async def follow(source: Any) -> None:
        await source.start()
        async for hint in source.hints():
            emit(hint=hint.fingerprint, addresses=list(hint.addresses), gone=hint.gone)
            key = hint.fingerprint or hint.addresses[0]
            if args.link and not hint.gone and key not in linked:
                linked.add(key)
                tasks.add(asyncio.ensure_future(link(hint.addresses)))

    tasks: set[asyncio.Future[None]] = set()
    followers = [asyncio.ensure_future(follow(s)) for s in sources]
    await stop.wait()
    for s in sources:
        await s.close()
    for f in followers:
        await f
    for t in tasks:
        t.cancel()
    await listener.close()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
