"""Rule S11: a root shows one kind, whatever updates it came in and whether declared.

A plain Yjs writer can put anything in any root; ``crdtsync.Doc`` tells the
kind of a root it has not declared from its items (keyed: a map, text: a
text, values or an Array/Map/Text type: a list) and reads it so. Each test
runs on the Rust core and on the Python reference (``checker_path``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pycrdt
import pytest

from crdtsync import Doc
from crdtsync.errors import MalformedUpdateError

pytestmark = pytest.mark.usefixtures("checker_path")


Fill = Callable[["pycrdt.Doc[Any]"], None]


def _writer(client: int, fill: Fill) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
    fill(doc)
    return bytes(doc.get_update())


def _map(doc: pycrdt.Doc[Any]) -> None:
    doc.get("u", type=pycrdt.Map)["k"] = 1


def _values(doc: pycrdt.Doc[Any]) -> None:
    doc.get("u", type=pycrdt.Array).extend([1, "two"])


def _nested_map(doc: pycrdt.Doc[Any]) -> None:
    doc.get("u", type=pycrdt.Array).append(pycrdt.Map({"k": 1}))


def _text(doc: pycrdt.Doc[Any]) -> None:
    doc.get("u", type=pycrdt.Text).insert(0, "é😀 text")


def _newcomer_reads_the_same(doc: Doc) -> None:
    newcomer = Doc()
    newcomer.import_yjs_update(doc.export_yjs_update())
    assert newcomer.roots() == doc.roots()
    assert newcomer.to_py() == doc.to_py()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (_map, _values),
        (_values, _map),
        (_map, _text),
        (_text, _map),
        (_nested_map, _text),
        (_text, _nested_map),
        (_values, _text),
    ],
    ids=lambda f: f.__name__.strip("_"),
)
@pytest.mark.parametrize("read_first", [False, True], ids=["undeclared", "read"])
def test_a_root_takes_one_kind_across_updates(first: Fill, second: Fill, read_first: bool) -> None:
    doc = Doc()
    doc.import_yjs_update(_writer(1, first))
    if read_first:
        doc.to_py()  # reading declares the root with the kind it shows
    with pytest.raises(MalformedUpdateError, match=r"holding|Map/XmlHook"):
        doc.import_yjs_update(_writer(2, second))
    only_first = Doc()
    only_first.import_yjs_update(_writer(1, first))
    assert doc.to_py() == only_first.to_py()
    _newcomer_reads_the_same(doc)


def test_one_update_mixing_kinds_in_a_root_is_refused() -> None:
    mixed = pycrdt.merge_updates(_writer(1, _map), _writer(2, _text))
    with pytest.raises(MalformedUpdateError):
        Doc().import_yjs_update(mixed)


def test_a_declared_root_refuses_another_kind() -> None:
    doc = Doc()
    doc.text("u").insert(0, "typed here")
    with pytest.raises(MalformedUpdateError):
        doc.import_yjs_update(_writer(2, _nested_map))
    assert doc.to_py() == {"u": "typed here"}


@pytest.mark.parametrize(
    "fill",
    [
        _map,
        _values,
        _nested_map,
        _text,
        lambda d: d.get("u", type=pycrdt.Text).insert(0, "bold", attrs={"bold": True}),
        lambda d: d.get("u", type=pycrdt.XmlFragment).children.append(
            pycrdt.XmlElement("p", {"class": "x"}, [pycrdt.XmlText("hi")])
        ),
    ],
)
def test_honest_roots_of_each_kind_are_accepted(fill: Fill) -> None:
    doc = Doc()
    doc.import_yjs_update(_writer(1, fill))
    doc.import_yjs_update(_writer(2, fill))  # a second writer, same kind
    _newcomer_reads_the_same(doc)


# Input 927,103 of `scripts/fuzz_updates.py --target doc --seed 20261208`
# (after an empty prior): one XmlElement, a String and a map entry in a root
# named "" (a name Yjs allows). Accepted, it made every `to_py()` raise
# `InvalidOperationError`, since the model refused "" as a root name.
_EMPTY_ROOT_NAME = (
    b"\x01\x04\xa7\xb3\xb2\x85\xdf\xb9\xf0\x01\x00\x07\x01\x01x\x03\x03div(\x01\x00\x01a\x01w"
    b"\x04\xf0\x9f\x8e\x89\x07\x00\xa7\xb3\xb2\x85\xdf\xb9\xf0\x01\x00\x06\x04\x00\xa7\xb3\xb2"
    b'\x85\xdf\xb9\xf0\x01\x02\x07\n]<\\\\<"\x00'
)


def test_a_root_named_empty_is_read_like_any_other() -> None:
    doc = Doc()
    try:
        doc.import_yjs_update(_EMPTY_ROOT_NAME)
    except MalformedUpdateError:
        pass  # refusing it is fine too; reading what was accepted must work
    else:
        assert "" in doc.roots()
    doc.to_py()
    again = Doc()
    again.import_yjs_update(doc.export_yjs_update())
    assert again.to_py() == doc.to_py()


def test_a_yjs_root_named_empty_round_trips() -> None:
    update = _writer(5, lambda d: d.get("", type=pycrdt.Map).__setitem__("k", 1))
    doc = Doc()
    doc.import_yjs_update(update)
    assert doc.to_py() == {"": {"k": 1}}
    assert doc[""] == doc.map("")
    doc.map("")["j"] = 2
    assert Doc.load(doc.save()).to_py() == {"": {"k": 1, "j": 2}}
