"""The private pycrdt API behind ``crdtsync/model/_engine_private.py``, on the installed pycrdt.

Each test drives one function of that module against a real pycrdt document
and fails with a message naming the pycrdt version if pycrdt changed what it
relies on: update the module (or the pycrdt range in pyproject.toml) then.
"""

from __future__ import annotations

import gc
import importlib.metadata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pycrdt
import pytest

from crdtsync.model._engine_private import (
    Change,
    changed_entries,
    entry_writer,
    observe_entries,
    observe_transactions,
    text_writer,
    update_applier,
)

PYCRDT = importlib.metadata.version("pycrdt")


@contextmanager
def relying_on(function: str) -> Iterator[None]:
    """Turn a failure into a message that names pycrdt's version and our function."""
    try:
        yield
    except (AttributeError, TypeError, AssertionError, RuntimeError) as exc:
        pytest.fail(
            f"pycrdt {PYCRDT} no longer behaves as crdtsync.model._engine_private."
            f"{function} relies on ({type(exc).__name__}: {exc}); update that module, "
            "or pin pycrdt to a version its tests pass on (pyproject.toml)"
        )


def container() -> tuple[pycrdt.Doc[Any], pycrdt.Map[Any]]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    root = doc.get("t", type=pycrdt.Map)
    root["7"] = pycrdt.Map()
    return doc, root["7"]


def updates_of(doc: pycrdt.Doc[Any]) -> tuple[list[bytes], Any]:
    got: list[bytes] = []
    sub = doc.observe(lambda ev: got.append(ev.update))
    return got, sub


def test_entry_writer_commits_its_own_transaction() -> None:
    doc, c = container()
    base = doc.get_update()
    got, _sub = updates_of(doc)
    with relying_on("entry_writer"):
        entry_writer(doc, c)("1", " 2 a0", "d1")
        entry_writer(doc, c)("2", "1 - ", None)
        assert c["1"] == " 2 a0"
        assert c["2"] == "1 - "
        assert isinstance(c["d1"], pycrdt.Map)
        assert len(got) == 2  # one committed transaction each
        other: pycrdt.Doc[Any] = pycrdt.Doc()
        other.apply_update(base)
        for u in got:
            other.apply_update(u)
        assert other.get("t", type=pycrdt.Map).to_py() == {
            "7": {"1": " 2 a0", "2": "1 - ", "d1": {}}
        }


def test_entry_writer_joins_an_open_transaction() -> None:
    doc, c = container()
    got, _sub = updates_of(doc)
    with relying_on("entry_writer"), doc.transaction(origin="edit"):
        entry_writer(doc, c)("1", " 2 a0", None)
        c["x"] = "public"  # the same transaction
        entry_writer(doc, c)("3", " 2 a1", "d3")
    with relying_on("entry_writer"):
        assert len(got) == 1
        assert set(c.keys()) == {"1", "3", "d3", "x"}


def test_entry_writer_lets_engine_errors_through() -> None:
    doc, c = container()
    with relying_on("entry_writer"), pytest.raises(TypeError):
        entry_writer(doc, c)("1", object(), None)  # type: ignore[arg-type]
    with relying_on("entry_writer"):
        entry_writer(doc, c)("1", "ok", None)  # the failed one left no transaction open
        assert c["1"] == "ok"


def test_text_writer_joins_an_open_transaction() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    text = doc.get("t", type=pycrdt.Text)
    text += "héllo"
    got, _sub = updates_of(doc)
    with relying_on("text_writer"):
        insert, remove = text_writer(text)
        with doc.transaction(origin="edit"):
            insert(0, ">")  # engine offsets: UTF-8 bytes
            remove(2, 2)  # the é
            text.insert(len(text), "!")  # a public call joins the same transaction
            insert(1, "ü")
        assert str(text) == ">ühllo!"
        assert len(got) == 1
        other: pycrdt.Doc[Any] = pycrdt.Doc()
        other.apply_update(doc.get_update())
        assert str(other.get("t", type=pycrdt.Text)) == ">ühllo!"


def test_text_writer_outside_a_transaction_is_the_public_call() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    text = doc.get("t", type=pycrdt.Text)
    got, _sub = updates_of(doc)
    with relying_on("text_writer"):
        insert, remove = text_writer(text)
        insert(0, "abc")
        remove(1, 1)
        assert str(text) == "ac"
        assert len(got) == 2  # one committed transaction each
    # out of range: the engine's panic (a BaseException), passed through
    with (
        relying_on("text_writer"),
        doc.transaction(),
        pytest.raises(BaseException, match="Couldn't remove"),
    ):
        remove(5, 1)
    with relying_on("text_writer"):
        insert(2, "d")  # the failed one left no transaction open
        assert str(text) == "acd"


