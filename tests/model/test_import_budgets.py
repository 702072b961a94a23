"""Budgets of the import path (issue 18): what a peer's bytes may cost a document.

Each test here failed on the import path before v2: a small compact envelope
that cost a gigabyte, stored state that could not reload under the update
limit, Skip-only updates held forever and re-validated by every later
import, ``contains`` exporting the whole delete set, and pending deletions
without a bound.
"""

from __future__ import annotations

import lzma
import tracemalloc
from typing import Any

import cbor2
import pycrdt
import pytest

from crdtsync import Doc, MalformedUpdateError, UpdateLimitError, UpdateLimits
from crdtsync.format import checker as checker_module
from crdtsync.format import columnar as col
from crdtsync.format import yupdate as y
from crdtsync.format.envelope import FLAG_COMPACT, FLAG_SNAPSHOT, pack
from crdtsync.model.containers import Text

# Every test here runs on the Rust core and on the Python reference.
pytestmark = pytest.mark.usefixtures("checker_path")


def _update(structs: list[y.Struct], ds: dict[int, list[tuple[int, int]]] | None = None) -> bytes:
    clients: dict[int, list[y.Struct]] = {}
    for s in structs:
        clients.setdefault(s.client, []).append(s)
    return y.encode_update(y.ParsedUpdate(clients, ds or {}))


def _string(client: int, clock: int, text: str, **kw: Any) -> y.Struct:
    info = y.CONTENT_STRING
    if kw.get("origin") is not None:
        info |= y.HAS_ORIGIN
    if kw.get("right_origin") is not None:
        info |= y.HAS_RIGHT_ORIGIN
    return y.Struct(client, clock, len(text), y.CONTENT_STRING, info, content=text, **kw)


# --------------------------------------------------------------------------
# item 3: a small compact envelope must not cost a gigabyte
# --------------------------------------------------------------------------


def _key_bomb(n: int = 4000) -> bytes:
    """A compact envelope: n Any items in a root whose name is 64 KiB, named by index."""
    name = "k" * (64 * 1024)
    structs = [
        y.Struct(
            5, i, 1, y.CONTENT_ANY, y.CONTENT_ANY, parent=name, content=y.AnyContent(1, b"\x7e")
        )
        for i in range(n)
    ]
    block = col._join(col._Encoder().encode(y.ParsedUpdate({5: structs}, {})))
    dict_log = col._dict_log(len(block))
    payload = lzma.compress(block, format=lzma.FORMAT_RAW, filters=col._lzma_filters(dict_log))
    header = bytearray((col.VERSION_WHOLE, col.CODEC_LZMA | dict_log << 2))
    col._put(header, len(block))
    return cbor2.dumps({0: "crdtsync", 1: 1, 2: FLAG_COMPACT, 3: bytes(header) + payload})


