"""Tests of crdtsync.format.columnar: exact round trip, hostile input, size on real traces."""

from __future__ import annotations

import lzma
import random
import tracemalloc

import pycrdt
import pytest
from helpers.compact import column_block, hostile_per_column_payloads, key_reference_payloads
from helpers.traces import fuzz_module, trace_update
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync.errors import InvalidUpdateError, MalformedUpdateError, UpdateLimitError
from crdtsync.format import columnar as c
from crdtsync.format import yupdate as y


def _doc_update() -> bytes:
    doc = pycrdt.Doc(client_id=2**40 + 1)
    text = doc.get("t", type=pycrdt.Text)
    text.insert(0, "hello 😀 wörld", {"bold": True})
    text.insert_embed(3, {"img": "x"})
    del text[1:4]
    doc.get("m", type=pycrdt.Map)["k"] = {"a": [1, 2.5, None, b"\x00\xff"]}
    doc.get("m", type=pycrdt.Map)["sub"] = pycrdt.Doc(guid="g-1")
    doc.get("x", type=pycrdt.XmlFragment).children.append(
        pycrdt.XmlElement("p", {"a": "b"}, [pycrdt.XmlText("hi")])
    )
    return doc.get_update()


def test_round_trip_small_documents() -> None:
    for update in (b"\x00\x00", _doc_update()):
        packed = c.compact_encode(update)
        assert c.compact_decode(packed) == update


def test_round_trip_format_only_quirks() -> None:
    # Flags that v1 ignores, Skip structs, JSON content, explicit delete sets:
    # whatever parse_update accepts comes back byte for byte.
    structs = [
        y.Struct(
            5,
            0,
            2,
            y.CONTENT_STRING,
            y.CONTENT_STRING | y.HAS_PARENT_SUB,
            parent="t",
            parent_sub="k",
            content="ab",
        ),
        y.Struct(5, 2, 3, y.STRUCT_SKIP, y.STRUCT_SKIP),
        y.Struct(
            5,
            5,
            2,
            y.CONTENT_JSON,
            y.CONTENT_JSON | y.HAS_ORIGIN | y.HAS_PARENT_SUB,
            origin=(5, 1),
            content=("1", "undefined"),
        ),
        y.Struct(
            5,
            7,
            1,
            y.CONTENT_FORMAT,
            y.CONTENT_FORMAT | y.HAS_RIGHT_ORIGIN,
            right_origin=(9, 4),
            content=y.FormatContent("b", "null"),
        ),
        y.Struct(5, 8, 4, y.STRUCT_GC, y.STRUCT_GC),
    ]
    update = y.encode_update(y.ParsedUpdate({5: structs}, {5: [(0, 1), (3, 2)], 9: [(1, 1)]}))
    y.parse_update(update)
    assert c.compact_decode(c.compact_encode(update)) == update


