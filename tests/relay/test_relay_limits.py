"""Per-connection resource limits of the relay, attacked over real sockets.

Regressions for the review of 2026-12-05: each test is a client that tried to
make the relay hold more than its limits allow for one connection (bugs B, B2,
C, E, F, I, J, K, L), against an in-process relay on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import string
from pathlib import Path

import pytest
from helpers.relay import (
    WAIT,
    RawSync,
    YClient,
    errors,
    parse_metrics,
    raw_ws_socket,
    read_close,
    running_relay,
    stalled_y_client,
)
from helpers.waiting import eventually
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from crdtsync import Doc, ErrorCode, ProtocolError
from crdtsync.format.version import Version
from crdtsync.protocol import messages as m
from crdtsync.protocol import yprotocol as y
from crdtsync.protocol.awareness import encode_awareness
from crdtsync.relay import Relay, RelayConfig, mint_token

SECRET = b"limits-test-secret-0123456789abcdef"


def _close_code(raw: RawSync) -> int | None:
    return next((msg.code for msg in raw.messages if isinstance(msg, m.Close)), None)


@pytest.mark.anyio
async def test_unfinished_updates_on_many_documents_share_one_budget(tmp_path: Path) -> None:
    """Bug I: PARTs just under max_update on each of many rooms, never finished."""
    max_update = 1 << 20
    names = [f"d{i}" for i in range(8)]
    async with running_relay(
        tmp_path, max_update=max_update, max_docs_per_conn=len(names), max_frame=256 << 10
    ) as relay:
        raw = await RawSync.open(relay.url, docs=[(n, Doc()) for n in names])
        await raw.until(lambda: all(raw.session.is_synced(n) for n in names))
        s = raw.session
        chunk = os.urandom(200 << 10)
        for n in names:
            ch = s._docs[n]
            for _ in range(4):  # 800 KiB on each: under max_update per document
                s._send(m.Part(ch.local_chan, ch.send_seq + 1, chunk))
            try:
                await raw.flush()
            except ConnectionClosed:
                break
        await raw.closed()
        assert _close_code(raw) == ErrorCode.FRAME_TOO_LARGE
        held = [
            sum(len(c.parts or b"") for c in lk.session._docs.values()) for lk in relay.peer._links
        ]
        assert sum(held) == 0


@pytest.mark.anyio
async def test_refused_rooms_are_not_remembered_without_bound(tmp_path: Path) -> None:
    """Bug J: asking again and again for rooms the token does not allow."""
    async with running_relay(
        tmp_path,
        secret=SECRET,
        max_docs_per_conn=4,
        max_msgs_per_sec=1e6,
        max_msgs_burst=10**6,
    ) as relay:
        raw = await RawSync.open(relay.url, token=mint_token(SECRET, "notes", write=True, ttl=600))
        await raw.until(lambda: raw.session.state.name == "OPEN")
        sizes: list[int] = []
        for i in range(3_000):
            raw.session.open_doc(f"not-allowed-{i:06d}-" + "x" * 900, b"", Version())
            if i % 100 == 99:
                await raw.flush()
                sizes.extend(len(lk.session._docs) for lk in relay.peer._links)
        await raw.flush()
        await raw.closed()
        assert _close_code(raw) == ErrorCode.LIMIT_EXCEEDED
        assert max(sizes, default=0) <= 1024
        await eventually(lambda: not relay.peer._links, what="the relay dropped the session")


LIMIT = 256 << 10


async def _big_room(relay: Relay, name: str = "big", size: int = 200 << 10) -> None:
    """A 200 KB room of incompressible text (the relay zstd-compresses crdtsync updates)."""
    rnd = random.Random(1)
    body = "".join(rnd.choices(string.ascii_letters + string.digits, k=size))
    (await relay.peer.open(name)).text("body").insert(0, body)


@pytest.mark.anyio
async def test_repeated_sync_step1_without_reading_is_a_slow_consumer(tmp_path: Path) -> None:
    """Bug B: each answer used to be exempt from max_send_queue (224x the limit queued)."""
    async with running_relay(tmp_path, max_send_queue=LIMIT) as relay:
        await _big_room(relay, size=3 << 20)  # 4 answers: more than socket buffers hold
        loop = asyncio.get_running_loop()
        sock = await stalled_y_client(relay, "big")
        frame = Frame(Opcode.BINARY, y.encode_sync_step1(Version())).serialize(
            mask=True, extensions=[]
        )
        try:
            # 4 x 3 MB asked for, never read: within the answer budget
            # (Y_ANSWER_BURST), so what is tested is the send queue (the latest
            # answer is exempt, not the three before), not the asking.
            for _ in range(4):
                await loop.sock_sendall(sock, frame)
            await eventually(lambda: relay.connections == 0, what="the stalled client is dropped")
            assert await errors(relay, "slow_consumer") == 1
        finally:
            sock.close()


@pytest.mark.anyio
async def test_one_large_answer_is_not_a_slow_consumer(tmp_path: Path) -> None:
    """The other side of bug B: a room larger than max_send_queue is still joinable."""
    async with running_relay(tmp_path, max_send_queue=64 << 10) as relay:
        await _big_room(relay)
        client = await YClient.open(relay.url, "big", max_queue=1)
        await client.sync(timeout=20)
        assert len(client.text()) == 200 << 10
        assert await errors(relay, "slow_consumer") == 0
        await client.aclose()


@pytest.mark.anyio
async def test_reopening_a_document_without_reading_is_a_slow_consumer(tmp_path: Path) -> None:
    """Bug B2: every re-open's catch-up used to be exempt; and the queue gauge missed it."""
    async with running_relay(tmp_path, max_send_queue=LIMIT) as relay:
        await _big_room(relay)
        raw = await RawSync.open(relay.url, docs=[("big", Doc())], max_queue=1, max_size=None)
        await raw.until(lambda: raw.session.is_synced("big"), 20)
        peak = 0
        with contextlib.suppress(ConnectionClosed):
            for _ in range(60):  # bounded: 60 x 200 KB asked for, never read
                raw.session.refuse_doc("big", ProtocolError("bye", code=ErrorCode.DOC_REFUSED))
                raw.session.open_doc("big", b"", Version())
                await raw.flush()
                peak = max([peak, *relay.peer.send_queues()])
                if relay.connections == 0:
                    break
        await eventually(lambda: relay.connections == 0, what="the client is dropped")
        assert await errors(relay, "slow_consumer") == 1
        assert peak < 4 * (LIMIT + (200 << 10)), peak
        raw.ws.transport.abort()


