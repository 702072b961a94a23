"""The byte formats on the Rust core when it is built, on Python when it is not.

Theory of operation
===================

``crdtsync._native`` is an optional extension module built from ``native/``
(a PyO3 crate) by setuptools-rust. It ports the format code that dominates
load and receive times -- the v1 update parser/serializer of
:mod:`crdtsync.format.yupdate`, the compact columnar codec of
:mod:`crdtsync.format.columnar` with its LZMA/zstd framing, and the bounded zstd
unframing of :mod:`crdtsync.format.envelope` -- with the same acceptance, the same
error classes and byte-identical output. The Python modules stay the
reference: ``scripts/fuzz_differential.py`` feeds both the same inputs and
fails on any disagreement.

This module picks the path once, at import:

* :data:`NATIVE` is true when ``crdtsync._native`` imports and the
  environment variable ``CRDTSYNC_PURE_PYTHON`` is not set to a non-empty
  value other than ``0`` (tests run both paths that way);
* a missing extension (an install from source without a Rust toolchain) is
  logged on the ``crdtsync.format.accel`` logger and warned about once: everything
  still works, only slower.

Each function below calls the native code or the Python reference; their
results and exceptions are the same either way. A bug that panics in the
native code is raised as :class:`~crdtsync.errors.MalformedUpdateError`
(never an abort, never pyo3's ``PanicException``).
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from types import ModuleType
from typing import Any, Protocol, TypeAlias, cast

from crdtsync.format.yupdate import (
    CONTENT_ANY,
    CONTENT_DOC,
    CONTENT_FORMAT,
    CONTENT_JSON,
    CONTENT_TYPE,
    DEFAULT_LIMITS,
    AnyContent,
    Content,
    DocContent,
    FormatContent,
    ParsedUpdate,
    Struct,
    TypeContent,
    UpdateLimits,
    encode_delete_set,
)

__all__ = [
    "NATIVE",
    "PATH",
    "NativeUpdate",
    "Parsed",
    "check_update",
    "compact_decode",
    "compact_decode_parsed",
    "compact_encode",
    "native_module",
    "parse_update",
    "to_parsed_update",
    "unzstd",
    "update_writes",
]

logger = logging.getLogger("crdtsync.format.accel")

#: Environment variable forcing the pure-Python path (for tests and comparisons).
PURE_PYTHON_ENV = "CRDTSYNC_PURE_PYTHON"


def _forced_pure() -> bool:
    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")


def _load() -> tuple[ModuleType | None, str]:
    """Imports the extension unless forced off; returns it and a description."""
    if _forced_pure():
        logger.debug("%s is set: using the pure-Python path", PURE_PYTHON_ENV)
        return None, f"pure Python ({PURE_PYTHON_ENV} is set)"
    try:
        # By name: the extension is optional, and the layer contracts should not
        # see this as an import of the package root.
        _native = importlib.import_module("crdtsync._native")
    except ImportError as exc:
        msg = (
            f"crdtsync._native is not available ({exc}); using the pure-Python path, "
            "which is correct but much slower (install with a Rust toolchain to build it)"
        )
        # (info, not warning: the warning below is what unconfigured logging shows)
        logger.info(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return None, "pure Python (crdtsync._native is not built)"
    build = str(_native.BUILD)
    logger.debug("using %s", build)
    return _native, f"native Rust core ({build})"


_NATIVE_MODULE: ModuleType | None
#: Which path is in use, for humans (``crdtsync --version`` prints it).
PATH: str
_NATIVE_MODULE, PATH = _load()
#: True when the Rust core is in use.
NATIVE: bool = _NATIVE_MODULE is not None


class NativeUpdate(Protocol):
    """A ``crdtsync._native.Update``: a v1 update parsed into Rust (and its bytes)."""

    def writes(self) -> dict[int, int]:
        """Client id -> clock after its last struct that is not a Skip."""
        ...

    def is_empty(self) -> bool:
        """Whether it carries neither structs nor deletions."""
        ...

    def plain_ascii(self) -> bool:
        """Whether every struct is a GC, a Skip, deleted content or an ASCII String."""
        ...

    def release(self) -> None:
        """Frees the parse and its bytes; every later use raises ``ValueError``."""
        ...

    def any_string(self, client: int, clock: int) -> str | None:
        """The item at ``client:clock``'s value if it is one string in an item of its own."""
        ...


#: A parsed update: the Python parser's, or the Rust one's (which stays in Rust).
Parsed: TypeAlias = ParsedUpdate | NativeUpdate


def native_module() -> ModuleType | None:
    """The ``crdtsync._native`` module in use, or None on the pure-Python path."""
    return _NATIVE_MODULE


