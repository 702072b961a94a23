"""Strict parser, validator and serializer for Yjs v1 updates.

Theory of operation
===================

pycrdt (Rust ``yrs`` underneath) trusts the updates it is given: some malformed
updates make it raise ``pyo3_runtime.PanicException`` (a ``BaseException``) and
leave the document corrupted, and deeply nested values overflow its native
stack and kill the process.  Every update that comes from outside therefore
goes through :func:`validate_update` first; an update that passes is safe to
hand to ``Doc.apply_update``, anything else raises
:class:`~crdtsync.errors.MalformedUpdateError` or
:class:`~crdtsync.errors.UpdateLimitError` whose message names the problem and
the byte offset.

The v1 format (lib0 encoding)
-----------------------------
``varuint``
    little-endian base-128, 7 bits a byte, high bit = "more follows".  We read
    at most 32 bits for counts, lengths and clocks (yrs reads them as ``u32``)
    and 64 bits for client ids (``u64``).  Non-canonical encodings (a trailing
    ``0x00`` continuation byte) are rejected: no lib0 writer emits them and
    accepting them would break the byte-exact round trip.
``varint`` (only inside ``Any``)
    first byte: bit 7 more, bit 6 sign, 6 bits of magnitude; then 7 bits a byte.
``string``
    ``varuint`` byte length + UTF-8 (strictly decoded: no surrogates, no
    overlong forms).
``ID``
    ``varuint client, varuint clock``.

An update is::

    varuint  number of client blocks
    per client block:
        varuint  number of structs
        varuint  client id
        varuint  clock of the first struct
        structs, each starting with one info byte:
            0            GC    varuint len
            10           Skip  varuint len
            otherwise    Item:
                info & 0x80  origin ID follows (left neighbour at insert time)
                info & 0x40  right origin ID follows
                if info & 0xC0 == 0 (no origin at all, parent cannot be inferred):
                    varuint 1 + string   parent is the named root type (parentYKey)
                    varuint 0 + ID       parent is the item holding a type
                    if info & 0x20: string parent_sub (map key)
                    (with an origin, 0x20 is still set for map entries but no
                    key is written: it is inherited from the neighbour)
                content selected by info & 0x1F:
                    1 Deleted  varuint len
                    2 JSON     varuint n, n strings (JSON texts or "undefined")
                    3 Binary   varuint n + n bytes
                    4 String   string  (length in clock units = UTF-16 code units)
                    5 Embed    string holding JSON
                    6 Format   string key, string holding JSON
                    7 Type     varuint type ref (0 Array, 1 Map, 2 Text,
                               3 XmlElement + string name, 4 XmlFragment,
                               5 XmlHook + string name, 6 XmlText)
                    8 Any      varuint n, n Any values
                    9 Doc      string guid, one Any (options)
    delete set:
        varuint  number of clients
        per client: varuint client, varuint n, n x (varuint clock, varuint len)

The clock of a struct is the previous struct's clock plus its length.  Lengths:
GC/Skip/Deleted carry theirs, String counts UTF-16 code units (checked
against pycrdt: ``"😀b"`` advances the clock by 3), JSON/Any count values,
every other content is 1.

``Any`` values are a tag byte: 127 undefined, 126 null, 125 varint,
124 float32, 123 float64, 122 bigint64, 121 false, 120 true, 119 string,
118 object (varuint n, n x (string key, Any)), 117 array (varuint n, n Any),
116 bytes (varuint n + n bytes).  They are walked iteratively with an explicit
stack, so nesting cannot exhaust the Python stack, and the depth is bounded by
``UpdateLimits.max_any_depth`` because yrs decodes and converts them
recursively (the 40,000-deep value in the shared corpus segfaults it).  JSON
texts (JSON/Embed/Format content) are bounded the same way before
``json.loads`` sees them.

Parsing keeps everything needed to write the same bytes back:
``encode_update(parse_update(b)) == b`` for every update the parser accepts.
``Any`` payloads are kept as validated raw byte slices (:class:`AnyContent`)
because re-encoding decoded values could change float32/float64 or varint
choices; :meth:`AnyContent.values` decodes them on demand.

Semantic rules
--------------
:func:`parse_update` enforces the grammar, the limits and these structural rules
(each also needed by yrs, which merges or miscounts otherwise):

* a client id appears at most once in the struct section and at most once in
  the delete set (yrs appends a repeated client's structs to the first run, so
  clocks would go backwards);
* every struct has length > 0 and every client block has at least one struct
  (yrs silently drops zero-length items without advancing the clock, and an
  empty block makes it stop integrating the remaining clients);
* clocks stay below ``max_clock`` (<= 2**31 - 1: yrs keeps clocks in ``u32``
  and computes offsets as ``i32``);
* GC and Skip use exactly the info bytes 0 and 10; an item's content ref is
  1..9 (yrs masks the ref with 0x0F, so 16..31 would alias other contents);
* delete-set ranges are non-empty, sorted, non-overlapping and below
  ``max_clock``.

:func:`validate_update` adds the semantic rules found by fuzzing pycrdt
0.14.13 (``scripts/fuzz_updates.py``, ``tests/fixtures/crashers/README.md``),
detailed in :func:`check_semantics`:

S1  no JSON content, no XmlHook (yrs decodes both differently from Yjs, so it
    would parse other bytes than the ones validated);
S2  same-client origin / right origin / parent IDs point to earlier clocks;
S3  an explicit parent ID names a Type item (or a deleted/GC'd one);
S4  every content lands in a container that can hold it (text contents only in
    Text/XmlText, values only in Array/XmlFragment/XmlElement or map entries);
S5  with a known receiving state: no clock gap, no Skip reaching past the
    known clocks, no reference to a change that is neither in the document
    nor in the update
    (:class:`MissingUpdatesError`; pycrdt 0.14.13 integrates past gaps and
    diverges);
S6  an item's left and right origins differ (yrs places such an item
    depending on arrival order: replicas diverge);
S7  nothing splits a String between the two UTF-16 units of a character
    outside the BMP: no origin, right origin, delete-set boundary or known
    state falls inside a surrogate pair (yrs splits the string at another
    place than the clock, and the document's own export is then broken);
S8  (with an index) an item's right origin lies after its origin in the
    list they share, unless it starts a block on every replica (yrs
    otherwise places the item by splitting blocks, differently on replicas
    that hold their blocks differently: issue 18's 12-byte update);
S9  (with an index) nothing the writer provably knew lies between its
    origin and right origin: the right origin's own origin lies at or
    before the origin, the origin's own right origin at or after the right
    origin;
S10 (with an index) a map entry has no right origin (``docs/SECURITY.md``
    argues S8-S10 and measures what is left).

Where an item lands is decided the way yrs decides it (``Item::repair``): an
explicit parent (the item becomes GC if that parent is deleted or GC'd), else
the container of its origin, or of its right origin when the origin is GC'd,
and GC when both are.  With a :class:`DocIndex` of the receiving document an
update is checked and integrated in one pass, in yrs's order and by yrs's
placement rules (see the index's own docstring for its data and invariants):
an update that passes ``validate_update(data, index=...)`` or
:meth:`DocIndex.begin` can be applied to that document by pycrdt without
panicking, hanging, crashing or corrupting it, and places its items as every
other replica does.  Without an index, references into the document cannot
be checked.

Deletions and garbage collection
--------------------------------
yrs (gc on, pycrdt's default) turns, when a transaction commits, every deleted
type item into ContentDeleted and everything inside it (recursively) into GC.
A remote item whose origin is such a GC'd child is attached next to its right
origin instead, possibly in another container (a String landing in an Array
that way makes reading it loop forever).  The index therefore applies delete
sets too, at the commit of each update (after its structs, as yrs does,
including the deletions yrs makes by itself: a map key's overwritten value,
items landing in a type deleted meanwhile); deletions beyond the known clocks
wait like yrs's pending delete set.  It must see the document's own changes:
a local deletion does not move the state vector but changes where later remote
items land, so the owner records each local transaction's update
(:meth:`DocIndex.record`, as ``crdtsync.Doc`` does from pycrdt's transaction
events) or a state-vector diff (:meth:`DocIndex.record_diff`).
"""

from __future__ import annotations

import json
import struct as _struct
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Union, cast

from crdtsync.errors import MalformedUpdateError, MissingUpdatesError, UpdateLimitError

__all__ = [
    "DEFAULT_LIMITS",
    "AnyContent",
    "DocContent",
    "DocIndex",
    "FormatContent",
    "IndexUpdate",
    "MissingUpdatesError",
    "ParsedUpdate",
    "Struct",
    "TypeContent",
    "UpdateLimits",
    "check_semantics",
    "decode_any",
    "encode_delete_set",
    "encode_update",
    "parse_update",
    "validate_update",
]

# --------------------------------------------------------------------------
# Constants of the format
# --------------------------------------------------------------------------

STRUCT_GC = 0
CONTENT_DELETED = 1
CONTENT_JSON = 2
CONTENT_BINARY = 3
CONTENT_STRING = 4
CONTENT_EMBED = 5
CONTENT_FORMAT = 6
CONTENT_TYPE = 7
CONTENT_ANY = 8
CONTENT_DOC = 9
STRUCT_SKIP = 10

HAS_ORIGIN = 0x80
HAS_RIGHT_ORIGIN = 0x40
HAS_PARENT_SUB = 0x20
CONTENT_MASK = 0x1F

TYPE_ARRAY = 0
TYPE_MAP = 1
TYPE_TEXT = 2
TYPE_XML_ELEMENT = 3
TYPE_XML_FRAGMENT = 4
TYPE_XML_HOOK = 5
TYPE_XML_TEXT = 6

CONTENT_NAMES = {
    STRUCT_GC: "GC",
    CONTENT_DELETED: "Deleted",
    CONTENT_JSON: "JSON",
    CONTENT_BINARY: "Binary",
    CONTENT_STRING: "String",
    CONTENT_EMBED: "Embed",
    CONTENT_FORMAT: "Format",
    CONTENT_TYPE: "Type",
    CONTENT_ANY: "Any",
    CONTENT_DOC: "Doc",
    STRUCT_SKIP: "Skip",
}

ANY_UNDEFINED = 127
ANY_NULL = 126
ANY_VARINT = 125
ANY_FLOAT32 = 124
ANY_FLOAT64 = 123
ANY_BIGINT = 122
ANY_FALSE = 121
ANY_TRUE = 120
ANY_STRING = 119
ANY_OBJECT = 118
ANY_ARRAY = 117
ANY_BYTES = 116

#: Hard ceiling for clocks: yrs stores them as u32 and subtracts them as i32.
CLOCK_CEILING = 2**31 - 1
_U32 = 32
_U64 = 64
#: lib0's readVarInt refuses magnitudes beyond 53 bits (JavaScript numbers).
_VARINT_MAX_BITS = 53


