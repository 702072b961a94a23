"""The document's checker: one interface over the Python and the Rust document index.

Theory of operation
===================

A ``crdtsync.Doc`` checks every update from outside against an index of what
it holds (:class:`crdtsync.format.yupdate.DocIndex`: sequence order, rules
S1-S12, pending deletions) before pycrdt sees it. There are two
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

One update at a time goes through :meth:`Checker.begin` (its deletions of
clocks the document does not have yet are split off into a delete-only
update to hold, as ``Doc`` does; then the checks and the integration), then
:meth:`Checker.commit` once pycrdt applied the bytes ``begin`` returned, or
:meth:`Checker.rollback` if it failed. ``Doc`` imports through
:meth:`Checker.parse_begin` (the parse, ``plain_ascii`` and ``begin`` in one
step): one call into Rust on the native path for an update with nothing to
split off (every keystroke), with no parse object handed to Python; an update
with deletions to split off comes back parsed, for ``begin`` with the hold
budget.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeAlias, cast

from crdtsync.format import accel
from crdtsync.format.accel import NativeUpdate, Parsed
from crdtsync.format.yupdate import (
    CONTENT_DELETED,
    CONTENT_STRING,
    STRUCT_GC,
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
    "BEGAN_FORMATTING",
    "BEGAN_PLAIN",
    "Began",
    "Checker",
    "HoldBudget",
    "ImportCalls",
    "NativeChecker",
    "NativeUpdate",
    "Parsed",
    "PyChecker",
    "new_checker",
]


#: What :meth:`Checker.begin` returns: ``(engine, formatting, later,
#: later_ranges, needs)``: the bytes to hand pycrdt (the update, or the update
#: without the deletions split off); whether yrs may delete formatting items of
#: its own accord while applying them (their deletions must then be recorded
#: from the engine's transaction event); a delete-only v1 update of the
#: deletions of clocks the document does not have yet, to hold (or None), how
#: many ranges it deletes, and the first missing clock of each of its clients.
Began: TypeAlias = tuple[bytes, bool, bytes | None, int, tuple[tuple[int, int], ...]]

#: Called with ``(later_ranges, later)`` before an update whose deletions are
#: split off is begun; raises (an ``UpdateLimitError``) to refuse it.
HoldBudget: TypeAlias = Callable[[int, bytes], None]


#: Flags :meth:`Checker.parse_begin` returns for a begun update: yrs may
#: delete formatting items of its own accord (``begin``'s flag), and the
#: update is plain ASCII (``plain_ascii``).
BEGAN_FORMATTING = 1
BEGAN_PLAIN = 2


#: What :meth:`Checker.import_calls` returns.
ImportCalls: TypeAlias = tuple[Callable[[bytes], "int | Parsed"], Callable[[], list[int]]]


def _no_budget(ranges: int, later: bytes) -> None:
    """A :data:`HoldBudget` that refuses nothing."""


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
    def plain_ascii(self, parsed: Parsed) -> bool:
        """Whether every struct is a GC, a Skip, deleted content or an ASCII String.

        Importing such an update keeps an ASCII text without embeds so, which
        lets a text keep its offset index (call before :meth:`begin`, which
        spends the parse).
        """

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
    def begin(
        self,
        update: bytes,
        parsed: Parsed,
        limits: UpdateLimits,
        budget: HoldBudget = _no_budget,
    ) -> Began:
        """Checks the update against the document and integrates its structs.

        Deletions of clocks the document will not have after the update's
        structs are split off first (``budget`` may refuse holding them). On
        refusal the index is unchanged; otherwise :meth:`commit` or
        :meth:`rollback` must follow.

        Once begun, the parse is spent: an implementation may free it (the
        Rust one does, so that a load's parse, larger than the document it
        builds, is not alive while the engine applies the update), and it
        must not be used again.

        Args:
            update: the update's bytes.
            parsed: its parse (:meth:`parse`).
            limits: ``max_pending_deletes`` bounds the index's pending deletions.
            budget: called before anything is begun when deletions are split off.

        Returns:
            See :data:`Began`.

        Raises:
            MissingUpdatesError: a dependency is neither here nor in the update.
            MalformedUpdateError: a rule is broken.
            UpdateLimitError: too many pending deletions.
        """

    @abstractmethod
    def parse_begin(self, update: bytes, limits: UpdateLimits) -> int | Parsed:
        """:meth:`parse`, :meth:`plain_ascii` and :meth:`begin` in one step, for an import.

        One call into Rust on the native path, with no parse object handed
        to Python: an import's whole check (every keystroke's). Raises what
        :meth:`parse` raises, then what :meth:`begin` raises.

        Returns:
            When the update was begun (nothing to split off: the bytes for the
            engine are ``update`` itself), its flags: :data:`BEGAN_FORMATTING`
            (``begin``'s formatting flag) and :data:`BEGAN_PLAIN` (``plain_ascii``).
            When deletions of clocks the document lacks must be split off,
            nothing is begun and the parse is returned, for :meth:`plain_ascii`
            and :meth:`begin` with a hold budget.
        """

    @abstractmethod
    def import_calls(self, limits: UpdateLimits) -> ImportCalls:
        """``(begin, commit)``: :meth:`parse_begin` under ``limits``, and :meth:`commit`.

        What a document calls for every import, bound once: on the native
        path they are the Rust methods themselves, without a Python call
        around each (a few percent of a keystroke's import). They stay valid
        as long as this checker.
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
    def record_local(self, updates: Sequence[bytes], limits: UpdateLimits) -> None:
        """Records local transactions' updates (already applied by pycrdt), in order.

        Raises:
            InvalidUpdateError: one does not fit the index (those before it are
                recorded; a bug: rebuild the index).
        """

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

    def plain_ascii(self, parsed: Parsed) -> bool:
        """See :meth:`Checker.plain_ascii`."""
        for structs in _py(parsed).clients.values():
            for st in structs:
                kind = st.kind
                if kind in _PLAIN_KINDS:
                    continue
                content = st.content
                if kind != CONTENT_STRING or type(content) is not str or not content.isascii():
                    return False
        return True

    def state_of(self, client: int) -> int:
        """See :meth:`Checker.state_of`."""
        return self.index.state.get(client, 0)

    def state(self) -> dict[int, int]:
        """See :meth:`Checker.state`."""
        return dict(self.index.state)

    def set_root_type(self, name: str, type_ref: int) -> None:
        """See :meth:`Checker.set_root_type`."""
        self.index.root_types.setdefault(name, type_ref)

    def begin(
        self,
        update: bytes,
        parsed: Parsed,
        limits: UpdateLimits,
        budget: HoldBudget = _no_budget,
    ) -> Began:
        """See :meth:`Checker.begin`."""
        p = _py(parsed)
        engine = update
        later_update: bytes | None = None
        n_later = 0
        needs: tuple[tuple[int, int], ...] = ()
        if p.delete_set:
            now, later = split_deletes(p, self.index.state)
            if later:
                engine = (
                    update[: p.ds_pos] + encode_delete_set(now)
                    if p.ds_pos >= 0
                    else encode_update(ParsedUpdate(p.clients, now))
                )
                later_update = encode_update(ParsedUpdate({}, later))
                n_later = sum(len(r) for r in later.values())
                needs = tuple((client, ranges[0][0]) for client, ranges in later.items())
                budget(n_later, later_update)
                p = ParsedUpdate(p.clients, now, -1)
        txn = self._txn = self.index.begin(p, limits)
        return engine, self.index.formatting or txn.formatting, later_update, n_later, needs

    def parse_begin(self, update: bytes, limits: UpdateLimits) -> int | Parsed:
        """See :meth:`Checker.parse_begin`."""
        p = parse_update(update, limits)
        if p.delete_set and split_deletes(p, self.index.state)[1]:
            return p
        plain = self.plain_ascii(p)
        formatting = self.begin(update, p, limits)[1]
        return (BEGAN_FORMATTING if formatting else 0) | (BEGAN_PLAIN if plain else 0)

    def import_calls(self, limits: UpdateLimits) -> ImportCalls:
        """See :meth:`Checker.import_calls`."""
        return partial(self.parse_begin, limits=limits), self.commit

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

    def record_local(self, updates: Sequence[bytes], limits: UpdateLimits) -> None:
        """See :meth:`Checker.record_local`."""
        for update in updates:
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
        self._parse: Any = mod.parse_update
        # UpdateLimits read once into the Rust struct (two objects in turn: a
        # Doc's update limits and its document limits).
        self._key_a: UpdateLimits | None = None
        self._native_a: Any = None
        self._key_b: UpdateLimits | None = None
        self._native_b: Any = None

    def _native_limits(self, limits: UpdateLimits) -> Any:
        if limits is self._key_a:
            return self._native_a
        if limits is self._key_b:
            return self._native_b
        native = self._mod.Limits(limits)
        self._key_b, self._native_b = self._key_a, self._native_a
        self._key_a, self._native_a = limits, native
        return native

    def parse(self, data: bytes, limits: UpdateLimits) -> NativeUpdate:
        """See :meth:`Checker.parse`."""
        if limits is self._key_a:
            return self._parse(data, self._native_a)  # type: ignore[no-any-return]
        return self._parse(data, self._native_limits(limits))  # type: ignore[no-any-return]

    def writes(self, parsed: Parsed) -> dict[int, int]:
        """See :meth:`Checker.writes`."""
        return _native_update(parsed).writes()

    def plain_ascii(self, parsed: Parsed) -> bool:
        """See :meth:`Checker.plain_ascii`."""
        return _native_update(parsed).plain_ascii()

    def state_of(self, client: int) -> int:
        """See :meth:`Checker.state_of`."""
        return int(self.index.state_of(client))

    def map_entries(
        self, container: str | tuple[int, int]
    ) -> dict[str, tuple[int, int, int, int | None]] | None:
        """The live entries of a map container, from the index alone.

        Args:
            container: a root name, or the ``(client, clock)`` of a type item.

        Returns:
            ``{key: (client, clock, content kind, type ref)}`` of each key's
            current entry (what the engine's ``Map.keys()`` lists once it
            holds the same updates), or ``None`` if no entry was ever filed
            in that container.
        """
        return cast(
            "dict[str, tuple[int, int, int, int | None]] | None", self.index.map_entries(container)
        )

    def map_size(self, container: str | tuple[int, int]) -> int | None:
        """``len(map_entries(container))``, without building it (``None`` alike)."""
        got = self.index.map_size(container)
        return None if got is None else int(got)

    def state(self) -> dict[int, int]:
        """See :meth:`Checker.state`."""
        return cast(dict[int, int], self.index.state())

    def set_root_type(self, name: str, type_ref: int) -> None:
        """See :meth:`Checker.set_root_type`."""
        self._root_types.setdefault(name, type_ref)
        self.index.set_root_type(name, type_ref)

    def begin(
        self,
        update: bytes,
        parsed: Parsed,
        limits: UpdateLimits,
        budget: HoldBudget = _no_budget,
    ) -> Began:
        """See :meth:`Checker.begin`."""
        return self.begin_kept(update, parsed, limits, budget, keep=False)

    def begin_kept(
        self,
        update: bytes,
        parsed: Parsed,
        limits: UpdateLimits,
        budget: HoldBudget = _no_budget,
        *,
        keep: bool,
    ) -> Began:
        """:meth:`begin`; with ``keep``, the parse stays usable (the caller releases it).

        (``Doc.load`` reads map entries' values from a load's parse after the
        commit, while the engine has not applied the update yet.)
        """
        native_limits = self._native_a if limits is self._key_a else self._native_limits(limits)
        # One call when nothing is split off: the formatting flag; else the split
        # (engine, later, ranges, needs) and nothing begun yet.
        got = self.index.begin(parsed, native_limits)
        if got is True or got is False:
            if len(update) >= _RELEASE_BYTES and not keep:
                _native_update(parsed).release()  # spent (see Checker.begin)
            return update, got, None, 0, ()
        engine, later, n_later, needs = got
        budget(n_later, later)
        formatting = self.index.begin(parsed, native_limits, split=True)
        if len(update) >= _RELEASE_BYTES and not keep:
            _native_update(parsed).release()
        return engine, bool(formatting), later, n_later, tuple(needs)

    def parse_begin(self, update: bytes, limits: UpdateLimits) -> int | Parsed:
        """See :meth:`Checker.parse_begin`."""
        if limits is self._key_a:
            return self.index.parse_begin(self._native_a, update)  # type: ignore[no-any-return]
        return self.index.parse_begin(self._native_limits(limits), update)  # type: ignore[no-any-return]

    def import_calls(self, limits: UpdateLimits) -> ImportCalls:
        """See :meth:`Checker.import_calls`."""
        begin = partial(self.index.parse_begin, self._native_limits(limits))
        return begin, self.index.commit

    @property
    def formatting(self) -> bool:
        """See :attr:`Checker.formatting`."""
        return bool(self.index.formatting or self.index.open_formatting)

    def commit(self) -> list[int]:
        """See :meth:`Checker.commit`."""
        return self.index.commit()  # type: ignore[no-any-return]

    def rollback(self) -> None:
        """See :meth:`Checker.rollback`."""
        self.index.rollback()

    def record_local(self, updates: Sequence[bytes], limits: UpdateLimits) -> None:
        """See :meth:`Checker.record_local`."""
        self.index.record(updates, self._native_limits(limits))

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


#: Struct kinds that carry no content a text counts (see Checker.plain_ascii).
_PLAIN_KINDS = frozenset((STRUCT_GC, STRUCT_SKIP, CONTENT_DELETED))

#: Parses of updates from this size on are freed once begun (see
#: :meth:`Checker.begin`): a load's or a full-state import's parse is larger
#: than the document, and freed only after the engine's apply it would leave
#: that much allocator slack behind the document. A small one is freed with
#: its last reference right after, at no cost.
_RELEASE_BYTES = 16 * 1024


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
