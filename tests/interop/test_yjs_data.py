"""Data written by plain Yjs clients (node, the npm `yjs` package) as crdtsync reads it."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.nodeenv import ensure_node_modules

from crdtsync import Doc, Map
from crdtsync.errors import ReadOnlyValueError
from crdtsync.model.values import ReadOnlyDict


@pytest.fixture(scope="module")
def script() -> Path:
    return ensure_node_modules() / "yjs_eval.mjs"


def run_js(script: Path, code: str, updates: tuple[bytes, ...] = ()) -> tuple[bytes, Any]:
    """Run ``code`` (with ``Y`` and ``doc`` in scope) in a real Yjs replica."""
    payload = json.dumps({"updates": [base64.b64encode(u).decode() for u in updates], "code": code})
    proc = subprocess.run(
        ["node", str(script)], input=payload, capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(proc.stdout)
    return base64.b64decode(out["update"]), out["json"]


def test_roots_written_by_a_yjs_client_are_listed(script: Path) -> None:
    update, _ = run_js(
        script,
        """
        doc.getMap('settings').set('theme', 'dark');
        doc.getArray('todos').push(['milk', 2]);
        doc.getText('body').insert(0, 'héllo 😀');
        doc.getMap('gone').set('k', 1);
        doc.getMap('gone').delete('k');
        doc.getXmlFragment('xml').insert(0, [new Y.XmlElement('p')]);
        """,
    )
    doc = Doc()
    assert doc.roots() == {}
    doc.import_yjs_update(update)
    # A root is listed while it has content ("gone" has none left, the XML
    # fragment is not a crdtsync kind).
    assert doc.roots() == {"body": "text", "settings": "map", "todos": "list"}
    assert doc.to_py() == {
        "body": "héllo 😀",
        "settings": {"theme": "dark"},
        "todos": ["milk", 2],
    }
    assert list(doc) == ["body", "settings", "todos"]
    assert doc["settings"]["theme"] == "dark"
    # The same on a replica that loads a save, and after a crdtsync edit.
    again = Doc.load(doc.save())
    assert again.roots() == doc.roots()
    doc.map("settings")["size"] = 3
    assert doc.roots()["settings"] == "map"
    with pytest.raises(TypeError, match="text, not a map"):
        doc.map("body")


def test_roots_whose_first_items_were_deleted_are_listed_everywhere(script: Path) -> None:
    # Only a root's first item names the root; here it is deleted before a
    # replica that loads the state sees it.
    update, _ = run_js(
        script,
        """
        const t = doc.getText('body');
        t.insert(0, 'ab');
        t.insert(2, 'cd');
        t.delete(0, 2);
        const a = doc.getArray('list');
        a.push([1]);
        a.push([2]);
        a.delete(0, 1);
        const m = doc.getMap('map');
        m.set('k', 1);
        m.set('k', 2);
        """,
    )
    first = Doc()
    first.import_yjs_update(update)
    expected = {"body": "text", "list": "list", "map": "map"}
    assert first.roots() == expected
    for data in (first.save(), first.export_update()):
        again = Doc.load(data)
        assert again.roots() == expected
        assert again.to_py() == {"body": "cd", "list": [2], "map": {"k": 2}}
    # A replica that asked for the root before the content arrived lists it too.
    early = Doc()
    assert str(early.text("body")) == ""
    assert early.roots() == {}
    early.import_update(first.export_update())
    assert early.roots() == expected


def test_a_root_appears_in_events_when_a_yjs_client_creates_it(script: Path) -> None:
    doc = Doc()
    events = []
    doc.observe(events.append)
    update, _ = run_js(script, "doc.getText('notes').insert(0, 'hi');")
    doc.import_yjs_update(update)
    changes = [c for ev in events for c in ev.changes]
    assert any(c.path == ("notes",) and c.kind == "text" for c in changes)


def test_a_plain_js_object_is_read_only_and_a_y_map_is_shared(script: Path) -> None:
    update, _ = run_js(
        script,
        """
        const m = doc.getMap('m');
        m.set('plain', {a: 1, inner: {b: [1, 2]}});
        m.set('shared', new Y.Map(Object.entries({a: 1})));
        """,
    )
    doc = Doc()
    doc.import_yjs_update(update)
    m = doc.map("m")
    plain = m["plain"]
    assert isinstance(plain, ReadOnlyDict)
    assert plain == {"a": 1, "inner": {"b": [1, 2]}}
    with pytest.raises(ReadOnlyValueError, match=r"Y\.Map"):
        plain["a"] = 2
    with pytest.raises(ReadOnlyValueError):
        plain["inner"]["b"].append(3)
    # What the error says to do: a Y.Map (JS) or a dict/Map (Python) both sides edit.
    shared = m["shared"]
    assert isinstance(shared, Map)
    shared["a"] = 2
    m["mine"] = {"x": 1}
    back, seen = run_js(
        script,
        """
        const m = doc.getMap('m');
        m.get('mine').set('y', 2);
        return {shared: m.get('shared').toJSON(), mine: m.get('mine').toJSON()};
        """,
        (doc.export_yjs_update(),),
    )
    assert seen == {"shared": {"a": 2}, "mine": {"x": 1, "y": 2}}
    doc.import_yjs_update(back)
    assert m.to_py()["mine"] == {"x": 1, "y": 2}


def test_a_js_object_shaped_like_a_value_tag_reads_back_as_itself(script: Path) -> None:
    update, _ = run_js(
        script,
        """
        const m = doc.getMap('m');
        m.set('i', {$: 'i', v: '5'});
        m.set('f', {$: 'f', v: '1.5'});
        m.set('d', {$: 'd', v: {a: 1}});
        m.set('nul', {'\\u0000i': 'x'});
        doc.getArray('l').push([{$: 'i', v: '5'}]);
        """,
    )
    doc = Doc()
    doc.import_yjs_update(update)
    assert doc.map("m").to_py() == {
        "i": {"$": "i", "v": "5"},
        "f": {"$": "f", "v": "1.5"},
        "d": {"$": "d", "v": {"a": 1}},
        "nul": {"\x00i": "x"},
    }
    assert doc.list("l").to_py() == [{"$": "i", "v": "5"}]


def test_values_crdtsync_tags_read_in_yjs_and_back(script: Path) -> None:
    doc = Doc()
    r = doc.register("r")
    r.set({"big": 2**70, "one": 1.0, "dollar": {"$": "i", "v": "5"}})
    doc.map("m")["big"] = 2**70
    back, seen = run_js(
        script,
        "return doc.getMap('m').get('big');",
        (doc.export_yjs_update(),),
    )
    assert seen == {"\x00i": str(2**70)}
    again = Doc()
    again.import_yjs_update(back)
    assert again.map("m")["big"] == 2**70
    assert again.register("r").value == {"big": 2**70, "one": 1.0, "dollar": {"$": "i", "v": "5"}}
    assert type(again.register("r").value["one"]) is float
