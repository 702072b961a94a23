"""crdtsync: local-first JSON-like documents that merge without conflicts.

Example:
    >>> from crdtsync import Doc
    >>> a, b = Doc(), Doc()
    >>> a.text("body").insert(0, "hello")
    >>> b.import_update(a.export_update())
    >>> str(b.text("body"))
    'hello'
"""

from ._yupdate import UpdateLimits
from .doc import DEFAULT_LIMITS, Change, ChangeEvent, Doc
from .errors import (
    AuthError,
    ConnectionClosedError,
    CrdtSyncError,
    EngineError,
    EpochMismatchError,
    ErrorCode,
    ForbiddenWriterError,
    FrameTooLargeError,
    InvalidOperationError,
    InvalidRoomError,
    InvalidUpdateError,
    InvalidValueError,
    LimitExceededError,
    LocalProtocolError,
    MalformedFrameError,
    MalformedUpdateError,
    PeerGoingAwayError,
    ProtocolError,
    ProtocolTimeoutError,
    ReadOnlyError,
    RoomNotAllowedError,
    RootTypeError,
    StoreError,
    StoreLockedError,
    TokenError,
    TokenExpiredError,
    TransportError,
    UnexpectedMessageError,
    UnknownMessageError,
    UnsupportedVersionError,
    UpdateLimitError,
    UpdateRejectedError,
    VersionMismatchError,
)
from .model import Container, Counter, List, Map, Register, Text
from .store import MemoryStore, SQLiteStore, Store
from .sync import Awareness, Backoff, Grant, HelloInfo, Peer, Session, SessionOptions, Status
from .transports.base import Connection, Listener, Transport
from .tree import Tree
from .version import Version

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "AuthError",
    "Awareness",
    "Backoff",
    "Change",
    "ChangeEvent",
    "Connection",
    "ConnectionClosedError",
    "Container",
    "Counter",
    "CrdtSyncError",
    "Doc",
    "EngineError",
    "EpochMismatchError",
    "ErrorCode",
    "ForbiddenWriterError",
    "FrameTooLargeError",
    "Grant",
    "HelloInfo",
    "InvalidOperationError",
    "InvalidRoomError",
    "InvalidUpdateError",
    "InvalidValueError",
    "LimitExceededError",
    "List",
    "Listener",
    "LocalProtocolError",
    "MalformedFrameError",
    "MalformedUpdateError",
    "Map",
    "MemoryStore",
    "Peer",
    "PeerGoingAwayError",
    "ProtocolError",
    "ProtocolTimeoutError",
    "ReadOnlyError",
    "Register",
    "RoomNotAllowedError",
    "RootTypeError",
    "SQLiteStore",
    "Session",
    "SessionOptions",
    "Status",
    "Store",
    "StoreError",
    "StoreLockedError",
    "Text",
    "TokenError",
    "TokenExpiredError",
    "Transport",
    "TransportError",
    "Tree",
    "UnexpectedMessageError",
    "UnknownMessageError",
    "UnsupportedVersionError",
    "UpdateLimitError",
    "UpdateLimits",
    "UpdateRejectedError",
    "Version",
    "VersionMismatchError",
    "__version__",
]
