"""Hand-made compact payloads of layout 2 (per-column codecs), shared by the
Python tests (tests/format/test_columnar.py) and the Rust agreement tests
(tests/format/test_native.py)."""

from __future__ import annotations

import lzma

from crdtsync.format import columnar as c


def column_block(columns: list[bytes]) -> bytes:
    """The block of a compact save's columns: their count, then each one's length and bytes."""
    block = bytearray()
    c._put(block, len(columns))
    for col in columns:
        c._put(block, len(col))
        block += col
    return bytes(block)


def _per_column(columns: list[tuple[int, int, bytes]], size: int) -> bytes:
    """A layout 2 payload from ``(codec byte, announced length, packed bytes)`` per column."""
    out = bytearray((c.VERSION_PER_COLUMN,))
    c._put(out, size)
    for codec, n, packed in columns:
        out.append(codec)
        c._put(out, n)
        c._put(out, len(packed))
        out += packed
    return bytes(out)


def hostile_per_column_payloads() -> list[bytes]:
    """Layout 2 payloads that break one rule each: seven malformed, the last over the limit."""
    stored = [(c.CODEC_STORED, 0, b"")] * c.N_COLUMNS
    size = len(column_block([b""] * c.N_COLUMNS))
    bomb = lzma.compress(bytes(64 << 20), format=lzma.FORMAT_RAW, filters=c._lzma_filters(20))
    too_long = list(stored)
    too_long[c.COL_TEXT] = (c.CODEC_LZMA | 20 << 2, 1 << 16, bomb)  # more than announced
    inflating = list(stored)
    inflating[c.COL_TEXT] = (c.CODEC_LZMA | 20 << 2, 1 << 16, bomb)
    wrong_len = list(stored)
    wrong_len[c.COL_MISC] = (c.CODEC_STORED, 3, b"ab")
    bad_codec = list(stored)
    bad_codec[c.COL_INFO] = (3, 0, b"")
    return [
        _per_column(too_long, size),  # the column does not fit the announced size
        _per_column(inflating, size + (1 << 16) + 2),  # a bomb: decompresses past its length
        _per_column(wrong_len, size + 3),  # stored bytes shorter than announced
        _per_column(bad_codec, size),  # unknown codec
        _per_column(stored, size + 1),  # the columns make less than announced
        _per_column(stored, size) + b"\x00",  # trailing bytes
        _per_column(stored, size)[:-4],  # truncated
        _per_column(stored, 1 << 40),  # announced over the limit
    ]


def _stored_per_column(cols: list[bytes]) -> bytes:
    return _per_column([(c.CODEC_STORED, len(col), col) for col in cols], len(column_block(cols)))


def key_reference_payloads() -> tuple[bytes, bytes, bytes]:
    """``(v1, layout 2 payload of it, the same with a key reference beyond the table)``.

    Layout 2 codes a key reference as 0 for a new key, else its index + 1:
    a root map's entries refer to the root's name as 1 and to their new keys
    as 0 (the second "b" has an origin: no key written).
    """
    import pycrdt

    from crdtsync.format import yupdate as y

    doc = pycrdt.Doc(client_id=7)
    m = doc.get("m", type=pycrdt.Map)
    for k in ("a", "b", "c"):
        m[k] = 1
    m["b"] = 2
    v1 = doc.get_update()
    cols = c._Encoder(recent_keys=True).encode(y.parse_update(v1))
    bad = list(cols)
    bad[c.COL_PARENT] = cols[c.COL_PARENT][:-1] + b"\x09"  # the last reference: 9 keys back
    return v1, _stored_per_column(cols), _stored_per_column(bad)


def duplicate_client_payload() -> bytes:
    """A layout 2 payload whose client table names client 2 twice.

    Two String items of client 2 with explicit origins, the first referring
    to its client by table index 1, the second by index 0, each clock 100
    after the last one read *for that client id*: the reference keeps the
    last clock per id, so the origins are (2, 100) and (2, 200).
    """
    from crdtsync.format import yupdate as y

    structs = [
        y.Struct(
            2,
            i,
            1,
            y.CONTENT_STRING,
            y.CONTENT_STRING | y.HAS_ORIGIN,
            origin=(1, 100 * (i + 1)),
            content="x",
        )
        for i in range(2)
    ]
    v1 = y.encode_update(y.ParsedUpdate({2: structs}, {}))
    cols = c._Encoder(recent_keys=True).encode(y.parse_update(v1))
    cols[c.COL_CLIENTS] = bytes([2, 2])
    cols[c.COL_ORIGIN] = bytes([1, 200, 1, 0, 200, 1])  # index 1, +100; index 0, +100
    return _stored_per_column(cols)