@dataclass(frozen=True, slots=True)
class UpdateLimits:
    """Resource limits enforced while parsing an update.

    Every limit is inclusive (a value equal to it is accepted).  Exceeding one
    raises :class:`~crdtsync.errors.UpdateLimitError`.

    Attributes:
        max_update_bytes: size of the whole update (64 MiB).
        max_structs: total structs (items, GC, Skip) in one update.
        max_clients: client blocks in the struct section, and separately
            clients in the delete set.
        max_any_depth: nesting depth of ``Any`` values and of JSON texts
            (JSON/Embed/Format content).  A scalar has depth 1, ``[1]`` depth 2.
            yrs recurses natively on these; 64 is far below what crashes it.
        max_string_bytes: UTF-8 bytes of one string or byte buffer.
        max_key_bytes: bytes of a map key: ``parent_sub``, root names, Any
            object keys, format keys, XML node names, subdocument guids.
        max_delete_ranges: total delete-set ranges.
        max_type_depth: nesting of types *within one update* (a type item
            whose parent is a type item of the same update, and so on).  yrs
            walks parent chains recursively when it reports events.
        max_any_values: total Any/JSON values (including nested ones).
        max_clock: largest clock any struct or deleted range may reach
            (exclusive end); at most :data:`CLOCK_CEILING`.
        max_document_bytes: size of a whole document's stored state (1 GiB):
            ``Doc.load`` and snapshots read under this limit instead of
            ``max_update_bytes``, which bounds what one peer sends at once
            (a room that grew by many small updates must still reload).
        max_pending_deletes: deleted ranges naming clocks the document does
            not have yet, kept until those clocks arrive (yrs re-reads all of
            them on every later update, so they are bounded).
        max_held_updates: updates held by a document until their missing
            predecessors arrive.
        max_held_bytes: total bytes of those held updates.
        max_held_per_origin: held updates from any one origin (sender).
        held_timeout: seconds a held update waits before it is dropped (a
            state-vector sync sends anything real again).
    """

    max_update_bytes: int = 64 * 1024 * 1024
    max_structs: int = 10_000_000
    max_clients: int = 100_000
    max_any_depth: int = 64
    max_string_bytes: int = 64 * 1024 * 1024
    max_key_bytes: int = 64 * 1024
    max_delete_ranges: int = 10_000_000
    max_type_depth: int = 256
    max_any_values: int = 10_000_000
    max_clock: int = CLOCK_CEILING
    max_document_bytes: int = 1024 * 1024 * 1024
    max_pending_deletes: int = 100_000
    max_held_updates: int = 1_000
    max_held_bytes: int = 64 * 1024 * 1024
    max_held_per_origin: int = 100
    held_timeout: int = 600

    def __post_init__(self) -> None:
        for name in (
            "max_update_bytes",
            "max_structs",
            "max_clients",
            "max_any_depth",
            "max_string_bytes",
            "max_key_bytes",
            "max_delete_ranges",
            "max_type_depth",
            "max_any_values",
            "max_clock",
            "max_document_bytes",
            "max_pending_deletes",
            "max_held_updates",
            "max_held_bytes",
            "max_held_per_origin",
            "held_timeout",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UpdateLimits.{name} must be a positive int, got {value!r}")
        if self.max_clock > CLOCK_CEILING:
            raise ValueError(
                f"UpdateLimits.max_clock cannot exceed {CLOCK_CEILING} (yrs computes clock "
                "offsets as i32)"
            )


DEFAULT_LIMITS = UpdateLimits()

# --------------------------------------------------------------------------
# Parsed representation
# --------------------------------------------------------------------------

ID = tuple[int, int]


class FormatContent(NamedTuple):
    """Payload of a Format item: an attribute key and its JSON-encoded value."""

    key: str
    value_json: str


class TypeContent(NamedTuple):
    """Payload of a Type item: the type ref and, for XmlElement/XmlHook, a name."""

    type_ref: int
    name: str | None


class AnyContent(NamedTuple):
    """Payload of an Any item: ``n`` validated Any values kept as raw bytes."""

    n: int
    raw: bytes

    def values(self) -> list[object]:
        """Decodes the values (see :func:`decode_any`)."""
        return decode_any(self.raw, self.n)


class DocContent(NamedTuple):
    """Payload of a subdocument item: its guid and raw Any-encoded options."""

    guid: str
    options_raw: bytes

    def options(self) -> object:
        """Decodes the options value."""
        return decode_any(self.options_raw, 1)[0]


Content = Union[  # noqa: UP007 - a runtime alias: X | Y of 8 items reads worse
    None, str, bytes, tuple[str, ...], FormatContent, TypeContent, AnyContent, DocContent
]
Parent = None | str | ID


@dataclass(slots=True)
class Struct:
    """One struct of an update.

    ``kind`` is ``STRUCT_GC`` (0), ``STRUCT_SKIP`` (10) or the content ref of an
    item (1..9).  ``info`` is the raw info byte (kept because flag 0x20 may be
    set without a key being written).  ``parent`` is the root name (``str``),
    the ID of the item holding the parent type, or ``None`` when the parent is
    inherited from the origin/right origin.  ``content`` depends on ``kind``:
    ``None`` (GC, Skip, Deleted), ``tuple[str, ...]`` (JSON), ``bytes``
    (Binary), ``str`` (String, and Embed as JSON text), :class:`FormatContent`,
    :class:`TypeContent`, :class:`AnyContent` or :class:`DocContent`.
    """

    client: int
    clock: int
    length: int
    kind: int
    info: int
    origin: ID | None = None
    right_origin: ID | None = None
    parent: Parent = None
    parent_sub: str | None = None
    content: Content = None

    @property
    def end(self) -> int:
        """Clock just after this struct."""
        return self.clock + self.length

    @property
    def is_item(self) -> bool:
        """True for items (neither GC nor Skip)."""
        return self.kind not in (STRUCT_GC, STRUCT_SKIP)


@dataclass(slots=True)
class ParsedUpdate:
    """A fully parsed v1 update.

    ``clients`` maps client id -> its structs, in the order of the encoding
    (yrs writes higher client ids first).  ``delete_set`` maps client id ->
    ``(clock, length)`` ranges in encoding order.  ``ds_pos`` is the byte
    offset of the delete set in the bytes parsed (-1 when not parsed from
    bytes): ``data[:ds_pos] + encode_delete_set(ds)`` is the same update with
    another delete set.
    """

    clients: dict[int, list[Struct]] = field(default_factory=dict)
    delete_set: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    ds_pos: int = -1

    def client_ids(self) -> set[int]:
        """Client ids the update writes structs under (not delete-set clients)."""
        return set(self.clients)

    def struct_count(self) -> int:
        """Total number of structs."""
        return sum(len(s) for s in self.clients.values())

    def structs(self) -> Iterator[Struct]:
        """Iterates over every struct, client by client."""
        for structs in self.clients.values():
            yield from structs

    def state_vector_before(self) -> dict[int, int]:
        """Client -> clock of the first struct (what the update needs first)."""
        return {client: structs[0].clock for client, structs in self.clients.items()}

    def state_vector_after(self) -> dict[int, int]:
        """Client -> clock after the last struct that is not a Skip."""
        sv: dict[int, int] = {}
        for client, structs in self.clients.items():
            for s in reversed(structs):
                if s.kind != STRUCT_SKIP:
                    sv[client] = s.end
                    break
        return sv

    def is_empty(self) -> bool:
        """True if the update carries no struct and no deletion."""
        return not self.clients and not self.delete_set


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def _malformed(msg: str, pos: int) -> MalformedUpdateError:
    return MalformedUpdateError(f"malformed update at byte {pos}: {msg}")


def _limit(msg: str, pos: int) -> UpdateLimitError:
    return UpdateLimitError(f"update exceeds a limit at byte {pos}: {msg}")


# --------------------------------------------------------------------------
# Primitive readers.  The hot loop in _parse inlines the single-byte varuint
# case; these helpers handle the general case and report offsets.
# --------------------------------------------------------------------------


def _read_varuint(data: bytes, pos: int, bits: int, what: str) -> tuple[int, int]:
    """Reads a canonical varuint of at most ``bits`` bits; returns (value, new pos)."""
    start = pos
    value = 0
    shift = 0
    n = len(data)
    while True:
        if pos >= n:
            raise _malformed(f"truncated varuint ({what})", start)
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b == 0 and pos - start > 1:
                raise _malformed(f"non-canonical varuint ({what})", start)
            if value >> bits:
                raise _malformed(f"varuint overflows {bits} bits ({what})", start)
            return value, pos
        if shift >= bits + 7:
            raise _malformed(f"varuint overflows {bits} bits ({what})", start)


def _read_id(
    data: bytes, pos: int, what: str, names: tuple[str, str] | None = None
) -> tuple[ID, int]:
    """Reads an ID (u64 client, u32 clock); returns (ID, new pos).

    The hot path of the parser: anything unusual (truncation, a
    non-canonical or oversized varuint) is re-read by :func:`_read_varuint`,
    which reports it.
    """
    try:
        b = data[pos]
        p = pos + 1
        client = b & 0x7F
        if b >= 0x80:
            shift = 7
            while True:
                b = data[p]
                p += 1
                client |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise IndexError
            if b == 0 or client >> 64:
                raise IndexError
        b = data[p]
        p += 1
        clock = b & 0x7F
        if b >= 0x80:
            shift = 7
            while True:
                b = data[p]
                p += 1
                clock |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 28:
                    raise IndexError
            if b == 0 or clock >> 32:
                raise IndexError
        return (client, clock), p
    except IndexError:
        cname, kname = names or (what + " client", what + " clock")
        client, p = _read_varuint(data, pos, _U64, cname)
        clock, p = _read_varuint(data, p, _U32, kname)
        return (client, clock), p


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Reads a lib0 signed varint (magnitude <= 53 bits); returns (value, new pos)."""
    start = pos
    n = len(data)
    if pos >= n:
        raise _malformed("truncated varint", start)
    b = data[pos]
    pos += 1
    value = b & 0x3F
    negative = bool(b & 0x40)
    shift = 6
    more = b & 0x80
    while more:
        if pos >= n:
            raise _malformed("truncated varint", start)
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        more = b & 0x80
        if shift > _VARINT_MAX_BITS + 7:
            raise _malformed("varint overflows 53 bits", start)
    if value >> _VARINT_MAX_BITS:
        raise _malformed("varint overflows 53 bits", start)
    return (-value if negative else value), pos


def _read_str(data: bytes, pos: int, max_bytes: int, what: str, limit_name: str) -> tuple[str, int]:
    start = pos
    b = data[pos] if pos < len(data) else -1
    if 0 <= b < 0x80:
        n = b
        pos += 1
    else:
        n, pos = _read_varuint(data, pos, _U32, what + " length")
    if n > max_bytes:
        raise _limit(f"{what} of {n} bytes exceeds {limit_name}={max_bytes}", start)
    end = pos + n
    if end > len(data):
        raise _malformed(f"truncated {what} ({n} bytes announced)", start)
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise _malformed(f"invalid UTF-8 in {what}: {exc.reason}", pos + exc.start) from None


def _utf16_len(s: str, nbytes: int) -> int:
    """Length of ``s`` in UTF-16 code units (``nbytes`` is its UTF-8 size)."""
    if nbytes == len(s):  # ASCII fast path
        return nbytes
    # Code points >= U+10000 take 4 UTF-8 bytes and 2 UTF-16 units.
    return len(s) + sum(1 for c in s if c > "\uffff")


class _Budget:
    """Mutable counters shared by the parsing helpers."""

    __slots__ = ("any_values",)

    def __init__(self) -> None:
        self.any_values = 0


def _skip_any(data: bytes, pos: int, count: int, limits: UpdateLimits, budget: _Budget) -> int:
    """Validates ``count`` consecutive Any values starting at ``pos``; returns the end.

    Iterative: ``stack`` holds, per open container, how many values (for an
    array) or key/value pairs (for an object) are still to be read.
    """
    n = len(data)
    max_depth = limits.max_any_depth
    max_key = limits.max_key_bytes
    max_str = limits.max_string_bytes
    max_values = limits.max_any_values
    stack: list[int] = [count]
    is_obj: list[bool] = [False]
    while stack:
        if stack[-1] == 0:
            stack.pop()
            is_obj.pop()
            continue
        stack[-1] -= 1
        if is_obj[-1]:
            _, pos = _read_str(data, pos, max_key, "Any object key", "max_key_bytes")
        budget.any_values += 1
        if budget.any_values > max_values:
            raise _limit(f"more than max_any_values={max_values} Any values", pos)
        if pos >= n:
            raise _malformed("truncated Any value", pos)
        tag = data[pos]
        tag_pos = pos
        pos += 1
        if tag == ANY_STRING:
            _, pos = _read_str(data, pos, max_str, "Any string", "max_string_bytes")
        elif tag == ANY_FLOAT32:
            pos += 4
        elif tag in (ANY_FLOAT64, ANY_BIGINT):
            pos += 8
        elif tag == ANY_VARINT:
            _, pos = _read_varint(data, pos)
        elif tag in (ANY_NULL, ANY_UNDEFINED, ANY_TRUE, ANY_FALSE):
            pass
        elif tag == ANY_BYTES:
            ln, pos = _read_varuint(data, pos, _U32, "Any bytes length")
            if ln > max_str:
                raise _limit(f"Any bytes of {ln} bytes exceeds max_string_bytes={max_str}", tag_pos)
            pos += ln
        elif tag in (ANY_ARRAY, ANY_OBJECT):
            ln, pos = _read_varuint(data, pos, _U32, "Any container length")
            if len(stack) >= max_depth:
                raise _limit(f"Any value nested deeper than max_any_depth={max_depth}", tag_pos)
            # Each element takes at least one byte (two for an object entry):
            # refuse impossible counts before looping over them.
            if ln > n - pos:
                raise _malformed(
                    f"Any container announces {ln} elements, more than the bytes left", tag_pos
                )
            stack.append(ln)
            is_obj.append(tag == ANY_OBJECT)
        else:
            raise _malformed(f"unknown Any tag {tag}", tag_pos)
        if pos > n:
            raise _malformed("truncated Any value", tag_pos)
    return pos


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def json_depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text, by a linear scan.

    ``json.loads`` recurses, so untrusted JSON is measured with this first.
    """
    if "[" not in text and "{" not in text:
        return 0
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _check_json(text: str, pos: int, limits: UpdateLimits, what: str) -> None:
    """Checks that ``text`` is strict JSON no deeper than ``max_any_depth``.

    The depth is counted by a linear scan before ``json.loads`` runs, so the
    (recursive) decoder never sees deep input.
    """
    max_depth = limits.max_any_depth
    if json_depth(text) >= max_depth:
        raise _limit(f"{what} JSON nested deeper than max_any_depth={max_depth}", pos)
    try:
        json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise _malformed(f"{what} is not valid JSON: {exc}", pos) from None


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def parse_update(data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> ParsedUpdate:
    """Parses a Yjs v1 update completely and strictly.

    Args:
        data: the update bytes.
        limits: resource limits.

    Returns:
        The parsed update; ``encode_update`` of it gives back ``data``.

    Raises:
        MalformedUpdateError: the bytes are not a well-formed v1 update
            (truncation, trailing bytes, overflow, bad UTF-8, unknown tag,
            zero-length struct, repeated client, bad delete set...).
        UpdateLimitError: a limit of ``limits`` is exceeded.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"update must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_update_bytes:
        raise _limit(
            f"update of {len(data)} bytes exceeds max_update_bytes={limits.max_update_bytes}", 0
        )
    return _parse(data, limits)


def _parse(data: bytes, limits: UpdateLimits) -> ParsedUpdate:
    n = len(data)
    budget = _Budget()
    max_clock = limits.max_clock
    max_key = limits.max_key_bytes
    max_str = limits.max_string_bytes
    max_structs = limits.max_structs
    rv = _read_varuint
    rs = _read_str
    clients: dict[int, list[Struct]] = {}
    total_structs = 0
    pos = 0
    if n and data[0] < 0x80:
        num_clients, pos = data[0], 1
    else:
        num_clients, pos = rv(data, pos, _U32, "number of clients")
    if num_clients > limits.max_clients:
        raise _limit(f"{num_clients} client blocks exceed max_clients={limits.max_clients}", 0)
    # A client block takes at least 4 bytes (count, client, clock, one info byte).
    if num_clients * 4 > n - pos:
        raise _malformed(f"{num_clients} client blocks announced, more than the bytes left", 0)
    for _ in range(num_clients):
        block_pos = pos
        if pos < n and data[pos] < 0x80:
            num_structs = data[pos]
            pos += 1
        else:
            num_structs, pos = rv(data, pos, _U32, "number of structs")
        (client, clock), pos = _read_id(data, pos, "block", ("client id", "clock"))
        if num_structs == 0:
            raise _malformed(f"client {client} has a block with no struct", block_pos)
        if client in clients:
            raise _malformed(f"client {client} appears twice in the struct section", block_pos)
        total_structs += num_structs
        if total_structs > max_structs:
            raise _limit(f"more than max_structs={max_structs} structs", block_pos)
        if num_structs * 2 > n - pos:
            raise _malformed(
                f"{num_structs} structs announced, more than the bytes left", block_pos
            )
        if clock > max_clock:
            raise _limit(
                f"clock {clock} of client {client} exceeds max_clock={max_clock}", block_pos
            )
        structs: list[Struct] = []
        clients[client] = structs
        append = structs.append
        for _ in range(num_structs):
            spos = pos
            if pos >= n:
                raise _malformed("truncated struct", pos)
            info = data[pos]
            pos += 1
            if info in (STRUCT_GC, STRUCT_SKIP):
                if pos < n and data[pos] < 0x80:
                    length = data[pos]
                    pos += 1
                else:
                    length, pos = rv(data, pos, _U32, "GC/Skip length")
                if length == 0:
                    raise _malformed(f"zero-length {CONTENT_NAMES[info]}", spos)
                st = Struct(client, clock, length, info, info)
            else:
                kind = info & CONTENT_MASK
                if kind == STRUCT_GC or kind > CONTENT_DOC:
                    raise _malformed(f"unknown content ref {kind} (info byte {info:#04x})", spos)
                origin: ID | None = None
                right_origin: ID | None = None
                parent: Parent = None
                parent_sub: str | None = None
                if info & HAS_ORIGIN:
                    origin, pos = _read_id(data, pos, "origin")
                if info & HAS_RIGHT_ORIGIN:
                    right_origin, pos = _read_id(data, pos, "right origin")
                if not info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):
                    ppos = pos
                    if pos >= n:
                        raise _malformed("truncated parent info", pos)
                    pflag = data[pos]
                    pos += 1
                    if pflag == 1:
                        parent, pos = rs(data, pos, max_key, "root type name", "max_key_bytes")
                    elif pflag == 0:
                        parent, pos = _read_id(data, pos, "parent")
                    else:
                        raise _malformed(f"parent info flag must be 0 or 1, got {pflag}", ppos)
                    if info & HAS_PARENT_SUB:
                        parent_sub, pos = rs(data, pos, max_key, "parent_sub key", "max_key_bytes")
                cpos = pos
                content: Content
                if kind == CONTENT_STRING:
                    if pos < n and data[pos] < 0x80:
                        slen = data[pos]
                        pos += 1
                    else:
                        slen, pos = rv(data, pos, _U32, "string length")
                    if slen > max_str:
                        raise _limit(
                            f"string of {slen} bytes exceeds max_string_bytes={max_str}", cpos
                        )
                    end = pos + slen
                    if end > n:
                        raise _malformed(f"truncated string ({slen} bytes announced)", cpos)
                    try:
                        content = data[pos:end].decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise _malformed(
                            f"invalid UTF-8 in string content: {exc.reason}", pos + exc.start
                        ) from None
                    pos = end
                    length = _utf16_len(content, slen)
                elif kind == CONTENT_DELETED:
                    length, pos = rv(data, pos, _U32, "deleted length")
                    content = None
                elif kind == CONTENT_ANY:
                    length, pos = rv(data, pos, _U32, "Any count")
                    if length > n - pos:
                        raise _malformed(
                            f"{length} Any values announced, more than the bytes left", cpos
                        )
                    apos = pos
                    pos = _skip_any(data, pos, length, limits, budget)
                    content = AnyContent(length, data[apos:pos])
                elif kind == CONTENT_TYPE:
                    type_ref, pos = rv(data, pos, _U32, "type ref")
                    name: str | None = None
                    if type_ref in (TYPE_XML_ELEMENT, TYPE_XML_HOOK):
                        name, pos = rs(data, pos, max_key, "XML node name", "max_key_bytes")
                    elif type_ref > TYPE_XML_TEXT:
                        raise _malformed(f"unknown type ref {type_ref}", cpos)
                    content = TypeContent(type_ref, name)
                    length = 1
                elif kind == CONTENT_BINARY:
                    blen, pos = rv(data, pos, _U32, "binary length")
                    if blen > max_str:
                        raise _limit(
                            f"binary of {blen} bytes exceeds max_string_bytes={max_str}", cpos
                        )
                    if pos + blen > n:
                        raise _malformed(f"truncated binary ({blen} bytes announced)", cpos)
                    content = data[pos : pos + blen]
                    pos += blen
                    length = 1
                elif kind == CONTENT_FORMAT:
                    key, pos = rs(data, pos, max_key, "format key", "max_key_bytes")
                    vpos = pos
                    value, pos = rs(data, pos, max_str, "format value", "max_string_bytes")
                    _check_json(value, vpos, limits, "format value")
                    content = FormatContent(key, value)
                    length = 1
                elif kind == CONTENT_EMBED:
                    text, pos = rs(data, pos, max_str, "embed", "max_string_bytes")
                    _check_json(text, cpos, limits, "embed")
                    content = text
                    length = 1
                elif kind == CONTENT_JSON:
                    length, pos = rv(data, pos, _U32, "JSON count")
                    if length > n - pos:
                        raise _malformed(
                            f"{length} JSON values announced, more than the bytes left", cpos
                        )
                    budget.any_values += length
                    if budget.any_values > limits.max_any_values:
                        raise _limit(
                            f"more than max_any_values={limits.max_any_values} Any values", cpos
                        )
                    items: list[str] = []
                    for _j in range(length):
                        jpos = pos
                        jtext, pos = rs(data, pos, max_str, "JSON value", "max_string_bytes")
                        if jtext != "undefined":
                            _check_json(jtext, jpos, limits, "JSON content")
                        items.append(jtext)
                    content = tuple(items)
                else:  # CONTENT_DOC
                    guid, pos = rs(data, pos, max_key, "subdocument guid", "max_key_bytes")
                    opos = pos
                    pos = _skip_any(data, pos, 1, limits, budget)
                    content = DocContent(guid, data[opos:pos])
                    length = 1
                if length == 0:
                    raise _malformed(f"zero-length {CONTENT_NAMES[kind]} item", spos)
                st = Struct(
                    client,
                    clock,
                    length,
                    kind,
                    info,
                    origin,
                    right_origin,
                    parent,
                    parent_sub,
                    content,
                )
            clock += length
            if clock > max_clock:
                raise _limit(f"clock of client {client} exceeds max_clock={max_clock}", spos)
            append(st)
    # Delete set.
    ds_pos = pos
    delete_set: dict[int, list[tuple[int, int]]] = {}
    if pos == n - 1 and data[pos] == 0:  # no delete set: the common case
        return ParsedUpdate(clients, delete_set, ds_pos)
    num_ds, pos = rv(data, pos, _U32, "number of delete-set clients")
    if num_ds > limits.max_clients:
        raise _limit(f"{num_ds} delete-set clients exceed max_clients={limits.max_clients}", ds_pos)
    if num_ds * 2 > n - pos:
        raise _malformed(f"{num_ds} delete-set clients announced, more than the bytes left", ds_pos)
    total_ranges = 0
    for _ in range(num_ds):
        cpos = pos
        client, pos = rv(data, pos, _U64, "delete-set client")
        nranges, pos = rv(data, pos, _U32, "number of delete ranges")
        if client in delete_set:
            raise _malformed(f"client {client} appears twice in the delete set", cpos)
        if nranges == 0:
            raise _malformed(f"client {client} has no delete range", cpos)
        total_ranges += nranges
        if total_ranges > limits.max_delete_ranges:
            raise _limit(
                f"more than max_delete_ranges={limits.max_delete_ranges} delete ranges", cpos
            )
        if nranges * 2 > n - pos:
            raise _malformed(f"{nranges} delete ranges announced, more than the bytes left", cpos)
        ranges: list[tuple[int, int]] = []
        prev_end = -1
        for _j in range(nranges):
            rpos = pos
            rclock, pos = rv(data, pos, _U32, "delete range clock")
            rlen, pos = rv(data, pos, _U32, "delete range length")
            if rlen == 0:
                raise _malformed(f"empty delete range for client {client}", rpos)
            if rclock < prev_end:
                raise _malformed(f"delete ranges of client {client} are unsorted or overlap", rpos)
            prev_end = rclock + rlen
            if prev_end > max_clock:
                raise _limit(f"delete range of client {client} exceeds max_clock={max_clock}", rpos)
            ranges.append((rclock, rlen))
        delete_set[client] = ranges
    if pos != n:
        raise _malformed(f"{n - pos} trailing bytes after the delete set", pos)
    return ParsedUpdate(clients, delete_set, ds_pos)


# --------------------------------------------------------------------------
# Any decoding (on demand)
# --------------------------------------------------------------------------


class Undefined:
    """The JavaScript ``undefined`` Any value."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = Undefined()


def decode_any(raw: bytes, count: int) -> list[object]:
    """Decodes ``count`` Any values from validated raw bytes.

    Only call this on bytes that :func:`parse_update` accepted (depth already
    bounded).  Numbers come back as ``int`` (varint, bigint) or ``float``;
    undefined as :data:`UNDEFINED`; byte arrays as ``bytes``.

    Args:
        raw: bytes of an :class:`AnyContent` or :class:`DocContent` payload.
        count: number of top-level values.

    Returns:
        The decoded values.
    """
    out: list[object] = []
    # Iterative decoder: frames are (container, remaining, is_object, pending key).
    frames: list[tuple[list[object] | dict[str, object], list[int]]] = []
    root: list[object] = out
    remaining = [count]
    current: list[object] | dict[str, object] = root
    pos = 0
    key: str = ""
    while True:
        if remaining[0] == 0:
            if not frames:
                break
            current, remaining = frames.pop()
            continue
        remaining[0] -= 1
        if isinstance(current, dict):
            key, pos = _read_str(raw, pos, len(raw), "key", "-")
        tag = raw[pos]
        pos += 1
        value: object
        child: list[object] | dict[str, object] | None = None
        child_len = 0
        if tag == ANY_STRING:
            value, pos = _read_str(raw, pos, len(raw), "string", "-")
        elif tag == ANY_FLOAT32:
            value = _struct.unpack_from(">f", raw, pos)[0]
            pos += 4
        elif tag == ANY_FLOAT64:
            value = _struct.unpack_from(">d", raw, pos)[0]
            pos += 8
        elif tag == ANY_BIGINT:
            value = _struct.unpack_from(">q", raw, pos)[0]
            pos += 8
        elif tag == ANY_VARINT:
            value, pos = _read_varint(raw, pos)
        elif tag == ANY_NULL:
            value = None
        elif tag == ANY_UNDEFINED:
            value = UNDEFINED
        elif tag == ANY_TRUE:
            value = True
        elif tag == ANY_FALSE:
            value = False
        elif tag == ANY_BYTES:
            ln, pos = _read_varuint(raw, pos, _U32, "bytes")
            value = raw[pos : pos + ln]
            pos += ln
        elif tag == ANY_ARRAY:
            child_len, pos = _read_varuint(raw, pos, _U32, "array")
            child = []
            value = child
        elif tag == ANY_OBJECT:
            child_len, pos = _read_varuint(raw, pos, _U32, "object")
            child = {}
            value = child
        else:
            raise _malformed(f"unknown Any tag {tag}", pos - 1)
        if isinstance(current, dict):
            current[key] = value
        else:
            current.append(value)
        if child is not None:
            frames.append((current, remaining))
            current = child
            remaining = [child_len]
    return out


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


_SMALL = [bytes((i,)) for i in range(0x80)]


def _varuint_bytes(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _put_varuint(out: bytearray, value: int) -> None:
    """Appends a varuint to ``out``."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_update(parsed: ParsedUpdate) -> bytes:
    """Serializes a parsed update back to Yjs v1 bytes.

    The output is byte-identical to the input of :func:`parse_update` for any
    update it accepted.  Lengths of GC/Skip/Deleted structs are taken from
    ``Struct.length``; other lengths follow from the content.

    Args:
        parsed: the update.

    Returns:
        The v1 encoding.
    """
    out = bytearray()
    w = out.extend
    ap = out.append
    vb = _varuint_bytes
    ids: dict[int, bytes] = {}  # varuints of client ids (a few, repeated)

    def cid(client: int) -> bytes:
        b = ids.get(client)
        if b is None:
            b = ids[client] = vb(client)
        return b

    w(vb(len(parsed.clients)))
    for client, structs in parsed.clients.items():
        w(vb(len(structs)))
        w(cid(client))
        w(vb(structs[0].clock if structs else 0))
        for s in structs:
            info = s.info
            ap(info)
            kind = s.kind
            if kind in (STRUCT_GC, STRUCT_SKIP):
                w(vb(s.length))
                continue
            if info & HAS_ORIGIN:
                oc, ok = cast(ID, s.origin)
                w(cid(oc))
                if ok < 0x80:
                    ap(ok)
                else:
                    w(vb(ok))
            if info & HAS_RIGHT_ORIGIN:
                rc, rk = cast(ID, s.right_origin)
                w(cid(rc))
                if rk < 0x80:
                    ap(rk)
                else:
                    w(vb(rk))
            if not info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):
                p = s.parent
                if isinstance(p, str):
                    ap(1)
                    b = p.encode()
                    w(vb(len(b)))
                    w(b)
                else:
                    assert p is not None
                    ap(0)
                    w(cid(p[0]))
                    w(vb(p[1]))
                if info & HAS_PARENT_SUB:
                    assert s.parent_sub is not None
                    b = s.parent_sub.encode()
                    w(vb(len(b)))
                    w(b)
            c = s.content
            if kind == CONTENT_STRING:
                b = cast(str, c).encode()
                n = len(b)
                if n < 0x80:
                    ap(n)
                else:
                    w(vb(n))
                w(b)
            elif kind == CONTENT_DELETED:
                w(vb(s.length))
            elif kind == CONTENT_ANY:
                assert isinstance(c, AnyContent)
                w(vb(c.n))
                w(c.raw)
            elif kind == CONTENT_TYPE:
                assert isinstance(c, TypeContent)
                w(vb(c.type_ref))
                if c.name is not None:
                    b = c.name.encode()
                    w(vb(len(b)))
                    w(b)
            elif kind == CONTENT_BINARY:
                assert isinstance(c, bytes)
                w(vb(len(c)))
                w(c)
            elif kind == CONTENT_FORMAT:
                assert isinstance(c, FormatContent)
                for text in c:
                    b = text.encode()
                    w(vb(len(b)))
                    w(b)
            elif kind == CONTENT_EMBED:
                assert isinstance(c, str)
                b = c.encode()
                w(vb(len(b)))
                w(b)
            elif kind == CONTENT_JSON:
                json_texts = cast(tuple[str, ...], c)
                w(vb(len(json_texts)))
                for text in json_texts:
                    b = text.encode()
                    w(vb(len(b)))
                    w(b)
            elif kind == CONTENT_DOC:
                assert isinstance(c, DocContent)
                b = c.guid.encode()
                w(vb(len(b)))
                w(b)
                w(c.options_raw)
            else:
                raise ValueError(f"cannot encode struct kind {kind}")
    out += encode_delete_set(parsed.delete_set)
    return bytes(out)


def encode_delete_set(delete_set: Mapping[int, Iterable[tuple[int, int]]]) -> bytes:
    """The v1 encoding of a delete set (the tail of every update)."""
    vu = _varuint_bytes
    out = bytearray(vu(len(delete_set)))
    for client, ranges in delete_set.items():
        rs = list(ranges)
        out += vu(client)
        out += vu(len(rs))
        for clock, length in rs:
            out += vu(clock)
            out += vu(length)
    return bytes(out)


# --------------------------------------------------------------------------
# Semantic validation
# --------------------------------------------------------------------------

#: Content classes: which containers may hold a content kind in their sequence.
_NEUTRAL = 0  # Deleted, Type: allowed in any sequence
_TEXTUAL = 1  # String, Format, Embed: only in Text / XmlText
_VALUED = 2  # Any, Binary, Doc, JSON: only in Array / XmlFragment / XmlElement
# What a container of unknown type has shown so far, besides _TEXTUAL/_VALUED
# (S11): map entries, or a sequence holding only types (either class may follow).
_KEYED = 3
_SEQUENCE = 4
#: Types that show values when they are the first thing a container of unknown
#: type holds in its sequence: a root holding an Array/Map/Text is read back as
#: a list (``crdtsync.model`` tells a Yjs root's kind from its items so), so
#: text may not follow them there.  XML types stay neutral (_SEQUENCE).
_LISTED_TYPES = frozenset({0, 1, 2})  # TYPE_ARRAY, TYPE_MAP, TYPE_TEXT

_CONTENT_CLASS = {
    CONTENT_DELETED: _NEUTRAL,
    CONTENT_TYPE: _NEUTRAL,
    CONTENT_STRING: _TEXTUAL,
    CONTENT_FORMAT: _TEXTUAL,
    CONTENT_EMBED: _TEXTUAL,
    CONTENT_ANY: _VALUED,
    CONTENT_BINARY: _VALUED,
    CONTENT_DOC: _VALUED,
    CONTENT_JSON: _VALUED,
}

#: Sequence class of each type ref (None: the type has no sequence: Map, XmlHook).
_TYPE_SEQ_CLASS: dict[int, int | None] = {
    TYPE_ARRAY: _VALUED,
    TYPE_MAP: None,
    TYPE_TEXT: _TEXTUAL,
    TYPE_XML_ELEMENT: _VALUED,
    TYPE_XML_FRAGMENT: _VALUED,
    TYPE_XML_HOOK: None,
    TYPE_XML_TEXT: _TEXTUAL,
}

#: A container: a root name, or the ID of the item holding the type.
ContainerKey = str | ID


class _Where(NamedTuple):
    """Where an item lives once yrs has integrated it."""

    key: ContainerKey
    entry: bool  # a map entry (parent_sub) rather than a sequence element


#: The item will become GC in yrs (its parent is gone): harmless.
_GC = _Where("", False)
#: Not knowable from what we have (no index): no check possible.
_UNKNOWN = _Where("?", False)


def _missing(s: Struct, what: str, ref: ID) -> MissingUpdatesError:
    return MissingUpdatesError(
        f"item {s.client}:{s.clock} depends on {what} {ref[0]}:{ref[1]}, "
        "which is neither in the document nor in the update (missing updates)",
        ref[0],
        ref[1],
    )


def _pair_splits(s: Struct) -> list[int]:
    """Clocks between the two UTF-16 units of each non-BMP character of a String."""
    out = []
    clock = s.clock
    for ch in cast(str, s.content):
        if ord(ch) > 0xFFFF:
            out.append(clock + 1)
            clock += 2
        else:
            clock += 1
    return out


def _update_pair_splits(parsed: ParsedUpdate) -> dict[int, set[int]]:
    """S7: clocks inside a surrogate pair of the update's Strings, by client."""
    out: dict[int, set[int]] = {}
    for c, ss in parsed.clients.items():
        for x in ss:
            if x.kind == CONTENT_STRING and x.length != len(cast(str, x.content)):
                out.setdefault(c, set()).update(_pair_splits(x))
    return out


def _check_static(parsed: ParsedUpdate) -> None:
    """S1 and S6: rules that need nothing but the update itself."""
    for structs in parsed.clients.values():
        for s in structs:
            kind = s.kind
            if kind == CONTENT_JSON:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock}: JSON content (ref 2) is obsolete and yrs "
                    "decodes it differently from Yjs"
                )
            if kind == CONTENT_TYPE:
                c = s.content
                if isinstance(c, TypeContent) and c.type_ref == TYPE_XML_HOOK:
                    raise MalformedUpdateError(
                        f"item {s.client}:{s.clock}: XmlHook type: Yjs writes its name, "
                        "yrs 0.28 reads none and decodes the following bytes differently"
                    )
            if s.origin is not None and s.origin == s.right_origin:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock} has the same left and right origin {s.origin}"
                )


