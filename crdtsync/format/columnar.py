"""Compact, lossless storage encoding of Yjs v1 updates.

Theory of operation
===================

``compact_encode(v1)`` parses the update with
:func:`crdtsync.format.yupdate.parse_update` and rewrites it column by column, the
way Yjs' v2 encoding does, so that each column holds similar numbers that a
general-purpose compressor squeezes well; ``compact_decode`` inverts it
exactly: ``compact_decode(compact_encode(b)) == b`` for every update
``parse_update`` accepts (the info byte of every struct is stored verbatim,
so even flags that v1 ignores survive).

Container layouts (all integers lib0 varuints). Layout 1, written for v1
updates under 8 KiB (where the codec's time does not matter; every release
reads it)::

    byte 0        layout (1)
    byte 1        codec: low 2 bits 0 stored, 1 raw LZMA2, 2 zstd; for LZMA2
                  the high 6 bits are log2 of the dictionary size (12..26)
    varuint       size of the uncompressed column block
    rest          the column block, compressed by the codec

Layout 2, written for larger updates (read since the envelope's format
version 2, which is written around it so that older releases refuse it as
a newer version)::

    byte 0        layout (2)
    varuint       size of the uncompressed column block (the same block)
    11 times      one column: codec byte (as above), varuint length,
                  varuint compressed length, compressed bytes

The block is rebuilt (``varuint 11``, then each column length-prefixed) and
decoded as in layout 1, with one difference: a key reference (``PARENT`` and
``MISC`` below) is 0 for a new key (the next one in the key table) and the
key's index + 1 for one already in it. Layout 1 writes the index, so a new
key costs a growing number; a tree's every move names a new map key.

Why per column: LZMA2 decodes nearly incompressible data (text, a tree's
random moves) at about 60 MB/s of output, zstd at well over 1 GB/s, and on
such columns the two sizes differ by a few percent; on regular columns
(client indexes, clocks, parent references) LZMA2 is often 3-5 times
smaller. Each column takes the smallest of stored, LZMA2 and zstd (level
16), except that zstd is taken when it is within 1/16 of LZMA2: a saved
automerge-paper is 2.2% larger than layout 1 and its column block decodes
in a fifth of the time; a tree of 10,000 nodes and 100,000 moves is 1.2%
smaller (the key references) and decodes in a quarter of the time.

The column block is ``varuint number of columns`` followed by, per column,
``varuint length`` and its bytes.  Columns:

``CLIENTS``   the client table: every client id the update mentions, in order
              of first appearance; other columns refer to clients by index
              into it (a single-author document refers to index 0 only).
``BLOCKS``    number of client blocks; per block: client index, number of
              structs, first clock.
``INFO``      one info byte per struct (GC 0, Skip 10, item flags | content).
``ORIGIN``    per item with an origin: client index, then the clock coded
              relative to what is likely: ``clock - 1 - origin`` (zigzag)
              when the origin is on the item's own client (0 when the item
              continues the previous one), else relative to the last clock
              seen for that client.
``RIGHT``     per item with a right origin: client index, then the clock
              relative to ``origin + 1`` when the origin is on the same
              client (inserting inside an existing run makes that 0), else
              relative to the last clock seen for that client.
``PARENT``    parent info of items without origins: 1 + key index, or 0 +
              client index + clock; then the parent_sub key index if any.
``KEYS``      the key table (root names, map keys, format keys, XML names,
              guids): each distinct string once, referenced by index.
``LENGTHS``   GC/Skip/Deleted lengths and String UTF-8 byte lengths.
``TEXT``      all String contents concatenated (UTF-8).
``MISC``      every other content, v1-encoded (Any raw bytes, Binary, Embed,
              Format value, Type ref, Doc options).
``DELETES``   delete set: number of clients; per client: client index,
              number of ranges, then per range the gap from the previous
              range's end and the length.

Compression (layout 1): the column block is compressed with raw LZMA2
(tuned literal context: ``lc=3, lp=0, pb=0`` suits byte-oriented varuint
columns and text) sized to the data, and (for blocks under 64 KiB) with zstd
at level 19; the smaller output wins (LZMA nearly always). Layout 2 tries
the same two codecs per column (LZMA2 sized to the column, zstd level 16).

Decoding treats its input as hostile: the announced uncompressed size must be
within ``limits.max_update_bytes``; decompression is bounded by that size
(``max_length`` for LZMA, a bounded stream read for zstd; in layout 2 each
column's announced length must fit in what is left of it before that column
is decompressed), so a decompression bomb cannot allocate more; every count read from a column is
checked against the bytes left in it before anything is allocated; the
result is re-parsed with the same limits.  Any inconsistency raises
:class:`~crdtsync.errors.MalformedUpdateError` (or
:class:`~crdtsync.errors.UpdateLimitError`), never another exception.
"""

from __future__ import annotations

import lzma
from typing import cast

import zstandard

