"""The ``BaseException`` handlers of the model turn engine panics into EngineError, and only those.

pycrdt's Rust panics arrive as ``pyo3_runtime.PanicException``, a
``BaseException``, so the model catches ``BaseException`` around engine calls.
Those handlers must translate a panic and let every other ``BaseException``
through unchanged: ``KeyboardInterrupt``, ``SystemExit`` and
``asyncio.CancelledError`` are how a process or a task is stopped, and one
turned into a library error (or swallowed) would keep it running.

The panic here is a real one: the engine bug of
tests/model/test_engine_panic.py (a raw pycrdt delete ending inside "é").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pycrdt
import pytest

from crdtsync import ChangeEvent, Doc, EngineError
from crdtsync.model.containers import engine_error

EXITS: list[Callable[[], BaseException]] = [
    KeyboardInterrupt,
    lambda: SystemExit(3),
    asyncio.CancelledError,
    GeneratorExit,
]


def real_panic() -> BaseException:
    doc = pycrdt.Doc(client_id=1)
    text = doc.get("t", type=pycrdt.Text)
    text += "é"
    # If nothing panics, the engine is fixed: see tests/model/test_engine_panic.py.
    with pytest.raises(BaseException, match="divide by zero") as info:
        del text[0:1]
    assert type(info.value).__name__ == "PanicException"
    assert not isinstance(info.value, Exception)
    return info.value


def edit_then_raise(doc: Doc, exc: BaseException) -> None:
    """An edit in a transaction, then ``exc`` before the transaction ends."""
    with doc.transaction():
        doc.map("m")["a"] = 1
        raise exc


def test_engine_error_translates_a_panic_and_returns_anything_else_as_is() -> None:
    translated = engine_error(real_panic())
    assert isinstance(translated, EngineError)
    for make in EXITS:
        exc = make()
        assert engine_error(exc) is exc
    plain = ValueError("x")
    assert engine_error(plain) is plain


@pytest.mark.parametrize("make", EXITS)
def test_an_exit_inside_a_transaction_passes_through_and_the_doc_stays_usable(
    make: Callable[[], BaseException],
) -> None:
    doc = Doc()
    events: list[ChangeEvent] = []
    doc.observe(events.append)
    exc = make()
    with pytest.raises(type(exc)) as info:
        edit_then_raise(doc, exc)
    assert info.value is exc  # not wrapped, not replaced
    assert not doc.in_transaction
    doc.map("m")["b"] = 2  # the document still works, and still reports
    assert doc.map("m").to_py() == {"a": 1, "b": 2}
    assert events
    assert events[-1].local


def test_a_panic_inside_a_transaction_becomes_an_engine_error() -> None:
    doc = Doc()
    panic = real_panic()
    with pytest.raises(EngineError, match="the CRDT engine failed"):
        edit_then_raise(doc, panic)
    assert not doc.in_transaction
    doc.map("m")["b"] = 2
    assert doc.map("m").to_py() == {"a": 1, "b": 2}


@pytest.mark.parametrize("make", EXITS)
def test_engine_write_lets_exits_through_and_translates_panics(
    make: Callable[[], BaseException],
) -> None:
    doc = Doc()
    exc = make()

    def stopped() -> bool:
        raise exc

    with pytest.raises(type(exc)) as info:
        doc.engine_write("undo", stopped)
    assert info.value is exc
    panic = real_panic()

    def panics() -> bool:
        raise panic

    with pytest.raises(EngineError):
        doc.engine_write("undo", panics)
    doc.text("t").insert(0, "still fine")
    assert str(doc.text("t")) == "still fine"
