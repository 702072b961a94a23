"""The asyncio shell: a Peer owns documents, a store and connections.

A :class:`Peer` moves bytes between transports and :class:`~crdtsync.protocol.session.Session`
objects and reacts to their events by reading and writing documents; the
protocol itself lives in the session. What the shell adds:

* **Durability first.** A local transaction reaches :meth:`Store.append`
  inside the document's update callback, before the editing call returns and
  before it is sent anywhere. Imported updates are *group-committed*: they are
  queued, and one :meth:`Store.append_many` transaction (one fsync) stores every
  update imported since the last one, before any connection sends a byte (each
  writer commits first) and in any case on the next loop iteration. So an ACK or
  a forwarded update always follows the commit of what it covers: an ack really
  means "stored", and a burst of imports costs one fsync, not one each.
* **Forwarding.** An update imported from one session is sent to every other
  session that has the document open (the transaction's own update, which
  pycrdt reduces to what was new: a duplicate produces none, so a mesh does not
  echo). This makes any connected graph of peers converge, not only stars.
* **Reconnection.** ``connect(address)`` keeps the connection up for the Peer's
  lifetime, retrying with capped exponential backoff and jitter, and asking a
  token provider (:mod:`crdtsync.peer.tokens`) for a token at every connection.
  A refusal that retrying cannot fix (a bad or expired token, a wrong room) is
  raised by ``connect`` when it answers the first handshake; later, it stops the
  reconnecting (status ``stopped``), and :meth:`Peer.wait_synced` returns it at once.
* **Compaction.** When a document's log grows past ``compact_every`` updates,
  its state is encoded into a snapshot in a worker thread and
  :meth:`Store.compact` folds the log in one transaction, while edits go on.
* **Guests.** Connections of another protocol (the relay's y-protocols clients)
  take part in a document through :meth:`Peer.join`, which hands out a
  :class:`~crdtsync.peer.guests.Guest`; :meth:`Peer.watch` tells a
  :class:`~crdtsync.peer.guests.DocWatcher` of every transaction and presence
  update, with where it came from, so such a front end can send them on
  (:mod:`crdtsync.peer.guests`). Guests and sessions go through the same write policy
  (:mod:`crdtsync.peer.policy`) and the same writer registry (:attr:`Peer.writers`).

* **Several transports.** The address's scheme picks the transport:
  :meth:`Peer.set_transport` registers one for a scheme (``start_lan`` does for
  ``lan://``), else the Peer's own ``transport=``, else the defaults of
  :mod:`crdtsync.peer.schemes` (``ws://``, ``wss://``). LAN and relay links
  carry the same sessions, so either alone suffices to converge.
* **Identities.** A connection that declares ``Ability.IDENTITY`` proved a key;
  :meth:`Peer.bind_identities` installs who checks what its session may claim
  (its peer id, the client ids it writes under) before the session opens. The
  LAN manager (:meth:`Peer.start_lan`, :mod:`crdtsync.peer.lan`) is one.

Failures of background tasks (a connection's reader or writer, a compaction, a
reconnect loop) are never dropped: they are logged under ``crdtsync.peer`` and
reported as ``error`` statuses. The ``crdtsync.peer`` logger also tells, at DEBUG,
every connection attempt, handshake and reconnect delay; at INFO, connections
made and lost; at WARNING, every refusal (tokens are never logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeAlias
from urllib.parse import urlsplit

from crdtsync.errors import (
    AuthError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CrdtSyncError,
    DocNotOpenError,
    DocumentFullError,
    EpochMismatchError,
    ErrorCode,
    InvalidOperationError,
    InvalidRoomError,
    InvalidUpdateError,
    LimitExceededError,
    LocalProtocolError,
    MissingDependencyError,
    NoSuchDocumentError,
    ProtocolError,
    ReadOnlyError,
    RoomMovedError,
    StoreError,
    TokenExpiredError,
    TransportError,
    UnsupportedAddressError,
    VersionMismatchError,
)
from crdtsync.format import envelope as encoding
from crdtsync.format.version import Version
from crdtsync.format.yupdate import UpdateLimits
from crdtsync.model.doc import Doc
from crdtsync.net import (
    Connection,
    FlowConnection,
    IdentityConnection,
    Listener,
    Transport,
    has_flow_control,
    has_identity,
)
from crdtsync.peer.guests import DocWatcher, Entries, Guest, GuestPort, Origin
from crdtsync.peer.policy import MAX_HELD_PER_SENDER, Admission, Sender, admit
from crdtsync.peer.schemes import check_sync_address, shown_address
from crdtsync.peer.tokens import TokenSource, check_token_source, fetch_token
from crdtsync.protocol import session as p
from crdtsync.protocol.awareness import Awareness, AwarenessChange, state_cost
from crdtsync.protocol.limits import TokenBucket
from crdtsync.store.base import Store, StoredDoc
from crdtsync.store.memory import MemoryStore
from crdtsync.store.worker import StoreWorker

if TYPE_CHECKING:
    from crdtsync.peer.lan import GroupKeyLike, LanManager, LanOptions
    from crdtsync.transports.lan import DeviceIdentity

__all__ = [
    "Backoff",
    "Grant",
    "HelloInfo",
    "IdentityBinder",
    "IdentityCheck",
    "Peer",
    "Status",
    "SyncResult",
]

log = logging.getLogger("crdtsync.peer")

_EPOCH_BYTES = 16

#: Stored state is read under limits of at least this size (or twice
#: ``max_doc_bytes``): a document grows by many updates, each within the
#: session's update limit, and must still load once they are folded together.
STORE_READ_BYTES = 1 << 30


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``min(cap, initial * factor**attempt)``, minus up to ``jitter`` of it.

    Jitter spreads the reconnects of many clients after a server restart.
    """

    initial: float = 0.2
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay before reconnect attempt ``attempt`` (0-based)."""
        base = min(self.cap, self.initial * self.factor ** min(attempt, 64))
        return base * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True)
class HelloInfo:
    """What the ``authorize`` hook sees of a connecting peer."""

    peer_id: int
    #: The decoded CBOR value the peer sent (None, bool, int, float, str,
    #: bytes, tuples and dicts of them): narrow it with ``isinstance``.
    auth: object
    docs: tuple[str, ...]
    address: str


@dataclass(frozen=True)
class Grant:
    """The ``authorize`` hook's answer for an accepted peer.

    Attributes:
        relay: the peer may forward other peers' edits (a trusted mesh peer or
            relay); if False, its updates may only write under client ids it
            owns (see ``WriterRegistry``).
        docs: documents it may open (None: any).
        check: called with each document name the peer opens; raises a
            :class:`ProtocolError` (its code goes to the peer) to refuse it. The
            relay checks room names and token patterns here.
        read_only: the peer may read but not write: its updates are refused with
            :class:`ReadOnlyError` (code READ_ONLY), which closes that document on
            the session; empty updates (a catch-up with nothing new) are accepted.
            It never creates a document: asking for one that does not exist is
            refused (:class:`NoSuchDocumentError`).
        max_refused_updates: updates of the peer that may be refused (read-only,
            a full document, too many waiting for missing changes), and
            read-only updates that needed checking against the document after
            its catch-up, before its connection is closed (None: no limit).
        creating: called with the name of a document that does not exist yet,
            before it is created for the peer; raises a :class:`ProtocolError` to
            refuse (the relay's budget of new rooms).
    """

    relay: bool = False
    docs: frozenset[str] | None = None
    check: Callable[[str], None] | None = None
    read_only: bool = False
    max_refused_updates: int | None = None
    creating: Callable[[str], None] | None = None


@dataclass(frozen=True)
class Status:
    """A connection or document status change, for ``on_status`` callbacks.

    Attributes:
        kind: ``"connected"``, ``"synced"``, ``"disconnected"``, ``"error"``, or
            ``"stopped"``: an outbound connection gave up for good after a refusal
            retrying cannot fix (``error`` says which: ``TokenError``,
            ``TokenExpiredError``, ``AuthError``...); ``connect`` again, with a new
            token, to retry. A refused document is an ``error`` with ``doc`` set
            (``RoomNotAllowedError``, ``ReadOnlyError``, ``InvalidRoomError``).
            The LAN manager adds ``"discovered"`` (a device was announced),
            ``"linked"`` (an authenticated link to it is up), ``"replaced"``
            (its restarted incarnation's link replaced the old one),
            ``"refused"`` (another group key, an identity mismatch, a forged
            writer id, a refused frame, a device off the allow-list) and
            ``"dropped"`` (an address that kept failing).
        address: the remote address (for inbound connections, what the transport
            says of the peer).
        peer_id: the remote peer id, when known.
        doc: the document concerned (``synced`` and document errors).
        reason: a readable reason.
        error: the error, for ``error``, ``refused`` and abnormal ``disconnected``.
        device: the fingerprint of the device's key, when it proved one.
    """

    kind: Literal[
        "connected",
        "synced",
        "disconnected",
        "error",
        "stopped",
        "discovered",
        "linked",
        "replaced",
        "refused",
        "dropped",
    ]
    address: str | None = None
    peer_id: int | None = None
    doc: str | None = None
    reason: str = ""
    error: CrdtSyncError | None = None
    device: str | None = None


#: What a session on an identity connection may claim: called with the peer id
#: and the writer ids its handshake declares, returns what it is granted, and
#: raises a :class:`ProtocolError` (its code goes to the peer) to refuse it.
IdentityCheck: TypeAlias = Callable[[int, tuple[int, ...]], Grant]
#: Called with each connection that declares ``Ability.IDENTITY`` before its
#: session sends a byte; returns the check of its handshake, or raises a
#: :class:`CrdtSyncError` to refuse the connection (it is closed).
IdentityBinder: TypeAlias = Callable[[IdentityConnection], IdentityCheck]


@dataclass(frozen=True)
class SyncResult:
    """What ``wait_synced`` found: synced, or why not.

    True in a boolean context exactly when synced, so ``assert await
    peer.wait_synced("notes", timeout=10)`` and ``if not await ...`` read as they
    always did.

    Attributes:
        synced: the document is in sync.
        reason: why not, in words ("" when synced).
        error: the error behind it, if any: the refusal that made syncing
            impossible (``RoomNotAllowedError``, ``ReadOnlyError``,
            ``TokenExpiredError``...), or the last connection failure.
    """

    synced: bool
    reason: str = ""
    error: CrdtSyncError | None = None

    def __bool__(self) -> bool:
        return self.synced


@dataclass(eq=False)
class _Entry:
    """An open document."""

    name: str
    doc: Doc
    epoch: bytes
    awareness: Awareness
    unsubscribe: Callable[[], None]
    log_count: int = 0  # log entries not yet folded into the snapshot
    last_seq: int = 0  # last log sequence number appended
    compacting: asyncio.Task[None] | None = None
    # What the document costs, in bytes (see Peer(max_doc_bytes=)): its Yjs
    # state when loaded or compacted, plus every update stored since; and the
    # bytes stored since it was loaded (a compaction counts what came meanwhile).
    size: int = 0
    added: int = 0
    # Held updates (waiting for missing changes) by their sender (None: the
    # application's own import); the store keeps them while it is connected.
    held_from: dict[bytes, Sender | None] = field(default_factory=dict)


@dataclass(eq=False)
class _Link:
    """One connection and its session."""

    session: p.Session
    conn: Connection
    address: str
    outbound: bool
    # The connection again if it declares Ability.FLOW (write buffer, abort), else None.
    flow: FlowConnection | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    # Awareness client ids learned through this link, per document.
    presence: dict[str, set[int]] = field(default_factory=dict)
    # Whether the handshake completed; what the authorize hook granted.
    opened: bool = False
    grant: Grant | None = None
    # Set while _process runs: nested calls leave new events to the running loop.
    busy: bool = False
    # What its proven identity lets its session claim (Peer.bind_identities), or None.
    check: IdentityCheck | None = None
    # Catch-up answers not yet sent through, by document: (number, bytes). One
    # answer per document, however large, is not a slow consumer's backlog; only
    # the latest per document counts, so re-opening a document again and again
    # (a client that never reads) does not make every copy exempt.
    catch_ups: dict[str, tuple[int, int]] = field(default_factory=dict)
    catch_up_seq: int = 0
    # Its budgets under the write policy (refusals, held updates).
    sender: Sender = field(default_factory=Sender)
    # Bytes of updates it may make us parse and import (Peer(import_rate=)), and
    # how many of its session's update bytes were charged; set when it closes.
    imports: TokenBucket | None = None
    charged: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # Outbound, before connect() is answered: the documents offered in the handshake
    # whose answer (the server's SYNC or DOC_ERROR) has not come yet.
    awaiting: set[str] | None = None
    # Documents the peer refused on this session (a token for another room, a
    # read-only grant...), by name: why they cannot sync here (wait_synced).
    refusals: dict[str, ProtocolError] = field(default_factory=dict)
    # Documents another node of a relay cluster serves (RoomMovedError), by name:
    # its URL. Offered here again when some connection closes (a failover).
    moved: dict[str, str] = field(default_factory=dict)
    moved_tries: dict[str, int] = field(default_factory=dict)

    @property
    def catch_up(self) -> int:
        """Bytes exempt from the send-queue limit."""
        return sum(size for _, size in self.catch_ups.values())


class _Supervisor:
    """An outbound connection kept up by reconnecting."""

    def __init__(
        self,
        address: str,
        auth: object,
        token: TokenSource | None,
        transport: Transport[Connection],
    ) -> None:
        self.address = address
        # For messages and logs: without a query (it may hold a token).
        self.shown = shown_address(address)
        # Sent in the handshake when there is no token.
        self.auth = auth
        # A token or token provider, asked before every attempt (None: send auth).
        self.token = token
        self.transport = transport
        self.link: _Link | None = None
        self.task: asyncio.Task[None] | None = None
        # The answer to connect(): None once the first handshake since the token
        # was set is done and the server answered every document offered in it;
        # else the error connect() raises (a refusal).
        self.first: asyncio.Future[BaseException | None] = _new_future()
        # Bumped when connect() replaces the token: an attempt under an older one is dropped.
        self.generation = 0
        # Set to cut the backoff sleep short (a new token).
        self.wake = asyncio.Event()
        # Attempts since the last handshake (the backoff's exponent).
        self.attempt = 0
        # Why the last attempt failed (ConnectTimeoutError, wait_synced).
        self.last_error: CrdtSyncError | None = None
        self.last_reason = ""


def _new_future() -> asyncio.Future[BaseException | None]:
    """A future on the running loop (the outcome of a first handshake)."""
    return asyncio.get_running_loop().create_future()


class Peer:
    """A replica of many documents: stored durably, synced over connections.

    Example::

        async with Peer(store="notes.db", transport=net.transport("laptop")) as peer:
            doc = await peer.open("shopping")
            doc.list("items").append("milk")        # stored before anything else happens
            await peer.connect("mem://server")
            await peer.wait_synced("shopping", timeout=10)

    Args:
        store: a path (SQLite store, the default kind), a :class:`Store`, or None
            (in memory).
        transport: what ``connect`` and ``listen`` use. Without one, the
            address's scheme picks it (as httpx picks a transport by URL):
            ``ws://`` and ``wss://`` a ``WebSocketTransport`` (the
            ``crdtsync[websocket]`` extra); ``mem://`` addresses need an
            explicit ``MemoryNetwork(...).transport(host)``.
        peer_id: writer id of this peer's documents (random per Peer by default:
            a fresh id per process is the Yjs convention and can never collide
            with an earlier run's edits).
        auth: payload sent in our handshakes, for the server's ``authorize`` hook:
            a CBOR value (None, bool, int, float, str, bytes, lists and dicts of them).
        authorize: server side: ``hook(HelloInfo) -> bool | Grant`` (True means
            ``Grant()``); False or raising :class:`AuthError` refuses the peer.
            Default: accept everyone, without relay rights.
        share: ``hook(doc_name, peer_id) -> bool``: whether to open a document a
            peer asks for and offer ours to it (default: share everything).
        options: session limits and timers.
        backoff: reconnect delays.
        compact_every: fold a document's log into a snapshot after this many updates.
        max_send_queue: bytes that may wait to be sent on one connection (frames
            the session queued plus the transport's write buffer, if it reports
            ``buffered_amount``); a peer that reads slower than that is a slow
            consumer: its connection is aborted and it resyncs when it reconnects,
            instead of growing our memory. None: no limit.
        announce: offer every open document to every connected peer (a mesh of
            replicas). False: only answer the documents a peer asks for, so a
            server never tells a client which other documents exist (the relay).
        max_doc_bytes: the size a document may reach through what peers send
            (its Yjs state, plus what was stored since it was last measured: about
            both its memory and its disk). A document at the limit refuses
            updates that add to it (:class:`DocumentFullError`; the update that
            crosses it is accepted). None: no limit. Stored state is read under
            limits of at least :data:`STORE_READ_BYTES` or twice this, never
            under the per-update limit of ``options``.
        max_stored_docs: documents the store may hold before peers may not
            create more (:class:`LimitExceededError`); the application's own
            ``open`` is never refused. None: no limit.
        import_rate: bytes of updates per second one connection may make us
            parse and import, counted after decompression (a compressed frame
            carries up to ``max_update_bytes``), after a burst of twice
            ``max_update_bytes``; past it the connection is read more slowly.
            None: no limit.
        seed: seed of the jitter and epoch generator (tests).
        async_commits: commit on a worker thread
            (:class:`~crdtsync.store.worker.StoreWorker`, group commit) instead of
            on the event loop: a commit no longer stalls every connection (a
            server on a networked store, such as a relay cluster node on
            PostgreSQL). Frames that acknowledge or forward updates still leave
            only once those are stored; a local edit is durable once ``await
            flush()`` returns, not when the edit call returns.

    Raises:
        InvalidAuthError: ``auth`` cannot travel in a handshake (also a ValueError).
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = None,
        *,
        transport: Transport[Connection] | None = None,
        peer_id: int | None = None,
        auth: object = None,
        authorize: Callable[[HelloInfo], bool | Grant] | None = None,
        share: Callable[[str, int], bool] | None = None,
        options: p.SessionOptions | None = None,
        backoff: Backoff | None = None,
        compact_every: int = 1000,
        max_send_queue: int | None = None,
        announce: bool = True,
        max_doc_bytes: int | None = None,
        max_stored_docs: int | None = None,
        import_rate: float | None = None,
        seed: int | None = None,
        async_commits: bool = False,
    ) -> None:
        p.check_auth(auth)  # now, not in a reconnect loop in the background
        # Where documents live; we close it only if we opened it.
        self._owns_store = not isinstance(store, Store)
        self._store_spec = store
        # A path is opened by start() (it takes the file lock); until then, and for
        # store=None, documents live in memory.
        self._store: Store = store if isinstance(store, Store) else MemoryStore()
        self._transport = transport
        # Transports picked by address scheme (no transport given), made on first use.
        self._default_transports: dict[str, Transport[Connection]] = {}
        # Transports registered for a scheme (set_transport): they win over both.
        self._scheme_transports: dict[str, Transport[Connection]] = {}
        # Who checks sessions on identity connections (bind_identities), and the LAN.
        self._binder: IdentityBinder | None = None
        self._lan: LanManager | None = None
        self.peer_id: int = peer_id if peer_id is not None else 1 + secrets.randbelow(2**53 - 2)
        self._auth = auth
        self._authorize = authorize
        self._share = share
        self._options = options or p.SessionOptions()
        self._max_doc_bytes = max_doc_bytes
        self._max_stored_docs = max_stored_docs
        self._import_rate = import_rate
        # Documents in the store (counted at start when max_stored_docs is set).
        self._stored_docs = 0
        # Limits of the documents themselves: what one update may be is the
        # sessions' to enforce (options.limits); a document is larger.
        self._doc_limits = document_limits(self._options.limits, max_doc_bytes)
        self._backoff = backoff or Backoff()
        self._compact_every = compact_every
        self._max_send_queue = max_send_queue
        # Imported updates waiting for the group commit, oldest first.
        self._pending: list[tuple[_Entry, bytes]] = []
        self._commit_handle: asyncio.Handle | None = None
        # With async_commits: the worker thread that commits (made by start()).
        self._async_commits = async_commits
        self._worker: StoreWorker | None = None
        self._failures_seen = 0  # the last worker failure handled (_not_stored)
        # Relay cluster nodes connected to because a room moved there (ROOM_MOVED).
        self._followed: set[str] = set()
        self._announce = announce
        self._rng = random.Random(seed)
        self._registry = p.WriterRegistry()
        self._docs: dict[str, _Entry] = {}
        self._links: set[_Link] = set()
        self._supervisors: dict[str, _Supervisor] = {}
        # Addresses given up on after a refusal retrying cannot fix, and why.
        self._stopped: dict[str, CrdtSyncError] = {}
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._status_cbs: list[Callable[[Status], None]] = []
        self._presence_cbs: list[Callable[[str, AwarenessChange], None]] = []
        # Told of every document opened, or replaced by a peer's incarnation.
        self._open_cbs: list[Callable[[str, Doc], None]] = []
        # Guests by document, and who is told of every transaction and presence update.
        self._guests: dict[str, set[Guest]] = {}
        self._watchers: list[DocWatcher] = []
        self._guest_port = GuestPort(
            doc=lambda name: self._entry(name).doc,
            full=lambda name: self._full(self._entry(name)),
            awareness=lambda name: self._entry(name).awareness,
            import_update=lambda name, update, guest: self._import(
                self._entry(name), update, guest
            ),
            take_presence=lambda name, own, data, entries, guest: self._take_presence(
                self._entry(name), own, data, entries, guest
            ),
            leave=self._guest_left,
        )
        self._changed = asyncio.Event()
        self._presence_timer: asyncio.TimerHandle | None = None
        self._presence_when = 0.0  # when it fires
        self._started = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Peer:
        """Open the store (``async with`` does this)."""
        if not self._started:
            # Edits may happen outside a running loop (from synchronous code):
            # timers and tasks go to this loop then.
            self._loop = asyncio.get_running_loop()
            if self._owns_store and self._store_spec is not None:
                from crdtsync.store.sqlite import SQLiteStore

                assert not isinstance(self._store_spec, Store)
                self._store = SQLiteStore(self._store_spec)
            if self._async_commits:
                self._worker = StoreWorker(self._store)
            if self._max_stored_docs is not None:
                self._stored_docs = len(self._store.names())
            self._started = True
        return self

    async def __aenter__(self) -> Peer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection (GOING_AWAY), finish compactions, close the store."""
        if self._closed:
            return
        if self._lan is not None:
            await self._lan.stop_linking()  # no new LAN link; the open ones close below
        self._closed = True
        for lst in self._listeners:
            await lst.close()
        for link in list(self._links):
            link.session.close(ErrorCode.GOING_AWAY, "peer closing")
            self._process(link)
        # Let writers send the CLOSE frames and the reader loops end.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while self._links and loop.time() < deadline:
            changed = self._changed
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that races with the wait finishing (CPython gh-86296).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - loop.time()):
                    await changed.wait()
        if self._lan is not None:
            await self.stop_lan()  # discovery's goodbye, listeners
        # Compactions finish (their thread would run on anyway, and the store must
        # not close under it); everything else is cancelled. A task's failure was
        # logged and reported when it ended (_task_done): here it is only awaited.
        compactions = {e.compacting for e in self._docs.values() if e.compacting is not None}
        await asyncio.gather(*compactions, return_exceptions=True)
        for sup in self._supervisors.values():
            if not sup.first.done():  # a connect() still waiting: it ends now
                sup.first.set_result(ConnectionClosedError("the peer closed before the handshake"))
            if sup.task is not None:
                sup.task.cancel()
        for task in list(self._tasks):
            if not task.done() and task not in compactions:
                task.cancel()
        await asyncio.gather(
            *self._tasks,
            *(s.task for s in self._supervisors.values() if s.task),
            return_exceptions=True,
        )
        for entry in self._docs.values():
            entry.unsubscribe()
        if self._presence_timer is not None:
            self._presence_timer.cancel()
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        try:
            if self._worker is not None:
                await self._worker.close()  # what is queued is stored first
            self.commit()  # whatever was imported and not yet stored
        finally:
            if self._owns_store:
                self._store.close()

    # -- documents ---------------------------------------------------------------------

    async def open(self, name: str, *, epoch: bytes | None = None) -> Doc:
        """Open (loading from the store, or creating) document ``name``.

        Local edits of the returned document are stored as they are made and
        sent to every connected peer sharing it.

        Args:
            name: the document name.
            epoch: the incarnation to hold. If the store has another one, the
                local copy is replaced by an empty document of this epoch (to join
                an incarnation a peer reported after a delete, see ``delete``).

        Raises:
            StoreError: the store failed or holds a corrupt document.
            InvalidOperationError: ``name`` is empty or longer than the protocol
                allows (1,024 UTF-8 bytes): no peer could ever sync it.
        """
        self._check_open()
        _check_name(name)
        entry = self._docs.get(name)
        if entry is not None and (epoch is None or epoch == entry.epoch):
            return entry.doc
        if entry is not None:
            self._forget(entry)
        return self._open_sync(name, epoch).doc

    async def delete(self, name: str) -> None:
        """Delete document ``name``: replace it by an empty one of a new epoch.

        The empty new incarnation stays in the store as the tombstone: a later
        ``open(name)`` continues it, and peers that still hold the old incarnation
        get an epoch mismatch instead of merging the deleted content back (the
        Jupyter duplicated-cells bug). A ``Doc`` obtained before is detached.
        """
        self._check_open()
        entry = self._docs.get(name)
        if entry is not None:
            self._forget(entry)
        self._store.create(name, bytes(self._rng.getrandbits(8) for _ in range(_EPOCH_BYTES)))
        self._open_sync(name, None)

    def docs(self) -> list[str]:
        """Names of the open documents."""
        return sorted(self._docs)

    def doc_size(self, name: str) -> int:
        """What open document ``name`` costs, in bytes (0 when it is not open).

        Its Yjs state when it was loaded or last compacted, plus every update
        stored since (the size ``max_doc_bytes`` limits).
        """
        entry = self._docs.get(name)
        return entry.size if entry is not None else 0

    def epoch(self, name: str) -> bytes:
        """The epoch (incarnation) of open document ``name``.

        Raises:
            DocNotOpenError: ``name`` is not open (also a KeyError).
        """
        return self._entry(name).epoch

    def _entry(self, name: str) -> _Entry:
        entry = self._docs.get(name)
        if entry is None:
            raise DocNotOpenError(f"document {name!r} is not open")
        return entry

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("the peer is closed")
        if not self._started:
            raise LocalProtocolError("the peer is not started: use `async with Peer(...)`")

    def _open_sync(
        self, name: str, epoch: bytes | None, *, stored: StoredDoc | None = None
    ) -> _Entry:
        """Load (or create) ``name``; ``stored``: what the store holds, read just before."""
        self.commit()  # the store is read (and maybe replaced) below
        if stored is None:
            stored = self._store.load(name)
        if stored is None or (epoch is not None and stored.epoch != epoch):
            if stored is None:
                self._stored_docs += 1
            ep = b"" if epoch is None else bytes(epoch)
            self._store.create(name, ep)
            stored = StoredDoc(ep)
        # Stored state is read under the document's limits, not the per-update
        # ones: a room that grew by many updates must load again (issue 18, 1).
        limits = self._doc_limits
        try:
            doc = (
                Doc.load(stored.snapshot, peer_id=self.peer_id, limits=limits)
                if stored.snapshot is not None
                else Doc(peer_id=self.peer_id, limits=limits)
            )
            for _, update in stored.updates:
                doc.import_yjs_update(update)
        except InvalidUpdateError as exc:
            raise StoreError(f"document {name!r} in the store is corrupt: {exc}") from exc
        entry = _Entry(name, doc, stored.epoch, Awareness(self.peer_id), lambda: None)
        entry.log_count = len(stored.updates)
        entry.last_seq = stored.updates[-1][0] if stored.updates else 0
        if self._max_doc_bytes is not None and (stored.snapshot or stored.updates):
            entry.size = len(doc.export_yjs_update()) + sum(map(len, doc.held_updates()))
        entry.unsubscribe = doc.observe_updates(partial(self._on_doc_update, entry))
        self._docs[name] = entry
        for cb in list(self._open_cbs):
            cb(name, doc)
        for link in list(self._links):
            if (
                link.session.state is p.State.OPEN
                and (self._announce or link.session.doc_state(name) is p.DocState.REMOTE)
                and self._shares(name, link)
            ):
                state = link.session.doc_state(name)
                if state in (p.DocState.NONE, p.DocState.CLOSED, p.DocState.REMOTE):
                    link.session.open_doc(name, entry.epoch, doc.version)
                    self._process(link)
        self._notify()
        return entry

    def _forget(self, entry: _Entry, *, asking: _Link | None = None) -> None:
        """Drop our incarnation of a document (we adopt a peer's instead).

        Args:
            entry: the document.
            asking: the link whose request made us adopt: its channel is still
                waiting for our answer (which opens it on the new incarnation),
                so it is not refused with the others.
        """
        # Its queued imports belong to this incarnation: store them before a new
        # one may replace it in the store.
        self.commit()
        entry.unsubscribe()
        if entry.compacting is not None:
            entry.compacting.cancel()
        del self._docs[entry.name]
        for link in list(self._links):
            if link is asking and link.session.doc_state(entry.name) is p.DocState.REMOTE:
                continue
            link.session.refuse_doc(
                entry.name, ProtocolError("document closed", code=ErrorCode.DOC_REFUSED)
            )
            self._process(link)

    def _shares(self, name: str, link: _Link) -> bool:
        if self._share is None:
            return True
        return bool(self._share(name, link.session.peer_id or 0))

    def _on_doc_update(self, entry: _Entry, update: bytes, origin: object, local: bool) -> None:
        """Every transaction of an open document: store it, then send it on."""
        if self._docs.get(entry.name) is not entry:
            return
        if local and self._worker is not None:
            self._submit(entry, update)
        elif local:
            # Durable before the edit call returns: a raise here reaches the editor.
            # Imports queued before it are committed first, so the log keeps order.
            self.commit()
            entry.last_seq = self._store.append(entry.name, update)
            entry.log_count += 1
            entry.size += len(update)
            entry.added += len(update)
        else:
            self._defer(entry, update)
        for link in list(self._links):
            if link is not origin and link.session.send_update(entry.name, update):
                self._kick(link)
        if entry.log_count >= self._compact_every and entry.compacting is None and not self._closed:
            entry.compacting = self._spawn(self._compact(entry), f"compaction of {entry.name!r}")
        if self._watchers:
            source = _origin(origin)
            for watcher in list(self._watchers):
                watcher.updated(entry.name, update, source)
        self._notify()

    def import_update(self, name: str, update: bytes) -> None:
        """Import a raw Yjs update that arrived outside the sessions into open document ``name``.

        Unlike ``doc.import_yjs_update``, an update held back for a missing
        predecessor is stored too (no transaction happens for it, so nothing else
        would store it). It is stored, or queued for the group commit, before
        this returns, and sent to every session carrying the document.

        Raises:
            InvalidUpdateError: the update was refused (nothing changed).
            StoreError: it could not be stored.
            DocNotOpenError: ``name`` is not open (also a KeyError).
        """
        self._import(self._entry(name), update, None)

    def _import(self, entry: _Entry, update: bytes, origin: _Link | Guest | None) -> None:
        doc = entry.doc
        held = doc.pending
        doc.import_yjs_update(update, origin=origin)
        if doc.pending > held:
            # Held until its predecessors arrive: no transaction stores it, yet
            # the caller is about to acknowledge it. The log keeps it (replaying
            # holds it again) and compaction snapshots keep held updates while
            # their sender is connected: nothing a peer sends is held forever.
            sender = _sender(origin)
            previous = entry.held_from.get(update)
            if previous is not None:
                previous.held -= 1  # the same bytes again: one of them counts
            entry.held_from[update] = sender
            if sender is not None:
                sender.held += 1
            self._defer(entry, update)
        elif doc.pending < held and entry.held_from:
            self._released(entry)

    def _released(self, entry: _Entry) -> None:
        """Held updates were applied (or dropped): their senders may send more such."""
        still = set(entry.doc.held_updates())
        for update, sender in list(entry.held_from.items()):
            if update not in still:
                del entry.held_from[update]
                if sender is not None:
                    sender.held -= 1

    def _defer(self, entry: _Entry, update: bytes) -> None:
        """Queue an imported update for the next group commit."""
        if self._worker is not None:
            self._submit(entry, update)
            return
        self._pending.append((entry, update))
        entry.log_count += 1
        entry.size += len(update)
        entry.added += len(update)
        if self._commit_handle is None and not self._closed:
            self._commit_handle = self._get_loop().call_soon(self._commit_soon)

    def _submit(self, entry: _Entry, update: bytes) -> None:
        """Queue an update on the store worker (async_commits)."""
        assert self._worker is not None
        entry.log_count += 1
        entry.size += len(update)
        entry.added += len(update)
        self._worker.submit(entry.name, update, on_stored=partial(_stored, entry))

    async def durable(self, since: int = 0) -> tuple[int, dict[str, StoreError]]:
        """Wait until every update imported or made so far is stored.

        Args:
            since: the mark of a previous call: report failures after it only.

        Returns:
            A mark for the next call, and the documents whose updates could not
            be stored since ``since`` (with why): nothing that forwards those
            may be sent. Without ``async_commits`` the commit is made now and a
            failure raises instead.

        Raises:
            StoreError: the store failed (without ``async_commits``).
        """
        if self._worker is None:
            self.commit()
            return 0, {}
        ticket = self._worker.ticket
        failures = await self._worker.durable(ticket, since=since)
        new = [f for f in failures if f.ticket > self._failures_seen]
        if new:
            # Once per failure, whoever asks first.
            self._failures_seen = max(f.ticket for f in new)
            self._not_stored({f.name for f in new})
        return ticket, {f.name: f.error for f in failures}

    def _not_stored(self, names: set[str]) -> None:
        """Updates of ``names`` could not be stored (async_commits): drop those documents.

        The copy in memory holds updates the store lacks; the peers that sent
        them hold them too. Every session carrying such a document is closed
        and the document is unloaded, so that the peers' resends, at their
        reconnection, are imported into a fresh load and stored again.
        """
        for link in list(self._links):
            s = link.session
            if s.state is not p.State.CLOSED and any(
                not name or s.doc_state(name) is not p.DocState.NONE for name in names
            ):
                s.close(ErrorCode.INTERNAL_ERROR, "an update could not be stored")
                self._process(link)
        for name in names:
            entry = self._docs.get(name) if name else None
            if entry is not None:
                self._forget(entry)
            elif not name:
                for other in list(self._docs.values()):
                    self._forget(other)

    def _commit_soon(self) -> None:
        self._commit_handle = None
        try:
            self.commit()
        except StoreError as exc:
            # Nothing that depends on the batch is sent while it is not stored
            # (every writer commits first and fails the same way).
            self._status(Status("error", reason=str(exc), error=exc))

    def commit(self) -> None:
        """Store every imported update still queued for the group commit, now.

        Called before anything is sent, so applications rarely need it (see
        :meth:`flush`). On failure the batch stays queued: nothing that depends
        on it can be sent until a commit succeeds.

        With ``async_commits`` the worker commits on its own: this does nothing
        (``await durable()`` waits for it).

        Raises:
            StoreError: the store failed.
        """
        if not self._pending:
            return
        # append_many is all or nothing: on failure the batch stays queued.
        seqs = self._store.append_many([(e.name, u) for e, u in self._pending])
        batch, self._pending = self._pending, []
        for (entry, _), seq in zip(batch, seqs, strict=True):
            entry.last_seq = max(entry.last_seq, seq)

    async def _compact(self, entry: _Entry) -> None:
        try:
            # The state and the log position are taken together, synchronously: the
            # snapshot holds exactly the log up to `upto` (held updates included).
            # (With the worker, updates queued during the wait are in the state but
            # past `upto`: replayed again at load, which is harmless.)
            if self._worker is not None:
                await self._worker.durable(self._worker.ticket)
            self.commit()
            update = entry.doc.export_yjs_update()
            # A held update whose sender left is not kept: its sender would have
            # had to complete it (it re-sends what we lack when it reconnects).
            # Held updates read from the store have no sender here: dropped too.
            senders = entry.held_from
            held = [
                u
                for u in entry.doc.held_updates()
                if u in senders and ((sender := senders[u]) is None or not sender.gone)
            ]
            upto, count, added = entry.last_seq, entry.log_count, entry.added
            snapshot = await asyncio.to_thread(
                encoding.pack, update, compact=True, snapshot=True, held=held
            )
            await asyncio.to_thread(self._store.compact, entry.name, snapshot, upto)
            entry.log_count -= count
            entry.size = len(update) + sum(map(len, held)) + entry.added - added
        finally:
            entry.compacting = None

    async def flush(self) -> None:
        """Return when every change made before the call is durable in the store.

        Appends are synchronous (a change is stored before the edit call returns),
        so this only waits for running compactions, which leaves the store in
        its smallest form. With ``async_commits`` it first waits for the worker.

        Raises:
            StoreError: an update made or imported before the call could not be stored.
        """
        if self._worker is not None:
            _, failed = await self.durable()
            if failed:
                name, err = next(iter(failed.items()))
                raise StoreError(f"{name!r} could not be stored: {err}")
        self.commit()
        for entry in list(self._docs.values()):
            if entry.compacting is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(entry.compacting)

    # -- presence ----------------------------------------------------------------------

    def presence(self, name: str) -> Awareness:
        """The awareness (presence) states of open document ``name``.

        Raises:
            DocNotOpenError: ``name`` is not open (also a KeyError).
        """
        return self._entry(name).awareness

    def set_presence(self, name: str, state: Any) -> None:
        """Publish our presence state for ``name`` (None: we left).

        Raises:
            DocNotOpenError: ``name`` is not open (also a KeyError).
        """
        entry = self._entry(name)
        data = entry.awareness.set_local_state(state, now=self._now())
        self._broadcast_presence(name, data, None)
        self._schedule_presence(name)

    def on_open(self, callback: Callable[[str, Doc], None]) -> Callable[[], None]:
        """Call ``callback(name, doc)`` whenever a document is opened or replaced.

        A document is replaced when this peer's copy was empty and a peer holds
        another incarnation of it (it was deleted and re-created there): the Peer
        adopts theirs, and ``doc`` is the new :class:`Doc` to edit from then on.
        An editor bound to a document re-binds here.

        Returns:
            A function that unsubscribes.
        """
        self._open_cbs.append(callback)
        return lambda: self._open_cbs.remove(callback) if callback in self._open_cbs else None

    def on_presence(self, callback: Callable[[str, AwarenessChange], None]) -> Callable[[], None]:
        """Call ``callback(doc_name, change)`` when remote presence changes."""
        self._presence_cbs.append(callback)
        return lambda: (
            self._presence_cbs.remove(callback) if callback in self._presence_cbs else None
        )

    def _broadcast_presence(self, name: str, data: bytes, origin: _Link | Guest | None) -> None:
        for link in list(self._links):
            if link is not origin and link.session.send_awareness(name, data):
                self._kick(link)
        if self._watchers:
            source = _origin(origin)
            for watcher in list(self._watchers):
                watcher.presence(name, data, source)

    def _take_presence(
        self, entry: _Entry, own: set[int], data: bytes, entries: Entries, origin: _Link | Guest
    ) -> AwarenessChange:
        """Apply presence from a session or a guest owning the states ``own``; send it on.

        One connection that connected to us (or a guest) may bring at most
        MAX_PRESENCE_PER_CONNECTION states costing MAX_PRESENCE_BYTES_PER_CONNECTION
        together, counted before applying: a message naming thousands of new
        clients is refused whole instead of flooding everyone and then being
        undone. A server we connected to is not capped so (a relay forwards a
        whole room's presence; the room's own budget bounds it).

        Raises:
            LimitExceededError: over that limit (nothing applied).
        """
        # The server we connected to forwards a whole room's presence (bounded
        # by the room's own budget); the per-connection caps are for those who
        # connected to us, and for guests.
        capped = not (isinstance(origin, _Link) and origin.outbound)
        if capped and not presence_fits(own, entries, entry.awareness):
            raise LimitExceededError(
                f"more than {MAX_PRESENCE_PER_CONNECTION} presence states, or "
                f"{MAX_PRESENCE_BYTES_PER_CONNECTION} bytes of them, on {entry.name!r}"
            )
        change = entry.awareness.apply_entries(list(entries), now=self._now())
        # Only states this connection changed are its own: a state it merely
        # echoes (y-websocket re-sends every change it hears) stays its author's,
        # and must not vanish when the echoing connection closes.
        own.update(c for c in change.added + change.updated if c != self.peer_id)
        own.difference_update(change.removed)
        if change:
            self._broadcast_presence(entry.name, data, origin)
            self._presence_changed(entry.name, change)
        self._schedule_presence(entry.name)
        return change

    def _remove_presence(self, name: str, clients: set[int], origin: _Link | Guest) -> None:
        """Remove the presence states of ``clients`` (their connection ``origin`` ended)."""
        entry = self._docs.get(name)
        if entry is None:
            return
        change = entry.awareness.remove(clients, now=self._now())
        if change:
            self._broadcast_presence(name, entry.awareness.encode_update(change.removed), origin)
            self._presence_changed(name, change)

    # -- guests ------------------------------------------------------------------------

    async def join(self, name: str, *, grant: Grant | None = None, address: str = "") -> Guest:
        """Let a connection of another protocol take part in document ``name``.

        For front ends that speak another protocol to their clients (the relay's
        y-protocols endpoint): the document is opened (loaded or created) if it
        is not, and the :class:`Guest` returned reads, writes and shares presence
        in it until it leaves. Pair it with :meth:`watch` to hear what to send
        the guest's client.

        Args:
            name: the document.
            grant: what the guest may do (default: read and write).
            address: who it is, for logs.

        Raises:
            LocalProtocolError: the peer is closed or not started.
            InvalidOperationError: ``name`` is not a valid document name.
            NoSuchDocumentError: ``name`` does not exist and ``grant`` is read-only.
            LimitExceededError: ``name`` does not exist and the store holds
                ``max_stored_docs`` documents.
            ProtocolError: ``grant.creating`` refused to create ``name``.
            StoreError: the store failed (or holds a corrupt ``name``).
        """
        grant = grant or Grant()
        self._check_open()
        _check_name(name)
        if name not in self._docs:
            stored = self._store.load(name)
            if stored is None:
                self._may_create(name, grant)
            self._open_sync(name, None, stored=stored)
        guest = Guest(self._guest_port, name, grant, address)
        self._guests.setdefault(name, set()).add(guest)
        return guest

    def _guest_left(self, guest: Guest) -> None:
        guests = self._guests.get(guest.name)
        if guests is not None:
            guests.discard(guest)
            if not guests:
                del self._guests[guest.name]
        if guest.clients:
            self._remove_presence(guest.name, guest.clients, guest)
            guest.clients.clear()

    def watch(self, watcher: DocWatcher) -> Callable[[], None]:
        """Tell ``watcher`` of every transaction and presence update, with its origin.

        Returns:
            A function that unsubscribes.
        """
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    @property
    def writers(self) -> p.WriterRegistry:
        """Which live connection owns which client id, shared by every session and guest."""
        return self._registry

    def users(self, name: str) -> int:
        """How many live sessions and guests carry document ``name``."""
        return len(self._guests.get(name, ())) + sum(
            1
            for link in self._links
            if link.session.state is not p.State.CLOSED
            and link.session.doc_state(name) not in (p.DocState.NONE, p.DocState.CLOSED)
        )

    async def close_doc(
        self, name: str, *, compact: bool = False, keep: Callable[[], bool] | None = None
    ) -> bool:
        """Unload document ``name`` from memory (it stays in the store).

        Sessions carrying it get a DOC_REFUSED for it; a later ``open`` or a
        peer asking for it loads it again. A pending compaction is finished first.

        Args:
            name: the document.
            compact: fold its update log into the snapshot first (a relay does
                this for idle rooms, so a reload reads one snapshot).
            keep: asked after the compaction, just before unloading: True keeps
                the document loaded (someone started using it meanwhile, e.g. a
                peer that asked for it while the compaction ran).

        Returns:
            Whether the document was unloaded (False: ``keep`` kept it).

        Raises:
            StoreError: the compaction failed (the document is unloaded anyway,
                unless ``keep`` keeps it).
        """
        entry = self._docs.get(name)
        if entry is None:
            return True
        if entry.compacting is not None:
            # Wait for it, whatever its outcome: its failure goes to whoever started
            # it (a spawned compaction reports it on status, see _task_done).
            await asyncio.wait({entry.compacting})
        try:
            if compact and entry.log_count and self._docs.get(name) is entry:
                entry.compacting = asyncio.ensure_future(self._compact(entry))
                await asyncio.shield(entry.compacting)
        finally:
            # No await between the check and _forget: nobody can join in between.
            kept = self._docs.get(name) is entry and keep is not None and keep()
            if self._docs.get(name) is entry and not kept:
                self._forget(entry)
        return not kept

    def _presence_changed(self, name: str, change: AwarenessChange) -> None:
        if change:
            for cb in list(self._presence_cbs):
                cb(name, change)

    def _schedule_presence(self, name: str | None = None) -> None:
        """Arm the presence timer; with ``name``, only that document's changed.

        One document changing can only bring the timer earlier, so a presence
        message costs that document's next deadline, not a scan of every room
        (a timer that fires early does nothing and re-arms).
        """
        entry = self._docs.get(name) if name is not None else None
        if entry is not None and self._presence_timer is not None:
            when = entry.awareness.get_timer()
            if when is None or when >= self._presence_when:
                return
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        timers = [t for e in self._docs.values() if (t := e.awareness.get_timer()) is not None]
        if timers and not self._closed:
            when = min(timers)
            self._presence_when = when
            self._presence_timer = self._get_loop().call_at(when, self._presence_tick, when)

    def _presence_tick(self, when: float) -> None:
        self._presence_timer = None
        now = max(self._now(), when)  # see _on_timer
        for name, entry in self._docs.items():
            renew, change = entry.awareness.handle_timer(now)
            if renew is not None:
                self._broadcast_presence(name, renew, None)
            self._presence_changed(name, change)
        self._schedule_presence()

    # -- status ------------------------------------------------------------------------

    def on_status(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        """Call ``callback(status)`` on connected / synced / disconnected / error.

        Returns:
            A function that unsubscribes.
        """
        self._status_cbs.append(callback)
        return lambda: self._status_cbs.remove(callback) if callback in self._status_cbs else None

    def _status(self, status: Status) -> None:
        for cb in list(self._status_cbs):
            cb(status)

    def report(self, status: Status) -> None:
        """Tell every ``on_status`` callback of ``status``.

        For components that run links on this Peer and have their own events
        to report (the LAN manager's ``discovered``, ``linked``, ``refused``...).
        """
        self._status(status)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def is_synced(self, name: str) -> bool:
        """Whether ``name`` is in sync with every peer we are connected to.

        True when the document is open, every outbound connection is up, at
        least one session carries the document, and on every session carrying
        it everything local is acknowledged and everything the peer sent was
        received and stored.
        """
        if name not in self._docs:
            return False
        for sup in self._supervisors.values():
            if sup.link is None or sup.link.session.state is not p.State.OPEN:
                if sup.address in self._followed:
                    continue  # a relay node a room moved to, still connecting
                return False
        carrying = self._carrying(name)
        return bool(carrying) and all(link.session.is_synced(name) for link in carrying)

    async def wait_synced(self, name: str, timeout: float | None = None) -> SyncResult:
        """Wait until :meth:`is_synced` holds for ``name``, or until it cannot.

        Returns:
            A :class:`SyncResult`, true in a boolean context once synced. It is
            false, with the reason and the error, at once when syncing needs the
            application: a server refused the document (``RoomNotAllowedError``:
            the token does not name it; ``ReadOnlyError``: a write over a
            read-only token; ``InvalidRoomError``) or refused the connection for
            good (``TokenError``, ``TokenExpiredError``...); otherwise after
            ``timeout`` seconds, saying what is missing (not connected, and the
            last attempt's error; nothing acknowledged yet...).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.is_synced(name):
            blocked = self._blocked(name)
            if blocked is not None:
                return blocked
            changed = self._changed
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return self._not_synced(name)
            try:
                async with asyncio.timeout(remaining):  # not wait_for: see close()
                    await changed.wait()
            except TimeoutError:
                if self.is_synced(name):
                    break
                return self._blocked(name) or self._not_synced(name)
        return SyncResult(True)

    def _blocked(self, name: str) -> SyncResult | None:
        """Why ``name`` cannot sync without the application's help, if it cannot."""
        for link in self._links:
            err = link.refusals.get(name)
            s = link.session
            if (
                err is not None
                and s.state is p.State.OPEN
                and s.doc_state(name) is p.DocState.CLOSED
            ):
                where = shown_address(link.address)
                return SyncResult(False, f"{where} refused {name!r}: {err.reason or err}", err)
        if self._stopped and not self._supervisors and not self._carrying(name):
            address, stop = next(iter(self._stopped.items()))
            reason = f"not connected to {shown_address(address)}: refused ({stop}); not retrying"
            return SyncResult(False, reason, stop)
        return None

    def _not_synced(self, name: str) -> SyncResult:
        """Why ``name`` is not synced yet (at a timeout)."""
        if name not in self._docs:
            return SyncResult(False, f"document {name!r} is not open")
        for sup in self._supervisors.values():
            if sup.link is None or sup.link.session.state is not p.State.OPEN:
                why = f" (last attempt: {sup.last_reason})" if sup.last_reason else ""
                return SyncResult(False, f"not connected to {sup.shown}{why}", sup.last_error)
        carrying = self._carrying(name)
        if not carrying:
            return SyncResult(False, f"no connection carries {name!r}")
        behind = ", ".join(
            shown_address(link.address) for link in carrying if not link.session.is_synced(name)
        )
        return SyncResult(False, f"{name!r} is not yet in sync with {behind}")

    def _carrying(self, name: str) -> list[_Link]:
        """The open sessions carrying document ``name``."""
        return [
            link
            for link in self._links
            if link.session.state is p.State.OPEN
            and link.session.doc_state(name) not in (p.DocState.NONE, p.DocState.CLOSED)
        ]

    # -- connections -------------------------------------------------------------------

    async def connect(
        self,
        address: str,
        *,
        timeout: float | None = 10.0,
        token: TokenSource | None = None,
        wait: bool = True,
    ) -> None:
        """Connect to ``address`` and keep the connection up until ``close``/``disconnect``.

        By default, waits for the first handshake and for the server's answer to
        every document offered in it. If they do not come within ``timeout``,
        raises :class:`ConnectTimeoutError` (a ``TimeoutError``), but keeps
        retrying in the background (local-first: being offline is normal).
        ``wait=False`` returns at once and connects in the background; every
        outcome then goes to ``on_status`` and the ``crdtsync.peer`` logger.

        A refusal of the handshake raises its exact class and stops retrying
        (``TokenError``, ``TokenExpiredError``, ``AuthError``, version mismatch).
        So does a document refused right in the handshake (``RoomNotAllowedError``:
        the token does not name that room; ``InvalidRoomError``), raised once
        the server answered every document offered: the connection stays up for
        the documents it allowed (``disconnect`` drops it). Later refusals (a
        document opened afterwards, a write over a read-only token, a token
        found expired at a reconnect) are not raised: they are ``error`` and
        ``stopped`` statuses, WARNING lines of the ``crdtsync.peer`` logger, and
        :meth:`wait_synced` returns them at once.

        Calling ``connect`` again for an address it keeps up waits for the first
        handshake if that is still pending; with a different ``token``, it
        replaces the token: the connection is made again with it at once (and
        its refusal raises as above). After a refusal stopped the retrying,
        ``connect`` starts again.

        Args:
            address: where to connect: ``ws://host:port`` or ``wss://...`` for a
                relay (the scheme picks the transport when the Peer has none;
                ``mem://`` needs ``transport=MemoryNetwork(...).transport(host)``).
            timeout: seconds to wait for the first handshake (None: no limit).
            token: an access token (``crdtsync token``), or a token provider: a
                function or async function returning one, asked again at every
                connection, before its handshake (:mod:`crdtsync.peer.tokens`). Sent in
                the handshake as ``{"token": token}``, instead of the Peer's
                ``auth``. When a server refuses a token as expired, the provider
                is asked once more at once; only a refusal of that one stops.
            wait: wait for the first handshake (the default), or return at once.

        Raises:
            UnsupportedAddressError: an address no attempt can make work (also a
                ValueError), at once: a scheme no transport handles (``http://``:
                peers sync over ``ws://``), a room URL ``ws://host:port/room``
                (the relay's y-protocols endpoint, for y-websocket clients and
                ``YProvider``), or an address the transport refuses.
            InvalidAuthError: ``token`` is neither a string nor a function.
            MissingDependencyError: the transport for the scheme needs an extra
                that is not installed (``pip install 'crdtsync[websocket]'``).
            ConnectTimeoutError: no handshake within ``timeout`` (still trying);
                the message says why the last attempt failed.
            TokenError: the server refused the token (forged, malformed, missing).
            TokenExpiredError: the token has expired (a provider's fresh one too).
            AuthError: the server refused us for another reason.
            RoomNotAllowedError: a document offered in the handshake is not
                allowed by the token (an ``AuthError`` too).
            InvalidRoomError: a document name the server refuses.
            VersionMismatchError: the server speaks no protocol version we do.
            ConnectionClosedError: ``close`` or ``disconnect`` came first.
        """
        self._check_open()
        check_sync_address(address)
        if token is not None:
            check_token_source(token)
        sup = self._supervisors.get(address)
        if sup is None:
            transport = self._transport_for(address)
            sup = _Supervisor(address, self._auth, token, transport)
            self._supervisors[address] = sup
            self._stopped.pop(address, None)
            sup.task = asyncio.get_running_loop().create_task(self._supervise(sup))
            sup.task.add_done_callback(partial(self._supervisor_done, sup))
        elif token is not None and token != sup.token:
            self._replace_token(sup, token)
        elif sup.first.done():
            return  # connected, or reconnecting: nothing new to wait for
        if not wait:
            return
        first, generation = sup.first, sup.generation
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see close()
                outcome = await asyncio.shield(first)
        except TimeoutError:
            link = sup.link
            if (
                link is not None
                and link.opened
                and sup.generation == generation
                and link.session.state is p.State.OPEN
            ):
                return  # connected; some documents are not answered yet
            why = f" (last attempt: {sup.last_reason})" if sup.last_reason else ""
            raise ConnectTimeoutError(
                f"no handshake with {sup.shown} within {timeout} s{why}; still trying"
            ) from sup.last_error
        if outcome is not None:
            raise outcome

    def _replace_token(self, sup: _Supervisor, token: TokenSource) -> None:
        """``connect`` with another token: reconnect with it now."""
        sup.token = token
        sup.generation += 1
        sup.attempt = 0
        if sup.first.done():
            sup.first = _new_future()
        log.info("new token for %s: reconnecting with it", sup.shown)
        link = sup.link
        if link is not None and link.session.state is not p.State.CLOSED:
            link.session.close(ErrorCode.GOING_AWAY, "reconnecting with a new token")
            self._process(link)
        sup.wake.set()

    def set_transport(self, scheme: str, transport: Transport[Connection] | None) -> None:
        """Use ``transport`` for every address of ``scheme`` (None: stop doing so).

        A transport registered here wins over the Peer's ``transport=`` and over
        the defaults (:mod:`crdtsync.peer.schemes`), for that scheme only: one
        Peer holds a LAN transport for ``lan://`` and the WebSocket one for
        ``ws://`` together. Connections already made keep their transport.

        Args:
            scheme: the address scheme, without ``://`` (``"lan"``).
            transport: the transport, or None to remove the registration.
        """
        key = scheme.lower()
        if transport is None:
            self._scheme_transports.pop(key, None)
        else:
            self._scheme_transports[key] = transport

    def _transport_for(self, address: str) -> Transport[Connection]:
        """The transport for ``address``: registered for its scheme, the Peer's own, a default."""
        scheme = urlsplit(address).scheme.lower()
        registered = self._scheme_transports.get(scheme)
        if registered is not None:
            return registered
        if self._transport is not None:
            return self._transport
        transport = self._default_transports.get(scheme)
        if transport is None:
            from crdtsync.peer.schemes import transport_for_scheme

            transport = transport_for_scheme(scheme, address)
            self._default_transports[scheme] = transport
        return transport

    def _supervisor_done(self, sup: _Supervisor, task: asyncio.Task[None]) -> None:
        """A reconnect loop ended: a crash is logged, reported and raised by ``connect``."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("reconnect loop for %s failed", sup.shown, exc_info=exc)
        error = exc if isinstance(exc, CrdtSyncError) else None
        self._status(
            Status("error", sup.address, reason=f"reconnect loop failed: {exc!r}", error=error)
        )
        if not sup.first.done():
            sup.first.set_result(exc)
        if self._supervisors.get(sup.address) is sup:
            del self._supervisors[sup.address]

    async def disconnect(self, address: str) -> None:
        """Stop the connection made by ``connect(address)``."""
        sup = self._supervisors.pop(address, None)
        self._stopped.pop(address, None)
        if sup is None:
            return
        if not sup.first.done():  # a connect() still waiting: it ends now
            sup.first.set_result(ConnectionClosedError(f"disconnect({sup.shown!r}) came first"))
        if sup.link is not None:
            sup.link.session.close(ErrorCode.GOING_AWAY, "disconnect")
            self._process(sup.link)
        if sup.task is not None:
            sup.task.cancel()
            try:
                await sup.task
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our caller cancelled us, not just the supervisor ending
        self._notify()

    async def listen(self, address: str) -> str:
        """Accept connections at ``address`` (through the transport).

        Returns:
            The address peers connect to (the listener's, e.g. with a real port).

        Raises:
            UnsupportedAddressError: no transport was given and none handles the
                address's scheme (also a ValueError).
            MissingDependencyError: the scheme's transport needs an extra that is
                not installed.
            TransportError: the transport cannot listen there.
        """
        self._check_open()
        listener = await self._transport_for(address).listen(address, self._accept)
        self._listeners.append(listener)
        return str(listener.address)

    # -- LAN -------------------------------------------------------------------------------

    async def start_lan(
        self,
        group_key: GroupKeyLike,
        *,
        interfaces: Sequence[str] | None = None,
        port: int = 0,
        allowed: Iterable[str] | None = None,
        static: Iterable[str] = (),
        identity: DeviceIdentity | None = None,
        zeroconf: bool = True,
        options: LanOptions | None = None,
    ) -> LanManager:
        """Sync with the other devices of a LAN group directly: no relay, no internet.

        Listens for authenticated links, announces this device and browses for
        the others (zeroconf), links with them as they come and go (full mesh
        up to 6 devices, a bounded connected mesh beyond), and binds each link's
        session to its device key. ``lan://`` addresses go to the LAN transport
        from then on, next to ``ws://`` ones: LAN and relay links work together.
        The rules are in :mod:`crdtsync.peer.lan` and ``docs/LAN.md``::

            async with Peer(store="notes.db") as peer:
                doc = await peer.open("notes")
                await peer.start_lan(group_key=GroupKey.load("team.key"))

        Args:
            group_key: the group key (``crdtsync lan-key``), or its file's path.
            interfaces: IPv4 addresses of the interfaces to listen, announce and
                browse on (None: every interface; tests pass ``["127.0.0.1"]``).
            port: the TCP port to listen on (0: any free one).
            allowed: fingerprints of the devices allowed to link (None: every
                device that proves the group key).
            static: ``lan://[FINGERPRINT@]host:port`` addresses to link with by
                hand (devices that multicast does not reach).
            identity: this device's key pair (default: the one kept beside the
                store, ``<store>.lan-identity``, made on first use; a Peer
                without a store file gets a new one per run).
            zeroconf: announce and browse with mDNS (False: ``static`` only).
            options: the LAN manager's settings (:class:`~crdtsync.peer.lan.LanOptions`).

        Returns:
            The LAN manager: its links, members, ``add(address)``, ``set_allowed``.

        Raises:
            MissingDependencyError: the ``lan`` extra is not installed.
            KeyFileError: the group key or identity file is missing, malformed or
                readable by other users.
            LocalProtocolError: the LAN is started already, or the peer is closed.
            TransportError: the port cannot be bound, or zeroconf cannot start.
        """
        self._check_open()
        if self._lan is not None:
            raise LocalProtocolError("the LAN is started already (stop_lan() first)")
        try:
            from crdtsync.peer.lan import LanManager
        except ImportError as exc:
            if (exc.name or "").startswith("crdtsync"):
                raise  # our own module missing: a broken install, not a missing extra
            raise MissingDependencyError(
                f"LAN sync needs the lan extra: pip install 'crdtsync[lan]' ({exc})", extra="lan"
            ) from exc
        store = self._store_spec if isinstance(self._store_spec, str | os.PathLike) else None
        self._lan = LanManager.for_peer(
            self,
            group_key,
            store=store,
            identity=identity,
            interfaces=interfaces,
            port=port,
            allowed=allowed,
            static=static,
            zeroconf=zeroconf,
            options=options,
        )
        try:
            await self._lan.start()
        except BaseException:
            self._lan = None
            raise
        return self._lan

    async def stop_lan(self) -> None:
        """Stop the LAN: goodbye announced, links closed, ``lan://`` unregistered. Idempotent."""
        manager, self._lan = self._lan, None
        if manager is not None:
            await manager.close()

    @property
    def lan(self) -> LanManager | None:
        """The LAN manager ``start_lan`` made, or None."""
        return self._lan

    def send_queues(self) -> list[int]:
        """Bytes waiting to go out on each connection.

        The frames its session queued, and the transport's write buffer on
        connections that declare ``Ability.FLOW``.
        """
        return [_queued(lk) for lk in self._links]

    def connections(self) -> list[tuple[str, int | None, bool]]:
        """``(address, remote peer id, open)`` of every current connection."""
        return [
            (lk.address, lk.session.peer_id, lk.session.state is p.State.OPEN) for lk in self._links
        ]

    async def _supervise(self, sup: _Supervisor) -> None:
        # Whether the token of this attempt was asked for again after an expiry.
        renewed = False
        # disconnect() removes us from _supervisors: stop even if its cancel was lost.
        while not self._closed and self._supervisors.get(sup.address) is sup:
            sup.wake.clear()
            generation = sup.generation
            error, opened = await self._attempt(sup, generation)
            if self._closed or self._supervisors.get(sup.address) is not sup:
                return
            if sup.generation != generation:
                renewed = False
                continue  # connect() gave a new token meanwhile: use it now
            if opened:
                sup.attempt = 0
                renewed = False
            if isinstance(error, TokenExpiredError) and callable(sup.token) and not renewed:
                renewed = True
                log.info("%s: the token has expired; asking the token provider again", sup.shown)
                continue
            if isinstance(error, AuthError | UnsupportedAddressError) or (
                isinstance(error, VersionMismatchError) and not sup.first.done()
            ):
                self._give_up(sup, error)  # retrying cannot help
                return
            delay = self._backoff.delay(sup.attempt, self._rng)
            sup.attempt += 1
            log.debug(
                "reconnecting to %s in %.2f s (attempt %d): %s",
                sup.shown,
                delay,
                sup.attempt + 1,
                _said(sup.last_reason or "closed"),
            )
            # The backoff, cut short by a new token.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await sup.wake.wait()

    async def _attempt(
        self, sup: _Supervisor, generation: int
    ) -> tuple[CrdtSyncError | None, bool]:
        """One connection attempt, to its end: why it ended, and whether it opened."""
        log.debug("connecting to %s (attempt %d)", sup.shown, sup.attempt + 1)
        try:
            conn = await sup.transport.connect(sup.address)
        except TransportError as exc:
            sup.last_error, sup.last_reason = exc, str(exc)
            self._status(Status("disconnected", sup.address, reason=str(exc), error=exc))
            return exc, False
        auth = sup.auth
        if sup.token is not None and not self._closed and sup.generation == generation:
            # Asked once connected, so a provider is not called in vain while offline.
            limit = self._options.handshake_timeout
            try:
                async with asyncio.timeout(limit):
                    auth = {"token": await fetch_token(sup.token)}
            except Exception as exc:  # the application's provider: reported, then retried
                await _close_quietly(conn)
                reason = (
                    f"the token provider did not answer within {limit:g} s"
                    if isinstance(exc, TimeoutError)
                    else f"the token provider failed: {exc!r}"
                )
                err = exc if isinstance(exc, CrdtSyncError) else None
                sup.last_error, sup.last_reason = err, reason
                log.warning("%s: %s", sup.shown, reason, exc_info=err is None)
                self._status(Status("error", sup.address, reason=reason, error=err))
                return err, False
        if self._closed or sup.generation != generation:
            await _close_quietly(conn)
            return None, False
        try:
            check = self._bind_or_close(conn)
        except CrdtSyncError as exc:  # the identity binder refused the connection
            sup.last_error, sup.last_reason = exc, str(exc)
            return exc, False
        session = self._client_session(auth, check)
        link = _Link(session, conn, sup.address, outbound=True, flow=_flow(conn), check=check)
        sup.link = link
        try:
            await self._run(link)
        finally:
            sup.link = None
        self._notify()
        error = session.error
        if error is not None:
            sup.last_error, sup.last_reason = error, str(error)
        if (
            link.opened
            and sup.generation == generation
            and not sup.first.done()
            and not isinstance(error, AuthError)  # a refusal after all: _give_up answers
        ):
            # The session ended before every document was answered: connect() returns.
            sup.first.set_result(_handshake_refusal(link))
        return error, link.opened

    def _give_up(self, sup: _Supervisor, error: CrdtSyncError) -> None:
        """A refusal retrying cannot fix: stop reconnecting, and say so everywhere."""
        if self._supervisors.get(sup.address) is sup:
            del self._supervisors[sup.address]
        self._stopped[sup.address] = error
        if not sup.first.done():
            sup.first.set_result(error)
        log.warning(
            "stopped connecting to %s: %s: %s", sup.shown, type(error).__name__, _said(str(error))
        )
        reason = f"not reconnecting: {error}"
        self._status(Status("stopped", sup.address, reason=reason, error=error))
        self._notify()

    def _client_session(self, auth: object, check: IdentityCheck | None) -> p.Session:
        """A client session (its HELLO queued) for a connection we made."""
        session = p.Session.client(
            self.peer_id,
            # A session whose peer's identity is still to be checked names no
            # document in its HELLO: they are opened once the check passed.
            docs=[
                (n, e.epoch, e.doc.version)
                for n, e in self._docs.items()
                if self._share is None and check is None
            ],
            auth=auth,
            writers=[self.peer_id],
            now=self._now(),
            options=self._options,
            registry=self._registry,
        )
        # We chose this server: it may relay other peers' edits to us.
        session.verify_writers = False
        return session

    async def serve(self, conn: Connection) -> None:
        """Run the server side of the sync protocol on an accepted connection.

        For servers that accept connections themselves (the relay, the LAN
        manager); ``listen`` does this for every connection its transport
        accepts. Returns when the session ends. Updates and presence it brings
        reach watchers with ``conn`` as their origin. A connection declaring
        ``Ability.IDENTITY`` goes through the identity binder first
        (:meth:`bind_identities`): refused, it is closed at once.
        """
        await self._accept(conn)

    async def attach(self, conn: Connection, *, auth: object = None) -> None:
        """Run the client side of the sync protocol on a connection the caller made.

        For components that make their own connections and decide themselves
        whether to make another when one ends (the LAN manager); ``connect``
        does this and reconnects. Returns when the session ends.

        Args:
            conn: the open connection (closed when the session ends).
            auth: the payload of our handshake (default: none).

        Raises:
            LocalProtocolError: the peer is closed or not started.
            CrdtSyncError: the identity binder refused the connection (it is closed).
        """
        self._check_open()
        check = self._bind_or_close(conn)
        p.check_auth(auth)
        link = _Link(
            self._client_session(auth, check),
            conn,
            str(conn.remote_address),
            outbound=True,
            flow=_flow(conn),
            check=check,
        )
        await self._run(link)

    def bind_identities(self, binder: IdentityBinder | None) -> None:
        """Check the sessions of every connection that declares ``Ability.IDENTITY``.

        ``binder(conn)`` runs before the connection's session sends anything;
        it raises to refuse the connection, or returns the check of what the
        session may claim: called with the peer id and writer ids the peer's
        handshake declares, before we accept it (inbound) or open any document
        on it (outbound); it returns the peer's :class:`Grant` or raises a
        :class:`ProtocolError`, which closes the session with its code. An
        outbound session to be checked names no document in its HELLO: nothing
        of any document goes to a peer that is refused.

        Args:
            binder: the binder, or None to stop checking (sessions running keep theirs).
        """
        self._binder = binder

    def _bind_or_close(self, conn: Connection) -> IdentityCheck | None:
        """The identity check of a new connection; a refused one is aborted (then re-raised)."""
        binder = self._binder
        if binder is None or not has_identity(conn):
            return None
        try:
            return binder(conn)
        except CrdtSyncError:
            flow = _flow(conn)
            if flow is not None:
                flow.abort()
            else:
                self._spawn(_close_quietly(conn), f"closing {conn.remote_address}")
            raise

    async def _accept(self, conn: Connection) -> None:
        if self._closed:
            return
        try:
            check = self._bind_or_close(conn)
        except CrdtSyncError as exc:
            log.debug("connection from %s refused by the identity binder: %s", conn, exc)
            return
        session = p.Session.server(
            self.peer_id, now=self._now(), options=self._options, registry=self._registry
        )
        link = _Link(
            session,
            conn,
            str(conn.remote_address),
            outbound=False,
            flow=_flow(conn),
            check=check,
        )
        await self._run(link)

    async def _run(self, link: _Link) -> None:
        """Drive one connection until its session closes."""
        self._links.add(link)
        writer = asyncio.get_running_loop().create_task(self._write_loop(link))
        session = link.session
        try:
            self._process(link)
            while session.state is not p.State.CLOSED:
                try:
                    data = await link.conn.recv()
                except TransportError:
                    session.receive_eof()
                else:
                    session.receive_data(data, now=self._now())
                self._process(link)
                pause = self._import_pause(link)
                if pause > 0:  # over its import rate: read nothing meanwhile
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(link.ended.wait(), pause)
        finally:
            link.wakeup.set()
            try:
                await asyncio.wait_for(writer, 5.0)
            except TimeoutError:
                log.warning("the writer of %s did not finish in 5 s: cancelled", link.address)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # disconnect() or close() cancelled us: do not reconnect
            except Exception as exc:  # a bug: the writer handles every transport error
                self._task_failed(f"the writer of {link.address}", exc)
            finally:
                if link.timer is not None:
                    link.timer.cancel()
                self._links.discard(link)
                await _close_quietly(link.conn)
                self._notify()

    def _import_pause(self, link: _Link) -> float:
        """Charge what a connection's session received since; seconds to read nothing."""
        rate = self._import_rate
        if rate is None:
            return 0.0
        total = link.session.update_bytes
        fresh, link.charged = total - link.charged, total
        if not fresh:
            return 0.0
        if link.imports is None:
            burst = 2 * self._options.limits.max_update_bytes
            link.imports = TokenBucket(rate, burst, self._now())
        return link.imports.owe(self._now(), fresh)

    async def _write_loop(self, link: _Link) -> None:
        """The only writer of a connection: frames go out in session order."""
        session = link.session
        stored = self._worker.ticket if self._worker is not None else 0
        try:
            while True:
                if not session.bytes_to_send:  # else frames wait already: no wakeup needed
                    await link.wakeup.wait()
                link.wakeup.clear()
                # Group commit: the queued frames may acknowledge or forward
                # imported updates; they go out only once those are stored.
                frames: list[bytes] = []
                try:
                    if self._worker is not None:
                        # The frames first, then wait for everything submitted before
                        # they were made (the worker commits off the loop meanwhile).
                        frames = session.data_to_send()
                        stored, failed = await self.durable(stored)
                        mine = [
                            err
                            for name, err in failed.items()
                            if not name or session.doc_state(name) is not p.DocState.NONE
                        ]
                        if mine:
                            raise mine[0]
                    else:
                        self.commit()
                        frames = session.data_to_send()
                except StoreError as exc:
                    self._status(Status("error", link.address, reason=str(exc), error=exc))
                    return  # nothing is sent; closing the connection makes the peer resend
                # Catch-ups among these stay exempt until they have left (send()
                # returns once the transport buffer drained below its mark).
                taken = dict(link.catch_ups)
                for frame in frames:
                    await link.conn.send(frame)
                for name, mark in taken.items():
                    if link.catch_ups.get(name) == mark:
                        del link.catch_ups[name]
                # Closed: done once every frame it queued has gone out. A close
                # that came while this batch was waiting for the store or the
                # socket queued its CLOSE after the batch was taken; returning
                # now would drop it, and the peer would see the connection end
                # without a reason (a refused token read as a network failure,
                # and retried). The next round sends it.
                if session.state is p.State.CLOSED and not session.bytes_to_send:
                    return
        except TransportError:
            # Not the session's end yet: what the peer sent before the connection
            # broke may still be unread, its CLOSE with the reason among it (a
            # refusal must not read as a dropped connection, which is retried).
            # The reader reads it, then the end (receive_eof); and reads now
            # rather than after an import pause.
            link.ended.set()
        finally:
            # Closing our end also ends our own recv() (after what it holds
            # already), so the reader loop stops.
            await _close_quietly(link.conn)

    def _kick(self, link: _Link) -> None:
        """Wake the writer and re-arm the session timer."""
        link.wakeup.set()
        limit = self._max_send_queue
        if limit is not None and link.session.state is not p.State.CLOSED:
            queued = _queued(link)
            if queued - link.catch_up > limit:
                self._slow_consumer(link, queued)
        when = link.session.get_timer()
        if when != link.timer_at:
            if link.timer is not None:
                link.timer.cancel()
                link.timer = None
            link.timer_at = when
            if when is not None:
                link.timer = self._get_loop().call_at(when, self._on_timer, link, when)

    def _slow_consumer(self, link: _Link, queued: int) -> None:
        """Drop a connection that does not read fast enough (it resyncs on reconnect).

        Its CLOSE frame would wait behind megabytes it is not reading, so the
        transport is aborted at once when it can be.
        """
        err = LimitExceededError(f"slow consumer: {queued} bytes waiting to be sent")
        self._status(
            Status("error", link.address, link.session.peer_id, reason=str(err), error=err)
        )
        link.session.close(ErrorCode.LIMIT_EXCEEDED, "slow consumer")
        if link.flow is not None:
            link.flow.abort()
        self._process(link)

    def _on_timer(self, link: _Link, when: float) -> None:
        link.timer = None
        link.timer_at = None
        # asyncio may run a timer up to its clock resolution early: the session
        # must see the deadline as reached, or it would re-arm the same timer forever.
        link.session.handle_timer(max(self._now(), when))
        self._process(link)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _now(self) -> float:
        return self._get_loop().time()

    # -- session events ----------------------------------------------------------------

    def _process(self, link: _Link) -> None:
        """React to everything the session reported, then flush and re-arm."""
        if link.busy:
            return  # the _process call below us on the stack picks the new events up
        link.busy = True
        try:
            self._drain(link)
        finally:
            link.busy = False
        self._kick(link)

    def _drain(self, link: _Link) -> None:
        session = link.session
        handled = False
        while events := session.events_received():
            handled = True
            for ev in events:
                try:
                    self._handle(link, ev)
                except StoreError as exc:
                    # We cannot store what we would acknowledge: end the session
                    # (the peer resends after reconnecting) and report it.
                    self._status(
                        Status("error", link.address, session.peer_id, reason=str(exc), error=exc)
                    )
                    session.close(ErrorCode.INTERNAL_ERROR, "store failure")
        if link.awaiting is not None and not link.awaiting:
            self._answered(link)
        if handled:
            # Any event may change is_synced(): wake wait_synced() callers to re-check.
            self._notify()

    def _answered(self, link: _Link) -> None:
        """The server answered every document offered in the handshake: connect() returns."""
        link.awaiting = None
        for sup in self._supervisors.values():
            if sup.link is link and not sup.first.done():
                sup.first.set_result(_handshake_refusal(link))

    def _handle(self, link: _Link, ev: p.Event) -> None:
        if link.session.state is p.State.CLOSED and isinstance(ev, _UNANSWERABLE):
            # The session failed after queueing these (a limit hit later in the
            # same batch): there is nobody left to answer.
            return
        _EVENT_HANDLERS[type(ev)](self, link, ev)

    def _on_update(self, link: _Link, ev: p.UpdateReceived) -> None:
        s = link.session
        entry = self._docs.get(ev.name)
        if entry is None:
            return
        read_only = link.grant is not None and link.grant.read_only
        verdict = admit(
            entry.doc,
            ev.update,
            ev.writes,
            read_only=read_only,
            session=s,
            sender=link.sender,
            full=self._full(entry),
            catch_up=ev.seq == 1,
        )
        refusal = self._refusal(entry, verdict)
        if refusal is not None:
            if verdict is Admission.TOO_MANY_REFUSALS:
                s.fail(refusal)
            else:
                s.refuse_doc(ev.name, refusal)
            return
        if verdict is Admission.FORBIDDEN:
            return  # the session closed with FORBIDDEN_WRITER
        if verdict is Admission.WRITE:
            try:
                self._import(entry, ev.update, link)
            except InvalidUpdateError as exc:
                s.reject_update(ev.name, exc)
                return
        s.ack(ev.name, ev.seq)

    def _full(self, entry: _Entry) -> bool:
        """Whether a document reached ``max_doc_bytes`` (it takes nothing new from peers)."""
        return self._max_doc_bytes is not None and entry.size >= self._max_doc_bytes

    def _refusal(self, entry: _Entry, verdict: Admission) -> ProtocolError | None:
        name = entry.name
        if verdict is Admission.READ_ONLY:
            return ReadOnlyError(f"read-only access to {name!r}: update refused")
        if verdict is Admission.FULL:
            return DocumentFullError(
                f"{name!r} reached its size limit ({entry.size} of {self._max_doc_bytes} "
                "bytes): update refused"
            )
        if verdict is Admission.HELD_LIMIT:
            return LimitExceededError(
                f"more than {MAX_HELD_PER_SENDER} updates waiting for changes "
                f"{name!r} lacks: update refused (sync again from its version)"
            )
        if verdict is Admission.TOO_MANY_REFUSALS:
            return LimitExceededError("too many updates refused on this connection")
        return None

    def _on_catch_up(self, link: _Link, ev: p.CatchUpNeeded) -> None:
        s = link.session
        entry = self._docs.get(ev.name)
        if entry is None:
            if link.awaiting is not None:
                link.awaiting.discard(ev.name)
            s.refuse_doc(ev.name, ProtocolError("document closed", code=ErrorCode.DOC_REFUSED))
            return
        before = s.bytes_to_send
        if link.awaiting is not None:
            link.awaiting.discard(ev.name)
        link.refusals.pop(ev.name, None)  # open (again) on this session
        s.send_catch_up(ev.name, entry.doc.export_yjs_update(since=ev.since))
        link.catch_up_seq += 1
        link.catch_ups[ev.name] = (link.catch_up_seq, s.bytes_to_send - before)
        if entry.awareness.states:
            s.send_awareness(ev.name, entry.awareness.full_update())

    def _on_opened(self, link: _Link, ev: p.Opened) -> None:
        s = link.session
        if link.outbound and link.check is not None:
            # Before any document is opened on it (none was named in our HELLO).
            try:
                link.check(ev.peer_id, ev.writers)
            except ProtocolError as exc:
                s.close(exc.code, exc.reason)
                return
        link.opened = True
        self._status(Status("connected", link.address, ev.peer_id))
        for name, entry in list(self._docs.items()):
            if self._announce and s.doc_state(name) is p.DocState.NONE and self._shares(name, link):
                s.open_doc(name, entry.epoch, entry.doc.version)
        if not link.outbound:
            log.debug("accepted %s (peer %d)", shown_address(link.address), ev.peer_id)
        for sup in self._supervisors.values():
            if sup.link is link:
                log.info("connected to %s (peer %d)", sup.shown, ev.peer_id)
                sup.last_error, sup.last_reason = None, ""
                if not sup.first.done():
                    # connect() returns once the server answered each document offered.
                    link.awaiting = {n for n in self._docs if s.doc_state(n) is p.DocState.LOCAL}
        self._notify()

    def _on_doc_synced(self, link: _Link, ev: p.DocSynced) -> None:
        if self.is_synced(ev.name):
            self._status(Status("synced", link.address, link.session.peer_id, ev.name))
        self._notify()

    def _on_awareness(self, link: _Link, ev: p.AwarenessReceived) -> None:
        entry = self._docs.get(ev.name)
        if entry is None:
            return
        own = link.presence.setdefault(ev.name, set())
        try:
            self._take_presence(entry, own, ev.data, ev.entries, link)
        except LimitExceededError as exc:
            link.session.close(ErrorCode.LIMIT_EXCEEDED, str(exc))

    def _on_hello(self, link: _Link, ev: p.HelloReceived) -> None:
        s = link.session
        grant: bool | Grant = True
        if link.check is not None:
            # Its identity decides (the authorize hook is for tokens and the like).
            try:
                grant = link.check(ev.peer_id, ev.writers)
            except ProtocolError as exc:
                s.reject(exc)
                return
        elif self._authorize is not None:
            try:
                grant = self._authorize(HelloInfo(ev.peer_id, ev.auth, ev.docs, link.address))
            except AuthError as exc:
                s.reject(exc)
                return
        if grant is False:
            s.reject(AuthError("refused by the authorize hook"))
            return
        g = grant if isinstance(grant, Grant) else Grant()
        link.grant = g
        link.sender.max_refusals = g.max_refused_updates
        s.accept(writers=[self.peer_id], verify_writers=not g.relay, declare=not g.read_only)

    def _on_doc_requested(self, link: _Link, ev: p.DocRequested) -> None:
        s = link.session
        grant = link.grant
        if grant is not None and grant.check is not None:
            try:
                grant.check(ev.name)
            except ProtocolError as exc:
                s.refuse_doc(ev.name, exc)
                return
        allowed = grant is None or grant.docs is None or ev.name in grant.docs
        if not allowed or not self._shares(ev.name, link):
            s.refuse_doc(
                ev.name, ProtocolError(f"{ev.name!r} is not shared", code=ErrorCode.DOC_REFUSED)
            )
            return
        entry = self._docs.get(ev.name)
        try:
            if entry is None:
                stored = self._store.load(ev.name)
                if stored is None:
                    self._may_create(ev.name, grant)
                # A document we never had: join the peer's incarnation.
                entry = self._open_sync(
                    ev.name, ev.epoch if stored is None else None, stored=stored
                )
            elif entry.epoch != ev.epoch and self._should_adopt(entry, ev.epoch, ev.version):
                self._forget(entry, asking=link)
                entry = self._open_sync(ev.name, ev.epoch)
        except ProtocolError as exc:
            s.refuse_doc(ev.name, exc)
            return
        except StoreError as exc:
            # One document the store cannot give (corrupt, or the disk failed)
            # closes that document's channel, not the session's other documents.
            self._status(Status("error", link.address, s.peer_id, ev.name, str(exc), exc))
            s.refuse_doc(
                ev.name,
                ProtocolError(f"{ev.name!r} cannot be loaded", code=ErrorCode.INTERNAL_ERROR),
            )
            return
        if s.doc_state(ev.name) is p.DocState.REMOTE:
            s.open_doc(ev.name, entry.epoch, entry.doc.version)

    def _may_create(self, name: str, grant: Grant | None) -> None:
        """Whether a peer with ``grant`` may have ``name``, which does not exist, created.

        Raises:
            NoSuchDocumentError: a read-only grant (it never creates documents).
            LimitExceededError: the store holds ``max_stored_docs`` documents.
            ProtocolError: the grant's ``creating`` hook refused.
        """
        if grant is not None and grant.read_only:
            raise NoSuchDocumentError(f"there is no document {name!r} (a reader does not create)")
        limit = self._max_stored_docs
        if limit is not None and self._stored_docs >= limit:
            raise LimitExceededError(f"the store holds its limit of {limit} documents")
        if grant is not None and grant.creating is not None:
            grant.creating(name)

    @staticmethod
    def _should_adopt(entry: _Entry, remote_epoch: bytes, remote_version: Version) -> bool:
        """Whether to take the peer's incarnation of a document instead of ours.

        Only when ours is empty (never edited, nothing received): then nothing
        can be lost. Between two empty ones the greater epoch wins, so both
        sides agree and do not swap forever.
        """
        if len(entry.doc.version) or entry.doc.export_yjs_update() != b"\x00\x00":
            return False
        return bool(len(remote_version)) or remote_epoch > entry.epoch

    def _on_doc_closed(self, link: _Link, ev: p.DocClosed) -> None:
        s = link.session
        err = ev.error
        entry = self._docs.get(ev.name)
        if isinstance(err, EpochMismatchError) and not err.from_peer and entry is not None:
            remote_version = s.remote_version(ev.name) or Version()
            remote_epoch = s.remote_epoch(ev.name) or b""
            if self._should_adopt(entry, remote_epoch, remote_version):
                self._forget(entry)
                self._open_sync(ev.name, remote_epoch)
                return
        if link.awaiting is not None:
            link.awaiting.discard(ev.name)
        if err.from_peer and isinstance(err, RoomMovedError) and link.outbound:
            self._follow(link, ev.name, err)
            self._notify()
            return
        if err.from_peer and link.outbound and err.code in _TRY_AGAIN:
            # The server could not take the document now (its store is down, or
            # every room it holds in memory is in use): ask again after a
            # backoff, on the same connection.
            self._retry_later(link, ev.name, "")
        if err.from_peer and _is_refusal(err):
            link.refusals[ev.name] = err
            level = logging.WARNING if link.outbound else logging.DEBUG
            where = shown_address(link.address)
            log.log(
                level,
                "%s refused %r: %s: %s",
                where,
                ev.name,
                type(err).__name__,
                _said(err.reason),
            )
        if err.code != ErrorCode.DOC_REFUSED or err.from_peer:
            self._status(Status("error", link.address, s.peer_id, ev.name, err.reason, err))
        self._notify()

    def _follow(self, link: _Link, name: str, err: RoomMovedError) -> None:
        """A relay node says another node serves ``name``: connect there too.

        Every connection offers every document, so the owner's connection carries
        it and the others refuse it; the token (or auth) is the one given for
        ``link``'s address.
        """
        location = _moved_to(err.reason)
        if location is None:
            log.warning("%r moved, to an address we cannot use: %s", name, _said(err.reason))
            return
        link.moved[name] = location
        sup = self._supervisors.get(link.address)
        if sup is None or self._closed:
            return
        there = self._supervisors.get(location)
        if there is None:
            log.info("%r is served by %s: connecting there", name, shown_address(location))
            self._followed.add(location)
            self._spawn(
                self.connect(location, token=sup.token, wait=False), f"connect to {location}"
            )
        elif there.link is not None and there.link.session.state is p.State.OPEN:
            return  # served there (or about to be)
        # Not connected there (yet, or any more: the owner may be dead and its lease
        # about to go): ask here again after a backoff.
        self._retry_later(link, name, location)

    def _retry_later(self, link: _Link, name: str, location: str) -> None:
        """Offer ``name`` on ``link`` again after a backoff (``_reoffer_one``)."""
        link.moved[name] = location
        tries = link.moved_tries.get(name, 0)
        link.moved_tries[name] = tries + 1
        delay = self._backoff.delay(min(tries, 8), self._rng)
        self._get_loop().call_later(delay, self._reoffer_one, link, name)

    def _reoffer_one(self, link: _Link, name: str) -> None:
        """Offer ``name`` on ``link`` again (a node said it moved; see ``_follow``)."""
        entry = self._docs.get(name)
        s = link.session
        if (
            self._closed
            or entry is None
            or link not in self._links
            or s.state is not p.State.OPEN
            or link.moved.pop(name, None) is None
            or s.doc_state(name) is not p.DocState.CLOSED
        ):
            return
        s.open_doc(name, entry.epoch, entry.doc.version)
        self._kick(link)

    def _reoffer_moved(self, closed: _Link) -> None:
        """A connection closed: offer the documents other nodes refused as moved again."""
        for link in list(self._links):
            if link is closed or link.session.state is not p.State.OPEN or not link.moved:
                continue
            moved, link.moved = link.moved, {}
            for name in moved:
                entry = self._docs.get(name)
                if entry is not None and link.session.doc_state(name) is p.DocState.CLOSED:
                    link.session.open_doc(name, entry.epoch, entry.doc.version)
            self._kick(link)

    def _on_closed(self, link: _Link, ev: p.Closed) -> None:
        link.sender.gone = True
        link.ended.set()
        if link.outbound:
            self._reoffer_moved(link)
            if link.address in self._followed and not self._closed:
                # A node we only went to because a room moved there is gone: stop
                # retrying it (a room that moves there again brings us back).
                self._followed.discard(link.address)
                self._spawn(self.disconnect(link.address), f"disconnect {link.address}")
        for name, clients in link.presence.items():
            self._remove_presence(name, clients, link)
        link.presence.clear()
        err = ev.error
        if err is not None and not isinstance(err, TransportError):
            self._status(
                Status("error", link.address, link.session.peer_id, reason=str(err), error=err)
            )
        reason = "closed" if err is None else str(err)
        if link.outbound and link.opened:
            log.info("disconnected from %s: %s", shown_address(link.address), _said(reason))
        else:
            log.debug("connection with %s ended: %s", shown_address(link.address), _said(reason))
        self._status(
            Status("disconnected", link.address, link.session.peer_id, reason=reason, error=err)
        )
        self._notify()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        """Run ``coro`` in the background; its failure is logged and reported, never lost."""
        task = self._get_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(partial(self._task_done, what))
        return task

    def _task_done(self, what: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._task_failed(what, exc)

    def _task_failed(self, what: str, exc: BaseException) -> None:
        """A background task failed: log it under ``crdtsync.peer`` and report an ``error``."""
        log.error("%s failed: %r", what, exc, exc_info=exc)
        error = exc if isinstance(exc, CrdtSyncError) else None
        self._status(Status("error", reason=f"{what} failed: {exc}", error=error))


def _said(text: str, limit: int = 300) -> str:
    """Text a peer sent (a reason), safe in a log line: no line breaks or control characters."""
    text = text[:limit]
    return text if text.isprintable() else repr(text)


def _stored(entry: _Entry, seq: int) -> None:
    """The worker stored an update of ``entry`` as log entry ``seq``."""
    entry.last_seq = max(entry.last_seq, seq)


def _moved_to(reason: str) -> str | None:
    """The node URL a :class:`RoomMovedError`'s reason ends with (``ws://`` or ``wss://``)."""
    words = reason.split()
    last = words[-1] if words else ""
    return last if last.startswith(("ws://", "wss://")) else None


#: Codes of a document refused for now: an outbound connection offers it again after a backoff.
_TRY_AGAIN = frozenset({ErrorCode.INTERNAL_ERROR, ErrorCode.TRY_AGAIN_LATER})


def _is_refusal(err: ProtocolError) -> bool:
    """Whether a peer's error is a refusal only the application can fix (a token, a room)."""
    refusal = isinstance(err, AuthError | ReadOnlyError | InvalidRoomError)
    return refusal and err.code != ErrorCode.DOC_REFUSED  # "not shared", "closed": not final


def _handshake_refusal(link: _Link) -> ProtocolError | None:
    """The refusal ``connect()`` raises for a document refused in the handshake, if any."""
    for name in sorted(link.refusals):
        if link.session.doc_state(name) is p.DocState.CLOSED:
            return link.refusals[name]
    return None


#: The events a closed session cannot answer any more (see Peer._handle).
_UNANSWERABLE = (p.HelloReceived, p.DocRequested, p.CatchUpNeeded)

_EventHandler = Callable[[Peer, _Link, Any], None]

#: Session event -> the Peer's reaction. Method references, like the session's
#: TRANSITIONS: a renamed handler fails at import and under mypy.
_EVENT_HANDLERS: dict[type[p.Event], _EventHandler] = {
    p.HelloReceived: Peer._on_hello,
    p.Opened: Peer._on_opened,
    p.DocRequested: Peer._on_doc_requested,
    p.CatchUpNeeded: Peer._on_catch_up,
    p.UpdateReceived: Peer._on_update,
    p.AwarenessReceived: Peer._on_awareness,
    p.DocSynced: Peer._on_doc_synced,
    p.DocClosed: Peer._on_doc_closed,
    p.Closed: Peer._on_closed,
}


#: Presence states one connection may bring into one document (a browser tab
#: has one, a mesh peer forwards its LAN's).
MAX_PRESENCE_PER_CONNECTION = 256
#: What the presence states one connection brings into one document may cost
#: together (``state_cost``: JSON bytes plus a charge per value): under a tenth
#: of a room's budget, so one connection cannot take a room's presence for
#: itself, and more than the largest single state may cost.
MAX_PRESENCE_BYTES_PER_CONNECTION = 384 << 10


def presence_fits(own: set[int], entries: Iterable[tuple[int, int, Any]], aw: Awareness) -> bool:
    """Whether a connection owning presence states ``own`` may apply ``entries``.

    Counted before applying: a message naming thousands of new clients, or
    states costing more than the connection's budget, is refused whole instead
    of flooding everyone and then being undone. Only entries that would apply
    (a newer clock) count: an echo of others' states costs the echoer nothing.
    """
    items = list(entries)
    new = {c for c, _, state in items if state is not None and c not in aw.states}
    if len(own | new) > MAX_PRESENCE_PER_CONNECTION:
        return False
    costs = {c: aw.cost(c) for c in own}
    for client, clock, state in items:
        current = aw.meta.get(client, (0, 0.0))[0]
        if clock > current:
            costs[client] = state_cost(state)
    return sum(costs.values()) <= MAX_PRESENCE_BYTES_PER_CONNECTION


def document_limits(limits: UpdateLimits, max_doc_bytes: int | None) -> UpdateLimits:
    """The limits of whole documents, from the per-update ``limits`` of the sessions.

    Stored state is a document, not one update: it is read under at least
    :data:`STORE_READ_BYTES` (or twice ``max_doc_bytes``), with counts scaled to
    match (a count can never exceed the bytes that encode it). What one peer
    sends at once stays bounded by the session, under ``limits``.
    """
    size = max(limits.max_update_bytes, STORE_READ_BYTES, 2 * (max_doc_bytes or 0))
    return replace(
        limits,
        max_update_bytes=size,
        max_structs=max(limits.max_structs, size),
        max_string_bytes=max(limits.max_string_bytes, size),
        max_delete_ranges=max(limits.max_delete_ranges, size),
        max_any_values=max(limits.max_any_values, size),
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name.encode("utf-8")) > p.MAX_NAME_BYTES:
        raise InvalidOperationError(
            f"a document name is 1 to {p.MAX_NAME_BYTES} UTF-8 bytes, not {name!r:.40}"
        )


def _sender(origin: object) -> Sender | None:
    """The write-policy budgets of where an import came from (None: the application)."""
    if isinstance(origin, _Link):
        return origin.sender
    if isinstance(origin, Guest):
        return origin.sender
    return None


def _origin(origin: object) -> Origin:
    """What watchers hear as the origin of a change: a guest, a session's connection, or None."""
    if isinstance(origin, _Link):
        return origin.conn
    if isinstance(origin, Guest):
        return origin
    return None  # a local edit, an expiry, or an import the application made itself


def _flow(conn: Connection) -> FlowConnection | None:
    return conn if has_flow_control(conn) else None


def _queued(link: _Link) -> int:
    """Bytes waiting to go out on a link: in its session, and in a FLOW transport's buffer."""
    queued = link.session.bytes_to_send
    if link.flow is not None:
        queued += link.flow.buffered_amount
    return queued


async def _close_quietly(conn: Connection) -> None:
    """Close a connection that may already be broken (that is what we wanted anyway)."""
    try:
        await conn.close()
    except TransportError:
        pass  # it was closed or broke already
    except Exception:  # an adapter's bug: say so, the connection is ours to drop anyway
        log.exception("closing the connection to %s failed", conn.remote_address)