@given(st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_random_sessions(rng: random.Random) -> None:
    fz = fuzz_module()
    samples = fz.random_session(rng)
    for sample in samples:
        assert c.compact_decode(c.compact_encode(sample.update)) == sample.update
    # Mutations that still parse round-trip too.
    for _ in range(10):
        sample = rng.choice(samples)
        data = fz.mutate_struct(rng, sample.update, sample.prior) or fz.mutate_bytes(
            rng, sample.update, b""
        )
        try:
            y.parse_update(data)
        except InvalidUpdateError:
            continue
        assert c.compact_decode(c.compact_encode(data)) == data


def test_encode_rejects_what_does_not_parse() -> None:
    with pytest.raises(MalformedUpdateError):
        c.compact_encode(b"\x01")


@given(st.randoms(use_true_random=False), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_corrupted_compact_data_raises_our_errors(rng: random.Random, salt: int) -> None:
    packed = bytearray(c.compact_encode(_CORPUS_UPDATES[salt % len(_CORPUS_UPDATES)]))
    for _ in range(rng.randint(1, 3)):
        if not packed:
            break
        op = rng.randrange(4)
        i = rng.randrange(len(packed))
        if op == 0:
            packed[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            del packed[i:]
        elif op == 2:
            packed[i:i] = rng.randbytes(rng.randint(1, 4))
        else:
            packed[i] = rng.randrange(256)
    try:
        out = c.compact_decode(bytes(packed))
    except InvalidUpdateError:
        return
    y.parse_update(out)  # anything returned is a parseable update


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_our_errors(data: bytes) -> None:
    try:
        out = c.compact_decode(data)
    except InvalidUpdateError:
        return
    y.parse_update(out)


def _stored(block: bytes, size: int | None = None) -> bytes:
    out = bytearray((c.VERSION_WHOLE, c.CODEC_STORED))
    c._put(out, len(block) if size is None else size)
    return bytes(out) + block


def test_hostile_containers() -> None:
    limits = y.UpdateLimits(max_update_bytes=1 << 20)
    # A decompression bomb: 64 MiB of zeros in a few KiB of LZMA, announced small.
    bomb = lzma.compress(bytes(64 << 20), format=lzma.FORMAT_RAW, filters=c._lzma_filters(20))
    assert len(bomb) < 64 << 10
    data = (
        bytes((c.VERSION_WHOLE, c.CODEC_LZMA | 20 << 2)) + bytes([0x80, 0x80, 0x04]) + bomb
    )  # announces 64 KiB
    # Refused while decompressing, at the announced size: never 64 MiB held.
    tracemalloc.start()
    try:
        with pytest.raises(MalformedUpdateError):
            c.compact_decode(data, limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    # Announcing more than the limit is refused before decompressing.
    big = bytes((c.VERSION_WHOLE, c.CODEC_LZMA | 20 << 2)) + bytes([0x80, 0x80, 0x80, 0x01]) + bomb
    with pytest.raises(UpdateLimitError):
        c.compact_decode(big, limits)
    # Counts larger than the data behind them.
    empty = [b""] * c.N_COLUMNS
    cols = list(empty)
    cols[c.COL_BLOCKS] = b"\xff\xff\xff\x0f"
    with pytest.raises(MalformedUpdateError, match="exceeds the data left"):
        c.compact_decode(_stored(column_block(cols)))
    with pytest.raises(MalformedUpdateError, match="unknown version"):
        c.compact_decode(b"\x09\x00\x00")
    with pytest.raises(MalformedUpdateError, match="unknown codec"):
        c.compact_decode(b"\x01\x03\x00")
    with pytest.raises(MalformedUpdateError, match="columns"):
        c.compact_decode(_stored(column_block([b""] * 3)))
    with pytest.raises(MalformedUpdateError):
        c.compact_decode(_stored(b"\x0b", size=5))


def test_layout_2_for_large_blocks() -> None:
    update, _ = trace_update("friendsforever_flat")
    packed = c.compact_encode(update)
    assert packed[0] == c.VERSION_PER_COLUMN
    assert c.compact_decode(packed) == update
    # a small document keeps layout 1, which every release reads
    assert c.compact_encode(_doc_update())[0] == c.VERSION_WHOLE


def test_layout_2_prefers_zstd_within_a_sixteenth() -> None:
    # Text is nearly incompressible for both codecs: zstd, for its decoding speed.
    update, _ = trace_update("automerge-paper")
    cols = c._Encoder().encode(y.parse_update(update))
    codec, packed = c._pack_column(cols[c.COL_TEXT])
    assert codec == c.CODEC_ZSTD
    lz = lzma.compress(
        cols[c.COL_TEXT],
        format=lzma.FORMAT_RAW,
        filters=c._lzma_filters(c._dict_log(len(cols[c.COL_TEXT]))),
    )
    assert len(lz) < len(packed) <= len(lz) + len(lz) // 16
    # A column LZMA squeezes far better than zstd stays LZMA.
    regular = bytes(range(256)) * 64 + bytes(i * 7 % 251 for i in range(20_000))
    assert c._pack_column(regular)[0] & 3 == c.CODEC_LZMA
    assert c._pack_column(b"") == (c.CODEC_STORED, b"")
    assert c._pack_column(b"\x01")[0] == c.CODEC_STORED


def test_layout_2_key_references_count_back() -> None:
    v1, good, bad = key_reference_payloads()
    cols = c._Encoder(recent_keys=True).encode(y.parse_update(v1))
    # per item: 1 (a root), the root's name, the key. "m" is key 0, a/b/c new.
    assert cols[c.COL_PARENT] == bytes([1, 0, 0, 1, 1, 0, 1, 1, 0])
    # layout 1 writes indexes: m is 0, a 1, b 2, c 3
    assert c._Encoder().encode(y.parse_update(v1))[c.COL_PARENT] == bytes(
        [1, 0, 1, 1, 0, 2, 1, 0, 3]
    )
    assert c.compact_decode(good) == v1
    with pytest.raises(MalformedUpdateError, match="key reference 9 beyond the table"):
        c.compact_decode(bad)


def test_layout_2_hostile_payloads() -> None:
    limits = y.UpdateLimits(max_update_bytes=1 << 20)
    payloads = hostile_per_column_payloads()
    tracemalloc.start()
    try:
        for data in payloads[:-1]:
            with pytest.raises(MalformedUpdateError):
                c.compact_decode(data, limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # the bomb never inflates past its column's length
    with pytest.raises(UpdateLimitError):
        c.compact_decode(payloads[-1], limits)


def test_automerge_paper_size() -> None:
    # Speed is measured by the benchmarks, not asserted here (noisy machines).
    update, final = trace_update("automerge-paper")
    packed = c.compact_encode(update)
    assert c.compact_decode(packed) == update
    ratio = len(packed) / len(final.encode())
    # Yjs v2 + gzip reaches 0.7 on this trace; we are at about 0.44.
    assert ratio < 0.5, ratio


_CORPUS_UPDATES: list[bytes] = []


def _fill_corpus() -> None:
    rng = random.Random(1234)
    fz = fuzz_module()
    for _ in range(8):
        _CORPUS_UPDATES.extend(s.update for s in fz.random_session(rng))
    _CORPUS_UPDATES.append(_doc_update())


_fill_corpus()
