"""Peers on the LAN, in one process on 127.0.0.1: discovery, links, mesh, identity binding.

zeroconf is always bound to 127.0.0.1 here (``interfaces=["127.0.0.1"]``): its
multicast never leaves through the machine's real interface. Tests that need
exact control of who knows whom use ``zeroconf=False`` and addresses given by
hand. Separate processes: ``test_lan_processes.py``; namespaces: the lab.

Every refusal is checked three ways: a ``refused`` status naming the device,
a log line under ``crdtsync.lan``, and that nothing of any document crossed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.lan_proxy import FrameEditor, Proxy
from helpers.relay import running_relay
from helpers.waiting import eventually
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import Peer, Status
from crdtsync.errors import (
    AuthError,
    ConnectionClosedError,
    ForbiddenWriterError,
    HandshakeError,
    LinkFrameError,
    LocalProtocolError,
    PeerIdentityError,
    TransportError,
    UnsupportedAddressError,
)
from crdtsync.net import Ability, has_identity
from crdtsync.peer.lan import LanHello, LanManager, LanOptions, mesh_distances, neighbours
from crdtsync.peer.peer import Backoff
from crdtsync.protocol import messages as m
from crdtsync.protocol import session as p
from crdtsync.transports.lan import DeviceIdentity, GroupKey, LanTransport, parse_address
from crdtsync.transports.memory import MemoryNetwork

pytestmark = pytest.mark.anyio
LOOPBACK = ["127.0.0.1"]
WAIT = 20.0
#: Quick retries and probes, so that tests wait seconds, not minutes.
QUICK = LanOptions(
    dial_grace=0.2,
    backoff=Backoff(initial=0.05, factor=2.0, cap=0.5, jitter=0.2),
    max_failures=3,
    probe_interval=1.0,
    handshake_timeout=5.0,
    connect_timeout=2.0,
)


class Node:
    """A Peer with a LAN manager, and what it reported."""

    def __init__(self, name: str, peer: Peer) -> None:
        self.name = name
        self.peer = peer
        self.statuses: list[Status] = []
        peer.on_status(self.statuses.append)

    @property
    def lan(self) -> LanManager:
        assert self.peer.lan is not None
        return self.peer.lan

    @property
    def fp(self) -> str:
        return self.lan.fingerprint

    def address(self) -> str:
        """``lan://FINGERPRINT@127.0.0.1:port``."""
        where = parse_address(self.lan.addresses[0])
        return f"lan://{self.fp}@{where.host}:{where.port}"

    def bare_address(self) -> str:
        return self.lan.addresses[0]

    def kinds(self, kind: str) -> list[Status]:
        return [s for s in self.statuses if s.kind == kind]

    def refused(self, text: str) -> list[Status]:
        return [s for s in self.kinds("refused") if text in s.reason]


@contextlib.asynccontextmanager
async def nodes(
    tmp_path: Path,
    names: list[str],
    key: GroupKey,
    **lan: Any,
) -> AsyncIterator[list[Node]]:
    """Peers with stores in ``tmp_path``, each started on the LAN with ``lan`` options."""
    lan.setdefault("interfaces", LOOPBACK)
    lan.setdefault("options", QUICK)
    tmp_path.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for name in names:
            peer = await stack.enter_async_context(Peer(store=tmp_path / f"{name}.db"))
            out.append(Node(name, peer))
        for node in out:
            await node.peer.start_lan(key, **lan)
        yield out


async def items(node: Node, doc: str = "notes") -> list[Any]:
    return list((await node.peer.open(doc)).list("items"))


# -- the mesh rule ---------------------------------------------------------------------------


def _fingerprints(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(32)) for _ in range(n)
    ]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 80), st.integers(0, 2**32))