def test_compact_key_bomb_is_refused_before_it_is_built() -> None:
    bomb = _key_bomb()
    assert len(bomb) < 2048  # (issue 18 had 148 bytes; LZMA framing here is a bit longer)
    doc = Doc()
    tracemalloc.start()
    try:
        with pytest.raises(UpdateLimitError, match="max_update_bytes"):
            doc.import_update(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The v1 update it describes is 256 MiB; nothing near that may be allocated.
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    with pytest.raises(UpdateLimitError):
        Doc.load(bomb, limits=UpdateLimits(max_document_bytes=64 * 2**20))
    assert doc.to_py() == {}


def test_compact_decoder_agrees_with_the_parser() -> None:
    """The decoder's own parse equals parse_update of the bytes it returns."""
    a = Doc(peer_id=3)
    a.text("t").insert(0, "héllo 😀 wörld")
    a.map("m")["k"] = {"deep": [1, 2.5, None]}
    a.list("l").extend([1, "two"])
    del a.text("t")[1:3]
    v1 = a.export_yjs_update()
    data, parsed = col.compact_decode_parsed(col.compact_encode(v1))
    assert data == v1
    assert parsed == y.parse_update(v1)
    assert v1[: parsed.ds_pos] + y.encode_delete_set(parsed.delete_set) == v1


# --------------------------------------------------------------------------
# item 1: stored state loads under the document limit
# --------------------------------------------------------------------------


def test_room_grown_by_small_updates_reloads() -> None:
    limits = UpdateLimits(max_update_bytes=1_000_000)
    room = Doc(limits=limits)
    for i in range(10):
        writer = Doc(peer_id=100 + i)
        writer.text(f"t{i}").insert(
            0, "".join(chr(0x4E00 + (j * 7919 + i) % 20000) for j in range(300_000))
        )
        update = writer.export_update()
        assert len(update) <= limits.max_update_bytes
        room.import_update(update)
    saved = room.save()
    assert len(saved) < limits.max_update_bytes  # the compact snapshot itself is small...
    reloaded = Doc.load(saved, limits=limits)  # ...but its v1 state is 9 MB
    assert reloaded.to_py() == room.to_py()
    # A peer still may not send that much at once.
    with pytest.raises(UpdateLimitError):
        Doc(limits=limits).import_update(saved)
    with pytest.raises(UpdateLimitError):
        Doc.load(
            saved, limits=UpdateLimits(max_update_bytes=1_000_000, max_document_bytes=2_000_000)
        )


# --------------------------------------------------------------------------
# item 2: held updates are bounded, expire, and cost nothing until they can apply
# --------------------------------------------------------------------------


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts every parse of update bytes on the import path (on either checker).

    The Python checker parses with ``yupdate.parse_update``; the Rust one parses
    in Rust, once per call of the entries that take bytes, which are counted.
    """
    calls = {"n": 0}

    def count(owner: Any, name: str) -> None:
        real = getattr(owner, name)

        def counting(*a: Any, **kw: Any) -> Any:
            calls["n"] += 1
            return real(*a, **kw)

        monkeypatch.setattr(owner, name, counting)

    count(y, "parse_update")
    count(checker_module, "parse_update")
    for name in ("parse", "record_local", "record_diff", "record_delete_set"):
        count(checker_module.NativeChecker, name)
    return calls


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _skip_only(client: int, clock: int, n: int = 3) -> bytes:
    return _update([y.Struct(client, clock, n, y.STRUCT_SKIP, y.STRUCT_SKIP)])


def test_skip_only_update_is_not_contained_and_held_with_a_deadline() -> None:
    clock = _Clock()
    doc = Doc(clock=clock, limits=UpdateLimits(held_timeout=60))
    doc.text("t").insert(0, "hello")
    skip = _skip_only(77, 0)
    assert len(skip) <= 8
    assert not doc.contains(skip)  # importing it holds it: something happens
    doc.import_yjs_update(skip)
    assert doc.pending == 1
    clock.now += 61
    doc.import_yjs_update(Doc().export_yjs_update())  # any later import expires it
    assert doc.pending == 0
    # A Skip within the clocks the document has adds nothing: contained, not held.
    known = _skip_only(doc.peer_id, 0, 2)
    assert doc.contains(known)
    doc.import_yjs_update(known)
    assert doc.pending == 0


def test_held_updates_are_bounded_per_origin_and_in_total() -> None:
    limits = UpdateLimits(max_held_updates=50, max_held_per_origin=10)
    doc = Doc(limits=limits)
    peer_a, peer_b = object(), object()
    for i in range(10):
        doc.import_yjs_update(_skip_only(1000 + i, 0), origin=peer_a)
    with pytest.raises(UpdateLimitError, match="from this origin"):
        doc.import_yjs_update(_skip_only(2000, 0), origin=peer_a)
    for i in range(10):
        doc.import_yjs_update(_skip_only(3000 + i, 0), origin=peer_b)
    for i in range(30):
        doc.import_yjs_update(_skip_only(4000 + i, 0))
    assert doc.pending == 50
    with pytest.raises(UpdateLimitError, match="too many updates"):
        doc.import_yjs_update(_skip_only(5000, 0))
    bytes_limited = Doc(limits=UpdateLimits(max_held_bytes=100))
    for i in range(12):  # 8 bytes each
        bytes_limited.import_yjs_update(_skip_only(6000 + i, 0))
    with pytest.raises(UpdateLimitError):
        bytes_limited.import_yjs_update(_skip_only(7000, 0))


def test_held_updates_are_not_revalidated_by_unrelated_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = Doc()
    for i in range(1000):  # (the default max_held_updates)
        doc.import_yjs_update(_skip_only(10_000 + i, 0), origin=None)
    assert doc.pending == 1000
    calls = _count_parses(monkeypatch)
    writer = Doc(peer_id=5)
    text = writer.text("t")
    for i in range(50):
        before = writer.version
        text.insert(i, "x")
        doc.import_yjs_update(writer.export_yjs_update(since=before))
    # one parse per import (and one for the recorded local root registration)
    assert calls["n"] <= 50 + 2, calls


def test_held_update_is_released_when_its_predecessor_arrives() -> None:
    a = Doc(peer_id=5)
    a.text("t").insert(0, "one ")
    first = a.export_yjs_update()
    v = a.version
    a.text("t").insert(4, "two")
    second = a.export_yjs_update(since=v)
    doc = Doc()
    doc.import_yjs_update(second)
    assert doc.pending == 1
    assert not doc.contains(second)
    doc.import_yjs_update(first)
    assert doc.pending == 0
    assert doc.contains(second)
    assert doc.to_py() == a.to_py()


# --------------------------------------------------------------------------
# item 7: contains costs in proportion to the message
# --------------------------------------------------------------------------


def test_contains_does_not_export_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = Doc(peer_id=1)
    text = doc.text("t")
    for _ in range(300):
        text.insert(0, "ab")
        text.delete(1, 1)
    remote = Doc(peer_id=2)
    remote.import_yjs_update(doc.export_yjs_update())
    before = remote.version
    del remote.text("t")[0:3]
    catch_up = remote.export_yjs_update(since=before)  # its whole delete set
    doc.contains(b"\x00\x00")  # the first call records the document once
    calls = {"n": 0}
    real = pycrdt.Doc.get_update

    def counting(self: pycrdt.Doc, *a: Any) -> bytes:
        calls["n"] += 1
        return real(self, *a)

    monkeypatch.setattr(pycrdt.Doc, "get_update", counting)
    assert not doc.contains(catch_up)  # it deletes three characters we still have
    doc.import_yjs_update(catch_up)
    assert doc.contains(catch_up)
    assert doc.contains(doc.export_yjs_update())
    assert calls["n"] == 1  # the export just above, nothing inside contains()


# --------------------------------------------------------------------------
# item 10: deletions of clocks nobody has are bounded, held apart, and kept
# --------------------------------------------------------------------------


def _deletes_for_strangers(n_ranges: int, first_client: int = 500) -> bytes:
    per = 1000
    ds = {
        first_client + c: [(2 * k, 1) for k in range(min(per, n_ranges - c * per))]
        for c in range((n_ranges + per - 1) // per)
    }
    return _update([], ds)


def test_pending_deletions_are_bounded() -> None:
    doc = Doc(limits=UpdateLimits(max_pending_deletes=10_000))
    doc.text("t").insert(0, "x")
    with pytest.raises(UpdateLimitError, match="max_pending_deletes"):
        doc.import_yjs_update(_deletes_for_strangers(12_000))
    doc.import_yjs_update(_deletes_for_strangers(6_000))
    with pytest.raises(UpdateLimitError, match="max_pending_deletes"):
        doc.import_yjs_update(_deletes_for_strangers(6_000, 900))
    assert str(doc.text("t")) == "x"


def test_pending_deletion_waits_survives_save_and_applies() -> None:
    a = Doc(peer_id=5)
    a.text("t").insert(0, "abc")
    structs = a.export_yjs_update()
    delete = _update([], {5: [(2, 1)]})  # "b" (clock 0 is the root registry entry)
    doc = Doc()
    doc.import_yjs_update(delete)
    assert doc.pending == 1
    assert not doc.contains(delete)
    reloaded = Doc.load(doc.save())
    for d in (doc, reloaded):
        d.import_yjs_update(structs)
        assert d.pending == 0
        assert str(d.text("t")) == "ac"
        assert d.contains(delete)


def test_pending_deletions_are_not_rescanned(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = Doc()
    doc.import_yjs_update(_deletes_for_strangers(5_000))
    assert doc.pending == 1
    calls = _count_parses(monkeypatch)
    writer = Doc(peer_id=7)
    for i in range(20):
        v = writer.version
        writer.text("t").insert(i, "z")
        doc.import_yjs_update(writer.export_yjs_update(since=v))
    assert calls["n"] <= 20 + 2


# --------------------------------------------------------------------------
# The index hears local transactions from their own updates
# --------------------------------------------------------------------------


def test_local_deletion_is_seen_without_exporting(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = Doc(peer_id=1)
    doc.list("a").extend([1, 2, 3])
    doc.import_yjs_update(b"\x00\x00")  # the index starts listening
    m = doc.map("m")
    m["x"] = Text("hello")
    calls = {"n": 0}
    real = pycrdt.Doc.get_update

    def counting(self: pycrdt.Doc, *a: Any) -> bytes:
        calls["n"] += 1
        return real(self, *a)

    items = y.parse_update(doc.export_yjs_update()).clients[1]
    text_item = next(s for s in items if s.parent_sub == "x")
    array_item = next(s for s in items if s.kind == y.CONTENT_ANY and s.parent == "a")
    # A String whose origin is a character of the text (GC'd once the text is
    # deleted) and whose right origin is in the Array: yrs would put it there.
    bad = _update(
        [
            _string(
                9, 0, "ééé", origin=(1, text_item.clock + 1), right_origin=(1, array_item.clock + 1)
            )
        ]
    )
    monkeypatch.setattr(pycrdt.Doc, "get_update", counting)
    del m["x"]  # the state vector does not move
    with pytest.raises(MalformedUpdateError, match="String content"):
        doc.import_yjs_update(bad)
    assert calls["n"] == 0
    assert doc.list("a").to_py() == [1, 2, 3]


def test_snapshot_flag_round_trip() -> None:
    doc = Doc(peer_id=3)
    doc.text("t").insert(0, "x")
    assert (
        Doc.load(pack(doc.export_yjs_update(), compact=True, snapshot=True)).to_py() == doc.to_py()
    )
    assert FLAG_SNAPSHOT


# --------------------------------------------------------------------------
# One parse for the writer check and the import
# --------------------------------------------------------------------------


def test_new_writers_then_import_parses_once(monkeypatch: pytest.MonkeyPatch) -> None:
    a = Doc(peer_id=11)
    a.text("t").insert(0, "hello")
    b = Doc(peer_id=12)
    b.import_yjs_update(a.export_yjs_update())
    v = b.version
    b.text("t").insert(5, "!")
    update = b.export_yjs_update()  # holds 11's known clocks and 12's new ones
    doc = Doc(peer_id=13)
    doc.import_yjs_update(a.export_yjs_update())
    calls = _count_parses(monkeypatch)
    assert doc.new_writers(update) == [12]
    doc.import_yjs_update(update)
    assert calls["n"] == 1
    assert str(doc.text("t")) == "hello!"
    assert doc.new_writers(b.export_yjs_update(since=v)) == []


def test_index_is_rebuilt_if_a_local_change_does_not_fit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    doc = Doc(peer_id=1)
    other = Doc(peer_id=2)
    for d in (doc, other):
        d.import_yjs_update(b"\x00\x00")  # the indexes start listening
    target = doc._checker  # the checker of the document under test (Rust or Python)
    cls = type(target)
    real = cls.record_local
    failures = {"n": 1}

    def flaky(self: checker_module.Checker, updates: list[bytes], limits: y.UpdateLimits) -> None:
        if self is target and failures["n"]:
            failures["n"] -= 1
            raise MalformedUpdateError("simulated index bug")
        real(self, updates, limits)

    monkeypatch.setattr(cls, "record_local", flaky)
    doc.text("t").insert(0, "abc")
    other.import_yjs_update(doc.export_yjs_update())
    other.text("t").insert(3, "d")
    with caplog.at_level("ERROR", logger="crdtsync.model.doc"):
        doc.import_yjs_update(other.export_yjs_update())
    assert "rebuilding" in caplog.text
    assert failures["n"] == 0
    assert str(doc.text("t")) == "abcd"
    assert doc.contains(doc.export_yjs_update())
