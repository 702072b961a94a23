"""Crash test of the relay: SIGKILL it at random moments; no acknowledged update may be lost.

Usage: python scripts/relay_crash_test.py --runs 50 [--seed N] [--data PATH] [--max-delay S]
       [--log-dir DIR] (keeps every relay incarnation's JSON log, for post-mortems)

The relay (``python -m crdtsync relay``) runs as a child process on 127.0.0.1 with
one SQLite data file, a small ``--compact-every`` (compactions run all the time)
and a short ``--idle-unload`` (rooms are unloaded, which compacts them, while
others are being written). Each run:

1. Writers edit the relay's rooms concurrently, each edit appending a unique
   string to the room's list ``items``:

   * three crdtsync :class:`~crdtsync.Peer` writers (empty in-memory stores,
     WebSocket transport) on rooms ``room-0..2``;
   * a visitor that repeatedly connects, writes to ``idle-0``/``idle-1`` and
     leaves, so those rooms go idle and are unloaded mid-run;
   * a raw y-protocols writer (a websockets client speaking sync step 1/2 and
     updates, as y-websocket does) on ``room-0``, unless ``--no-y``.

2. After a random (seeded) delay the relay gets SIGKILL.

3. The store is checked: a copy of the files passes ``PRAGMA integrity_check``
   (the copy, so the check cannot repair anything the relay would see).

4. All writers are closed, then the relay is restarted on the same file and port,
   and a FRESH Peer (empty in-memory store, so its data can only come from the
   relay's store) reads every room. Every acknowledged edit of every run so far
   must be there, and the relay log must show that the fresh reader was its only
   client since the restart (the relay served the rooms from its store alone).

When an edit counts as acknowledged:

* crdtsync Peer: the relay stores an update before it acknowledges it, and
  ``Peer.is_synced(room)`` is true only when every update sent on the session
  (and the catch-up made when the session opened, which holds every earlier
  edit) is acknowledged. A writer edits (1 to 4 appends), then waits up to
  ``ack_wait`` seconds for ``is_synced``; at a moment it holds, every edit the
  writer made to that room before it is acknowledged (nothing runs between the
  check and reading the count). Edits whose acknowledgement had not arrived when
  the relay died are "in flight": they may or may not be stored.
* y-protocols has no acks. The raw writer sends its updates, then a sync step 1
  as a probe; the relay handles one connection's messages in order, storing each
  update before it reads the next message, so the sync step 2 that answers the
  probe means every update sent before the probe is stored.

Every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.relaychild import RelayChild
from websockets.asyncio.client import connect as ws_connect

from crdtsync import Doc, Peer
from crdtsync.protocol import yprotocol as y
from crdtsync.transports.websocket import WebSocketTransport

ROOMS = ("room-0", "room-1", "room-2")
IDLE_ROOMS = ("idle-0", "idle-1")
Y_ROOM = "room-0"
PEER_WRITERS = 3
MAX_EDITS_PER_WRITER = 20_000  # per run: a bound, never reached at these delays
MAX_VISITS = 1_000  # per run, likewise


class CrashTestError(AssertionError):
    """The relay lost an acknowledged edit, failed to restart, or corrupted its store."""


# -- the relay child process ------------------------------------------------------------------


class RelayProcess(RelayChild):
    """``python -m crdtsync relay`` on one SQLite file, restarted on the same port."""

    error = CrashTestError

    def __init__(self, data: Path, port: int, compact_every: int, idle_unload: float) -> None:
        super().__init__(name="relay", port=port, fixed_port=True, log_level="debug")
        self.data = data
        self.compact_every = compact_every
        self.idle_unload = idle_unload

    def options(self) -> list[str]:
        return [
            "--data",
            str(self.data),
            "--compact-every",
            str(self.compact_every),
            "--idle-unload",
            str(self.idle_unload),
        ]

    async def start(self, timeout: float = 30.0, attempts: int = 50) -> str:
        """Start the relay; return its URL once it logs ``listening``.

        Binding the same port right after a SIGKILL can fail for a moment (or
        another process may have taken it): retried a bounded number of times.
        """
        return await super().start(timeout, attempts)

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful drain); returns the exit status."""
        return await super().terminate(timeout)

    def save_log(self, path: Path) -> None:
        """Write the log lines of this incarnation to ``path`` (for post-mortems)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(ev) + "\n" for ev in self.lines))

    def errors(self) -> list[dict[str, Any]]:
        """Log lines at level error or above (a store failure, a failed compaction...)."""
        return [ev for ev in self.lines if ev.get("level") in ("error", "critical")]

    def unloads(self) -> int:
        """Idle rooms the relay unloaded (compacting them) since it started."""
        return sum(1 for ev in self.lines if ev.get("event") == "room unloaded")

    def clients_connected(self) -> int:
        """Connections the relay accepted (both protocols) since it started."""
        return sum(1 for ev in self.lines if ev.get("event") == "connected")


# -- what the writers know --------------------------------------------------------------------


@dataclass
class Tally:
    """Edits made and acknowledged by one writer in one room, in order."""

    made: list[str] = field(default_factory=list)
    acked: int = 0  # made[:acked] are acknowledged
    acked_at: float = 0.0  # wall-clock time of the last acknowledgement (post-mortems)

    def ack(self) -> None:
        self.acked = len(self.made)
        self.acked_at = time.time()

    def acknowledged(self) -> list[str]:
        return self.made[: self.acked]


@dataclass
class Ledger:
    """Every writer's tallies, per run (a run's tallies are final once the relay died)."""

    tallies: list[tuple[str, Tally]] = field(default_factory=list)  # (room, tally)

    def tally(self, room: str) -> Tally:
        t = Tally()
        self.tallies.append((room, t))
        return t

    def acked(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {r: set() for r in ROOMS + IDLE_ROOMS}
        for room, t in self.tallies:
            out[room].update(t.acknowledged())
        return out

    def made(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {r: set() for r in ROOMS + IDLE_ROOMS}
        for room, t in self.tallies:
            out[room].update(t.made)
        return out

    def acked_by(self, prefix: str) -> int:
        """Acknowledged edits of the writers whose items start with ``prefix`` (y, p, v)."""
        return sum(t.acked for _, t in self.tallies if t.made and t.made[0].startswith(prefix))

    def count(self) -> tuple[int, int]:
        """(made, acknowledged) edits."""
        return (
            sum(len(t.made) for _, t in self.tallies),
            sum(t.acked for _, t in self.tallies),
        )


# -- writers ----------------------------------------------------------------------------------


async def peer_writer(
    url: str, prefix: str, rng: random.Random, ledger: Ledger, ack_wait: float, stop: asyncio.Event
) -> None:
    """A crdtsync Peer appending to ROOMS; records what ``is_synced`` proves acknowledged."""
    peer = Peer(
        transport=WebSocketTransport(open_timeout=5.0),
        seed=rng.getrandbits(32),
        # Only our rooms: were the relay to offer others (it did, before
        # Peer(announce=False)), holding them would keep the idle rooms in use.
        share=lambda name, _peer: name in ROOMS,
    )
    async with peer:
        await peer.connect(url, timeout=10.0)
        docs = {room: await peer.open(room) for room in ROOMS}
        tallies = {room: ledger.tally(room) for room in ROOMS}
        i = 0
        while i < MAX_EDITS_PER_WRITER and not stop.is_set():
            touched: set[str] = set()
            for _ in range(rng.randint(1, 4)):
                room = rng.choice(ROOMS)
                item = f"{prefix}.{i}"
                i += 1
                docs[room].list("items").append(item)
                tallies[room].made.append(item)
                touched.add(room)
            for room in sorted(touched):
                await peer.wait_synced(room, timeout=ack_wait)
                # No await between the check and the count: the edits counted
                # are exactly those made before a moment when all were acked.
                if peer.is_synced(room):
                    tallies[room].ack()


async def visitor(
    url: str, prefix: str, rng: random.Random, ledger: Ledger, ack_wait: float, stop: asyncio.Event
) -> None:
    """Connects, writes to an idle room, leaves: the relay unloads (compacts) such rooms."""
    for j in range(MAX_VISITS):
        if stop.is_set():
            break
        room = rng.choice(IDLE_ROOMS)
        tally = ledger.tally(room)
        async with Peer(
            transport=WebSocketTransport(open_timeout=5.0),
            share=lambda name, _peer, room=room: name == room,  # see peer_writer
        ) as peer:
            await peer.connect(url, timeout=10.0)
            doc = await peer.open(room)
            for n in range(rng.randint(1, 3)):
                item = f"{prefix}.{j}.{n}"
                doc.list("items").append(item)
                tally.made.append(item)
            await peer.wait_synced(room, timeout=ack_wait * 4)
            if peer.is_synced(room):
                tally.ack()
        # Random pauses, by design: sometimes shorter, sometimes longer than the
        # relay's idle_unload, so rooms are unloaded at varied moments.
        await asyncio.sleep(rng.uniform(0.0, 0.5))


async def y_writer(
    url: str, prefix: str, rng: random.Random, ledger: Ledger, ack_wait: float, stop: asyncio.Event
) -> None:
    """A raw y-protocols client on Y_ROOM: updates, then a sync step 1 probe whose answer acks them.

    It also imports what the relay sends (as y-websocket does), so the probes'
    answers stay small.
    """
    tally = ledger.tally(Y_ROOM)
    doc = Doc()
    outbox: list[bytes] = []
    doc.observe_updates(lambda update, _origin, local: outbox.append(update) if local else None)
    marks: list[int] = []  # marks[n]: len(tally.made) when probe n was sent
    answered = 0
    progress = asyncio.Event()
    async with ws_connect(
        f"{url}/{Y_ROOM}",
        compression=None,
        open_timeout=5.0,
        ping_interval=None,
        max_size=64 << 20,
        proxy=None,
    ) as ws:

        async def reader() -> None:
            nonlocal answered
            async for message in ws:
                assert isinstance(message, bytes)
                msg = y.decode(message, max_payload=64 << 20)
                if isinstance(msg, y.SyncStep1):
                    await ws.send(y.encode_sync_step2(doc.export_yjs_update(since=msg.version)))
                elif isinstance(msg, y.SyncStep2):
                    doc.import_yjs_update(msg.update, origin="relay")
                    if marks[answered] > tally.acked:
                        tally.acked = marks[answered]
                        tally.acked_at = time.time()
                    answered += 1
                    progress.set()
                elif isinstance(msg, y.SyncUpdate):
                    doc.import_yjs_update(msg.update, origin="relay")

        async def probe() -> bool:
            marks.append(len(tally.made))
            await ws.send(y.encode_sync_step1(doc.version))
            want = len(marks)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + ack_wait
            while answered < want and loop.time() < deadline:
                progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), deadline - loop.time())
            return answered >= want

        task = asyncio.get_running_loop().create_task(reader())
        try:
            # The initial exchange (probe 0 covers no edit): we hold the room's state.
            if not await probe():
                raise TimeoutError("y-protocols writer: no initial sync step 2")
            for i in range(MAX_EDITS_PER_WRITER):
                for n in range(rng.randint(1, 4)):
                    item = f"{prefix}.{i}.{n}"
                    doc.list("items").append(item)
                    tally.made.append(item)
                updates, outbox[:] = list(outbox), []
                for update in updates:
                    await ws.send(y.encode_update(update))
                await probe()
                if task.done() or stop.is_set():
                    break
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# -- checks -----------------------------------------------------------------------------------


def check_store_copy(data: Path, scratch: Path) -> dict[str, Any]:
    """``integrity_check`` on a copy of the store files; what the store holds."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    copy = scratch / data.name
    for suffix in ("", "-wal"):
        src = Path(f"{data}{suffix}")
        if src.exists():
            shutil.copyfile(src, f"{copy}{suffix}")
    db = sqlite3.connect(copy)
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        snapshots = {
            name: hashlib.sha256(snap).hexdigest() if snap is not None else None
            for name, snap in db.execute("SELECT name, snapshot FROM docs")
        }
        log_rows = db.execute("SELECT count(*) FROM log").fetchone()[0]
    finally:
        db.close()
    shutil.rmtree(scratch)
    return {"integrity": check, "snapshots": snapshots, "log_rows": int(log_rows)}


