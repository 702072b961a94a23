"""Put an attacker at each of the relay's budgets; measure what another room feels.

Usage: python scripts/relay_budgets.py [--seconds 4] [--only NAME ...] [--json PATH] [--before]

(``--before``: measure an older relay, put first on ``PYTHONPATH``, which has
no ``--max-room-bytes``: the same attacks, for comparison.)

The relay (``python -m crdtsync relay``, default limits, a token secret, an
SQLite file in a temporary directory) runs as a child process. For each
scenario, an attacker process (its own interpreter: its CPU is not the
probe's) spends one budget as fast as the relay lets it, reconnecting whenever
it is closed, while this process measures the round trip of a *probe* in
another room: a writer's one-character update, from its send to a second
client receiving it, one at a time. Every scenario is compared with the idle
figure measured first (and again last, to see the drift of a shared machine).

Scenarios (``docs/SECURITY.md``, "Budgets", says what each budget bounds).
Each attacker keeps four connections (each sending just under the relay's
message rate, 190 a second, until it is closed, then replaced):

================  ==========================================================
idle              nobody else
skip              a reader sending 8-byte Skip updates (issue 18, item 2)
deletes           a reader sending 9-byte known deletions to a room of 30,000
                  deletion ranges (item 7)
silent            silent sockets from 4 addresses, at their per-address share,
                  and the ones the relay closes reopened (item 8); also
                  measured: a new client's time to join
rooms             a reader opening rooms that do not exist, and a writer
                  creating rooms (item 9), connections opened as fast as the
                  relay answers
full              a writer sending 50 KB updates (20 a second) to a room at its
                  size limit
catchup           a reader asking for a 4 MB room from nothing (sync step 1)
presence          a reader sending 60 KB presence states
tiny              writers sending 1-character updates (each import a group
                  commit: an fsync)
================  ==========================================================

Figures depend on the machine and its load (measure under load: report the
ratios). Every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import random
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from crdtsync import Doc
from crdtsync.format.varint import write_varuint
from crdtsync.format.version import Version
from crdtsync.protocol import yprotocol as y
from crdtsync.relay.tokens import mint_token

SECRET = b"relay-budgets-secret-0123456789abcdef"
ROOM_CAP = 2 << 20  # --max-room-bytes of the relay under test (the "full" room fills it)

Attack = Callable[[str, float], Awaitable[dict[str, int]]]

#: Messages the attackers of this process sent (counted as they go).
SENT = [0]


def token(room: str = "*", *, write: bool = True) -> str:
    return mint_token(SECRET, room, write=write, ttl=3600)


#: Where attackers connect from (the relay budgets some things per address: the
#: probe, from 127.0.0.1, must not share the attacker's budget).
ATTACKER = "127.0.0.9"


async def y_open(url: str, room: str, tok: str, **kw: Any) -> ClientConnection:
    kw.setdefault("local_addr", (ATTACKER, 0))
    return await connect(
        f"{url}/{room}?token={tok}", compression=None, proxy=None, ping_interval=None,
        max_size=None, **kw,
    )  # fmt: skip


async def drain(ws: ClientConnection) -> None:
    """Read and drop whatever the relay sends (an attacker that reads fast)."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def text(n: int, seed: int) -> str:
    rnd = random.Random(seed)
    return "".join(rnd.choices(string.ascii_letters + string.digits, k=n))


def skip_update(client: int, clock: int) -> bytes:
    out = bytearray([1, 1])
    write_varuint(out, client)
    write_varuint(out, clock)
    out += b"\x0a\x01\x00"
    return bytes(out)


def delete_update(client: int, clock: int) -> bytes:
    out = bytearray([0, 1])
    write_varuint(out, client)
    out.append(1)
    write_varuint(out, clock)
    out.append(1)
    return bytes(out)


def awareness(client: int, clock: int, state: str) -> bytes:
    out = bytearray([1])
    write_varuint(out, client)
    write_varuint(out, clock)
    raw = state.encode()
    write_varuint(out, len(raw))
    out += raw
    return y.encode_awareness(bytes(out))


# -- attackers (each runs in its own process until its deadline) ---------------------------------