from crdtsync.errors import InvalidUpdateError, MalformedUpdateError, UpdateLimitError
from crdtsync.format.yupdate import (
    CONTENT_ANY,
    CONTENT_BINARY,
    CONTENT_DELETED,
    CONTENT_DOC,
    CONTENT_EMBED,
    CONTENT_FORMAT,
    CONTENT_JSON,
    CONTENT_STRING,
    CONTENT_TYPE,
    DEFAULT_LIMITS,
    HAS_ORIGIN,
    HAS_PARENT_SUB,
    HAS_RIGHT_ORIGIN,
    STRUCT_GC,
    STRUCT_SKIP,
    TYPE_XML_ELEMENT,
    TYPE_XML_HOOK,
    TYPE_XML_TEXT,
    AnyContent,
    Content,
    DocContent,
    FormatContent,
    ParsedUpdate,
    Struct,
    TypeContent,
    UpdateLimits,
    _Budget,
    _check_json,
    _skip_any,
    encode_delete_set,
    encode_update,
    parse_update,
)

__all__ = ["compact_decode", "compact_decode_parsed", "compact_encode"]

# Layout 1: the column block compressed as one stream (written for v1 updates
# under _PER_COLUMN_MIN bytes, where the codec's time does not matter);
# layout 2: new keys referred to as 0, each column compressed on its own
# (see the module docstring).
VERSION_WHOLE = 1
VERSION_PER_COLUMN = 2
_PER_COLUMN_MIN = 1 << 13
_ZSTD_SLACK = 16
# Level 16, not 19: on the columns where zstd is chosen it is as small (a
# tree's moves: 4% smaller; text: 0.2% larger) and saves in two thirds the time.
_ZSTD_COLUMN_LEVEL = 16
CODEC_STORED = 0
CODEC_LZMA = 1
CODEC_ZSTD = 2

(
    COL_CLIENTS,
    COL_BLOCKS,
    COL_INFO,
    COL_ORIGIN,
    COL_RIGHT,
    COL_PARENT,
    COL_KEYS,
    COL_LENGTHS,
    COL_TEXT,
    COL_MISC,
    COL_DELETES,
) = range(11)
N_COLUMNS = 11

# After the info byte of an item with an origin and/or a right origin comes a
# selector byte ``10 * origin_selector + right_selector`` saying how each is
# predicted: 0..7 = an entry of a most-recently-used list (origins: last IDs
# of recent items and their origins, i.e. recent cursor positions; right
# origins: recent right origins), or one of these:
_MRU = 8
_SEL_CONTINUE = 8  # origin (own client, clock - 1): typing on after a split
_SEL_AFTER_ORIGIN = 8  # right origin (origin client, origin clock + 1)
_SEL_EXPLICIT = 9  # written in ORIGIN / RIGHT


def _remember(
    mru: list[tuple[int, int]],
    rmru: list[tuple[int, int]],
    last: tuple[int, int],
    origin: tuple[int, int] | None,
    right: tuple[int, int] | None,
) -> None:
    """Updates the MRU lists after an item (same rule in encoder and decoder)."""
    if last in mru:
        mru.remove(last)
    mru.insert(0, last)
    if origin is not None:
        if origin in mru:
            mru.remove(origin)
        mru.insert(1, origin)
    del mru[_MRU:]
    if right is not None:
        if right in rmru:
            rmru.remove(right)
        rmru.insert(0, right)
        del rmru[_MRU:]


def _implied_deletes(structs: list[Struct] | None) -> list[tuple[int, int]]:
    """Merged clock ranges of a client's GC and Deleted structs.

    In a garbage-collected document these are exactly the delete set, which
    then costs one byte instead of every range.
    """
    out: list[tuple[int, int]] = []
    if not structs:
        return out
    start = end = -1
    for s in structs:
        if s.kind in (STRUCT_GC, CONTENT_DELETED):
            if s.clock == end:
                end = s.end
            else:
                if end >= 0:
                    out.append((start, end - start))
                start, end = s.clock, s.end
    if end >= 0:
        out.append((start, end - start))
    return out


_LZMA_MIN_DICT_LOG = 12
_LZMA_MAX_DICT_LOG = 26


def _lzma_filters(dict_log: int) -> list[dict[str, int]]:
    # lc=3/lp=0/pb=0: byte-oriented data with no 2- or 4-byte alignment.
    return [
        {
            "id": lzma.FILTER_LZMA2,
            "preset": 9 | lzma.PRESET_EXTREME,
            "lc": 3,
            "lp": 0,
            "pb": 0,
            "dict_size": 1 << dict_log,
        }
    ]


def _dict_log(size: int) -> int:
    """Smallest dictionary covering ``size`` bytes (allocating more costs time)."""
    return min(_LZMA_MAX_DICT_LOG, max(_LZMA_MIN_DICT_LOG, (size - 1).bit_length()))


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------


