"""The document model as a new user meets it: API, exact values, text, counters, registers."""

from __future__ import annotations

import math
from typing import Any

import pytest

from crdtsync import (
    Counter,
    CrdtSyncError,
    Doc,
    InvalidOperationError,
    InvalidValueError,
    List,
    MalformedUpdateError,
    Map,
    Register,
    RootTypeError,
    Text,
    Version,
)


def sync(*docs: Doc) -> None:
    """Exchange everything between all pairs."""
    for a in docs:
        for b in docs:
            if a is not b:
                b.import_update(a.export_update(since=b.version))


def test_issue_walkthrough() -> None:
    a = Doc()
    todos = a.list("todos")
    todos.append({"title": "milk", "done": False, "qty": 2})
    todos[0]["done"] = True
    body = a.text("body")
    body.insert(0, "héllo 😀")
    body.delete(0, 1)
    likes = a.counter("likes")
    likes.increment(5)
    likes.decrement(2)
    assert likes.value == 3
    status = a.register("status")
    status.set("draft")
    assert status.value == "draft"
    assert status.conflicts == ["draft"]
    settings = a.map("settings")
    settings["size"] = 2**70
    settings["blob"] = b"\x00\x01"
    settings["views"] = Counter()

    b = Doc()
    b.import_update(a.export_update())
    a.import_update(b.export_update(since=a.version))
    assert a.to_py() == b.to_py()
    assert b.to_py() == {
        "body": "éllo 😀",
        "likes": 3,
        "settings": {"blob": b"\x00\x01", "size": 2**70, "views": 0},
        "status": "draft",
        "todos": [{"done": True, "qty": 2, "title": "milk"}],
    }
    c = Doc.load(a.save())
    assert c.to_py() == a.to_py()
    assert c.version == a.version


def test_doc_peer_id() -> None:
    assert Doc(peer_id=42).peer_id == 42
    assert Doc().peer_id != Doc().peer_id
    for bad in (0, -1, 2**53, "x", 1.0):
        with pytest.raises(InvalidOperationError):
            Doc(peer_id=bad)  # type: ignore[arg-type]


EXACT_VALUES = [
    0,
    1,
    -1,
    2**53,
    2**53 + 1,
    -(2**53) - 1,
    2**63,
    2**70,
    -(2**200),
    0.5,
    1.0,
    -0.0,
    0.0,
    1e300,
    float("inf"),
    float("-inf"),
    2.0**60,
    True,
    False,
    None,
    "",
    "text with ünïcødé 😀 and \x00 NUL",
    b"",
    b"\x00\x01\xff",
    [1, 2.0, "3", None, [True]],
    {"a": 1, "$": "not a tag", "v": 2},
    {"$": "i", "v": "12"},
    {"nested": {"deep": [1, {"x": 1.5}]}},
]


@pytest.mark.parametrize("value", EXACT_VALUES, ids=repr)
def test_exact_values_round_trip(value: object) -> None:
    a = Doc()
    a.map("m")["k"] = value
    a.list("l").append(value)
    a.register("r").set(value)
    for doc in (a, Doc.load(a.save()), Doc.load(a.export_update())):
        for stored in (doc.map("m")["k"], doc.list("l")[0], doc.register("r").value):
            got = stored.to_py() if hasattr(stored, "to_py") else stored
            assert got == value
            assert _types(got) == _types(value)
            if isinstance(value, float) and value == 0.0:
                assert math.copysign(1, got) == math.copysign(1, value)


