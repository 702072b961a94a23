"""crdtsync: local-first JSON-like documents that merge without conflicts.

Examples:
    >>> from crdtsync import Doc
    >>> a, b = Doc(), Doc()
    >>> a.text("body").insert(0, "hello")
    >>> b.import_update(a.export_update())
    >>> str(b.text("body"))
    'hello'

Importing ``crdtsync`` is cheap: the names below are re-exported lazily (PEP 562),
so ``import crdtsync`` loads neither pycrdt nor asyncio nor any optional
dependency until a name that needs it is first used. ``docs/ARCHITECTURE.md``
says which subpackage owns what.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Quiet by default, like any library: an application that wants crdtsync's log
# lines configures logging (logging.basicConfig(level=logging.DEBUG) shows them all).
logging.getLogger("crdtsync").addHandler(logging.NullHandler())

# Public name -> the module that defines it. tests/test_exports.py pins this list.
_EXPORTS: dict[str, str] = {
    # the document model
    "Doc": "crdtsync.model.doc",
    "Change": "crdtsync.model.doc",
    "ChangeEvent": "crdtsync.model.doc",
    "DEFAULT_LIMITS": "crdtsync.model.doc",
    "Container": "crdtsync.model.containers",
    "Counter": "crdtsync.model.containers",
    "List": "crdtsync.model.containers",
    "Map": "crdtsync.model.containers",
    "Register": "crdtsync.model.containers",
    "Text": "crdtsync.model.containers",
    "Tree": "crdtsync.model.tree",
    "TreeChange": "crdtsync.model.tree_events",
    # bytes and versions
    "UpdateLimits": "crdtsync.format.yupdate",
    "Version": "crdtsync.format.version",
    # sync
    "Awareness": "crdtsync.protocol.awareness",
    "AwarenessChange": "crdtsync.protocol.awareness",
    "Session": "crdtsync.protocol.session",
    "SessionOptions": "crdtsync.protocol.session",
    "Peer": "crdtsync.peer.peer",
    "Backoff": "crdtsync.peer.peer",
    "Grant": "crdtsync.peer.peer",
    "Guest": "crdtsync.peer.guests",
    "HelloInfo": "crdtsync.peer.peer",
    "Status": "crdtsync.peer.peer",
    "SyncResult": "crdtsync.peer.peer",
    "YProvider": "crdtsync.peer.yprovider",
    # seams
    "Ability": "crdtsync.net",
    "Connection": "crdtsync.net",
    "MessageConnection": "crdtsync.net",
    "Listener": "crdtsync.net",
    "Transport": "crdtsync.net",
    "Store": "crdtsync.store.base",
    "MemoryStore": "crdtsync.store.memory",
    "SQLiteStore": "crdtsync.store.sqlite",
    # errors
    "AuthError": "crdtsync.errors",
    "ConnectTimeoutError": "crdtsync.errors",
    "DocNotOpenError": "crdtsync.errors",
    "DocumentFullError": "crdtsync.errors",
    "InvalidAuthError": "crdtsync.errors",
    "MissingDependencyError": "crdtsync.errors",
    "NoSuchDocumentError": "crdtsync.errors",
    "RateLimitError": "crdtsync.errors",
    "UnsupportedAddressError": "crdtsync.errors",
    "UnsupportedTransportError": "crdtsync.errors",
    "ConnectionClosedError": "crdtsync.errors",
    "CrdtSyncError": "crdtsync.errors",
    "EngineError": "crdtsync.errors",
    "EpochMismatchError": "crdtsync.errors",
    "ErrorCode": "crdtsync.errors",
    "ForbiddenWriterError": "crdtsync.errors",
    "FrameTooLargeError": "crdtsync.errors",
    "InvalidOperationError": "crdtsync.errors",
    "InvalidRoomError": "crdtsync.errors",
    "InvalidUpdateError": "crdtsync.errors",
    "InvalidValueError": "crdtsync.errors",
    "LimitExceededError": "crdtsync.errors",
    "LocalProtocolError": "crdtsync.errors",
    "MalformedFrameError": "crdtsync.errors",
    "MalformedUpdateError": "crdtsync.errors",
    "MissingUpdatesError": "crdtsync.errors",
    "PeerGoingAwayError": "crdtsync.errors",
    "ProtocolError": "crdtsync.errors",
    "ProtocolTimeoutError": "crdtsync.errors",
    "ReadOnlyError": "crdtsync.errors",
    "ReadOnlyValueError": "crdtsync.errors",
    "RelayFullError": "crdtsync.errors",
    "RoomMovedError": "crdtsync.errors",
    "RoomNotAllowedError": "crdtsync.errors",
    "RootTypeError": "crdtsync.errors",
    "StoreError": "crdtsync.errors",
    "StoreLockedError": "crdtsync.errors",
    "TokenError": "crdtsync.errors",
    "TokenExpiredError": "crdtsync.errors",
    "TransportError": "crdtsync.errors",
    "TreeCycleError": "crdtsync.errors",
    "UnexpectedMessageError": "crdtsync.errors",
    "UnknownMessageError": "crdtsync.errors",
    "UnsupportedVersionError": "crdtsync.errors",
    "UpdateLimitError": "crdtsync.errors",
    "UpdateRejectedError": "crdtsync.errors",
    "VersionMismatchError": "crdtsync.errors",
    "PeerIdentityError": "crdtsync.errors",
    "PairingError": "crdtsync.errors",
    "LinkFrameError": "crdtsync.errors",
    "KeyFileError": "crdtsync.errors",
    "HandshakeError": "crdtsync.errors",
}

# Literal, so that type checkers read it; tests/test_exports.py checks it matches.
__all__ = [
    "DEFAULT_LIMITS",
    "Ability",
    "AuthError",
    "Awareness",
    "AwarenessChange",
    "Backoff",
    "Change",
    "ChangeEvent",
    "ConnectTimeoutError",
    "Connection",
    "ConnectionClosedError",
    "Container",
    "Counter",
    "CrdtSyncError",
    "Doc",
    "DocNotOpenError",
    "DocumentFullError",
    "EngineError",
    "EpochMismatchError",
    "ErrorCode",
    "ForbiddenWriterError",
    "FrameTooLargeError",
    "Grant",
    "Guest",
    "HandshakeError",
    "HelloInfo",
    "InvalidAuthError",
    "InvalidOperationError",
    "InvalidRoomError",
    "InvalidUpdateError",
    "InvalidValueError",
    "KeyFileError",
    "LimitExceededError",
    "LinkFrameError",
    "List",
    "Listener",
    "LocalProtocolError",
    "MalformedFrameError",
    "MalformedUpdateError",
    "Map",
    "MemoryStore",
    "MessageConnection",
    "MissingDependencyError",
    "MissingUpdatesError",
    "NoSuchDocumentError",
    "PairingError",
    "Peer",
    "PeerGoingAwayError",
    "PeerIdentityError",
    "ProtocolError",
    "ProtocolTimeoutError",
    "RateLimitError",
    "ReadOnlyError",
    "ReadOnlyValueError",
    "Register",
    "RelayFullError",
    "RoomMovedError",
    "RoomNotAllowedError",
    "RootTypeError",
    "SQLiteStore",
    "Session",
    "SessionOptions",
    "Status",
    "Store",
    "StoreError",
    "StoreLockedError",
    "SyncResult",
    "Text",
    "TokenError",
    "TokenExpiredError",
    "Transport",
    "TransportError",
    "Tree",
    "TreeChange",
    "TreeCycleError",
    "UnexpectedMessageError",
    "UnknownMessageError",
    "UnsupportedAddressError",
    "UnsupportedTransportError",
    "UnsupportedVersionError",
    "UpdateLimitError",
    "UpdateLimits",
    "UpdateRejectedError",
    "Version",
    "VersionMismatchError",
    "YProvider",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crdtsync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see: the real names, eagerly
    from crdtsync.errors import (
        AuthError,
        ConnectionClosedError,
        ConnectTimeoutError,
        CrdtSyncError,
        DocNotOpenError,
        DocumentFullError,
        EngineError,
        EpochMismatchError,
        ErrorCode,
        ForbiddenWriterError,
        FrameTooLargeError,
        HandshakeError,
        InvalidAuthError,
        InvalidOperationError,
        InvalidRoomError,
        InvalidUpdateError,
        InvalidValueError,
        KeyFileError,
        LimitExceededError,
        LinkFrameError,
        LocalProtocolError,
        MalformedFrameError,
        MalformedUpdateError,
        MissingDependencyError,
        MissingUpdatesError,
        NoSuchDocumentError,
        PairingError,
        PeerGoingAwayError,
        PeerIdentityError,
        ProtocolError,
        ProtocolTimeoutError,
        RateLimitError,
        ReadOnlyError,
        ReadOnlyValueError,
        RelayFullError,
        RoomMovedError,
        RoomNotAllowedError,
        RootTypeError,
        StoreError,
        StoreLockedError,
        TokenError,
        TokenExpiredError,
        TransportError,
        TreeCycleError,
        UnexpectedMessageError,
        UnknownMessageError,
        UnsupportedAddressError,
        UnsupportedTransportError,
        UnsupportedVersionError,
        UpdateLimitError,
        UpdateRejectedError,
        VersionMismatchError,
    )
    from crdtsync.format.version import Version
    from crdtsync.format.yupdate import UpdateLimits
    from crdtsync.model.containers import Container, Counter, List, Map, Register, Text
    from crdtsync.model.doc import DEFAULT_LIMITS, Change, ChangeEvent, Doc
    from crdtsync.model.tree import Tree
    from crdtsync.model.tree_events import TreeChange
    from crdtsync.net import Ability, Connection, Listener, MessageConnection, Transport
    from crdtsync.peer.guests import Guest
    from crdtsync.peer.peer import Backoff, Grant, HelloInfo, Peer, Status, SyncResult
    from crdtsync.peer.yprovider import YProvider
    from crdtsync.protocol.awareness import Awareness, AwarenessChange
    from crdtsync.protocol.session import Session, SessionOptions
    from crdtsync.store.base import Store
    from crdtsync.store.memory import MemoryStore
    from crdtsync.store.sqlite import SQLiteStore