def test_the_mesh_is_connected_bounded_and_symmetric(n: int, seed: int) -> None:
    members = _fingerprints(n, seed)
    graph = {fp: neighbours(fp, members) for fp in members}
    # Full mesh up to 6, a bounded number of neighbours beyond.
    for fp, near in graph.items():
        assert fp not in near
        if n <= 6:
            assert near == set(members) - {fp}
        else:
            assert 2 <= len(near) <= 6, (n, len(near))
        # The same answer whatever the order the members are given in.
        assert near == neighbours(fp, reversed(members))
    # Symmetric: both ends of a link want it.
    for fp, near in graph.items():
        for other in near:
            assert fp in graph[other]
    # Connected: everyone reaches everyone.
    seen, todo = {members[0]}, [members[0]]
    while todo:
        for other in graph[todo.pop()]:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    assert seen == set(members)


def test_mesh_distances_are_few_and_include_the_ring() -> None:
    for n in range(7, 2000):
        ds = mesh_distances(n)
        assert ds[0] == 1
        assert len(ds) <= 3
        assert all(d <= n // 2 for d in ds)


def test_the_hello_is_strict() -> None:
    hello = LanHello(os.urandom(16), 12345)
    assert LanHello.decode(hello.encode()) == hello
    assert len(hello.encode()) == 27
    data = hello.encode()
    for bad in (b"", data[:-1], data + b"\0", b"XX" + data[2:], data[:2] + b"\2" + data[3:]):
        with pytest.raises(HandshakeError):
            LanHello.decode(bad)
    for peer_id in (0, 2**53):
        with pytest.raises(HandshakeError):
            LanHello.decode(data[:19] + peer_id.to_bytes(8, "big"))


# -- discovery, links, convergence ---------------------------------------------------------------


async def test_three_peers_discover_link_once_per_pair_and_converge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "crdtsync.lan")
    key = GroupKey.generate()
    async with nodes(tmp_path, ["a", "b", "c"], key) as group:
        for node in group:
            (await node.peer.open("notes")).list("items").append(node.name)
        fps = {n.fp for n in group}
        await eventually(
            lambda: all(n.lan.linked() == fps - {n.fp} for n in group), WAIT, "a full mesh"
        )
        await eventually(
            lambda: all(len(n.peer.connections()) == 2 for n in group), WAIT, "one link per pair"
        )
        for node in group:
            await eventually(lambda n=node: n.peer.is_synced("notes"), WAIT, "synced")
        for node in group:
            assert sorted(await items(node)) == ["a", "b", "c"]
            assert {s.device for s in node.kinds("linked")} == fps - {node.fp}
            assert {s.device for s in node.kinds("discovered")} <= fps - {node.fp}
            assert node.kinds("refused") == []
            # Every connection proved its device key.
            for link in node.lan.links():
                assert has_identity(link.conn)
                assert Ability.IDENTITY in link.conn.abilities
                assert link.conn.remote_identity.fingerprint == link.device
        # Each client id is bound to the device that declared it, on every peer.
        for node in group:
            for other in group:
                assert node.lan.device_of(other.peer.peer_id) == other.fp
    logged = [r.getMessage() for r in caplog.records if r.name == "crdtsync.lan"]
    assert any("LAN linked" in line for line in logged)
    assert any("LAN discovered" in line for line in logged)


async def test_an_edit_on_a_reaches_c_through_b(tmp_path: Path) -> None:
    # A and C know only B: no link between them, yet edits cross.
    key = GroupKey.generate()
    async with nodes(tmp_path, ["a", "b", "c"], key, zeroconf=False) as (a, b, c):
        a.lan.add(b.address())
        c.lan.add(b.bare_address())  # by hand, without the fingerprint
        await eventually(
            lambda: b.lan.linked() == {a.fp, c.fp} and a.lan.linked() == c.lan.linked() == {b.fp},
            WAIT,
            "A-B and B-C",
        )
        (await a.peer.open("notes")).list("items").append("from a")
        (await c.peer.open("notes")).list("items").append("from c")

        async def converged() -> bool:
            return all([sorted(await items(n)) == ["from a", "from c"] for n in (a, b, c)])

        await eventually(converged, WAIT, "A's edit at C and C's at A")
        assert a.lan.linked() == {b.fp}, "A and C linked directly"


