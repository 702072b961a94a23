"""Relative positions from Python (crdtsync.model.positions) are Yjs' own, character for character.

Replicas edit one text concurrently (accents, characters outside the BMP, deletions),
then real Yjs (node) reads the same document: for every index, the relative position
Python computes is the one Yjs computes, and each side resolves the other's positions
to the same index.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.nodeenv import ensure_node_modules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync import Doc
from crdtsync.model.positions import absolute_position, relative_position

SCRIPT = Path(__file__).with_name("relpos.mjs")
ALPHABET = "ab é✓😀\n"


def yjs_view(doc: Doc, positions: list[dict[str, Any] | None]) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is required"
    yjs = ensure_node_modules() / "node_modules" / "yjs" / "dist" / "yjs.mjs"
    payload = {
        "update": base64.b64encode(doc.export_yjs_update()).decode(),
        "root": "body",
        "positions": [p or {} for p in positions],
    }
    out = subprocess.run(
        [node, str(SCRIPT), yjs.as_uri()],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def utf16(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def check_against_yjs(doc: Doc) -> None:
    body = doc.text("body")
    text = str(body)
    ours = [relative_position(body, i) for i in range(len(text) + 1)]
    assert all(p is not None for p in ours)
    view = yjs_view(doc, ours)
    assert view["text"] == text
    for i, pos in enumerate(ours):
        u = utf16(text[:i])
        assert pos == view["relative"][u], (i, text)
        assert view["absolute"][i] == u
        assert absolute_position(body, view["relative"][u]) == i


def sync(*docs: Doc) -> None:
    for a in docs:
        for b in docs:
            if a is not b:
                b.import_update(a.export_update(since=b.version))


def test_concurrent_edits_with_wide_characters() -> None:
    a, b, c = Doc(peer_id=11), Doc(peer_id=22), Doc(peer_id=33)
    a.text("body").insert(0, "héllo wörld")
    sync(a, b, c)
    b.text("body").insert(3, "😀😀x")
    c.text("body").insert(0, "✓ ")
    a.text("body").delete(1, 2)
    sync(a, b, c)
    a.text("body").insert(len(a.text("body")), " end 🎉")
    b.text("body").delete(5, 3)
    sync(a, b, c)
    check_against_yjs(a)
    check_against_yjs(c)


edits = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.booleans(),
        st.integers(0, 50),
        st.text(alphabet=ALPHABET, min_size=1, max_size=4),
        st.booleans(),
    ),
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_random_concurrent_histories(steps: list[tuple[int, bool, int, str, bool]]) -> None:
    docs = [Doc(peer_id=100 + i) for i in range(3)]
    for who, insert, pos, s, then_sync in steps:
        body = docs[who].text("body")
        if insert or not len(body):
            body.insert(pos % (len(body) + 1), s)
        else:
            i = pos % len(body)
            body.delete(i, min(len(s), len(body) - i))
        if then_sync:
            sync(*docs)
    sync(*docs)
    check_against_yjs(docs[0])


def test_a_position_follows_its_character() -> None:
    a, b = Doc(), Doc()
    a.text("body").insert(0, "abc😀def")
    sync(a, b)
    caret = relative_position(a.text("body"), 4)  # before "d"
    assert caret is not None
    b.text("body").insert(0, "✓✓ ")
    b.text("body").insert(len(b.text("body")), "!")
    sync(a, b)
    assert absolute_position(a.text("body"), caret) == 7
    assert str(a.text("body"))[7] == "d"
    end = relative_position(a.text("body"), len(a.text("body")))
    assert end == {"tname": "body", "assoc": 0}
    a.text("body").insert(len(a.text("body")), "+")
    assert absolute_position(a.text("body"), end) == len(a.text("body"))


def test_not_a_root_text_or_not_mapped() -> None:
    doc = Doc()
    doc.map("m")["t"] = __import__("crdtsync").Text("nested")
    nested = doc.map("m")["t"]
    assert relative_position(nested, 0) is None
    body = doc.text("body")
    assert relative_position(body, 0) == {"tname": "body", "assoc": 0}
    with pytest.raises(IndexError):
        relative_position(body, 1)


HOSTILE: list[object] = [
    None,
    1,
    "x",
    [],
    {},
    {"item": None},
    {"item": {"client": "1", "clock": 0}},
    {"item": {"client": 1.5, "clock": 0}},
    {"item": {"client": -1, "clock": 0}},
    {"item": {"client": 2**64, "clock": 0}},
    {"item": {"client": True, "clock": 0}},
    {"item": [], "assoc": 0},
    {"item": {"client": 1, "clock": 10**30}},
    {"tname": "other", "assoc": 0},
    {"tname": 5},
    {"tname": "body", "assoc": "0"},
    {"tname": "body", "assoc": 1.0},
]


@pytest.mark.parametrize("position", HOSTILE)
def test_hostile_positions_resolve_to_nothing(position: object) -> None:
    doc = Doc(peer_id=1)
    doc.text("body").insert(0, "a😀b")
    assert absolute_position(doc.text("body"), position) is None


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["item", "client", "clock", "tname", "assoc", "type"]),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_any_json_is_safe(position: object) -> None:
    doc = Doc(peer_id=1)
    doc.text("body").insert(0, "a😀b")
    result = absolute_position(doc.text("body"), position)
    assert result is None or 0 <= result <= 4


def test_surrogate_halves_resolve_to_nothing() -> None:
    doc = Doc(peer_id=7)
    doc.text("body").insert(0, "😀")
    start = relative_position(doc.text("body"), 0)
    assert start is not None
    clock = start["item"]["clock"]
    assert absolute_position(doc.text("body"), {"item": {"client": 7, "clock": clock}}) == 0
    half = {"item": {"client": 7, "clock": clock + 1}}
    assert absolute_position(doc.text("body"), half) is None
