"""A Text's offset index across imports (plain ASCII ones keep it, others rebuild it).

``Doc.text_ascii_epoch`` lets an ASCII text keep its code-point index over
imports that only add ASCII strings or delete; every other import, and every
edit, makes it read the text again. Here two replicas edit one text with
ASCII, non-ASCII and astral characters and embeds, exchange updates at random
points, and every edit through ``Text`` must land where a Python ``str``
would put it.
"""

from __future__ import annotations

from typing import Any

import pycrdt
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import Doc

ALPHABET = ["a", "b", " ", "é", "日", "\U0001f600"]


def _check(doc: Doc, model: str) -> None:
    text = doc.text("t")
    assert len(text) == len(model)
    assert str(text) == model


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_edits_land_where_a_str_would_put_them(data: st.DataObject) -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    ma, mb = "", ""  # what each replica's text should hold
    for _ in range(data.draw(st.integers(1, 25))):
        op = data.draw(st.sampled_from(["ins", "ins", "del", "sync_ab", "sync_ba"]))
        who = data.draw(st.sampled_from([1, 2]))
        doc, model = (a, ma) if who == 1 else (b, mb)
        if op == "ins":
            pos = data.draw(st.integers(0, len(model)))
            s = "".join(data.draw(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=4)))
            doc.text("t").insert(pos, s)
            model = model[:pos] + s + model[pos:]
        elif op == "del" and model:
            pos = data.draw(st.integers(0, len(model) - 1))
            n = data.draw(st.integers(1, len(model) - pos))
            doc.text("t").delete(pos, n)
            model = model[:pos] + model[pos + n :]
        if who == 1:
            ma = model
        else:
            mb = model
        if op in ("sync_ab", "sync_ba"):
            src, dst = (a, b) if op == "sync_ab" else (b, a)
            dst.import_yjs_update(src.export_yjs_update(dst.version))
            # the merged text is the engine's: the model follows it
            merged = str(dst.text("t"))
            if dst is a:
                ma = merged
            else:
                mb = merged
            # an edit right after the import uses the (kept or rebuilt) index
            pos = data.draw(st.integers(0, len(merged)))
            dst.text("t").insert(pos, "z")
            merged = merged[:pos] + "z" + merged[pos:]
            if dst is a:
                ma = merged
            else:
                mb = merged
        _check(a, ma)
        _check(b, mb)


def test_an_imported_embed_makes_the_text_reindex() -> None:
    doc = Doc(peer_id=5)
    text = doc.text("t")
    text.insert(0, "abcd")
    peer: pycrdt.Doc[Any] = pycrdt.Doc(client_id=9)
    peer.apply_update(doc.export_yjs_update())
    ptext = peer.get("t", type=pycrdt.Text)
    sv = peer.get_state()
    ptext.insert_embed(2, {"image": "x"})
    doc.import_yjs_update(bytes(peer.get_update(sv)))
    # the embed is one engine offset and no code point: an edit after it
    # must step over it
    text.insert(3, "Z")
    assert str(text) == "abcZd"
    sv = peer.get_state()
    ptext.insert(4, "é")  # engine offsets: a b <embed> c, concurrent with the Z
    doc.import_yjs_update(bytes(peer.get_update(sv)))
    merged = str(text)
    assert sorted(merged) == sorted("abcéZd")
    assert len(text) == len(merged)
    text.insert(len(text), "!")
    text.insert(5, "_")
    assert str(text) == merged[:5] + "_" + merged[5:] + "!"


def test_a_plain_import_keeps_the_index_and_its_length() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    a.text("t").insert(0, "hello")
    b.import_yjs_update(a.export_yjs_update())
    b.text("t").insert(5, "!")  # b's index is now built and ASCII
    a.text("t").insert(0, ">> ")
    a.text("t").delete(3, 1)
    b.import_yjs_update(a.export_yjs_update(b.version))  # plain ASCII: index kept
    assert b.text_ascii_epoch < b.text_epoch
    assert len(b.text("t")) == len(">> ello!")
    b.text("t").insert(len(b.text("t")), "?")
    assert str(b.text("t")) == ">> ello!?"
    a.text("t").insert(0, "ü")
    b.import_yjs_update(a.export_yjs_update(b.version))  # not plain: rebuilt
    assert b.text_ascii_epoch == b.text_epoch
    b.text("t").insert(2, "_")
    assert str(b.text("t")) == "ü>_> ello!?"
