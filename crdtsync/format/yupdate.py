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
S5  with a known receiving state: no clock gap, no Skip, no reference to a
    change that is neither in the document nor in the update
    (:class:`MissingUpdatesError`; pycrdt 0.14.13 integrates past gaps and
    diverges);
S6  an item's left and right origins differ (yrs places such an item
    depending on arrival order: replicas diverge);
S7  nothing splits a String between the two UTF-16 units of a character
    outside the BMP: no origin, right origin, delete-set boundary or known
    state falls inside a surrogate pair (yrs splits the string at another
    place than the clock, and the document's own export is then broken).

Where an item lands is decided the way yrs decides it (``Item::repair``): an
explicit parent (the item becomes GC if that parent is deleted or GC'd), else
the container of its origin, or of its right origin when the origin is GC'd,
and GC when both are; followed iteratively through the update and, for IDs the
receiver already has, through a :class:`DocIndex` of the receiving document.
Only with such an index is the guarantee complete: an update that passes
``validate_update(data, index=...)`` can be applied to that document by pycrdt
without panicking, hanging, crashing or corrupting it.  Without one,
references into the document cannot be checked.

Deletions and garbage collection
--------------------------------
yrs (gc on, pycrdt's default) turns, when a transaction commits, every deleted
type item into ContentDeleted and everything inside it (recursively) into GC.
A remote item whose origin is such a GC'd child is attached next to its right
origin instead, possibly in another container (a String landing in an Array
that way makes reading it loop forever).  The index therefore applies delete
sets too (:meth:`DocIndex.record` after the structs of the same update, as
yrs does; deletions beyond the known clocks wait like yrs's pending delete
set), and it must see the local ones: they do not move the state vector, so
the owner calls :meth:`DocIndex.record_diff` with ``get_update(index.state)``
before every validation, and after integrating a remote update (yrs deletes
the losing value of a concurrently written map key by itself).
"""

from __future__ import annotations

import json
import struct as _struct
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Union, cast

from crdtsync.errors import MalformedUpdateError, MissingUpdatesError, UpdateLimitError

__all__ = [
    "DEFAULT_LIMITS",
    "AnyContent",
    "DocContent",
    "DocIndex",
    "FormatContent",
    "MissingUpdatesError",
    "ParsedUpdate",
    "Struct",
    "TypeContent",
    "UpdateLimits",
    "check_semantics",
    "decode_any",
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
    ``(clock, length)`` ranges in encoding order.
    """

    clients: dict[int, list[Struct]] = field(default_factory=dict)
    delete_set: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

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
    num_clients, pos = rv(data, pos, _U32, "number of clients")
    if num_clients > limits.max_clients:
        raise _limit(f"{num_clients} client blocks exceed max_clients={limits.max_clients}", 0)
    # A client block takes at least 4 bytes (count, client, clock, one info byte).
    if num_clients * 4 > n - pos:
        raise _malformed(f"{num_clients} client blocks announced, more than the bytes left", 0)
    for _ in range(num_clients):
        block_pos = pos
        num_structs, pos = rv(data, pos, _U32, "number of structs")
        client, pos = rv(data, pos, _U64, "client id")
        clock, pos = rv(data, pos, _U32, "clock")
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
                    oc, pos = rv(data, pos, _U64, "origin client")
                    ok, pos = rv(data, pos, _U32, "origin clock")
                    origin = (oc, ok)
                if info & HAS_RIGHT_ORIGIN:
                    rc, pos = rv(data, pos, _U64, "right origin client")
                    rk, pos = rv(data, pos, _U32, "right origin clock")
                    right_origin = (rc, rk)
                if not info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):
                    ppos = pos
                    if pos >= n:
                        raise _malformed("truncated parent info", pos)
                    pflag = data[pos]
                    pos += 1
                    if pflag == 1:
                        parent, pos = rs(data, pos, max_key, "root type name", "max_key_bytes")
                    elif pflag == 0:
                        pc, pos = rv(data, pos, _U64, "parent client")
                        pk, pos = rv(data, pos, _U32, "parent clock")
                        parent = (pc, pk)
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
    return ParsedUpdate(clients, delete_set)


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


def _varuint_bytes(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


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
    vu = _varuint_bytes
    w(vu(len(parsed.clients)))
    for client, structs in parsed.clients.items():
        w(vu(len(structs)))
        w(vu(client))
        w(vu(structs[0].clock if structs else 0))
        for s in structs:
            info = s.info
            out.append(info)
            kind = s.kind
            if kind in (STRUCT_GC, STRUCT_SKIP):
                w(vu(s.length))
                continue
            if info & HAS_ORIGIN:
                assert s.origin is not None
                w(vu(s.origin[0]))
                w(vu(s.origin[1]))
            if info & HAS_RIGHT_ORIGIN:
                assert s.right_origin is not None
                w(vu(s.right_origin[0]))
                w(vu(s.right_origin[1]))
            if not info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):
                p = s.parent
                if isinstance(p, str):
                    out.append(1)
                    b = p.encode()
                    w(vu(len(b)))
                    w(b)
                else:
                    assert p is not None
                    out.append(0)
                    w(vu(p[0]))
                    w(vu(p[1]))
                if info & HAS_PARENT_SUB:
                    assert s.parent_sub is not None
                    b = s.parent_sub.encode()
                    w(vu(len(b)))
                    w(b)
            c = s.content
            if kind == CONTENT_STRING:
                assert isinstance(c, str)
                b = c.encode()
                w(vu(len(b)))
                w(b)
            elif kind == CONTENT_DELETED:
                w(vu(s.length))
            elif kind == CONTENT_ANY:
                assert isinstance(c, AnyContent)
                w(vu(c.n))
                w(c.raw)
            elif kind == CONTENT_TYPE:
                assert isinstance(c, TypeContent)
                w(vu(c.type_ref))
                if c.name is not None:
                    b = c.name.encode()
                    w(vu(len(b)))
                    w(b)
            elif kind == CONTENT_BINARY:
                assert isinstance(c, bytes)
                w(vu(len(c)))
                w(c)
            elif kind == CONTENT_FORMAT:
                assert isinstance(c, FormatContent)
                for text in c:
                    b = text.encode()
                    w(vu(len(b)))
                    w(b)
            elif kind == CONTENT_EMBED:
                assert isinstance(c, str)
                b = c.encode()
                w(vu(len(b)))
                w(b)
            elif kind == CONTENT_JSON:
                json_texts = cast(tuple[str, ...], c)
                w(vu(len(json_texts)))
                for text in json_texts:
                    b = text.encode()
                    w(vu(len(b)))
                    w(b)
            elif kind == CONTENT_DOC:
                assert isinstance(c, DocContent)
                b = c.guid.encode()
                w(vu(len(b)))
                w(b)
                w(c.options_raw)
            else:
                raise ValueError(f"cannot encode struct kind {kind}")
    w(vu(len(parsed.delete_set)))
    for client, ranges in parsed.delete_set.items():
        w(vu(client))
        w(vu(len(ranges)))
        for clock, length in ranges:
            w(vu(clock))
            w(vu(length))
    return bytes(out)


# --------------------------------------------------------------------------
# Semantic validation
# --------------------------------------------------------------------------

#: Content classes: which containers may hold a content kind in their sequence.
_NEUTRAL = 0  # Deleted, Type: allowed in any sequence
_TEXTUAL = 1  # String, Format, Embed: only in Text / XmlText
_VALUED = 2  # Any, Binary, Doc, JSON: only in Array / XmlFragment / XmlElement

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


class _IndexEntry(NamedTuple):
    end: int
    where: _Where | None  # None for GC ranges
    kind: int  # struct kind (content ref, or STRUCT_GC)
    type_ref: int | None  # for Type items


class DocIndex:
    """What the receiving document holds, for the checks that need it.

    yrs decides an item's parent from its neighbours, so whether an update is
    safe depends on the document it is applied to (a ``String`` whose left
    neighbour lives in an ``Array`` makes reading that array loop forever).
    A ``DocIndex`` remembers, for every clock range integrated so far, which
    container it lives in and whether it is a type, plus which content class
    each container of unknown type has received.  Keep one per document:
    pass it to :func:`validate_update` and call :meth:`record` with the parsed
    update once pycrdt has applied it, and before each validation call
    :meth:`record_diff` with ``doc.get_update(<index.state encoded>)`` (local
    structs and the whole delete set: local deletions change where later
    remote items land, see "Deletions and garbage collection" above), so that
    later remote items attached to local ones can be checked.  With an index, updates whose
    dependencies are not in the document are rejected (yrs would park them as
    "pending" and later integrate them unchecked).

    Args:
        root_types: type ref of each root the document declares (e.g.
            ``{"body": TYPE_TEXT}``); other roots get their class from the
            first content they receive.
    """

    def __init__(self, root_types: Mapping[str, int] | None = None) -> None:
        self.root_types: dict[str, int] = dict(root_types or {})
        self.state: dict[int, int] = {}
        self._starts: dict[int, list[int]] = {}
        self._entries: dict[int, list[_IndexEntry]] = {}
        self.observed: dict[ContainerKey, int] = {}
        # Deletions (yrs garbage-collects: the children of a deleted type
        # become GC and the type item itself ContentDeleted, so neighbours
        # and parents resolve differently afterwards):
        self._types: dict[int, list[int]] = {}  # clocks of live type items
        self._children: dict[ID, list[ID]] = {}  # type item -> entries inside it
        # deleted ranges beyond the known clocks (yrs keeps them pending)
        self._pending_deletes: dict[int, set[tuple[int, int]]] = {}
        # S7: per client, the sorted clocks that fall between the two UTF-16
        # units of a character outside the BMP in a String item (splitting
        # there corrupts yrs). Kept after deletion too: cheap, and safe.
        self.pair_splits: dict[int, list[int]] = {}
        self._last_diff: bytes | None = None

    def lookup(self, client: int, clock: int) -> tuple[int, _IndexEntry] | None:
        """The (start clock, entry) of the recorded range holding ``client:clock``."""
        starts = self._starts.get(client)
        if not starts:
            return None
        i = bisect_right(starts, clock) - 1
        if i < 0:
            return None
        e = self._entries[client][i]
        return (starts[i], e) if clock < e.end else None

    def record(self, parsed: ParsedUpdate) -> None:
        """Records an update that pycrdt has just applied (after validation).

        Its structs first, then its delete set (yrs integrates an update's
        structs before applying its deletions, and garbage-collects at the
        end of the transaction).
        """
        checker = _Checker(parsed, DEFAULT_LIMITS, self.state, self, self.root_types)
        checker.run(record=True)
        if self._pending_deletes:
            self._apply_pending()
        self.record_deletes(parsed.delete_set)

    def record_diff(self, data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> None:
        """Records the local changes: ``data`` is ``doc.get_update(<self.state encoded>)``.

        Such a diff holds the local structs the index has not seen and the
        document's whole delete set, so call this before every validation
        *even when the state vector has not moved*: a local deletion does not
        change the state vector, but deleting a type makes yrs turn its
        children into GC, which changes where later remote items land.  When
        ``data`` is the same as last time, this returns at once.
        """
        if data == self._last_diff:
            return
        parsed = parse_update(data, limits)
        self.record(parsed)
        self._last_diff = data if not parsed.clients else None

    def record_deletes(self, delete_set: Mapping[int, Iterable[tuple[int, int]]]) -> None:
        """Records deletions (``(clock, length)`` ranges per client) applied by pycrdt.

        Idempotent: ranges already recorded cost a lookup each.  A deleted
        type item becomes ContentDeleted (a reference to it as a parent makes
        yrs turn the item into GC) and everything inside it becomes GC (an
        item whose origin is GC'd takes the container of its right origin).
        Ranges beyond the known clocks are kept, as yrs keeps them, and apply
        when those clocks are recorded.
        """
        for client, ranges in delete_set.items():
            known = self.state.get(client, 0)
            types = self._types.get(client)
            for clock, length in ranges:
                end = clock + length
                if types and clock < known:
                    self._delete_types(client, types, clock, min(end, known))
                if end > known:
                    self._pending_deletes.setdefault(client, set()).add((max(clock, known), end))

    def _apply_pending(self) -> None:
        for client in list(self._pending_deletes):
            known = self.state.get(client, 0)
            pending = self._pending_deletes[client]
            ready = [r for r in pending if r[0] < known]
            if not ready:
                continue
            types = self._types.get(client)
            for r in ready:
                pending.discard(r)
                clock, end = r
                if types:
                    self._delete_types(client, types, clock, min(end, known))
                if end > known:
                    pending.add((known, end))
            if not pending:
                del self._pending_deletes[client]

    def _delete_types(self, client: int, types: list[int], clock: int, end: int) -> None:
        i = bisect_left(types, clock)
        j = bisect_left(types, end, i)
        if i == j:
            return
        doomed = types[i:j]
        del types[i:j]
        for t in doomed:
            self._set_entry(client, t, CONTENT_DELETED, keep_where=True)
            # yrs (Item::gc) turns everything inside into GC, recursively.
            stack: list[ID] = [(client, t)]
            while stack:
                for c, start in self._children.pop(stack.pop(), ()):
                    if self._set_entry(c, start, STRUCT_GC, keep_where=False) == CONTENT_TYPE:
                        ts = self._types.get(c)
                        if ts:
                            k = bisect_left(ts, start)
                            if k < len(ts) and ts[k] == start:
                                del ts[k]
                        stack.append((c, start))

    def _set_entry(self, client: int, start: int, kind: int, keep_where: bool) -> int:
        """Turns the entry starting at ``client:start`` into ``kind``; returns its old kind."""
        starts = self._starts[client]
        i = bisect_right(starts, start) - 1
        entries = self._entries[client]
        e = entries[i]
        entries[i] = _IndexEntry(e.end, e.where if keep_where else None, kind, None)
        return e.kind


def _missing(s: Struct, what: str, ref: ID) -> MissingUpdatesError:
    return MissingUpdatesError(
        f"item {s.client}:{s.clock} depends on {what} {ref[0]}:{ref[1]}, "
        "which is neither in the document nor in the update (missing updates)",
        ref[0],
        ref[1],
    )


class _Checker:
    """Resolves every item's container the way yrs will, and checks the rules."""

    def __init__(
        self,
        parsed: ParsedUpdate,
        limits: UpdateLimits,
        known_state: Mapping[int, int] | None,
        index: DocIndex | None,
        root_types: Mapping[str, int] | None,
    ) -> None:
        self.parsed = parsed
        self.limits = limits
        self.known: Mapping[int, int] = known_state if known_state is not None else {}
        self.index = index
        self.root_types: Mapping[str, int] = root_types if root_types is not None else {}
        self.starts = {c: [s.clock for s in ss] for c, ss in parsed.clients.items()}
        # S7: clocks inside a surrogate pair of this update's Strings, by client.
        self.pair_splits: dict[int, set[int]] = {}
        for c, ss in parsed.clients.items():
            for x in ss:
                if x.kind == CONTENT_STRING and x.length != len(cast(str, x.content)):
                    self.pair_splits.setdefault(c, set()).update(_pair_splits(x))
        self.memo: dict[int, _Where] = {}  # id(struct) -> where
        # Knowing the receiving state, a reference to a clock that is neither
        # in the document nor in the update is a missing dependency.  yrs
        # 0.28 does not always park such items: it integrates blocks past a
        # clock gap, leaving a document whose state vector lies.
        self.strict = known_state is not None or index is not None

    # -- lookups ----------------------------------------------------------

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

    def _splits_pair(self, client: int, clock: int) -> bool:
        """Whether a split before ``client:clock`` falls inside a surrogate pair (S7)."""
        mine = self.pair_splits.get(client)
        if mine is not None and clock in mine:
            return True
        if self.index is None:
            return False
        doc = self.index.pair_splits.get(client)
        if not doc:
            return False
        i = bisect_left(doc, clock)
        return i < len(doc) and doc[i] == clock

    def _check_pairs(self) -> None:
        """S7: no reference or deletion splits a character outside the BMP."""
        if not self.pair_splits and (self.index is None or not self.index.pair_splits):
            return
        for client, structs in self.parsed.clients.items():
            known = self.known.get(client, 0)
            for s in structs:
                if not s.is_item or s.end <= known:
                    continue
                if s.clock < known and self._splits_pair(client, known):
                    raise MalformedUpdateError(
                        f"item {client}:{s.clock} overlaps the known clocks up to {known}, "
                        "inside a surrogate pair"
                    )
                for ref, what, at in (
                    (s.origin, "origin", 1),
                    (s.right_origin, "right origin", 0),
                ):
                    if ref is not None and self._splits_pair(ref[0], ref[1] + at):
                        raise MalformedUpdateError(
                            f"item {client}:{s.clock} has {what} {ref[0]}:{ref[1]} inside a "
                            "surrogate pair (a character outside the BMP)"
                        )
        for client, ranges in self.parsed.delete_set.items():
            for clock, length in ranges:
                for at in (clock, clock + length):
                    if self._splits_pair(client, at):
                        raise MalformedUpdateError(
                            f"deletion {client}:{clock}+{length} splits a surrogate pair "
                            f"at clock {at} (a character outside the BMP)"
                        )

    # -- resolution (iterative over origin chains) ------------------------

    def _resolve(self, s: Struct) -> _Where:
        """Where ``s`` lands, decided as yrs decides it (``Item::repair``).

        An explicit parent wins (GC if it is deleted or GC'd); otherwise the
        container of the left neighbour (``origin``), or, when that one is
        GC'd (in the document, or turned into GC by this update), of the
        right one; GC when both are.  The dependencies inside the update are
        followed with an explicit stack, so long chains cannot exhaust the
        Python stack.
        """
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
            # yrs integrates only the tail, with the origin set to the
            # document's own item at known - 1 (an explicit parent stays).
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
            # the parent is a type item of this update: GC if it became GC
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
        # the left neighbour is GC'd (or absent): yrs tries the right one
        got_right = self._neighbour_ref(cur, cur.right_origin, "right origin")
        if isinstance(got_right, Struct):
            return (3, got_right)
        return _GC if got_right is None else got_right

    def _neighbour_ref(self, s: Struct, ref: ID | None, what: str) -> Struct | _Where | None:
        """A neighbour's place (None: GC'd or absent), or the update struct to resolve."""
        if ref is None:
            return None
        client, clock = ref
        if self._in_doc(client, clock):
            if self.index is None:
                return _UNKNOWN
            hit = self.index.lookup(client, clock)
            if hit is None:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock} has {what} {client}:{clock} missing from "
                    "the document index"
                )
            return hit[1].where
        target = self._find(client, clock)
        if target is None:
            if self.strict:
                raise _missing(s, what, ref)
            return _UNKNOWN
        return None if target.kind == STRUCT_GC else target

    def _parent_type(self, ref: ID, s: Struct) -> bool | Struct:
        """Whether an explicit parent ID is a live type, or the update's type item.

        False when the parent is deleted or GC'd (yrs turns the child into GC).
        """
        client, clock = ref
        if self._in_doc(client, clock):
            if self.index is None:
                return True
            hit = self.index.lookup(client, clock)
            if hit is None:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock} has parent {client}:{clock} missing from the "
                    "document index"
                )
            start, e = hit
            return self._check_parent_kind(e.kind, start, ref, s)
        target = self._find(client, clock)
        if target is None:
            if self.strict:
                raise _missing(s, "parent", ref)
            return True
        if not self._check_parent_kind(target.kind, target.clock, ref, s):
            return False
        return target

    @staticmethod
    def _check_parent_kind(kind: int, start: int, ref: ID, s: Struct) -> bool:
        if kind in (STRUCT_GC, CONTENT_DELETED):
            return False  # yrs turns the child into GC
        if kind != CONTENT_TYPE or start != ref[1]:
            raise MalformedUpdateError(
                f"item {s.client}:{s.clock} has parent {ref[0]}:{ref[1]} which is a "
                f"{CONTENT_NAMES.get(kind, kind)} item, not a type"
            )
        return True

    # -- the rules ---------------------------------------------------------

    def _seq_class(self, key: ContainerKey) -> int | str | None:
        """Sequence class of a container: a class, None (no sequence) or "?" (unknown)."""
        if isinstance(key, str):
            if key in self.root_types:
                return _TYPE_SEQ_CLASS.get(self.root_types[key], "?")
            return "?"
        client, clock = key
        if self._in_doc(client, clock):
            if self.index is None:
                return "?"
            hit = self.index.lookup(client, clock)
            tr = hit[1].type_ref if hit is not None else None
        else:
            t = self._find(client, clock)
            tr = (
                t.content.type_ref if t is not None and isinstance(t.content, TypeContent) else None
            )
        return "?" if tr is None else _TYPE_SEQ_CLASS.get(tr, "?")

    def run(self, record: bool = False) -> None:
        observed: dict[ContainerKey, int] = (
            dict(self.index.observed) if self.index is not None else {}
        )
        index = self.index
        for client, structs in self.parsed.clients.items():
            known = self.known.get(client, 0)
            if self.strict and not record and structs[0].clock > known:
                raise MissingUpdatesError(
                    f"client {client} starts at clock {structs[0].clock} but the document has "
                    f"only {known}: missing updates",
                    client,
                    known,
                )
            for s in structs:
                if s.kind == STRUCT_SKIP:
                    if self.strict and not record:
                        raise MissingUpdatesError(
                            f"Skip struct at {client}:{s.clock}: the update has a gap",
                            client,
                            s.clock,
                        )
                    continue
                if s.end <= known:
                    continue  # yrs already has these clocks and skips the struct
                if s.kind == STRUCT_GC:
                    if record and index is not None:
                        self._record(index, s, None, known)
                    continue
                self._check_refs(s)
                # (a struct overlapping the known clocks: yrs keeps only the
                # tail, see _resolve)
                where = self._resolve(s)
                if where is not _GC and where is not _UNKNOWN:
                    self._check_neighbours(s, where, known)
                    self._check_place(s, where, observed)
                if record and index is not None:
                    self._record(index, s, None if where is _GC else where, known)
        if not record:
            self._check_pairs()
        if record and index is not None:
            index.observed = observed
            for client, structs in self.parsed.clients.items():
                end = max((x.end for x in structs if x.kind != STRUCT_SKIP), default=0)
                if end > index.state.get(client, 0):
                    index.state[client] = end

    def _check_neighbours(self, s: Struct, where: _Where, known: int) -> None:
        """Both neighbours that are not GC'd live where ``s`` lands.

        yrs links the item between its origin and right origin whatever their
        containers: a neighbour in another container (or a map entry next to a
        sequence element) corrupts both lists (reading fails with "Index
        error", and deleting the container then panics while encoding).
        Updates written by Yjs/yrs never do this: an item is inserted between
        two neighbours of its own list.
        """
        origin = (s.client, known - 1) if s.clock < known else s.origin
        for ref, what in ((origin, "origin"), (s.right_origin, "right origin")):
            if ref is None:
                continue
            place = self._place_of(ref)
            if place is None or place is _UNKNOWN or place is _GC:
                continue
            if place != where:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock} has {what} {ref[0]}:{ref[1]} in another "
                    "container (or in a map entry list) than the one it lands in"
                )

    def _place_of(self, ref: ID) -> _Where | None:
        """Where the item holding ``ref`` lives (None: GC'd)."""
        client, clock = ref
        if self._in_doc(client, clock):
            if self.index is None:
                return _UNKNOWN
            hit = self.index.lookup(client, clock)
            return hit[1].where if hit is not None else _UNKNOWN
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
            # S5 for every reference, not only those that decide the container: a
            # right origin nobody has (its left neighbour being known) made yrs
            # link the item next to another one, and the next export was refused.
            # (The origin of a struct overlapping the known clocks is replaced.)
            if (
                self.strict
                and not (what == "origin" and clock < known)
                and not self._in_doc(*ref)
                and self._find(*ref) is None
            ):
                raise _missing(s, what, ref)

    def _check_place(self, s: Struct, where: _Where, observed: dict[ContainerKey, int]) -> None:
        cls = _CONTENT_CLASS[s.kind]
        if where.entry:
            if cls == _TEXTUAL:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock}: {CONTENT_NAMES[s.kind]} content cannot be a "
                    "map entry"
                )
            return
        if cls == _NEUTRAL:
            if s.kind == CONTENT_TYPE and self._seq_class(where.key) is None:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock}: a Map/XmlHook has no sequence to hold it"
                )
            return
        seq = self._seq_class(where.key)
        if seq is None:
            raise MalformedUpdateError(
                f"item {s.client}:{s.clock}: {CONTENT_NAMES[s.kind]} content in the sequence of "
                "a Map/XmlHook"
            )
        if seq == "?":
            seen = observed.get(where.key)
            if seen is None:
                observed[where.key] = cls
                return
            seq = seen
        if seq != cls:
            raise MalformedUpdateError(
                f"item {s.client}:{s.clock}: {CONTENT_NAMES[s.kind]} content in a container "
                "holding " + ("text" if seq == _TEXTUAL else "values")
            )

    @staticmethod
    def _record(index: DocIndex, s: Struct, where: _Where | None, known: int) -> None:
        start = max(s.clock, known)
        kind = s.kind
        type_ref = s.content.type_ref if isinstance(s.content, TypeContent) else None
        if where is None:  # yrs stores it as GC (e.g. its parent is deleted)
            kind, type_ref = STRUCT_GC, None
        else:
            if isinstance(where.key, tuple):
                index._children.setdefault(where.key, []).append((s.client, start))
            if kind == CONTENT_TYPE:
                insort(index._types.setdefault(s.client, []), start)
        if kind == CONTENT_STRING and s.length != len(cast(str, s.content)):
            splits = [c for c in _pair_splits(s) if c > start]
            if splits:
                mine = index.pair_splits.setdefault(s.client, [])
                if not mine or mine[-1] < splits[0]:
                    mine.extend(splits)
                else:
                    mine[:] = sorted(set(mine).union(splits))
        starts = index._starts.setdefault(s.client, [])
        entries = index._entries.setdefault(s.client, [])
        e = _IndexEntry(s.end, where, kind, type_ref)
        if not starts or starts[-1] < start:
            starts.append(start)
            entries.append(e)
        else:  # out-of-order insert (rare: only with gaps)
            i = bisect_right(starts, start)
            starts.insert(i, start)
            entries.insert(i, e)


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


