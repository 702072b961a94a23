"""Undo and redo of this replica's own edits.

Theory of operation
-------------------
An :class:`UndoManager` wraps the engine's undo manager (Yrs', the same
algorithm as ``Y.UndoManager``): it records the local transactions that change
the containers it tracks, and undoing one *reverts that transaction's effect
on the current document*, not the document's state. What others wrote in the
meantime stays: undoing "insert 'abc' at 0" after a peer typed "xyz" after it
deletes the "abc" items and leaves "xyz" where it is. Undo and redo are
ordinary local edits: they are sent to peers and stored like typing, and every
replica converges on the result.

Which transactions are recorded (the engine's rule):

* only local edits: imported updates (:meth:`Doc.import_update` and sync) are
  never recorded, whatever origin the importer gave them;
* with ``origins=None`` (the default), the local edits made outside any
  :meth:`Doc.transaction` with an origin, i.e. plain ``text.insert(...)`` calls;
* with ``origins`` given, only the transactions opened with one of those
  origins (``with doc.transaction(origin="editor"): ...``). An editor that
  gives its own origin to its edits thus undoes its own edits, never those of a
  script running in the same process.

Consecutive recorded transactions less than ``capture_timeout`` seconds apart
are merged into one undo step (typing a word undoes as a word);
:meth:`UndoManager.stop_capturing` ends the current step early (an editor calls
it when the caret jumps elsewhere).

Undo and redo run as transactions whose origin is the manager itself, so
observers see ``event.origin is manager`` with ``event.local`` true.

What can be tracked: texts, lists, maps and counters (undoing an increment
sets the writer's own running total back). Registers and trees cannot: a
register resolves concurrent writes by clock and a tree is a log of moves,
and reverting their engine entries would break both. Do not track a map or list
that holds registers or trees either, since edits inside a tracked container are
recorded with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING

import pycrdt

from crdtsync.errors import InvalidOperationError
from crdtsync.model.containers import Container, Counter, List, Map, Text

if TYPE_CHECKING:
    from crdtsync.model.doc import Doc

__all__ = ["UndoManager"]

_TRACKABLE = (Text, List, Map, Counter)


class UndoManager:
    """Undo and redo of this replica's own edits to some containers.

    Example:
        >>> from crdtsync import Doc
        >>> doc = Doc()
        >>> body = doc.text("body")
        >>> undo = doc.undo_manager([body], capture_timeout=0)
        >>> body.insert(0, "hello")
        >>> body.insert(5, " world")
        >>> undo.undo()
        True
        >>> str(body)
        'hello'
        >>> undo.redo()
        True
        >>> str(body)
        'hello world'

    Args:
        doc: the document.
        containers: the containers (of ``doc``) whose edits are recorded:
            :class:`Text`, :class:`List`, :class:`Map` or :class:`Counter`.
        origins: record only local transactions opened with one of these origins
            (hashable values compared by equality); None records the local edits
            made without an origin.
        capture_timeout: seconds within which consecutive edits merge into one
            undo step (0: every transaction is a step of its own).
        clock: wall clock in seconds (default :func:`time.monotonic`), used only
            for ``capture_timeout``; tests pass a fake one.

    Raises:
        InvalidOperationError: no containers, a container of another document or
            not in a document yet, a kind that cannot be undone, an unhashable
            origin or a negative ``capture_timeout``.
    """

    def __init__(
        self,
        doc: Doc,
        containers: Iterable[Container],
        *,
        origins: Iterable[Hashable] | None = None,
        capture_timeout: float = 0.5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        scopes = list(containers)
        if not scopes:
            raise InvalidOperationError("an undo manager needs at least one container")
        for c in scopes:
            if not isinstance(c, _TRACKABLE):
                raise InvalidOperationError(
                    f"a {type(c).__name__} cannot be undone (texts, lists, maps and counters can)"
                )
            if c._doc is not doc:
                raise InvalidOperationError("every container must belong to this document")
        if not isinstance(capture_timeout, int | float) or not capture_timeout >= 0:
            raise InvalidOperationError("capture_timeout must be a number of seconds >= 0")
        tracked = None if origins is None else list(origins)
        for origin in tracked or ():
            try:
                hash(origin)
            except TypeError:
                raise InvalidOperationError(f"origin {origin!r} is not hashable") from None
        # The document the undo and redo transactions are made in.
        self._doc = doc
        doc.watched_by_undo()  # (so that imports are never recorded as local edits)
        # The engine's clock: the wall clock in milliseconds, moved on by
        # stop_capturing. The engine keeps it in Rust, out of sight of Python's
        # cycle collector, so it must not hold this manager (a bound method
        # would keep the manager and its document alive forever).
        self._time = _StepClock(clock or time.monotonic)
        # The capture window, in the engine's milliseconds.
        self._window_ms = round(capture_timeout * 1000)
        self._engine = pycrdt.UndoManager(
            capture_timeout_millis=self._window_ms, timestamp=self._time
        )
        for c in scopes:
            self._engine.expand_scope(c._y)
        for origin in tracked or ():
            self._engine.include_origin(origin)

    @property
    def can_undo(self) -> bool:
        """Whether there is a step to undo."""
        return bool(self._engine.can_undo())

    @property
    def can_redo(self) -> bool:
        """Whether there is an undone step to redo."""
        return bool(self._engine.can_redo())

    def undo(self) -> bool:
        """Revert the latest recorded step that is not undone yet.

        Returns:
            True if something was undone (False: nothing to undo).
        """
        return self._doc.engine_write(self, self._engine.undo)

    def redo(self) -> bool:
        """Re-apply the latest undone step (until a new edit is recorded).

        Returns:
            True if something was redone (False: nothing to redo).
        """
        return self._doc.engine_write(self, self._engine.redo)

    def stop_capturing(self) -> None:
        """Make the next recorded edit start a new undo step, however soon it comes."""
        # The engine merges an edit into the previous step when their timestamps
        # are less than the window apart; moving our clock on by the window makes
        # the next timestamp at least that far from the last one.
        self._time.skew_ms += self._window_ms + 1

    def clear(self) -> None:
        """Forget every undo and redo step."""
        self._engine.clear()


class _StepClock:
    """The undo engine's timestamps: ``clock()`` in milliseconds plus a skew."""

    __slots__ = ("clock", "skew_ms")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        # Added by stop_capturing, so that the next edit starts a new step.
        self.skew_ms = 0

    def __call__(self) -> int:
        return int(self.clock() * 1000) + self.skew_ms
