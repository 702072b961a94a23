"""yrs 0.28 corrupts a text, and may panic, when handed an offset inside a character.

The engine bug (pycrdt 0.14.13, yrs 0.28): pycrdt addresses a text by UTF-8
byte offsets and passes them on unchecked. An offset inside a multi-byte
character splits that character's item into one of length zero; deleting
across it can then divide by zero in the transaction's commit (garbage
collection looks the zero-length block up: ``block_store.rs:60``), and in any
case the state is corrupt: the export holds a zero-length String item that
crdtsync's validator refuses, the text may lose characters it was not asked to
delete, and the replica's own view diverges from what it exports.

scripts/fuzz_index.py met it as seed 1, session 15971: its pycrdt writers
(``fuzz_updates.delete_nested``) delete ``text[0:k]`` with ``k`` a random byte
offset, and ``k`` = 14 fell inside the final "文" of "c prjpfs🚀文" (15 bytes).
The nested type deleted in the same transaction plays no part:
:func:`test_engine_bug_minimal_raw_pycrdt_program` is the whole of it.

crdtsync was exposed: its ``Text`` translated code points into byte offsets
from ``str()`` of the engine's text, which leaves out embeds (a Yjs peer's
``insertEmbed``), while the engine's offsets count each embed as one. After a
Yjs peer's embed, a crdtsync edit of the characters after it landed inside a
character: ``Text.delete`` raised ``EngineError`` (the panic), left the engine
state corrupt, and the next ``export_update`` raised pycrdt's raw
``PanicException`` (a ``BaseException``). The offset cache
(:mod:`crdtsync.model.text_index`) now steps over embeds, so every offset
crdtsync hands the engine is a character boundary; the tests below are that
path, which must neither raise nor corrupt.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync import Doc
from crdtsync.format.version import Version
from crdtsync.model.text_index import TextIndex, embed_positions


def _is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


# --------------------------------------------------------------------------------
# The engine bug itself (raw pycrdt; kept to notice when an upgrade fixes it)


def test_engine_bug_minimal_raw_pycrdt_program() -> None:
    """ENGINE BUG (yrs 0.28 / pycrdt 0.14.13), not crdtsync's: a delete ending inside "é" panics.

    If this test fails because nothing panics, the engine has been fixed:
    update this file's docstring and scripts/fuzz_index.py's skip of session 15971.
    """
    doc = pycrdt.Doc(client_id=1)
    text = doc.get("t", type=pycrdt.Text)
    text += "é"  # two UTF-8 bytes, one character
    with pytest.raises(BaseException, match="divide by zero") as info:
        del text[0:1]  # byte 1 is inside "é"; the commit divides by zero
    assert _is_panic(info.value)


def test_engine_bug_offset_inside_a_character_corrupts_without_panicking() -> None:
    """ENGINE BUG: with a character after the split one, no panic, but both are deleted."""
    doc = pycrdt.Doc(client_id=1)
    text = doc.get("t", type=pycrdt.Text)
    text += "é!"
    del text[0:1]
    assert str(text) == ""  # "!" was not asked for
    with pytest.raises(Exception, match="zero-length String item"):
        Doc().import_yjs_update(doc.get_update())


# --------------------------------------------------------------------------------
# crdtsync's path to it: a Yjs peer's embed, then edits by code point


def _peer_text_with_embed() -> bytes:
    """'é' written by client 5, an embed put before it by client 6 (as in the panic)."""
    a = pycrdt.Doc(client_id=5)
    a.get("t", type=pycrdt.Text).insert(0, "é")
    b = pycrdt.Doc(client_id=6)
    b.apply_update(a.get_update())
    b.get("t", type=pycrdt.Text).insert_embed(0, {"img": "x"})
    return bytes(b.get_update())


def _embeds(doc: Doc, name: str = "t") -> list[Any]:
    peer = pycrdt.Doc()
    peer.apply_update(doc.export_yjs_update())
    return [c for c, _ in peer.get(name, type=pycrdt.Text).diff() if not isinstance(c, str)]


def _check_replicas(doc: Doc, expected: str) -> None:
    """Export, save/load and sync all give ``expected``, embeds kept."""
    assert str(doc.text("t")) == expected
    other = Doc()
    other.import_update(doc.export_update())  # the validator refuses zero-length items
    assert str(other.text("t")) == expected
    assert str(Doc.load(doc.save()).text("t")) == expected
    assert _embeds(doc) == [{"img": "x"}]


@pytest.mark.parametrize("how", ["plain", "transaction", "observed", "undo"])
def test_deleting_the_character_after_a_peers_embed(how: str) -> None:
    """The crdtsync sequence that hit the panic: import a Yjs embed, delete the character."""
    doc = Doc()
    doc.import_yjs_update(_peer_text_with_embed())
    text = doc.text("t")
    assert str(text) == "é"
    assert len(text) == 1
    if how == "observed":
        doc.observe(lambda ev: None)
    undo = doc.undo_manager([text], capture_timeout=0) if how == "undo" else None
    if how == "transaction":
        with doc.transaction():
            text.delete(0, 1)
    else:
        text.delete(0, 1)  # was EngineError (divide by zero), then a corrupt state
    _check_replicas(doc, "")
    text.insert(0, "ok")
    _check_replicas(doc, "ok")
    if undo is not None:
        undo.undo()
        undo.undo()
        _check_replicas(doc, "é")
        undo.redo()
        _check_replicas(doc, "")


def peer_version(peer: pycrdt.Doc) -> Version:
    return Version.from_bytes(peer.get_state())


def test_edits_around_embeds_address_characters_only() -> None:
    """Inserts and deletes by code point step over embeds and leave them in place."""
    w = pycrdt.Doc(client_id=9)
    wt = w.get("t", type=pycrdt.Text)
    wt.insert(0, "文字🎉")
    wt.insert_embed(3, {"img": "x"})  # byte 3: 文 [embed] 字🎉
    doc = Doc()
    doc.import_yjs_update(w.get_update())
    text = doc.text("t")
    assert str(text) == "文字🎉"
    text.insert(1, "é")  # right after 文, ahead of the embed
    assert str(text) == "文é字🎉"
    text.delete(0, 3)  # 文é[embed]字: two engine ranges, the embed stays
    assert str(text) == "🎉"
    peer = pycrdt.Doc()
    peer.apply_update(doc.export_yjs_update())
    assert [c for c, _ in peer.get("t", type=pycrdt.Text).diff()] == [{"img": "x"}, "🎉"]
    text[0] = "ü"  # an insert at 0 goes ahead of the embeds there (no character before)
    assert str(text) == "ü"
    peer.apply_update(doc.export_yjs_update(peer_version(peer)))
    assert [c for c, _ in peer.get("t", type=pycrdt.Text).diff()] == ["ü", {"img": "x"}]
    w.apply_update(doc.export_yjs_update())
    doc.import_yjs_update(w.get_update(pycrdt.Doc().get_state()))
    assert str(wt) == str(text) == "ü"


def test_embed_positions_and_offsets() -> None:
    chunks: list[tuple[Any, Any]] = [({"e": 1}, None), ("aé", None), ({"e": 2}, None)]
    chunks += [({"e": 3}, None), ("b", None), ({"e": 4}, None)]
    embeds = embed_positions(chunks)
    assert embeds == [(0, 1), (2, 2), (3, 1)]
    idx = TextIndex("aéb", 0, embeds)
    assert not idx.ascii
    # engine: [e1] a é(2 bytes) [e2][e3] b [e4]
    assert [idx.to_bytes(i) for i in range(4)] == [0, 2, 4, 7]
    assert idx.spans(0, 3) == [(6, 1), (1, 3)]
    assert idx.spans(1, 1) == [(2, 2)]
    assert TextIndex("ab", 0, [(1, 1)]).ascii is False


_CHARS = st.sampled_from(list("aé文🎉"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.lists(st.one_of(_CHARS, st.just(None)), min_size=1, max_size=10),
    ops=st.lists(
        st.tuples(
            st.booleans(), st.integers(0, 20), st.integers(1, 4), st.text(_CHARS, max_size=3)
        ),
        max_size=12,
    ),
    in_txn=st.booleans(),
)
def test_edits_of_a_text_with_embeds_match_a_string_model(
    initial: list[str | None], ops: list[tuple[bool, int, int, str]], in_txn: bool
) -> None:
    """Any code-point edit of a peer's text with embeds (None) does what str edits do."""
    w = pycrdt.Doc(client_id=3)
    wt = w.get("t", type=pycrdt.Text)
    n_embeds = 0
    for part in initial:
        if part is None:
            wt.insert_embed(len(wt), {"n": n_embeds})
            n_embeds += 1
        else:
            wt.insert(len(wt), part)
    doc = Doc()
    doc.import_yjs_update(w.get_update())
    text = doc.text("t")
    model = str(wt)
    assert str(text) == model
    for is_insert, at_any, length_any, s in ops:
        at = at_any % (len(model) + 1)
        length = min(length_any, len(model) - at)
        if (is_insert and not s) or (not is_insert and not length):
            continue
        with doc.transaction() if in_txn else contextlib.nullcontext():
            if is_insert:
                text.insert(at, s)
            else:
                text.delete(at, length)
        model = model[:at] + s + model[at:] if is_insert else model[:at] + model[at + length :]
        assert str(text) == model
    other = Doc()
    other.import_update(doc.export_update())  # refused if any item was split inside a character
    assert str(other.text("t")) == model
    assert len(_embeds(doc)) == n_embeds


class PanicException(BaseException):
    """Stands in for pyo3's ``PanicException`` (recognised by name; not importable)."""


def test_a_panic_while_exporting_is_an_engine_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fix, the corrupt state above made ``export_update`` raise the raw panic."""
    from crdtsync.errors import EngineError

    doc = Doc()
    doc.text("t").insert(0, "abc")

    def panics(self: pycrdt.Doc, state: bytes | None = None) -> bytes:
        raise PanicException("attempt to divide by zero")

    monkeypatch.setattr(pycrdt.Doc, "get_update", panics)
    with pytest.raises(EngineError, match="divide by zero"):
        doc.export_update()
    with pytest.raises(EngineError):
        doc.export_yjs_update(doc.version)
    monkeypatch.undo()
    assert str(Doc.load(doc.save()).text("t")) == "abc"