def _put(out: bytearray, value: int) -> None:
    """Appends a varuint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


class _Encoder:
    def __init__(self, recent_keys: bool = False) -> None:
        """A column encoder; ``recent_keys`` codes key references as layout 2 does.

        Layout 2 refers to a new key (the next in the table) as 0 and to an
        old one as its index + 1: a tree's 110,000 map entries each name a
        new key, a constant 0 instead of a growing index.
        """
        self.cols = [bytearray() for _ in range(N_COLUMNS)]
        self.client_index: dict[int, int] = {}
        self.key_index: dict[str, int] = {}
        self.last_clock: dict[int, int] = {}
        self.recent_keys = recent_keys

    def client(self, col: bytearray, client: int) -> None:
        idx = self.client_index.get(client)
        if idx is None:
            idx = self.client_index[client] = len(self.client_index)
            _put(self.cols[COL_CLIENTS], client)
        _put(col, idx)

    def key(self, col: bytearray, key: str) -> None:
        n = len(self.key_index)
        idx = self.key_index.get(key)
        if idx is None:
            idx = self.key_index[key] = n
            b = key.encode()
            kc = self.cols[COL_KEYS]
            _put(kc, len(b))
            kc += b
        _put(col, (idx + 1 if idx < n else 0) if self.recent_keys else idx)

    def ref_clock(self, col: bytearray, client: int, clock: int, expected: int | None) -> None:
        """Codes a referenced clock relative to an expectation or the client's last one."""
        if expected is None:
            expected = self.last_clock.get(client, 0)
        _put(col, _zigzag(clock - expected))
        self.last_clock[client] = clock

    def encode(self, parsed: ParsedUpdate) -> list[bytes]:
        cols = self.cols
        blocks, info_col, origin_col, right_col = (
            cols[COL_BLOCKS],
            cols[COL_INFO],
            cols[COL_ORIGIN],
            cols[COL_RIGHT],
        )
        parent_col, lengths, text, misc = (
            cols[COL_PARENT],
            cols[COL_LENGTHS],
            cols[COL_TEXT],
            cols[COL_MISC],
        )
        mru: list[tuple[int, int]] = []
        rmru: list[tuple[int, int]] = []
        _put(blocks, len(parsed.clients))
        for client, structs in parsed.clients.items():
            self.client(blocks, client)
            _put(blocks, len(structs))
            _put(blocks, structs[0].clock)
            for s in structs:
                info = s.info
                info_col.append(info)
                kind = s.kind
                if kind in (STRUCT_GC, STRUCT_SKIP):
                    _put(lengths, s.length)
                    continue
                o = s.origin
                r = s.right_origin
                if o is not None or r is not None:
                    osel = rsel = 0
                    if o is not None:
                        if o[0] == client and o[1] == s.clock - 1:
                            osel = _SEL_CONTINUE
                        elif o in mru:
                            osel = mru.index(o)
                        else:
                            osel = _SEL_EXPLICIT
                            self.client(origin_col, o[0])
                            self.ref_clock(origin_col, o[0], o[1], None)
                    if r is not None:
                        if r in rmru:
                            rsel = rmru.index(r)
                        elif o is not None and r[0] == o[0] and r[1] == o[1] + 1:
                            rsel = _SEL_AFTER_ORIGIN
                        else:
                            rsel = _SEL_EXPLICIT
                            self.client(right_col, r[0])
                            self.ref_clock(
                                right_col,
                                r[0],
                                r[1],
                                o[1] + 1 if o is not None and o[0] == r[0] else None,
                            )
                    info_col.append(osel * 10 + rsel)
                _remember(mru, rmru, (client, s.end - 1), o, r)
                if not info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):
                    p = s.parent
                    if isinstance(p, str):
                        parent_col.append(1)
                        self.key(parent_col, p)
                    else:
                        assert p is not None
                        parent_col.append(0)
                        self.client(parent_col, p[0])
                        self.ref_clock(parent_col, p[0], p[1], None)
                    if info & HAS_PARENT_SUB:
                        assert s.parent_sub is not None
                        self.key(parent_col, s.parent_sub)
                c = s.content
                if kind == CONTENT_STRING:
                    assert isinstance(c, str)
                    b = c.encode()
                    _put(lengths, len(b))
                    text += b
                elif kind == CONTENT_DELETED:
                    _put(lengths, s.length)
                elif isinstance(c, AnyContent):
                    _put(misc, c.n)
                    misc += c.raw
                elif isinstance(c, TypeContent):
                    _put(misc, c.type_ref)
                    if c.name is not None:
                        self.key(misc, c.name)
                elif kind == CONTENT_BINARY:
                    assert isinstance(c, bytes)
                    _put(misc, len(c))
                    misc += c
                elif isinstance(c, FormatContent):
                    self.key(misc, c.key)
                    b = c.value_json.encode()
                    _put(misc, len(b))
                    misc += b
                elif kind == CONTENT_EMBED:
                    assert isinstance(c, str)
                    b = c.encode()
                    _put(misc, len(b))
                    misc += b
                elif kind == CONTENT_JSON:
                    json_texts = cast(tuple[str, ...], c)
                    _put(misc, len(json_texts))
                    for t in json_texts:
                        b = t.encode()
                        _put(misc, len(b))
                        misc += b
                elif isinstance(c, DocContent):
                    self.key(misc, c.guid)
                    misc += c.options_raw
                else:  # pragma: no cover - parse_update produces nothing else
                    raise ValueError(f"unknown struct kind {kind}")
        dcol = cols[COL_DELETES]
        _put(dcol, len(parsed.delete_set))
        for client, ranges in parsed.delete_set.items():
            self.client(dcol, client)
            if ranges == _implied_deletes(parsed.clients.get(client)):
                dcol.append(0)  # the deleted/GC structs' ranges, merged
                continue
            dcol.append(1)
            _put(dcol, len(ranges))
            end = 0
            for clock, length in ranges:
                _put(dcol, clock - end)  # ranges are sorted: never negative
                _put(dcol, length)
                end = clock + length
        return [bytes(col) for col in cols]


