"""The one error tree of crdtsync.

Every error the library raises on purpose derives from :class:`CrdtSyncError`,
itself a plain :class:`Exception`, so ``except CrdtSyncError`` catches everything
we raise and nothing from pycrdt's Rust core can escape as a ``BaseException``:
the model layer translates pycrdt's panics at the boundary.

The tree::

    CrdtSyncError
    ├── InvalidUpdateError (also ValueError)      bytes from outside were refused
    │   ├── MalformedUpdateError                   they do not parse, or break the format's rules
    │   │   └── MissingUpdatesError                they depend on changes not received yet
    │   ├── UpdateLimitError                       they exceed a configured limit
    │   └── UnsupportedVersionError                a format version this release cannot read
    ├── InvalidValueError (also TypeError, ValueError)
    │                                              a value cannot be stored (set, object, NaN, ...)
    ├── RootTypeError (also TypeError)             a root name is already used with another type
    ├── InvalidOperationError (also ValueError)    a local edit that cannot be done (cycle...)
    │   ├── TreeCycleError                         a tree move would put a node under itself
    │   ├── ReadOnlyValueError (also TypeError)    a change to a plain dict/list stored whole
    │   └── DocNotOpenError (also KeyError)        a document that is not open (``Peer.presence``)
    ├── EngineError                                pycrdt failed in a way validation did not foresee
    ├── ProtocolError                              a sync session failed; ``.code`` is the wire code
    │   ├── LocalProtocolError                     this side misused the session API (code 1)
    │   │   └── InvalidAuthError (also ValueError) an ``auth`` value a handshake cannot carry
    │   ├── MalformedFrameError                    a frame that does not decode (code 2)
    │   ├── FrameTooLargeError                     a frame or reassembled update over the limit (3)
    │   ├── UnknownMessageError                    a message type this version does not know (4)
    │   ├── UnexpectedMessageError                 a message not allowed in the current state (5)
    │   ├── VersionMismatchError                   no protocol version in common (6)
    │   ├── AuthError                              the auth hook refused the peer (7)
    │   │   ├── TokenError                         a token missing, forged or malformed (18)
    │   │   │   └── TokenExpiredError              an access token is past its expiry (19)
    │   │   ├── RoomNotAllowedError                the token does not name this room (20)
    │   │   └── NoSuchDocumentError                a missing document asked for without the right
    │   │                                          to create it (a read-only grant; code 14)
    │   ├── UpdateRejectedError                    an update failed validation (8)
    │   ├── ForbiddenWriterError                   an update writes under another's client id (9)
    │   ├── EpochMismatchError                     different incarnations of a document (10)
    │   ├── ProtocolTimeoutError (also TimeoutError)   no handshake, ack or keepalive in time (11)
    │   ├── LimitExceededError                     too many documents, chunks or pending bytes (12)
    │   │   ├── RateLimitError                     more messages than the rate limit allows
    │   │   ├── DocumentFullError                  a document at its size limit refused an update
    │   │   └── RelayFullError                     every room a relay holds in memory is in use
    │   ├── PeerGoingAwayError                     the peer closed the session normally (13)
    │   ├── ReadOnlyError                          an update over a read-only grant (16)
    │   ├── InvalidRoomError                       a room (document) name the relay refuses (17)
    │   └── RoomMovedError                         another cluster node owns the room (21)
    ├── StoreError                                 a document store failed (I/O, corruption)
    │   └── StoreLockedError                       another writer holds the store (or the document)
    ├── KeyFileError                               a key file is missing, malformed or not private
    ├── PairingError                               a pairing failed: wrong code, bad invite, timeout
    ├── TransportError (also OSError)              a connection could not be made or broke
    │   ├── ConnectionClosedError                  send or receive on a closed connection
    │   ├── ConnectTimeoutError (also TimeoutError)    no handshake in time (``Peer.connect``)
    │   ├── UnsupportedAddressError (also ValueError)  no transport handles the address's scheme
    │   ├── HandshakeError                         a LAN link's key exchange failed (group key...)
    │   │   └── PeerIdentityError                  the peer's proven key is not the expected one
    │   └── LinkFrameError                         a LAN frame refused: tampered, replayed, cut, big
    ├── UnsupportedTransportError (also TypeError) a transport lacks an ability the caller needs
    └── MissingDependencyError (also ImportError)  an optional extra is not installed (``.extra``)

Errors split like h11's: ``InvalidUpdateError`` is the remote side's fault (the
document is unchanged), the others are the caller's. Sync sessions split the same
way: :class:`LocalProtocolError` is raised to the caller who misused the API; every
other :class:`ProtocolError` describes what the *peer* did (or what the peer reported
about us, with ``from_peer=True``) and is recorded on the session, never raised out
of ``receive_data``. Each protocol error class carries its wire code (h2-style), see
:class:`ErrorCode` and ``docs/PROTOCOL.md``. Codes 18 to 20 refine ``AUTH_FAILED``
and code 22 ``LIMIT_EXCEEDED``: on the wire they travel as a *detail* after it
(:func:`wire_code`), so a peer that predates them still reads the older code and
behaves as it always did.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "REFINES",
    "AuthError",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "CrdtSyncError",
    "DocNotOpenError",
    "DocumentFullError",
    "EngineError",
    "EpochMismatchError",
    "ErrorCode",
    "ForbiddenWriterError",
    "FrameTooLargeError",
    "HandshakeError",
    "InvalidAuthError",
    "InvalidOperationError",
    "InvalidRoomError",
    "InvalidUpdateError",
    "InvalidValueError",
    "KeyFileError",
    "LimitExceededError",
    "LinkFrameError",
    "LocalProtocolError",
    "MalformedFrameError",
    "MalformedUpdateError",
    "MissingDependencyError",
    "MissingUpdatesError",
    "NoSuchDocumentError",
    "PairingError",
    "PeerGoingAwayError",
    "PeerIdentityError",
    "ProtocolError",
    "ProtocolTimeoutError",
    "RateLimitError",
    "ReadOnlyError",
    "ReadOnlyValueError",
    "RelayFullError",
    "RoomMovedError",
    "RoomNotAllowedError",
    "RootTypeError",
    "StoreError",
    "StoreLockedError",
    "TokenError",
    "TokenExpiredError",
    "TransportError",
    "TreeCycleError",
    "UnexpectedMessageError",
    "UnknownMessageError",
    "UnsupportedAddressError",
    "UnsupportedTransportError",
    "UnsupportedVersionError",
    "UpdateLimitError",
    "UpdateRejectedError",
    "VersionMismatchError",
    "wire_code",
]


class CrdtSyncError(Exception):
    """Base class of every error crdtsync raises."""


class InvalidUpdateError(CrdtSyncError, ValueError):
    """Update or saved bytes were refused; the document is unchanged."""


class MalformedUpdateError(InvalidUpdateError):
    """The bytes do not parse, or they break a rule of the format."""


class MissingUpdatesError(MalformedUpdateError):
    """The update depends on changes the receiving document does not have yet.

    Not hostile in itself (updates may arrive out of order), but pycrdt must not
    see it: it integrates blocks past a clock gap (its state vector then lies and
    the replicas diverge for good, or reading loops forever). Keep the update and
    apply it after the missing ones, or re-sync with state vectors.

    Attributes:
        client: the client id of the first missing change.
        clock: its clock.
        needs: ``(client, clock)`` the document must hold for the update to
            become applicable (what a holder of early updates indexes them by).
    """

    def __init__(
        self, message: str, client: int = 0, clock: int = 0, needs: tuple[int, int] | None = None
    ) -> None:
        super().__init__(message)
        self.client = client
        self.clock = clock
        self.needs: tuple[int, int] = needs if needs is not None else (client, clock)


class UpdateLimitError(InvalidUpdateError):
    """The bytes exceed a configured limit (size, depth, count)."""


class UnsupportedVersionError(InvalidUpdateError):
    """The bytes were written by a newer format version than this release reads."""


class InvalidValueError(CrdtSyncError, TypeError, ValueError):
    """A value cannot be stored in a document; nothing was written."""


class RootTypeError(CrdtSyncError, TypeError):
    """A root container name is already in use with another container type."""


class InvalidOperationError(CrdtSyncError, ValueError):
    """A local operation cannot be performed (index out of range, unknown node...)."""


class TreeCycleError(InvalidOperationError):
    """A tree move would make a node its own ancestor; nothing was written."""


class ReadOnlyValueError(InvalidOperationError, TypeError):
    """A plain ``dict`` or ``list`` value read from a document was changed in place.

    Such a value is stored whole (a Yjs client's ``ymap.set(key, {...})``):
    changing the Python copy would change nothing in the document. The message
    says what to do instead.
    """


class DocNotOpenError(InvalidOperationError, KeyError):
    """The document is not open on this peer (open it first with ``Peer.open``)."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; this is a sentence.
        return str(self.args[0]) if self.args else ""


class EngineError(CrdtSyncError):
    """The CRDT engine failed unexpectedly; the message says what it reported."""


class ErrorCode(IntEnum):
    """Wire codes of the sync protocol's CLOSE and DOC_ERROR messages (``docs/PROTOCOL.md``)."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    MALFORMED_FRAME = 2
    FRAME_TOO_LARGE = 3
    UNKNOWN_MESSAGE = 4
    UNEXPECTED_MESSAGE = 5
    VERSION_MISMATCH = 6
    AUTH_FAILED = 7
    INVALID_UPDATE = 8
    FORBIDDEN_WRITER = 9
    EPOCH_MISMATCH = 10
    TIMEOUT = 11
    LIMIT_EXCEEDED = 12
    GOING_AWAY = 13
    DOC_REFUSED = 14
    INTERNAL_ERROR = 15
    READ_ONLY = 16
    INVALID_ROOM = 17
    # Refinements of AUTH_FAILED, sent as a detail after it (see wire_code).
    TOKEN_INVALID = 18
    TOKEN_EXPIRED = 19
    ROOM_NOT_ALLOWED = 20
    ROOM_MOVED = 21
    # A refinement of LIMIT_EXCEEDED, sent as a detail after it (see wire_code).
    TRY_AGAIN_LATER = 22


#: Codes that refine an older one, and the code a peer that predates them reads.
#: On the wire (CLOSE, DOC_ERROR) the older code fills ``code`` and the refined one
#: follows as ``detail``: a field appended within version 1, which older decoders ignore.
REFINES: dict[ErrorCode, ErrorCode] = {
    ErrorCode.TOKEN_INVALID: ErrorCode.AUTH_FAILED,
    ErrorCode.TOKEN_EXPIRED: ErrorCode.AUTH_FAILED,
    ErrorCode.ROOM_NOT_ALLOWED: ErrorCode.AUTH_FAILED,
    ErrorCode.TRY_AGAIN_LATER: ErrorCode.LIMIT_EXCEEDED,
}

_BASE_CODE = {int(refined): int(base) for refined, base in REFINES.items()}


def wire_code(code: int) -> tuple[int, int | None]:
    """How an error code is sent: ``(code, detail)``.

    A refined code (:data:`REFINES`) is sent as its older code with the refined
    one as the detail; every other code as itself, without a detail.
    """
    base = _BASE_CODE.get(int(code))
    return (int(code), None) if base is None else (base, int(code))


class ProtocolError(CrdtSyncError):
    """A sync session failed.

    Attributes:
        code: the wire :class:`ErrorCode` (also a class attribute, h2-style).
        reason: a human-readable reason, as sent or received in the CLOSE frame.
        from_peer: True when the peer reported the error to us in its CLOSE frame,
            False when this side detected it.
    """

    code: ErrorCode = ErrorCode.PROTOCOL_ERROR

    def __init__(self, reason: str = "", *, code: ErrorCode | None = None, from_peer: bool = False):
        super().__init__(reason or type(self).__name__)
        if code is not None:
            self.code = code
        self.reason = reason
        self.from_peer = from_peer

    @staticmethod
    def for_code(
        code: int, reason: str = "", *, from_peer: bool = False, detail: int | None = None
    ) -> ProtocolError:
        """The error class of a wire code (unknown codes give a plain ProtocolError).

        Args:
            code: the code received.
            reason: the reason received.
            from_peer: the peer reported it.
            detail: the refined code sent after ``code``, if any; used when it is
                a known refinement of ``code`` (:data:`REFINES`), ignored otherwise.
        """
        if detail is not None:
            try:
                refined = ErrorCode(detail)
            except ValueError:
                refined = None
            if refined is not None and REFINES.get(refined) == code:
                code = refined
        try:
            known = ErrorCode(code)
        except ValueError:
            return ProtocolError(f"unknown error code {code}: {reason}", from_peer=from_peer)
        cls = _BY_CODE.get(known, ProtocolError)
        return cls(reason, code=known, from_peer=from_peer)


class LocalProtocolError(ProtocolError):
    """This side used the session API wrongly (e.g. sent before the handshake)."""

    code = ErrorCode.PROTOCOL_ERROR


class InvalidAuthError(LocalProtocolError, ValueError):
    """An ``auth`` value a handshake cannot carry (not CBOR-encodable, or nested too deeply).

    Raised where the value is given (``Peer(auth=...)``, ``Session.client``), never
    later from a reconnect in the background.
    """


class MalformedFrameError(ProtocolError):
    """A frame is not valid CBOR, fails its check value or does not match its schema."""

    code = ErrorCode.MALFORMED_FRAME


class FrameTooLargeError(ProtocolError):
    """A frame, or an update reassembled from chunks, is larger than the limit."""

    code = ErrorCode.FRAME_TOO_LARGE


class UnknownMessageError(ProtocolError):
    """A message type this protocol version does not define."""

    code = ErrorCode.UNKNOWN_MESSAGE


class UnexpectedMessageError(ProtocolError):
    """A known message that the session's state does not allow."""

    code = ErrorCode.UNEXPECTED_MESSAGE


class VersionMismatchError(ProtocolError):
    """The two sides have no protocol version in common."""

    code = ErrorCode.VERSION_MISMATCH


class AuthError(ProtocolError):
    """The authorization hook refused the peer or one of its documents."""

    code = ErrorCode.AUTH_FAILED


class UpdateRejectedError(ProtocolError):
    """An update from the peer failed the same validation as ``Doc.import_update``."""

    code = ErrorCode.INVALID_UPDATE


class ForbiddenWriterError(ProtocolError):
    """An update writes operations under a client id that the peer does not own."""

    code = ErrorCode.FORBIDDEN_WRITER


class EpochMismatchError(ProtocolError):
    """The two sides hold different incarnations (epochs) of a document.

    The document was deleted and re-created on one side; merging would resurrect
    the old content, so it is not synced on this session.
    """

    code = ErrorCode.EPOCH_MISMATCH


class ProtocolTimeoutError(ProtocolError, TimeoutError):
    """No handshake, acknowledgement or sign of life arrived in time."""

    code = ErrorCode.TIMEOUT


class LimitExceededError(ProtocolError):
    """Too many documents, pending chunks or unacknowledged bytes."""

    code = ErrorCode.LIMIT_EXCEEDED


class RateLimitError(LimitExceededError):
    """A connection sent more messages than its rate limit allows (y-protocols: close 4529)."""


class DocumentFullError(LimitExceededError):
    """A document reached its size limit: an update that would add to it was refused.

    Nothing changed; what the document already has stays readable, and updates
    carrying nothing new are still accepted. A relay answers so for a room over
    its ``max_room_bytes``.
    """


class RelayFullError(LimitExceededError):
    """Every room the relay holds in memory is in use, and they fill its budget.

    Retry later: rooms are unloaded as their users leave (a relay's
    ``max_loaded_bytes``; y-protocols: close 1013). A :class:`~crdtsync.Peer`
    refused so offers the document again by itself, after a backoff. On the
    wire: ``LIMIT_EXCEEDED`` with the detail ``TRY_AGAIN_LATER``.
    """

    code = ErrorCode.TRY_AGAIN_LATER


class PeerGoingAwayError(ProtocolError):
    """The peer closed the session normally (shutdown, or no error)."""

    code = ErrorCode.GOING_AWAY


class TokenError(AuthError):
    """An access token is missing, malformed, or its signature does not verify."""

    code = ErrorCode.TOKEN_INVALID


class TokenExpiredError(TokenError):
    """An access token is past its expiry time."""

    code = ErrorCode.TOKEN_EXPIRED


class RoomNotAllowedError(AuthError):
    """A valid token that does not name the room (document) asked for."""

    code = ErrorCode.ROOM_NOT_ALLOWED


class NoSuchDocumentError(AuthError):
    """A document that does not exist, asked for by a connection that may not create it.

    A read-only grant never creates a document (a viewer opening rooms nobody
    made would fill the store); its wire code is ``DOC_REFUSED``.
    """

    code = ErrorCode.DOC_REFUSED


class ReadOnlyError(ProtocolError):
    """An update arrived over a read-only grant; it was not applied."""

    code = ErrorCode.READ_ONLY


class InvalidRoomError(ProtocolError, ValueError):
    """A room (document) name the relay refuses: empty, too long, or with bad characters."""

    code = ErrorCode.INVALID_ROOM


class RoomMovedError(ProtocolError):
    """Another node of the relay cluster owns the room; the reason names its URL.

    A node sends it (``DOC_ERROR``) for a document of a crdtsync session that it
    does not own and cannot take; the session stays up for its other documents.
    """

    code = ErrorCode.ROOM_MOVED


_BY_CODE: dict[ErrorCode, type[ProtocolError]] = {
    ErrorCode.NO_ERROR: PeerGoingAwayError,
    ErrorCode.MALFORMED_FRAME: MalformedFrameError,
    ErrorCode.FRAME_TOO_LARGE: FrameTooLargeError,
    ErrorCode.UNKNOWN_MESSAGE: UnknownMessageError,
    ErrorCode.UNEXPECTED_MESSAGE: UnexpectedMessageError,
    ErrorCode.VERSION_MISMATCH: VersionMismatchError,
    ErrorCode.AUTH_FAILED: AuthError,
    ErrorCode.INVALID_UPDATE: UpdateRejectedError,
    ErrorCode.FORBIDDEN_WRITER: ForbiddenWriterError,
    ErrorCode.EPOCH_MISMATCH: EpochMismatchError,
    ErrorCode.TIMEOUT: ProtocolTimeoutError,
    ErrorCode.LIMIT_EXCEEDED: LimitExceededError,
    ErrorCode.GOING_AWAY: PeerGoingAwayError,
    ErrorCode.DOC_REFUSED: AuthError,
    ErrorCode.READ_ONLY: ReadOnlyError,
    ErrorCode.INVALID_ROOM: InvalidRoomError,
    ErrorCode.TOKEN_INVALID: TokenError,
    ErrorCode.TOKEN_EXPIRED: TokenExpiredError,
    ErrorCode.ROOM_NOT_ALLOWED: RoomNotAllowedError,
    ErrorCode.ROOM_MOVED: RoomMovedError,
    ErrorCode.TRY_AGAIN_LATER: RelayFullError,
}


class StoreError(CrdtSyncError):
    """A document store failed: I/O error, corrupt file, or misuse after close."""


class StoreLockedError(StoreError):
    """Someone else is the writer: stop writing, and load again before writing more.

    Raised when a store opens while another store (any process) writes the
    same file or schema, and, for stores shared by several writers (the nodes
    of a relay cluster on PostgreSQL), by a write to a document this writer no
    longer holds: the write was fenced and stored nothing.
    """


class TransportError(CrdtSyncError, OSError):
    """A connection could not be made, or it broke."""


class ConnectionClosedError(TransportError):
    """Sending or receiving on a connection that is closed."""


class KeyFileError(CrdtSyncError):
    """A key file (LAN device identity, group key) is missing, malformed, or readable by others."""


class PairingError(CrdtSyncError):
    """A pairing attempt failed: a wrong code, a malformed invite, or no answer in time."""


class HandshakeError(TransportError):
    """A LAN link's authenticated key exchange failed before any session byte.

    The usual causes: the two sides hold different group keys, the other side is
    not a crdtsync LAN peer (or a different link version), a handshake message
    was tampered with, or the handshake did not finish in time.
    """


class PeerIdentityError(HandshakeError):
    """The peer proved a device key that is not the one expected or allowed.

    Raised when the key does not match the fingerprint its announcement (or a
    ``lan://FINGERPRINT@host:port`` address) claimed, when the key is not on the
    allow-list, or when a peer reached itself.
    """


class LinkFrameError(TransportError):
    """A frame on an established LAN link was refused, and the link closed.

    Attributes:
        kind: ``"tampered"`` (fails authentication), ``"replayed"`` (a counter
            already seen: a replay, or frames reordered), ``"skipped"`` (a counter
            ahead of the next one: frames dropped or reordered), ``"truncated"``
            (the stream ended inside a frame), ``"too-large"`` (over the frame
            size limit) or ``"malformed"`` (an unknown frame type or bad layout).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ConnectTimeoutError(TransportError, TimeoutError):
    """No handshake completed within the time ``Peer.connect`` was given.

    The peer keeps trying in the background (being offline is normal for a
    local-first app); ``except TimeoutError`` catches it too.
    """


class UnsupportedAddressError(TransportError, ValueError):
    """No transport handles this address: an unknown scheme, or one needing an explicit transport.

    Raised at once by ``Peer.connect`` and ``Peer.listen``, never retried.
    """


class UnsupportedTransportError(CrdtSyncError, TypeError):
    """A transport lacks an ability the caller needs (see ``crdtsync.net.Ability``).

    ``YProvider`` needs connections that keep message boundaries: y-protocols
    messages carry no length of their own.
    """


class MissingDependencyError(CrdtSyncError, ImportError):
    """An optional dependency is not installed; the message says which extra installs it.

    Attributes:
        extra: the name of the extra, as in ``pip install 'crdtsync[websocket]'``.
    """

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra
