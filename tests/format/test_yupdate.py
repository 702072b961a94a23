"""Tests of crdtsync.format.yupdate: strict v1 parsing, exact re-encoding, validation."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from helpers.traces import CORPUS, CRASHERS, fuzz_module, trace_update
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync.errors import InvalidUpdateError, MalformedUpdateError, UpdateLimitError
from crdtsync.format import yupdate as y

FUZZ_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
ROOT_TYPES = {"m": y.TYPE_MAP, "a": y.TYPE_ARRAY, "t": y.TYPE_TEXT, "x": y.TYPE_XML_FRAGMENT}


def _update(
    structs: list[y.Struct], delete_set: dict[int, list[tuple[int, int]]] | None = None
) -> bytes:
    clients: dict[int, list[y.Struct]] = {}
    for s in structs:
        clients.setdefault(s.client, []).append(s)
    return y.encode_update(y.ParsedUpdate(clients, delete_set or {}))


def _item(client: int, clock: int, kind: int, content: Any, length: int = 1, **kw: Any) -> y.Struct:
    info = kind
    if kw.get("origin") is not None:
        info |= y.HAS_ORIGIN
    if kw.get("right_origin") is not None:
        info |= y.HAS_RIGHT_ORIGIN
    if kw.get("parent_sub") is not None:
        info |= y.HAS_PARENT_SUB
    return y.Struct(client, clock, length, kind, info, content=content, **kw)


def _string(client: int, clock: int, text: str, **kw: Any) -> y.Struct:
    return _item(client, clock, y.CONTENT_STRING, text, len(text.encode("utf-16-le")) // 2, **kw)


def _apply_checked(prior: bytes, data: bytes) -> None:
    """Validates with a document index; if accepted, pycrdt must not panic."""
    index = y.DocIndex(ROOT_TYPES)
    doc = pycrdt.Doc()
    if prior:
        index.record(y.validate_update(prior, index=index))
        doc.apply_update(prior)
    try:
        parsed = y.validate_update(data, index=index)
    except InvalidUpdateError:
        return
    try:
        doc.apply_update(data)
        fuzz_module()._read_back(doc, pycrdt)
    except Exception:  # a clean refusal by pycrdt is acceptable
        return
    except BaseException as exc:  # PanicException
        if type(exc).__name__ == "PanicException":
            pytest.fail(
                f"validated update panicked pycrdt: {exc}; prior={prior.hex()} data={data.hex()}"
            )
        raise
    index.record(parsed)


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


def test_round_trip_simple_documents() -> None:
    doc = pycrdt.Doc(client_id=7)
    doc.get("m", type=pycrdt.Map)["k"] = {"a": [1, 2.5, None, True, b"\x00"], "😀": "é"}
    text = doc.get("t", type=pycrdt.Text)
    text.insert(0, "aé😀b", {"bold": True})
    text.insert_embed(1, {"img": "x"})
    frag = doc.get("x", type=pycrdt.XmlFragment)
    frag.children.append(pycrdt.XmlElement("p", {"a": "b"}, [pycrdt.XmlText("hi")]))
    doc.get("a", type=pycrdt.Array).extend([1, pycrdt.Map({"z": 1}), pycrdt.Text("q")])
    del text[0:1]
    update = doc.get_update()
    parsed = y.parse_update(update)
    assert y.encode_update(parsed) == update
    assert parsed.client_ids() == {7}
    assert y.validate_update(update, root_types=ROOT_TYPES).client_ids() == {7}


def test_string_clock_counts_utf16_units() -> None:
    doc = pycrdt.Doc(client_id=3)
    doc.get("t", type=pycrdt.Text).insert(0, "aé😀b")
    parsed = y.parse_update(doc.get_update())
    [item] = parsed.clients[3]
    assert item.content == "aé😀b"
    assert item.length == 5  # a, é, 2 surrogates, b
    assert parsed.state_vector_after() == {3: 5}
    assert doc.get_state() == bytes([1, 3, 5])


@given(st.randoms(use_true_random=False))
@FUZZ_SETTINGS
def test_round_trip_random_sessions(rng: random.Random) -> None:
    for sample in fuzz_module().random_session(rng):
        for data in (sample.update, sample.prior):
            if not data:
                continue
            parsed = y.parse_update(data)
            assert y.encode_update(parsed) == data
            # pycrdt's own output always passes validation against the state
            # it was produced from.
        index = y.DocIndex(ROOT_TYPES)
        if sample.prior:
            index.record(y.validate_update(sample.prior, index=index))
        try:
            y.validate_update(sample.update, index=index)
        except MalformedUpdateError as exc:
            # Only incremental updates whose prior is not their base may be
            # refused, and then only for missing dependencies.
            message = str(exc)
        else:
            message = "missing"
        assert "missing" in message or "gap" in message, message


def test_round_trip_merged_concurrent_clients() -> None:
    a, b = pycrdt.Doc(client_id=11), pycrdt.Doc(client_id=2**40 + 5)
    a.get("t", type=pycrdt.Text).insert(0, "hello")
    b.apply_update(a.get_update())
    b.get("t", type=pycrdt.Text).insert(5, " world 🌍")
    a.get("t", type=pycrdt.Text).insert(0, ">> ")
    merged = pycrdt.merge_updates(a.get_update(), b.get_update())
    parsed = y.validate_update(merged, root_types={"t": y.TYPE_TEXT})
    assert y.encode_update(parsed) == merged
    assert parsed.client_ids() == {11, 2**40 + 5}


def test_trace_update_round_trip() -> None:
    # Speed is measured by benchmarks/bench_native.py and bench_import.py, not
    # asserted here: machines are shared and noisy.
    update, _ = trace_update("automerge-paper")
    parsed = y.parse_update(update)
    assert y.encode_update(parsed) == update
    y.validate_update(update, index=y.DocIndex({"text": y.TYPE_TEXT}))
    assert parsed.struct_count() > 10_000


# --------------------------------------------------------------------------
# Malformed bytes: each error names the problem and the offset
# --------------------------------------------------------------------------

VALID = _update([_string(5, 0, "hi", parent="t")])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "byte 0: truncated varuint"),
        (VALID[:-1], "truncated varuint (number of delete-set clients)"),
        (VALID[:10], "truncated string"),
        (VALID + b"\x00", "1 trailing bytes"),
        (b"\x80\x00\x00", "non-canonical varuint"),
        (b"\x01\x01\x05\xff\xff\xff\xff\x7f", "overflows 32 bits (clock)"),
        (bytes.fromhex("01 01 05 00 04 01 01 74 02 c3 28 00"), "invalid UTF-8 in string content"),
        (bytes.fromhex("01 01 05 00 08 01 01 74 01 70 00"), "unknown Any tag 112"),
        (bytes.fromhex("01 01 05 00 04 01 01 74 00 00"), "zero-length String item"),
        (bytes.fromhex("01 01 05 00 0b 01 01 74 00 00"), "unknown content ref 11"),
        (bytes.fromhex("01 01 05 00 07 01 01 74 07 00"), "unknown type ref 7"),
        (bytes.fromhex("01 01 05 00 00 00 00"), "zero-length GC"),
        (bytes.fromhex("01 00 05 00 00"), "no struct"),
        (
            bytes.fromhex("02 01 05 00 00 01 01 05 00 00 01 00"),
            "appears twice in the struct section",
        ),
        (bytes.fromhex("00 01 05 02 04 02 00 01"), "unsorted or overlap"),
        (bytes.fromhex("00 01 05 01 00 00"), "empty delete range"),
        (bytes.fromhex("04 01 01 01"), "client blocks announced, more than the bytes left"),
        (bytes.fromhex("01 01 05 00 04 02 01 74 01 61 00"), "parent info flag must be 0 or 1"),
    ],
)
def test_malformed_updates_are_described(data: bytes, message: str) -> None:
    with pytest.raises(MalformedUpdateError, match="byte") as info:
        y.parse_update(data)
    assert message in str(info.value)


def test_limits() -> None:
    deep = bytes.fromhex("01 01 05 00 08 01 01 74 01") + b"\x75\x01" * 70 + b"\x7e" + b"\x00"
    with pytest.raises(UpdateLimitError, match="max_any_depth"):
        y.parse_update(deep)
    y.parse_update(deep, y.UpdateLimits(max_any_depth=80))
    with pytest.raises(UpdateLimitError, match="max_update_bytes"):
        y.parse_update(VALID, y.UpdateLimits(max_update_bytes=4))
    with pytest.raises(UpdateLimitError, match="max_structs"):
        y.parse_update(
            _update([_string(5, 0, "a", parent="t"), _string(5, 1, "b", parent="t")]),
            y.UpdateLimits(max_structs=1),
        )
    with pytest.raises(UpdateLimitError, match="max_key_bytes"):
        y.parse_update(
            _update([_string(5, 0, "a", parent="t" * 100)]), y.UpdateLimits(max_key_bytes=99)
        )
    with pytest.raises(UpdateLimitError, match="max_clock"):
        y.parse_update(_update([_string(5, 2**31 - 2, "ab", parent="t")]))
    with pytest.raises(ValueError, match="max_clock"):
        y.UpdateLimits(max_clock=2**32)


def test_deep_json_in_embed_is_refused_without_recursion() -> None:
    embed = "[" * 100_000 + "]" * 100_000
    data = _update([_item(5, 0, y.CONTENT_EMBED, embed, parent="t")])
    with pytest.raises(UpdateLimitError, match="max_any_depth"):
        y.parse_update(data)


def test_any_values_decode() -> None:
    doc = pycrdt.Doc(client_id=9)
    value = {"a": [1.5, None, True, "é", b"\x01\x02"], "b": {"c": -2.0}}
    doc.get("m", type=pycrdt.Map)["k"] = value
    [item] = y.parse_update(doc.get_update()).clients[9]
    assert isinstance(item.content, y.AnyContent)
    assert item.content.values() == [value]


# --------------------------------------------------------------------------
# The shared corpus and our crasher fixtures are refused before pycrdt
# --------------------------------------------------------------------------


def _corpus_files() -> list[Path]:
    # CI checks out ../shared beside the repository: a missing corpus is a failure.
    files = sorted(CORPUS.glob("*.bin"))
    assert files, f"shared corpus not found at {CORPUS}"
    return files


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: p.name)
def test_shared_corpus_is_rejected(path: Path) -> None:
    with pytest.raises((MalformedUpdateError, UpdateLimitError)):
        y.validate_update(path.read_bytes())


def _crasher_files() -> list[Path]:
    return sorted(p for p in CRASHERS.glob("*.bin") if not p.name.endswith(".prior"))


@pytest.mark.parametrize("path", _crasher_files(), ids=lambda p: p.name)
def test_crasher_fixtures_are_rejected(path: Path) -> None:
    prior_path = path.with_name(path.name[: -len(".bin")] + ".prior")
    index = y.DocIndex(ROOT_TYPES)
    if prior_path.exists():
        index.record(y.validate_update(prior_path.read_bytes(), index=index))
    with pytest.raises((MalformedUpdateError, UpdateLimitError)):
        y.validate_update(path.read_bytes(), index=index)
    # Each is refused on its own too (receiver state known but empty).
    with pytest.raises((MalformedUpdateError, UpdateLimitError)):
        y.validate_update(path.read_bytes(), known_state={})


# --------------------------------------------------------------------------
# Semantic rules (each input below panics, hangs or corrupts pycrdt 0.14.13)
# --------------------------------------------------------------------------


def _base_doc() -> tuple[bytes, y.DocIndex]:
    doc = pycrdt.Doc(client_id=1)
    doc.get("a", type=pycrdt.Array).extend([1.5, 2.5])
    doc.get("t", type=pycrdt.Text).insert(0, "ab")
    doc.get("m", type=pycrdt.Map)["k"] = 1
    base = doc.get_update()
    index = y.DocIndex(ROOT_TYPES)
    index.record(y.validate_update(base, index=index))
    return base, index


def _id_of(base: bytes, root: str) -> tuple[int, int]:
    for s in y.parse_update(base).structs():
        if s.parent == root:
            return (s.client, s.end - 1)
    raise AssertionError(root)


def test_rule_json_content_is_refused() -> None:
    data = _update([_item(5, 0, y.CONTENT_JSON, ("1",), parent="a")])
    y.parse_update(data)
    with pytest.raises(MalformedUpdateError, match="JSON content"):
        y.validate_update(data)


def test_rule_xml_hook_is_refused() -> None:
    # Yjs writes the hook's name, yrs 0.28 reads none: it would parse the name
    # bytes as the next struct.
    data = _update([_item(5, 0, y.CONTENT_TYPE, y.TypeContent(y.TYPE_XML_HOOK, "h"), parent="x")])
    assert y.encode_update(y.parse_update(data)) == data
    with pytest.raises(MalformedUpdateError, match="XmlHook"):
        y.validate_update(data)


def test_rule_same_client_references_point_backwards() -> None:
    for kw in ({"origin": (5, 0)}, {"right_origin": (5, 3)}, {"parent": (5, 0)}):
        data = _update([_string(5, 0, "x", **kw)])
        with pytest.raises(MalformedUpdateError, match="not earlier on its own client"):
            y.validate_update(data)


def test_rule_parent_must_be_a_type() -> None:
    data = _update([_string(5, 0, "x", parent="t"), _string(5, 1, "y", parent=(5, 0))])
    with pytest.raises(MalformedUpdateError, match="not a type"):
        y.validate_update(data)


def test_rule_multibyte_string_in_array_is_refused() -> None:
    # Reading such an array loops forever in pycrdt 0.14.13.
    base, index = _base_doc()
    data = _update([_string(2, 0, "é😀", origin=_id_of(base, "a"))])
    y.validate_update(data)  # without an index this cannot be seen...
    with pytest.raises(MalformedUpdateError, match="String content in a container holding values"):
        y.validate_update(data, index=index)  # ...with it, it is


def test_rule_values_in_text_are_refused() -> None:
    # The next local delete of that text panics ("Couldn't remove ...").
    base, index = _base_doc()
    data = _update([_item(2, 0, y.CONTENT_ANY, y.AnyContent(1, b"\x7e"), origin=_id_of(base, "t"))])
    with pytest.raises(MalformedUpdateError, match="Any content in a container holding text"):
        y.validate_update(data, index=index)


def test_rule_root_types_and_mixed_content() -> None:
    data = _update([_string(5, 0, "x", parent="a")])
    with pytest.raises(MalformedUpdateError, match="holding values"):
        y.validate_update(data, root_types=ROOT_TYPES)
    mixed = _update(
        [
            _string(5, 0, "x", parent="r"),
            _item(5, 1, y.CONTENT_ANY, y.AnyContent(1, b"\x7e"), parent="r"),
        ]
    )
    with pytest.raises(MalformedUpdateError, match="holding text"):
        y.validate_update(mixed)
    with pytest.raises(MalformedUpdateError, match="map entry"):
        y.validate_update(_update([_string(5, 0, "x", parent="m", parent_sub="k")]))


def test_rule_gaps_and_missing_dependencies() -> None:
    _, index = _base_doc()
    gap = _update([_string(2, 5, "x", parent="t")])
    y.validate_update(gap)  # nothing known about the receiver
    with pytest.raises(y.MissingUpdatesError, match="missing updates"):
        y.validate_update(gap, index=index)
    with pytest.raises(y.MissingUpdatesError, match="missing updates") as info:
        y.validate_update(gap, known_state={2: 0})
    assert (info.value.client, info.value.clock) == (2, 0)
    missing = _update([_string(2, 0, "x", origin=(99, 3))])
    with pytest.raises(y.MissingUpdatesError, match="missing updates") as info:
        y.validate_update(missing, index=index)
    assert (info.value.client, info.value.clock) == (99, 3)


def test_out_of_order_delivery_is_refused_until_the_gap_is_filled() -> None:
    # pycrdt 0.14.13 integrates an update past a gap and diverges for good
    # (e.g. "YbcdQef" becomes "Ybcdef"): such updates must wait.
    a = pycrdt.Doc(client_id=1)
    text = a.get("t", type=pycrdt.Text)
    ups: list[bytes] = []
    sub = a.observe(lambda event: ups.append(event.update))
    text.insert(0, "abc")
    text.insert(3, "def")
    text.insert(1, "XY")
    del text[0:2]
    text.insert(4, "Q")
    a.unobserve(sub)
    b = pycrdt.Doc(client_id=2)
    index = y.DocIndex({"t": y.TYPE_TEXT})
    waiting = [ups[i] for i in (0, 2, 3, 4, 1)]
    missing_client = None
    while waiting:
        for u in list(waiting):
            try:
                parsed = y.validate_update(u, index=index)
            except y.MissingUpdatesError as exc:
                missing_client = exc.client
                continue
            b.apply_update(u)
            index.record(parsed)
            waiting.remove(u)
    assert missing_client == 1
    assert str(b.get("t", type=pycrdt.Text)) == str(text) == "YbcdQef"


def test_index_tracks_documents_across_updates() -> None:
    """The receiver validates remote diffs against its index and records its own edits."""
    a = pycrdt.Doc(client_id=1)  # the receiver, with an index
    b = pycrdt.Doc(client_id=2)
    index = y.DocIndex({"t": y.TYPE_TEXT, "m": y.TYPE_MAP})
    local: list[bytes] = []
    sub = a.observe(lambda event: local.append(event.update))
    for i in range(30):
        if i % 4 == 0:
            a.get("t", type=pycrdt.Text).insert(0, f"{i}é😀")
            index.record(y.parse_update(local.pop()))
        elif i % 3:
            b.get("t", type=pycrdt.Text).insert(0, f"{i}é😀")
        else:
            b.get("m", type=pycrdt.Map)[f"k{i}"] = pycrdt.Text("x")
        b.apply_update(a.get_update(b.get_state()))
        diff = b.get_update(a.get_state())
        parsed = y.validate_update(diff, index=index)
        a.apply_update(diff)
        local.clear()
        index.record(parsed)
    a.unobserve(sub)
    assert index.state == y.parse_update(a.get_update()).state_vector_after()
    assert str(a.get("t", type=pycrdt.Text)) == str(b.get("t", type=pycrdt.Text))


# --------------------------------------------------------------------------
# Deletions and garbage collection: the index follows yrs
# --------------------------------------------------------------------------

_ANY_5 = y.AnyContent(1, b"\x7d\x05")


def _sv_bytes(state: dict[int, int]) -> bytes:
    out = bytearray(y._varuint_bytes(len(state)))
    for client, clock in state.items():
        out += y._varuint_bytes(client) + y._varuint_bytes(clock)
    return bytes(out)


class _Tracked:
    """A gc'ing pycrdt document and its index, kept the way crdtsync.Doc keeps them."""

    def __init__(self) -> None:
        self.doc = pycrdt.Doc(client_id=1)
        self.index = y.DocIndex(ROOT_TYPES)

    def sync(self) -> None:
        # Even when the state vector has not moved: local deletions do not move it.
        self.index.record_diff(self.doc.get_update(_sv_bytes(self.index.state)))

    def validate(self, data: bytes) -> y.ParsedUpdate:
        self.sync()
        return y.validate_update(data, index=self.index)

    def apply(self, data: bytes) -> None:
        parsed = self.validate(data)
        self.doc.apply_update(data)
        self.index.record(parsed)
        fuzz_module()._read_back(self.doc, pycrdt)


