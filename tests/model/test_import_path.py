"""The import path's shortcuts behave as the general path does.

``Doc.import_yjs_update`` takes a short path for the common import (a live
index, nothing held, no parse to reuse: ``Checker.parse_begin``, then the
engine's own transaction, then the index's commit) and the general one
otherwise; the transaction hook is called by the engine without pycrdt's
wrapper. These tests drive each condition that leaves the short path, and
what the hook raises, on both checkers.
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from helpers.native import checker_kinds

from crdtsync import Doc
from crdtsync.errors import EngineError, InvalidOperationError, MalformedUpdateError


@pytest.fixture(params=checker_kinds(), ids=lambda n: "native" if n else "python")
def native(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _keystrokes(n: int = 6) -> list[bytes]:
    src: pycrdt.Doc[Any] = pycrdt.Doc(client_id=9)
    text = src.get("body", type=pycrdt.Text)
    ups: list[bytes] = []
    src.observe(lambda ev: ups.append(ev.update))
    for i in range(n):
        text.insert(i, "abcdef"[i % 6])
    text.format(0, 2, {"bold": True})
    del text[1:2]
    return ups


def test_imports_in_every_state_agree_with_a_plain_replica(native: bool) -> None:
    ups = _keystrokes()
    ref: pycrdt.Doc[Any] = pycrdt.Doc()
    for u in ups:
        ref.apply_update(u)
    doc = Doc(peer_id=1, native=native)
    seen: list[tuple[bytes, Any, bool]] = []
    doc.observe_updates(lambda u, o, local: seen.append((u, o, local)))
    doc.import_yjs_update(ups[0])  # the first import (the index goes live)
    doc.import_yjs_update(ups[2])  # out of order: held
    assert doc.pending == 1
    doc.import_yjs_update(ups[1], origin="peer")  # releases the held one
    assert doc.pending == 0
    doc.text("body").insert(0, "L")  # a local edit, indexed before the next import
    with doc.transaction(origin=doc):
        doc.text("body").insert(1, "M")
    doc.import_yjs_update(ups[3])
    doc.observe(lambda ev: None)  # deep observers: pycrdt's own transaction
    doc.import_yjs_update(ups[4])
    for u in ups[5:]:  # a format (formatting from then on), a deletion
        doc.import_yjs_update(u)
    doc.import_yjs_update(ups[-1])  # a duplicate: no change
    ref_text = str(ref.get("body", type=pycrdt.Text))
    assert str(doc.text("body")) == "LM" + ref_text
    # the held update keeps the origin it arrived with
    assert [o for _, o, local in seen if not local][:3] == [None, "peer", None]
    assert [o for _, o, local in seen if local] == [None, doc]
    # the index followed everything: a replica built from the bytes agrees
    other = Doc(peer_id=2, native=native)
    other.import_yjs_update(doc.export_yjs_update())
    assert str(other.text("body")) == str(doc.text("body"))
    assert doc.index().state() == {c: doc.version.get(c) for c in (1, 9)}


def test_a_refused_import_leaves_the_document_unchanged(native: bool) -> None:
    ups = _keystrokes()
    doc = Doc(peer_id=1, native=native)
    doc.import_yjs_update(ups[0])
    before = (doc.export_yjs_update(), doc.index().snapshot())
    bad = ups[1][:-2] + b"\xff\xff"
    with pytest.raises(MalformedUpdateError):
        doc.import_yjs_update(bad)
    assert (doc.export_yjs_update(), doc.index().snapshot()) == before
    doc.import_yjs_update(ups[1])
    assert str(doc.text("body")) == "ab"


def test_imports_after_the_index_is_rebuilt_use_the_new_index(native: bool) -> None:
    ups = _keystrokes()
    doc = Doc(peer_id=1, native=native)
    doc.import_yjs_update(ups[0])
    old = doc.index()
    doc._rebuild_index()  # what a bug in the index leads to
    new = doc.index()
    assert new is not old
    doc.import_yjs_update(ups[1])
    assert new.state() == {9: 2}
    assert old.state() == {9: 1}  # the old one no longer hears of imports


def test_what_the_transaction_hook_raises_reaches_the_caller(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ups = _keystrokes()
    doc = Doc(peer_id=1, native=native)
    doc.import_yjs_update(ups[0])  # the hook is subscribed from here on
    monkeypatch.setattr("crdtsync.model.doc._LOCAL_BATCH", 1)

    def broken() -> None:
        raise RuntimeError("recording failed")

    monkeypatch.setattr(doc, "_record_local", broken)
    with pytest.raises(ExceptionGroup) as info:
        doc.text("body").insert(0, "x")
    assert [str(e) for e in info.value.exceptions] == ["recording failed"]
    assert str(doc.text("body")) == "xa"  # the edit is kept (CRDT edits cannot roll back)
    assert not doc._engine_errors  # nothing left over for a later transaction
    monkeypatch.undo()
    doc.import_yjs_update(ups[1])
    assert str(doc.text("body")) == "xab"


def _panic() -> BaseException:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
    text = doc.get("t", type=pycrdt.Text)
    text += "é"
    # The engine bug of tests/model/test_engine_panic.py (a delete inside "é").
    with pytest.raises(BaseException, match="divide by zero") as info:
        del text[0:1]
    return info.value


@pytest.mark.parametrize("kind", ["panic", "error", "exit"])
def test_the_engine_failing_on_a_short_path_import(
    native: bool, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ups = _keystrokes()
    doc = Doc(peer_id=1, native=native)
    doc.observe_updates(lambda u, o, local: None)
    doc.import_yjs_update(ups[0])
    before = doc.index().snapshot()
    failure: BaseException = {
        "panic": _panic(),
        "error": ValueError("engine said no"),
        "exit": KeyboardInterrupt(),
    }[kind]

    def failing(_update: bytes) -> None:
        raise failure

    monkeypatch.setattr(doc, "_engine_apply_bare", failing)
    expected: type[BaseException] = KeyboardInterrupt if kind == "exit" else EngineError
    with pytest.raises(expected) as info:
        doc.import_yjs_update(ups[1])
    if kind == "exit":
        assert info.value is failure  # passed through unchanged
    elif kind == "error":
        assert "refused a validated update" in str(info.value)
        assert info.value.__cause__ is failure
    else:
        assert "the CRDT engine failed" in str(info.value)
    assert doc.index().snapshot() == before  # the index rolled back
    assert not doc.in_transaction
    assert not doc.importing
    monkeypatch.undo()
    doc.import_yjs_update(ups[1])  # and the same update imports afterwards
    assert str(doc.text("body")) == "ab"


@pytest.mark.parametrize("first", [True, False], ids=["first-import", "later-import"])
@pytest.mark.parametrize("how", ["import_yjs_update", "import_update"])
def test_an_import_inside_an_open_transaction_is_refused_cleanly(first: bool, how: str) -> None:
    # pycrdt cannot nest the import's (remote) transaction in the caller's; the
    # library refuses before touching anything, with its own error.
    a = Doc()
    a.text("t").insert(0, "hi")
    b = Doc()
    if not first:
        b.import_yjs_update(a.export_yjs_update())
    a.text("t").insert(2, "!")
    payload = a.export_yjs_update() if how == "import_yjs_update" else a.export_update()
    before = b.to_py()
    with b.transaction():
        b.text("x").insert(0, "local")
        with pytest.raises(InvalidOperationError, match="inside an open transaction"):
            getattr(b, how)(payload)
    assert b.to_py() == {**before, "x": "local"}
    getattr(b, how)(payload)  # once the transaction has ended
    assert b.to_py()["t"] == "hi!"