def check_update(data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> None:
    """Checks that ``data`` is a well-formed v1 update within ``limits``.

    The grammar, limits and structural rules of
    :func:`crdtsync.format.yupdate.parse_update`, without building its result.

    Raises:
        MalformedUpdateError: the bytes are not a well-formed v1 update.
        UpdateLimitError: a limit is exceeded.
    """
    if _NATIVE_MODULE is None:
        from crdtsync.format.yupdate import parse_update as py_parse

        py_parse(data, limits)
        return
    _NATIVE_MODULE.check_update(_as_bytes(data, "update"), limits)


def parse_update(data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> ParsedUpdate:
    """:func:`crdtsync.format.yupdate.parse_update` on the fastest path available.

    Returns:
        The parsed update (equal, field by field, on both paths).

    Raises:
        MalformedUpdateError: the bytes are not a well-formed v1 update.
        UpdateLimitError: a limit is exceeded.
    """
    if _NATIVE_MODULE is None:
        from crdtsync.format.yupdate import parse_update as py_parse

        return py_parse(data, limits)
    return to_parsed_update(_NATIVE_MODULE.parse_update(_as_bytes(data, "update"), limits))


def update_writes(data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> dict[int, int]:
    """Checks that ``data`` parses as a v1 update and says what it writes.

    What a session checks a peer's update against before the document sees it
    (``verify_writers``), without building the parse in Python on the native
    path.

    Returns:
        Client id -> clock after the update's last struct that is not a Skip
        (``ParsedUpdate.state_vector_after()``; equal on both paths).

    Raises:
        MalformedUpdateError: the bytes are not a well-formed v1 update.
        UpdateLimitError: a limit is exceeded.
    """
    if _NATIVE_MODULE is None:
        from crdtsync.format.yupdate import parse_update as py_parse

        return py_parse(data, limits).state_vector_after()
    writes = _NATIVE_MODULE.parse_update(_as_bytes(data, "update"), limits).writes()
    return cast(dict[int, int], writes)


def compact_encode(v1: bytes) -> bytes:
    """:func:`crdtsync.format.columnar.compact_encode` (byte-identical on both paths).

    Raises:
        MalformedUpdateError: ``v1`` does not parse.
        UpdateLimitError: ``v1`` exceeds the default limits.
    """
    if _NATIVE_MODULE is None:
        from crdtsync.format.columnar import compact_encode as py_encode

        return py_encode(v1)
    return bytes(_NATIVE_MODULE.compact_encode(_as_bytes(v1, "update"), DEFAULT_LIMITS))


def compact_decode(data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> bytes:
    """:func:`crdtsync.format.columnar.compact_decode` (same result on both paths).

    The native decoder counts the size of the update it rebuilds as it goes
    and stops writing at ``limits.max_update_bytes``: a small input that
    repeats a large key cannot make it allocate more.

    Raises:
        MalformedUpdateError: the data is corrupt or truncated.
        UpdateLimitError: the data would exceed a limit.
    """
    if _NATIVE_MODULE is None:
        from crdtsync.format.columnar import compact_decode as py_decode

        return py_decode(data, limits)
    return bytes(_NATIVE_MODULE.compact_decode(_as_bytes(data, "compact data"), limits))


def compact_decode_parsed(
    data: bytes, limits: UpdateLimits = DEFAULT_LIMITS, *, native: bool | None = None
) -> tuple[bytes, Parsed]:
    """:func:`crdtsync.format.columnar.compact_decode_parsed`, the parse kept on its side.

    On the native path the parse is a :class:`NativeUpdate` (it stays in Rust
    for the native checker); on the Python path a ``ParsedUpdate``.

    Args:
        data: the compact bytes.
        limits: limits of the rebuilt update.
        native: which decoder (None: the one in use).

    Raises:
        MalformedUpdateError: the data is corrupt or truncated.
        UpdateLimitError: the data would exceed a limit.
    """
    if native is None:
        native = _NATIVE_MODULE is not None
    if not native or _NATIVE_MODULE is None:
        from crdtsync.format.columnar import compact_decode_parsed as py_decode

        return py_decode(data, limits)
    v1, parsed = _NATIVE_MODULE.compact_decode_parsed(_as_bytes(data, "compact data"), limits)
    return bytes(v1), cast(NativeUpdate, parsed)


def unzstd(payload: bytes, limit: int) -> bytes:
    """The envelope's bounded zstd unframing (``crdtsync.format.envelope._unzstd``).

    The frame must declare its content size, at most ``limit`` bytes (checked
    before anything is allocated) and decode to exactly that size.

    Raises:
        MalformedUpdateError: corrupt data, or no declared size.
        UpdateLimitError: the declared size is over ``limit``.
    """
    if _NATIVE_MODULE is None:
        from crdtsync.format.envelope import _unzstd

        return _unzstd(payload, limit)
    return bytes(_NATIVE_MODULE.zstd_unframe(_as_bytes(payload, "payload"), limit))


def _as_bytes(data: object, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, not {type(data).__name__}")


def to_parsed_update(native: Any) -> ParsedUpdate:
    """Converts the native parse result to a :class:`~crdtsync.format.yupdate.ParsedUpdate`.

    Args:
        native: a ``crdtsync._native.Update``.

    Returns:
        The same update as ``_yupdate.parse_update`` returns for its bytes.
    """
    clients: dict[int, list[Struct]] = {}
    for client, rows in native.clients():
        structs: list[Struct] = []
        for row in rows:
            cl, clock, length, kind, info, origin, right, parent, parent_sub, raw = row
            content = _content(kind, raw)
            structs.append(
                Struct(cl, clock, length, kind, info, origin, right, parent, parent_sub, content)
            )
        clients[client] = structs
    delete_set = {client: list(ranges) for client, ranges in native.delete_set()}
    parsed = ParsedUpdate(clients, delete_set)
    # Where the delete set starts: an accepted update round-trips byte for byte,
    # so it is what the delete set's own encoding leaves at the end.
    parsed.ds_pos = len(native.encode()) - len(encode_delete_set(delete_set))
    return parsed


def _content(kind: int, raw: Any) -> Content:
    """The payload class ``_yupdate`` uses for a content kind (native rows are tuples)."""
    if kind == CONTENT_FORMAT:
        return FormatContent(*raw)
    if kind == CONTENT_TYPE:
        return TypeContent(*raw)
    if kind == CONTENT_ANY:
        return AnyContent(*raw)
    if kind == CONTENT_DOC:
        return DocContent(*raw)
    if kind == CONTENT_JSON:
        return cast(tuple[str, ...], raw)
    return cast(Content, raw)
