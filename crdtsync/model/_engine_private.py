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
============================  ===========  ==========  =================================

The public ``Map.__setitem__`` wraps each write in pycrdt's ``Transaction``
object; the public ``observe`` builds a ``ReadTransaction`` and a ``MapEvent``
(converting every value) before it calls back, even when the callback then
ignores the event. Both are needed for the movable tree to stay within 2x of
Loro on local moves.

Each function below says which private names it touches.
``tests/model/test_engine_private.py`` exercises every one of them against the
installed pycrdt and fails with a message naming the pycrdt version if pycrdt
changes them; ``pyproject.toml`` pins pycrdt to the range those tests passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pycrdt

__all__ = ["Change", "observe_entries", "put_entry"]

#: One changed entry of a Y.Map: ``(key, action, new value if it is a str)``;
#: ``action`` is ``"add"``, ``"update"`` or ``"delete"``.
Change = tuple[str, str, "str | None"]


def put_entry(
    ydoc: pycrdt.Doc[Any], container: pycrdt.Map[Any], key: str, value: str, map_key: str | None
) -> None:
    """Set ``container[key] = value``, and an empty Y.Map at ``map_key`` if given.

    Inside an open pycrdt transaction the entries join it; otherwise they are
    written and committed in a bare engine transaction of their own (nobody
    observes the document then, so there is nothing else to do).

    Private names: ``Doc._txn`` (the open transaction, if any), its ``_txn`` (the
    engine transaction), ``Doc._doc.create_transaction()``, and the engine map's
    ``insert`` and ``insert_map_prelim``.

    Raises:
        BaseException: whatever the engine raises (a panic is a ``BaseException``);
            the caller translates it.
    """
    raw = container.integrated
    open_txn = ydoc._txn
    if open_txn is not None:
        txn = open_txn._txn
        raw.insert(txn, key, value)
        if map_key is not None:
            raw.insert_map_prelim(txn, map_key)
        return
    txn = ydoc._doc.create_transaction()
    try:
        raw.insert(txn, key, value)
        if map_key is not None:
            raw.insert_map_prelim(txn, map_key)
        txn.commit()
    finally:
        txn.drop()


def observe_entries(
    container: pycrdt.Map[Any],
    wanted: Callable[[], bool],
    callback: Callable[[list[Change] | None], None],
) -> Any:
    """Call ``callback(changes)`` after every transaction that changed ``container``'s entries.

    Shallow: changes inside nested containers are not reported. ``wanted()`` is
    asked first, and nothing else is done when it says no (the tree's own
    writes). ``changes`` lists the changed keys; it is ``None`` if the event
    could not be read (the caller then reads the whole container again). The
    callback must not raise.

    Private names: the engine map's ``observe`` and its event's ``keys``.

    Returns:
        The subscription: dropping it unsubscribes.
    """

    def on_event(event: Any) -> None:
        if not wanted():
            return
        try:
            changes: list[Change] | None = []
            assert changes is not None
            for k, ch in event.keys.items():
                new = ch.get("newValue")
                changes.append((k, ch.get("action"), new if type(new) is str else None))
        except Exception:  # an event we cannot read: the caller reads everything again
            changes = None
        callback(changes)

    return container.integrated.observe(on_event)
