"""The document's checker: one interface over the Python and the Rust document index.

Theory of operation
===================

A ``crdtsync.Doc`` checks every update from outside against an index of what
it holds (:class:`crdtsync.format.yupdate.DocIndex`: sequence order, rules
S1-S10, pending deletions) before pycrdt sees it. There are two
implementations of that index, with the same behaviour:

* :class:`PyChecker` wraps the Python reference, :class:`~crdtsync.format.yupdate.DocIndex`,
  and the Python parser;
* :class:`NativeChecker` wraps ``crdtsync._native.DocIndex``, the Rust port
  (``native/core/src/index.rs``), and the Rust parser: the update is parsed
  once into Rust (``crdtsync._native.Update``) and stays there, from the
  parse (or the compact decoder's own parse) through the checks to the bytes
  handed to pycrdt.

:func:`new_checker` picks the Rust one when the extension is built and not
turned off (``CRDTSYNC_PURE_PYTHON``, see :mod:`crdtsync.format.accel`).
``scripts/fuzz_index.py`` feeds both the same update sequences and fails on
any disagreement: accept or refuse (and the error class), the bytes for the
engine, and the index state (:meth:`Checker.snapshot`).

One update at a time goes through :meth:`Checker.prepare` (its deletions of
clocks the document does not have yet are split off into a delete-only
update to hold, as ``Doc`` does), :meth:`Checker.begin` (check and
integrate), then :meth:`Checker.commit` once pycrdt applied the bytes of
``prepare``, or :meth:`Checker.rollback` if it failed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

from crdtsync.format import accel
from crdtsync.format.accel import NativeUpdate, Parsed
from crdtsync.format.yupdate import (
    STRUCT_SKIP,
    ContainerKey,
    DocIndex,
    IndexUpdate,
    ParsedUpdate,
    UpdateLimits,
    encode_delete_set,
    encode_update,
    parse_update,
)

__all__ = [
    "Checker",
    "NativeChecker",
    "NativeUpdate",
    "Parsed",
    "Prepared",
    "PyChecker",
    "new_checker",
]


class Prepared(NamedTuple):
    """An update ready for :meth:`Checker.begin`.

    Attributes:
        engine: the bytes to hand pycrdt (the update, or the update without
            the deletions split off into ``later``).
        parsed: what ``begin`` integrates.
        later: a delete-only v1 update of the deletions of clocks the
            document does not have yet (to hold), or None.
        later_ranges: how many ranges ``later`` deletes.
        needs: for ``later``: the first missing clock of each of its clients.
    """

    engine: bytes
    parsed: Parsed
    later: bytes | None = None
    later_ranges: int = 0
    needs: tuple[tuple[int, int], ...] = ()


class Checker(ABC):
    """A document's index and the parser that feeds it (see the module docstring)."""

    #: Whether this is the Rust implementation.
    native: bool = False

    @abstractmethod
    def parse(self, data: bytes, limits: UpdateLimits) -> Parsed:
        """Parses a v1 update under ``limits`` (every rule of ``parse_update``).

        Raises:
            MalformedUpdateError: the bytes are not a well-formed update.
            UpdateLimitError: a limit is exceeded.
        """

    @abstractmethod
    def writes(self, parsed: Parsed) -> dict[int, int]:
        """Client id -> clock after the update's last struct that is not a Skip."""

    @abstractmethod
    def state_of(self, client: int) -> int:
        """The document's next clock for ``client`` (0 if it has none)."""

    @abstractmethod
    def state(self) -> dict[int, int]:
        """The state vector the index holds."""

    @abstractmethod
    def set_root_type(self, name: str, type_ref: int) -> None:
        """Declares a root's type (the first declaration stays)."""

    @abstractmethod
    def prepare(self, update: bytes, parsed: Parsed) -> Prepared:
        """Splits off the deletions of clocks the document will not have after the update."""

    @abstractmethod
    def begin(self, prepared: Prepared, limits: UpdateLimits) -> None:
        """Checks the update against the document and integrates its structs.

        On refusal the index is unchanged; otherwise :meth:`commit` or
        :meth:`rollback` must follow.

        Raises:
            MissingUpdatesError: a dependency is neither here nor in the update.
            MalformedUpdateError: a rule is broken.
            UpdateLimitError: too many pending deletions.
        """

    @property
    @abstractmethod
    def formatting(self) -> bool:
        """Whether a Format item was integrated (ever, or by the open update)."""

    @abstractmethod
    def commit(self) -> list[int]:
        """Records the open update's deletions; returns the clients whose clocks moved."""

    @abstractmethod
    def rollback(self) -> None:
        """Undoes the open update."""

    @abstractmethod
    def record_local(self, update: bytes, limits: UpdateLimits) -> None:
        """Records a local transaction's update (already applied by pycrdt)."""

    @abstractmethod
    def record_diff(self, data: bytes, limits: UpdateLimits) -> None:
        """Records the document's own changes from a state-vector diff."""

    @abstractmethod
    def record_delete_set(self, delete_set: bytes, limits: UpdateLimits) -> None:
        """Records deletions pycrdt applied, given as an encoded v1 delete set."""

    @abstractmethod
    def contains(self, parsed: Parsed) -> bool:
        """Whether every struct is within the known clocks and every range already deleted."""

    @abstractmethod
    def where_of(self, client: int, clock: int) -> tuple[ContainerKey, str | None] | None:
        """``(container, map key)`` of the list holding ``client:clock`` (None: GC'd or absent)."""

    @abstractmethod
    def runs(self) -> int:
        """How many runs the index holds."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """Everything the index holds (``DocIndex.snapshot``'s shape on both)."""

    @abstractmethod
    def check_invariants(self) -> None:
        """Raises AssertionError if an invariant of the index is broken."""

    @abstractmethod
    def fresh(self) -> Checker:
        """An empty checker of the same kind with the same declared root types."""

    @property
    def poisoned(self) -> bool:
        """Whether a bug left the index unusable (rebuild it from the engine)."""
        return False


# --------------------------------------------------------------------------
# The Python reference
# --------------------------------------------------------------------------


class PyChecker(Checker):
    """The Python reference: :class:`~crdtsync.format.yupdate.DocIndex`."""

    native = False

    def __init__(self, root_types: Mapping[str, int] | None = None) -> None:
        self.index = DocIndex(root_types)
        self._txn: IndexUpdate | None = None

    def parse(self, data: bytes, limits: UpdateLimits) -> ParsedUpdate:
        """See :meth:`Checker.parse`."""
        return parse_update(data, limits)

    def writes(self, parsed: Parsed) -> dict[int, int]:
        """See :meth:`Checker.writes`."""
        return _py(parsed).state_vector_after()

    def state_of(self, client: int) -> int:
        """See :meth:`Checker.state_of`."""
        return self.index.state.get(client, 0)

    def state(self) -> dict[int, int]:
        """See :meth:`Checker.state`."""
        return dict(self.index.state)

    def set_root_type(self, name: str, type_ref: int) -> None:
        """See :meth:`Checker.set_root_type`."""
        self.index.root_types.setdefault(name, type_ref)

    def prepare(self, update: bytes, parsed: Parsed) -> Prepared:
        """See :meth:`Checker.prepare`."""
        p = _py(parsed)
        if not p.delete_set:
            return Prepared(update, p)
        now, later = split_deletes(p, self.index.state)
        if not later:
            return Prepared(update, p)
        engine = (
            update[: p.ds_pos] + encode_delete_set(now)
            if p.ds_pos >= 0
            else encode_update(ParsedUpdate(p.clients, now))
        )
        return Prepared(
            engine,
            ParsedUpdate(p.clients, now, -1),
            encode_update(ParsedUpdate({}, later)),
            sum(len(r) for r in later.values()),
            tuple((client, ranges[0][0]) for client, ranges in later.items()),
        )

    def begin(self, prepared: Prepared, limits: UpdateLimits) -> None:
        """See :meth:`Checker.begin`."""
        self._txn = self.index.begin(_py(prepared.parsed), limits)

    @property
    def formatting(self) -> bool:
        """See :attr:`Checker.formatting`."""
        return self.index.formatting or (self._txn is not None and self._txn.formatting)

    def commit(self) -> list[int]:
        """See :meth:`Checker.commit`."""
        txn, self._txn = self._txn, None
        if txn is None:
            return []
        txn.commit()
        return list(txn.old_state)

    def rollback(self) -> None:
        """See :meth:`Checker.rollback`."""
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.rollback()

    def record_local(self, update: bytes, limits: UpdateLimits) -> None:
        """See :meth:`Checker.record_local`."""
        self.index.record(parse_update(update, limits))

    def record_diff(self, data: bytes, limits: UpdateLimits) -> None:
        """See :meth:`Checker.record_diff`."""
        self.index.record_diff(data, limits)

    def record_delete_set(self, delete_set: bytes, limits: UpdateLimits) -> None:
        """See :meth:`Checker.record_delete_set`."""
        self.index.record_deletes(parse_update(b"\x00" + delete_set, limits).delete_set)

    def contains(self, parsed: Parsed) -> bool:
        """See :meth:`Checker.contains`."""
        p = _py(parsed)
        state = self.index.state
        for client, structs in p.clients.items():
            if structs[-1].end > state.get(client, 0):
                return False
        return self.index.covers(p.delete_set)

    def where_of(self, client: int, clock: int) -> tuple[ContainerKey, str | None] | None:
        """See :meth:`Checker.where_of`."""
        found = self.index.lookup(client, clock)
        where = None if found is None else found[1].where
        if where is None:
            return None
        sub = found[1].seq.sub if found is not None and found[1].seq is not None else None
        return (where.key, sub)

    def runs(self) -> int:
        """See :meth:`Checker.runs`."""
        return self.index.runs()

    def snapshot(self) -> dict[str, Any]:
        """See :meth:`Checker.snapshot`."""
        return self.index.snapshot()

    def check_invariants(self) -> None:
        """See :meth:`Checker.check_invariants`."""
        self.index.check_invariants()

    def fresh(self) -> PyChecker:
        """See :meth:`Checker.fresh`."""
        return PyChecker(self.index.root_types)


def _py(parsed: Parsed) -> ParsedUpdate:
    if not isinstance(parsed, ParsedUpdate):
        raise TypeError("the Python checker takes updates parsed by the Python parser")
    return parsed


def split_deletes(
    parsed: ParsedUpdate, state: Mapping[int, int]
) -> tuple[dict[int, list[tuple[int, int]]], dict[int, list[tuple[int, int]]]]:
    """The delete set cut at the clocks the document will have after the update's structs.

    Returns:
        ``(now, later)``: the ranges of clocks the document will have, and
        the ranges (or parts) of clocks it will still lack.
    """
    now: dict[int, list[tuple[int, int]]] = {}
    later: dict[int, list[tuple[int, int]]] = {}
    for client, ranges in parsed.delete_set.items():
        have = state.get(client, 0)
        structs = parsed.clients.get(client)
        if structs:
            for s in reversed(structs):
                if s.kind != STRUCT_SKIP:
                    have = max(have, s.end)
                    break
        for clock, length in ranges:
            end = clock + length
            if end <= have:
                now.setdefault(client, []).append((clock, length))
            elif clock >= have:
                later.setdefault(client, []).append((clock, length))
            else:
                now.setdefault(client, []).append((clock, have - clock))
                later.setdefault(client, []).append((have, end - have))
    return now, later


# --------------------------------------------------------------------------
# The Rust port
# --------------------------------------------------------------------------


class NativeChecker(Checker):
    """The Rust port: ``crdtsync._native.DocIndex`` and the Rust parser."""

    native = True

    def __init__(self, root_types: Mapping[str, int] | None = None) -> None:
        mod = accel.native_module()
        if mod is None:
            raise RuntimeError("crdtsync._native is not available")
        self._mod: Any = mod
        self.index: Any = mod.DocIndex(dict(root_types or {}))
        self._root_types: dict[str, int] = dict(root_types or {})
        # UpdateLimits read once into the Rust struct (two objects in turn: a
        # Doc's update limits and its document limits).
        self._limits_a: tuple[UpdateLimits | None, Any] = (None, None)
        self._limits_b: tuple[UpdateLimits | None, Any] = (None, None)

    def _native_limits(self, limits: UpdateLimits) -> Any:
        if limits is self._limits_a[0]:
            return self._limits_a[1]
        if limits is self._limits_b[0]:
            return self._limits_b[1]
        native = self._mod.Limits(limits)
        self._limits_b = self._limits_a
        self._limits_a = (limits, native)
        return native

    def parse(self, data: bytes, limits: UpdateLimits) -> NativeUpdate:
        """See :meth:`Checker.parse`."""
        return cast(NativeUpdate, self._mod.parse_update(data, self._native_limits(limits)))

    def writes(self, parsed: Parsed) -> dict[int, int]:
        """See :meth:`Checker.writes`."""
        return _native_update(parsed).writes()

    def state_of(self, client: int) -> int:
        """See :meth:`Checker.state_of`."""
        return int(self.index.state_of(client))

    def state(self) -> dict[int, int]:
        """See :meth:`Checker.state`."""
        return cast(dict[int, int], self.index.state())

    def set_root_type(self, name: str, type_ref: int) -> None:
        """See :meth:`Checker.set_root_type`."""
        self._root_types.setdefault(name, type_ref)
        self.index.set_root_type(name, type_ref)

    def prepare(self, update: bytes, parsed: Parsed) -> Prepared:
        """See :meth:`Checker.prepare`."""
        engine, later, n_later, needs = self.index.prepare(parsed)
        if later is None:
            return Prepared(update, parsed)
        return Prepared(engine, parsed, later, n_later, tuple(needs))

    def begin(self, prepared: Prepared, limits: UpdateLimits) -> None:
        """See :meth:`Checker.begin`."""
        self.index.begin(prepared.parsed, self._native_limits(limits))

    @property
    def formatting(self) -> bool:
        """See :attr:`Checker.formatting`."""
        return bool(self.index.formatting or self.index.open_formatting)

    def commit(self) -> list[int]:
        """See :meth:`Checker.commit`."""
        return cast(list[int], self.index.commit())

    def rollback(self) -> None:
        """See :meth:`Checker.rollback`."""
        self.index.rollback()

    def record_local(self, update: bytes, limits: UpdateLimits) -> None:
        """See :meth:`Checker.record_local`."""
        self.index.record(update, self._native_limits(limits))

    def record_diff(self, data: bytes, limits: UpdateLimits) -> None:
        """See :meth:`Checker.record_diff`."""
        self.index.record_diff(data, self._native_limits(limits))

    def record_delete_set(self, delete_set: bytes, limits: UpdateLimits) -> None:
        """See :meth:`Checker.record_delete_set`."""
        self.index.record_delete_set(delete_set, self._native_limits(limits))

    def contains(self, parsed: Parsed) -> bool:
        """See :meth:`Checker.contains`."""
        return bool(self.index.contains(parsed))

    def where_of(self, client: int, clock: int) -> tuple[ContainerKey, str | None] | None:
        """See :meth:`Checker.where_of`."""
        return cast("tuple[ContainerKey, str | None] | None", self.index.where_of(client, clock))

    def runs(self) -> int:
        """See :meth:`Checker.runs`."""
        return int(self.index.runs())

    def heap_bytes(self) -> int:
        """Bytes the Rust index's tables hold."""
        return int(self.index.heap_bytes())

    def snapshot(self) -> dict[str, Any]:
        """See :meth:`Checker.snapshot`."""
        return cast(dict[str, Any], self.index.snapshot())

    def check_invariants(self) -> None:
        """See :meth:`Checker.check_invariants`."""
        self.index.check_invariants()

    def fresh(self) -> NativeChecker:
        """See :meth:`Checker.fresh`."""
        return NativeChecker(self._root_types)

    @property
    def poisoned(self) -> bool:
        """See :attr:`Checker.poisoned`."""
        return bool(self.index.poisoned)


def _native_update(parsed: Parsed) -> NativeUpdate:
    if isinstance(parsed, ParsedUpdate):
        raise TypeError("the native checker takes updates parsed by the native parser")
    return parsed


def new_checker(
    root_types: Mapping[str, int] | None = None, *, native: bool | None = None
) -> Checker:
    """A checker for one document.

    Args:
        root_types: declared root types (``{"body": TYPE_TEXT}``).
        native: the Rust one (True), the Python reference (False), or the Rust
            one when it is in use (None: :data:`crdtsync.format.accel.NATIVE`).

    Raises:
        RuntimeError: ``native=True`` but the extension is not available.
    """
    if native is None:
        native = accel.NATIVE
    return NativeChecker(root_types) if native else PyChecker(root_types)