# --------------------------------------------------------------------------
# The document index: what the receiving document holds, in YATA order
# --------------------------------------------------------------------------

#: Order labels are integers below this bound (they fit a u64 in a port).
_LABEL_BITS = 62
_LABEL_END = 1 << _LABEL_BITS
#: Label step when a node is put at either end of a list (leaves room both ways).
_LABEL_STEP = 1 << 20
#: Relabelling: a window of 2**i labels may hold at most _LABEL_CAP[i] nodes
#: (density threshold T**-i with T = 1.5, Bender et al. 2002), which keeps the
#: amortized cost of an insertion O(log n) nodes relabelled.
_LABEL_CAP = [int((2 / 1.5) ** i) for i in range(_LABEL_BITS + 1)]


class _Seq:
    """One list of items in document (YATA) order.

    A container's sequence (``sub`` None: the elements of an Array, Text,
    XmlText, XmlElement, XmlFragment) or the entries of one key of a map
    (``sub``: the key; the rightmost entry is the key's value).
    """

    __slots__ = ("key", "start", "sub")

    def __init__(self, key: ContainerKey, sub: str | None) -> None:
        self.key = key  # the container: a root name, or the ID of its type item
        self.sub = sub  # the map key, or None for the container's sequence
        self.start: _Node | None = None  # leftmost node


