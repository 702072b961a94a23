"""Where the relay's rooms live: the :class:`RoomBackend` seam.

The relay (``crdtsync.relay.server``) only routes connections, checks tokens
and limits, and speaks y-protocols to browsers; the rooms themselves (their
documents, store, crdtsync sessions, presence and writer registry) live in a
backend. The default one is a :class:`~crdtsync.peer.peer.Peer` on the relay's
store (:func:`peer_backend`): ``Peer`` has exactly this public API, nothing
relay-only. Another backend (a cluster sharing rooms through PostgreSQL, say)
implements the same protocol and is given to ``Relay(config, backend=...)``.

Rules an implementation keeps (``crdtsync.testing.check_room_backend`` checks them):

* **Durable first.** An update from a crdtsync session or a guest is stored
  before anything that depends on it leaves: before a session acknowledges it
  and before :meth:`RoomBackend.commit` returns, which the relay calls before
  it sends watchers' updates on.
* **One write policy.** Sessions and guests go through the same read-only and
  writer-id rules (``crdtsync.peer.policy``), with one writer registry
  (:attr:`RoomBackend.writers`) shared by every connection.
* **Watchers hear everything once.** Every transaction of a room (local, from a
  session, from a guest) and every presence update reaches each watcher once,
  with its origin (the guest, the connection given to ``serve``, or None), so
  the relay can send it to every y-protocols client but the one it came from.
* **Rooms stay while used.** A room with a session or guest in it
  (:meth:`RoomBackend.users`) is never unloaded; ``close_doc(keep=...)`` asks
  again just before unloading.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers

from crdtsync.errors import StoreError
from crdtsync.format.version import Version
from crdtsync.model.doc import Doc
from crdtsync.net import Connection
from crdtsync.peer.guests import DocWatcher
from crdtsync.peer.peer import Grant, HelloInfo, Peer, Status
from crdtsync.peer.policy import Admission, WriterCheck
from crdtsync.protocol.awareness import AwarenessChange
from crdtsync.protocol.session import SessionOptions, WriterRegistry
from crdtsync.store.base import Store

__all__ = [
    "BackendFactory",
    "BackendSettings",
    "ClusterHooks",
    "RoomBackend",
    "RoomGuest",
    "on_each_transaction",
    "peer_backend",
]

#: Decoded awareness entries: ``(client id, clock, state or None)``.
Entries = tuple[tuple[int, int, object], ...]


def on_each_transaction(doc: object, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback()`` in each transaction of a room's document.

    ``doc`` is what :meth:`RoomBackend.on_open` gives; the callback runs in the
    transaction itself, before it is stored or passed on.

    Returns:
        A function that unsubscribes.
    """
    if not isinstance(doc, Doc):
        raise TypeError(f"not a crdtsync Doc: {type(doc).__name__}")
    return doc.observe_updates(lambda _update, _origin, _local: callback())


class RoomGuest(Protocol):
    """One y-protocols client in one room (what :meth:`RoomBackend.join` returns).

    :class:`~crdtsync.peer.peer.Guest` is one.
    """

    @property
    def version(self) -> Version:
        """The room's current version (state vector).

        Raises:
            DocNotOpenError: the room was unloaded.
        """
        ...

    @property
    def present(self) -> int:
        """How many presence states the room holds."""
        ...

    def catch_up(self, since: Version) -> bytes:
        """What a replica at ``since`` lacks (the answer to a sync step 1).

        Raises:
            DocNotOpenError: the room was unloaded.
        """
        ...

    def write(
        self,
        update: bytes,
        writes: Mapping[int, int],
        session: WriterCheck,
        *,
        catch_up: bool = False,
    ) -> Admission:
        """Admit (write policy) and import an update the client sent.

        ``catch_up``: it is a sync step 2 (the client's first is its catch-up,
        which a read-only client may send with its whole delete set for free).

        Raises:
            InvalidUpdateError: the update was refused; the room is unchanged.
            StoreError: it could not be stored.
            DocNotOpenError: the room was unloaded, or the guest left.
        """
        ...

    def apply_presence(self, data: bytes, entries: Entries) -> AwarenessChange:
        """Apply a presence update the client sent, and send it on.

        Raises:
            LimitExceededError: more presence states than one connection may bring.
            DocNotOpenError: the room was unloaded, or the guest left.
        """
        ...

    def presence_update(self) -> bytes:
        """Everyone's presence states, as one awareness update."""
        ...

    def leave(self) -> None:
        """The client's connection ended (its presence goes). Idempotent."""
        ...


