"""The LAN transport over real sockets on 127.0.0.1: contract, identity, and refusals.

Every refusal is checked three ways: the error class (and its ``kind`` for
frames), a log line under ``crdtsync.lan``, and that nothing reached the other
side's ``recv()`` (or handler) that should not have.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from helpers.lan_proxy import Faults, FrameEditor, Proxy
from helpers.waiting import eventually

from crdtsync import Peer
from crdtsync.errors import (
    ConnectionClosedError,
    HandshakeError,
    LinkFrameError,
    PeerIdentityError,
    TransportError,
)
from crdtsync.net import Connection, Transport
from crdtsync.testing import check_transport
from crdtsync.transports.lan import (
    DeviceIdentity,
    GroupKey,
    LanConnection,
    LanTransport,
    parse_address,
)
from crdtsync.transports.lan.channel import PREAMBLE, LinkCore

pytestmark = pytest.mark.anyio
LOCAL = "lan://127.0.0.1:0"
STEP = 10.0


class Server:
    """A listening LanTransport that keeps what each accepted link received."""

    def __init__(self, transport: LanTransport) -> None:
        self.transport = transport
        self.accepted: asyncio.Queue[LanConnection] = asyncio.Queue()
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        self.ended = asyncio.Event()
        self.address = ""

    async def handler(self, conn: LanConnection) -> None:  # type: ignore[override]
        await self.accepted.put(conn)
        try:
            while True:
                self.received.append(await conn.recv())
        except TransportError as exc:
            self.errors.append(exc)
        finally:
            self.ended.set()


@asynccontextmanager
async def serving(transport: LanTransport) -> AsyncIterator[Server]:
    server = Server(transport)
    listener = await transport.listen(LOCAL, server.handler)  # type: ignore[arg-type]
    server.address = listener.address
    try:
        yield server
    finally:
        await listener.close()


async def test_check_transport(group: GroupKey) -> None:
    assert isinstance(LanTransport(DeviceIdentity.generate(), group), Transport)
    await check_transport(
        lambda: (
            LanTransport(DeviceIdentity.generate(), group),
            LanTransport(DeviceIdentity.generate(), group),
            LOCAL,
        )
    )


async def test_both_ends_know_who_the_other_is(
    group: GroupKey, alice: DeviceIdentity, bob: DeviceIdentity
) -> None:
    async with serving(LanTransport(bob, group, hello=b"bob-1")) as server:
        addr = parse_address(server.address)
        # Naming the right fingerprint works the same as naming none.
        client = await LanTransport(alice, group, hello=b"alice-7").connect(
            f"lan://{bob.fingerprint}@{addr.host}:{addr.port}"
        )
        conn = await asyncio.wait_for(server.accepted.get(), STEP)
        assert isinstance(client, Connection)
        assert isinstance(conn, Connection)
        assert client.remote_identity.public_key == bob.public_key
        assert client.remote_identity.fingerprint == bob.fingerprint
        assert conn.remote_identity.fingerprint == alice.fingerprint
        assert client.handshake_hash == conn.handshake_hash
        assert client.remote_hello == b"bob-1"
        assert conn.remote_hello == b"alice-7"
        assert client.remote_address == f"lan://127.0.0.1:{addr.port}"
        await client.close()


async def test_two_peers_sync_and_a_large_update_crosses(group: GroupKey) -> None:
    a = LanTransport(DeviceIdentity.generate(), group)
    b = LanTransport(DeviceIdentity.generate(), group)
    async with Peer(transport=a) as pa, Peer(transport=b) as pb:
        where = await pa.listen(LOCAL)
        doc = await pb.open("notes")
        doc.text("t").insert(0, "x" * 300_000)  # several frames
        await pb.connect(where)
        assert await pb.wait_synced("notes", timeout=STEP)
        assert str((await pa.open("notes")).text("t")) == "x" * 300_000


async def test_wrong_group_key_is_refused_before_any_session_byte(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "crdtsync.lan")
    server_t = LanTransport(DeviceIdentity.generate(), GroupKey.generate())
    async with serving(server_t) as server:
        addr = parse_address(server.address)
        editor = FrameEditor(client_side=True, edit=lambda i, f: [f])
        async with Proxy(addr.host, addr.port, up=lambda: editor) as proxy:
            host, port = await proxy.start()
            stranger = LanTransport(DeviceIdentity.generate(), GroupKey.generate())
            with pytest.raises(HandshakeError, match="another group key"):
                await stranger.connect(f"lan://{host}:{port}")
        assert server.accepted.empty(), "the handler ran for a non-member"
        assert editor.frames == 0, "the stranger sent frames after the handshake"
    assert any(
        r.name == "crdtsync.lan" and "another group key" in r.getMessage() for r in caplog.records
    )


async def test_a_peer_claiming_another_fingerprint_is_refused(
    group: GroupKey, alice: DeviceIdentity, bob: DeviceIdentity, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "crdtsync.lan")
    victim = DeviceIdentity.generate()
    # bob holds the group key and announces victim's fingerprint at his address.
    async with serving(LanTransport(bob, group)) as server:
        addr = parse_address(server.address)
        editor = FrameEditor(client_side=True, edit=lambda i, f: [f])
        async with Proxy(addr.host, addr.port, up=lambda: editor) as proxy:
            host, port = await proxy.start()
            with pytest.raises(PeerIdentityError, match=f"proved device {bob.fingerprint}"):
                await LanTransport(alice, group).connect(
                    f"lan://{victim.fingerprint}@{host}:{port}"
                )
            await eventually(lambda: proxy.stats.sent_up != [], STEP, "bytes sent up")
        assert server.accepted.empty()
        assert editor.frames == 0
        # alice stopped after message 2: her own key (message 3) never left.
        sent = bytes(proxy.stats.sent_up[0])
        assert sent.startswith(PREAMBLE)
        assert len(sent) == len(PREAMBLE) + 2 + 32 + 16
    assert any("as announced" in r.getMessage() for r in caplog.records if r.name == "crdtsync.lan")


async def _drain(conn: LanConnection) -> None:
    while True:
        await asyncio.wait_for(conn.recv(), STEP)


def _frame_edit(kind: str) -> Callable[[int, bytes], list[bytes]]:
    held: list[bytes] = []

    def edit(i: int, frame: bytes) -> list[bytes]:
        if i != 1 and not (kind == "reorder" and i == 2):
            return [frame]
        if kind == "tamper":
            bad = bytearray(frame)
            bad[-1] ^= 0x40
            return [bytes(bad)]
        if kind == "tamper-header":
            bad = bytearray(frame)
            # counter kept; flip a bit of the length
            bad[3] ^= 0x01
            return [bytes(bad)]
        if kind == "replay":
            return [frame, frame]
        if kind == "drop":
            return []
        if kind == "reorder":
            if i == 1:
                held.append(frame)
                return []
            return [frame, *held]
        raise AssertionError(kind)

    return edit


@pytest.mark.parametrize(
    ("kind", "error_kind"),
    [
        ("tamper", "tampered"),
        ("tamper-header", None),
        ("replay", "replayed"),
        ("drop", "skipped"),
        ("reorder", "skipped"),
    ],
)
async def test_frames_that_were_altered_are_refused(
    group: GroupKey, kind: str, error_kind: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "crdtsync.lan")
    async with serving(LanTransport(DeviceIdentity.generate(), group)) as server:
        addr = parse_address(server.address)
        up = FrameEditor(client_side=True, edit=_frame_edit(kind))
        async with Proxy(addr.host, addr.port, up=lambda: up) as proxy:
            host, port = await proxy.start()
            client = await LanTransport(DeviceIdentity.generate(), group).connect(
                f"lan://{host}:{port}"
            )
            for word in (b"zero", b"one", b"two", b"three"):
                await client.send(word)
            await asyncio.wait_for(server.ended.wait(), STEP)
            await client.close()
    # What came before the fault went through; nothing at or after it did (a
    # replayed frame's first copy is genuine).
    assert server.received == ([b"zero", b"one"] if kind == "replay" else [b"zero"])
    (error,) = server.errors
    if error_kind is None:
        # A changed length shifts the framing: refused one way or another.
        assert isinstance(error, LinkFrameError)
    else:
        assert isinstance(error, LinkFrameError)
        assert error.kind == error_kind, error
    assert any(r.name == "crdtsync.lan" and "LAN link" in r.getMessage() for r in caplog.records)


async def test_a_cut_inside_a_frame_is_truncation(group: GroupKey) -> None:
    async with serving(LanTransport(DeviceIdentity.generate(), group)) as server:
        addr = parse_address(server.address)
        # preamble + msg 1 + msg 3 = 8 + 34 + 66 bytes; then a 13 + 20-byte frame.
        async with Proxy(addr.host, addr.port, faults=Faults(cut_after=108 + 20)) as proxy:
            host, port = await proxy.start()
            client = await LanTransport(DeviceIdentity.generate(), group).connect(
                f"lan://{host}:{port}"
            )
            await client.send(b"abcd")
            await asyncio.wait_for(server.ended.wait(), STEP)
            await client.close()
    (error,) = server.errors
    assert isinstance(error, LinkFrameError)
    assert error.kind == "truncated"
    assert server.received == []


async def test_an_oversize_frame_is_refused_from_its_header(group: GroupKey) -> None:
    async with serving(LanTransport(DeviceIdentity.generate(), group)) as server:
        addr = parse_address(server.address)
        reader, writer = await asyncio.open_connection(addr.host, addr.port)
        core = LinkCore(initiator=True, identity=DeviceIdentity.generate(), group=group)
        writer.write(core.data_to_send())
        while core.state.value != "open":
            core.receive_data(await asyncio.wait_for(reader.read(4096), STEP))
            writer.write(core.data_to_send())
        # A header announcing 1 MiB with the right counter, and no body yet.
        writer.write(struct.pack(">IQB", 1 << 20, 0, 0))
        await asyncio.wait_for(server.ended.wait(), STEP)
        writer.close()
    (error,) = server.errors
    assert isinstance(error, LinkFrameError)
    assert error.kind == "too-large"
    assert server.received == []


async def test_not_a_crdtsync_peer(group: GroupKey) -> None:
    async with serving(LanTransport(DeviceIdentity.generate(), group)) as server:
        addr = parse_address(server.address)
        reader, writer = await asyncio.open_connection(addr.host, addr.port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), STEP) == b""  # dropped, nothing said
        writer.close()
        assert server.accepted.empty()


async def test_handshake_timeouts(group: GroupKey) -> None:
    quick = LanTransport(DeviceIdentity.generate(), group, handshake_timeout=0.2)
    async with serving(quick) as server:
        addr = parse_address(server.address)
        reader, writer = await asyncio.open_connection(addr.host, addr.port)
        # A client that says nothing is dropped after the timeout.
        assert await asyncio.wait_for(reader.read(), STEP) == b""
        writer.close()

    # A server that accepts and never answers.
    kept: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: kept.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        with pytest.raises(HandshakeError, match=r"within 0\.2 s"):
            await quick.connect(f"lan://127.0.0.1:{port}")
    finally:
        silent.close()
        for w in kept:
            w.close()


async def test_a_device_reaching_itself_is_refused(group: GroupKey, alice: DeviceIdentity) -> None:
    me = LanTransport(alice, group)
    async with serving(me) as server:
        with pytest.raises(PeerIdentityError, match="itself"):
            await me.connect(server.address)
        assert server.accepted.empty()


async def test_allow_list(group: GroupKey, alice: DeviceIdentity, bob: DeviceIdentity) -> None:
    carol = DeviceIdentity.generate()
    server_t = LanTransport(bob, group, allowed=[alice.fingerprint])
    async with serving(server_t) as server:
        # carol holds the group key but is not on bob's list: told so, never handled.
        with pytest.raises(HandshakeError, match="not on the allow-list"):
            await LanTransport(carol, group).connect(server.address)
        assert server.accepted.empty()
        # bob is not on alice's list: she refuses him before sending her key.
        picky = LanTransport(alice, group, allowed=[carol.fingerprint])
        with pytest.raises(PeerIdentityError, match="allow-list"):
            await picky.connect(server.address)

        client = await LanTransport(alice, group).connect(server.address)
        conn = await asyncio.wait_for(server.accepted.get(), STEP)
        assert server_t.links() == [conn]
        await client.send(b"hello")
        await eventually(lambda: server.received == [b"hello"], STEP, "hello received")
        # Removing alice closes her link at once, from bob's side.
        await server_t.set_allowed([carol.fingerprint])
        with pytest.raises(ConnectionClosedError, match="no longer allowed"):
            await _drain(client)
        assert server_t.links() == []


@pytest.mark.parametrize(
    "address",
    [
        "ws://127.0.0.1:1",
        "lan://127.0.0.1",
        "lan://127.0.0.1:0",
        "lan://NOTAFINGERPRINT@127.0.0.1:1",
        "lan://127.0.0.1:1/path",
        "lan://127.0.0.1:99999",
    ],
)
async def test_bad_addresses(group: GroupKey, address: str) -> None:
    with pytest.raises(TransportError):
        await LanTransport(DeviceIdentity.generate(), group).connect(address)


async def test_faults_on_the_wire_never_deliver_wrong_bytes(group: GroupKey) -> None:
    # Drops and duplicates at random: every link either carries the exact bytes
    # or is refused; never a changed, repeated or missing byte delivered.
    sent = [bytes([i]) * (1 + i * 37 % 2000) for i in range(60)]
    outcomes = set()
    for seed in range(8):
        # A dropped handshake message is noticed by the timeout: keep it short.
        server_t = LanTransport(DeviceIdentity.generate(), group, handshake_timeout=0.5)
        async with serving(server_t) as server:
            addr = parse_address(server.address)
            faults = Faults(drop=0.05, duplicate=0.05)
            async with Proxy(addr.host, addr.port, faults=faults, seed=seed) as proxy:
                host, port = await proxy.start()
                client_t = LanTransport(DeviceIdentity.generate(), group, handshake_timeout=0.5)
                try:
                    client = await client_t.connect(f"lan://{host}:{port}")
                except HandshakeError:
                    outcomes.add("handshake refused")
                    continue
                for chunk in sent:
                    try:
                        await client.send(chunk)
                    except TransportError:
                        break
                await client.close()
                await asyncio.wait_for(server.ended.wait(), STEP)
        got = b"".join(server.received)
        want = b"".join(sent)
        assert want.startswith(got), f"seed {seed}: delivered bytes that were not sent"
        outcomes.add("complete" if got == want else "refused")
    assert outcomes - {"complete"}, "no fault was ever noticed: the proxy did nothing"