def _join(cols: list[bytes]) -> bytes:
    """The column block: the number of columns, then each one length-prefixed."""
    block = bytearray()
    _put(block, len(cols))
    for col in cols:
        _put(block, len(col))
        block += col
    return bytes(block)


def compact_encode(v1: bytes) -> bytes:
    """Re-encodes a v1 update into the compact columnar storage format.

    Args:
        v1: a Yjs v1 update that :func:`~crdtsync.format.yupdate.parse_update`
            accepts (with the default limits).

    Returns:
        The compact encoding; :func:`compact_decode` gives back ``v1``
        byte for byte.

    Raises:
        MalformedUpdateError: ``v1`` does not parse.
        UpdateLimitError: ``v1`` exceeds the default limits.
    """
    parsed = parse_update(v1)
    if len(v1) >= _PER_COLUMN_MIN:
        cols = _Encoder(recent_keys=True).encode(parsed)
        return _encode_per_column(_join(cols), cols)
    block = _join(_Encoder().encode(parsed))
    header = bytearray((VERSION_WHOLE,))
    candidates: list[tuple[int, bytes]] = [(CODEC_STORED, block)]
    dict_log = _dict_log(len(block))
    lz = lzma.compress(block, format=lzma.FORMAT_RAW, filters=_lzma_filters(dict_log))
    candidates.append((CODEC_LZMA | dict_log << 2, lz))
    if len(block) < 1 << 16:  # zstd only wins on small inputs (less framing)
        candidates.append((CODEC_ZSTD, zstandard.ZstdCompressor(level=19).compress(block)))
    codec, payload = min(candidates, key=lambda c: len(c[1]))
    header.append(codec)
    _put(header, len(block))
    return bytes(header) + payload


def _encode_per_column(block: bytes, cols: list[bytes]) -> bytes:
    """Version 2: each column compressed on its own, by the codec that suits it."""
    out = bytearray((VERSION_PER_COLUMN,))
    _put(out, len(block))
    for col in cols:
        codec, packed = _pack_column(col)
        out.append(codec)
        _put(out, len(col))
        _put(out, len(packed))
        out += packed
    return bytes(out)


def _pack_column(col: bytes) -> tuple[int, bytes]:
    """``(codec byte, bytes)`` for one column of a version 2 payload.

    The smallest of stored, LZMA and zstd; but zstd when it is within
    1/``_ZSTD_SLACK`` of LZMA: on nearly incompressible columns (text,
    a tree's random moves) the two differ by a few percent, and zstd decodes
    them 10-20 times faster (``docs/FORMAT.md``).
    """
    if not col:
        return CODEC_STORED, col
    dict_log = _dict_log(len(col))
    lz = lzma.compress(col, format=lzma.FORMAT_RAW, filters=_lzma_filters(dict_log))
    zs = zstandard.ZstdCompressor(level=_ZSTD_COLUMN_LEVEL).compress(col)
    codec, best = min(
        [(CODEC_STORED, col), (CODEC_LZMA | dict_log << 2, lz), (CODEC_ZSTD, zs)],
        key=lambda c: len(c[1]),
    )
    if codec & 3 == CODEC_LZMA and len(zs) <= len(lz) + len(lz) // _ZSTD_SLACK:
        return CODEC_ZSTD, zs
    return codec, best


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