def _text_in_map_and_array() -> tuple[_Tracked, Any]:
    t = _Tracked()
    t.doc.get("a", type=pycrdt.Array).extend([1, 2, 3])  # 1:0..2
    m = t.doc.get("m", type=pycrdt.Map)
    m["x"] = pycrdt.Text("hello")  # type 1:3, text 1:4..8
    t.sync()
    return t, m


# A String whose origin is 'h' (GC'd once the text is deleted) and whose right
# origin is in the Array: yrs puts it into the Array (reading then loops forever).
_VIA_GC_ORIGIN = _update([_string(9, 0, "ééé", origin=(1, 4), right_origin=(1, 1))])


def test_local_deletion_without_state_change_is_seen() -> None:
    t, m = _text_in_map_and_array()
    # Before the deletion, neighbours in two containers are refused outright.
    with pytest.raises(MalformedUpdateError, match="in another container"):
        y.validate_update(_VIA_GC_ORIGIN, index=t.index)
    del m["x"]  # the state vector does not move
    with pytest.raises(MalformedUpdateError, match="String content in a container holding values"):
        t.validate(_VIA_GC_ORIGIN)
    # Concurrent typing into the deleted text stays acceptable (yrs makes it GC).
    t.apply(_update([_string(9, 0, "zz", origin=(1, 8))]))
    t.apply(_update([_string(9, 2, "zz", origin=(1, 5), right_origin=(1, 6))]))
    assert t.doc.get("a", type=pycrdt.Array).to_py() == [1, 2, 3]


