"""Idioms an app writes against the model (issue 14): augmented assignment, read-only values."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from crdtsync import Counter, Doc, InvalidValueError, Map, Text
from crdtsync.errors import CrdtSyncError, InvalidOperationError, ReadOnlyValueError
from crdtsync.model.values import ReadOnlyDict, ReadOnlyList


def test_augmented_assignment_on_nested_containers_is_one_edit() -> None:
    doc = Doc()
    m = doc.map("m")
    m["c"] = Counter(1)
    m["t"] = Text("ab")
    updates: list[bytes] = []
    doc.observe_updates(lambda u, origin, local: updates.append(u))
    m["c"] += 1
    m["c"] -= 3
    m["t"] += "x"
    assert m["c"].value == -1
    assert str(m["t"]) == "abx"
    assert len(updates) == 3  # the assignment back writes nothing
    other = Doc()
    other.import_update(doc.export_update())
    assert other.to_py() == {"m": {"c": -1, "t": "abx"}}


def test_augmented_assignment_on_list_items() -> None:
    doc = Doc()
    items = doc.list("items")
    items.extend([Counter(), Text("a")])
    items[0] += 5
    items[-1] += "b"
    assert items.to_py() == [5, "ab"]
    assert len(items) == 2


def test_moving_a_container_to_another_key_is_still_refused() -> None:
    doc = Doc()
    m = doc.map("m")
    m["c"] = Counter(1)
    with pytest.raises(InvalidValueError, match="already in a document"):
        m["d"] = m["c"]
    other = doc.map("other")
    with pytest.raises(InvalidValueError, match="already in a document"):
        other["c"] = m["c"]
    items = doc.list("items")
    items.extend([Counter(), Counter()])
    with pytest.raises(InvalidValueError, match="already in a document"):
        items[1] = items[0]
    assert "d" not in m


def _js_like(value: object) -> Doc:
    """A document whose map "m" holds ``value`` stored whole, as ymap.set(k, obj) does."""
    import pycrdt

    y = pycrdt.Doc()
    y["m"] = pycrdt.Map()
    y["m"]["obj"] = value
    doc = Doc()
    doc.import_yjs_update(bytes(y.get_update()))
    return doc


def test_a_plain_object_value_is_read_only() -> None:
    doc = _js_like({"a": 1.0, "tags": ["x"], "inner": {"b": 2.0}})
    obj = doc.map("m")["obj"]
    assert isinstance(obj, ReadOnlyDict)
    assert obj == {"a": 1, "tags": ["x"], "inner": {"b": 2}}
    assert isinstance(obj["tags"], ReadOnlyList)
    for mutate in (
        lambda: obj.__setitem__("a", 2),
        lambda: obj.update(a=2),
        lambda: obj.pop("a"),
        obj.clear,
        lambda: obj.setdefault("z", 1),
        lambda: obj["inner"].__setitem__("b", 3),
        lambda: obj["tags"].append("y"),
        lambda: obj["tags"].__setitem__(0, "y"),
    ):
        with pytest.raises(ReadOnlyValueError) as info:
            mutate()
        assert isinstance(info.value, CrdtSyncError)
        assert isinstance(info.value, InvalidOperationError)
        assert "Y.Map" in str(info.value)
        assert "Map(" in str(info.value)
    # Reading works like a dict, copies are ordinary dicts.
    assert json.loads(json.dumps(obj)) == {"a": 1, "tags": ["x"], "inner": {"b": 2}}
    assert type(obj.copy()) is dict
    assert type(copy.deepcopy(obj)) is dict
    assert type(copy.deepcopy(obj)["inner"]) is dict
    assert type(pickle.loads(pickle.dumps(obj))) is dict
    assert type(doc.map("m").to_py()["obj"]) is dict  # to_py() is a plain snapshot
    # The documented ways to change it.
    m = doc.map("m")
    m["obj"] = {**obj, "a": 2}
    assert isinstance(m["obj"], Map)
    m["obj"]["a"] = 3
    assert m.to_py()["obj"]["a"] == 3


def test_read_only_values_in_lists_still_compare() -> None:
    import pycrdt

    y = pycrdt.Doc()
    y["l"] = pycrdt.Array()
    y["l"].append({"k": "v"})
    doc = Doc()
    doc.import_yjs_update(bytes(y.get_update()))
    items = doc.list("l")
    assert {"k": "v"} in items
    assert items.index({"k": "v"}) == 0
    items.remove({"k": "v"})
    assert items.to_py() == []


def test_register_values_are_read_only_too() -> None:
    r = Doc().register("r")
    r.set({"a": [1]})
    with pytest.raises(ReadOnlyValueError):
        r.value["a"].append(2)
    assert r.value == {"a": [1]}
    assert type(r.to_py()) is dict
