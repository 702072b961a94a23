"""The one error tree of crdtsync.

Every error the library raises on purpose derives from :class:`CrdtSyncError`,
itself a plain :class:`Exception`, so ``except CrdtSyncError`` catches everything
we raise and nothing from pycrdt's Rust core can escape as a ``BaseException``:
the model layer translates pycrdt's panics at the boundary.

The tree::

    CrdtSyncError
    ├── InvalidUpdateError (also ValueError)      bytes from outside were refused
    │   ├── MalformedUpdateError                   they do not parse, or break the format's rules
    │   ├── UpdateLimitError                       they exceed a configured limit
    │   └── UnsupportedVersionError                a format version this release cannot read
    ├── InvalidValueError (also TypeError, ValueError)
    │                                              a value cannot be stored (set, object, NaN, ...)
    ├── RootTypeError (also TypeError)             a root name is already used with another type
    ├── InvalidOperationError (also ValueError)    a local edit that cannot be done (cycle...)
    └── EngineError                                pycrdt failed in a way validation did not foresee

Errors split like h11's: ``InvalidUpdateError`` is the remote side's fault (the
document is unchanged), the others are the caller's.
"""

from __future__ import annotations

__all__ = [
    "CrdtSyncError",
    "EngineError",
    "InvalidOperationError",
    "InvalidUpdateError",
    "InvalidValueError",
    "MalformedUpdateError",
    "RootTypeError",
    "UnsupportedVersionError",
    "UpdateLimitError",
]


class CrdtSyncError(Exception):
    """Base class of every error crdtsync raises."""


class InvalidUpdateError(CrdtSyncError, ValueError):
    """Update or saved bytes were refused; the document is unchanged."""


class MalformedUpdateError(InvalidUpdateError):
    """The bytes do not parse, or they break a rule of the format."""


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


class EngineError(CrdtSyncError):
    """The CRDT engine failed unexpectedly; the message says what it reported."""