class _Col:
    """Bounds-checked reader over one column."""

    __slots__ = ("data", "name", "pos")

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, msg: str) -> MalformedUpdateError:
        return MalformedUpdateError(f"compact update: column {self.name} at byte {self.pos}: {msg}")

    def left(self) -> int:
        return len(self.data) - self.pos

    def uint(self, bits: int = 64) -> int:
        data = self.data
        pos = self.pos
        value = 0
        shift = 0
        while True:
            if pos >= len(data):
                raise self.fail("truncated varuint")
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
            if shift > bits:
                raise self.fail("varuint too long")
        if value >> bits:
            raise self.fail(f"value exceeds {bits} bits")
        self.pos = pos
        return value

    def count(self, min_bytes_each: int = 1, col: _Col | None = None) -> int:
        """A count of elements that each need ``min_bytes_each`` bytes of ``col``."""
        n = self.uint(32)
        src = col if col is not None else self
        if n * min_bytes_each > src.left():
            raise self.fail(f"count {n} exceeds the data left")
        return n

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise self.fail(f"{n} bytes announced, {self.left()} left")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def text(self, n: int) -> str:
        start = self.pos
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            self.pos = start
            raise self.fail("invalid UTF-8") from None


_COLUMN_NAMES = [
    "clients",
    "blocks",
    "info",
    "origin",
    "right",
    "parent",
    "keys",
    "lengths",
    "text",
    "misc",
    "deletes",
]


def _decompress(codec_byte: int, payload: bytes, size: int) -> bytes:
    codec = codec_byte & 3
    dict_log = codec_byte >> 2
    if codec != CODEC_LZMA and dict_log:
        raise MalformedUpdateError(f"compact update: bad codec byte {codec_byte}")
    if codec == CODEC_STORED:
        block = payload
    elif codec == CODEC_LZMA:
        if not _LZMA_MIN_DICT_LOG <= dict_log <= _LZMA_MAX_DICT_LOG:
            raise MalformedUpdateError(f"compact update: bad LZMA dictionary size 2**{dict_log}")
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma_filters(dict_log))
        try:
            block = dec.decompress(payload, max_length=size)
        except lzma.LZMAError as exc:
            raise MalformedUpdateError(f"compact update: corrupt LZMA data: {exc}") from None
        if not dec.eof and len(block) == size and dec.needs_input is False:
            raise MalformedUpdateError("compact update: more data than announced")
    elif codec == CODEC_ZSTD:
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(payload)
            block = reader.read(size + 1)
        except zstandard.ZstdError as exc:
            raise MalformedUpdateError(f"compact update: corrupt zstd data: {exc}") from None
    else:
        raise MalformedUpdateError(f"compact update: unknown codec {codec}")
    if len(block) != size:
        raise MalformedUpdateError(
            f"compact update: {len(block)} bytes decompressed, {size} announced"
        )
    return block


def _decompress_columns(head: _Col, size: int) -> bytes:
    """The column block of a version 2 payload, never more than ``size`` bytes.

    Each column's announced length is checked against what is left of
    ``size`` before it is decompressed (and its codec never produces more),
    so the whole allocates at most the announced size, itself within the
    limits.
    """
    block = bytearray()
    _put(block, N_COLUMNS)
    for name in _COLUMN_NAMES:
        codec = head.byte()
        n = head.uint(64)
        packed = head.take(head.uint(64))
        if len(block) + _vlen(n) + n > size:
            raise MalformedUpdateError(
                f"compact update: column {name} of {n} bytes exceeds the announced size"
            )
        col = _decompress(codec, packed, n)
        _put(block, n)
        block += col
    if head.left():
        raise MalformedUpdateError("compact update: trailing bytes after the columns")
    if len(block) != size:
        raise MalformedUpdateError(
            f"compact update: {len(block)} bytes of columns, {size} announced"
        )
    return bytes(block)


