"""The public API: what ``import crdtsync`` offers, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import crdtsync

# Pinned: adding a name is a decision (update this list); removing one breaks users.
PUBLIC = {
    "Ability", "AuthError", "Awareness", "AwarenessChange", "Backoff", "Change", "ChangeEvent",
    "ConnectTimeoutError", "Connection", "ConnectionClosedError", "Container", "Counter",
    "CrdtSyncError", "DEFAULT_LIMITS", "Doc", "DocNotOpenError", "DocumentFullError", "EngineError",
    "EpochMismatchError", "ErrorCode", "ForbiddenWriterError", "FrameTooLargeError", "Grant",
    "Guest", "HandshakeError", "HelloInfo", "InvalidAuthError", "InvalidOperationError",
    "InvalidRoomError", "InvalidUpdateError", "InvalidValueError", "KeyFileError",
    "LimitExceededError", "LinkFrameError", "List", "Listener", "LocalProtocolError",
    "MalformedFrameError", "MalformedUpdateError", "Map", "MemoryStore", "MessageConnection",
    "MissingDependencyError", "MissingUpdatesError", "NoSuchDocumentError", "PairingError", "Peer",
    "PeerGoingAwayError", "PeerIdentityError", "ProtocolError", "ProtocolTimeoutError",
    "RateLimitError", "ReadOnlyError", "ReadOnlyValueError", "Register", "RelayFullError",
    "RoomMovedError",
    "RoomNotAllowedError",
    "RootTypeError",
    "SQLiteStore", "Session", "SessionOptions", "Status", "Store", "StoreError",
    "StoreLockedError", "SyncResult", "Text", "TokenError", "TokenExpiredError", "Transport",
    "TransportError", "Tree", "TreeChange", "TreeCycleError", "UnexpectedMessageError",
    "UnknownMessageError",
    "UnsupportedAddressError", "UnsupportedTransportError", "UnsupportedVersionError",
    "UpdateLimitError", "UpdateLimits", "UpdateRejectedError", "Version",
    "VersionMismatchError", "YProvider", "__version__",
}  # fmt: skip


def test_public_names_are_pinned() -> None:
    assert set(crdtsync.__all__) == PUBLIC
    assert len(crdtsync.__all__) == len(set(crdtsync.__all__))


def test_every_public_name_resolves_to_its_defining_module() -> None:
    for name in crdtsync.__all__:
        value = getattr(crdtsync, name)
        if name == "__version__":
            continue
        module = getattr(value, "__module__", None)
        if module is not None and isinstance(value, type):
            assert module.startswith("crdtsync."), (name, module)
    assert set(dir(crdtsync)) >= PUBLIC


def test_every_error_is_a_library_error_and_an_exception() -> None:
    from crdtsync import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            assert issubclass(cls, crdtsync.CrdtSyncError), name
            assert issubclass(cls, Exception), name
            assert name in PUBLIC, f"{name} is in the error tree but not exported"


def test_every_error_class_defined_in_errors_is_exported_from_the_package() -> None:
    """Every exception class ``crdtsync/errors.py`` defines, listed or not in its ``__all__``."""
    from crdtsync import errors

    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
        and not name.startswith("_")
    }
    assert "ReadOnlyValueError" in defined  # the one that was missing
    assert len(defined) > 40  # the scan found the tree, not nothing
    assert sorted(defined - set(errors.__all__)) == []
    assert sorted(defined - set(crdtsync.__all__)) == []
    for name in defined:
        assert getattr(crdtsync, name) is getattr(errors, name), name


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        crdtsync.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_import_is_cheap_and_pulls_no_optional_dependency() -> None:
    code = (
        "import sys, crdtsync, crdtsync.protocol.session, crdtsync.format.envelope\n"
        "heavy = {'pycrdt', 'asyncio', 'websockets', 'sqlite3', 'zeroconf', 'cryptography'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "from crdtsync import Doc\n"
        "print('pycrdt' in sys.modules, 'asyncio' in sys.modules, 'websockets' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "[]", out
    # The model needs the engine, but still no event loop or socket library.
    assert out[1] == "True False False", out
