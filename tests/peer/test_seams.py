"""The Peer's seams: transports picked by address scheme, declared abilities, errors in the tree.

* ``Peer.connect("ws://…")`` / ``"wss://…"`` work without a transport (the scheme
  picks ``WebSocketTransport``), ``mem://`` needs an explicit one, any other scheme
  is a ValueError at once, an explicit transport wins, and a missing websockets
  package names the extra to install;
* a YProvider refuses a transport that does not keep message boundaries;
* timeouts, bad ``auth`` values and unknown documents raise library errors that
  are also the builtin ones;
* background tasks that crash are logged and reported, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from helpers.tlsutil import self_signed_cert

from crdtsync import Doc, Peer, Status
from crdtsync.errors import (
    ConnectTimeoutError,
    CrdtSyncError,
    DocNotOpenError,
    InvalidAuthError,
    MissingDependencyError,
    NoSuchDocumentError,
    StoreError,
    TransportError,
    UnsupportedAddressError,
    UnsupportedTransportError,
)
from crdtsync.format.version import Version
from crdtsync.net import Ability, Connection, Handler, Listener
from crdtsync.peer import peer as peer_mod
from crdtsync.peer.peer import Backoff, Grant
from crdtsync.peer.policy import Admission, admit
from crdtsync.peer.yprovider import YProvider
from crdtsync.protocol import session as p
from crdtsync.store.memory import MemoryStore
from crdtsync.transports.memory import MemoryNetwork
from crdtsync.transports.websocket import WebSocketTransport

STEP = 10.0
QUICK = Backoff(initial=0.01, cap=0.05)


# -- transports by scheme --------------------------------------------------------------------


@pytest.mark.anyio
async def test_ws_urls_need_no_transport() -> None:
    async with Peer() as server, Peer(backoff=QUICK) as client:
        url = await server.listen("ws://127.0.0.1:0")  # the scheme picks the transport here too
        assert url.startswith("ws://127.0.0.1:")
        doc = await client.open("d")
        doc.text("t").insert(0, "over ws")
        await client.connect(url, timeout=STEP)
        assert await client.wait_synced("d", timeout=STEP)
        assert str((await server.open("d")).text("t")) == "over ws"


@pytest.mark.anyio
async def test_wss_urls_need_no_transport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    # The default transport trusts the system's CAs: make our certificate one of them.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    async with (
        Peer(transport=WebSocketTransport(ssl=server_ctx)) as server,
        Peer(backoff=QUICK) as client,
    ):
        url = await server.listen("wss://127.0.0.1:0")
        assert url.startswith("wss://")
        doc = await client.open("d")
        doc.text("t").insert(0, "over wss")
        await client.connect(url, timeout=STEP)
        assert await client.wait_synced("d", timeout=STEP)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("mem://server", "MemoryNetwork"),
        ("ftp://example.invalid/x", "'ftp://'"),
        ("localhost:8765", "'localhost://'"),
        ("/just/a/path", "no scheme"),
    ],
)
async def test_addresses_nobody_handles_are_a_value_error_at_once(address: str, says: str) -> None:
    async with Peer() as peer:
        for call in (lambda: peer.connect(address, timeout=None), lambda: peer.listen(address)):
            with pytest.raises(UnsupportedAddressError, match=says) as info:
                await asyncio.wait_for(call(), STEP)  # at once: never a retry loop
            assert isinstance(info.value, ValueError)
            assert isinstance(info.value, TransportError)
        assert peer.connections() == []


@pytest.mark.anyio
async def test_an_explicit_transport_wins_over_the_scheme() -> None:
    net = MemoryNetwork()
    # Memory addresses are any string: a "ws://" one goes to the memory network.
    async with (
        Peer(transport=net.transport("s")) as server,
        Peer(transport=net.transport("c")) as client,
    ):
        await server.listen("ws://not-a-websocket")
        await client.open("d")
        await client.connect("ws://not-a-websocket", timeout=STEP)
        assert await client.wait_synced("d", timeout=STEP)


@pytest.mark.anyio
async def test_without_websockets_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(sys.modules):  # "not installed": every import of it fails
        if name == "websockets" or name.startswith("websockets."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "crdtsync.transports.websocket")
    async with Peer() as peer:
        with pytest.raises(MissingDependencyError, match=r"crdtsync\[websocket\]") as info:
            await asyncio.wait_for(peer.connect("ws://127.0.0.1:1", timeout=None), STEP)
        assert isinstance(info.value, ImportError)
        assert info.value.extra == "websocket"
    with pytest.raises(MissingDependencyError, match=r"crdtsync\[websocket\]"):
        YProvider(Doc(), "ws://127.0.0.1:1", "room")


# -- declared abilities ----------------------------------------------------------------------


def test_yprovider_refuses_a_transport_without_message_boundaries() -> None:
    stream = MemoryNetwork().transport("c")
    assert Ability.MESSAGES not in stream.abilities
    with pytest.raises(UnsupportedTransportError, match="message boundaries") as info:
        YProvider(Doc(), "mem://server", "room", transport=stream)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    assert Ability.MESSAGES in WebSocketTransport().abilities
    YProvider(Doc(), "ws://127.0.0.1:1", "room", transport=WebSocketTransport())


# -- errors in the tree ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_connect_timeout_is_a_library_timeout_error() -> None:
    net = MemoryNetwork()

    async def silent(conn: Connection) -> None:
        await asyncio.Event().wait()  # accepts, never answers the handshake

    listener = await net.transport("s").listen("mem://silent", silent)
    try:
        async with Peer(transport=net.transport("c")) as peer:
            with pytest.raises(ConnectTimeoutError, match="still trying") as info:
                await peer.connect("mem://silent", timeout=0.05)
            assert isinstance(info.value, TimeoutError)
            assert isinstance(info.value, TransportError)
            await peer.disconnect("mem://silent")
    finally:
        await listener.close()


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("auth", [{1, 2}, object(), _nested(40)])
def test_a_wrong_auth_value_is_a_library_value_error_at_once(auth: object) -> None:
    with pytest.raises(InvalidAuthError) as info:
        Peer(auth=auth)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidAuthError):
        p.Session.client(1, auth=auth)
    Peer(auth={"token": "t", "n": [1, 2.5, None, b"x"]})  # CBOR values are fine


@pytest.mark.anyio
async def test_unknown_documents_are_a_library_key_error() -> None:
    async with Peer() as peer:
        for call in (
            lambda: peer.presence("nope"),
            lambda: peer.set_presence("nope", {}),
            lambda: peer.epoch("nope"),
            lambda: peer.import_update("nope", b"\x00\x00"),
        ):
            with pytest.raises(DocNotOpenError, match="'nope' is not open") as info:
                call()
            assert isinstance(info.value, KeyError)


# -- crashed background tasks are surfaced ---------------------------------------------------


class _BrokenTransport:
    """A transport whose connect fails with a bug (not a TransportError)."""

    abilities = Ability(0)

    async def connect(self, address: str) -> Connection:
        raise RuntimeError("bug in the adapter")

    async def listen(self, address: str, handler: Handler) -> Listener:
        raise RuntimeError("bug in the adapter")


@pytest.mark.anyio
async def test_a_crashed_reconnect_loop_is_logged_reported_and_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    statuses: list[Status] = []
    async with Peer(transport=_BrokenTransport()) as peer:
        peer.on_status(statuses.append)
        with (
            caplog.at_level(logging.ERROR, logger="crdtsync"),
            pytest.raises(RuntimeError, match="bug in the adapter"),
        ):
            await asyncio.wait_for(peer.connect("x://y", timeout=None), STEP)
    assert any(r.name == "crdtsync.peer" and "reconnect loop" in r.message for r in caplog.records)
    assert any(s.kind == "error" and "bug in the adapter" in s.reason for s in statuses)


class _FailingCompactions(MemoryStore):
    def compact(self, name: str, snapshot: bytes, upto: int) -> None:
        raise StoreError("disk full")


@pytest.mark.anyio
async def test_a_failed_background_compaction_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failed = asyncio.Event()
    statuses: list[Status] = []

    def on_status(s: Status) -> None:
        statuses.append(s)
        if isinstance(s.error, StoreError):
            failed.set()

    with caplog.at_level(logging.ERROR, logger="crdtsync"):
        async with Peer(store=_FailingCompactions(), compact_every=3) as peer:
            peer.on_status(on_status)
            doc = await peer.open("d")
            for i in range(5):
                doc.text("t").insert(0, str(i))
            await asyncio.wait_for(failed.wait(), STEP)
    assert any("compaction of 'd'" in s.reason for s in statuses)
    assert any(r.name == "crdtsync.peer" and "disk full" in r.getMessage() for r in caplog.records)


# -- one write policy, dispatch tables -------------------------------------------------------


class _Claims:
    def __init__(self, allow: bool) -> None:
        self.allow = allow
        self.asked: list[list[int]] = []

    def check_writers(self, client_ids: Any) -> bool:
        self.asked.append(list(client_ids))
        return self.allow


def test_the_write_policy() -> None:
    doc = Doc(peer_id=1)
    doc.text("t").insert(0, "known")
    known = doc.export_yjs_update()
    other = Doc(peer_id=2)
    other.text("t").insert(0, "new")
    new = other.export_yjs_update()
    writes = {2: 3}
    assert admit(doc, new, writes, read_only=True, session=_Claims(True)) is Admission.READ_ONLY
    assert admit(doc, known, {1: 5}, read_only=True, session=_Claims(True)) is (
        Admission.NOTHING_NEW
    )
    assert admit(doc, b"garbage", {}, read_only=True, session=_Claims(True)) is (
        Admission.READ_ONLY
    )
    claims = _Claims(False)
    assert admit(doc, new, writes, read_only=False, session=claims) is Admission.FORBIDDEN
    assert claims.asked == [[2]]
    claims = _Claims(True)
    assert admit(doc, known, {1: 5}, read_only=False, session=claims) is Admission.WRITE
    assert claims.asked == [[]], "known structs claim nothing"


def test_every_session_event_has_a_peer_handler() -> None:
    handlers = peer_mod._EVENT_HANDLERS
    assert set(handlers) == set(get_args(p.Event))
    for handler in handlers.values():
        assert handler.__qualname__.startswith("Peer._on_")
    for (state, mtype), handler in p.TRANSITIONS.items():
        assert handler.__qualname__.startswith("Session._on_"), (state, mtype)


@pytest.mark.anyio
async def test_guests_share_the_write_policy_and_the_registry() -> None:
    async with Peer() as peer:
        with pytest.raises(NoSuchDocumentError):  # a reader never creates a document
            await peer.join("d", grant=Grant(read_only=True), address="tab")
        assert peer.docs() == []
        await peer.open("d")
        guest = await peer.join("d", grant=Grant(read_only=True), address="tab")
        assert peer.users("d") == 1
        other = Doc(peer_id=77)
        other.text("t").insert(0, "new")
        assert guest.write(other.export_yjs_update(), {}, _Claims(True)) is Admission.READ_ONLY
        guest.leave()
        guest.leave()  # idempotent
        assert peer.users("d") == 0
        with pytest.raises(DocNotOpenError):
            guest.catch_up(Version())
        assert isinstance(peer.writers, p.WriterRegistry)


def test_errors_are_in_the_tree() -> None:
    for cls in (
        ConnectTimeoutError,
        DocNotOpenError,
        InvalidAuthError,
        MissingDependencyError,
        UnsupportedAddressError,
        UnsupportedTransportError,
    ):
        assert issubclass(cls, CrdtSyncError)
        assert cls.__name__ in sys.modules["crdtsync.errors"].__doc__  # type: ignore[operator]


class _HangingTransport:
    """Keeps message boundaries, and never finishes connecting."""

    abilities = Ability.MESSAGES

    def __init__(self) -> None:
        self.connecting = asyncio.Event()  # set once a connect is under way

    async def connect(self, address: str) -> Any:
        self.connecting.set()
        await asyncio.Event().wait()

    async def listen(self, address: str, handler: Any) -> Listener:
        raise NotImplementedError


@pytest.mark.anyio
async def test_closing_a_provider_while_it_connects_ends_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression: close() cancelled the pending connect and read its result before
    # the cancellation had happened (InvalidStateError), which the old catch-all
    # reported as a failed attempt; now the loop must just end.
    statuses: list[Status] = []
    with caplog.at_level(logging.ERROR, logger="crdtsync"):
        transport = _HangingTransport()
        p = YProvider(Doc(), "ws://hang", "r", transport=transport)
        p.on_status(statuses.append)
        await p.start()
        await asyncio.wait_for(transport.connecting.wait(), STEP)
        await asyncio.wait_for(p.close(), STEP)
    assert p.error is None
    assert not [s for s in statuses if s.kind == "error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
