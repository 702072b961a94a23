"""Every text change carries its delta in code points, local and remote (issue 14).

An editor bound to a text applies each delta to what it shows and never
re-reads the text: the binding in this file does exactly that and is checked
against the document after every transaction.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import ChangeEvent, Doc, Text


def apply_delta(text: str, delta: list[dict[str, Any]]) -> str:
    out, pos = [], 0
    for op in delta:
        if "retain" in op:
            out.append(text[pos : pos + op["retain"]])
            pos += op["retain"]
        elif "delete" in op:
            pos += op["delete"]
        else:
            out.append(op["insert"])
    out.append(text[pos:])
    return "".join(out)


def text_changes(events: list[ChangeEvent]) -> list[tuple[tuple[str | int, ...], Any]]:
    return [(c.path, c.delta) for ev in events for c in ev.changes if c.kind == "text"]


def test_first_edit_of_a_nested_text_has_a_delta_on_both_replicas() -> None:
    a, b = Doc(), Doc()
    seen_a: list[ChangeEvent] = []
    seen_b: list[ChangeEvent] = []
    a.observe(seen_a.append)
    b.observe(seen_b.append)
    m = a.map("m")
    m["n"] = Text("abc")
    b.import_update(a.export_update())
    m["n"].insert(3, "d")
    b.import_update(a.export_update(since=b.version))
    m["n"].delete(0, 1)
    b.import_update(a.export_update(since=b.version))
    assert text_changes(seen_a) == [
        (("m", "n"), [{"insert": "abc"}]),
        (("m", "n"), [{"retain": 3}, {"insert": "d"}]),
        (("m", "n"), [{"delete": 1}]),
    ]
    assert text_changes(seen_b)[-2:] == [
        (("m", "n"), [{"retain": 3}, {"insert": "d"}]),
        (("m", "n"), [{"delete": 1}]),
    ]
    assert all(not ev.local for ev in seen_b)


def test_a_root_text_has_deltas_from_its_first_edit_on_both_replicas() -> None:
    a, b = Doc(), Doc()
    seen_a: list[ChangeEvent] = []
    seen_b: list[ChangeEvent] = []
    a.observe(seen_a.append)
    b.observe(seen_b.append)
    a.text("body").insert(0, "héllo 😀")
    b.import_update(a.export_update())
    a.text("body").delete(1, 1)
    a.text("body").insert(6, "!")
    b.import_update(a.export_update(since=b.version))
    assert text_changes(seen_a) == [
        (("body",), [{"insert": "héllo 😀"}]),
        (("body",), [{"retain": 1}, {"delete": 1}]),
        (("body",), [{"retain": 6}, {"insert": "!"}]),
    ]
    # The root appeared on b: created, with its content as the delta.
    (first,) = seen_b[0].changes
    assert first.created
    assert first.delta == [{"insert": "héllo 😀"}]
    assert text_changes(seen_b)[1:] == [
        (("body",), [{"retain": 1}, {"delete": 1}, {"retain": 5}, {"insert": "!"}])
    ]


def test_text_inserted_with_its_content_in_one_transaction() -> None:
    a, b = Doc(), Doc()
    a.map("m")["x"] = 1
    b.import_update(a.export_update())
    seen_a: list[ChangeEvent] = []
    seen_b: list[ChangeEvent] = []
    a.observe(seen_a.append)
    b.observe(seen_b.append)
    with a.transaction():
        m = a.map("m")
        m["t"] = Text("héllo")
        m["t"].insert(1, "é")
        m["deep"] = {"list": [Text("a😀"), Text("")]}
        a.list("l").append(Text("in a list"))
    b.import_update(a.export_update(since=b.version))
    expected = {
        ("m", "t"): [{"insert": "hééllo"}],
        ("m", "deep", "list", 0): [{"insert": "a😀"}],
        ("l", 0): [{"insert": "in a list"}],
    }
    assert dict(text_changes(seen_a)) == expected
    got_b = dict(text_changes(seen_b))
    assert got_b[("m", "t")] == expected[("m", "t")]
    assert got_b[("m", "deep", "list", 0)] == expected[("m", "deep", "list", 0)]
    # Empty texts appear through their parent's change only; later edits have deltas.
    m["deep"]["list"][1].insert(0, "x")
    b.import_update(a.export_update(since=b.version))
    assert text_changes(seen_a)[-1] == (("m", "deep", "list", 1), [{"insert": "x"}])
    assert text_changes(seen_b)[-1] == (("m", "deep", "list", 1), [{"insert": "x"}])


def test_deltas_follow_texts_that_move_in_a_list() -> None:
    doc = Doc()
    seen: list[ChangeEvent] = []
    doc.observe(seen.append)
    items = doc.list("items")
    items.extend([Text("aé"), Text("b😀")])
    items.insert(0, Text("new"))
    del items[1]
    items[1].delete(1, 1)  # "b😀" is at index 1 now
    assert text_changes(seen)[-1] == (("items", 1), [{"retain": 1}, {"delete": 1}])
    assert str(items[1]) == "b"


def test_deltas_follow_texts_in_nested_lists_and_overwritten_keys() -> None:
    a, b = Doc(), Doc()
    rows = a.list("rows")
    rows.append({"cells": [Text("x1"), Text("y😀")]})
    b.import_update(a.export_update())
    seen_a: list[ChangeEvent] = []
    seen_b: list[ChangeEvent] = []
    a.observe(seen_a.append)
    b.observe(seen_b.append)
    with a.transaction():
        rows.insert(0, {"cells": [Text("new")]})  # the old row moves to index 1
        rows[1]["cells"].insert(0, Text("z"))  # its texts move to 1 and 2
        rows[1]["cells"][2].delete(0, 1)  # "y😀" -> "😀"
    b.import_update(a.export_update(since=b.version))
    for seen in (seen_a, seen_b):
        assert (("rows", 1, "cells", 2), [{"delete": 1}]) in text_changes(seen)
    # An overwritten key drops the old text: the new one starts from its content.
    m = a.map("m")
    m["t"] = Text("old")
    m["t"] = Text("néw")
    m["t"].delete(0, 1)
    assert text_changes(seen_a)[-2:] == [
        (("m", "t"), [{"insert": "néw"}]),
        (("m", "t"), [{"delete": 1}]),
    ]


class Binding:
    """An editor's view of every text, kept from the change events alone."""

    def __init__(self, doc: Doc) -> None:
        self.texts: dict[tuple[str | int, ...], str] = {}
        doc.observe(self.on_event)

    def on_event(self, ev: ChangeEvent) -> None:
        for c in ev.changes:
            if c.kind == "list":
                assert c.delta is not None
                self._renumber(c.path, c.delta)
            elif c.kind == "map" and c.keys:
                for key, action in c.keys.items():
                    if action != "add":
                        self._drop((*c.path, key))
            elif c.kind == "text":
                assert c.delta is not None, f"no delta for {c.path}"
                self.texts[c.path] = apply_delta(self.texts.get(c.path, ""), c.delta)

    def _drop(self, prefix: tuple[str | int, ...]) -> None:
        for p in [p for p in self.texts if p[: len(prefix)] == prefix]:
            del self.texts[p]

    def _renumber(self, path: tuple[str | int, ...], delta: list[dict[str, Any]]) -> None:
        n = len(path)
        below = {p: t for p, t in self.texts.items() if len(p) > n and p[:n] == path}
        for p in below:
            del self.texts[p]
        old = new = 0
        mapping: dict[int, int] = {}
        for op in delta:
            if "retain" in op:
                for i in range(op["retain"]):
                    mapping[old + i] = new + i
                old += op["retain"]
                new += op["retain"]
            elif "delete" in op:
                old += op["delete"]
            else:
                new += len(op["insert"])
        for p, t in below.items():
            i = p[n]
            assert isinstance(i, int)
            if i < old and i not in mapping:
                continue  # deleted
            j = mapping[i] if i < old else i - old + new
            self.texts[(*path, j, *p[n + 1 :])] = t


