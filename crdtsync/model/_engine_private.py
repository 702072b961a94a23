"""The only place crdtsync uses pycrdt's private API, one function per use.

Everything else in the model uses pycrdt's public API. Two things the movable
tree does on its hot path have no public equivalent at the speed it needs
(figures from pycrdt 0.14.13 on the development machine, per call):

============================  ===========  ==========  =================================
what                          public API   here        why it matters
============================  ===========  ==========  =================================
write one Y.Map entry          3.6 µs      1.3 µs      a local tree move is one entry;
(its own transaction)                                  Loro moves a node in 2.3 µs
observe a Y.Map that we        +7.6 µs     +0.45 µs    the tree observes its writer's own
write to ourselves             per write   per write   container (remote entries can land
                                                       there too) and skips its own writes
apply one remote keystroke     5.3 µs      4.0 µs      a remote keystroke's import is
(its own transaction)                                  within 2x of pycrdt's own apply
============================  ===========  ==========  =================================

The public ``Map.__setitem__`` wraps each write in pycrdt's ``Transaction``
object; the public ``observe`` builds a ``ReadTransaction`` and a ``MapEvent``
(converting every value) before it calls back, even when the callback then
ignores the event. Both are needed for the movable tree to stay within 2x of
Loro on local moves.

(The keystroke row: pycrdt's ``apply_update`` through its ``Transaction``
object, against the engine's own transaction, on a document with a transaction
observer; the engine work is the same.)

Each function below says which private names it touches.
``tests/model/test_engine_private.py`` exercises every one of them against the
installed pycrdt and fails with a message naming the pycrdt version if pycrdt
changes them; ``pyproject.toml`` pins pycrdt to the range those tests passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pycrdt

__all__ = [
    "Change",
    "changed_entries",
    "entry_writer",
    "observe_entries",
    "observe_transactions",
    "update_applier",
]

#: One changed entry of a Y.Map: ``(key, action, new value if it is a str)``;
#: ``action`` is ``"add"``, ``"update"`` or ``"delete"``.
Change = tuple[str, str, "str | None"]


def entry_writer(
    ydoc: pycrdt.Doc[Any], container: pycrdt.Map[Any]
) -> Callable[[str, str, str | None], None]:
    """A function ``put(key, value, map_key)`` that sets ``container[key] = value``.

    With ``map_key``, it also puts an empty Y.Map there. Inside an open pycrdt
    transaction the entries join it; otherwise they are written and committed
    in a bare engine transaction of their own (nobody observes the document
    then, so there is nothing else to do). The engine handles are looked up
    once, here, not on every write.

    Private names: ``Doc._txn`` (the open transaction, if any), its ``_txn`` (the
    engine transaction), ``Doc._doc.create_transaction()``, the engine
    transaction's ``commit`` and ``drop``, and the engine map's ``insert`` and
    ``insert_map_prelim``.

    ``put`` raises whatever the engine raises (a panic is a ``BaseException``);
    the caller translates it.
    """
    raw = container.integrated
    insert = raw.insert
    engine = ydoc._doc

    def put(key: str, value: str, map_key: str | None) -> None:
        open_txn = ydoc._txn
        if open_txn is not None:
            txn = open_txn._txn
            insert(txn, key, value)
            if map_key is not None:
                raw.insert_map_prelim(txn, map_key)
            return
        txn = engine.create_transaction()
        try:
            insert(txn, key, value)
            if map_key is not None:
                raw.insert_map_prelim(txn, map_key)
            txn.commit()
        finally:
            txn.drop()

    return put


def text_writer(
    ytext: pycrdt.Text,
) -> tuple[Callable[[int, str], None], Callable[[int, int], None]]:
    """``(insert(offset, s), remove(offset, length))`` on an integrated text.

    Inside an open write transaction they call the engine text with that
    transaction's engine transaction, as ``Text.insert`` and ``del text[a:b]``
    do after opening a nested pycrdt ``Transaction`` object (about 1 µs of
    Python per call, a fifth of a typed character's cost inside a
    transaction). Otherwise they are the public calls. Offsets are the
    engine's (UTF-8 bytes).

    Private names: ``Doc._txn`` (the open transaction, if any) and its
    ``_txn`` (the engine transaction), the engine text's ``insert`` and
    ``remove_range``.

    Both raise whatever the engine raises (a panic is a ``BaseException``);
    the caller translates it.
    """
    ydoc = ytext.doc
    raw = ytext.integrated
    raw_insert = raw.insert
    raw_remove = raw.remove_range
    read_only = pycrdt.ReadTransaction

    def insert(offset: int, s: str) -> None:
        open_txn = ydoc._txn
        if open_txn is None or isinstance(open_txn, read_only):
            ytext.insert(offset, s)
            return
        raw_insert(open_txn._txn, offset, s, None)

    def remove(offset: int, length: int) -> None:
        open_txn = ydoc._txn
        if open_txn is None or isinstance(open_txn, read_only):
            del ytext[offset : offset + length]
            return
        raw_remove(open_txn._txn, offset, length)

    return insert, remove


def update_applier(ydoc: pycrdt.Doc[Any]) -> Callable[[bytes], None]:
    """A function ``apply(update)`` that does what ``ydoc.apply_update(update)`` does.

    Without pycrdt's ``Transaction`` object when no transaction is open: the
    update is applied and committed in a bare engine transaction, and what
    transaction observers raised is raised as pycrdt raises it (an
    ``ExceptionGroup``). Inside an open pycrdt transaction, or for a document
    that has a pydantic model or allows multithreading (its lock), it calls
    ``ydoc.apply_update``. For imports
    nobody observes but the document itself: observers that read the document
    from their callback need pycrdt's ``Transaction`` (they would find no open
    one here and try to start a second).

    Private names: ``Doc._txn``, ``Doc._Model``, ``Doc._allow_multithreading``,
    ``Doc._exceptions``,
    ``Doc._doc.create_transaction()`` and ``apply_update``, the engine
    transaction's ``commit`` and ``drop``.

    ``apply`` raises whatever the engine raises (a panic is a
    ``BaseException``); the caller translates it.
    """
    engine = ydoc._doc
    exceptions: list[Exception] = ydoc._exceptions

    def apply(update: bytes) -> None:
        if ydoc._txn is not None or ydoc._Model is not None or ydoc._allow_multithreading:
            ydoc.apply_update(update)
            return
        txn = engine.create_transaction()
        try:
            engine.apply_update(txn, update)
            txn.commit()
        finally:
            txn.drop()
        if exceptions:
            raised = tuple(exceptions)
            exceptions.clear()
            raise ExceptionGroup("Observer callback error", raised)

    return apply


def observe_transactions(
    ydoc: pycrdt.Doc[Any], callback: Callable[[Any], None]
) -> tuple[Any, list[Exception]]:
    """Subscribe ``callback(event)`` to ``ydoc``'s transactions, as ``ydoc.observe`` does.

    ``ydoc.observe`` has the engine call a Python wrapper
    (``functools.partial(observe_callback, ...)``) that calls the callback and
    collects what it raises into the document's list of observer errors, which
    pycrdt raises (an ``ExceptionGroup``) once the transaction is over. Here
    the engine calls ``callback`` itself: one Python call less per
    transaction, local or imported. So ``callback`` must catch what it raises
    (``Exception``) and append it to the list returned here; an exception
    escaping it would be left pending in the interpreter by the engine.

    Private names: ``Doc._doc.observe`` (the engine document's, which passes
    the same ``TransactionEvent``) and ``Doc._exceptions``.

    Returns:
        ``(subscription, errors)``: keep the subscription (dropping it
        unsubscribes); ``errors`` is the document's list of observer errors.
    """
    return ydoc._doc.observe(callback), ydoc._exceptions


def observe_entries(container: pycrdt.Map[Any], callback: Callable[[Any], None]) -> Any:
    """Call ``callback(event)`` after every transaction that changed ``container``'s entries.

    Shallow: changes inside nested containers are not reported. The callback
    gets the engine's event as is, so that it can ignore it at no cost (the
    tree's own writes); it reads it with :func:`changed_entries` only. It must
    not raise.

    Private names: the engine map's ``observe``.

    Returns:
        The subscription: dropping it unsubscribes.
    """
    return container.integrated.observe(callback)


def changed_entries(event: Any) -> list[Change] | None:
    """The changed keys of an event from :func:`observe_entries`.

    Returns:
        ``[(key, action, new value if it is a str)]``, or ``None`` if the event
        could not be read (the caller then reads the whole container again).

    Private names: the engine event's ``keys``.
    """
    try:
        changes: list[Change] = []
        for k, ch in event.keys.items():
            new = ch.get("newValue")
            changes.append((k, ch.get("action"), new if type(new) is str else None))
    except Exception:  # an event we cannot read: the caller reads everything again
        return None
    return changes