def test_remote_deletion_of_a_type_is_seen() -> None:
    t, _ = _text_in_map_and_array()
    t.apply(_update([], {1: [(3, 6)]}))
    with pytest.raises(MalformedUpdateError, match="String content"):
        t.validate(_VIA_GC_ORIGIN)
    # Any content would take the same path into the Array, where it fits; but
    # its origin is GC'd and its right origin in a list: neighbours in two
    # lists, which no honest writer has (S12; yrs would place it from the
    # right origin alone, and the document's export would break S9).
    with pytest.raises(MalformedUpdateError, match="garbage-collected"):
        t.validate(
            _update([_item(9, 0, y.CONTENT_ANY, _ANY_5, origin=(1, 4), right_origin=(1, 1))])
        )


def test_items_turned_into_gc_are_followed() -> None:
    t, m = _text_in_map_and_array()
    del m["x"]
    # Both neighbours GC'd: yrs turns the item into GC, and so does an item
    # whose explicit parent is the deleted type.
    t.apply(_update([_string(9, 0, "é", origin=(1, 4), right_origin=(1, 6))]))
    t.apply(_update([_string(9, 1, "é", parent=(1, 3))]))
    for origin in ((9, 0), (9, 1)):
        with pytest.raises(MalformedUpdateError, match="String content"):
            t.validate(_update([_string(9, 2, "ééé", origin=origin, right_origin=(1, 1))]))