def compact_decode(data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> bytes:
    """Decodes the compact format back to the exact v1 update.

    Args:
        data: output of :func:`compact_encode` (or hostile bytes).
        limits: resource limits; the uncompressed column block and the
            rebuilt update may not exceed ``limits.max_update_bytes``.

    Returns:
        The v1 update.

    Raises:
        MalformedUpdateError: the data is corrupt or truncated.
        UpdateLimitError: the data would exceed a limit.
    """
    return compact_decode_parsed(data, limits)[0]


def compact_decode_parsed(
    data: bytes, limits: UpdateLimits = DEFAULT_LIMITS
) -> tuple[bytes, ParsedUpdate]:
    """Like :func:`compact_decode`, with the parse of the result.

    The parse is the decoder's own (no second pass over the v1 bytes): every
    rule :func:`~crdtsync.format.yupdate.parse_update` enforces is checked while
    the columns are read, and the size of the v1 update is counted before it
    is written, so a small input that refers to large keys many times is
    refused before anything large is allocated.

    Returns:
        ``(v1 bytes, parsed update)``; ``parse_update(v1, limits)`` equals the
        parsed update.

    Raises:
        MalformedUpdateError: the data is corrupt or truncated.
        UpdateLimitError: the data would exceed a limit.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"compact data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    try:
        return _decode(data, limits)
    except InvalidUpdateError:
        raise
    except (
        IndexError,
        ValueError,
        OverflowError,
        KeyError,
        TypeError,
        AssertionError,
        MemoryError,
    ) as exc:
        # Every path above is meant to be checked; this is the backstop that
        # keeps the promise "our errors only" should a check be missing.
        raise MalformedUpdateError(
            f"compact update: inconsistent data ({type(exc).__name__}: {exc})"
        ) from None


def _decode(data: bytes, limits: UpdateLimits) -> tuple[bytes, ParsedUpdate]:
    head = _Col(data, "header")
    version = head.byte()
    if version not in (VERSION_WHOLE, VERSION_PER_COLUMN):
        raise MalformedUpdateError(f"compact update: unknown version {version}")
    codec = head.byte() if version == VERSION_WHOLE else 0
    size = head.uint(64)
    if size > limits.max_update_bytes:
        raise UpdateLimitError(
            f"compact update: {size} bytes of columns exceed "
            f"max_update_bytes={limits.max_update_bytes}"
        )
    if version == VERSION_WHOLE:
        block = _decompress(codec, data[head.pos :], size)
    else:
        block = _decompress_columns(head, size)
    top = _Col(block, "block")
    ncols = top.uint(32)
    if ncols != N_COLUMNS:
        raise MalformedUpdateError(f"compact update: {ncols} columns, expected {N_COLUMNS}")
    cols = [_Col(top.take(top.uint(64)), name) for name in _COLUMN_NAMES]
    if top.left():
        raise MalformedUpdateError("compact update: trailing bytes after the columns")
    parsed, v1_size = _rebuild(cols, limits, recent_keys=version == VERSION_PER_COLUMN)
    out = encode_update(parsed)
    if len(out) != v1_size:  # pragma: no cover - the count mirrors encode_update
        raise MalformedUpdateError("compact update: size count does not match the encoding")
    parsed.ds_pos = len(out) - len(encode_delete_set(parsed.delete_set))
    return out, parsed


def _vlen(value: int) -> int:
    """Bytes of a varuint."""
    return 1 if value < 0x80 else (value.bit_length() + 6) // 7


class _Size:
    """The v1 size of what has been rebuilt so far, checked against the limit as it grows."""

    __slots__ = ("limit", "n")

    def __init__(self, limit: int) -> None:
        self.n = 0
        self.limit = limit

    def add(self, n: int) -> None:
        self.n += n
        if self.n > self.limit:
            raise UpdateLimitError(
                f"compact update: the v1 update would exceed max_update_bytes={self.limit}"
            )


def _rebuild(
    cols: list[_Col], limits: UpdateLimits, *, recent_keys: bool = False
) -> tuple[ParsedUpdate, int]:
    (
        c_clients,
        c_blocks,
        c_info,
        c_origin,
        c_right,
        c_parent,
        c_keys,
        c_lengths,
        c_text,
        c_misc,
        c_deletes,
    ) = cols
    mru: list[tuple[int, int]] = []
    rmru: list[tuple[int, int]] = []
    clients: list[int] = []
    keys: list[str] = []
    key_size: list[int] = []  # v1 bytes of each key: varuint length + UTF-8
    last_clock: dict[int, int] = {}
    size = _Size(limits.max_update_bytes)
    budget = _Budget()
    max_clock = limits.max_clock
    max_str = limits.max_string_bytes

    def client(col: _Col) -> int:
        idx = col.uint(32)
        while idx >= len(clients):
            if idx > len(clients):
                raise col.fail(f"client index {idx} refers ahead of the table")
            clients.append(c_clients.uint(64))
        return clients[idx]

    def key(col: _Col) -> int:
        """Index of a key in ``keys`` (read from the key table on first use)."""
        idx = col.uint(32)
        if recent_keys:
            if idx > len(keys):
                raise col.fail(f"key reference {idx} beyond the table")
            idx = idx - 1 if idx else len(keys)
        if idx == len(keys):
            n = c_keys.uint(32)
            if n > limits.max_key_bytes:
                raise UpdateLimitError(f"compact update: key of {n} bytes exceeds max_key_bytes")
            keys.append(c_keys.text(n))
            key_size.append(_vlen(n) + n)
        elif idx > len(keys):
            raise col.fail(f"key index {idx} refers ahead of the table")
        size.add(key_size[idx])
        return idx

    def ref_clock(col: _Col, cl: int, expected: int | None) -> int:
        if expected is None:
            expected = last_clock.get(cl, 0)
        value = expected + _unzigzag(col.uint(64))
        if not 0 <= value < 1 << 32:
            raise col.fail(f"clock {value} out of range")
        last_clock[cl] = value
        return value

    def text(col: _Col, n: int, what: str) -> str:
        if n > max_str:
            raise UpdateLimitError(
                f"compact update: {what} of {n} bytes exceeds max_string_bytes={max_str}"
            )
        size.add(_vlen(n) + n)
        return col.text(n)

    def zero(what: str) -> MalformedUpdateError:
        return c_info.fail(f"zero-length {what}")

    nblocks = c_blocks.count(1, c_info)
    if nblocks > limits.max_clients:
        raise UpdateLimitError(
            f"compact update: {nblocks} client blocks exceed max_clients={limits.max_clients}"
        )
    size.add(_vlen(nblocks))
    out: dict[int, list[Struct]] = {}
    total = 0
    for _ in range(nblocks):
        cl = client(c_blocks)
        nstructs = c_blocks.count(1, c_info)
        if nstructs == 0:
            raise c_blocks.fail(f"client {cl} has a block with no struct")
        total += nstructs
        if total > limits.max_structs:
            raise UpdateLimitError(
                f"compact update: more than max_structs={limits.max_structs} structs"
            )
        clock = c_blocks.uint(32)
        if clock > max_clock:
            raise UpdateLimitError(f"compact update: clock {clock} exceeds max_clock={max_clock}")
        if cl in out:
            raise c_blocks.fail(f"client {cl} appears twice")
        size.add(_vlen(nstructs) + _vlen(cl) + _vlen(clock))
        structs: list[Struct] = []
        out[cl] = structs
        for _j in range(nstructs):
            info = c_info.byte()
            if info in (STRUCT_GC, STRUCT_SKIP):
                length = c_lengths.uint(32)
                if length == 0:
                    raise zero("GC" if info == STRUCT_GC else "Skip")
                size.add(1 + _vlen(length))
                structs.append(Struct(cl, clock, length, info, info))
                clock += length
                if clock > max_clock:
                    raise UpdateLimitError(f"compact update: clock exceeds max_clock={max_clock}")
                continue
            kind = info & 0x1F
            if kind == STRUCT_GC or kind > CONTENT_DOC:
                raise c_info.fail(f"unknown content ref {kind} (info byte {info:#04x})")
            origin = right = None
            parent: str | tuple[int, int] | None = None
            parent_sub: str | None = None
            n = 1  # the info byte
            if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):
                sel = c_info.byte()
                osel, rsel = divmod(sel, 10)
                if (
                    osel > 9
                    or (osel and not info & HAS_ORIGIN)
                    or (rsel and not info & HAS_RIGHT_ORIGIN)
                ):
                    raise c_info.fail(f"bad selector {sel} for info {info:#04x}")
                if info & HAS_ORIGIN:
                    if osel == _SEL_CONTINUE:
                        if clock == 0:
                            raise c_info.fail("continuation at clock 0")
                        origin = (cl, clock - 1)
                    elif osel == _SEL_EXPLICIT:
                        oc = client(c_origin)
                        origin = (oc, ref_clock(c_origin, oc, None))
                    elif osel < len(mru):
                        origin = mru[osel]
                    else:
                        raise c_info.fail(f"origin selector {osel} beyond the MRU list")
                    n += _vlen(origin[0]) + _vlen(origin[1])
                if info & HAS_RIGHT_ORIGIN:
                    if rsel == _SEL_AFTER_ORIGIN:
                        if origin is None:
                            raise c_info.fail("right origin after a missing origin")
                        right = (origin[0], origin[1] + 1)
                        if right[1] >= 1 << 32:
                            raise c_info.fail("right origin clock out of range")
                    elif rsel == _SEL_EXPLICIT:
                        rc = client(c_right)
                        right = (
                            rc,
                            ref_clock(
                                c_right,
                                rc,
                                origin[1] + 1 if origin is not None and origin[0] == rc else None,
                            ),
                        )
                    elif rsel < len(rmru):
                        right = rmru[rsel]
                    else:
                        raise c_info.fail(f"right origin selector {rsel} beyond the MRU list")
                    n += _vlen(right[0]) + _vlen(right[1])
            if not info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):
                flag = c_parent.byte()
                n += 1
                if flag == 1:
                    parent = keys[key(c_parent)]
                elif flag == 0:
                    pc = client(c_parent)
                    parent = (pc, ref_clock(c_parent, pc, None))
                    n += _vlen(pc) + _vlen(parent[1])
                else:
                    raise c_parent.fail(f"bad parent flag {flag}")
                if info & HAS_PARENT_SUB:
                    parent_sub = keys[key(c_parent)]
            content: Content
            if kind == CONTENT_STRING:
                nbytes = c_lengths.uint(32)
                if nbytes == 0:
                    raise zero("String item")
                content = text(c_text, nbytes, "string")
                length = (
                    len(content.encode("utf-16-le")) // 2 if not content.isascii() else len(content)
                )
            elif kind == CONTENT_DELETED:
                length = c_lengths.uint(32)
                if length == 0:
                    raise zero("Deleted item")
                n += _vlen(length)
                content = None
            else:
                length = 1
                if kind == CONTENT_ANY:  # count + raw values; find their end by parsing
                    count = c_misc.count(1)
                    if count == 0:
                        raise zero("Any item")
                    start = c_misc.pos
                    c_misc.pos = _skip_any_end(c_misc, count, limits, budget)
                    content = AnyContent(count, c_misc.data[start : c_misc.pos])
                    length = count
                    n += _vlen(count) + c_misc.pos - start
                elif kind == CONTENT_TYPE:
                    tr = c_misc.uint(32)
                    n += _vlen(tr)
                    if tr in (TYPE_XML_ELEMENT, TYPE_XML_HOOK):
                        content = TypeContent(tr, keys[key(c_misc)])
                    elif tr > TYPE_XML_TEXT:
                        raise c_misc.fail(f"unknown type ref {tr}")
                    else:
                        content = TypeContent(tr, None)
                elif kind == CONTENT_BINARY:
                    blen = c_misc.uint(32)
                    if blen > max_str:
                        raise UpdateLimitError(
                            f"compact update: binary of {blen} bytes exceeds max_string_bytes"
                        )
                    content = c_misc.take(blen)
                    n += _vlen(blen) + blen
                elif kind == CONTENT_FORMAT:
                    k = keys[key(c_misc)]
                    value = text(c_misc, c_misc.uint(32), "format value")
                    _check_json_value(value, limits, "format value")
                    content = FormatContent(k, value)
                elif kind == CONTENT_EMBED:
                    content = text(c_misc, c_misc.uint(32), "embed")
                    _check_json_value(content, limits, "embed")
                elif kind == CONTENT_JSON:
                    count = c_misc.count(1)
                    if count == 0:
                        raise zero("JSON item")
                    budget.any_values += count
                    if budget.any_values > limits.max_any_values:
                        raise UpdateLimitError(
                            f"compact update: more than max_any_values={limits.max_any_values}"
                        )
                    texts = []
                    for _k in range(count):
                        jt = text(c_misc, c_misc.uint(32), "JSON value")
                        if jt != "undefined":
                            _check_json_value(jt, limits, "JSON content")
                        texts.append(jt)
                    content = tuple(texts)
                    length = count
                    n += _vlen(count)
                else:  # CONTENT_DOC
                    guid = keys[key(c_misc)]
                    start = c_misc.pos
                    c_misc.pos = _skip_any_end(c_misc, 1, limits, budget)
                    content = DocContent(guid, c_misc.data[start : c_misc.pos])
                    n += c_misc.pos - start
            size.add(n)
            structs.append(
                Struct(cl, clock, length, kind, info, origin, right, parent, parent_sub, content)
            )
            clock += length
            if clock > max_clock:
                raise UpdateLimitError(f"compact update: clock exceeds max_clock={max_clock}")
            _remember(mru, rmru, (cl, clock - 1), origin, right)
    delete_set: dict[int, list[tuple[int, int]]] = {}
    nds = c_deletes.count(2)  # client index + mode byte at least
    if nds > limits.max_clients:
        raise UpdateLimitError(
            f"compact update: {nds} delete-set clients exceed max_clients={limits.max_clients}"
        )
    size.add(_vlen(nds))
    total_ranges = 0
    for _ in range(nds):
        cl = client(c_deletes)
        if cl in delete_set:
            raise c_deletes.fail(f"client {cl} appears twice")
        mode = c_deletes.byte()
        if mode == 0:
            ranges = _implied_deletes(out.get(cl))
        elif mode == 1:
            ranges = []
            end = 0
            for _j in range(c_deletes.count(2)):
                clock = end + c_deletes.uint(32)
                length = c_deletes.uint(32)
                if length == 0:
                    raise c_deletes.fail(f"empty delete range for client {cl}")
                ranges.append((clock, length))
                end = clock + length
                if end > max_clock:
                    raise UpdateLimitError(
                        f"compact update: delete range of client {cl} exceeds max_clock"
                    )
        else:
            raise c_deletes.fail(f"bad delete-set mode {mode}")
        if not ranges:
            raise c_deletes.fail(f"client {cl} has no delete range")
        total_ranges += len(ranges)
        if total_ranges > limits.max_delete_ranges:
            raise UpdateLimitError(
                f"compact update: more than max_delete_ranges={limits.max_delete_ranges} ranges"
            )
        size.add(_vlen(cl) + _vlen(len(ranges)) + sum(_vlen(a) + _vlen(b) for a, b in ranges))
        delete_set[cl] = ranges
    for col in cols:
        if col.left():
            raise col.fail("unused bytes")
    return ParsedUpdate(out, delete_set), size.n


def _check_json_value(text: str, limits: UpdateLimits, what: str) -> None:
    try:
        _check_json(text, 0, limits, what)
    except InvalidUpdateError as exc:
        raise type(exc)(f"compact update: {exc}") from None


def _skip_any_end(col: _Col, count: int, limits: UpdateLimits, budget: _Budget) -> int:
    """End offset of ``count`` Any values in ``col`` (validated as the parser does)."""
    try:
        return _skip_any(col.data, col.pos, count, limits, budget)
    except InvalidUpdateError as exc:
        raise type(exc)(f"compact update: column misc: {exc}") from None