class _Node:
    """A run of clocks ``[clock, end)`` of one client that sit together in one list.

    Every run is a *chain*: the origin of each clock but the first is the clock
    before it, and all share one right origin (yrs splits and squashes its
    blocks under the same invariant), so placing a run is placing its items.
    ``seq`` is None for GC'd clocks (no list holds them).
    """

    __slots__ = (
        "client",
        "clock",
        "end",
        "kind",
        "label",
        "left",
        "origin",
        "right",
        "right_origin",
        "seq",
        "type_ref",
    )

    def __init__(  # noqa: PLR0917 - built in the hot loop, positional is cheaper
        self,
        client: int,
        clock: int,
        end: int,
        kind: int,
        origin: ID | None,
        right_origin: ID | None,
        seq: _Seq | None,
        type_ref: int | None = None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.end = end
        self.kind = kind  # content ref, STRUCT_GC, or CONTENT_DELETED once a type is deleted
        self.origin = origin  # origin of the first clock
        self.right_origin = right_origin
        self.seq = seq
        self.type_ref = type_ref  # for live Type items
        self.left: _Node | None = None
        self.right: _Node | None = None
        self.label = 0

    @property
    def where(self) -> _Where | None:
        """The container and list kind holding the run (None: GC'd)."""
        seq = self.seq
        return None if seq is None else _Where(seq.key, seq.sub is not None)

    def __repr__(self) -> str:
        return f"<run {self.client}:{self.clock}..{self.end} kind={self.kind} label={self.label}>"


def _label_for(node: _Node) -> None:
    """Gives a freshly linked node a label between its neighbours'."""
    left, right = node.left, node.right
    lo = left.label if left is not None else -1
    hi = right.label if right is not None else _LABEL_END
    gap = hi - lo
    if gap > 1:
        if right is None:
            node.label = lo + min(gap // 2, _LABEL_STEP)
        elif left is None:
            node.label = hi - min(gap // 2, _LABEL_STEP)
        else:
            node.label = lo + gap // 2
        return
    # No room: relabel the smallest aligned label window around the anchor
    # that is sparse enough, evenly.
    anchor = lo if left is not None else hi
    first = last = node
    count = 1
    i = 0
    while True:
        i += 1
        base = (anchor >> i) << i
        top = base + (1 << i)
        while first.left is not None and first.left.label >= base:
            first = first.left
            count += 1
        while last.right is not None and last.right.label < top:
            last = last.right
            count += 1
        if count <= _LABEL_CAP[i] or i == _LABEL_BITS:
            break
    step = (1 << i) // count
    label = base + step // 2
    n: _Node | None = first
    while True:
        assert n is not None
        n.label = label
        label += step
        if n is last:
            break
        n = n.right


class _DeleteSet:
    """Deleted clock ranges of one client: sorted, disjoint, merged."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts = array("I")
        self.ends = array("I")

    def add(self, start: int, end: int) -> None:
        starts, ends = self.starts, self.ends
        i = bisect_left(ends, start)  # first range ending at or after start
        j = bisect_right(starts, end)  # ranges starting at or before end merge
        if i < j:
            if starts[i] <= start and ends[j - 1] >= end and j - i == 1:
                return
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        starts[i:j] = array("I", (start,))
        ends[i:j] = array("I", (end,))

    def covers(self, start: int, end: int) -> bool:
        i = bisect_right(self.starts, start) - 1
        return i >= 0 and self.ends[i] >= end

    def ranges(self) -> list[tuple[int, int]]:
        return [(a, b - a) for a, b in zip(self.starts, self.ends, strict=True)]


class DocIndex:
    """What the receiving document holds, in document order, for the checks that need it.

    Theory of operation
    -------------------
    yrs decides where an item lands from its neighbours, so whether an update
    is safe -- and whether it places its items the same way on every replica
    -- depends on the document it is applied to.  The index mirrors what yrs
    keeps, as plain data:

    runs (``_Node``)
        every clock range integrated so far, per client in ``_starts`` /
        ``_nodes`` (sorted by clock; lookup by bisection), with its content
        kind, the origin of its first clock, its right origin and the list
        that holds it (``seq``; None once GC'd).  A run is a chain (see
        ``_Node``), so it is split at any clock without changing meaning,
        and a run typed on (same client, next clock, origin = the previous
        clock, same right origin, same list, placed right after it) is
        squashed into it: typing costs no new run.
    lists (``_Seq``)
        per container, its sequence and one list per map key, as doubly
        linked runs in YATA order (tombstones included: deletion never
        moves an item), each run carrying an order label: labels increase
        along a list, so "is X after Y" is one comparison.  A run placed
        where its neighbours leave no room relabels the smallest sparse
        enough aligned window around it (amortized O(log n)).
    deletions
        the deleted clock ranges per client (``_DeleteSet``: what the
        document's own delete set says), the live type items per client
        (``_types``; a deleted one becomes ``CONTENT_DELETED`` and
        everything inside it GC: its runs leave their lists), and deletions
        of clocks not integrated yet (``_pending``, as yrs keeps them).

    Integrating an update (:meth:`begin`) replays yrs: structs in the order of
    its ``BlockPicker`` (highest client first, switching to a client whose
    struct is a missing dependency), each placed like ``Item::integrate``
    (origin split clean at its end, right origin clean at its start, the
    conflict scan between them, map-key overwrites), then, at commit, the
    delete set, implicit deletions and garbage collection.  It costs the
    conflict scan plus O(log n) per struct, never O(document).  Every rule of
    :func:`check_semantics` is checked on the way; a refused update leaves
    the index as it was (runs past the old state vector are cut off again;
    splits and relabels made meanwhile change nothing).

    Invariants (checked by the tests against pycrdt):

    * ``state`` is the document's state vector; ``_nodes[c]`` covers
      ``[0, state[c])`` without gaps or overlaps (the document never holds a
      gap: updates past one are refused as missing);
    * along every list labels strictly increase, and the list order is
      yrs's order of those items;
    * a run's ``seq`` is None exactly when yrs holds its clocks as GC;
    * the union of ``_deleted`` is the document's delete set.

    Cost: in this Python reference a run costs about 200 bytes (an object of
    11 slots plus its boxed integers and origin tuples); a deleted range 8
    bytes.  The Rust port packs a run into 32 bytes (client index u32, clock
    and length u32, origin and right origin as run indexes u32, neighbours
    u32, label u64, kind u8).  Honest documents have few runs: automerge-paper
    (260,000 edits) is 11,000.

    Use: keep one per document.  Pass each update from outside to
    :meth:`begin` (or :func:`validate_update` with ``index=``), apply it to
    pycrdt, then :meth:`IndexUpdate.commit` (or ``rollback`` if the engine
    failed).  Record the document's own transactions with :meth:`record`
    (their update, from ``doc.observe``) or :meth:`record_diff`.

    Args:
        root_types: type ref of each root the document declares (e.g.
            ``{"body": TYPE_TEXT}``); other roots get their class from the
            first content they receive.
    """

    def __init__(self, root_types: Mapping[str, int] | None = None) -> None:
        self.root_types: dict[str, int] = dict(root_types or {})
        self.state: dict[int, int] = {}
        # Runs per client, sorted by clock: their first clocks, and the runs.
        self._starts: dict[int, list[int]] = {}
        self._nodes: dict[int, list[_Node]] = {}
        # The lists: (container, map key or None) -> list; per container, its lists.
        self._seqs: dict[tuple[ContainerKey, str | None], _Seq] = {}
        self._lists_of: dict[ContainerKey, list[_Seq]] = {}
        # What each container of unknown type has shown (_TEXTUAL/_VALUED; for a
        # root also _KEYED or _SEQUENCE, rule S11), kept across updates.
        self.observed: dict[ContainerKey, int] = {}
        # Clocks of the live type items, per client (sorted).
        self._types: dict[int, list[int]] = {}
        # The document's delete set.
        self._deleted: dict[int, _DeleteSet] = {}
        # Deletions of clocks beyond ``state`` (yrs keeps them pending), sorted
        # (start, end) per client, and how many ranges that is.
        self._pending: dict[int, list[tuple[int, int]]] = {}
        self.pending_deletes = 0
        # S7: per client, the sorted clocks that fall between the two UTF-16
        # units of a character outside the BMP in a String item (splitting
        # there corrupts yrs). Kept after deletion too: cheap, and safe.
        self.pair_splits: dict[int, list[int]] = {}
        # A Format item was integrated: yrs may then delete formatting items of
        # its own accord in remote transactions (it cleans up redundant ones).
        self.formatting = False
        self._last_diff: bytes | None = None

    # -- queries -------------------------------------------------------------

    def lookup(self, client: int, clock: int) -> tuple[int, _Node] | None:
        """The (start clock, run) holding ``client:clock``, or None if not integrated."""
        node = self._node_at(client, clock)
        return None if node is None else (node.clock, node)

    def _node_at(self, client: int, clock: int) -> _Node | None:
        nodes = self._nodes.get(client)
        if not nodes:
            return None
        node = nodes[-1]  # most references are to a client's latest run
        if clock >= node.clock:
            return node if clock < node.end else None
        i = bisect_right(self._starts[client], clock) - 1
        if i < 0:
            return None
        node = nodes[i]
        return node if clock < node.end else None

    def _live_at(self, ref: ID) -> _Node | None:
        """The run holding ``ref`` if a list holds it (yrs's ``get_item``: None if GC)."""
        node = self._node_at(ref[0], ref[1])
        return node if node is not None and node.seq is not None else None

    def covers(self, delete_set: Mapping[int, Iterable[tuple[int, int]]]) -> bool:
        """Whether every ``(clock, length)`` range is already deleted here."""
        for client, ranges in delete_set.items():
            mine = self._deleted.get(client)
            for clock, length in ranges:
                if mine is None or not mine.covers(clock, clock + length):
                    return False
        return True

    def delete_set(self) -> dict[int, list[tuple[int, int]]]:
        """The document's delete set, as ``(clock, length)`` ranges per client."""
        return {c: d.ranges() for c, d in self._deleted.items() if len(d.starts)}

    def runs(self) -> int:
        """How many runs the index holds."""
        return sum(len(n) for n in self._nodes.values())

    def order(self, key: ContainerKey, sub: str | None = None) -> list[tuple[int, int, int]]:
        """The runs of one list in document order, as ``(client, clock, end)`` (for tests)."""
        seq = self._seqs.get((key, sub))
        out = []
        node = seq.start if seq is not None else None
        while node is not None:
            out.append((node.client, node.clock, node.end))
            node = node.right
        return out

    def snapshot(self) -> dict[str, object]:
        """Everything the index holds, as plain data (for tests and fuzzers; O(document)).

        The Rust port (``crdtsync._native.DocIndex.snapshot``) returns the same
        shape, so the two can be compared: ``state`` (client, clock) pairs;
        ``runs`` per client in clock order, each ``(client, clock, end, kind,
        origin, right_origin, list, type_ref)`` with ``list`` the
        ``(container, map key)`` holding it or None once GC'd; ``lists``, each
        ``(container, map key, [(client, clock, end), ...])`` in document
        order; the delete set (``deleted``), ``pending`` deletions, live
        ``types``, ``observed`` classes, ``pair_splits``, ``root_types`` and
        ``formatting``. Labels are left out: only the order they encode is
        part of the index's meaning.
        """
        runs = []
        for client in sorted(self._nodes):
            for n in self._nodes[client]:
                seq = n.seq
                runs.append(
                    (
                        n.client,
                        n.clock,
                        n.end,
                        n.kind,
                        n.origin,
                        n.right_origin,
                        None if seq is None else (seq.key, seq.sub),
                        n.type_ref,
                    )
                )
        return {
            "state": sorted(self.state.items()),
            "runs": runs,
            "lists": [(k, sub, self.order(k, sub)) for k, sub in self._seqs],
            "deleted": sorted(self.delete_set().items()),
            "pending": sorted((c, list(p)) for c, p in self._pending.items() if p),
            "types": sorted((c, list(t)) for c, t in self._types.items() if t),
            "observed": list(self.observed.items()),
            "pair_splits": sorted((c, list(p)) for c, p in self.pair_splits.items() if p),
            "root_types": sorted(self.root_types.items()),
            "formatting": self.formatting,
        }

    def check_invariants(self) -> None:
        """Checks the invariants above (for tests and fuzzers; O(document)).

        Raises:
            AssertionError: an invariant does not hold.
        """
        for client, nodes in self._nodes.items():
            starts = self._starts[client]
            _expect([n.clock for n in nodes] == starts, f"run starts of client {client}")
            clock = 0
            for n in nodes:
                _expect(n.clock == clock, f"gap or overlap at {n}")
                _expect(n.end > n.clock, f"empty run {n}")
                clock = n.end
            _expect(clock == self.state.get(client, 0), f"state of client {client}")
        for (key, sub), seq in self._seqs.items():
            _expect(seq.key == key, f"list {key!r}")
            _expect(seq.sub == sub, f"list {key!r}/{sub!r}")
            prev: _Node | None = None
            node = seq.start
            while node is not None:
                _expect(node.seq is seq, f"{node} in another list")
                _expect(node.left is prev, f"{node}: broken left link")
                _expect(prev is None or prev.label < node.label, f"labels at {node}")
                prev, node = node, node.right

    # -- recording ------------------------------------------------------------

    def begin(
        self, parsed: ParsedUpdate, limits: UpdateLimits = DEFAULT_LIMITS, *, strict: bool = True
    ) -> IndexUpdate:
        """Checks an update against the document and integrates its structs.

        On refusal the index is unchanged.  Otherwise call
        :meth:`IndexUpdate.commit` once pycrdt has applied the update (its
        deletions and garbage collection are recorded then), or
        :meth:`IndexUpdate.rollback` if pycrdt failed.

        Args:
            parsed: the update (from :func:`parse_update`).
            limits: ``max_pending_deletes`` bounds deletions of clocks not
                integrated yet.
            strict: whether the update must be complete (no gap, no missing
                dependency).  Only the recording of the document's own,
                already applied changes passes False.

        Raises:
            MissingUpdatesError: a dependency is neither here nor in the update.
            MalformedUpdateError: a rule is broken.
            UpdateLimitError: too many pending deletions.
        """
        txn = IndexUpdate(self, parsed, limits, strict)
        try:
            txn.run()
        except BaseException:
            txn.rollback()
            raise
        return txn

    def record(self, parsed: ParsedUpdate) -> None:
        """Records an update that pycrdt has applied (its structs, then its deletions)."""
        self.begin(parsed, _NO_LIMITS, strict=False).commit()

    def record_diff(self, data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> None:
        """Records the document's own changes from ``doc.get_update(<self.state encoded>)``.

        Such a diff holds the local structs the index has not seen and the
        document's whole delete set (a local deletion does not move the state
        vector, but deleting a type makes yrs GC its children, which changes
        where later remote items land).  When ``data`` is the same as last
        time, this returns at once.  (``crdtsync.Doc`` records each local
        transaction's own update instead, which costs what it changed.)
        """
        if data == self._last_diff:
            return
        parsed = parse_update(
            data, replace(limits, max_update_bytes=max(limits.max_update_bytes, len(data)))
        )
        self.record(parsed)
        self._last_diff = data if not parsed.clients else None

    def record_deletes(self, delete_set: Mapping[int, Iterable[tuple[int, int]]]) -> None:
        """Records deletions (``(clock, length)`` ranges per client) applied by pycrdt.

        Idempotent.  A deleted type item becomes ContentDeleted (a reference
        to it as a parent makes yrs turn the item into GC) and everything
        inside it GC (an item whose origin is GC'd takes the container of its
        right origin).  Ranges beyond the known clocks are kept, as yrs keeps
        them, and apply when those clocks are integrated.
        """
        for client, ranges in delete_set.items():
            for clock, length in ranges:
                self._delete(client, clock, clock + length)

    # -- internals ------------------------------------------------------------

    def _seq(self, key: ContainerKey, sub: str | None) -> tuple[_Seq, bool]:
        """The list (created if need be), and whether it was created."""
        seq = self._seqs.get((key, sub))
        if seq is not None:
            return seq, False
        seq = self._seqs[(key, sub)] = _Seq(key, sub)
        self._lists_of.setdefault(key, []).append(seq)
        return seq, True

    def _split(self, node: _Node, at: int) -> _Node:
        """Splits a run before clock ``at``; returns the tail (linked right after it)."""
        tail = _Node(
            node.client,
            at,
            node.end,
            node.kind,
            (node.client, at - 1),
            node.right_origin,
            node.seq,
        )
        node.end = at
        starts = self._starts[node.client]
        i = bisect_right(starts, node.clock)
        starts.insert(i, at)
        self._nodes[node.client].insert(i, tail)
        if node.seq is not None:
            right = node.right
            tail.left = node
            tail.right = right
            node.right = tail
            if right is not None:
                right.left = tail
            _label_for(tail)
        return tail

    def _clean_end(self, ref: ID, node: _Node | None = None) -> _Node | None:
        """The live run ending at ``ref`` (split there), or None if ``ref`` is GC'd."""
        if node is None or not node.clock <= ref[1] < node.end:
            node = self._live_at(ref)
        if node is not None and ref[1] + 1 < node.end:
            self._split(node, ref[1] + 1)
        return node

    def _clean_start(self, ref: ID, node: _Node | None = None) -> _Node | None:
        """The live run starting at ``ref`` (split there), or None if ``ref`` is GC'd."""
        if node is None or not node.clock <= ref[1] < node.end:
            node = self._live_at(ref)
        if node is not None and ref[1] > node.clock:
            node = self._split(node, ref[1])
        return node

    def _append(self, node: _Node) -> None:
        """Adds a run at the end of its client's runs."""
        starts = self._starts.get(node.client)
        if starts is None:
            self._starts[node.client] = [node.clock]
            self._nodes[node.client] = [node]
        else:
            starts.append(node.clock)
            self._nodes[node.client].append(node)

    def _delete(self, client: int, start: int, end: int) -> None:
        """Deletes clocks ``[start, end)`` as yrs does (see :meth:`record_deletes`)."""
        known = self.state.get(client, 0)
        if end > known:
            self._add_pending(client, max(start, known), end)
            end = known
        if start >= end:
            return
        ds = self._deleted.get(client)
        if ds is None:
            ds = self._deleted[client] = _DeleteSet()
        ds.add(start, end)
        types = self._types.get(client)
        if types:
            i = bisect_left(types, start)
            j = bisect_left(types, end, i)
            if i < j:
                doomed = types[i:j]
                del types[i:j]
                for t in doomed:
                    node = self._node_at(client, t)
                    assert node is not None
                    node.kind = CONTENT_DELETED
                    node.type_ref = None
                    self._gc_inside((client, t))

    def _gc_inside(self, container: ID) -> None:
        """Yrs (``Item::gc``) turns everything inside a deleted type into GC, recursively."""
        stack: list[ContainerKey] = [container]
        while stack:
            key = stack.pop()
            for seq in self._lists_of.pop(key, ()):
                del self._seqs[(seq.key, seq.sub)]
                node = seq.start
                seq.start = None
                while node is not None:
                    nxt = node.right
                    node.seq = None
                    node.left = node.right = None
                    if node.kind == CONTENT_TYPE:
                        types = self._types.get(node.client)
                        if types:
                            k = bisect_left(types, node.clock)
                            if k < len(types) and types[k] == node.clock:
                                del types[k]
                        stack.append((node.client, node.clock))
                    node.kind = STRUCT_GC
                    node.type_ref = None
                    ds = self._deleted.get(node.client)
                    if ds is None:
                        ds = self._deleted[node.client] = _DeleteSet()
                    ds.add(node.clock, node.end)
                    node = nxt

    def _add_pending(self, client: int, start: int, end: int) -> None:
        pending = self._pending.setdefault(client, [])
        insort(pending, (start, end))
        self.pending_deletes += 1

    def _release_pending(self, client: int) -> None:
        """Applies the pending deletions of ``client`` that its clocks now reach."""
        pending = self._pending.get(client)
        if not pending:
            return
        known = self.state.get(client, 0)
        if pending[0][0] >= known:
            return
        del self._pending[client]
        self.pending_deletes -= len(pending)
        for start, end in pending:
            self._delete(client, start, end)


#: No limits for recording what pycrdt already applied.
_NO_LIMITS = UpdateLimits(max_pending_deletes=2**62)


class IndexUpdate:
    """One update being integrated into a :class:`DocIndex` (see :meth:`DocIndex.begin`)."""

    def __init__(
        self, index: DocIndex, parsed: ParsedUpdate, limits: UpdateLimits, strict: bool
    ) -> None:
        self.index = index
        self.parsed = parsed
        self.limits = limits
        self.strict = strict
        self._starts: dict[int, list[int]] | None = None  # struct clocks, built on demand
        self.pair_splits = _update_pair_splits(parsed)
        # Undo log: state before (per client touched), observed classes set,
        # lists created.
        self.old_state: dict[int, int] = {}
        self.old_observed: list[tuple[ContainerKey, int | None]] = []
        self.new_seqs: list[_Seq] = []
        # For the commit: clock ranges deleted by the structs (Deleted content,
        # GC, map entries overwritten, items in a type deleted meanwhile), type
        # items created, containers whose type item this update deletes.
        self.deletions: list[tuple[int, int, int]] = []
        self.new_types: list[ID] = []
        self.doomed_types: set[ID] = set()
        self.formatting = False
        self.done = False
        # (container, map entry?, content kind) already checked by S4 in this update
        self.placed: set[tuple[ContainerKey, bool, int]] = set()

    # -- phase A: check and integrate the structs ----------------------------

    def run(self) -> None:
        """Check the update against the index and integrate its structs (undone on refusal)."""
        _check_static(self.parsed)
        self._prepass()
        self._integrate_all()
        self._check_delete_set()

    def _find(self, client: int, clock: int) -> Struct | None:
        if self._starts is None:
            self._starts = {c: [s.clock for s in ss] for c, ss in self.parsed.clients.items()}
        starts = self._starts.get(client)
        if not starts:
            return None
        i = bisect_right(starts, clock) - 1
        if i < 0:
            return None
        s = self.parsed.clients[client][i]
        return s if clock < s.end and s.kind != STRUCT_SKIP else None

    def _prepass(self) -> None:
        """S2 and S5: references point backwards on their client, and exist."""
        state = self.index.state
        strict = self.strict
        # Clocks the update provides, per client: up to its end when it has no
        # Skip (its structs are contiguous); else ask _find.
        ends: dict[int, int] = {}
        for c, ss in self.parsed.clients.items():
            if all(x.kind != STRUCT_SKIP for x in ss):
                ends[c] = ss[-1].clock + ss[-1].length

        def find(rc: int, rk: int) -> object:
            end = ends.get(rc)
            if end is not None:
                return True if rk < end else None
            return self._find(rc, rk)

        for client, structs in self.parsed.clients.items():
            known = state.get(client, 0)
            for s in structs:
                send = s.clock + s.length
                if s.kind == STRUCT_SKIP:
                    if send > known and strict:
                        raise MissingUpdatesError(
                            f"Skip struct at {client}:{s.clock}: the update has a gap",
                            client,
                            max(s.clock, known),
                            (client, send - 1),
                        )
                    continue
                if send <= known:
                    continue
                if s.clock > known:
                    if strict:
                        raise MissingUpdatesError(
                            f"client {client} starts at clock {s.clock} but the document has "
                            f"only {known}: missing updates",
                            client,
                            known,
                            (client, s.clock - 1),
                        )
                    raise MalformedUpdateError(
                        f"client {client} has a clock gap before {s.clock} (the index has {known})"
                    )
                tail = s.clock < known
                known = send
                if s.kind == STRUCT_GC:
                    continue
                for ref, what in (
                    (s.origin, "origin"),
                    (s.right_origin, "right origin"),
                    (s.parent if isinstance(s.parent, tuple) else None, "parent"),
                ):
                    if ref is None:
                        continue
                    rc, rk = ref
                    if rc == client and rk >= s.clock:
                        raise MalformedUpdateError(
                            f"item {client}:{s.clock} has {what} {rc}:{rk} that is not "
                            "earlier on its own client"
                        )
                    # S5 for every reference (the origin of a struct
                    # overlapping the known clocks is replaced by yrs).
                    if (
                        not (tail and what == "origin")
                        and rk >= state.get(rc, 0)
                        and find(rc, rk) is None
                    ):
                        raise _missing(s, what, ref)

    def _integrate_all(self) -> None:
        """The structs in the order of yrs's ``BlockPicker`` (update.rs)."""
        clients = self.parsed.clients
        if len(clients) == 1:
            # One client (every keystroke): its structs in order; what they
            # depend on elsewhere is in the document (checked by the prepass).
            for structs in clients.values():
                for s in structs:
                    self._integrate(s)
            return
        order = sorted(clients)  # a stack: the highest client id first
        pos = dict.fromkeys(clients, 0)
        taken: set[int] = set()  # clients that have been the "latest" one
        stack: list[Struct] = []
        latest: int | None = None
        state = self.index.state
        while True:
            if stack:
                s = stack.pop()
            else:
                while latest is None or pos[latest] >= len(clients[latest]):
                    if not order:
                        return
                    latest = order.pop()
                    taken.add(latest)
                s = clients[latest][pos[latest]]
                pos[latest] += 1
            while True:
                # yrs's missing_dependency: the client of the first reference
                # not integrated yet (known clocks and GC/Skip need none)
                missing = None
                if s.kind != STRUCT_GC and s.kind != STRUCT_SKIP:  # noqa: PLR1714 - fastest
                    known = state.get(s.client, 0)
                    if s.clock + s.length > known:
                        ref = s.origin
                        if ref is not None and s.clock >= known and ref[1] >= state.get(ref[0], 0):
                            missing = ref[0]
                        else:
                            ref = s.right_origin
                            if ref is not None and ref[1] >= state.get(ref[0], 0):
                                missing = ref[0]
                            else:
                                pa = s.parent
                                if pa.__class__ is tuple and pa[1] >= state.get(pa[0], 0):
                                    missing = pa[0]
                if missing is None:
                    break
                # yrs switches to the missing client's next struct, unless that
                # client is the current one or already waits on the stack: then
                # the update cannot be integrated whole (a dependency cycle).
                stack.append(s)
                if (
                    missing in taken
                    or pos[missing] >= len(clients[missing])
                    or any(x.client == missing for x in stack)
                ):
                    raise MalformedUpdateError(
                        f"item {s.client}:{s.clock} is part of a dependency cycle in the "
                        "update: yrs would leave it pending"
                    )
                s = clients[missing][pos[missing]]
                pos[missing] += 1
            self._integrate(s)

    def _splits_pair(self, client: int, clock: int) -> bool:
        """Whether a split before ``client:clock`` falls inside a surrogate pair (S7)."""
        mine = self.pair_splits.get(client)
        if mine is not None and clock in mine:
            return True
        doc = self.index.pair_splits.get(client)
        if not doc:
            return False
        i = bisect_left(doc, clock)
        return i < len(doc) and doc[i] == clock

    def _set_state(self, client: int, end: int) -> None:
        state = self.index.state
        if client not in self.old_state:
            self.old_state[client] = state.get(client, 0)
        state[client] = end

    def _integrate(self, s: Struct) -> None:
        index = self.index
        client = s.client
        known = index.state.get(client, 0)
        send = s.clock + s.length
        if send <= known or s.kind == STRUCT_SKIP:
            return  # yrs already has these clocks (or the struct carries nothing)
        start = max(s.clock, known)
        if s.kind == STRUCT_GC:
            self._gc_run(client, start, send)
            return
        tail = s.clock < known
        origin = (client, known - 1) if tail else s.origin
        ro = s.right_origin
        # S7: no split inside a surrogate pair.
        if (self.pair_splits or index.pair_splits) and (
            (tail and self._splits_pair(client, known))
            or (origin is not None and self._splits_pair(origin[0], origin[1] + 1))
            or (ro is not None and self._splits_pair(ro[0], ro[1]))
        ):
            what = "overlaps the known clocks" if tail else "has an origin or right origin"
            raise MalformedUpdateError(
                f"item {client}:{s.clock} {what} inside a surrogate pair "
                "(a character outside the BMP)"
            )
        nl = index._live_at(origin) if origin is not None else None
        nr = index._live_at(ro) if ro is not None else None
        # (a live run is in a list)
        lseq = nl.seq if nl is not None else None
        rseq = nr.seq if nr is not None else None
        # The parent, as yrs's repair decides it.
        key: ContainerKey | None
        p = s.parent
        if p is not None:
            if isinstance(p, str):
                key = p
            else:
                pn = index._node_at(p[0], p[1])
                if pn is None or pn.seq is None or pn.kind == CONTENT_DELETED:
                    key = None  # a GC'd or deleted parent: yrs turns the item into GC
                elif pn.kind != CONTENT_TYPE or pn.clock != p[1]:
                    raise MalformedUpdateError(
                        f"item {client}:{s.clock} has parent {p[0]}:{p[1]} which is a "
                        f"{CONTENT_NAMES.get(pn.kind, pn.kind)} item, not a type"
                    )
                else:
                    key = p
        elif lseq is not None:
            key = lseq.key
        elif rseq is not None:
            key = rseq.key
        else:
            key = None
        if key is None:
            self._gc_run(client, start, send)
            return
        # yrs takes the map key from a neighbour when one has it.
        sub = s.parent_sub if p is not None else None
        if rseq is not None and rseq.sub is not None:
            sub = rseq.sub
        if lseq is not None and lseq.sub is not None:
            sub = lseq.sub
        # Neighbours that are not GC'd live in the list the item lands in:
        # yrs links the item between them whatever their lists (a neighbour in
        # another container, map key or kind of list corrupts both lists).
        for nseq, ref, what in ((lseq, origin, "origin"), (rseq, ro, "right origin")):
            if nseq is not None and (nseq.key != key or nseq.sub != sub):
                raise MalformedUpdateError(
                    f"item {client}:{s.clock} has {what} {_fmt_id(ref)} in another "
                    "container (or in another map entry list) than the one it lands in"
                )
        # S10: a map entry has no right origin: Yjs and yrs write a key's new
        # value after its current one, with nothing to its right (typeMapSet,
        # MapRef::insert, and an undo manager's redo of an entry alike).
        if sub is not None and ro is not None:
            raise MalformedUpdateError(
                f"item {client}:{s.clock} is an entry of map key {sub!r} with a right origin "
                f"{ro[0]}:{ro[1]} (map entries have none)"
            )
        # S8: the right origin lies after the origin in document order.
        after = True
        if nl is not None and nr is not None:
            assert origin is not None
            assert ro is not None
            after = ro[1] > origin[1] if nl is nr else nr.label > nl.label
            if not after and not self._split_free(ro, nr):
                raise MalformedUpdateError(
                    f"item {client}:{s.clock} has right origin {ro[0]}:{ro[1]} that does not "
                    f"lie after its origin {origin[0]}:{origin[1]} in the document (replicas "
                    "would place it differently)"
                )
        if after and (nl is not None or nr is not None):
            self._check_known_between(s, origin, ro, nl, nr)
        kind = s.kind
        placed = (key, sub is not None, kind)
        # (a type's place also depends on its type ref: S11)
        if kind == CONTENT_TYPE or placed not in self.placed:
            self._check_place(s, key, sub is not None)
            self.placed.add(placed)
        if origin is not None and ro is not None and (nl is None) != (nr is None):
            self._check_gc_neighbours(s, origin, ro, nl is None)
        # Place it (Item::integrate).
        left = index._clean_end(origin, nl) if origin is not None and nl is not None else None
        right = index._clean_start(ro, nr) if ro is not None and nr is not None else None
        if lseq is not None:
            seq = lseq
        elif rseq is not None:
            seq = rseq
        else:
            seq, created = index._seq(key, sub)
            if created:
                self.new_seqs.append(seq)
        if left is None:
            conflict = right is None or right.left is not None
        else:
            conflict = left.right is not right
        if conflict:
            before: set[_Node] = set()
            conflicting: set[_Node] = set()
            o = left.right if left is not None else seq.start
            while o is not None and o is not right:
                before.add(o)
                conflicting.add(o)
                if origin == o.origin:
                    if o.client < client:
                        left = o
                        conflicting.clear()
                    elif ro == o.right_origin:
                        break
                else:
                    oo = o.origin
                    ol = index._live_at(oo) if oo is not None else None
                    if ol is not None and ol in before:
                        if ol not in conflicting:
                            left = o
                            conflicting.clear()
                    else:
                        break
                o = o.right
        if (
            left is not None
            and sub is None
            and left.client == client
            and left.end == start
            and left.kind == kind
            and kind != CONTENT_TYPE
            and left.right_origin == ro
            and origin == (client, start - 1)
        ):
            left.end = send  # typed on: squash (yrs's try_squash)
            node = left
        else:
            node = _Node(
                client,
                start,
                send,
                kind,
                origin,
                ro,
                seq,
                s.content.type_ref if isinstance(s.content, TypeContent) else None,
            )
            if left is not None:
                nxt = left.right
                left.right = node
            else:
                nxt = seq.start
                seq.start = node
            node.left = left
            node.right = nxt
            if nxt is not None:
                nxt.left = node
            _label_for(node)
            index._append(node)
        if client not in self.old_state:
            self.old_state[client] = known
        index.state[client] = send
        if kind == CONTENT_DELETED:
            self.deletions.append((client, start, send))
        elif kind == CONTENT_TYPE:
            self.new_types.append((client, start))
        elif kind == CONTENT_FORMAT:
            self.formatting = True
        # Deletions yrs makes while integrating (Item::integrate / needs_deletion).
        if sub is not None:
            if node.right is not None:
                self._doom(client, start, send)  # not the key's value: deleted at once
            elif node.left is not None:
                prev = node.left  # the key's previous value
                self._doom(prev.client, prev.clock, prev.end)
        if isinstance(key, tuple) and key in self.doomed_types:
            self._doom(client, start, send)

    def _check_gc_neighbours(self, s: Struct, origin: ID, ro: ID, origin_gc: bool) -> None:
        """S12: an origin and a right origin are both garbage-collected, or neither.

        Honest neighbours share a list, and yrs garbage-collects only the
        items of a deleted type: all of a list's items, or none.  With one
        side GC'd, yrs places the item from the other side alone (scanning
        from the list's start, S9 unchecked), and the document's export then
        names neighbours that break S9.  (A reference not integrated yet is
        a missing dependency, refused before.)
        """
        state = self.index.state
        if state.get(origin[0], 0) <= origin[1] or state.get(ro[0], 0) <= ro[1]:
            return  # not integrated (only when recording the document's own changes)
        gc, live = (origin, ro) if origin_gc else (ro, origin)
        raise MalformedUpdateError(
            f"item {s.client}:{s.clock} has "
            + ("origin" if origin_gc else "right origin")
            + f" {gc[0]}:{gc[1]} garbage-collected (inside a deleted type) and "
            + ("right origin" if origin_gc else "origin")
            + f" {live[0]}:{live[1]} in a list: neighbours in different lists"
        )

    def _split_free(self, ro: ID, nr: _Node) -> bool:
        """Whether no yrs replica can hold ``ro`` in one block with the clock before it.

        yrs squashes a block into the one before only when its origin is that
        block's last clock and their right origins are equal, and splits only
        where something refers; so a clock whose origin is not the clock
        before it (or whose right origin differs from that clock's) starts a
        block everywhere.  Then placing an item whose right origin lies at or
        before its origin splits no block, its origin's block stays whole, and
        yrs places it the same way on every replica: after its origin, by the
        conflict scan (which never meets the right origin).  Otherwise a
        replica that holds both clocks in one block splits it there and links
        the item after the wrong half (how the 12-byte update of issue 18
        diverges); Yjs's UndoManager emits such items too.
        """
        client, clock = ro
        if clock == 0:
            return True
        own = nr.origin if clock == nr.clock else (client, clock - 1)
        if own != (client, clock - 1):
            return True
        prev = self.index._node_at(client, clock - 1)
        return prev is not None and prev.right_origin != nr.right_origin

    def _check_known_between(
        self,
        s: Struct,
        origin: ID | None,
        ro: ID | None,
        nl: _Node | None,
        nr: _Node | None,
    ) -> None:
        """S9: nothing the writer provably knew lies between its origin and right origin.

        An honest writer's origin and right origin are neighbours in its list,
        and it holds their dependencies (Yjs and yrs integrate an item only
        after its origin and right origin): the right origin's own origin lies
        at or before the origin, and the origin's own right origin at or after
        the right origin.  (A missing origin is the list's start, a missing
        right origin its end.)
        """
        index = self.index
        seq = cast(_Seq, (nl or nr).seq)  # type: ignore[union-attr]
        # (A GC'd origin or right origin has no place to compare with.)
        if nr is not None and (nl is not None or origin is None):
            assert ro is not None
            ro_origin = nr.origin if ro[1] == nr.clock else (ro[0], ro[1] - 1)
            if ro_origin is not None and ro_origin != origin:
                q = index._live_at(ro_origin)
                if (
                    q is not None
                    and q.seq is seq
                    and (nl is None or not _at_or_before(q, ro_origin[1], nl, cast(ID, origin)[1]))
                ):
                    raise MalformedUpdateError(
                        f"item {s.client}:{s.clock}: the origin {ro_origin[0]}:{ro_origin[1]} of "
                        f"its right origin {ro[0]}:{ro[1]} lies after its own origin "
                        f"{_fmt_id(origin)}, so its writer knew an item between them"
                    )
        if nl is not None and (nr is not None or ro is None):
            assert origin is not None
            o_right = nl.right_origin
            if o_right is not None and o_right != ro:
                q = index._live_at(o_right)
                if (
                    q is not None
                    and q.seq is seq
                    and (nr is None or not _at_or_before(nr, cast(ID, ro)[1], q, o_right[1]))
                ):
                    raise MalformedUpdateError(
                        f"item {s.client}:{s.clock}: the right origin {o_right[0]}:{o_right[1]} "
                        f"of its origin {origin[0]}:{origin[1]} lies before its own right origin "
                        f"{_fmt_id(ro)}, so its writer knew an item between them"
                    )

    def _doom(self, client: int, start: int, end: int) -> None:
        self.deletions.append((client, start, end))
        node = self.index._node_at(client, start)
        if node is not None and node.kind == CONTENT_TYPE:
            self.doomed_types.add((client, start))

    def _gc_run(self, client: int, start: int, end: int) -> None:
        """Clocks yrs stores as GC: no list holds them."""
        index = self.index
        prev = index._nodes.get(client)
        last = prev[-1] if prev else None
        if last is not None and last.seq is None and last.end == start:
            last.end = end
        else:
            index._append(_Node(client, start, end, STRUCT_GC, None, None, None))
        self._set_state(client, end)
        self.deletions.append((client, start, end))

    def _seq_class(self, key: ContainerKey) -> int | str | None:
        """Sequence class of a container: a class, None (no sequence) or "?" (unknown)."""
        if isinstance(key, str):
            tr = self.index.root_types.get(key)
        else:
            node = self.index._node_at(key[0], key[1])
            tr = node.type_ref if node is not None else None
        return "?" if tr is None else _TYPE_SEQ_CLASS.get(tr, "?")

    def _check_place(self, s: Struct, key: ContainerKey, entry: bool) -> None:
        """S4 and S11: the content fits the container (and list) it lands in."""
        observed = self.index.observed
        seen = _check_place(s, self._seq_class(key), entry, observed.get(key), isinstance(key, str))
        if seen is not None:
            self.old_observed.append((key, observed.get(key)))
            observed[key] = seen

    def _check_delete_set(self) -> None:
        """S7 for deletions, and the bound on deletions of clocks not integrated yet."""
        index = self.index
        check_pairs = bool(self.pair_splits or index.pair_splits)
        pending = 0
        state = index.state
        for client, ranges in self.parsed.delete_set.items():
            known = state.get(client, 0)
            for clock, length in ranges:
                if check_pairs:
                    for at in (clock, clock + length):
                        if self._splits_pair(client, at):
                            raise MalformedUpdateError(
                                f"deletion {client}:{clock}+{length} splits a surrogate pair "
                                f"at clock {at} (a character outside the BMP)"
                            )
                if clock + length > known:
                    pending += 1
        limit = self.limits.max_pending_deletes
        if pending and index.pending_deletes + pending > limit:
            raise UpdateLimitError(
                f"the update deletes {pending} ranges of changes this document does not have, "
                f"{index.pending_deletes} are waiting already: more than "
                f"max_pending_deletes={limit}"
            )

    # -- phase B: deletions and garbage collection ----------------------------

    def commit(self) -> None:
        """Records the deletions, once pycrdt has applied the update."""
        if self.done:
            return
        self.done = True
        index = self.index
        for c, k in self.new_types:
            node = index._node_at(c, k)
            if node is not None and node.kind == CONTENT_TYPE and node.seq is not None:
                insort(index._types.setdefault(c, []), k)
        for c, splits in self.pair_splits.items():
            mine = index.pair_splits.setdefault(c, [])
            new = sorted(splits)
            if not mine or mine[-1] < new[0]:
                mine.extend(new)
            else:
                mine[:] = sorted(set(mine).union(new))
        if self.formatting:
            index.formatting = True
        # yrs: the structs' own deletions, then the delete set, then pending
        # deletions the new clocks make applicable; GC at the end (here: as
        # each type is deleted, which comes to the same).
        for c, a, b in self.deletions:
            index._delete(c, a, b)
        for client, ranges in self.parsed.delete_set.items():
            for clock, length in ranges:
                index._delete(client, clock, clock + length)
        if index._pending:
            for client in self.old_state:
                index._release_pending(client)
        index._last_diff = None

    def rollback(self) -> None:
        """Undoes :meth:`run` (only before :meth:`commit`)."""
        if self.done:
            return
        self.done = True
        index = self.index
        for client, old in self.old_state.items():
            starts = index._starts.get(client)
            nodes = index._nodes.get(client)
            if nodes is not None and starts is not None:
                while nodes and nodes[-1].clock >= old:
                    node = nodes.pop()
                    starts.pop()
                    _unlink(node)
                if nodes and nodes[-1].end > old:
                    nodes[-1].end = old  # a squashed extension
                if not nodes:
                    del index._starts[client], index._nodes[client]
            if old:
                index.state[client] = old
            else:
                index.state.pop(client, None)
        for key, was in reversed(self.old_observed):
            if was is None:
                index.observed.pop(key, None)
            else:
                index.observed[key] = was
        for seq in self.new_seqs:
            if seq.start is None:
                index._seqs.pop((seq.key, seq.sub), None)
                lists = index._lists_of.get(seq.key)
                if lists is not None and seq in lists:
                    lists.remove(seq)
                    if not lists:
                        del index._lists_of[seq.key]


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(f"DocIndex invariant broken: {what}")


def _at_or_before(a: _Node, a_clock: int, b: _Node, b_clock: int) -> bool:
    """Whether clock ``a_clock`` of run ``a`` lies at or before ``b_clock`` of run ``b``."""
    if a is b:
        return a_clock <= b_clock
    return a.label < b.label


def _fmt_id(ref: ID | None) -> str:
    return "(none)" if ref is None else f"{ref[0]}:{ref[1]}"


def _unlink(node: _Node) -> None:
    seq = node.seq
    if seq is None:
        return
    left, right = node.left, node.right
    if left is not None:
        left.right = right
    else:
        seq.start = right
    if right is not None:
        right.left = left
    node.left = node.right = None


# --------------------------------------------------------------------------
# Checks without an index (the update alone, plus what the caller knows)
# --------------------------------------------------------------------------


class _StaticChecker:
    """Resolves what can be resolved from the update alone, and checks the rules.

    Without a document index, references into the document cannot be
    followed (their container is unknown and nothing is checked against
    them); inside the update, an item's container is decided the way yrs
    decides it (``Item::repair``): an explicit parent, else the container of
    its origin, or of its right origin when the origin is GC'd.
    """

    def __init__(
        self,
        parsed: ParsedUpdate,
        limits: UpdateLimits,
        known_state: Mapping[int, int] | None,
        root_types: Mapping[str, int] | None,
    ) -> None:
        self.parsed = parsed
        self.limits = limits
        self.known: Mapping[int, int] = known_state if known_state is not None else {}
        self.root_types: Mapping[str, int] = root_types if root_types is not None else {}
        self.starts = {c: [s.clock for s in ss] for c, ss in parsed.clients.items()}
        self.pair_splits = _update_pair_splits(parsed)
        self.memo: dict[int, _Where] = {}  # id(struct) -> where
        # Knowing the receiving state, a reference to a clock that is neither
        # in the document nor in the update is a missing dependency.
        self.strict = known_state is not None

    def _find(self, client: int, clock: int) -> Struct | None:
        starts = self.starts.get(client)
        if not starts:
            return None
        i = bisect_right(starts, clock) - 1
        if i < 0:
            return None
        s = self.parsed.clients[client][i]
        return s if clock < s.end and s.kind != STRUCT_SKIP else None

    def _in_doc(self, client: int, clock: int) -> bool:
        return clock < self.known.get(client, 0)

    def _check_pairs(self) -> None:
        """S7: no reference or deletion splits a character outside the BMP."""
        if not self.pair_splits:
            return
        splits = self.pair_splits
        for client, structs in self.parsed.clients.items():
            known = self.known.get(client, 0)
            for s in structs:
                if not s.is_item or s.end <= known:
                    continue
                if s.clock < known and known in splits.get(client, ()):
                    raise MalformedUpdateError(
                        f"item {client}:{s.clock} overlaps the known clocks up to {known}, "
                        "inside a surrogate pair"
                    )
                for ref, what, at in (
                    (s.origin, "origin", 1),
                    (s.right_origin, "right origin", 0),
                ):
                    if ref is not None and ref[1] + at in splits.get(ref[0], ()):
                        raise MalformedUpdateError(
                            f"item {client}:{s.clock} has {what} {ref[0]}:{ref[1]} inside a "
                            "surrogate pair (a character outside the BMP)"
                        )
        for client, ranges in self.parsed.delete_set.items():
            for clock, length in ranges:
                for at in (clock, clock + length):
                    if at in splits.get(client, ()):
                        raise MalformedUpdateError(
                            f"deletion {client}:{clock}+{length} splits a surrogate pair "
                            f"at clock {at} (a character outside the BMP)"
                        )

    def _resolve(self, s: Struct) -> _Where:
        """Where ``s`` lands, followed through the update with an explicit stack."""
        memo = self.memo
        got = memo.get(id(s))
        if got is not None:
            return got
        # Frames [struct, stage]: stage 0 = start, 1 = waiting for the left
        # neighbour / the parent type, 3 = waiting for the right neighbour.
        stack: list[tuple[Struct, int]] = [(s, 0)]
        on_stack: set[int] = {id(s)}
        last: _Where = _UNKNOWN  # result of the frame finished last
        while stack:
            cur, stage = stack[-1]
            step = self._step(cur, stage, last)
            while not isinstance(step, _Where):  # wait for a struct of the update
                stage, target = step
                got = memo.get(id(target))
                if got is None and id(target) in on_stack:
                    got = _UNKNOWN  # a cycle: yrs leaves these pending
                if got is None:
                    break
                step = self._step(cur, stage, got)
            if not isinstance(step, _Where):
                stack[-1] = (cur, step[0])
                stack.append((step[1], 0))
                on_stack.add(id(step[1]))
                continue
            last = step
            memo[id(cur)] = step
            on_stack.discard(id(cur))
            stack.pop()
        return last

    def _step(self, cur: Struct, stage: int, last: _Where) -> _Where | tuple[int, Struct]:
        """Advances the resolution of ``cur``: its place, or (stage, struct to wait for)."""
        known = self.known.get(cur.client, 0)
        if cur.clock < known:
            origin: ID | None = (cur.client, known - 1)
            explicit = cur.parent is not None
        else:
            origin = cur.origin
            explicit = cur.parent is not None or not cur.info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN)
        if explicit:
            p = cur.parent
            entry = cur.parent_sub is not None
            if isinstance(p, str):
                return _Where(p, entry)
            assert p is not None
            if stage == 0:
                got = self._parent_type(p, cur)
                if isinstance(got, Struct):
                    return (1, got)
                return _Where(p, entry) if got else _GC
            return _GC if last is _GC else _Where(p, entry)
        if stage == 0:
            got_left = self._neighbour_ref(cur, origin, "origin")
            if isinstance(got_left, Struct):
                return (1, got_left)
            if got_left is not None:
                return got_left
        elif stage == 1:
            if last is not _GC:
                return last
        else:
            return last
        got_right = self._neighbour_ref(cur, cur.right_origin, "right origin")
        if isinstance(got_right, Struct):
            return (3, got_right)
        return _GC if got_right is None else got_right

    def _neighbour_ref(self, s: Struct, ref: ID | None, what: str) -> Struct | _Where | None:
        if ref is None:
            return None
        client, clock = ref
        if self._in_doc(client, clock):
            return _UNKNOWN
        target = self._find(client, clock)
        if target is None:
            if self.strict:
                raise _missing(s, what, ref)
            return _UNKNOWN
        return None if target.kind == STRUCT_GC else target

    def _parent_type(self, ref: ID, s: Struct) -> bool | Struct:
        client, clock = ref
        if self._in_doc(client, clock):
            return True
        target = self._find(client, clock)
        if target is None:
            if self.strict:
                raise _missing(s, "parent", ref)
            return True
        if target.kind in (STRUCT_GC, CONTENT_DELETED):
            return False
        if target.kind != CONTENT_TYPE or target.clock != clock:
            raise MalformedUpdateError(
                f"item {s.client}:{s.clock} has parent {client}:{clock} which is a "
                f"{CONTENT_NAMES.get(target.kind, target.kind)} item, not a type"
            )
        return target

    def _seq_class(self, key: ContainerKey) -> int | str | None:
        if isinstance(key, str):
            if key in self.root_types:
                return _TYPE_SEQ_CLASS.get(self.root_types[key], "?")
            return "?"
        client, clock = key
        if self._in_doc(client, clock):
            return "?"
        t = self._find(client, clock)
        tr = t.content.type_ref if t is not None and isinstance(t.content, TypeContent) else None
        return "?" if tr is None else _TYPE_SEQ_CLASS.get(tr, "?")

    def run(self) -> None:
        observed: dict[ContainerKey, int] = {}
        for client, structs in self.parsed.clients.items():
            known = self.known.get(client, 0)
            if self.strict and structs[0].clock > known:
                raise MissingUpdatesError(
                    f"client {client} starts at clock {structs[0].clock} but the document has "
                    f"only {known}: missing updates",
                    client,
                    known,
                    (client, structs[0].clock - 1),
                )
            for s in structs:
                if s.kind == STRUCT_SKIP:
                    if self.strict and s.end > known:
                        raise MissingUpdatesError(
                            f"Skip struct at {client}:{s.clock}: the update has a gap",
                            client,
                            max(s.clock, known),
                            (client, s.end - 1),
                        )
                    continue
                if s.end <= known or s.kind == STRUCT_GC:
                    continue
                self._check_refs(s)
                where = self._resolve(s)
                if where is not _GC and where is not _UNKNOWN:
                    self._check_neighbours(s, where, known)
                    self._check_place(s, where, observed)
        self._check_pairs()

    def _check_neighbours(self, s: Struct, where: _Where, known: int) -> None:
        origin = (s.client, known - 1) if s.clock < known else s.origin
        places: list[_Where | None] = []
        for ref, what in ((origin, "origin"), (s.right_origin, "right origin")):
            if ref is None:
                continue
            place = self._place_of(ref)
            places.append(place)
            if place is None or place is _UNKNOWN or place is _GC:
                continue
            if place != where:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock} has {what} {ref[0]}:{ref[1]} in another "
                    "container (or in a map entry list) than the one it lands in"
                )
        # S12: a GC struct of the update on one side, a list on the other.
        listed = [p for p in places if p is not None and p is not _GC and p is not _UNKNOWN]
        if len(places) == 2 and None in places and listed:
            raise MalformedUpdateError(
                f"item {s.client}:{s.clock} has one neighbour garbage-collected (a GC struct) "
                "and the other in a list: neighbours in different lists"
            )

    def _place_of(self, ref: ID) -> _Where | None:
        client, clock = ref
        if self._in_doc(client, clock):
            return _UNKNOWN
        target = self._find(client, clock)
        if target is None:
            return _UNKNOWN
        if target.kind == STRUCT_GC:
            return None
        return self._resolve(target)

    def _check_refs(self, s: Struct) -> None:
        client, clock = s.client, s.clock
        known = self.known.get(client, 0)
        for ref, what in (
            (s.origin, "origin"),
            (s.right_origin, "right origin"),
            (s.parent if isinstance(s.parent, tuple) else None, "parent"),
        ):
            if ref is None:
                continue
            if ref[0] == client and ref[1] >= clock:
                raise MalformedUpdateError(
                    f"item {client}:{clock} has {what} {ref[0]}:{ref[1]} that is not earlier on "
                    "its own client"
                )
            if (
                self.strict
                and not (what == "origin" and clock < known)
                and not self._in_doc(*ref)
                and self._find(*ref) is None
            ):
                raise _missing(s, what, ref)

    def _check_place(self, s: Struct, where: _Where, observed: dict[ContainerKey, int]) -> None:
        key = where.key
        seen = _check_place(
            s, self._seq_class(key), where.entry, observed.get(key), isinstance(key, str)
        )
        if seen is not None:
            observed[key] = seen


def _check_place(
    s: Struct, seq: int | str | None, entry: bool, seen: int | None, root: bool
) -> int | None:
    """S4 and S11: whether an item fits the container it lands in (raises if not).

    Args:
        s: the item.
        seq: the container's sequence class (``_seq_class``: a class, None
            for no sequence, "?" for a container of unknown type).
        entry: whether the item is a map entry (has a key).
        seen: what a container of unknown type has shown so far (None:
            nothing yet).
        root: whether the container is a root (S11 applies).

    Returns:
        What the container of unknown type shows from now on, when that
        changes (None: no change).
    """
    cls = _CONTENT_CLASS[s.kind]
    if entry and cls == _TEXTUAL:
        raise MalformedUpdateError(
            f"item {s.client}:{s.clock}: {CONTENT_NAMES[s.kind]} content cannot be a map entry"
        )
    if not entry and seq is None:
        if s.kind == CONTENT_TYPE:
            raise MalformedUpdateError(
                f"item {s.client}:{s.clock}: a Map/XmlHook has no sequence to hold it"
            )
        if cls != _NEUTRAL:
            raise MalformedUpdateError(
                f"item {s.client}:{s.clock}: {CONTENT_NAMES[s.kind]} content in the sequence of "
                "a Map/XmlHook"
            )
    if root:
        return _check_root(s, seq, entry, seen)
    if entry or cls == _NEUTRAL:
        return None
    if seq == "?":
        if seen is None:
            return cls
        seq = seen
    if seq != cls:
        raise MalformedUpdateError(
            f"item {s.client}:{s.clock}: {CONTENT_NAMES[s.kind]} content in a container "
            "holding " + ("text" if seq == _TEXTUAL else "values")
        )
    return None


def _check_root(s: Struct, seq: int | str | None, entry: bool, seen: int | None) -> int | None:
    """S11: a root shows one kind (map entries, text, or values), whatever it was declared.

    ``crdtsync.model`` tells the kind of a root it has not declared from its
    items (keyed: a map, text: a text, values or an Array/Map/Text type: a
    list) and reads it so from then on: a root mixing them is read as the
    wrong kind (a multi-byte String read as an Array loops yrs forever) and
    its export is refused by a replica that declared it.
    """
    if entry:
        shows: int | None = _KEYED
    elif s.kind == CONTENT_TYPE:
        listed = isinstance(s.content, TypeContent) and s.content.type_ref in _LISTED_TYPES
        shows = _VALUED if listed else _SEQUENCE
    elif _CONTENT_CLASS[s.kind] == _NEUTRAL:
        return None  # deleted content shows nothing
    else:
        shows = _CONTENT_CLASS[s.kind]
    # A declared root holds what its type does (a Map: entries).
    held = seen if seq == "?" else _KEYED if seq is None else seq
    if held is None or held == shows:
        return shows if seq == "?" and held is None else None
    if held == _KEYED:
        raise MalformedUpdateError(
            f"item {s.client}:{s.clock}: {CONTENT_NAMES[s.kind]} content in the sequence of a "
            "root holding map entries"
        )
    if shows == _KEYED:
        raise MalformedUpdateError(
            f"item {s.client}:{s.clock}: a map entry in a root holding a sequence"
        )
    if held == _SEQUENCE:
        return shows if seq == "?" else None  # the first text or values decide
    if shows == _SEQUENCE:
        return None
    raise MalformedUpdateError(
        f"item {s.client}:{s.clock}: {CONTENT_NAMES[s.kind]} content in a container holding "
        + ("text" if held == _TEXTUAL else "values")
    )


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def validate_update(
    data: bytes,
    limits: UpdateLimits = DEFAULT_LIMITS,
    *,
    known_state: Mapping[int, int] | None = None,
    root_types: Mapping[str, int] | None = None,
    index: DocIndex | None = None,
) -> ParsedUpdate:
    """Parses ``data`` and checks the rules that keep pycrdt from panicking or diverging.

    Without ``index`` the checks use the update alone (plus ``known_state``
    and ``root_types``); references into the document cannot be checked.
    With ``index`` (see :class:`DocIndex`) every item is checked against the
    list it will land in, and dependencies must all be present: an update
    that passes can then be given to ``pycrdt.Doc.apply_update`` on the
    indexed document without panicking, hanging or corrupting it.  The index
    is left as it was (integrate with :meth:`DocIndex.begin` instead to
    check and record in one pass).

    Args:
        data: the v1 update.
        limits: resource limits.
        known_state: the receiving document's state vector (client -> next
            clock); ignored when an index is given (its state is used).
        root_types: type ref of each declared root (defaults to
            ``index.root_types``).
        index: the receiving document's :class:`DocIndex`.

    Returns:
        The parsed update.

    Raises:
        MalformedUpdateError: the update is malformed or breaks a semantic rule.
        UpdateLimitError: a limit is exceeded.
    """
    parsed = parse_update(data, limits)
    check_semantics(parsed, limits, known_state=known_state, root_types=root_types, index=index)
    return parsed


def check_semantics(
    parsed: ParsedUpdate,
    limits: UpdateLimits = DEFAULT_LIMITS,
    *,
    known_state: Mapping[int, int] | None = None,
    root_types: Mapping[str, int] | None = None,
    index: DocIndex | None = None,
) -> None:
    """The semantic rules of :func:`validate_update` on an already parsed update.

    Rules (each found by fuzzing pycrdt 0.14.13 / yrs 0.28, see
    ``tests/fixtures/crashers/README.md``, or by the crafted-update search of
    ``scripts/crafted_search.py``, see ``docs/SECURITY.md``):

    S1  No content that yrs decodes differently from Yjs, since yrs would then
        read other bytes than the ones we validated: JSON content (ref 2; yrs
        reads N+1 strings for a count of N, ``while remaining >= 0``) and
        XmlHook types (type ref 5; Yjs writes a name, yrs reads none).
        Neither is written by pycrdt; JSON content is obsolete in Yjs too.
    S2  An item's origin, right origin and parent ID on its own client name an
        earlier clock (yrs does not treat same-client references as
        dependencies; forward or self references panic or loop).
    S3  An explicit parent ID names the first clock of a Type item (or a
        deleted/GC'd one, which yrs turns into GC), never another content.
    S4  Contents go where yrs can read them: String/Format/Embed only in the
        sequence of a Text/XmlText; Any/Binary/Doc only in the sequence of an
        Array/XmlFragment/XmlElement or as map entries; nothing but deleted
        items in the sequence of a Map/XmlHook; String/Format/Embed never as
        map entries.  A container of unknown type takes the class of the first
        content it receives (for a root, see S11).  (A multi-byte String in an Array makes
        ``to_py`` loop forever; Any/Binary/Doc in a Text makes the next local
        delete panic.)  Neighbours that are not GC'd live in the list the
        item lands in (same container, same map key or sequence).
    S5  With a known state: no missing dependency, no gap (a Skip or a clock
        gap reaching past the known clocks).
    S6  An item's left and right origins differ (yrs places such an item
        depending on arrival order: replicas diverge).
    S7  No origin, right origin, delete-set boundary or overlap with the known
        clocks falls between the two UTF-16 units of a character outside the
        BMP in a String (of the update, or of the document with an index).
        yrs splits the string elsewhere than the clock says: the document's
        next export has a self-referencing origin or a zero-length String, and
        local edits fail half-way.  Writers that index by code point never
        split a pair; Yjs replaces both halves with U+FFFD when asked to.
    S8  With an index: an item's right origin lies after its origin in the
        list they share.  An honest writer takes its origin and right origin
        from two neighbours of its own list (Yjs/yrs ``left`` and
        ``left.right``; an undo manager's redo takes copies of an earlier
        and a later sibling), and no replica ever reorders two items it
        holds, so every replica sees the right origin after the origin.  An
        item whose right origin lies before (or at) its origin is placed by
        yrs depending on how it happens to have split its blocks: replicas
        that received the same updates in another order diverge.  Except
        when the right origin starts a block on every replica (its origin is
        not the clock before it, or their right origins differ): then yrs
        splits nothing and places the item alike everywhere.
    S9  With an index: nothing the writer provably knew lies between its
        origin and right origin.  Yjs and yrs integrate an item only after
        its origin and right origin, so the writer held the right origin's
        own origin (which must lie at or before the origin) and the origin's
        own right origin (at or after the right origin); with no origin,
        the right origin's origin must not be in the list, with no right
        origin, the origin's right origin must not be.
    S10 With an index: a map entry has no right origin (honest writers put
        a key's new value after its current one, with nothing to its right).
    S11 A root shows one kind, declared or not: map entries, or a sequence;
        and a sequence holds text (String/Format/Embed) or values
        (Any/Binary/Doc, and an Array/Map/Text type), never both (XML types
        and deleted items go with either).  ``crdtsync.model`` tells the kind
        of a root it has not declared from its items (keyed: a map, text: a
        text, values or an Array/Map/Text type: a list) and declares it so
        once read: a root mixing them was accepted while undeclared, then read
        as the wrong kind (a multi-byte String read as an Array loops yrs
        forever) and its export refused by any replica that had declared it.
        A root of unknown type takes the kind of the first item it receives;
        the index keeps it across updates (``DocIndex.observed``).
    S12 An origin and a right origin are both garbage-collected or neither
        (a GC struct of the update, or an item of a deleted type in the
        index).  Honest neighbours share a list, and yrs GCs all of a deleted
        type's items or none; with one side GC'd yrs places the item from the
        other side alone, S9 goes unchecked, and the document's export then
        breaks S9 (the item's split-off tail names both neighbours).

    Args:
        parsed: the update.
        limits: resource limits.
        known_state: receiving state vector (without an index).
        root_types: declared root types (without an index).
        index: the receiving document's index.

    Raises:
        MalformedUpdateError: a rule is broken.
        UpdateLimitError: a limit is exceeded.
    """
    if index is not None:
        index.begin(parsed, limits).rollback()
        return
    _check_static(parsed)
    _StaticChecker(parsed, limits, known_state, root_types).run()