def test_nested_types_inside_a_deleted_type_are_gc() -> None:
    t = _Tracked()
    t.doc.get("a", type=pycrdt.Array).extend([1, 2, 3])  # 1:0..2
    m = t.doc.get("m", type=pycrdt.Map)
    m["o"] = pycrdt.Map({"tx": pycrdt.Text("hey")})  # map 1:3, text 1:4, "hey" 1:5..7
    t.sync()
    del m["o"]
    with pytest.raises(MalformedUpdateError, match="String content"):
        t.validate(_update([_string(9, 0, "ééé", origin=(1, 5), right_origin=(1, 1))]))
    # the nested text is GC: a child naming it as parent becomes GC too
    t.apply(_update([_item(9, 0, y.CONTENT_ANY, _ANY_5, parent=(1, 4))]))
    assert m.to_py() == {}


def test_deletions_that_arrive_before_their_items() -> None:
    t, _ = _text_in_map_and_array()
    t.apply(_update([], {9: [(0, 1)]}))  # yrs keeps it pending
    text = _item(9, 0, y.CONTENT_TYPE, y.TypeContent(y.TYPE_TEXT, None), parent="m", parent_sub="z")
    t.apply(_update([text, _string(9, 1, "ab", parent=(9, 0))]))
    assert t.doc.get("m", type=pycrdt.Map).to_py() == {"x": "hello"}
    with pytest.raises(MalformedUpdateError, match="String content"):
        t.validate(_update([_string(9, 3, "ééé", origin=(9, 2), right_origin=(1, 1))]))