async def read_rooms(url: str, timeout: float = 30.0) -> dict[str, list[str]]:
    """What a fresh Peer (empty memory store) receives of every room from the relay."""
    async with Peer(transport=WebSocketTransport(open_timeout=5.0)) as reader:
        await reader.connect(url, timeout=timeout)
        docs = {room: await reader.open(room) for room in ROOMS + IDLE_ROOMS}
        for room in docs:
            if not await reader.wait_synced(room, timeout=timeout):
                raise CrashTestError(f"fresh reader: {room} did not sync within {timeout} s")
        return {room: [str(x) for x in doc.list("items").to_py()] for room, doc in docs.items()}


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Options:
    runs: int = 50
    seed: int = 1
    max_delay: float = 1.5
    compact_every: int = 10
    idle_unload: float = 0.2
    ack_wait: float = 0.5
    y_writer: bool = True
    run_timeout: float = 90.0
    log_dir: Path | None = None  # keep each relay incarnation's log lines here


def _writers(
    url: str, k: int, rng: random.Random, ledger: Ledger, opts: Options, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    kinds: list[tuple[Any, str]] = [(peer_writer, f"p{k}.{w}") for w in range(PEER_WRITERS)]
    kinds.append((visitor, f"v{k}"))
    if opts.y_writer:
        kinds.append((y_writer, f"y{k}"))
    return [
        loop.create_task(
            writer(url, prefix, random.Random(rng.getrandbits(64)), ledger, opts.ack_wait, stop)
        )
        for writer, prefix in kinds
    ]


async def _stop(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Stop the writers and wait until their Peers and sockets are closed."""
    # The flag as well as cancel(): on Python 3.11, asyncio.wait_for (inside
    # Peer.wait_synced, for one) can swallow a cancellation that arrives as the
    # awaited event fires (CPython gh-86296), and the writer would go on looping.
    stop.set()
    for task in tasks:
        task.cancel()
    # After the kill, writers fail in many legitimate ways (connection lost,
    # reconnects refused): what they raise now is no finding. One that does not
    # stop is.
    done, pending = await asyncio.wait(tasks, timeout=60.0)
    if pending:
        stacks = []
        for task in pending:
            out = io.StringIO()
            task.print_stack(file=out)
            stacks.append(out.getvalue())
        raise CrashTestError(
            f"{len(pending)} writers still running 60 s after being stopped: {stacks}"
        )
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved: not reported as never retrieved


async def _run(opts: Options, data: Path, report: Any) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    ledger = Ledger()
    relay = RelayProcess(data, 0, opts.compact_every, opts.idle_unload)
    url = await relay.start()
    totals: dict[str, Any] = {
        "runs": 0,
        "made": 0,
        "acknowledged": 0,
        "found": 0,
        "lost": 0,
        "in_flight_at_kill": 0,
        "runs_with_in_flight": 0,
        "compactions_seen": 0,
        "unloads": 0,
        "store_clean": 0,
        "relay_errors": 0,
    }
    prev_snapshots: dict[str, str | None] = {}
    scratch = data.parent / f"{data.name}.check"
    try:
        for k in range(opts.runs):
            t0 = time.monotonic()
            async with asyncio.timeout(opts.run_timeout):
                before_made, before_acked = ledger.count()
                stop = asyncio.Event()
                tasks = _writers(url, k, rng, ledger, opts, stop)
                delay = rng.uniform(0.0, opts.max_delay)
                # The kill point: a random moment, by design (not a wait for an event).
                await asyncio.sleep(delay)
                # A writer that failed while the relay was up is a finding.
                early = [t.exception() for t in tasks if t.done() and t.exception() is not None]
                await relay.kill()
                if opts.log_dir is not None:
                    relay.save_log(opts.log_dir / f"relay-{k:03d}.jsonl")
                await _stop(tasks, stop)
                if early:
                    raise CrashTestError(f"run {k}: a writer failed: {early[0]!r}")
                errors = relay.errors()
                unloads = relay.unloads()
                store = check_store_copy(data, scratch)
                if store["integrity"] != "ok":
                    raise CrashTestError(f"run {k}: integrity_check says {store['integrity']}")
                compacted = sum(
                    1
                    for name, digest in store["snapshots"].items()
                    if digest is not None and prev_snapshots.get(name) != digest
                )
                prev_snapshots = store["snapshots"]

                # Writers are closed: whatever the reader gets comes from the store.
                url = await relay.start()
                rooms = await read_rooms(url)
                if relay.clients_connected() != 1:
                    raise CrashTestError(
                        f"run {k}: the relay had {relay.clients_connected()} clients "
                        "since the restart, expected only the fresh reader"
                    )
                made, acked = ledger.count()
                want = ledger.acked()
                have = {room: set(items) for room, items in rooms.items()}
                lost = sorted(x for room in want for x in want[room] - have[room])
                found = sum(len(want[room] & have[room]) for room in want)
                all_made = ledger.made()
                stored_unacked = sum(
                    len((have[room] & all_made[room]) - want[room]) for room in want
                )
                in_flight = (made - before_made) - (acked - before_acked)
                row = {
                    "run": k,
                    "kill_after_s": round(delay, 3),
                    "made": made - before_made,
                    "acknowledged": acked - before_acked,
                    "in_flight_at_kill": in_flight,
                    "acknowledged_total": acked,
                    "found": found,
                    "lost": len(lost),
                    "stored_unacked_total": stored_unacked,
                    "store": "ok",
                    "log_rows": store["log_rows"],
                    "rooms_compacted": compacted,
                    "rooms_unloaded": unloads,
                    "relay_errors": len(errors),
                    "seconds": round(time.monotonic() - t0, 2),
                }
                report(row)
                totals["runs"] += 1
                totals["made"] = made
                totals["acknowledged"] = acked
                totals["acknowledged_by"] = {
                    kind: ledger.acked_by(prefix)
                    for kind, prefix in (("peer", "p"), ("visitor", "v"), ("y", "y"))
                }
                totals["found"] = found
                totals["lost"] = len(lost)
                totals["in_flight_at_kill"] += in_flight
                totals["runs_with_in_flight"] += in_flight > 0
                totals["compactions_seen"] += compacted
                totals["unloads"] += unloads
                totals["store_clean"] += 1
                totals["relay_errors"] += len(errors)
                if lost:
                    if opts.log_dir is not None:
                        relay.save_log(opts.log_dir / f"relay-{k:03d}-restarted.jsonl")
                    gone = set(lost)
                    whose = [
                        (room, t.made, t.acked, t.acked_at)
                        for room, t in ledger.tallies
                        if gone & set(t.acknowledged())
                    ]
                    raise CrashTestError(
                        f"run {k}: {len(lost)} acknowledged edits lost, e.g. {lost[:5]}; "
                        f"(room, made, acked, acked_at) of their writers: {whose[:3]}"
                    )
                if errors:
                    raise CrashTestError(f"run {k}: the relay logged errors: {errors[:3]}")
    finally:
        status = await relay.terminate()
    if status != 0:
        raise CrashTestError(f"the relay exited with {status} on SIGTERM")
    return totals


def run(
    runs: int = 50,
    seed: int = 1,
    data: Path | None = None,
    *,
    report: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the crash test; return the totals (raises CrashTestError on a finding)."""
    opts = Options(runs=runs, seed=seed, **options)
    with tempfile.TemporaryDirectory() as tmp:
        path = data or Path(tmp) / "relay.db"
        return asyncio.run(_run(opts, path, report or (lambda row: None)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, help="SQLite data file (default: a temporary one)")
    ap.add_argument("--max-delay", type=float, default=1.5, help="longest run before the kill (s)")
    ap.add_argument("--compact-every", type=int, default=10)
    ap.add_argument("--idle-unload", type=float, default=0.2)
    ap.add_argument("--no-y", action="store_true", help="no raw y-protocols writer")
    ap.add_argument("--json", action="store_true", help="print one JSON object per run")
    ap.add_argument("--log-dir", type=Path, help="keep every relay incarnation's log here")
    args = ap.parse_args(argv)

    def report(row: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"run {row['run']:3d}: kill at {row['kill_after_s']:.3f} s, "
                f"{row['made']} edits, {row['acknowledged']} acked "
                f"({row['in_flight_at_kill']} in flight), "
                f"{row['found']}/{row['acknowledged_total']} acked found, lost {row['lost']}, "
                f"{row['stored_unacked_total']} unacked stored in all, store {row['store']}, "
                f"{row['rooms_compacted']} rooms compacted, {row['rooms_unloaded']} unloaded, "
                f"{row['seconds']} s",
                flush=True,
            )

    start = time.time()
    try:
        totals = run(
            args.runs,
            args.seed,
            args.data,
            report=report,
            max_delay=args.max_delay,
            compact_every=args.compact_every,
            idle_unload=args.idle_unload,
            y_writer=not args.no_y,
            log_dir=args.log_dir,
        )
    except CrashTestError as exc:
        print(f"FAILED: {exc}", flush=True)
        return 1
    print(
        f"{totals['runs']} SIGKILL runs: {totals['made']} edits made, "
        f"{totals['acknowledged']} acknowledged ({totals['acknowledged_by']}), "
        f"{totals['found']} found, "
        f"{totals['lost']} lost; {totals['in_flight_at_kill']} in flight at a kill "
        f"({totals['runs_with_in_flight']} runs); store clean {totals['store_clean']}/"
        f"{totals['runs']}; {totals['compactions_seen']} room compactions seen, "
        f"{totals['unloads']} idle rooms unloaded; "
        f"relay errors {totals['relay_errors']} ({time.time() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