async def test_simultaneous_dials_keep_the_same_one_link(tmp_path: Path) -> None:
    # Both dial at once (no grace): each end keeps the link initiated by the larger key.
    key = GroupKey.generate()
    eager = LanOptions(
        dial_grace=0.0, backoff=Backoff(initial=0.05, factor=2.0, cap=0.3), max_failures=50
    )
    for round_ in range(3):
        folder = tmp_path / str(round_)
        folder.mkdir()
        async with nodes(folder, ["a", "b"], key, zeroconf=False, options=eager) as (a, b):
            a.lan.add(b.address())
            b.lan.add(a.address())

            def one_shared_link() -> bool:
                la, lb = a.lan.links(), b.lan.links()
                return (
                    len(la) == 1 == len(lb)
                    and la[0].conn.handshake_hash == lb[0].conn.handshake_hash
                    and len(a.peer.connections()) == 1 == len(b.peer.connections())
                )

            await eventually(one_shared_link, WAIT, "one link, the same at both ends")
            (la,), (lb,) = a.lan.links(), b.lan.links()
            larger = max(a.lan.identity.public_key, b.lan.identity.public_key)
            assert la.initiator == lb.initiator == larger
            assert la.outbound == (a.lan.identity.public_key == larger)
            assert lb.outbound != la.outbound


async def test_eight_members_link_a_bounded_connected_mesh(tmp_path: Path) -> None:
    key = GroupKey.generate()
    names = [f"n{i}" for i in range(8)]
    # Found by zeroconf on 127.0.0.1: addresses given by hand are always linked.
    async with nodes(tmp_path, names, key) as group:
        fps = [n.fp for n in group]
        wanted = {fp: neighbours(fp, fps) for fp in fps}

        def meshed() -> bool:
            # Linked exactly with the neighbours the rule names (the rule is symmetric).
            return all(n.lan.linked() == wanted[n.fp] for n in group)

        await eventually(meshed, WAIT, "the bounded mesh")
        assert all(len(wanted[fp]) < 7 for fp in fps)
        assert any(len(wanted[fp]) < 7 for fp in fps), "8 members: not a full mesh"
        (await group[0].peer.open("notes")).list("items").append("hello")

        async def everywhere() -> bool:
            return all([await items(n) == ["hello"] for n in group])

        await eventually(everywhere, WAIT, "the edit at every member")


async def test_an_address_that_keeps_failing_is_dropped(tmp_path: Path) -> None:
    key = GroupKey.generate()
    ghost = DeviceIdentity.generate().fingerprint
    async with nodes(tmp_path, ["a"], key, zeroconf=False) as (a,):
        a.lan.add(f"lan://{ghost}@127.0.0.1:9")  # nobody listens on the discard port
        await eventually(lambda: bool(a.kinds("dropped")), WAIT, "the address dropped")
        (dropped,) = a.kinds("dropped")
        assert dropped.device == ghost
        assert dropped.address == f"lan://{ghost}@127.0.0.1:9"
        assert "3 failures in a row" in dropped.reason
        assert ghost not in a.lan.members()


async def test_peer_connect_picks_the_lan_transport_next_to_others(tmp_path: Path) -> None:
    # One Peer: mem:// through its own transport, lan:// through the one start_lan set up.
    key = GroupKey.generate()
    net = MemoryNetwork()
    async with (
        Peer(store=tmp_path / "a.db", transport=net.transport("a")) as a,
        Peer(transport=net.transport("m")) as mem,
        Peer(store=tmp_path / "b.db") as b,
    ):
        await mem.listen("mem://m")
        await a.start_lan(key, interfaces=LOOPBACK, zeroconf=False, options=QUICK)
        await b.start_lan(key, interfaces=LOOPBACK, zeroconf=False, options=QUICK)
        assert b.lan is not None
        doc = await a.open("notes")
        doc.list("items").append("x")
        await a.connect("mem://m")
        await a.connect(b.lan.addresses[0])  # by the Peer itself: bound all the same
        assert await a.wait_synced("notes", timeout=WAIT)
        assert list((await mem.open("notes")).list("items")) == ["x"]
        assert list((await b.open("notes")).list("items")) == ["x"]
        assert b.lan.device_of(a.peer_id) is not None
        await b.stop_lan()
        with pytest.raises(UnsupportedAddressError, match="start_lan"):
            await b.connect("lan://127.0.0.1:9")


