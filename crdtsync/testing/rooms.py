"""The acceptance suite of the relay's room backends (``crdtsync.relay.backend``).

Every :class:`~crdtsync.relay.backend.RoomBackend` runs it; the default one (a
Peer) does in ``tests/relay/test_backend.py``::

    from crdtsync.relay.backend import peer_backend
    from crdtsync.testing import check_room_backend

    await check_room_backend(peer_backend)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from crdtsync.errors import LimitExceededError, NoSuchDocumentError
from crdtsync.format.version import Version
from crdtsync.format.yupdate import parse_update
from crdtsync.model.doc import Doc
from crdtsync.net import Connection
from crdtsync.peer.guests import Origin
from crdtsync.peer.peer import Grant, HelloInfo, Peer
from crdtsync.peer.policy import Admission
from crdtsync.protocol.awareness import decode_awareness, encode_awareness
from crdtsync.protocol.session import SessionOptions
from crdtsync.protocol.ysession import YSession, YSessionOptions
from crdtsync.relay.backend import BackendFactory, BackendSettings, RoomBackend
from crdtsync.store.memory import MemoryStore
from crdtsync.transports.memory import MemoryNetwork

__all__ = ["check_room_backend"]

_STEP = 10.0  # seconds allowed for any single step


@dataclass
class _Watcher:
    """Records what a backend tells its watcher."""

    updates: list[tuple[str, bytes, Origin]] = field(default_factory=list)
    presences: list[tuple[str, bytes, Origin]] = field(default_factory=list)

    def updated(self, name: str, update: bytes, origin: Origin) -> None:
        self.updates.append((name, update, origin))

    def presence(self, name: str, data: bytes, origin: Origin) -> None:
        self.presences.append((name, data, origin))


def _writes(update: bytes) -> dict[int, int]:
    return dict(parse_update(update).state_vector_after())


def _text(updates: list[bytes]) -> str:
    doc = Doc()
    for update in updates:
        doc.import_yjs_update(update)
    return str(doc.text("t"))


async def check_room_backend(factory: BackendFactory) -> None:
    """Check that a room backend keeps the rules of ``crdtsync.relay.backend``.

    Guests write through the write policy and are heard by watchers once, with
    themselves as origin; what commit() and durable() returned for is in the store; writer ids
    are exclusive between live connections; read-only guests write nothing (a
    Skip struct included) and create no room; presence is capped per connection
    and goes when a guest leaves; a crdtsync session served on a connection
    syncs the room both ways and is the origin of what it writes; rooms in use
    are not unloaded; unwatching stops the calls.

    Args:
        factory: makes a started backend (``Relay(backend=...)`` takes the same).

    Raises:
        AssertionError: with what went wrong.
    """
    store = MemoryStore()

    def authorize(info: HelloInfo) -> Grant:
        return Grant(read_only=info.auth == "reader")

    backend = await factory(
        BackendSettings(
            store=store,
            authorize=authorize,
            options=SessionOptions(),
            compact_every=1000,
            max_send_queue=8 << 20,
        )
    )
    try:
        await _check(backend, store)
    finally:
        await backend.close()


def _session(backend: RoomBackend, *, writer: bool = True) -> YSession:
    options = YSessionOptions(verify_writers=writer, declare_presence=writer)
    return YSession.server(options=options, registry=backend.writers)


async def _check(backend: RoomBackend, store: MemoryStore) -> None:
    watcher = _Watcher()
    unwatch = backend.watch(watcher)

    # A guest writes: admitted, stored on commit, heard once with the guest as origin.
    guest = await backend.join("room", address="guest-1")
    assert "room" in backend.docs(), "join must load the room"
    assert backend.users("room") == 1, "a guest is a user of its room"
    author = Doc(peer_id=1001)
    author.text("t").insert(0, "hi")
    update = author.export_yjs_update()
    session = _session(backend)
    assert guest.write(update, _writes(update), session) is Admission.WRITE
    backend.commit()
    _, failed = await backend.durable()
    assert not failed, f"the write must be stored: {failed}"
    mine = [u for name, u, origin in watcher.updates if name == "room" and origin is guest]
    assert len(mine) == 1, f"a guest's write must be heard once, with the guest as origin: {mine}"
    assert _text(mine) == "hi"
    assert _text([guest.catch_up(Version())]) == "hi", "catch_up must carry the write"
    stored = store.load("room")
    assert stored is not None, "commit() and durable() must have stored the room"
    assert _text([u for _, u in stored.updates]) == "hi", (
        "commit() and durable() must have stored the write"
    )

    # Writer ids: new structs under a live connection's id are refused, and close the writer.
    forger = Doc(peer_id=1001)
    forger.import_yjs_update(update)
    forger.text("t").insert(2, "!")
    forged = forger.export_yjs_update(since=author.version)
    intruder = await backend.join("room", address="guest-2")
    other = _session(backend)
    assert intruder.write(forged, _writes(forged), other) is Admission.FORBIDDEN
    assert other.closed, "a forbidden write closes the writer's session"
    assert _text([guest.catch_up(Version())]) == "hi", "a forbidden write must change nothing"
    # ... and known structs passing through again claim nothing.
    assert intruder.write(update, _writes(update), _session(backend)) in (
        Admission.WRITE,
        Admission.NOTHING_NEW,
    )
    intruder.leave()

    # Read-only guests write nothing; repeating what the room has is not a write.
    reader = await backend.join("room", grant=Grant(read_only=True), address="reader")
    ro = _session(backend, writer=False)
    assert reader.write(forged, {}, ro) is Admission.READ_ONLY
    assert reader.write(update, {}, ro) is Admission.NOTHING_NEW
    assert _text([guest.catch_up(Version())]) == "hi", "a read-only write must change nothing"
    # A Skip struct past the room's clocks writes something (it would be held):
    # refused, never stored.
    skip = bytes([1, 1, 99, 5, 10, 1, 0])  # client 99, clock 5: a Skip of length 1
    assert reader.write(skip, {}, ro) is Admission.READ_ONLY, "a read-only Skip must be refused"
    reader.leave()
    stored = store.load("room")
    assert stored is not None
    assert skip not in [u for _, u in stored.updates], "nothing a reader sends may be stored"
    # ... and a reader never creates a room.
    try:
        await backend.join("nobody-made-this", grant=Grant(read_only=True), address="viewer")
    except NoSuchDocumentError:
        pass
    else:
        raise AssertionError("a read-only join of a missing room must be refused")
    assert store.load("nobody-made-this") is None, "a reader must not create a room"

    # Presence: heard with its origin, capped per connection, gone when the guest leaves.
    data = encode_awareness([(1001, 1, {"user": "a"})])
    guest.apply_presence(data, tuple(decode_awareness(data)))
    assert (("room", data, guest)) in watcher.presences, "presence must be heard with its origin"
    assert guest.present >= 1
    flood = encode_awareness([(5000 + i, 1, {"n": i}) for i in range(300)])
    try:
        guest.apply_presence(flood, tuple(decode_awareness(flood)))
    except LimitExceededError:
        pass
    else:
        raise AssertionError("300 presence states from one guest must be refused")
    before = len(watcher.presences)
    guest.leave()
    gone = watcher.presences[before:]
    assert gone, "a guest leaving must remove its presence"
    assert all(state is None for _, u, _ in gone for _, _, state in decode_awareness(u))
    assert backend.users("room") == 0, "guests that left are not users"

    # A crdtsync session on a served connection syncs both ways, and is the origin.
    await asyncio.wait_for(_check_session(backend, watcher), _STEP)

    # Rooms in use stay; idle ones unload.
    keeper = await backend.join("room")
    assert not await backend.close_doc("room", compact=True, keep=lambda: True)
    assert "room" in backend.docs(), "keep() returning True must keep the room"
    keeper.leave()
    assert await backend.close_doc("room", compact=True, keep=lambda: False)
    assert "room" not in backend.docs(), "close_doc must unload the room"
    stored = store.load("room")
    assert stored is not None
    assert stored.snapshot is not None, "compact=True must fold the log into a snapshot"

    unwatch()
    count = len(watcher.updates)
    late = await backend.join("other")
    author2 = Doc(peer_id=1002)
    author2.text("t").insert(0, "x")
    update2 = author2.export_yjs_update()
    assert late.write(update2, _writes(update2), _session(backend)) is Admission.WRITE
    assert len(watcher.updates) == count, "an unwatched watcher must hear nothing"
    late.leave()


async def _check_session(backend: RoomBackend, watcher: _Watcher) -> None:
    net = MemoryNetwork()
    served: list[Connection] = []

    async def serve(conn: Connection) -> None:
        served.append(conn)
        await backend.serve(conn)

    listener = await net.transport("relay").listen("mem://relay", serve)
    try:
        async with Peer(transport=net.transport("client")) as client:
            doc = await client.open("room")
            await client.connect("mem://relay", timeout=_STEP)
            assert await client.wait_synced("room", timeout=_STEP), "the session did not sync"
            assert str(doc.text("t")) == "hi", "the session must receive the room"
            assert backend.users("room") >= 1, "a session carrying the room is a user"
            doc.text("t").insert(0, "> ")
            assert await client.wait_synced("room", timeout=_STEP)
            (conn,) = served
            theirs = [u for name, u, origin in watcher.updates if name == "room" and origin is conn]
            assert theirs, "a session's write must be heard with its connection as origin"
    finally:
        await listener.close()