class RoomBackend(Protocol):
    """Where rooms live: their documents, store, sessions and presence."""

    @property
    def writers(self) -> WriterRegistry:
        """Who owns which client id, shared by every session and guest."""
        ...

    async def close(self) -> None:
        """Close every session (GOING_AWAY), finish compactions, close the store."""
        ...

    async def serve(self, conn: Connection) -> None:
        """Run a crdtsync-protocol session on an accepted connection until it ends.

        The backend's ``authorize`` hook (:class:`BackendSettings`) decides who
        gets in, and what.
        """
        ...

    async def join(self, name: str, *, grant: Grant | None = None, address: str = "") -> RoomGuest:
        """A y-protocols client joins room ``name`` (loaded, or created if the grant may).

        Raises:
            InvalidOperationError: ``name`` is not a valid document name.
            NoSuchDocumentError: ``name`` does not exist and the grant is read-only
                (a reader never creates a room).
            LimitExceededError: ``name`` does not exist and the backend holds as
                many rooms as it may.
            ProtocolError: the grant's ``creating`` hook refused a new room.
            StoreError: the store failed, or holds a corrupt ``name``.
        """
        ...

    def watch(self, watcher: DocWatcher) -> Callable[[], None]:
        """Tell ``watcher`` of every transaction and presence update; returns an unsubscriber."""
        ...

    def on_status(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        """Call ``callback`` on crdtsync sessions' connected / disconnected / error."""
        ...

    def on_open(self, callback: Callable[[str, Doc], None]) -> Callable[[], None]:
        """Call ``callback(name, doc)`` whenever a room is loaded (or replaced)."""
        ...

    def docs(self) -> list[str]:
        """The rooms loaded in memory."""
        ...

    def users(self, name: str) -> int:
        """Sessions and guests in room ``name``."""
        ...

    def doc_size(self, name: str) -> int:
        """What loaded room ``name`` costs, in bytes (0: not loaded).

        Its state when loaded or compacted plus every update stored since.
        """
        ...

    async def close_doc(
        self, name: str, *, compact: bool = False, keep: Callable[[], bool] | None = None
    ) -> bool:
        """Unload room ``name`` (compacted first), unless ``keep()`` says it is in use.

        Raises:
            StoreError: the compaction failed.
        """
        ...

    def commit(self) -> None:
        """Store every update imported and not yet stored (before sending anything on).

        A backend that commits off the event loop does nothing here (see :meth:`durable`).

        Raises:
            StoreError: the store failed; nothing that depends on it may be sent.
        """
        ...

    async def durable(self, since: int = 0) -> tuple[int, dict[str, StoreError]]:
        """Wait until every update imported so far is stored.

        Args:
            since: the mark of a previous call: report failures after it only.

        Returns:
            A mark for the next call, and the rooms whose updates could not be
            stored since ``since`` (``""``: all of them): nothing that carries
            those may be sent.

        Raises:
            StoreError: the store failed (a backend that commits on the loop).
        """
        ...

    def send_queues(self) -> list[int]:
        """Bytes waiting to be sent on each crdtsync session's connection."""
        ...


class ClusterHooks(Protocol):
    """What a relay asks the node of a cluster (``crdtsync.relay.cluster.node.ClusterNode``)."""

    async def route_y(self, ws: ServerConnection, room: str, target: str, address: str) -> bool:
        """Serve a y-protocols client of ``room`` elsewhere if it must be.

        Args:
            ws: the accepted (and authenticated) client connection.
            room: the room.
            target: the request target (path and query, as the client sent them).
            address: the client's address.

        Returns:
            False: this node owns the room, serve the client here. True: the
            connection was served (proxied to the owner, or refused) and is over.
        """
        ...

    def ready(self) -> bool:
        """Whether the node may take traffic (database reachable, lease valid)."""
        ...

    def node_host(self, key: str) -> bool:
        """Whether ``key`` (an address key of a client's host) is a live node of the cluster.

        Its connections skip the per-address admission budgets at accept, until
        :meth:`forwarded_client` says whether they were really proxied.
        """
        ...

    def forwarded_client(self, headers: Headers, room: str) -> str | None:
        """The client address a node proxied into ``room``, if the hop header proves it.

        Returns:
            The forwarded client's ``host:port`` under a valid signed hop header;
            None for anything else (no header, forged, stale, another room).
        """
        ...

    def metrics(self) -> str:
        """The node's own metrics, in Prometheus text format (appended to ``/metrics``)."""
        ...


@dataclass(frozen=True)
class BackendSettings:
    """What the relay gives a backend factory.

    Attributes:
        store: the store of the rooms (a path: SQLite; None: in memory).
        authorize: the relay's hook for crdtsync handshakes (tokens, room names).
        options: session limits (frame and update sizes, handshake timeout, rooms
            per connection).
        compact_every: fold a room's log into its snapshot after this many updates.
        max_send_queue: bytes that may wait to be sent on one session.
        max_room_bytes: size a room may reach through what clients send (None:
            no limit); stored rooms load whatever their size.
        max_rooms: rooms the store may hold before clients may create no more
            (None: no limit).
        import_rate: bytes of updates per second one crdtsync session may make
            the backend parse and import, after decompression (None: no limit);
            past it the session is read more slowly.
        async_commits: commit on the store's worker thread (``durable`` waits
            for it) instead of on the event loop.
    """

    store: Store | str | None
    authorize: Callable[[HelloInfo], bool | Grant]
    options: SessionOptions
    compact_every: int
    max_send_queue: int
    max_room_bytes: int | None = None
    max_rooms: int | None = None
    import_rate: float | None = None
    async_commits: bool = True


#: Makes a started backend from the relay's settings (``Relay(config, backend=...)``).
BackendFactory = Callable[[BackendSettings], Awaitable[RoomBackend]]


async def peer_backend(settings: BackendSettings) -> Peer:
    """The default backend: a started :class:`~crdtsync.peer.peer.Peer` holding every room.

    Rooms are private: it never announces its documents, so a client learns only
    of the rooms it asks for.

    Raises:
        StoreError: the store cannot be opened (``StoreLockedError``: another
            process has it).
    """
    peer = Peer(
        store=settings.store,
        authorize=settings.authorize,
        options=settings.options,
        compact_every=settings.compact_every,
        max_send_queue=settings.max_send_queue,
        announce=False,
        max_doc_bytes=settings.max_room_bytes,
        max_stored_docs=settings.max_rooms,
        import_rate=settings.import_rate,
        async_commits=settings.async_commits,
    )
    return await peer.start()
