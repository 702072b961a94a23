r"""The crdtsync envelope: versioned, compressed update and snapshot bytes.

Layout (see ``docs/FORMAT.md`` for the full description and golden vectors)::

    envelope = {                 ; a CBOR map with unsigned-integer keys
        0: "crdtsync",           ; magic
        1: uint,                 ; format version (this release reads 1 and 2; it
                                 ; writes 2 only around a compact payload of
                                 ; layout 2, which older releases cannot read,
                                 ; so that they refuse it as a newer version)
        2: uint,                 ; flags (below)
        3: bytes,                ; payload
        ? 4: [* bytes],          ; held updates (Doc.save): v1 updates received ahead of
                                 ; their predecessors, kept so that saving loses nothing
        ? 5: bytes,              ; derived-state cache (Doc.save): the model's own bytes,
                                 ; e.g. tree shapes; a reader may ignore it
        * uint => any            ; unknown keys are ignored (forward compatibility)
    }

    flags: bit 0  payload is zstd-compressed (a single frame with its content size)
           bit 1  payload is the compact columnar encoding (``_columnar``)
           bit 2  the envelope holds a full-history snapshot (``Doc.save``)

The payload, once decompressed and decoded, is a Yjs v1 update. A flag bit this
release does not know changes how the payload must be read, so it is refused like
an unknown version: :class:`~crdtsync.errors.UnsupportedVersionError`.

Everything here treats its input as hostile: sizes are checked before anything is
buffered or decompressed, the CBOR is decoded without recursion by the same
bounded codec as sync frames (``crdtsync.format.cbor``), and every
failure is one of our :class:`InvalidUpdateError`\\ s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crdtsync.errors import MalformedUpdateError, UnsupportedVersionError, UpdateLimitError
from crdtsync.format import zstd
from crdtsync.format.accel import Parsed, compact_decode_parsed, compact_encode
from crdtsync.format.cbor import decode_cbor, encode_cbor
from crdtsync.format.columnar import VERSION_PER_COLUMN
from crdtsync.format.yupdate import UpdateLimits

__all__ = [
    "FLAG_COMPACT",
    "FLAG_SNAPSHOT",
    "FLAG_ZSTD",
    "FORMAT_VERSION",
    "MAGIC",
    "Envelope",
    "pack",
    "unpack",
]

MAGIC = "crdtsync"
FORMAT_VERSION = 2
# Everything but a compact payload of layout 2 is still written as version 1,
# which every release reads (updates travel between releases).
_FORMAT_VERSION_1 = 1
FLAG_ZSTD = 1
FLAG_COMPACT = 2
FLAG_SNAPSHOT = 4
_KNOWN_FLAGS = FLAG_ZSTD | FLAG_COMPACT | FLAG_SNAPSHOT

# Below this size compression cannot pay for its frame header.
_COMPRESS_MIN = 64
_ZSTD_LEVEL = 3

# Limits of the envelope walk: ours needs depth 1 and 4 items; the slack is for
# future fields, which must stay small and shallow.
_MAX_CBOR_DEPTH = 16
_MAX_CBOR_ITEMS = 10_000


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope: the v1 update and what the flags said about it.

    ``parsed`` is the compact decoder's parse of ``update`` (for the
    validator, which then parses nothing again): a ``ParsedUpdate`` from the
    Python decoder, or a ``crdtsync._native.Update`` from the Rust one; None
    for other payloads.
    """

    update: bytes
    flags: int
    version: int
    held: tuple[bytes, ...] = ()
    parsed: Parsed | None = None
    cache: bytes = b""

    @property
    def snapshot(self) -> bool:
        """Whether this was written by ``Doc.save`` (a full history)."""
        return bool(self.flags & FLAG_SNAPSHOT)