def test_implicit_deletion_by_a_concurrent_map_write() -> None:
    """yrs deletes the losing value of a map key itself: the next diff carries it."""
    t, _ = _text_in_map_and_array()
    arr = _item(9, 0, y.CONTENT_TYPE, y.TypeContent(y.TYPE_ARRAY, None), parent="m", parent_sub="x")
    t.apply(_update([arr]))
    assert t.doc.get("m", type=pycrdt.Map).to_py() == {"x": []}
    with pytest.raises(MalformedUpdateError, match="String content"):
        t.validate(_update([_string(9, 1, "ééé", origin=(1, 5), right_origin=(1, 1))]))


def test_record_diff_is_cheap_when_nothing_changed() -> None:
    t, m = _text_in_map_and_array()
    diff = t.doc.get_update(_sv_bytes(t.index.state))
    t.index.record_diff(diff)
    assert t.index._last_diff == diff
    del m["x"]
    t.sync()
    assert t.index._last_diff != diff
    hit = t.index.lookup(1, 4)
    assert hit is not None
    assert hit[1].where is None  # GC now


def test_tail_of_an_overlapping_struct_keeps_its_explicit_parent() -> None:
    prior = _update([_string(9, 0, "abc", parent="t")])
    index = y.DocIndex(ROOT_TYPES)
    index.record(y.validate_update(prior, index=index))
    with pytest.raises(MalformedUpdateError, match="in another container"):
        y.validate_update(_update([_string(9, 0, "abcéé", parent="a")]), index=index)
    any_tail = _item(9, 2, y.CONTENT_ANY, y.AnyContent(2, b"\x7d\x05\x7d\x06"), 2, parent="a")
    with pytest.raises(MalformedUpdateError, match="in another container"):
        y.validate_update(_update([any_tail]), index=index)
    y.validate_update(_update([_string(9, 0, "abcéé", parent="t")]), index=index)