async def _loop(
    deadline: float, once: Callable[[], Awaitable[int]], parallel: int = 4
) -> dict[str, int]:
    """Run ``once`` (one connection's worth of attack) again and again until ``deadline``.

    ``parallel`` connections at a time, each replaced as soon as the relay closes it.
    """
    stats = {"connections": 0, "messages": 0}
    sent = SENT[0]

    async def worker() -> None:
        while time.monotonic() < deadline:
            stats["connections"] += 1
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    stats["messages"] += await once()
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake):
                pass

    await asyncio.gather(*(worker() for _ in range(parallel)))
    # Counted as they are sent: a connection cut short by the deadline counts too.
    stats["messages"] += SENT[0] - sent
    return stats


async def flood(
    ws: ClientConnection, message: Callable[[int], bytes], deadline: float, rate: float = 190.0
) -> int:
    """Send ``message(i)``, ``rate`` a second (just under the relay's message rate),
    reading whatever comes, until the relay closes ``ws`` or ``deadline``.

    Returns 0: the messages are counted in ``SENT`` as they go (a connection the
    deadline cuts short counts too)."""
    reader = asyncio.ensure_future(drain(ws))
    n = 0
    with contextlib.suppress(ConnectionClosed):
        while not reader.done() and time.monotonic() < deadline:
            await ws.send(message(n))
            n += 1
            SENT[0] += 1
            await asyncio.sleep(1 / rate)  # a deliberate pace
    reader.cancel()
    return 0


async def attack_skip(url: str, deadline: float) -> dict[str, int]:
    async def once() -> int:
        ws = await y_open(url, "target", token("target", write=False))
        return await flood(ws, lambda i: y.encode_update(skip_update(4242, 10 + i)), deadline)

    return await _loop(deadline, once)


async def attack_deletes(url: str, deadline: float) -> dict[str, int]:
    async def once() -> int:
        ws = await y_open(url, "deletes", token("deletes", write=False))
        # Known deletions (odd clocks of the seeded text): harmless, and each made
        # the relay read the room's whole delete set.
        return await flood(
            ws, lambda i: y.encode_update(delete_update(1, 1 + 2 * (i % 1000))), deadline
        )

    return await _loop(deadline, once)