def validate_update(
    data: bytes,
    limits: UpdateLimits = DEFAULT_LIMITS,
    *,
    known_state: Mapping[int, int] | None = None,
    root_types: Mapping[str, int] | None = None,
    index: DocIndex | None = None,
) -> ParsedUpdate:
    """Parses ``data`` and checks the rules that keep pycrdt from panicking.

    Without ``index`` the checks use the update alone (plus ``known_state``
    and ``root_types``); references into the document cannot be checked.
    With ``index`` (see :class:`DocIndex`) every item is checked against the
    container it will land in, and dependencies must all be present: an
    update that passes can then be given to ``pycrdt.Doc.apply_update`` on
    the indexed document without panicking, hanging or corrupting it.

    Args:
        data: the v1 update.
        limits: resource limits.
        known_state: the receiving document's state vector (client -> next
            clock); defaults to ``index.state`` when an index is given.
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
    _check_origins(parsed)
    check_semantics(parsed, limits, known_state=known_state, root_types=root_types, index=index)
    return parsed


def _check_origins(parsed: ParsedUpdate) -> None:
    """S6: refuse items whose left and right origins are the same item.

    No Yjs writer produces one (the right origin is the item that was right of
    the left one). yrs integrates it at a position that depends on the order in
    which updates arrive, so replicas diverge (found by fuzzing).
    """
    for structs in parsed.clients.values():
        for s in structs:
            if s.origin is not None and s.origin == s.right_origin:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock} has the same left and right origin {s.origin}"
                )


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
    ``tests/fixtures/crashers/README.md``):

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
        content it receives.  (A multi-byte String in an Array makes
        ``to_py`` loop forever; Any/Binary/Doc in a Text makes the next local
        delete panic.)
    S5  With an index: no missing dependency, no gap (Skip), no clock gap.
    S7  No origin, right origin, delete-set boundary or overlap with the known
        clocks falls between the two UTF-16 units of a character outside the
        BMP in a String (of the update, or of the document with an index).
        yrs splits the string elsewhere than the clock says: the document's
        next export has a self-referencing origin or a zero-length String, and
        local edits fail half-way.  Writers that index by code point never
        split a pair; Yjs replaces both halves with U+FFFD when asked to.

    Args:
        parsed: the update.
        limits: resource limits.
        known_state: receiving state vector.
        root_types: declared root types.
        index: the receiving document's index.

    Raises:
        MalformedUpdateError: a rule is broken.
    """
    for structs in parsed.clients.values():
        for s in structs:
            if s.kind == CONTENT_JSON:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock}: JSON content (ref 2) is obsolete and yrs "
                    "decodes it differently from Yjs"
                )
            if isinstance(s.content, TypeContent) and s.content.type_ref == TYPE_XML_HOOK:
                raise MalformedUpdateError(
                    f"item {s.client}:{s.clock}: XmlHook type: Yjs writes its name, "
                    "yrs 0.28 reads none and decodes the following bytes differently"
                )
    if index is not None:
        if known_state is None:
            known_state = index.state
        if root_types is None:
            root_types = index.root_types
    _Checker(parsed, limits, known_state, index, root_types).run()