def test_long_chains_inside_one_update_do_not_recurse() -> None:
    n = 5000
    structs = [_item(9, 0, y.CONTENT_TYPE, y.TypeContent(y.TYPE_ARRAY, None), parent="a")]
    structs += [
        _item(9, i, y.CONTENT_TYPE, y.TypeContent(y.TYPE_ARRAY, None), parent=(9, i - 1))
        for i in range(1, n)
    ]
    structs.append(_string(9, n, "x", parent=(9, n - 1)))
    with pytest.raises(MalformedUpdateError, match="String content"):
        y.validate_update(_update(structs), index=y.DocIndex(ROOT_TYPES))


# --------------------------------------------------------------------------
# Fuzz: our errors only, and nothing accepted panics pycrdt
# --------------------------------------------------------------------------


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes(data: bytes) -> None:
    try:
        y.validate_update(data)
    except InvalidUpdateError:
        return
    _apply_checked(b"", data)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    rng = draw(st.randoms(use_true_random=False))
    fz = fuzz_module()
    samples = fz.random_session(rng, rng.randint(1, 12))
    sample = rng.choice(samples)
    if rng.random() < 0.5:
        out = fz.mutate_struct(rng, sample.update, sample.prior)
        if out is not None:
            return sample.prior, out
    return sample.prior, fz.mutate_bytes(rng, sample.update, rng.choice(samples).update)