def pack(
    update: bytes,
    *,
    compact: bool = False,
    snapshot: bool = False,
    held: Sequence[bytes] = (),
    cache: bytes = b"",
) -> bytes:
    """Wrap a v1 update in an envelope.

    Args:
        update: the Yjs v1 update.
        compact: use the columnar encoding (slower to write, much smaller: for
            snapshots and storage).
        snapshot: mark it as a full-history snapshot.
        held: updates waiting for predecessors, stored beside the payload.
        cache: state derived from the update that saves its reader work
            (opaque here; the model checks it before trusting it).

    Returns:
        The envelope bytes.
    """
    flags = FLAG_SNAPSHOT if snapshot else 0
    payload = update
    version = _FORMAT_VERSION_1
    if compact:
        # (the Rust encoder when installed: byte for byte the Python one's)
        payload = compact_encode(update)
        flags |= FLAG_COMPACT
        if payload[0] == VERSION_PER_COLUMN:
            version = FORMAT_VERSION
    elif len(update) >= _COMPRESS_MIN:
        packed = zstd.compress(update, level=_ZSTD_LEVEL)
        if len(packed) < len(update):
            payload = packed
            flags |= FLAG_ZSTD
    env: dict[int, Any] = {0: MAGIC, 1: version, 2: flags, 3: payload}
    if held:
        env[4] = [bytes(h) for h in held]
    if cache:
        env[5] = bytes(cache)
    return encode_cbor(env)


def unpack(data: bytes, limits: UpdateLimits, *, native: bool | None = None) -> Envelope:
    """Open an envelope and return the v1 update inside (not yet validated).

    Args:
        data: envelope bytes from anywhere.
        limits: size limits to enforce (``Doc.load`` passes limits whose
            ``max_update_bytes`` is the document limit, ``max_document_bytes``).
        native: decode a compact payload with the Rust decoder (True), the
            Python one (False) or the one in use (None); the parse it hands
            on (``Envelope.parsed``) is that decoder's.

    Returns:
        The envelope.

    Raises:
        MalformedUpdateError: not an envelope, or a corrupt payload.
        UnsupportedVersionError: written by a newer, incompatible version.
        UpdateLimitError: larger than the limits allow, before or after
            decompression.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedUpdateError(f"updates are bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_update_bytes:
        raise UpdateLimitError(
            f"update of {len(data)} bytes exceeds the limit of {limits.max_update_bytes}"
        )
    obj = decode_cbor(
        data, error=MalformedUpdateError, max_items=_MAX_CBOR_ITEMS, max_depth=_MAX_CBOR_DEPTH
    )
    if not isinstance(obj, dict) or obj.get(0) != MAGIC:
        raise MalformedUpdateError("not a crdtsync envelope (missing magic)")
    version, flags, payload = obj.get(1), obj.get(2), obj.get(3)
    if type(version) is not int or version < 1:
        raise MalformedUpdateError(f"bad envelope format version {version!r}")
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"format version {version} is newer than this release reads ({FORMAT_VERSION}); "
            "upgrade crdtsync"
        )
    if type(flags) is not int or flags < 0:
        raise MalformedUpdateError(f"bad envelope flags {flags!r}")
    if flags & ~_KNOWN_FLAGS:
        raise UnsupportedVersionError(
            f"envelope uses flags {flags & ~_KNOWN_FLAGS:#x} this release does not know"
        )
    if type(payload) is not bytes:
        raise MalformedUpdateError("envelope payload is missing or not bytes")
    if flags & FLAG_COMPACT and flags & FLAG_ZSTD:
        raise MalformedUpdateError("envelope flags combine compact and zstd")
    parsed = None
    if flags & FLAG_COMPACT:
        update, parsed = compact_decode_parsed(payload, limits, native=native)
    elif flags & FLAG_ZSTD:
        update = _unzstd(payload, limits.max_update_bytes)
    else:
        update = payload
    held = obj.get(4, ())
    if type(held) is not tuple or not all(type(h) is bytes for h in held):
        raise MalformedUpdateError("envelope field 4 (held updates) must be a list of bytes")
    if sum(len(h) for h in held) > limits.max_update_bytes:
        raise UpdateLimitError("held updates exceed the update size limit")
    cache = obj.get(5, b"")
    if type(cache) is not bytes:
        raise MalformedUpdateError("envelope field 5 (derived-state cache) must be bytes")
    return Envelope(
        update=update, flags=flags, version=version, held=tuple(held), parsed=parsed, cache=cache
    )


def _unzstd(payload: bytes, limit: int) -> bytes:
    return zstd.decompress(
        payload,
        limit,
        what="compressed payload",
        malformed=MalformedUpdateError,
        too_large=UpdateLimitError,
    )