async def test_lan_and_relay_links_work_together_and_either_suffices(tmp_path: Path) -> None:
    key = GroupKey.generate()
    async with (
        running_relay(tmp_path) as relay,
        Peer(store=tmp_path / "a.db") as a,
        Peer(store=tmp_path / "b.db") as b,
        Peer(store=tmp_path / "c.db") as c,
    ):
        # A: LAN and relay; B: LAN only; C: relay only. A joins the two.
        await a.start_lan(key, interfaces=LOOPBACK, options=QUICK)
        await b.start_lan(key, interfaces=LOOPBACK, options=QUICK)
        for peer, text in ((a, "a"), (b, "b"), (c, "c")):
            (await peer.open("notes")).list("items").append(text)
        await a.connect(relay.url)
        await c.connect(relay.url)

        async def all_have(*want: str) -> bool:
            return all(
                [sorted((await x.open("notes")).list("items")) == sorted(want) for x in (a, b, c)]
            )

        await eventually(lambda: all_have("a", "b", "c"), WAIT, "B's edit at C through A")
        # The relay alone: the LAN goes away, B joins the relay.
        await a.stop_lan()
        await b.stop_lan()
        await b.connect(relay.url)
        (await b.open("notes")).list("items").append("b2")
        await eventually(lambda: all_have("a", "b", "c", "b2"), WAIT, "over the relay only")
        # The LAN alone: nobody reaches the relay any more.
        await relay.close()
        await a.start_lan(key, interfaces=LOOPBACK, options=QUICK)
        await b.start_lan(key, interfaces=LOOPBACK, options=QUICK)
        (await a.open("notes")).list("items").append("a2")

        async def lan_only() -> bool:
            want = ["a", "a2", "b", "b2", "c"]
            return all([sorted((await x.open("notes")).list("items")) == want for x in (a, b)])

        await eventually(lan_only, WAIT, "over the LAN only")


async def test_start_lan_twice_is_refused(tmp_path: Path) -> None:
    key = GroupKey.generate()
    async with Peer(store=tmp_path / "a.db") as a:
        await a.start_lan(key, interfaces=LOOPBACK, zeroconf=False)
        with pytest.raises(LocalProtocolError):
            await a.start_lan(key, interfaces=LOOPBACK, zeroconf=False)
        await a.stop_lan()
        await a.stop_lan()  # idempotent
        assert a.lan is None
    with pytest.raises(LocalProtocolError):
        await a.start_lan(key)


async def test_the_identity_is_kept_beside_the_store_and_the_key_file_read(tmp_path: Path) -> None:
    key = GroupKey.generate()
    key.save(tmp_path / "team.key")
    async with Peer(store=tmp_path / "a.db") as a:
        lan = await a.start_lan(tmp_path / "team.key", interfaces=LOOPBACK, zeroconf=False)
        first = lan.fingerprint
    assert (tmp_path / "a.db.lan-identity").exists()
    async with Peer(store=tmp_path / "a.db") as a:
        lan = await a.start_lan(key, interfaces=LOOPBACK, zeroconf=False)
        assert lan.fingerprint == first
        assert lan.incarnation != b""


# -- the allow-list -------------------------------------------------------------------------------