@given(_mutated())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_updates_never_panic_after_validation(case: tuple[bytes, bytes]) -> None:
    prior, data = case
    try:
        parsed = y.parse_update(data)
    except InvalidUpdateError:
        pass
    else:
        assert y.encode_update(parsed) == data
    _apply_checked(prior, data)


def test_rule_surrogate_pairs_are_never_split() -> None:
    # S7 (found by the relay's socket fuzzer): a String holding characters
    # outside the BMP, then references and deletions at every clock of it.
    # Splitting between the two UTF-16 units of a character makes yrs split
    # the string elsewhere: it deletes the wrong character, and the
    # document's own export is broken (a self-referencing origin, or a
    # zero-length String).
    text = "😀Åbé\x93😀"  # clocks: 😀 0-1, Å 2, b 3, é 4, \x93 5, 😀 6-7
    inside = {1, 7}  # a split before these clocks falls inside a pair
    prior = _update([_string(7, 0, text, parent="t")])
    index = y.DocIndex(ROOT_TYPES)
    index.record(y.validate_update(prior, index=index))
    assert index.pair_splits == {7: [1, 7]}
    for clock in range(8):
        # an origin at `clock` splits before clock + 1, a right origin before clock
        # (with the origin a writer holding it must have used: the clock before,
        # S9, and that splits at the same place)
        before = {"origin": (7, clock - 1)} if clock else {}
        for kw, split in (
            ({"origin": (7, clock)}, clock + 1),
            ({"right_origin": (7, clock), **before}, clock),
        ):
            data = _update([_string(8, 0, "z", **kw)])
            if split in inside:
                with pytest.raises(MalformedUpdateError, match="inside a surrogate pair"):
                    y.validate_update(data, index=index)
                # in the same update as the String: refused without an index too
                own = _update([_string(7, 0, text, parent="t"), _string(8, 0, "z", **kw)])
                with pytest.raises(MalformedUpdateError, match="inside a surrogate pair"):
                    y.validate_update(own)
            else:
                y.validate_update(data, index=index)
        for length in range(1, 9 - clock):
            data = _update([], {7: [(clock, length)]})
            if clock in inside or clock + length in inside:
                with pytest.raises(MalformedUpdateError, match="splits a surrogate pair"):
                    y.validate_update(data, index=index)
            else:
                y.validate_update(data, index=index)
    # A struct overlapping the known clocks is cut at the known clock: not inside a pair.
    head = _update([_string(9, 0, "a😀", parent="t")])
    index.record(y.validate_update(head, index=index))
    ok = _update([_string(9, 0, "a😀b", parent="t")])
    y.validate_update(ok, index=index)
    index2 = y.DocIndex(ROOT_TYPES)
    index2.record(y.validate_update(_update([_string(9, 0, "a", parent="t")]), index=index2))
    y.validate_update(_update([_string(9, 0, "a😀", parent="t")]), index=index2)
    # known state 2 would cut "😀b" (clocks 0-2) between its units
    cut = _update([_string(10, 0, "😀b", parent="t")])
    with pytest.raises(MalformedUpdateError, match="inside a surrogate pair"):
        y.validate_update(cut, known_state={10: 1})


