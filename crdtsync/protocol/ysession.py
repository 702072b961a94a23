"""The y-protocols session: one y-websocket connection's protocol, with no I/O.

Theory of operation
===================

A :class:`YSession` is y-protocols (``crdtsync.protocol.yprotocol``) for one
connection to one room, on either side: ``YProvider`` is a thin asyncio shell
around a client session, and the relay's y-protocols endpoint
(``crdtsync.relay.yconn``) around a server session. Like the crdtsync
:class:`~crdtsync.protocol.session.Session`, it never touches a socket, a clock
or a document: messages go in through :meth:`YSession.receive_data` (one
transport message per call: y-protocols messages carry no length, so the
transport must keep message boundaries, ``crdtsync.net.Ability.MESSAGES``),
messages come out of :meth:`YSession.data_to_send`, what happened comes out of
:meth:`YSession.events_received`, and time goes in as ``now`` (the rate limit
reads it).

The exchange, from either side::

    start(version)        -> sync step 1 (our state vector) [, our presence]
    peer's step 1         => SyncRequested(version)  -> send_sync_step2(doc.export(since=version))
    peer's step 2         => UpdateReceived(step2=True)  -> import, then update_applied(ev)
                             the first one applied: Synced, state CONNECTED -> SYNCED
    peer's update         => UpdateReceived(step2=False) -> import, then update_applied(ev)
    a local transaction   -> send_update(update)
    awareness             => AwarenessReceived(data, entries);  send_awareness(data)
    query awareness       => AwarenessQueried  -> send_awareness(everyone's states)
    auth "permission denied" (client side)
                          => AccessDenied(final=True) before the first sync (access refused:
                             the session closes), final=False after it (a refused write)

States (h11-style: every (role, state, message) triple not in
:data:`Y_TRANSITIONS` is a protocol error, never a silent fallthrough; in
``CLOSED`` everything is ignored)::

    CONNECTED --first step 2 applied--> SYNCED
    CONNECTED, SYNCED --error / close() / final AccessDenied / receive_eof()--> CLOSED

Anything wrong that the peer sends closes the session with a WebSocket close
code (:func:`close_code_for`; ``Closed.code``), records the error
(:attr:`YSession.error`) and emits :class:`Closed`; ``receive_data`` never
raises. Limits, all checked before the message is used: the payload size
(``max_payload``, 1009), the message rate (a :class:`~crdtsync.protocol.limits.TokenBucket`,
4529), and on a server that verifies writers, the client ids of every update
(``WriterRegistry``: the first presence message declares the client's ids, an
update's new structs under another live connection's id close with 1008). What
needs the document (read-only grants, the presence cap of a room, importing) is
the shell's, which answers with :meth:`YSession.refuse_update`,
:meth:`YSession.reject_update` or :meth:`YSession.fail`.

Fan-out is the shell's too: a relay sends one room update to hundreds of
connections, so it encodes it once (``yprotocol.encode_update``) and writes the
same bytes to each socket instead of queueing it in every session.

Example: a browser tab's exchange with a relay, two sessions and a list in between::

    >>> from crdtsync import Doc
    >>> tab, room = Doc(), Doc()
    >>> room.text("body").insert(0, "hello")
    >>> client, server = YSession.client(), YSession.server()
    >>> def shell(s, doc):  # what YProvider and the relay do with events
    ...     for ev in s.events_received():
    ...         if isinstance(ev, SyncRequested):
    ...             s.send_sync_step2(doc.export_yjs_update(since=ev.version))
    ...         elif isinstance(ev, UpdateReceived):
    ...             doc.import_yjs_update(ev.update)
    ...             s.update_applied(ev)
    >>> def pump():  # move messages both ways until nothing moves
    ...     moved = True
    ...     while moved:
    ...         moved = False
    ...         for src, dst, doc in ((client, server, room), (server, client, tab)):
    ...             for message in src.data_to_send():
    ...                 dst.receive_data(message)
    ...                 moved = True
    ...             shell(dst, doc)
    >>> client.start(tab.version); server.start(room.version)
    >>> pump()
    >>> str(tab.text("body")), client.state.value, server.state.value
    ('hello', 'synced', 'synced')
    >>> server.receive_data(bytes([255]))   # garbage closes the connection, never raises
    >>> server.events_received()[-1].code, server.state.value
    (1002, 'closed')
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from crdtsync.errors import (
    AuthError,
    CrdtSyncError,
    ForbiddenWriterError,
    FrameTooLargeError,
    InvalidRoomError,
    InvalidUpdateError,
    LimitExceededError,
    MalformedFrameError,
    ProtocolError,
    RateLimitError,
    ReadOnlyError,
    RoomNotAllowedError,
    UnexpectedMessageError,
    UpdateRejectedError,
)
from crdtsync.format.accel import update_writes
from crdtsync.format.version import Version
from crdtsync.format.yupdate import DEFAULT_LIMITS, UpdateLimits
from crdtsync.protocol import yprotocol as y
from crdtsync.protocol.awareness import decode_awareness
from crdtsync.protocol.limits import TokenBucket, presence_fits_rate
from crdtsync.protocol.session import Role, WriterRegistry

__all__ = [
    "Y_TRANSITIONS",
    "AccessDenied",
    "AwarenessQueried",
    "AwarenessReceived",
    "Closed",
    "SyncRequested",
    "Synced",
    "UpdateReceived",
    "YEvent",
    "YSession",
    "YSessionOptions",
    "YState",
    "close_code_for",
]

# WebSocket close codes (RFC 6455 7.4.1, and y-websocket's 4xxx conventions).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INVALID_ROOM = 4400
CLOSE_BAD_TOKEN = 4401
CLOSE_ROOM_NOT_ALLOWED = 4403
# A read-only client asked for a room that does not exist (it may not create it).
CLOSE_NO_SUCH_ROOM = 4404
# The relay holds as many rooms as it may (max_rooms): no new one.
CLOSE_ROOM_LIMIT = 4413
# 45xx, not 44xx: y-websocket gives up for good on 4400-4499 and retries 45xx.
CLOSE_RATE_LIMITED = 4529

_MAX_REASON = 120  # bytes of a close reason are limited (123 in RFC 6455)


def close_code_for(error: CrdtSyncError, role: Role = Role.SERVER) -> int:
    """The WebSocket close code for ``error``.

    An update that fails validation is 1007 from a server (the relay) and 1002
    from a client (``YProvider`` closes on any bad message from its server the
    same way, as y-websocket's provider does).
    """
    if isinstance(error, FrameTooLargeError):
        return CLOSE_TOO_BIG
    if isinstance(error, RateLimitError):
        return CLOSE_RATE_LIMITED
    if isinstance(error, MalformedFrameError):
        return CLOSE_PROTOCOL_ERROR
    if isinstance(error, InvalidUpdateError | UpdateRejectedError):
        return CLOSE_INVALID_DATA if role is Role.SERVER else CLOSE_PROTOCOL_ERROR
    if isinstance(error, InvalidRoomError):
        return CLOSE_INVALID_ROOM
    if isinstance(error, RoomNotAllowedError):
        return CLOSE_ROOM_NOT_ALLOWED
    if isinstance(error, AuthError):
        return CLOSE_BAD_TOKEN
    if isinstance(error, ProtocolError):
        # A forged writer, too many presence states, another policy breach.
        return CLOSE_POLICY if role is Role.SERVER else CLOSE_PROTOCOL_ERROR
    return CLOSE_INTERNAL_ERROR if role is Role.SERVER else CLOSE_PROTOCOL_ERROR


class YState(enum.Enum):
    """Session states (see the module docstring)."""

    CONNECTED = "connected"
    SYNCED = "synced"
    CLOSED = "closed"


@dataclass(frozen=True)
class YSessionOptions:
    """Limits of a y-protocols session.

    Attributes:
        max_payload: largest update or awareness payload accepted (1009 above).
        rate: messages per second the peer may send (None: no limit); above
            the bucket, the session closes with 4529.
        burst: the bucket's size.
        verify_writers: parse every update and check its new structs' client
            ids with the ``WriterRegistry`` (a server; a read-only one need not:
            it writes nothing).
        declare_presence: the client ids in the peer's first presence message
            are its own (stock y-websocket announces itself on connect): bind
            them with the registry (a server granting writes).
        limits: what parsing an update may cost (when verifying writers).
        answer_burst: sync step 1 and awareness queries the peer may send in a
            burst (None: no limit): each makes us send a whole answer (what the
            peer lacks of the room; everyone's presence), so asking again and
            again is budgeted apart from the message rate. Above it, and the
            ``answer_rate`` that refills it, the session closes (4529).
        answer_rate: answers per second that refill ``answer_burst``.
        presence_rate: bytes of awareness messages per second the peer may send
            (None: no limit), after a burst of ``presence_burst``. Each is sent
            on to the whole room, and decoding one costs what its JSON does: a
            message arriving while the budget is in debt is dropped before it
            is decoded (the next one says it all); one that fits may take the
            budget into debt, so a single large message always passes.
        presence_burst: the burst of ``presence_rate``.
    """

    max_payload: int = 1 << 26
    rate: float | None = None
    burst: int = 2000
    verify_writers: bool = False
    declare_presence: bool = False
    limits: UpdateLimits = DEFAULT_LIMITS
    answer_burst: int | None = None
    answer_rate: float = 1.0
    presence_rate: float | None = None
    presence_burst: int = 512 << 10


# -- events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncRequested:
    """The peer's sync step 1: answer with ``send_sync_step2(export since version)``."""

    version: Version


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    """A sync step 2 or an update: check and import it, then ``update_applied(ev)``.

    ``writes`` (client id -> clock after the update's last struct under it) is
    filled in when the session verifies writers; the shell passes the ids with
    new structs to :meth:`YSession.check_writers` before importing.
    """

    update: bytes
    step2: bool
    writes: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AwarenessReceived:
    """A presence update (raw y-protocols bytes, and the decoded entries)."""

    data: bytes
    entries: tuple[tuple[int, int, Any], ...]


@dataclass(frozen=True, slots=True)
class AwarenessQueried:
    """The peer asks for every known presence state: ``send_awareness(full update)``."""


@dataclass(frozen=True, slots=True)
class Synced:
    """The peer's first sync step 2 is applied: we have what it had."""


@dataclass(frozen=True, slots=True)
class AccessDenied:
    """Client side: the server sent "permission denied".

    ``final``: before the first sync, access itself was refused (an
    :class:`AuthError`; the session closes, and coming back cannot change that).
    After it, a write was refused (a :class:`ReadOnlyError`: a read-only grant);
    the session stays and keeps receiving.
    """

    error: AuthError | ReadOnlyError
    final: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over: close the WebSocket with ``code`` and ``reason``.

    ``error`` is None for a normal close (ours, or the transport's end).
    """

    error: CrdtSyncError | None
    code: int
    reason: str


YEvent: TypeAlias = (
    SyncRequested
    | UpdateReceived
    | AwarenessReceived
    | AwarenessQueried
    | Synced
    | AccessDenied
    | Closed
)


class YSession:
    """The y-protocols for one connection (sans-I/O); see the module docstring.

    Use :meth:`client` and :meth:`server` to construct.
    """

    __slots__ = (
        "_answers",
        "_bucket",
        "_declared",
        "_events",
        "_now",
        "_out",
        "_out_bytes",
        "_presence",
        "close_code",
        "close_reason",
        "error",
        "options",
        "registry",
        "role",
        "state",
    )

    def __init__(
        self,
        role: Role,
        *,
        now: float = 0.0,
        options: YSessionOptions | None = None,
        registry: WriterRegistry | None = None,
    ) -> None:
        # Which side we are.
        self.role = role
        # Limits.
        self.options = options or YSessionOptions()
        # Shared ownership of client ids (a private one if not given).
        self.registry = registry if registry is not None else WriterRegistry()
        # Protocol state.
        self.state = YState.CONNECTED
        # Why the session closed (None: open, or closed normally).
        self.error: CrdtSyncError | None = None
        # The close code and reason to send (None while open).
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._events: list[YEvent] = []
        self._now = now
        o = self.options
        self._bucket = TokenBucket(o.rate, o.burst, now) if o.rate is not None else None
        self._answers = (
            TokenBucket(o.answer_rate, o.answer_burst, now) if o.answer_burst is not None else None
        )
        self._presence = (
            TokenBucket(o.presence_rate, o.presence_burst, now)
            if o.presence_rate is not None
            else None
        )
        # Whether the peer's first presence message declared its ids.
        self._declared = not o.declare_presence

    @classmethod
    def client(cls, *, now: float = 0.0, options: YSessionOptions | None = None) -> YSession:
        """A session for the side that connected (``YProvider``)."""
        return cls(Role.CLIENT, now=now, options=options)

    @classmethod
    def server(
        cls,
        *,
        now: float = 0.0,
        options: YSessionOptions | None = None,
        registry: WriterRegistry | None = None,
    ) -> YSession:
        """A session for the side that accepted the connection (the relay)."""
        return cls(Role.SERVER, now=now, options=options, registry=registry)

    # -- I/O-facing API ------------------------------------------------------------------

    def receive_data(self, data: bytes, *, now: float | None = None) -> None:
        """Feed one message received from the transport. Never raises on bad input.

        Args:
            data: the bytes of exactly one transport message.
            now: current time (default: the last time given to the session).
        """
        if now is not None:
            self._now = now
        if self.state is YState.CLOSED:
            return
        # Every message costs a token, an empty or malformed one too.
        if self._bucket is not None and not self._bucket.take(self._now):
            self.fail(RateLimitError("message rate limit exceeded"))
            return
        try:
            msg = y.decode(data, max_payload=self.options.max_payload)
            handler = Y_TRANSITIONS.get((self.role, self.state, type(msg)))
            if handler is None:
                raise UnexpectedMessageError(
                    f"{type(msg).__name__} is not allowed in state {self.state.value}"
                )
            handler(self, msg)
        except ProtocolError as exc:
            self.fail(exc)

    def receive_text(self, *, now: float | None = None) -> None:
        """The transport delivered a text message: both protocols are binary (close 1003)."""
        if now is not None:
            self._now = now
        self.fail(MalformedFrameError("binary messages only"), code=CLOSE_UNSUPPORTED_DATA)

    def receive_eof(self) -> None:
        """The transport closed. The session ends (normally: y-protocols has no goodbye)."""
        if self.state is not YState.CLOSED:
            self._set_closed(None, CLOSE_NORMAL, "")

    @property
    def bytes_to_send(self) -> int:
        """Bytes of the messages queued and not yet taken by ``data_to_send``."""
        return self._out_bytes

    def data_to_send(self) -> list[bytes]:
        """Messages to write to the transport, in order (each one transport message)."""
        out, self._out = self._out, []
        self._out_bytes = 0
        return out

    def events_received(self) -> list[YEvent]:
        """Events since the last call."""
        ev, self._events = self._events, []
        return ev

    # -- shell-facing actions ------------------------------------------------------------

    def start(self, version: Version, awareness: bytes | None = None) -> None:
        """Queue what both sides send first: sync step 1, and presence if there is any.

        Args:
            version: our document's version (state vector).
            awareness: an awareness update to send along (our state; on a
                server, everyone's), or None.
        """
        self._send(y.encode_sync_step1(version))
        if awareness is not None:
            self._send(y.encode_awareness(awareness))

    def send_sync_step2(self, update: bytes) -> None:
        """Answer :class:`SyncRequested` with what the peer lacks."""
        self._send(y.encode_sync_step2(update))

    def send_update(self, update: bytes) -> bool:
        """Send a transaction's update (False, sending nothing, once closed)."""
        return self._send(y.encode_update(update))

    def send_awareness(self, data: bytes) -> bool:
        """Send an awareness update (False, sending nothing, once closed)."""
        return self._send(y.encode_awareness(data))

    def update_applied(self, ev: UpdateReceived) -> None:
        """The shell imported ``ev``; a first step 2 makes the session SYNCED."""
        if ev.step2 and self.state is YState.CONNECTED:
            self.state = YState.SYNCED
            self._events.append(Synced())

    def check_writers(self, client_ids: Iterable[int]) -> bool:
        """The shell found an update writing new structs under ``client_ids``.

        Call it before importing (with ``new_writes`` of
        :attr:`UpdateReceived.writes` against the document). Ids another live
        connection owns close the session (``ForbiddenWriterError``, 1008).

        Returns:
            Whether the update may be imported.
        """
        if not self.options.verify_writers:
            return True
        if self.state is YState.CLOSED:
            return all(self.registry.owner(c) in (None, self) for c in client_ids)
        return self._bind(self.registry.claim_writes, client_ids)

    def refuse_update(self, reason: str) -> None:
        """Server: a write was refused (a read-only grant): "permission denied", and stay open."""
        self._send(y.encode_auth_denied(reason))

    def reject_update(self, error: CrdtSyncError) -> None:
        """The shell could not import an update: close (1007 on a server, 1002 on a client)."""
        self.fail(error)

    def deny(self, error: AuthError | InvalidRoomError) -> None:
        """Server: refuse the connection before anything of the document is sent.

        A bad token gets "permission denied" with the reason first (y-websocket
        logs it), then 4401 (4403: the token does not name this room); a bad
        room name closes with 4400.
        """
        if self.state is YState.CLOSED:
            return
        if not isinstance(error, InvalidRoomError):
            self._send(y.encode_auth_denied(str(error)))
        self.fail(error)

    def fail(self, error: CrdtSyncError, *, code: int | None = None) -> None:
        """Close because of ``error``, with ``code`` (default: :func:`close_code_for`)."""
        if self.state is YState.CLOSED:
            return
        if code is None:
            code = close_code_for(error, self.role)
        self._set_closed(error, code, str(error)[:_MAX_REASON])

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close normally (1000; 1001 when shutting down). Idempotent."""
        if self.state is not YState.CLOSED:
            self._set_closed(None, code, reason[:_MAX_REASON])

    # -- queries -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the session is over (what the writer registry asks of an owner)."""
        return self.state is YState.CLOSED

    @property
    def synced(self) -> bool:
        """Whether the peer's first sync step 2 was applied and the session is open."""
        return self.state is YState.SYNCED

    # -- internals -------------------------------------------------------------------------

    def _send(self, message: bytes) -> bool:
        if self.state is YState.CLOSED:
            return False
        self._out.append(message)
        self._out_bytes += len(message)
        return True

    def _set_closed(self, error: CrdtSyncError | None, code: int, reason: str) -> None:
        self.state = YState.CLOSED
        self.error = error
        self.close_code = code
        self.close_reason = reason
        self.registry.release(self)
        self._events.append(Closed(error, code, reason))

    def _bind(
        self, bind: Callable[[YSession, Iterable[int]], int | None], client_ids: Iterable[int]
    ) -> bool:
        """Bind ids with the registry; a refusal or too many ids closes the session."""
        try:
            bad = bind(self, client_ids)
        except LimitExceededError as exc:
            self.fail(exc)
            return False
        if bad is None:
            return True
        self.fail(ForbiddenWriterError(f"client id {bad} belongs to another connection"))
        return False

    def _answer(self, what: str) -> None:
        """The peer asks for a whole answer: it costs one of its answer budget."""
        if self._answers is not None and not self._answers.take(self._now):
            raise RateLimitError(f"{what} faster than the answer budget allows")

    def _on_step1(self, msg: y.SyncStep1) -> None:
        self._answer("sync step 1")
        self._events.append(SyncRequested(msg.version))

    def _on_step2(self, msg: y.SyncStep2) -> None:
        self._events.append(UpdateReceived(msg.update, True, self._writes(msg.update)))

    def _on_update(self, msg: y.SyncUpdate) -> None:
        self._events.append(UpdateReceived(msg.update, False, self._writes(msg.update)))

    def _writes(self, update: bytes) -> Mapping[int, int]:
        # The update is parsed here for its client ids (in Rust when the native
        # core is built: no Python objects per struct), and again by
        # Doc.import_yjs_update's validator when the shell imports it.
        if not self.options.verify_writers:
            return {}
        try:
            return update_writes(update, self.options.limits)
        except InvalidUpdateError as exc:
            raise UpdateRejectedError(str(exc)) from None

    def _on_awareness(self, msg: y.AwarenessMessage) -> None:
        if self._presence is not None and not presence_fits_rate(
            self._presence, self._now, len(msg.data)
        ):
            return  # over its byte rate: dropped undecoded
        entries = decode_awareness(msg.data)
        if not self._declared:
            # A client's first presence message is its own state (y-websocket
            # sends it on connect): its client id is what it writes under. Later
            # messages may echo other clients' states, so only the first counts,
            # and ids another live connection owns are skipped, not refused.
            self._declared = True
            live = [c for c, _clock, state in entries if state is not None]
            try:
                self.registry.declare(self, live, strict=False)
            except LimitExceededError as exc:
                self.fail(exc)
                return
        self._events.append(AwarenessReceived(msg.data, tuple(entries)))

    def _on_query(self, msg: y.QueryAwareness) -> None:
        self._answer("awareness queries")
        self._events.append(AwarenessQueried())

    def _on_denied_access(self, msg: y.AuthDenied) -> None:
        # Refused before we got anything: access itself was denied.
        error = AuthError(f"permission denied: {msg.reason}", from_peer=True)
        self._events.append(AccessDenied(error, final=True))
        self._set_closed(error, CLOSE_NORMAL, "")

    def _on_denied_write(self, msg: y.AuthDenied) -> None:
        # After a sync: a refused write (a read-only grant); we stay and keep receiving.
        error = ReadOnlyError(f"permission denied: {msg.reason}", from_peer=True)
        self._events.append(AccessDenied(error, final=False))

    def _on_ignored(self, msg: y.YMessage) -> None:
        """A message that means nothing on this side (a client's auth message to a server)."""


_Handler = Callable[[YSession, Any], None]

#: (role, state, message class) -> handler. Anything else is a protocol error;
#: in CLOSED, everything is ignored.
Y_TRANSITIONS: dict[tuple[Role, YState, type[y.YMessage]], _Handler] = {
    **{
        (role, state, kind): handler
        for role in Role
        for state in (YState.CONNECTED, YState.SYNCED)
        for kind, handler in (
            (y.SyncStep1, YSession._on_step1),
            (y.SyncStep2, YSession._on_step2),
            (y.SyncUpdate, YSession._on_update),
            (y.AwarenessMessage, YSession._on_awareness),
            (y.QueryAwareness, YSession._on_query),
        )
    },
    (Role.CLIENT, YState.CONNECTED, y.AuthDenied): YSession._on_denied_access,
    (Role.CLIENT, YState.SYNCED, y.AuthDenied): YSession._on_denied_write,
    (Role.SERVER, YState.CONNECTED, y.AuthDenied): YSession._on_ignored,
    (Role.SERVER, YState.SYNCED, y.AuthDenied): YSession._on_ignored,
}