async def test_the_allow_list_refuses_others_and_removing_a_device_closes_its_link(
    tmp_path: Path,
) -> None:
    key = GroupKey.generate()
    async with nodes(tmp_path, ["a", "b", "c"], key, zeroconf=False) as (a, b, c):
        await a.lan.set_allowed([b.fp])
        (await a.peer.open("notes")).list("items").append("secret")
        b.lan.add(a.address())
        c.lan.add(a.address())
        await eventually(lambda: a.lan.linked() == {b.fp}, WAIT, "B linked")
        await eventually(lambda: bool(c.refused("")), WAIT, "C refused")
        await eventually(lambda: b.peer.is_synced("notes"), WAIT, "B synced")
        assert await items(b) == ["secret"]
        assert "notes" not in c.peer.docs() or await items(c) == []
        # B leaves the list: its link closes now, and it stays out.
        await a.lan.set_allowed([])
        await eventually(lambda: not a.lan.linked(), WAIT, "B's link closed")
        assert a.refused("no longer on the allow-list")
        (await a.peer.open("notes")).list("items").append("more")
        # Time passes to show that something does NOT happen: "more" never reaches B.
        await asyncio.sleep(0.3)  # (noqa: sleep) proves an absence
        assert await items(b) == ["secret"]


# -- refusals -------------------------------------------------------------------------------------


async def test_another_group_key_is_refused_and_nothing_crosses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "crdtsync.lan")
    async with (
        nodes(tmp_path / "1", ["a"], GroupKey.generate(), zeroconf=False) as (a,),
        nodes(tmp_path / "2", ["x"], GroupKey.generate(), zeroconf=False) as (x,),
    ):
        (await a.peer.open("notes")).list("items").append("a's")
        (await x.peer.open("notes")).list("items").append("x's")
        x.lan.add(a.address())
        await eventually(lambda: bool(a.kinds("refused")), WAIT, "A refuses X")
        await eventually(lambda: bool(x.kinds("refused")), WAIT, "X's dial refused")
        assert any("group key" in s.reason for s in x.kinds("refused"))
        assert all(isinstance(s.error, HandshakeError) for s in a.kinds("refused"))
        assert await items(a) == ["a's"]
        assert await items(x) == ["x's"]
        assert not a.kinds("linked")
        assert not x.kinds("linked")
        assert not a.peer.connections()
    assert any("LAN refused" in r.getMessage() for r in caplog.records)


async def test_a_peer_claiming_another_fingerprint_is_refused(tmp_path: Path) -> None:
    key = GroupKey.generate()
    async with nodes(tmp_path, ["a", "b", "c"], key, zeroconf=False) as (a, b, c):
        (await c.peer.open("notes")).list("items").append("c's")
        (await a.peer.open("notes")).list("items").append("a's")
        # An address (as a forged announcement would give) naming B, where C answers.
        where = parse_address(c.bare_address())
        a.lan.add(f"lan://{b.fp}@{where.host}:{where.port}")
        await eventually(lambda: bool(a.refused(f"proved device {c.fp}")), WAIT, "A refuses C")
        (status,) = a.refused(f"proved device {c.fp}")[:1]
        assert isinstance(status.error, PeerIdentityError)
        assert status.device == b.fp
        assert await items(a) == ["a's"]
        assert await items(c) == ["c's"]
        assert not a.peer.connections()
        assert not c.peer.connections()


@pytest.mark.parametrize("fault", ["tampered", "replayed"])
async def test_a_tampered_or_replayed_frame_is_refused_and_nothing_crosses(
    tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "crdtsync.lan")
    key = GroupKey.generate()

    def edit(n: int, frame: bytes) -> list[bytes]:
        if n != 0:  # the client's first frame: its session HELLO
            return [frame]
        if fault == "tampered":
            return [frame[:-1] + bytes([frame[-1] ^ 1])]
        return [frame, frame]

    async with nodes(tmp_path, ["a", "b"], key, zeroconf=False) as (a, b):
        (await a.peer.open("notes")).list("items").append("a's")
        (await b.peer.open("notes")).list("items").append("b's")
        where = parse_address(b.bare_address())
        up = lambda: FrameEditor(client_side=True, edit=edit)  # noqa: E731
        async with Proxy(where.host, where.port, up=up) as proxy:
            host, port = await proxy.start()
            a.lan.add(f"lan://{b.fp}@{host}:{port}")
            await eventually(lambda: len(b.refused(fault)) >= 2, WAIT, "refusals at B")
        for status in b.refused(fault):
            assert isinstance(status.error, LinkFrameError)
            assert status.error.kind == fault
            assert status.device == a.fp
        assert await items(a) == ["a's"]
        assert await items(b) == ["b's"]
        # A never saw its session open (B refused the link before answering it).
        assert not a.kinds("connected")
        assert not a.kinds("synced")
        assert not b.kinds("synced")
    assert any(fault in r.getMessage() for r in caplog.records if r.name == "crdtsync.lan")