def _types(v: object) -> object:
    if isinstance(v, dict):
        return {k: _types(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_types(x) for x in v]
    return type(v)


@pytest.mark.parametrize(
    "value",
    [{1, 2}, (1, 2), bytearray(b"x"), object(), float("nan"), {1: "x"}, [float("nan")], complex(1)],
    ids=repr,
)
def test_unsupported_values_refused_before_writing(value: object) -> None:
    doc = Doc()
    m = doc.map("m")
    m["ok"] = 1
    before = (doc.to_py(), doc.version)
    with pytest.raises(InvalidValueError):
        m["bad"] = value
    with pytest.raises(InvalidValueError):
        doc.list("l").append({"fine": 1, "bad": value})
    with pytest.raises(InvalidValueError):
        doc.register("r").set(value)
    assert (doc.to_py(), doc.version) == before
    assert isinstance(InvalidValueError("x"), CrdtSyncError)


def test_too_deep_values_refused() -> None:
    v: object = 1
    for _ in range(100):
        v = [v]
    doc = Doc()
    with pytest.raises(InvalidValueError):
        doc.map("m")["deep"] = v
    with pytest.raises(InvalidValueError):
        doc.register("r").set(v)
    assert doc.to_py() == {}


def test_reserved_keys_and_names() -> None:
    doc = Doc()
    with pytest.raises(InvalidValueError):
        doc.map("m")["\x00k"] = 1
    with pytest.raises(InvalidValueError):
        doc.map("m")[1] = 1  # type: ignore[index]
    with pytest.raises(InvalidOperationError):
        doc.map("__crdtsync_roots")
    with pytest.raises(InvalidOperationError):
        doc.map(1)  # type: ignore[arg-type]
    doc.map("")["k"] = 1  # Yjs allows an empty root name, and so do we
    assert doc.to_py()[""] == {"k": 1}
    assert Doc.load(doc.save()).to_py() == doc.to_py()


def test_map_api() -> None:
    doc = Doc()
    m = doc.map("m")
    m.update({"b": 2, "a": 1}, c=3)
    assert len(m) == 3
    assert list(m) == ["a", "b", "c"]
    assert m.keys() == ["a", "b", "c"]
    assert m.values() == [1, 2, 3]
    assert m.items() == [("a", 1), ("b", 2), ("c", 3)]
    assert "a" in m
    assert "z" not in m
    assert m.get("z", 9) == 9
    assert m.pop("a") == 1
    assert m.pop("a", None) is None
    with pytest.raises(KeyError):
        m.pop("a")
    with pytest.raises(KeyError):
        del m["nope"]
    with pytest.raises(KeyError):
        m["nope"]
    assert m.setdefault("d", [1]).to_py() == [1]
    m["n"] = {"x": {"y": 1}}
    m["n"]["x"]["y"] = 2
    assert m.to_py() == {"b": 2, "c": 3, "d": [1], "n": {"x": {"y": 2}}}
    assert "'n'" in repr(m)
    m.clear()
    assert m.to_py() == {}
    # once written, a root stays in the document, even when emptied
    assert doc.to_py() == {"m": {}}


def test_list_api() -> None:
    doc = Doc()
    lst = doc.list("l")
    lst.extend([1, 2, 3])
    lst.insert(0, 0)
    lst.insert(100, 4)  # clamped like list.insert
    lst.insert(-1, 3.5)
    assert lst.to_py() == [0, 1, 2, 3, 3.5, 4]
    assert lst[-1] == 4
    assert lst[1:3] == [1, 2]
    assert lst[::2] == [0, 2, 3.5]
    lst[0] = "zero"
    assert lst[0] == "zero"
    del lst[0]
    del lst[0:2]
    assert lst.to_py() == [3, 3.5, 4]
    assert lst.pop() == 4
    assert lst.pop(0) == 3
    assert 3.5 in lst
    assert 3 not in lst
    lst.append({"k": "v"})
    assert lst.index({"k": "v"}) == 1
    assert lst.count(3.5) == 1
    lst.remove(3.5)
    assert len(lst) == 1
    with pytest.raises(IndexError):
        lst[5]
    with pytest.raises(IndexError):
        lst[5] = 1
    with pytest.raises(IndexError):
        del lst[5]
    with pytest.raises(IndexError):
        lst.pop(7)
    # 1 is not 1.0 and not True: exact types make them different values
    lst.clear()
    lst.append(1)
    assert True not in lst
    assert 1.0 not in lst
    assert list(lst) == [1]
    assert "1" in repr(lst)


def test_nested_containers_by_value_stay_live() -> None:
    doc = Doc()
    m = doc.map("m")
    c = Counter(5)
    m["c"] = c
    c.increment(2)  # the object assigned now edits the stored counter
    assert m["c"].value == 7
    t = Text("hi")
    m["t"] = t
    t += " there"
    r = Register("a")
    m["r"] = r
    r.set("b")
    inner = Map({"x": 1})
    lst = List([1, Text("in list")])
    m["inner"] = inner
    m["lst"] = lst
    inner["y"] = 2
    lst[1].insert(0, ">")
    assert doc.to_py() == {
        "m": {
            "c": 7,
            "inner": {"x": 1, "y": 2},
            "lst": [1, ">in list"],
            "r": "b",
            "t": "hi there",
        }
    }
    assert isinstance(m["c"], Counter)
    assert isinstance(m["t"], Text)
    assert isinstance(m["r"], Register)
    with pytest.raises(InvalidValueError):
        m["again"] = c  # already in a document
    other = Doc()
    other.import_update(doc.export_update())
    assert other.to_py() == doc.to_py()


def test_detached_containers() -> None:
    c = Counter(3)
    assert c.value == 3
    assert not c.attached
    with pytest.raises(InvalidOperationError):
        c.increment()
    assert Text("x").to_py() == "x"
    assert len(Text("héllo")) == 5
    assert Register().value is None
    assert Register(2).conflicts == [2]
    assert "detached" in repr(Map({"a": 1}))
    with pytest.raises(InvalidValueError):
        Counter(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        Register({1})


@pytest.mark.parametrize(
    "content",
    [
        "plain ascii",
        "héllo wörld",
        "日本語のテキスト",
        "emoji 😀👍🏽 mix",
        "a😀b",
        "\U0010ffff\U00010000 edge",
    ],
)
def test_text_indexes_are_code_points(content: str) -> None:
    doc = Doc()
    t = doc.text("t")
    model = ""
    t.insert(0, content)
    model = content
    assert len(t) == len(model)
    for i in range(len(model) + 1):
        t.insert(i, "é")
        model = model[:i] + "é" + model[i:]
        assert str(t) == model
        t.delete(i, 1)
        model = model[:i] + model[i + 1 :]
        assert str(t) == model
    t.insert(len(model), "😀")
    model += "😀"
    t.delete(0, 2)
    model = model[2:]
    assert str(t) == model
    assert len(t) == len(model)
    assert t[0] == model[0]
    assert t[1:3] == model[1:3]
    assert t == model
    other = Doc()
    other.import_update(doc.export_update())
    assert str(other.text("t")) == model
    assert len(other.text("t")) == len(model)


def test_text_api() -> None:
    doc = Doc()
    t = doc.text("t")
    t += "hello"
    t.append(" world")
    t.insert(-5, "big ")
    assert str(t) == "hello big world"
    del t[0]
    del t[0:5]
    assert str(t) == "big world"
    t[0] = "B"
    t[4:9] = "World!"
    assert str(t) == "Big World!"
    assert "World" in t
    assert list(t)[:3] == ["B", "i", "g"]
    with pytest.raises(IndexError):
        t.insert(100, "x")
    with pytest.raises(IndexError):
        t.delete(5, 100)
    with pytest.raises(IndexError):
        del t[100]
    with pytest.raises(InvalidValueError):
        t.insert(0, 5)  # type: ignore[arg-type]
    t.clear()
    assert str(t) == ""
    assert repr(Doc().text("x")) == "<Text ''>"


def test_text_cache_follows_remote_edits() -> None:
    a, b = Doc(), Doc()
    ta, tb = a.text("t"), b.text("t")
    ta.insert(0, "abc")
    sync(a, b)
    tb.insert(0, "😀")  # b becomes non-ASCII; a's cache still says ASCII
    sync(a, b)
    ta.insert(1, "x")  # must be after the emoji, in code points
    sync(a, b)
    assert str(ta) == str(tb) == "😀xabc"
    tb.delete(0, 1)
    sync(a, b)
    ta.insert(1, "y")
    sync(a, b)
    assert str(ta) == str(tb) == "xyabc"


def test_counter_adds_across_replicas() -> None:
    a, b, c = Doc(), Doc(), Doc()
    # all access the same root before ever syncing: no increment is lost
    a.counter("likes").increment(5)
    b.counter("likes").decrement(2)
    c.counter("likes").increment(2**70)
    cc = c.counter("likes")
    cc += 1
    cc -= 2
    sync(a, b, c)
    for d in (a, b, c):
        assert d.counter("likes").value == 5 - 2 + 2**70 - 1
        assert type(d.counter("likes").value) is int
    assert int(a.counter("likes")) == a.counter("likes").value
    assert a.counter("likes") == 5 - 2 + 2**70 - 1
    assert sum(a.counter("likes").contributions().values()) == a.counter("likes").value
    with pytest.raises(InvalidValueError):
        a.counter("likes").increment(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        a.counter("likes").increment(True)


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_register_last_writer_by_hlc_and_conflicts() -> None:
    ca, cb = FakeClock(1000.0), FakeClock(1000.0)
    a, b = Doc(peer_id=1, clock=ca), Doc(peer_id=2, clock=cb)
    a.register("r").set("a1")
    cb.t = 1001.0
    b.register("r").set("b1")  # concurrent, later wall clock
    sync(a, b)
    for d in (a, b):
        assert d.register("r").value == "b1"
        assert d.register("r").conflicts == ["b1", "a1"]
    # a write that has seen both resolves the conflict, even with a clock behind
    ca.t = 500.0
    a.register("r").set("a2")
    sync(a, b)
    for d in (a, b):
        assert d.register("r").value == "a2"
        assert d.register("r").conflicts == ["a2"]
    ts = a.register("r").timestamp
    assert ts is not None
    assert ts[:2] > (1001000, 0)  # time never goes backwards
    assert ts[2] == 1


def test_register_ties_broken_by_peer() -> None:
    clock = FakeClock(5.0)
    a, b = Doc(peer_id=10, clock=clock), Doc(peer_id=20, clock=clock)
    a.register("r").set("from a")
    b.register("r").set("from b")
    sync(a, b)
    assert a.register("r").value == b.register("r").value == "from b"
    assert a.register("r").conflicts == ["from b", "from a"]


def test_root_type_conflicts() -> None:
    doc = Doc()
    doc.map("x")
    with pytest.raises(RootTypeError):
        doc.list("x")
    doc.counter("c").increment()
    other = Doc()
    other.import_update(doc.export_update())
    with pytest.raises(RootTypeError):
        other.map("c")  # known from the replicated registry
    with pytest.raises(RootTypeError):
        other.text("c")
    assert other["c"].value == 1
    assert "c" in other
    assert list(other) == ["c"]
    with pytest.raises(KeyError):
        other["nope"]


def test_merely_accessed_roots_do_not_change_anything() -> None:
    a, b = Doc(), Doc()
    a.map("shared")["k"] = 1
    sync(a, b)
    v = b.version
    b.text("looked-at")
    b.counter("peeked")
    b.register("glanced")
    assert b.version == v
    assert a.to_py() == b.to_py() == {"shared": {"k": 1}}


def test_transaction_one_update_one_event() -> None:
    doc = Doc()
    events = []
    updates = []
    unsubscribe = doc.observe(events.append)
    doc.observe_updates(lambda u, o, local: updates.append((u, o, local)))
    with doc.transaction(origin="bulk"):
        doc.map("m")["a"] = 1
        doc.list("l").append(1)
        doc.text("t").insert(0, "x")
        doc.counter("c").increment()
    assert len(events) == 1
    assert len(updates) == 1
    ev = events[0]
    assert ev.origin == "bulk"
    assert ev.local
    assert {c.path for c in ev.changes} >= {("m",), ("l",), ("t",), ("c",)}
    other = Doc()
    other.import_yjs_update(updates[0][0])
    assert other.to_py() == doc.to_py()
    unsubscribe()
    doc.map("m")["b"] = 2
    assert len(events) == 1


def test_observe_paths_and_remote_origin() -> None:
    a, b = Doc(), Doc()
    a.map("m")["inner"] = {"list": [1], "t": Text("héllo")}
    sync(a, b)
    events = []
    b.observe(events.append)
    a.map("m")["inner"]["list"].append(2)
    a.map("m")["inner"]["t"].insert(5, "!")
    b.import_update(a.export_update(since=b.version), origin="peer-a")
    assert len(events) == 1
    ev = events[0]
    assert ev.origin == "peer-a"
    assert not ev.local
    by_path = {c.path: c for c in ev.changes}
    assert by_path[("m", "inner", "list")].delta == [{"retain": 1}, {"insert": [2]}]
    # the text delta is in code points: "héllo" is 5 of them (6 bytes)
    assert by_path[("m", "inner", "t")].kind == "text"
    b.map("m")["inner"]["t"].insert(0, "é")
    assert events[-1].local
    assert events[-1].changes[0].delta == [{"insert": "é"}]
    b.map("m")["inner"]["t"].delete(1, 2)
    assert events[-1].changes[0].delta == [{"retain": 1}, {"delete": 2}]


def test_observer_sees_new_remote_roots_and_may_edit() -> None:
    a, b = Doc(), Doc()
    seen = []

    def on_change(ev: object) -> None:
        seen.append(ev)
        if b.counter("reactions").value == 0:
            b.counter("reactions").increment()  # editing from a callback is allowed

    b.observe(on_change)
    a.text("fresh").insert(0, "new root")
    b.import_update(a.export_update())
    assert b.to_py() == {"fresh": "new root", "reactions": 1}
    assert len(seen) == 2


def test_export_since_sends_only_the_difference() -> None:
    a = Doc()
    a.text("t").insert(0, "x" * 10_000)
    b = Doc()
    b.import_update(a.export_update())
    a.text("t").insert(0, "y")
    small = a.export_update(since=b.version)
    assert len(small) < 100
    b.import_update(small)
    assert str(b.text("t")) == str(a.text("t"))


def test_version_type() -> None:
    a = Doc()
    v0 = a.version
    a.map("m")["x"] = 1
    v1 = a.version
    assert v0 < v1
    assert v1 >= v0
    assert not v1.concurrent(v0)
    assert Version.from_bytes(v1.to_bytes()) == v1
    assert hash(Version.from_bytes(v1.to_bytes())) == hash(v1)
    b = Doc()
    b.map("n")["y"] = 1
    assert b.version.concurrent(v1)
    assert v1.merge(b.version) >= v1
    assert "Version(" in repr(v1)


def test_causal_gaps_are_buffered() -> None:
    a, b = Doc(), Doc()
    a.text("t").insert(0, "one ")
    u1 = a.export_update()
    v1 = a.version
    a.text("t").insert(4, "two")
    u2 = a.export_update(since=v1)
    b.import_update(u2)  # depends on u1, which has not arrived
    assert b.to_py() in ({}, {"t": ""})
    b.import_update(u1)
    assert b.to_py() == a.to_py() == {"t": "one two"}


def test_early_updates_are_held_saved_and_released() -> None:
    a = Doc()
    a.text("t").insert(0, "one ")
    u1 = a.export_update()
    v1 = a.version
    a.text("t").insert(4, "two")
    u2 = a.export_update(since=v1)
    b = Doc()
    b.import_update(u2)
    assert b.pending == 1
    assert b.to_py() == {}
    # saving keeps the held update; loading keeps holding it
    c = Doc.load(b.save())
    assert c.pending == 1
    c.import_update(u1)
    assert c.pending == 0
    assert c.to_py() == a.to_py()
    # duplicates of held updates are harmless
    b.import_update(u2)
    b.import_update(u1)
    assert b.pending == 0
    assert b.to_py() == a.to_py()


def test_load_refuses_an_incomplete_document() -> None:
    a = Doc()
    a.text("t").insert(0, "one ")
    v1 = a.version
    a.text("t").insert(4, "two")
    with pytest.raises(MalformedUpdateError, match="not a complete document"):
        Doc.load(a.export_update(since=v1))


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.map("m").__setitem__("a\udf5c", 1),
        lambda d: d.map("m").__setitem__("a", "x\udf5c"),
        lambda d: d.text("t").insert(0, "x\ud83d"),
        lambda d: d.list("l").append({"\udf5c": 1}),
        lambda d: d.list("l").append(["fine", "\udf5c"]),
        lambda d: d.register("r").set("\udf5c"),
        lambda d: d.map("\udf5c"),
    ],
)
def test_lone_surrogates_are_refused_before_anything_is_written(edit: Any) -> None:
    # Found by the relay fuzzer: pycrdt panics (or raises UnicodeEncodeError half
    # way through a write, leaving an empty map behind) on strings that are not
    # valid Unicode.
    d = Doc()
    d.text("keep").insert(0, "x")
    before = d.export_yjs_update()
    with pytest.raises(CrdtSyncError):
        edit(d)
    assert d.export_yjs_update() == before
    assert d.to_py() == {"keep": "x"}


def test_presence_state_that_is_not_json_keeps_the_previous_one() -> None:
    from crdtsync.protocol.awareness import Awareness

    a = Awareness(1)
    a.set_local_state({"n": "ok"}, now=0.0)
    for bad in ({"n": "\udf5c"}, {"n": float("nan")}, {"n": object()}):
        with pytest.raises(InvalidValueError):
            a.set_local_state(bad, now=0.0)
    assert a.local_state == {"n": "ok"}
