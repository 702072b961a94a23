"""The sync session: one connection's protocol state machine, with no I/O.

Theory of operation
===================

A :class:`Session` is the protocol for one connection between two peers. It
never touches a socket, a clock or a document: bytes go in through
:meth:`Session.receive_data`, frames come out of :meth:`Session.data_to_send`,
what happened comes out of :meth:`Session.events_received`, and time goes in
through :meth:`Session.handle_timer` (with :meth:`Session.get_timer` saying when).
The asyncio :class:`~crdtsync.Peer` is a thin shell that moves bytes between a
transport and a session and reacts to events by reading and writing documents.
Two sessions joined by a list are the whole test harness (``tests/protocol/test_session.py``).

Session states (h11-style: every (state, message) pair not in
:data:`TRANSITIONS` is a protocol error, never a silent fallthrough)::

    client:  HELLO_SENT --WELCOME--> OPEN --CLOSE/error/close()--> CLOSED
    server:  AWAIT_HELLO --HELLO--> HELLO_RECEIVED --accept()--> OPEN --...--> CLOSED
                                                   --reject()--> CLOSED

Documents are multiplexed. Each side names a document by its own *channel*
number, announced in its SYNC (the client's HELLO documents take channels 0,
1, ... in order), and every later message about the document carries the
sender's channel. Per document and session (see :data:`DOC_TRANSITIONS`)::

    NONE --local open_doc--> LOCAL --remote SYNC--> OPEN
    NONE --remote SYNC--> REMOTE (event DocRequested) --open_doc--> OPEN
    any  --DOC_ERROR either way, epoch mismatch--> CLOSED

On OPEN both sides know each other's version (state vector) and epoch. Equal
epochs: the session emits :class:`CatchUpNeeded` and the shell answers with
:meth:`Session.send_catch_up` (``doc.export_yjs_update(since=remote version)``,
update number 1, possibly empty), then forwards each later transaction's own
update with :meth:`Session.send_update` (numbers 2, 3, ...). The receiver emits
:class:`UpdateReceived`; the shell imports the update, stores it durably, and
only then calls :meth:`Session.ack` (cumulative). So a document is *synced* on a
session (:meth:`Session.is_synced`) when our catch-up and every later update are
acknowledged (the peer durably has everything we have) and the peer's catch-up
and every later update we received are imported and acknowledged (we have
everything the peer had told us of).

Anything wrong that the peer sends (malformed, oversized, unknown, out of
state, invalid update, forged writer) closes the session: the error is
recorded (:attr:`Session.error`), a CLOSE frame with its code is queued, a
:class:`Closed` event is emitted, and ``receive_data`` returns normally. A lost,
duplicated, reordered or corrupted frame fails the next frame's check value
(``messages.py``) and closes the session the same way; the reconnect's state
vector exchange then resends whatever the peer lacks. That is the whole
recovery story (``proofs/SYNC.md`` argues why it converges).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from crdtsync.errors import (
    ConnectionClosedError,
    CrdtSyncError,
    EpochMismatchError,
    ErrorCode,
    ForbiddenWriterError,
    FrameTooLargeError,
    InvalidAuthError,
    InvalidUpdateError,
    LimitExceededError,
    LocalProtocolError,
    MalformedFrameError,
    ProtocolError,
    ProtocolTimeoutError,
    RateLimitError,
    UnexpectedMessageError,
    UpdateRejectedError,
    VersionMismatchError,
    wire_code,
)
from crdtsync.format import zstd
from crdtsync.format.accel import update_writes
from crdtsync.format.version import Version
from crdtsync.format.yupdate import DEFAULT_LIMITS, UpdateLimits
from crdtsync.protocol import messages as m
from crdtsync.protocol.awareness import decode_awareness, split_awareness
from crdtsync.protocol.limits import TokenBucket, presence_fits_rate

__all__ = [
    "DOC_TRANSITIONS",
    "TRANSITIONS",
    "AwarenessReceived",
    "CatchUpNeeded",
    "Closed",
    "DocClosed",
    "DocRequested",
    "DocState",
    "DocSynced",
    "Event",
    "HelloReceived",
    "Opened",
    "Role",
    "Session",
    "SessionOptions",
    "State",
    "UpdateReceived",
    "WriterOwner",
    "WriterRegistry",
    "check_auth",
    "new_writes",
]

MAX_NAME_BYTES = 1024  # document names on the wire, UTF-8
_MAX_EPOCH_BYTES = 64
# Closed channels (by name) and closed remote channel numbers a session remembers.
_MAX_REMEMBERED = 1024
# Frame bytes around an UPDATE's data: array head, type, chan, seq, enc, bytes head.
_UPDATE_OVERHEAD = 32


class Role(enum.Enum):
    """Which side of the connection this session is."""

    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    """Session states (see the module docstring)."""

    HELLO_SENT = "hello-sent"
    AWAIT_HELLO = "await-hello"
    HELLO_RECEIVED = "hello-received"
    OPEN = "open"
    CLOSED = "closed"


class DocState(enum.Enum):
    """Per-document channel states."""

    NONE = "none"
    LOCAL = "local"
    REMOTE = "remote"
    OPEN = "open"
    CLOSED = "closed"


#: (document state, input) -> next document state. Inputs: "open" (local
#: open_doc), "sync" (remote SYNC). Anything else is a protocol error (remote
#: input) or a LocalProtocolError (local call). DOC_ERROR and epoch mismatches
#: move any state to CLOSED.
DOC_TRANSITIONS: dict[tuple[DocState, str], DocState] = {
    (DocState.NONE, "open"): DocState.LOCAL,
    (DocState.NONE, "sync"): DocState.REMOTE,
    (DocState.CLOSED, "open"): DocState.LOCAL,
    (DocState.CLOSED, "sync"): DocState.REMOTE,
    (DocState.LOCAL, "sync"): DocState.OPEN,
    (DocState.REMOTE, "open"): DocState.OPEN,
}


@dataclass(frozen=True)
class SessionOptions:
    """Limits and timers of a session (seconds, bytes).

    Attributes:
        max_frame: largest frame body we accept (and announce); the peer splits
            larger updates into PART frames.
        limits: update limits (``max_update_bytes`` bounds reassembly and
            decompression); the same object ``Doc`` validates with.
        handshake_timeout: time allowed from start to OPEN.
        ack_timeout: time an update may stay unacknowledged.
        ping_interval: send a PING after this long without sending.
        idle_timeout: close after this long without receiving anything.
        max_docs: documents per session.
        compress_min: updates at least this large are sent zstd-compressed
            (when that makes them smaller).
        verify_writers: check that every update from the peer writes only under
            client ids it owns (see :class:`WriterRegistry`).
        max_refusals: documents the peer may ask for and be refused (or close)
            on one session; past that it is probing, and the session closes.
        open_burst: documents the peer may open (SYNC, the HELLO's included) in
            a burst, each costing us a catch-up (None: no limit); above it, and
            the ``open_rate`` that refills it, the session closes with
            ``RateLimitError`` (LIMIT_EXCEEDED).
        open_rate: documents per second that refill ``open_burst``.
        presence_rate: bytes of AWARENESS frames per second the peer may send,
            all documents together (None: no limit), after a burst of
            ``presence_burst``: over it, a frame is dropped before it is
            decoded (see ``YSessionOptions.presence_rate``).
        presence_burst: the burst of ``presence_rate``.
    """

    max_frame: int = 1 << 20
    limits: UpdateLimits = DEFAULT_LIMITS
    handshake_timeout: float = 10.0
    ack_timeout: float = 30.0
    ping_interval: float = 15.0
    idle_timeout: float = 45.0
    max_docs: int = 100_000
    compress_min: int = 256
    verify_writers: bool = True
    max_refusals: int = 1024
    open_burst: int | None = None
    open_rate: float = 1.0
    presence_rate: float | None = None
    presence_burst: int = 512 << 10


# -- events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HelloReceived:
    """Server side: a client said hello; answer with ``accept()`` or ``reject()``."""

    peer_id: int
    auth: Any
    writers: tuple[int, ...]
    docs: tuple[str, ...]


@dataclass(frozen=True)
class Opened:
    """The handshake completed.

    Attributes:
        peer_id: the peer's id.
        version: the protocol version agreed.
        writers: the client ids the peer declared it writes under.
    """

    peer_id: int
    version: int
    writers: tuple[int, ...] = ()


@dataclass(frozen=True)
class DocRequested:
    """The peer opened a document we have not opened on this session.

    Answer with ``open_doc(name, epoch, version)`` or ``refuse_doc(name, ...)``.
    """

    name: str
    epoch: bytes
    version: Version


@dataclass(frozen=True)
class CatchUpNeeded:
    """Both sides opened the document: send ``export_yjs_update(since)`` with ``send_catch_up``."""

    name: str
    since: Version


@dataclass(frozen=True)
class UpdateReceived:
    """An update arrived: import it, store it durably, then ``ack(name, seq)``."""

    name: str
    seq: int
    update: bytes
    #: Client id -> clock after the update's last struct under it (filled in
    #: when the session verifies writers). The shell passes the ids with new
    #: structs (:func:`new_writes` against the document) to
    #: :meth:`Session.check_writers` before it imports the update.
    writes: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AwarenessReceived:
    """A presence update for a document (raw y-protocols bytes, already validated)."""

    name: str
    data: bytes
    entries: tuple[tuple[int, int, Any], ...]


@dataclass(frozen=True)
class DocSynced:
    """The document became synced on this session (see ``Session.is_synced``)."""

    name: str


@dataclass(frozen=True)
class DocClosed:
    """The document is no longer synced on this session (refused, epoch mismatch...)."""

    name: str
    error: ProtocolError


@dataclass(frozen=True)
class Closed:
    """The session is over; ``error`` is None for a normal close."""

    error: CrdtSyncError | None


Event: TypeAlias = (
    HelloReceived
    | Opened
    | DocRequested
    | CatchUpNeeded
    | UpdateReceived
    | AwarenessReceived
    | DocSynced
    | DocClosed
    | Closed
)


# -- writer ownership ------------------------------------------------------------------------


class WriterOwner(Protocol):
    """What the registry asks of an owner: a session, or a y-protocols connection."""

    @property
    def closed(self) -> bool:
        """Whether the connection is over (its ids are free then)."""
        ...


#: Client ids one connection may own (declared, or written by a connection that
#: declared none). A browser tab is one id and a Peer one per process: this is
#: generous, and keeps a hostile HELLO from filling the registry.
MAX_WRITERS = 1024


class WriterRegistry:
    """Which live connection owns which client id, shared by one relay's connections.

    Two ways to own an id:

    * *declared*: a crdtsync peer's handshake names the ids it writes under, and
      a y-protocols client's first presence message names its own client id
      (stock y-websocket sends it on connect). A write grant is needed.
    * *written*: a connection that declared nothing owns the ids of the new
      structs it writes (a y-protocols client that never announces presence).

    No two live connections own one id: a declaration or a write of new structs
    under an id another live connection owns is refused (a forged write: 9 bytes
    under a victim's client id with a high clock make a relay drop every later
    edit of the victim). A connection that declared its ids may forward others'
    new structs under ids nobody owns (a mesh peer, a tab relaying another tab's
    edits) and owns nothing by it, so the author can still declare its id when it
    connects. Structs the relay already has are never a claim: forwarding known
    history locks nobody out. A peer reconnecting before the relay noticed its
    old connection die is refused until then, and retries with backoff: the
    declared peer id is not a secret, so it cannot be what lets a newcomer take
    a live connection's ids.
    """

    def __init__(self, max_per_owner: int = MAX_WRITERS) -> None:
        self.max_per_owner = max_per_owner
        # client id -> owning connection; owner -> its ids (release is O(own ids)).
        self._owner: dict[int, WriterOwner] = {}
        self._ids: dict[WriterOwner, set[int]] = {}
        # Owners that declared ids (they do not own what they merely forward).
        self._declared: set[WriterOwner] = set()

    def _taken(self, owner: WriterOwner, cid: int) -> bool:
        other = self._owner.get(cid)
        return other is not None and other is not owner and not other.closed

    def _bind(self, owner: WriterOwner, ids: list[int]) -> None:
        mine = self._ids.setdefault(owner, set())
        fresh = [c for c in ids if c not in mine]
        if len(mine) + len(fresh) > self.max_per_owner:
            raise LimitExceededError(
                f"more than {self.max_per_owner} client ids for one connection"
            )
        for cid in fresh:
            old = self._owner.get(cid)
            if old is not None and old is not owner:
                # A closed owner not yet released: its claim is void.
                self._ids.get(old, set()).discard(cid)
            self._owner[cid] = owner
            mine.add(cid)

    def declare(
        self, owner: WriterOwner, client_ids: Iterable[int], *, strict: bool = True
    ) -> int | None:
        """Bind the ids a connection says it writes under.

        Args:
            owner: the connection.
            client_ids: its ids.
            strict: refuse all when one is taken (a handshake); if False, skip
                taken ids (a presence message, which may echo other clients').

        Returns:
            With ``strict``, the first id another live connection owns (nothing
            is bound then); otherwise None.

        Raises:
            LimitExceededError: more than ``max_per_owner`` ids.
        """
        ids = list(dict.fromkeys(client_ids))
        taken = [c for c in ids if self._taken(owner, c)]
        if taken and strict:
            return taken[0]
        free = [c for c in ids if c not in taken] if taken else ids
        self._bind(owner, free)
        self._declared.add(owner)
        return None

    def claim_writes(self, owner: WriterOwner, client_ids: Iterable[int]) -> int | None:
        """Check, and for a connection that declared nothing bind, ids of new structs.

        Returns:
            The first id another live connection owns (nothing is bound), or None.

        Raises:
            LimitExceededError: more than ``max_per_owner`` ids.
        """
        ids = list(client_ids)
        for cid in ids:
            if self._taken(owner, cid):
                return cid
        if owner not in self._declared:
            self._bind(owner, ids)
        return None

    def release(self, owner: WriterOwner) -> None:
        """Forget every id ``owner`` owns (it closed)."""
        self._declared.discard(owner)
        for cid in self._ids.pop(owner, ()):
            if self._owner.get(cid) is owner:
                del self._owner[cid]

    def owner(self, client_id: int) -> WriterOwner | None:
        """The connection owning ``client_id`` (None if nobody, or if it closed)."""
        owner = self._owner.get(client_id)
        return None if owner is None or owner.closed else owner

    def __len__(self) -> int:
        return len(self._owner)


def check_auth(auth: Any) -> None:
    """Check that ``auth`` can travel in a HELLO (a CBOR value of the frame subset).

    Raises:
        InvalidAuthError: it cannot (a set or another type CBOR does not carry
            here, or nesting deeper than 16); also a ``ValueError``.
    """
    try:
        m.cbor_encode(auth)
    except ValueError as exc:
        raise InvalidAuthError(f"the auth value cannot be sent in a handshake: {exc}") from None


def new_writes(writes: Mapping[int, int], known: Mapping[int, int]) -> list[int]:
    """Client ids under which an update writes structs beyond ``known`` (a state vector).

    Args:
        writes: client id -> clock after the update's last struct for it.
        known: what the receiving document has (``doc.version``).
    """
    return [c for c, end in writes.items() if end > known.get(c, 0)]


# -- per-document channel ------------------------------------------------------------------


@dataclass(eq=False)
class _Channel:
    name: str
    state: DocState = DocState.NONE
    local_chan: int | None = None
    remote_chan: int | None = None
    epoch: bytes = b""
    remote_epoch: bytes = b""
    remote_version: Version = field(default_factory=Version)
    catch_up_sent: bool = False
    send_seq: int = 0  # last update number sent
    acked: int = 0  # last of ours the peer acknowledged
    recv_seq: int = 0  # last update number received
    recv_acked: int = 0  # last of theirs we acknowledged
    unacked_since: float | None = None  # when the oldest unacknowledged send was made
    parts: bytearray | None = None  # PART chunks of update recv_seq + 1
    synced: bool = False  # last reported synced state


class Session:
    """The sync protocol for one connection (sans-I/O).

    Example: two sessions, two documents, and a list in between::

        >>> from crdtsync import Doc
        >>> alice, bob = Doc(), Doc()
        >>> alice.text("t").insert(0, "hi")
        >>> a = Session.client(1, docs=[("notes", b"", alice.version)])
        >>> b = Session.server(2)
        >>> def shell(s, doc):  # what the asyncio Peer does with events
        ...     while events := s.events_received():
        ...         for ev in events:
        ...             if isinstance(ev, HelloReceived):
        ...                 s.accept()
        ...             elif isinstance(ev, DocRequested):
        ...                 s.open_doc(ev.name, b"", doc.version)
        ...             elif isinstance(ev, CatchUpNeeded):
        ...                 s.send_catch_up(ev.name, doc.export_yjs_update(since=ev.since))
        ...             elif isinstance(ev, UpdateReceived):
        ...                 doc.import_yjs_update(ev.update)
        ...                 s.ack(ev.name, ev.seq)
        >>> def pump():  # move frames both ways until nothing moves
        ...     moved = True
        ...     while moved:
        ...         moved = False
        ...         for src, dst, doc in ((a, b, bob), (b, a, alice)):
        ...             for frame in src.data_to_send():
        ...                 dst.receive_data(frame)
        ...                 moved = True
        ...             shell(dst, doc)
        >>> pump()
        >>> str(bob.text("t")), a.is_synced("notes"), b.is_synced("notes")
        ('hi', True, True)
        >>> unsubscribe = alice.observe_updates(
        ...     lambda update, origin, local: a.send_update("notes", update))
        >>> alice.text("t").insert(2, "!")   # live: the transaction's own update
        >>> a.is_synced("notes")             # sent, not yet acknowledged
        False
        >>> pump()
        >>> str(bob.text("t")), a.is_synced("notes")
        ('hi!', True)

    Use :meth:`client` and :meth:`server` to construct.
    """

    def __init__(
        self,
        role: Role,
        peer_id: int,
        *,
        now: float = 0.0,
        options: SessionOptions | None = None,
        registry: WriterRegistry | None = None,
    ) -> None:
        # Which side we are.
        self.role = role
        # Our peer id, sent in the handshake.
        self.local_peer_id = peer_id
        # The remote peer id (known after the handshake).
        self.peer_id: int | None = None
        # Limits and timers.
        self.options = options or SessionOptions()
        # Whether updates from the peer are checked against the writer registry.
        self.verify_writers = self.options.verify_writers
        # Shared ownership of client ids (a private one if not given).
        self.registry = registry if registry is not None else WriterRegistry()
        # Protocol state.
        self.state = State.HELLO_SENT if role is Role.CLIENT else State.AWAIT_HELLO
        # Negotiated protocol version (None until OPEN).
        self.version: int | None = None
        # Why the session closed (None: open, or closed normally).
        self.error: CrdtSyncError | None = None
        # Close code we sent or received (the refined one, see errors.REFINES).
        self.close_code: int | None = None
        # Frames.
        self._reader = m.FrameReader(self.options.max_frame)
        self._writer = m.FrameWriter()
        self._out: list[bytes] = []
        self._out_bytes = 0  # sum of len(f) for f in _out (asked at every send)
        self._events: list[Event] = []
        # Largest frame body the peer accepts (ours until it tells us).
        self._peer_max_frame = self.options.max_frame
        # Documents by name, and channels by number on each side.
        self._docs: dict[str, _Channel] = {}
        self._by_local: dict[int, _Channel] = {}
        self._by_remote: dict[int, _Channel] = {}
        # Channels whose synced state may have changed since the last report:
        # checking only these keeps a session with many documents O(1) per frame.
        self._dirty: set[_Channel] = set()
        # Remote channels we closed: late frames on them are ignored, not errors.
        # Only the latest are remembered (a frame that late is an error then), and
        # closed channels are forgotten past a bound: a peer that opens and closes,
        # or is refused, again and again must not grow the session.
        self._dead_remote: OrderedDict[int, None] = OrderedDict()
        self._closed_names: OrderedDict[str, None] = OrderedDict()
        self._refused = 0
        # What the peer may still open: each open costs a catch-up (O(document)).
        o = self.options
        self._opens = TokenBucket(o.open_rate, o.open_burst, now) if o.open_burst else None
        # Presence it may send: each is sent on to everyone in the document.
        self._presence = (
            TokenBucket(o.presence_rate, o.presence_burst, now) if o.presence_rate else None
        )
        # Unfinished PART reassembly, all channels together: one budget per session.
        self._parts_bytes = 0
        # Bytes of updates received, reassembled and decompressed (what a shell
        # budgets: a compressed frame may carry many times its size).
        self._update_bytes = 0
        self._next_chan = 0
        # Protocol versions we speak, and the client's HELLO (server side).
        self._versions: tuple[int, ...] = m.PROTOCOL_VERSIONS
        self._hello: m.Hello | None = None
        # Messages the client queued before WELCOME.
        self._deferred: list[m.Message] = []
        # Clock, and the times that drive the timers.
        self._now = now
        self._started = now
        self._last_received = now
        self._last_sent = now

    @classmethod
    def client(
        cls,
        peer_id: int,
        *,
        docs: Iterable[tuple[str, bytes, Version]] = (),
        auth: Any = None,
        writers: Iterable[int] = (),
        versions: Iterable[int] = m.PROTOCOL_VERSIONS,
        now: float = 0.0,
        options: SessionOptions | None = None,
        registry: WriterRegistry | None = None,
    ) -> Session:
        """A session for the side that connected; it queues HELLO at once.

        Args:
            peer_id: our peer id.
            docs: ``(name, epoch, version)`` of documents to open in the handshake.
            auth: any CBOR-encodable value for the server's auth hook.
            writers: client ids we write under (declared for the server's check).
            versions: protocol versions we speak.
            now: current time.
            options: limits and timers.
            registry: writer registry shared with our other sessions.

        Raises:
            InvalidAuthError: ``auth`` cannot be encoded in a frame.
        """
        check_auth(auth)
        self = cls(Role.CLIENT, peer_id, now=now, options=options, registry=registry)
        entries = []
        for name, epoch, version in docs:
            ch = self._new_channel(name)
            ch.state = DocState.LOCAL
            ch.epoch = epoch
            entries.append((name, epoch, version.to_bytes()))
        self._versions = tuple(versions)
        self._send(
            m.Hello(
                self._versions,
                peer_id,
                auth,
                tuple(writers),
                tuple(entries),
                self.options.max_frame,
            )
        )
        return self

    @classmethod
    def server(
        cls,
        peer_id: int,
        *,
        versions: Iterable[int] = m.PROTOCOL_VERSIONS,
        now: float = 0.0,
        options: SessionOptions | None = None,
        registry: WriterRegistry | None = None,
    ) -> Session:
        """A session for the side that accepted the connection; it waits for HELLO."""
        self = cls(Role.SERVER, peer_id, now=now, options=options, registry=registry)
        self._versions = tuple(versions)
        return self

    # -- I/O-facing API ------------------------------------------------------------------

    def receive_data(self, data: bytes, *, now: float | None = None) -> None:
        """Feed bytes received from the transport. Never raises on bad input.

        Args:
            data: any slice of the byte stream.
            now: current time (default: the last time given to the session).
        """
        if now is not None:
            self._now = now
        if self.state is State.CLOSED or not data:
            return
        self._last_received = self._now
        self._reader.feed(data)
        try:
            while not self.closed:
                body = self._reader.next_body()
                if body is None:
                    break
                self._dispatch(m.decode_message(body))
        except ProtocolError as exc:
            self._fail(exc)
        self._report_synced()

    def receive_eof(self) -> None:
        """The transport closed. The session ends (with an error unless CLOSE came first)."""
        if self.state is not State.CLOSED:
            self._set_closed(ConnectionClosedError("the connection closed without a CLOSE frame"))

    @property
    def bytes_to_send(self) -> int:
        """Bytes of the frames queued and not yet taken by ``data_to_send``."""
        return self._out_bytes

    @property
    def update_bytes(self) -> int:
        """Bytes of updates received so far, reassembled and decompressed.

        A compressed UPDATE may carry many times its size (up to
        ``max_update_bytes``): a shell budgeting what a peer makes it parse and
        import reads this, not the bytes on the wire.
        """
        return self._update_bytes

    def data_to_send(self) -> list[bytes]:
        """Frames to write to the transport, in order (each a complete frame)."""
        out, self._out = self._out, []
        self._out_bytes = 0
        return out

    def events_received(self) -> list[Event]:
        """Events since the last call."""
        ev, self._events = self._events, []
        return ev

    def get_timer(self) -> float | None:
        """The time at which :meth:`handle_timer` must be called next (None: never)."""
        if self.state is State.CLOSED:
            return None
        o = self.options
        if self.state is not State.OPEN:
            return self._started + o.handshake_timeout
        deadlines = [self._last_received + o.idle_timeout, self._last_sent + o.ping_interval]
        pending = [c.unacked_since for c in self._docs.values() if c.unacked_since is not None]
        if pending:
            deadlines.append(min(pending) + o.ack_timeout)
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        """Advance the clock: send keepalives, enforce timeouts."""
        self._now = now
        if self.state is State.CLOSED:
            return
        o = self.options
        if self.state is not State.OPEN:
            if now >= self._started + o.handshake_timeout:
                self._fail(ProtocolTimeoutError("handshake did not complete in time"))
            return
        if now >= self._last_received + o.idle_timeout:
            self._fail(ProtocolTimeoutError(f"nothing received for {o.idle_timeout:g} s"))
            return
        for ch in self._docs.values():
            if ch.unacked_since is not None and now >= ch.unacked_since + o.ack_timeout:
                self._fail(ProtocolTimeoutError(f"update on {ch.name!r} not acknowledged in time"))
                return
        if now >= self._last_sent + o.ping_interval:
            self._send(m.Ping())

    # -- shell-facing actions ------------------------------------------------------------

    def accept(
        self,
        *,
        writers: Iterable[int] = (),
        verify_writers: bool | None = None,
        declare: bool = True,
    ) -> None:
        """Server: accept the client after :class:`HelloReceived`; queues WELCOME.

        Args:
            writers: client ids we write under (declared to the client).
            verify_writers: override ``options.verify_writers`` for this peer
                (False for a trusted relay or mesh peer that forwards others' edits).
            declare: bind the client ids the peer declared to this session. False
                for a read-only peer: it writes nothing, so it owns nothing (else
                it could lock a writer out of its own id).
        """
        if self.state is not State.HELLO_RECEIVED:
            raise LocalProtocolError(f"accept() in state {self.state.value}")
        if verify_writers is not None:
            self.verify_writers = verify_writers
        hello = self._hello
        assert hello is not None
        assert self.version is not None
        # Before WELCOME: a peer refused its ids never sees the session open.
        if self.verify_writers and declare and not self._declare(hello.writers):
            return
        self._send(
            m.Welcome(self.version, self.local_peer_id, tuple(writers), self.options.max_frame)
        )
        self.state = State.OPEN
        self._events.append(Opened(hello.peer_id, self.version, tuple(hello.writers)))
        try:
            for chan, (name, epoch, version) in enumerate(hello.docs):
                self._on_sync(m.Sync(chan, name, epoch, version))
        except ProtocolError as exc:
            self._fail(exc)

    def reject(self, error: ProtocolError) -> None:
        """Server: refuse the client (e.g. ``AuthError("bad token")``); queues CLOSE."""
        if self.state is not State.HELLO_RECEIVED:
            raise LocalProtocolError(f"reject() in state {self.state.value}")
        self._fail(error)

    def fail(self, error: ProtocolError) -> None:
        """The shell found the peer breaking a rule (a budget spent): close with ``error``.

        Queues CLOSE with the error's code and records it, as if the session had
        found it itself. Idempotent once closed.
        """
        self._fail(error)

    def open_doc(self, name: str, epoch: bytes, version: Version) -> None:
        """Open a document on this session (queues SYNC).

        Args:
            name: document name.
            epoch: our incarnation of it.
            version: our current version.

        Raises:
            LocalProtocolError: it is already open, or the session is closed.
        """
        if self.state is State.CLOSED:
            raise LocalProtocolError("the session is closed")
        if self.role is Role.SERVER and self.state is not State.OPEN:
            raise LocalProtocolError("open_doc() before accept()")
        ch = self._docs.get(name)
        current = ch.state if ch is not None else DocState.NONE
        nxt = DOC_TRANSITIONS.get((current, "open"))
        if nxt is None:
            raise LocalProtocolError(f"document {name!r} is already open on this session")
        if ch is None or current is DocState.CLOSED:
            ch = self._new_channel(name)
        else:
            ch.local_chan = self._alloc_chan(ch)
        ch.state = nxt
        ch.epoch = epoch
        assert ch.local_chan is not None
        answers = ch.remote_chan if current is DocState.REMOTE else None
        msg = m.Sync(ch.local_chan, name, epoch, version.to_bytes(), answers)
        if self.state is State.HELLO_SENT:
            self._deferred.append(msg)
        else:
            self._send(msg)
        if nxt is DocState.OPEN:
            self._opened(ch)

    def refuse_doc(self, name: str, error: ProtocolError) -> None:
        """Refuse or stop syncing a document on this session (queues DOC_ERROR)."""
        ch = self._docs.get(name)
        if ch is None or ch.state is DocState.CLOSED or self.state is not State.OPEN:
            return
        self._close_doc(ch, error, send=True)
        self._refused += 1
        if self._refused > self.options.max_refusals:
            self._fail(
                LimitExceededError(f"more than {self.options.max_refusals} documents refused")
            )

    def send_catch_up(self, name: str, update: bytes) -> None:
        """Send the answer to :class:`CatchUpNeeded` (update number 1; may be empty)."""
        ch = self._docs.get(name)
        if ch is None or ch.state is not DocState.OPEN:
            return  # closed meanwhile (epoch mismatch, DOC_ERROR, session close)
        if ch.catch_up_sent:
            raise LocalProtocolError(f"catch-up for {name!r} already sent")
        ch.catch_up_sent = True
        self._send_update(ch, update)

    def send_update(self, name: str, update: bytes) -> bool:
        """Send a live update (a transaction's own update).

        Returns:
            False, and sends nothing, when the document is not open here or its
            catch-up is not sent yet: the catch-up, computed from the document
            later, will contain this update.
        """
        ch = self._docs.get(name)
        if ch is None or ch.state is not DocState.OPEN or not ch.catch_up_sent:
            return False
        if self.state is not State.OPEN:
            return False
        self._send_update(ch, update)
        return True

    def ack(self, name: str, seq: int) -> None:
        """Acknowledge updates up to ``seq`` of ``name``: they are durably stored."""
        ch = self._docs.get(name)
        if ch is None or ch.state is not DocState.OPEN or self.state is not State.OPEN:
            return
        if seq > ch.recv_seq:
            raise LocalProtocolError(f"ack({name!r}, {seq}) beyond received {ch.recv_seq}")
        if seq > ch.recv_acked:
            ch.recv_acked = seq
            self._dirty.add(ch)
            assert ch.local_chan is not None
            self._send(m.Ack(ch.local_chan, seq))
            self._report_synced()

    def check_writers(self, client_ids: Iterable[int]) -> bool:
        """The shell found an update writing new structs under ``client_ids``.

        Call it before importing the update (with :func:`new_writes` of
        :attr:`UpdateReceived.writes` against the document). Ids another live
        connection owns close the session with FORBIDDEN_WRITER.

        Returns:
            Whether the update may be imported.
        """
        if not self.verify_writers:
            return True
        if self.state is State.CLOSED:
            # It failed later in the same batch (say, garbage after this frame):
            # the update itself may still be imported, unacknowledged, but a
            # closed session binds nothing (its ids were released).
            return all(self.registry.owner(c) in (None, self) for c in client_ids)
        return self._bind_writers(self.registry.claim_writes, client_ids)

    def reject_update(self, name: str, error: CrdtSyncError) -> None:
        """The shell could not import an update from the peer: close with INVALID_UPDATE."""
        self._fail(UpdateRejectedError(f"update for {name!r} refused: {error}"))

    def send_awareness(self, name: str, data: bytes) -> bool:
        """Send a y-protocols awareness update for ``name`` (False if not open here).

        An update larger than the peer's frame limit (a whole room's presence)
        is sent as several, split between entries.
        """
        ch = self._docs.get(name)
        if ch is None or ch.state is not DocState.OPEN or self.state is not State.OPEN:
            return False
        assert ch.local_chan is not None
        for part in split_awareness(data, max(self._peer_max_frame - _UPDATE_OVERHEAD, 64)):
            self._send(m.Awareness(ch.local_chan, part))
        return True

    def close(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close the session (queues CLOSE). Idempotent."""
        if self.state is State.CLOSED:
            return
        self.close_code = code
        self._queue_frame(self._writer.frame(m.Close(*_wire(code, reason))))
        self._set_closed(
            None
            if code in (ErrorCode.NO_ERROR, ErrorCode.GOING_AWAY)
            else ProtocolError(reason, code=code)
        )

    # -- queries -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the session is over (the state may change under any call)."""
        return self.state is State.CLOSED

    def docs(self) -> list[str]:
        """Names of documents open on this session (both sides opened, not closed)."""
        return [n for n, c in self._docs.items() if c.state is DocState.OPEN]

    def doc_state(self, name: str) -> DocState:
        """The channel state of ``name``."""
        ch = self._docs.get(name)
        return ch.state if ch is not None else DocState.NONE

    def is_synced(self, name: str) -> bool:
        """Whether ``name`` is in sync on this session.

        True when the document is open on both sides, the peer has acknowledged
        our catch-up and every update we sent since, and we received the peer's
        catch-up and acknowledged every update it sent.
        """
        ch = self._docs.get(name)
        return ch is not None and self.state is State.OPEN and self._synced(ch)

    @staticmethod
    def _synced(ch: _Channel) -> bool:
        return (
            ch.state is DocState.OPEN
            and ch.catch_up_sent
            and ch.acked == ch.send_seq
            and ch.recv_seq >= 1
            and ch.recv_acked == ch.recv_seq
            and ch.parts is None
        )

    def remote_epoch(self, name: str) -> bytes | None:
        """The epoch the peer announced for ``name`` in its SYNC."""
        ch = self._docs.get(name)
        return ch.remote_epoch if ch is not None and ch.remote_chan is not None else None

    def remote_version(self, name: str) -> Version | None:
        """The version the peer announced for ``name`` in its SYNC."""
        ch = self._docs.get(name)
        return ch.remote_version if ch is not None and ch.state is not DocState.NONE else None

    # -- internals: sending ----------------------------------------------------------------

    def _send(self, msg: m.Message) -> None:
        self._queue_frame(self._writer.frame(msg))
        self._last_sent = self._now

    def _new_channel(self, name: str) -> _Channel:
        if (
            sum(1 for c in self._docs.values() if c.state is not DocState.CLOSED)
            >= self.options.max_docs
        ):
            raise LimitExceededError(f"more than {self.options.max_docs} documents on one session")
        ch = _Channel(name)
        old = self._docs.get(name)
        if old is not None and old.local_chan is not None:
            self._by_local.pop(old.local_chan, None)
        self._docs[name] = ch
        ch.local_chan = self._alloc_chan(ch)
        return ch

    def _alloc_chan(self, ch: _Channel) -> int:
        chan = self._next_chan
        self._next_chan += 1
        self._by_local[chan] = ch
        return chan

    def _send_update(self, ch: _Channel, update: bytes) -> None:
        enc, data = m.ENC_RAW, update
        if len(update) >= self.options.compress_min:
            packed = zstd.compress(update, level=3)
            if len(packed) < len(update):
                enc, data = m.ENC_ZSTD, packed
        ch.send_seq += 1
        ch.synced = False  # until the ack: DocSynced fires again then
        self._dirty.add(ch)
        if ch.unacked_since is None:
            ch.unacked_since = self._now
        assert ch.local_chan is not None
        room = max(self._peer_max_frame - _UPDATE_OVERHEAD, 1)
        while len(data) > room:
            self._send(m.Part(ch.local_chan, ch.send_seq, data[:room]))
            data = data[room:]
        self._send(m.Update(ch.local_chan, ch.send_seq, enc, data))

    # -- internals: receiving ----------------------------------------------------------

    def _dispatch(self, msg: m.Message) -> None:
        mtype = m.MESSAGE_TYPES[type(msg)]
        handler = TRANSITIONS.get((self.state, mtype))
        if handler is None:
            raise UnexpectedMessageError(f"{mtype.name} is not allowed in state {self.state.value}")
        handler(self, msg)

    def _on_hello(self, msg: m.Hello) -> None:
        common = set(msg.versions) & set(self._versions)
        if not common:
            raise VersionMismatchError(
                f"no common protocol version (peer: {list(msg.versions)}, "
                f"us: {list(self._versions)})"
            )
        self.version = max(common)
        self.peer_id = msg.peer_id
        if len(msg.writers) > self.registry.max_per_owner:
            raise LimitExceededError(
                f"HELLO declares {len(msg.writers)} client ids "
                f"(at most {self.registry.max_per_owner})"
            )
        if msg.max_frame:
            self._peer_max_frame = msg.max_frame
        for name, epoch, version in msg.docs:
            self._check_doc_fields(name, epoch, version)
        self._hello = msg
        self.state = State.HELLO_RECEIVED
        self._events.append(
            HelloReceived(msg.peer_id, msg.auth, msg.writers, tuple(d[0] for d in msg.docs))
        )

    def _on_welcome(self, msg: m.Welcome) -> None:
        if msg.version not in self._versions:
            raise VersionMismatchError(
                f"server chose version {msg.version}, we speak {list(self._versions)}"
            )
        self.version = msg.version
        self.peer_id = msg.peer_id
        if msg.max_frame:
            self._peer_max_frame = msg.max_frame
        self.state = State.OPEN
        if self.verify_writers and not self._declare(msg.writers):
            return
        self._events.append(Opened(msg.peer_id, msg.version, tuple(msg.writers)))
        deferred, self._deferred = self._deferred, []
        for d in deferred:
            self._send(d)

    def _check_doc_fields(self, name: str, epoch: bytes, version: bytes) -> Version:
        if not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise MalformedFrameError(f"document name must be 1 to {MAX_NAME_BYTES} bytes")
        if len(epoch) > _MAX_EPOCH_BYTES:
            raise MalformedFrameError(f"epoch longer than {_MAX_EPOCH_BYTES} bytes")
        try:
            return Version.from_bytes(version)
        except InvalidUpdateError as exc:
            raise MalformedFrameError(f"bad version for {name!r}: {exc}") from None

    def _on_sync(self, msg: m.Sync) -> None:
        version = self._check_doc_fields(msg.name, msg.epoch, msg.version)
        if msg.answers is None and self._opens is not None and not self._opens.take(self._now):
            raise RateLimitError(
                f"documents opened faster than {self.options.open_rate:g} a second "
                f"(bursts of {self.options.open_burst})"
            )
        if msg.chan in self._by_remote or msg.chan in self._dead_remote:
            raise UnexpectedMessageError(f"SYNC reuses channel {msg.chan}")
        ch = self._docs.get(msg.name)
        current = ch.state if ch is not None else DocState.NONE
        if msg.answers is not None and not (
            ch is not None and current is DocState.LOCAL and ch.local_chan == msg.answers
        ):
            # The answer to an offer we have closed since (DOC_ERROR crossed it):
            # not a new request. Close the peer's channel instead of pairing it.
            self._forget_remote(msg.chan)
            self._send(
                m.DocError(
                    msg.name,
                    int(ErrorCode.DOC_REFUSED),
                    "answer to a closed offer",
                    your_chan=msg.chan,
                )
            )
            return
        nxt = DOC_TRANSITIONS.get((current, "sync"))
        if nxt is None:
            raise UnexpectedMessageError(f"SYNC for {msg.name!r}, already open by the peer")
        if ch is None or current is DocState.CLOSED:
            if (
                sum(1 for c in self._docs.values() if c.state is not DocState.CLOSED)
                >= self.options.max_docs
            ):
                raise LimitExceededError(f"more than {self.options.max_docs} documents")
            ch = _Channel(msg.name)
            self._docs[msg.name] = ch
        ch.state = nxt
        ch.remote_chan = msg.chan
        ch.remote_epoch = msg.epoch
        ch.remote_version = version
        self._by_remote[msg.chan] = ch
        if nxt is DocState.OPEN:
            self._opened(ch)
        else:
            self._events.append(DocRequested(msg.name, msg.epoch, version))

    def _opened(self, ch: _Channel) -> None:
        if ch.epoch != ch.remote_epoch:
            self._close_doc(
                ch,
                EpochMismatchError(
                    f"document {ch.name!r}: our epoch {ch.epoch.hex() or '(original)'}, "
                    f"the peer's {ch.remote_epoch.hex() or '(original)'}"
                ),
                send=True,
            )
            return
        self._events.append(CatchUpNeeded(ch.name, ch.remote_version))

    def _close_doc(self, ch: _Channel, error: ProtocolError, *, send: bool) -> None:
        if send and self.state is State.OPEN:
            code, reason, detail = _wire(error.code, error.reason[:200])
            self._send(m.DocError(ch.name, code, reason, ch.remote_chan, ch.local_chan, detail))
        ch.state = DocState.CLOSED
        ch.unacked_since = None
        if ch.parts is not None:
            self._parts_bytes -= len(ch.parts)
        ch.parts = None
        if ch.remote_chan is not None:
            self._by_remote.pop(ch.remote_chan, None)
            self._forget_remote(ch.remote_chan)
        if ch.local_chan is not None:
            self._by_local.pop(ch.local_chan, None)
        ch.synced = False
        self._dirty.discard(ch)
        self._closed_names[ch.name] = None
        self._closed_names.move_to_end(ch.name)
        while len(self._closed_names) > _MAX_REMEMBERED:
            old, _ = self._closed_names.popitem(last=False)
            gone = self._docs.get(old)
            if gone is not None and gone.state is DocState.CLOSED:
                del self._docs[old]
        self._events.append(DocClosed(ch.name, error))

    def _forget_remote(self, chan: int) -> None:
        self._dead_remote[chan] = None
        while len(self._dead_remote) > _MAX_REMEMBERED:
            self._dead_remote.popitem(last=False)

    def _remote_channel(self, chan: int) -> _Channel | None:
        ch = self._by_remote.get(chan)
        if ch is None:
            if chan in self._dead_remote:
                return None  # we closed it; the peer had not heard yet
            raise UnexpectedMessageError(f"message on unknown channel {chan}")
        if ch.state is not DocState.OPEN:
            raise UnexpectedMessageError(f"message on {ch.name!r} before it is open")
        return ch

    def _on_part(self, msg: m.Part) -> None:
        ch = self._remote_channel(msg.chan)
        if ch is None:
            return
        if msg.seq != ch.recv_seq + 1:
            raise UnexpectedMessageError(
                f"PART {msg.seq} on {ch.name!r}, expected {ch.recv_seq + 1}"
            )
        if ch.parts is None:
            ch.parts = bytearray()
        ch.parts += msg.data
        self._parts_bytes += len(msg.data)
        limit = self.options.limits.max_update_bytes
        if len(ch.parts) > limit:
            raise FrameTooLargeError(f"update on {ch.name!r} exceeds {limit} bytes")
        if self._parts_bytes > limit:
            # One budget for the whole session: a peer sends one update at a
            # time, so unfinished ones on many documents are an attack on memory.
            raise FrameTooLargeError(f"unfinished updates on this session exceed {limit} bytes")

    def _on_update(self, msg: m.Update) -> None:
        ch = self._remote_channel(msg.chan)
        if ch is None:
            return
        if msg.seq != ch.recv_seq + 1:
            raise UnexpectedMessageError(
                f"UPDATE {msg.seq} on {ch.name!r}, expected {ch.recv_seq + 1}"
            )
        data = msg.data
        if ch.parts is not None:
            self._parts_bytes -= len(ch.parts)
            ch.parts += data
            data, ch.parts = bytes(ch.parts), None
        limit = self.options.limits.max_update_bytes
        if len(data) > limit:
            raise FrameTooLargeError(f"update on {ch.name!r} exceeds {limit} bytes")
        if msg.enc == m.ENC_ZSTD:
            data = _unzstd(data, limit)
        elif msg.enc != m.ENC_RAW:
            raise MalformedFrameError(f"unknown update encoding {msg.enc}")
        self._update_bytes += len(data)
        writes: dict[int, int] = {}
        if self.verify_writers:
            try:
                writes = update_writes(data, self.options.limits)
            except InvalidUpdateError as exc:
                raise UpdateRejectedError(f"update for {ch.name!r} refused: {exc}") from None
        ch.recv_seq = msg.seq
        ch.synced = False  # until we acknowledge it
        self._dirty.add(ch)
        self._events.append(UpdateReceived(ch.name, msg.seq, data, writes))

    def _on_ack(self, msg: m.Ack) -> None:
        ch = self._remote_channel(msg.chan)
        if ch is None:
            return
        if not ch.acked <= msg.seq <= ch.send_seq:
            raise UnexpectedMessageError(
                f"ACK {msg.seq} on {ch.name!r}: sent {ch.send_seq}, acknowledged {ch.acked}"
            )
        ch.acked = msg.seq
        self._dirty.add(ch)
        # Progress restarts the clock: a long queue is not a dead peer.
        ch.unacked_since = None if ch.acked == ch.send_seq else self._now

    def _on_awareness(self, msg: m.Awareness) -> None:
        ch = self._remote_channel(msg.chan)
        if ch is None:
            return
        if self._presence is not None and not presence_fits_rate(
            self._presence, self._now, len(msg.data)
        ):
            return  # over its byte rate: dropped undecoded
        entries = decode_awareness(msg.data)
        self._events.append(AwarenessReceived(ch.name, msg.data, tuple(entries)))

    def _on_doc_error(self, msg: m.DocError) -> None:
        ch = self._docs.get(msg.name)
        if ch is None or ch.state is DocState.CLOSED:
            return  # both sides closed it at once (epoch mismatch is seen by both)
        mine = msg.your_chan is not None and msg.your_chan == ch.local_chan
        theirs = msg.my_chan is not None and msg.my_chan == ch.remote_chan
        if not (mine or theirs):
            return  # about an older channel of this document
        self._close_doc(
            ch,
            ProtocolError.for_code(msg.code, msg.reason, from_peer=True, detail=msg.detail),
            send=False,
        )

    def _on_ping(self, msg: m.Ping) -> None:
        """Nothing to do: receiving it already reset the idle timer."""

    def _on_close(self, msg: m.Close) -> None:
        normal = msg.code in (ErrorCode.NO_ERROR, ErrorCode.GOING_AWAY)
        error = ProtocolError.for_code(msg.code, msg.reason, from_peer=True, detail=msg.detail)
        refined = msg.detail is not None and error.code == msg.detail
        self.close_code = int(error.code) if refined else msg.code
        self._set_closed(None if normal else error)

    # -- internals: errors and closing ---------------------------------------------------

    def _declare(self, client_ids: Iterable[int]) -> bool:
        return self._bind_writers(self.registry.declare, client_ids)

    def _bind_writers(
        self, bind: Callable[[WriterOwner, Iterable[int]], int | None], client_ids: Iterable[int]
    ) -> bool:
        """Bind ids with the registry; a refusal or too many ids closes the session."""
        try:
            bad = bind(self, client_ids)
        except LimitExceededError as exc:
            self._fail(exc)
            return False
        if bad is None:
            return True
        self._fail(ForbiddenWriterError(f"client id {bad} belongs to another live connection"))
        return False

    def _queue_frame(self, frame: bytes) -> None:
        self._out.append(frame)
        self._out_bytes += len(frame)

    def _fail(self, error: ProtocolError) -> None:
        if self.state is State.CLOSED:
            return
        self.close_code = int(error.code)
        self._queue_frame(self._writer.frame(m.Close(*_wire(error.code, error.reason[:200]))))
        self._set_closed(error)

    def _set_closed(self, error: CrdtSyncError | None) -> None:
        self.state = State.CLOSED
        self.error = error
        self.registry.release(self)
        for ch in self._docs.values():
            ch.synced = False
            ch.unacked_since = None
        self._events.append(Closed(error))

    def _report_synced(self) -> None:
        if self.state is not State.OPEN:
            return
        dirty, self._dirty = self._dirty, set()
        for ch in dirty:
            now_synced = self._synced(ch)
            if now_synced and not ch.synced:
                self._events.append(DocSynced(ch.name))
            ch.synced = now_synced


#: A message handler: an unbound ``Session._on_*`` method.
_Handler = Callable[["Session", Any], None]

#: (session state, message type) -> handler. Anything else is UNEXPECTED_MESSAGE.
#: Method references, not names: a renamed handler fails at import and under mypy.
TRANSITIONS: dict[tuple[State, m.MsgType], _Handler] = {
    (State.AWAIT_HELLO, m.MsgType.HELLO): Session._on_hello,
    (State.HELLO_SENT, m.MsgType.WELCOME): Session._on_welcome,
    (State.OPEN, m.MsgType.SYNC): Session._on_sync,
    (State.OPEN, m.MsgType.UPDATE): Session._on_update,
    (State.OPEN, m.MsgType.PART): Session._on_part,
    (State.OPEN, m.MsgType.ACK): Session._on_ack,
    (State.OPEN, m.MsgType.AWARENESS): Session._on_awareness,
    (State.OPEN, m.MsgType.DOC_ERROR): Session._on_doc_error,
    (State.OPEN, m.MsgType.PING): Session._on_ping,
    (State.HELLO_SENT, m.MsgType.CLOSE): Session._on_close,
    (State.AWAIT_HELLO, m.MsgType.CLOSE): Session._on_close,
    (State.HELLO_RECEIVED, m.MsgType.CLOSE): Session._on_close,
    (State.OPEN, m.MsgType.CLOSE): Session._on_close,
}


def _wire(code: int, reason: str) -> tuple[int, str, int | None]:
    """CLOSE / DOC_ERROR fields for an error code: a refined code goes as a detail."""
    sent, detail = wire_code(code)
    return sent, reason, detail


def _unzstd(data: bytes, limit: int) -> bytes:
    """Decompress one zstd frame that must declare a content size within ``limit``."""
    return zstd.decompress(
        data,
        limit,
        what="compressed update",
        malformed=MalformedFrameError,
        too_large=FrameTooLargeError,
    )