async def test_loss_delay_and_duplication_through_the_proxy_still_converge(
    tmp_path: Path,
) -> None:
    from helpers.lan_proxy import Faults

    key = GroupKey.generate()
    async with nodes(tmp_path, ["a", "b"], key, zeroconf=False) as (a, b):
        where = parse_address(b.bare_address())
        faults = Faults(drop=0.03, duplicate=0.05, delay=0.005)
        async with Proxy(where.host, where.port, faults=faults, seed=7) as proxy:
            host, port = await proxy.start()
            a.lan.add(f"lan://{b.fp}@{host}:{port}")
            da, db = await a.peer.open("notes"), await b.peer.open("notes")
            for i in range(300):
                (da if i % 2 else db).list("items").append(i)
                await asyncio.sleep(0.002)  # (noqa: sleep) one edit per chunk, spread over time

            async def converged() -> bool:
                return len(da.list("items")) == len(db.list("items")) == 300

            await eventually(converged, 60.0, "convergence through the faults")
            assert da.to_py() == db.to_py()
            # The faults happened, and the links noticed them: refused and made again.
            assert proxy.stats.dropped + proxy.stats.duplicated > 0
            assert proxy.stats.connections > 1
            assert a.kinds("refused") or b.kinds("refused")


# -- identity binding ------------------------------------------------------------------------------


async def _raw_member(
    key: GroupKey, address: str, *, hello_peer_id: int, identity: DeviceIdentity | None = None
) -> Any:
    transport = LanTransport(
        identity or DeviceIdentity.generate(),
        key,
        hello=LanHello(os.urandom(16), hello_peer_id).encode(),
    )
    return await transport.connect(address)


async def _read_all(conn: Any) -> tuple[bytes, str]:
    """Everything a link delivers until it closes, and why it closed."""
    got = bytearray()
    try:
        async with asyncio.timeout(WAIT):
            while True:
                got += await conn.recv()
    except TransportError as exc:
        return bytes(got), str(exc)
    raise AssertionError("unreachable")  # pragma: no cover


def _messages(data: bytes) -> list[m.Message]:
    reader = m.FrameReader(1 << 24)
    reader.feed(data)
    out = []
    while (body := reader.next_body()) is not None:
        out.append(m.decode_message(body))
    return out


async def test_a_member_declaring_another_members_client_id_is_refused_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "crdtsync.lan")
    key = GroupKey.generate()
    async with nodes(tmp_path, ["t", "v"], key, zeroconf=False) as (t, v):
        (await t.peer.open("notes")).list("items").append("t's")
        v.lan.add(t.address())
        await eventually(lambda: t.lan.linked() == {v.fp}, WAIT, "V linked with T")
        # M, a valid member, declares V's client id under its own key.
        mallory = DeviceIdentity.generate()
        conn = await _raw_member(
            key, t.bare_address(), hello_peer_id=v.peer.peer_id, identity=mallory
        )
        data, why = await _read_all(conn)
        assert data == b"", "T sent something to the forger"
        assert "forged writer" in why
        (status,) = t.refused("forged writer")
        assert status.device == mallory.fingerprint
        assert isinstance(status.error, ForbiddenWriterError)
        assert f"belongs to device {v.fp}" in status.reason
        # A Peer doing the same (its peer id is V's) gets nothing of any document.
        async with Peer(peer_id=v.peer.peer_id) as forger:
            await forger.start_lan(key, interfaces=LOOPBACK, zeroconf=False, options=QUICK)
            forger.lan.add(t.address())  # type: ignore[union-attr]
            await eventually(lambda: len(t.refused("forged writer")) >= 2, WAIT, "refused again")
            assert "notes" not in forger.docs()
            assert not any(is_open for _, _, is_open in forger.connections())
        assert t.lan.device_of(v.peer.peer_id) == v.fp
    assert any("forged writer" in r.getMessage() for r in caplog.records)


