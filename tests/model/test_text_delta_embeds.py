"""Text deltas around embeds (a Yjs peer's ``insertEmbed``) are in ``str(text)`` positions.

``Text`` shows characters only: ``str(text)``, ``len(text)`` and every index
skip the embeds a Yjs peer may put in a text. A change event's delta must use
the same positions, so that an editor applying it to the text it showed gets
``str(text)`` again; embeds, which have no position there, are left out.

The Yjs peer is pycrdt (its updates are Yjs v1 updates, embeds included), as in
tests/model/test_engine_panic.py.
"""

from __future__ import annotations

from typing import Any

import pycrdt
from hypothesis import given, settings
from hypothesis import strategies as st
from model.test_text_deltas import apply_delta, text_changes

from crdtsync import ChangeEvent, Doc


class Mirror:
    """A crdtsync Doc observing a Yjs peer's text, and the text an editor would show."""

    def __init__(self) -> None:
        self.peer = pycrdt.Doc(client_id=6)
        self.ytext = self.peer.get("t", type=pycrdt.Text)
        self.doc = Doc()
        self.events: list[ChangeEvent] = []
        self.doc.observe(self.events.append)
        self.shown = ""

    def sync_from_peer(self) -> None:
        since = self.doc.version.to_bytes()
        self.doc.import_yjs_update(bytes(self.peer.get_update(since)))
        self.check()

    def sync_to_peer(self) -> None:
        self.peer.apply_update(self.doc.export_yjs_update())
        self.check()

    def check(self) -> None:
        for _path, delta in text_changes(self.events):
            assert delta is not None
            for op in delta:
                if "insert" in op:
                    assert isinstance(op["insert"], str), delta  # no embed: no position
            self.shown = apply_delta(self.shown, delta)
        self.events.clear()
        assert self.shown == str(self.doc.text("t"))
        assert str(self.doc.text("t")) == str(self.ytext)


def byte_offset(ytext: pycrdt.Text, index: int) -> int:
    """The engine offset of code point ``index`` of ``str(ytext)`` (embeds count one)."""
    units = 0
    for chunk, _attrs in ytext.diff():
        if not isinstance(chunk, str):
            units += 1
            continue
        if index <= len(chunk):
            return units + len(chunk[:index].encode("utf-8"))
        index -= len(chunk)
        units += len(chunk.encode("utf-8"))
    return units


def test_an_embed_then_characters_after_it() -> None:
    m = Mirror()
    m.ytext.insert(0, "héllo 😀 wörld")
    m.sync_from_peer()
    m.ytext.insert_embed(byte_offset(m.ytext, 2), {"img": "x"})
    m.sync_from_peer()
    # Characters after the embed: their delta positions skip it.
    m.ytext.insert(byte_offset(m.ytext, 9), "ß")
    m.sync_from_peer()
    assert m.shown == "héllo 😀 wßörld"
    del m.ytext[byte_offset(m.ytext, 3) : byte_offset(m.ytext, 5)]
    m.sync_from_peer()
    assert m.shown == "hél 😀 wßörld"


def test_deleting_across_an_embed_and_local_edits_after_one() -> None:
    m = Mirror()
    m.ytext.insert(0, "abc😀déf")
    m.ytext.insert_embed(3, {"img": 1})
    m.ytext.insert_embed(3, {"img": 2})
    m.sync_from_peer()
    assert m.shown == "abc😀déf"
    # A crdtsync edit after the embeds, by code point (a local event).
    m.doc.text("t").insert(5, "X")
    m.sync_to_peer()
    m.doc.text("t").delete(4, 3)
    m.sync_to_peer()
    assert m.shown == "abc😀f"
    # The peer deletes a range holding both embeds and characters on each side.
    del m.ytext[byte_offset(m.ytext, 1) : byte_offset(m.ytext, 4)]
    m.sync_from_peer()
    assert m.shown == "af"
    assert [c for c, _ in m.ytext.diff() if not isinstance(c, str)] == []


def test_an_embed_alone_changes_no_shown_position() -> None:
    m = Mirror()
    m.ytext.insert(0, "ab")
    m.sync_from_peer()
    m.ytext.insert_embed(1, {"img": "x"})
    m.sync_from_peer()
    del m.ytext[1:2]  # the embed itself
    m.sync_from_peer()
    assert m.shown == "ab"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["text", "embed", "delete", "local_insert", "local_delete"]),
            st.integers(0, 40),
            st.integers(1, 4),
            st.text(alphabet="aé😀文", min_size=1, max_size=3),
        ),
        max_size=25,
    )
)
def test_random_peer_embeds_and_edits_keep_deltas_in_step(ops: list[Any]) -> None:
    m = Mirror()
    m.ytext.insert(0, "start")
    m.sync_from_peer()
    for kind, at, n, s in ops:
        shown = str(m.doc.text("t"))
        i = at % (len(shown) + 1)
        if kind == "text":
            m.ytext.insert(byte_offset(m.ytext, i), s)
            m.sync_from_peer()
        elif kind == "embed":
            m.ytext.insert_embed(byte_offset(m.ytext, i), {"n": at})
            m.sync_from_peer()
        elif kind == "delete" and len(m.ytext):
            start = at % len(m.ytext)
            # Whole units only: a range of engine offsets that starts and ends
            # on character boundaries (embeds included).
            bounds = sorted(
                {byte_offset(m.ytext, k) for k in range(len(shown) + 1)} | _embed_units(m.ytext)
            )
            lo = max(b for b in bounds if b <= start)
            hi = min([b for b in bounds if b >= lo + n] or [bounds[-1]])
            if hi > lo:
                del m.ytext[lo:hi]
                m.sync_from_peer()
        elif kind == "local_insert":
            m.doc.text("t").insert(i, s)
            m.sync_to_peer()
        elif kind == "local_delete" and shown:
            j = at % len(shown)
            m.doc.text("t").delete(j, min(n, len(shown) - j))
            m.sync_to_peer()


def _embed_units(ytext: pycrdt.Text) -> set[int]:
    """Engine offsets right before and after each embed."""
    out: set[int] = set()
    units = 0
    for chunk, _attrs in ytext.diff():
        if isinstance(chunk, str):
            units += len(chunk.encode("utf-8"))
        else:
            out |= {units, units + 1}
            units += 1
    return out