def test_observe_entries_reports_added_and_changed_keys() -> None:
    doc, c = container()
    remote: pycrdt.Doc[Any] = pycrdt.Doc(client_id=9)
    remote.apply_update(doc.get_update())
    rc = remote.get("t", type=pycrdt.Map)["7"]
    seen: list[list[Change] | None] = []
    with relying_on("observe_entries"):
        sub = observe_entries(c, lambda ev: seen.append(changed_entries(ev)))
        before = remote.get_state()
        with remote.transaction():
            rc["5"] = "1 2 a0"
            rc["d5"] = pycrdt.Map({"k": 1})
            rc["6"] = 3.0
        doc.apply_update(remote.get_update(before))
        assert len(seen) == 1  # one event for the transaction
        assert seen[0] is not None
        assert sorted(seen[0]) == [("5", "add", "1 2 a0"), ("6", "add", None), ("d5", "add", None)]
        before = remote.get_state()
        rc["5"] = "changed"
        doc.apply_update(remote.get_update(before))
        assert seen[-1] == [("5", "update", "changed")]
        c["8"] = "ours"  # local writes are reported too (the tree skips them itself)
        assert seen[-1] == [("8", "add", "ours")]
        del sub
        gc.collect()
        c["9"] = "after unsubscribing"
        assert len(seen) == 3


def test_changed_entries_of_an_unreadable_event_is_none() -> None:
    with relying_on("changed_entries"):
        assert changed_entries(object()) is None


def remote_edits() -> tuple[bytes, list[bytes]]:
    """A document's state and two later updates to it (each its own transaction)."""
    src: pycrdt.Doc[Any] = pycrdt.Doc(client_id=9)
    text = src.get("t", type=pycrdt.Text)
    text += "hello"
    base = src.get_update()
    got, _sub = updates_of(src)
    text.insert(5, " world")
    del text[0:1]
    return base, got


def test_update_applier_commits_its_own_transaction() -> None:
    base, ups = remote_edits()
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    doc.apply_update(base)
    got, _sub = updates_of(doc)
    with relying_on("update_applier"):
        apply = update_applier(doc)
        for u in ups:
            apply(u)
        assert str(doc.get("t", type=pycrdt.Text)) == "ello world"
        assert got == ups  # one committed transaction each, observers told
        assert doc._txn is None  # no pycrdt transaction left behind
        with doc.transaction():  # nor an engine one
            doc.get("t", type=pycrdt.Text).insert(0, "H")
        assert str(doc.get("t", type=pycrdt.Text)) == "Hello world"


def test_update_applier_joins_an_open_transaction() -> None:
    base, ups = remote_edits()
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    doc.apply_update(base)
    got, _sub = updates_of(doc)
    with relying_on("update_applier"), doc.transaction(origin="edit"):
        apply = update_applier(doc)
        for u in ups:
            apply(u)
        doc.get("t", type=pycrdt.Text).insert(0, "H")
    with relying_on("update_applier"):
        assert len(got) == 1
        assert str(doc.get("t", type=pycrdt.Text)) == "Hello world"


def test_update_applier_raises_what_observers_raised() -> None:
    base, ups = remote_edits()
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    doc.apply_update(base)

    def boom(_ev: Any) -> None:
        raise ValueError("observer failed")

    _sub = doc.observe(boom)
    with relying_on("update_applier"):
        apply = update_applier(doc)
    with pytest.raises(ExceptionGroup) as info:
        apply(ups[0])
    assert [str(e) for e in info.value.exceptions] == ["observer failed"]
    with relying_on("update_applier"):
        assert str(doc.get("t", type=pycrdt.Text)) == "hello world"  # applied all the same
        assert not doc._exceptions  # nothing left to surface in a later transaction


def test_update_applier_lets_engine_errors_through() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    with relying_on("update_applier"):
        apply = update_applier(doc)
    with pytest.raises(ValueError, match="Cannot decode update"):
        apply(b"\xff\xff\xff")
    with relying_on("update_applier"):
        apply(remote_edits()[0])  # the failed one left no transaction open
        assert str(doc.get("t", type=pycrdt.Text)) == "hello"


def test_observe_transactions_calls_back_with_pycrdt_s_event() -> None:
    base, ups = remote_edits()
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    doc.apply_update(base)
    got: list[bytes] = []
    public, _psub = updates_of(doc)
    with relying_on("observe_transactions"):
        sub, errors = observe_transactions(doc, lambda ev: got.append(bytes(ev.update)))
        assert errors is doc._exceptions
        for u in ups:
            doc.apply_update(u)
        update_applier(doc)(ups[0])  # (nothing new: no event, as for ydoc.observe)
        with doc.transaction():
            doc.get("t", type=pycrdt.Text).insert(0, "H")
        assert got == public
        assert len(got) == len(ups) + 1
        del sub  # dropping the subscription unsubscribes
        gc.collect()
        doc.get("t", type=pycrdt.Text).insert(0, "!")
        assert len(got) == len(ups) + 1
        assert len(public) == len(ups) + 2


def test_observe_transactions_errors_are_raised_after_the_transaction() -> None:
    base, ups = remote_edits()
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    doc.apply_update(base)

    def callback(_ev: Any) -> None:
        try:
            raise ValueError("observer failed")
        except Exception as exc:  # what the callback must do (see the function)
            errors.append(exc)  # the list observe_transactions returned

    with relying_on("observe_transactions"):
        _sub, errors = observe_transactions(doc, callback)
    with pytest.raises(ExceptionGroup) as info:
        doc.apply_update(ups[0])
    assert [str(e) for e in info.value.exceptions] == ["observer failed"]
    with pytest.raises(ExceptionGroup):
        update_applier(doc)(ups[1])
    with relying_on("observe_transactions"):
        assert str(doc.get("t", type=pycrdt.Text)) == "ello world"  # applied all the same
        assert not doc._exceptions