@pytest.mark.anyio
async def test_queue_gauge_counts_frames_still_in_the_session(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        raw = await RawSync.open(relay.url, docs=[("q", Doc())])
        await raw.until(lambda: raw.session.is_synced("q"))
        (link,) = relay.peer._links
        link.session._queue_frame(b"x" * 12345)  # queued, the writer not yet woken
        text = relay.metrics.render()
        line = next(
            ln
            for ln in text.splitlines()
            if ln.startswith('crdtsync_relay_send_queue_bytes{stat="max"')
        )
        assert float(line.split()[-1]) >= 12345
        await raw.aclose()


@pytest.mark.anyio
async def test_empty_messages_count_against_the_rate_limit(tmp_path: Path) -> None:
    """Bug E: the transport skipped empty messages before the relay's rate limit saw them."""
    async with running_relay(tmp_path, max_msgs_per_sec=10, max_msgs_burst=50) as relay:
        async with connect(relay.url, proxy=None, compression=None, ping_interval=None) as ws:
            with contextlib.suppress(ConnectionClosed):
                for _ in range(2_000):  # bounded
                    await ws.send(b"")
                await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == 4529
        assert await errors(relay, "rate_limited") == 1


@pytest.mark.anyio
async def test_rate_limit_counts_frames_not_messages(tmp_path: Path) -> None:
    """Bug K: 5,000 AWARENESS frames packed into a few WebSocket messages."""
    n = 5_000
    async with running_relay(tmp_path, max_msgs_per_sec=10, max_msgs_burst=20) as relay:
        raw = await RawSync.open(relay.url, docs=[("notes", Doc())])
        await raw.until(lambda: raw.session.is_synced("notes"))
        s = raw.session
        for i in range(n):
            s.send_awareness("notes", encode_awareness([(10_000 + i, 1, {"n": i})]))
        blob = b"".join(s.data_to_send())
        with contextlib.suppress(ConnectionClosed):
            for i in range(0, len(blob), 100 << 10):
                await raw.ws.send(blob[i : i + (100 << 10)])
            await asyncio.wait_for(raw.ws.wait_closed(), 10)
        assert raw.ws.close_code == 4529
        assert len(relay.peer.presence("notes").states) < 100
        assert await errors(relay, "rate_limited") == 1


def test_frame_counter_reads_prefixes_across_message_boundaries() -> None:
    from crdtsync.protocol.limits import FrameCounter as _FrameCounter

    writer = m.FrameWriter()
    frames = [writer.frame(m.Ping()) for _ in range(3)]
    frames.append(writer.frame(m.Awareness(0, b"x" * 300)))  # a 2-byte length prefix
    blob = b"".join(frames)
    for cut in range(len(blob) + 1):
        counter = _FrameCounter()
        assert counter.feed(blob[:cut]) + counter.feed(blob[cut:]) == 4, cut
    counter = _FrameCounter()
    assert sum(counter.feed(bytes([b])) for b in blob) == 4


@pytest.mark.anyio
async def test_unfinished_message_before_authentication_is_bounded(tmp_path: Path) -> None:
    """Bug L: max_unauth_bytes counted only complete messages (an unfinished one held 1 MiB)."""
    async with running_relay(
        tmp_path, secret=SECRET, max_unauth_bytes=4096, handshake_timeout=10.0
    ) as relay:
        loop = asyncio.get_running_loop()
        sock = await raw_ws_socket(relay.port, "/")
        try:
            chunk = os.urandom(64 << 10)
            first = Frame(Opcode.BINARY, chunk, fin=False).serialize(mask=True, extensions=[])
            with contextlib.suppress(OSError):
                await loop.sock_sendall(sock, first)
            # The relay refuses at the frame header (1009), before buffering 64 KiB.
            head = await read_close(sock)
            assert head == 1009, head
            sock.close()  # rather than answer the close: the relay need not wait for us
            await eventually(lambda: relay.connections == 0, what="the relay let go")
            assert await errors(relay, "unauthenticated_data") == 1
        finally:
            sock.close()
        # Authenticated connections get their full max_frame back.
        big = Doc()
        rnd = random.Random(2)  # incompressible: the catch-up stays 64 KiB on the wire
        big.text("body").insert(0, "".join(rnd.choices(string.ascii_letters, k=64 << 10)))
        raw = await RawSync.open(
            relay.url,
            docs=[("notes", big)],
            token=mint_token(SECRET, "notes", write=True, ttl=600),
            max_size=None,
        )
        await raw.until(lambda: raw.session.is_synced("notes"))
        assert len(str((await relay.peer.open("notes")).text("body"))) == 64 << 10
        await raw.aclose()


@pytest.mark.anyio
async def test_drain_does_not_wait_for_silent_clients_one_by_one(tmp_path: Path) -> None:
    """Bug D: SIGTERM drain closed y-protocols connections serially (~2 s per silent one)."""
    n = 6
    relay = Relay(RelayConfig(port=0, data=str(tmp_path / "r.db")))
    await relay.start()
    silent = [await stalled_y_client(relay, f"room{i}") for i in range(n)]
    good = await YClient.open(relay.url, "last")
    await good.sync()
    await eventually(lambda: relay.connections == n + 1, what="all connected")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    got: list[tuple[float, int | None]] = []

    async def watch() -> None:
        try:
            while True:
                await good.ws.recv()
        except ConnectionClosed as exc:
            got.append((loop.time() - t0, exc.rcvd.code if exc.rcvd else None))

    watcher = asyncio.create_task(watch())
    try:
        await relay.close()
        took = loop.time() - t0
        await asyncio.wait_for(watcher, WAIT)
        ((_, code),) = got
        assert code == 1001
        # One deadline for all: serially this was about 2 s per silent client (12 s).
        assert took < 2 * n, took
    finally:
        for sock in silent:
            sock.close()


@pytest.mark.anyio
async def test_presence_flood_from_one_connection_is_refused(tmp_path: Path) -> None:
    """Bug C: one y client could add 10,000 presence states per message, kept forever."""
    async with running_relay(tmp_path) as relay:
        resident = await YClient.open(relay.url, "room")
        await resident.sync()
        await resident.set_presence({"user": "resident"})
        atk = await YClient.open(relay.url, "room")
        await atk.sync()
        gone = [(1_000_000 + i, 1, None) for i in range(10_000)]  # removals of made-up ids
        await atk.ws.send(y.encode_awareness(encode_awareness(gone)))
        flood = [(2_000_000 + i, 1, {"c": i}) for i in range(10_000)]
        await atk.ws.send(y.encode_awareness(encode_awareness(flood)))
        code, _, _ = await atk.closed()
        assert code == 1008
        aw = relay.peer.presence("room")
        assert set(aw.states) == {resident.doc.peer_id}
        assert len(aw.meta) <= 2
        await resident.aclose()


@pytest.mark.anyio
async def test_an_echoing_client_leaving_does_not_remove_others_presence(tmp_path: Path) -> None:
    """y-websocket re-sends every presence change it hears; the echo is not its own state."""
    async with running_relay(tmp_path) as relay:
        a = await YClient.open(relay.url, "room")
        await a.sync()
        await a.set_presence({"user": "a"})
        b = await YClient.open(relay.url, "room")
        await b.sync()
        await b.pump_until(lambda: a.doc.peer_id in b.awareness.states)
        await b.ws.send(y.encode_awareness(b.awareness.encode_update([a.doc.peer_id])))  # echo
        await b.set_presence({"user": "b"})
        aw = relay.peer.presence("room")
        await eventually(lambda: b.doc.peer_id in aw.states)
        await b.aclose()
        await eventually(lambda: b.doc.peer_id not in aw.states, what="b's presence goes")
        assert a.doc.peer_id in aw.states, "a is still here"
        await a.aclose()


@pytest.mark.anyio
async def test_presence_flood_over_the_crdtsync_protocol_is_refused(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        raw = await RawSync.open(relay.url, docs=[("room", Doc())])
        await raw.until(lambda: raw.session.is_synced("room"))
        flood = [(3_000_000 + i, 1, {"c": i}) for i in range(300)]
        raw.session.send_awareness("room", encode_awareness(flood))
        await raw.flush()
        await raw.closed()
        assert _close_code(raw) == ErrorCode.LIMIT_EXCEEDED
        assert not relay.peer.presence("room").states


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/", "/room"])
async def test_ping_flood_from_a_client_that_never_reads_is_bounded(
    tmp_path: Path, path: str
) -> None:
    """Bug F: pongs to a client that pings and never reads piled up (16 MB), unauthenticated too."""
    async with running_relay(
        tmp_path,
        secret=None if path != "/" else b"k" * 32,
        max_send_queue=LIMIT,
        max_msgs_per_sec=10,
        max_msgs_burst=50,
    ) as relay:
        loop = asyncio.get_running_loop()
        sock = await raw_ws_socket(relay.port, path, rcvbuf=4096)
        burst = Frame(Opcode.PING, b"p" * 125).serialize(mask=True, extensions=[]) * 1000
        peak = 0.0
        try:
            for _ in range(150):  # at most 150,000 pings (19 MB of pongs), bounded
                try:
                    await asyncio.wait_for(loop.sock_sendall(sock, burst), 2)
                except TimeoutError:
                    break  # the relay stopped reading from us: what the fix does
                peak = max(peak, _largest_queue(relay))
            peak = max(peak, _largest_queue(relay))
            # One read's worth of pongs past the limit at most (asyncio reads 256 KiB).
            assert peak < LIMIT + (512 << 10), peak
        finally:
            sock.close()


def _largest_queue(relay: Relay) -> float:
    """What the relay's send-queue gauge reports as the largest queue."""
    metrics = parse_metrics(relay.metrics.render())
    return metrics.get("crdtsync_relay_send_queue_bytes", stat="max")