async def test_a_session_claiming_what_its_key_did_not_declare_is_refused(tmp_path: Path) -> None:
    key = GroupKey.generate()
    async with nodes(tmp_path, ["t", "v"], key, zeroconf=False) as (t, v):
        (await t.peer.open("notes")).list("items").append("t's")
        v.lan.add(t.address())
        await eventually(lambda: t.lan.linked() == {v.fp}, WAIT, "V linked with T")
        victim = v.peer.peer_id
        cases = [
            # (peer id in the authenticated hello, peer id in the session, writers declared)
            (771, 881, [881], AuthError, "identity mismatch"),
            (777, 777, [777, victim], ForbiddenWriterError, "forged writer"),
        ]
        for hello_id, session_id, writers, error, text in cases:
            before = len(t.refused(text))
            conn = await _raw_member(key, t.bare_address(), hello_peer_id=hello_id)
            session = p.Session.client(session_id, writers=writers)
            for frame in session.data_to_send():
                await conn.send(frame)
            data, _ = await _read_all(conn)
            got = _messages(data)
            assert [type(msg) for msg in got] == [m.Close], got  # a CLOSE, nothing else
            assert got[0].code == error.code
            await eventually(lambda t_=text, b=before: len(t.refused(t_)) > b, WAIT, text)
            assert isinstance(t.refused(text)[-1].error, error)
            await conn.close()
        assert t.lan.device_of(victim) == v.fp


async def test_a_forged_writer_via_peer_connect_is_refused_too(tmp_path: Path) -> None:
    # The binder checks links the manager did not make (Peer.connect("lan://...")).
    key = GroupKey.generate()
    async with nodes(tmp_path, ["t", "v"], key, zeroconf=False) as (t, v):
        v.lan.add(t.address())
        await eventually(lambda: t.lan.linked() == {v.fp}, WAIT, "V linked with T")
        async with Peer(peer_id=v.peer.peer_id) as forger:
            await forger.start_lan(key, interfaces=LOOPBACK, zeroconf=False, options=QUICK)
            with pytest.raises((TransportError, ConnectionClosedError, TimeoutError)):
                await forger.connect(t.bare_address(), timeout=2.0)
            assert "notes" not in forger.docs()


async def test_devices_seen_only_inbound_are_forgotten_and_the_binding_table_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crdtsync.peer.lan as lan_mod

    monkeypatch.setattr(lan_mod, "_MAX_DEVICES", 3)  # this device and 2 others
    key = GroupKey.generate()
    forgetful = LanOptions(probe_interval=0.1, probe_for=0.5)
    async with nodes(tmp_path, ["t"], key, zeroconf=False, options=forgetful) as (t,):
        devices = [DeviceIdentity.generate() for _ in range(3)]
        for i, device in enumerate(devices):
            conn = await _raw_member(key, t.bare_address(), hello_peer_id=1000 + i, identity=device)
            await eventually(lambda d=device: d.fingerprint in t.lan.linked(), WAIT, "linked")
            await conn.close()
            await eventually(lambda d=device: d.fingerprint not in t.lan.linked(), WAIT, "gone")
        # The first device's binding made room for the third's (oldest absent first).
        assert t.lan.device_of(1000) is None
        assert t.lan.device_of(1001) == devices[1].fingerprint
        assert t.lan.device_of(1002) == devices[2].fingerprint
        assert t.lan.device_of(t.peer.peer_id) == t.fp  # our own is never forgotten
        # Devices that only ever linked to us are forgotten once gone for probe_for.
        await eventually(lambda: not t.lan.known(), WAIT, "forgotten")