def test_surrogate_pair_splits_survive_a_document_round_trip() -> None:
    # Through the public API: the relay's case. A room holding emoji refuses
    # the deletion of half of one and stays exportable and editable.
    from crdtsync import Doc

    room = Doc(peer_id=7)
    room.text("body").insert(0, "x😀y")  # the text starts at clock 1 (clock 0: the roots map)
    before = room.export_yjs_update()
    bad = _update([], {7: [(3, 1)]})  # the second unit of 😀
    with pytest.raises(MalformedUpdateError):
        room.import_yjs_update(bad)
    assert room.export_yjs_update() == before
    fresh = Doc()
    fresh.import_yjs_update(room.export_yjs_update())
    del fresh.text("body")[1]
    assert str(fresh.text("body")) == "xy"


def test_rule_every_reference_must_be_known() -> None:
    # S5 for references that do not decide the container (found by the 1M-input
    # fuzz run): a known origin and a right origin of a client nobody has.
    base, index = _base_doc()
    data = _update([_string(2, 0, "z", origin=_id_of(base, "t"), right_origin=(999, 5))])
    with pytest.raises(y.MissingUpdatesError) as info:
        y.validate_update(data, index=index)
    assert (info.value.client, info.value.clock) == (999, 5)
    y.validate_update(data)  # without a receiving state it cannot be judged
    # A right origin inside the same update is fine.
    ok = _update(
        [
            _string(3, 0, "q", origin=_id_of(base, "t")),
            _string(2, 0, "z", origin=_id_of(base, "t"), right_origin=(3, 0)),
        ]
    )
    y.validate_update(ok, index=index)