def texts_of(doc: Doc) -> dict[tuple[str | int, ...], str]:
    out: dict[tuple[str | int, ...], str] = {}
    title = str(doc.map("m")["title"])
    if title:
        out[("m", "title")] = title
    for i, t in enumerate(doc.map("m")["items"]):
        if str(t):
            out[("m", "items", i)] = str(t)
    return out


_chars = st.text(alphabet="aé😀\n", min_size=1, max_size=4)
_op = st.one_of(
    st.tuples(st.just("new"), st.integers(0, 8), st.text(alphabet="aé😀", max_size=3)),
    st.tuples(st.just("drop"), st.integers(0, 8), st.just("")),
    st.tuples(st.just("ins"), st.integers(-1, 8), _chars),
    st.tuples(st.just("del"), st.integers(-1, 8), st.just("")),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_op, min_size=1, max_size=3), max_size=8), st.randoms())
def test_a_binding_fed_only_by_events_matches_both_replicas(
    txns: list[list[tuple[str, int, str]]], rnd: Any
) -> None:
    a, b = Doc(), Doc()
    a.map("m").update({"title": Text(""), "items": []})
    b.import_update(a.export_update())
    view_a, view_b = Binding(a), Binding(b)
    items = a.map("m")["items"]
    for ops in txns:
        with a.transaction():
            for kind, i, s in ops:
                n = len(items)
                if kind == "new":
                    items.insert(min(i, n), Text(s))
                elif kind == "drop" and n:
                    del items[i % n]
                elif kind in ("ins", "del"):
                    t = a.map("m")["title"] if i < 0 or not n else items[i % n]
                    if kind == "ins":
                        t.insert(rnd.randint(0, len(t)), s)
                    elif len(t):
                        start = rnd.randrange(len(t))
                        t.delete(start, rnd.randint(1, len(t) - start))
        b.import_update(a.export_update(since=b.version))
        assert {p: t for p, t in view_a.texts.items() if t} == texts_of(a)
        assert {p: t for p, t in view_b.texts.items() if t} == texts_of(b)
