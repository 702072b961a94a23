"""LAN benchmarks: handshake, encrypted throughput against plain TCP, and the namespace lab.

Usage: python benchmarks/bench_lan.py [--handshakes 200] [--megabytes 256] [--runs 3]
       python benchmarks/bench_lan.py --lab [--lab-runs 5] [--edits 1000]      (root)

Everything runs on 127.0.0.1 in one process (one event loop, so client and
server share a core: the figures are what one core does for both ends).

* Handshake: ``LanTransport.connect`` to a listening ``LanTransport`` until the
  link is open on the client (TCP connect, preamble, the three Noise messages,
  the responder's READY), then close. Median and p99 over ``--handshakes`` links,
  and the raw Noise handshake alone (``HandshakeState`` pair, no sockets).
* Throughput: ``--megabytes`` MiB sent in 64 KiB ``send`` calls, received and
  counted on the other end, over (a) a LAN link (ChaCha20-Poly1305 frames of at
  most 65519 bytes) and (b) the same asyncio streams without the link (plain
  TCP). Best of ``--runs``; the ratio is encrypted / plain.
* ``--lab`` (root, network namespaces; ``tests/helpers/netns.py``): real Peers
  (``Peer.start_lan``) in 5 namespaces on one bridge.

  - Start to synced: the 5 processes start together (no jitter), each appends
    20 items; seconds from the first process start until every peer is linked
    with every other and every document is the same (Python start-up and
    imports included). Median and worst of ``--lab-runs``.
  - Heal to converged: hosts {0, 1, 2} and {3, 4} are split onto two bridges
    (each side stays connected within itself); ``--edits`` items are appended
    on each side and each side converges; then the bridges are joined again:
    seconds from the heal until every document is the same (how long the
    partition lasted is printed too: TCP's retransmission timer, which grows
    while the partition lasts, decides when the links carry data again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

from crdtsync.errors import TransportError
from crdtsync.transports.lan import DeviceIdentity, GroupKey, LanConnection, LanTransport
from crdtsync.transports.lan.noise import HandshakeState

CHUNK = 64 << 10


def noise_handshake_ms(n: int) -> float:
    psk = os.urandom(32)
    a, b = os.urandom(32), os.urandom(32)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        i = HandshakeState(initiator=True, static=a, psk=psk)
        r = HandshakeState(initiator=False, static=b, psk=psk)
        r.read_message(i.write_message())
        i.read_message(r.write_message())
        r.read_message(i.write_message())
        i.split()
        r.split()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


async def link_handshakes(n: int) -> list[float]:
    group = GroupKey.generate()
    server = LanTransport(DeviceIdentity.generate(), group)
    client = LanTransport(DeviceIdentity.generate(), group)

    async def handler(conn: LanConnection) -> None:  # type: ignore[override]
        with contextlib.suppress(TransportError):
            await conn.recv()  # until the client closes

    listener = await server.listen("lan://127.0.0.1:0", handler)  # type: ignore[arg-type]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn = await client.connect(listener.address)
        times.append(time.perf_counter() - t0)
        await conn.close()
    await listener.close()
    return times


async def lan_throughput(total: int) -> float:
    group = GroupKey.generate()
    server = LanTransport(DeviceIdentity.generate(), group)
    client = LanTransport(DeviceIdentity.generate(), group)
    done = asyncio.get_running_loop().create_future()

    async def handler(conn: LanConnection) -> None:  # type: ignore[override]
        got = 0
        while got < total:
            got += len(await conn.recv())
        done.set_result(time.perf_counter())

    listener = await server.listen("lan://127.0.0.1:0", handler)  # type: ignore[arg-type]
    conn = await client.connect(listener.address)
    payload = os.urandom(CHUNK)
    t0 = time.perf_counter()
    for _ in range(total // CHUNK):
        await conn.send(payload)
    t1 = await done
    await conn.close()
    await listener.close()
    return total / (t1 - t0) / (1 << 20)


async def tcp_throughput(total: int) -> float:
    done = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = 0
        while got < total:
            data = await reader.read(CHUNK)
            if not data:
                break
            got += len(data)
        done.set_result(time.perf_counter())
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, limit=CHUNK)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port, limit=CHUNK)
    payload = os.urandom(CHUNK)
    t0 = time.perf_counter()
    for _ in range(total // CHUNK):
        writer.write(payload)
        if writer.transport.get_write_buffer_size() > (256 << 10):
            await writer.drain()
    await writer.drain()
    t1 = await done
    writer.close()
    server.close()
    return total / (t1 - t0) / (1 << 20)


def lab(runs: int, edits: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.lab_nodes import lab_converge, lab_partition_heal, lab_restart_relink
    from helpers.netns import unavailable

    why = unavailable()
    if why:
        raise SystemExit(f"cannot run the lab: {why}")
    starts = [lab_converge(5, 0.0, 20) for _ in range(runs)]
    heals = [lab_partition_heal(edits) for _ in range(runs)]
    restarts = [lab_restart_relink() for _ in range(runs)]
    print("| measurement | median | worst |")
    print("| --- | --- | --- |")
    print(
        f"| process start to 5 namespace peers linked and synced ({runs} runs) "
        f"| {statistics.median(starts):.2f} s | {max(starts):.2f} s |"
    )
    heal = [h for h, _ in heals]
    lasted = statistics.median(p for _, p in heals)
    print(
        f"| heal to converged, {edits} edits on each side (partition of {lasted:.1f} s, "
        f"median) | {statistics.median(heal):.2f} s | {max(heal):.2f} s |"
    )
    relink = [r for r, _ in restarts]
    whole = [w for _, w in restarts]
    print(
        f"| SIGKILL + restart: from start_lan to relinked with the 4 others "
        f"| {statistics.median(relink):.2f} s | {max(relink):.2f} s |"
    )
    print(
        f"| the same from the new process's start (Python start-up included) "
        f"| {statistics.median(whole):.2f} s | {max(whole):.2f} s |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lab", action="store_true", help="the namespace lab figures (root)")
    parser.add_argument("--lab-runs", type=int, default=5)
    parser.add_argument("--edits", type=int, default=1000, help="edits on each side (--lab)")
    args = parser.parse_args()
    if args.lab:
        lab(args.lab_runs, args.edits)
        return

    raw = noise_handshake_ms(args.handshakes)
    times = sorted(await link_handshakes(args.handshakes))
    p50 = statistics.median(times) * 1000
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
    total = args.megabytes << 20
    lan = max([await lan_throughput(total) for _ in range(args.runs)])
    tcp = max([await tcp_throughput(total) for _ in range(args.runs)])

    print("| measurement | value |")
    print("| --- | --- |")
    print(f"| Noise XXpsk3 handshake, no sockets (median of {args.handshakes}) | {raw:.2f} ms |")
    print(f"| LAN link connect on 127.0.0.1, median | {p50:.2f} ms |")
    print(f"| LAN link connect on 127.0.0.1, p99 | {p99:.2f} ms |")
    what = f"encrypted link throughput ({args.megabytes} MiB, best of {args.runs})"
    print(f"| {what} | {lan:.0f} MiB/s |")
    print(f"| plain TCP, same asyncio streams | {tcp:.0f} MiB/s |")
    print(f"| ratio encrypted / plain | {lan / tcp:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