async def attack_silent(url: str, deadline: float) -> dict[str, int]:
    port = int(url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    opened = 0
    while time.monotonic() < deadline:
        alive = []
        for sock in socks:
            try:
                sock.recv(1)  # non-blocking: b"" or an error means the relay closed it
            except BlockingIOError:
                alive.append(sock)
                continue
            except OSError:
                pass
            sock.close()
        socks = alive
        for i in range(2, 6):
            for _ in range(20):
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((f"127.0.0.{i}", 0))
                try:
                    await loop.sock_connect(sock, ("127.0.0.1", port))
                except OSError:
                    sock.close()
                    continue
                socks.append(sock)
                opened += 1
        await asyncio.sleep(0.05)  # a deliberate pace: reopen what was closed
    for sock in socks:
        sock.close()
    return {"connections": opened, "messages": 0}


async def attack_rooms(url: str, deadline: float) -> dict[str, int]:
    counter = iter(range(10**9))

    async def reader() -> int:
        ws = await y_open(url, f"nothing-{next(counter)}", token(write=False))
        await drain(ws)
        return 1

    async def creator() -> int:
        ws = await y_open(url, f"new-{os.getpid()}-{next(counter)}", token())
        await ws.close()
        return 1

    results = await asyncio.gather(_loop(deadline, reader), _loop(deadline, creator))
    return {k: sum(r[k] for r in results) for k in results[0]}


async def attack_full(url: str, deadline: float) -> dict[str, int]:
    async def once() -> int:
        ws = await y_open(url, "full", token("full"))
        doc = Doc()

        def update(i: int) -> bytes:
            before = doc.version
            doc.text("body").insert(0, text(50_000, i))
            return y.encode_update(doc.export_yjs_update(since=before))

        return await flood(ws, update, deadline, rate=20.0)  # 1 MB/s: the byte rate

    return await _loop(deadline, once)


async def attack_catchup(url: str, deadline: float) -> dict[str, int]:
    async def once() -> int:
        ws = await y_open(url, "big", token("big", write=False))
        return await flood(ws, lambda i: y.encode_sync_step1(Version()), deadline)

    return await _loop(deadline, once)


async def attack_presence(url: str, deadline: float) -> dict[str, int]:
    async def once() -> int:
        ws = await y_open(url, "target", token("target", write=False))

        def state(i: int) -> bytes:
            return awareness(777, i + 1, json.dumps({"n": i, "junk": "x" * 60_000}))

        return await flood(ws, state, deadline)

    return await _loop(deadline, once)


async def attack_tiny(url: str, deadline: float) -> dict[str, int]:
    async def once() -> int:
        ws = await y_open(url, "target", token("target"))
        doc = Doc()

        def update(i: int) -> bytes:
            before = doc.version
            doc.text("body").insert(0, "x")
            return y.encode_update(doc.export_yjs_update(since=before))

        return await flood(ws, update, deadline)

    return await _loop(deadline, once)


ATTACKS: dict[str, Attack] = {
    "skip": attack_skip,
    "deletes": attack_deletes,
    "silent": attack_silent,
    "rooms": attack_rooms,
    "full": attack_full,
    "catchup": attack_catchup,
    "presence": attack_presence,
    "tiny": attack_tiny,
}


def _attacker(name: str, url: str, seconds: float, out: multiprocessing.Queue[Any]) -> None:
    deadline = time.monotonic() + seconds
    out.put(asyncio.run(ATTACKS[name](url, deadline)))


# -- the probe ---------------------------------------------------------------------------------


async def probe(url: str, seconds: float, room: str = "probe") -> list[float]:
    """Round trips of one-character updates from a writer to a reader in ``room``."""
    writer = await y_open(url, room, token(room), local_addr=("127.0.0.1", 0))
    reader = await y_open(url, room, token(room), local_addr=("127.0.0.1", 0))
    received: asyncio.Queue[float] = asyncio.Queue()

    async def read() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in reader:
                assert isinstance(message, bytes)
                if isinstance(y.decode(message), y.SyncUpdate):
                    received.put_nowait(time.perf_counter())

    async with asyncio.timeout(10):
        await reader.recv()  # its sync step 1: it is in the room
    task = asyncio.ensure_future(read())
    # The writer reads too (what the room sends it, presence included): a client
    # that never reads is a slow consumer, and the relay stops reading from it.
    writer_reads = asyncio.ensure_future(drain(writer))
    doc = Doc()
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(samples) < 2000:
        before = doc.version
        doc.text("body").insert(0, "p")
        t0 = time.perf_counter()
        await writer.send(y.encode_update(doc.export_yjs_update(since=before)))
        try:
            t1 = await asyncio.wait_for(received.get(), 10)
        except TimeoutError:
            samples.append(10.0)
            continue
        samples.append(t1 - t0)
        await asyncio.sleep(0.02)  # a deliberate pace: ~50 probes a second
    task.cancel()
    writer_reads.cancel()
    await writer.close()
    await reader.close()
    return samples


async def join_time(url: str) -> float:
    """Seconds for a new writer to connect and receive its first sync step 1.

    A relay that does not let it in within 10 s counts as 10 s (like the probe).
    """
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(10.0):
            ws = await y_open(url, "probe", token("probe"), local_addr=("127.0.0.1", 0))
            await ws.recv()
            await ws.close()
    except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake):
        return 10.0
    return time.perf_counter() - t0


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- the relay and its rooms -------------------------------------------------------------------


def start_relay(tmp: Path, *, room_cap: bool = True) -> tuple[subprocess.Popen[str], str]:
    key = tmp / "relay.key"
    key.write_bytes(SECRET)  # used as it is (crdtsync secret writes hex text, also as it is)
    key.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDTSYNC_")}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "crdtsync", "relay", "--port", "0",
            "--data", str(tmp / "relay.db"), "--secret-file", str(key),
            *(("--max-room-bytes", str(ROOM_CAP)) if room_cap else ()),
        ],
        # cwd: a directory with no crdtsync in it, so that the package imported
        # is the installed one, or the one first on PYTHONPATH (--before).
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp,
    )  # fmt: skip
    assert proc.stdout is not None
    urls: queue.Queue[str] = queue.Queue()

    def read(stream: Any) -> None:
        # Every log line is read (a full pipe would stall the relay); the
        # listening line gives the URL, the rest (one per connection) is dropped.
        for line in stream:
            record = json.loads(line)
            if record.get("event") == "listening":
                urls.put(str(record["url"]))

    threading.Thread(target=read, args=(proc.stdout,), daemon=True).start()
    with contextlib.suppress(queue.Empty):
        return proc, urls.get(timeout=60)
    proc.kill()
    raise SystemExit("the relay did not start")


async def write_room(url: str, room: str, doc: Doc, chunks: list[str] = ()) -> None:  # type: ignore[assignment]
    """Write ``doc``, then each chunk of text (one update each: under --max-frame)."""
    ws = await y_open(url, room, token(room), local_addr=("127.0.0.1", 0))
    await ws.send(y.encode_update(doc.export_yjs_update()))
    for chunk in chunks:
        before = doc.version
        doc.text("body").insert(0, chunk)
        await ws.send(y.encode_update(doc.export_yjs_update(since=before)))
    await ws.send(y.encode_sync_step1(Version()))  # answered once the update is stored
    while not isinstance(y.decode(await ws.recv()), y.SyncStep2):
        pass
    await ws.close()


async def seed(url: str) -> None:
    deletes = Doc(peer_id=1)
    body = deletes.text("body")
    body.insert(0, text(60_000, 7))
    with deletes.transaction():
        for i in range(30_000):  # every other character: 30,000 deletion ranges
            del body[i]
    await write_room(url, "deletes", deletes)
    await write_room(url, "big", Doc(peer_id=2), [text(800_000, 8 + i) for i in range(5)])
    chunks = [text(800_000, 20 + i) for i in range(ROOM_CAP // 800_000 + 1)]
    await write_room(url, "full", Doc(peer_id=3), chunks)
    await write_room(url, "target", Doc(peer_id=4))
    await write_room(url, "probe", Doc(peer_id=5))


async def scenario(name: str, url: str, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": name}
    proc = None
    spawn = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = spawn.Queue()
    if name in ATTACKS:
        proc = spawn.Process(
            target=_attacker, args=(name, url, seconds + 1.0, results), daemon=True
        )
        proc.start()
        await asyncio.sleep(1.0)  # let it reach the budget
    try:
        samples = await probe(url, seconds)
    except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake) as exc:
        # The relay did not even let the probe in: as bad as a 10 s round trip.
        out["probe_failed"] = repr(exc)
        samples = [10.0]
    out["p50_ms"] = round(1000 * p(samples, 0.5), 2)
    out["p99_ms"] = round(1000 * p(samples, 0.99), 2)
    out["probes"] = len(samples)
    if name in ("idle", "silent"):
        joins = [await join_time(url) for _ in range(5)]
        out["join_ms"] = round(1000 * statistics.median(joins), 2)
    if proc is not None:
        with contextlib.suppress(queue.Empty):
            out["attacker"] = await asyncio.to_thread(results.get, True, 30)
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return out


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        relay, url = start_relay(Path(tmp), room_cap=not args.before)
        try:
            await seed(url)
            names = ["idle", *(args.only or ATTACKS), "idle"]
            rows = []
            for name in names:
                row = await scenario(name, url, args.seconds)
                rows.append(row)
                print(json.dumps(row), flush=True)
            return rows
        finally:
            relay.terminate()
            try:
                relay.wait(30)
            except subprocess.TimeoutExpired:  # a relay still stalled (--before): no drain
                relay.kill()
                relay.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="probe time per scenario")
    parser.add_argument("--only", nargs="*", choices=sorted(ATTACKS), help="these scenarios")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    parser.add_argument(
        "--before",
        action="store_true",
        help="the relay has no --max-room-bytes (an older release, on PYTHONPATH)",
    )
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    idle = [r["p99_ms"] for r in rows if r["scenario"] == "idle"]
    base = min(idle) if idle else float("nan")
    print(f"\n{'scenario':<10} {'p50 ms':>8} {'p99 ms':>8} {'p99/idle':>9}  attacker")
    for r in rows:
        ratio = r["p99_ms"] / base if base else float("nan")
        extra = f"join {r['join_ms']} ms  " if "join_ms" in r else ""
        print(
            f"{r['scenario']:<10} {r['p50_ms']:>8} {r['p99_ms']:>8} {ratio:>9.1f}  "
            f"{extra}{r.get('attacker', '')}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
