r"""The document: named root containers, updates in and out, events.

Theory of operation
-------------------
A :class:`Doc` owns one pycrdt document. Root containers are Yjs root types of
the same name, so ``doc.text("body")`` is ``ydoc.getText("body")`` to a Yjs
client. Yjs roots have no declared type, so the document keeps a root registry,
the Y.Map ``"__crdtsync_roots"``, mapping each root name to its container kind.
A root is registered in the transaction of its first edit, never when it is
merely accessed: accessing is not an edit, and two replicas that imported the
same updates must be equal whichever roots each looked at.

Bytes from outside take one path: envelope (``encoding.unpack``), then the full
Yjs v1 validator (``_yupdate.validate_update``), and only then pycrdt, inside a
transaction whose origin marks it remote. pycrdt's Rust panics are
``BaseException``\\ s; they are translated into :class:`EngineError` at the one
place pycrdt is called.

Events: pycrdt reports deep changes per root and then one transaction event. We
collect the former, package them on the latter, and deliver the package after
the outermost transaction has closed, outside pycrdt's call stack, so that a
callback may itself edit the document.
"""

from __future__ import annotations

import builtins
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import pycrdt

from crdtsync.errors import (
    EngineError,
    InvalidOperationError,
    InvalidUpdateError,
    InvalidValueError,
    RootTypeError,
    UpdateLimitError,
)
from crdtsync.format import envelope as encoding
from crdtsync.format.version import Version
from crdtsync.format.yupdate import (
    STRUCT_SKIP,
    TYPE_ARRAY,
    TYPE_MAP,
    TYPE_TEXT,
    DocIndex,
    MissingUpdatesError,
    ParsedUpdate,
    UpdateLimits,
    parse_update,
    validate_update,
)
from crdtsync.model.containers import (
    KIND_KEY,
    Container,
    Counter,
    List,
    Map,
    Register,
    Text,
    engine_error,
)
from crdtsync.model.kinds import kind_class
from crdtsync.model.tree_events import TreeChange
from crdtsync.model.values import check_text

if TYPE_CHECKING:
    from crdtsync.model.tree import Tree

__all__ = ["DEFAULT_LIMITS", "Change", "ChangeEvent", "Doc"]

REGISTRY = "__crdtsync_roots"
DEFAULT_LIMITS = UpdateLimits()
_MAX_PEER_ID = 2**53  # JS clients read client ids as doubles
_MAX_HELD = 10_000  # updates held for missing predecessors
# Engine type ref of each engine root type, for the validator's index.
_TYPE_REFS: dict[Any, int] = {
    pycrdt.Map: TYPE_MAP,
    pycrdt.Array: TYPE_ARRAY,
    pycrdt.Text: TYPE_TEXT,
}

_C = TypeVar("_C", bound=Container)


@dataclass(frozen=True)
class Change:
    """One changed container within a transaction.

    Attributes:
        path: root name, then the keys and list indexes leading to the container.
        kind: the container kind (``"map"``, ``"list"``, ``"text"``, ``"counter"``,
            ``"register"``...).
        keys: for maps, ``{key: "add" | "update" | "delete"}``.
        delta: for lists and texts, Quill-style ``[{"retain": n} | {"insert": ...} |
            {"delete": n}]`` in Python indexes (code points for text; plain values
            for list inserts). ``None`` for a text whose earlier content this
            document had not seen (read the text instead).
        created: the whole root appeared in this transaction (read it whole).
        tree: for trees, what happened to each node
            (:class:`~crdtsync.TreeChange`: created, moved, deleted, data
            changed), in an order that applies to the tree as it was; ``None``
            for a tree this replica had not read before (read it whole).
    """

    path: tuple[str | int, ...]
    kind: str
    keys: dict[str, str] | None = None
    delta: list[dict[str, Any]] | None = None
    created: bool = False
    tree: tuple[TreeChange, ...] | None = None


@dataclass(frozen=True)
class ChangeEvent:
    """Everything one transaction changed.

    Attributes:
        origin: the ``origin`` given to :meth:`Doc.transaction` or
            :meth:`Doc.import_update`.
        local: whether the edit was made on this replica.
        changes: the changed containers.
    """

    origin: Any
    local: bool
    changes: tuple[Change, ...] = field(default_factory=tuple)


class _Remote:
    """Transaction origin of imports: tells remote changes from local ones."""

    __slots__ = ("origin",)

    def __init__(self, origin: Any) -> None:
        self.origin = origin


def _is_panic(exc: BaseException) -> bool:
    return engine_error(exc) is not exc


class _Txn:
    """Context of one write: a pycrdt transaction plus our bookkeeping."""

    __slots__ = ("_container", "_doc", "_origin", "_ytxn")

    def __init__(self, doc: Doc, origin: Any, container: Container | None = None) -> None:
        self._doc = doc
        self._origin = origin
        self._container = container
        self._ytxn: Any = None

    def __enter__(self) -> None:
        doc = self._doc
        if doc._depth == 0:
            doc._origin = self._origin
        doc._depth += 1
        try:
            self._ytxn = doc._y.transaction(origin=self._origin)
            self._ytxn.__enter__()
        except BaseException:
            doc._depth -= 1
            raise
        c = self._container
        if c is not None and c._pending_root is not None:
            # A root's first edit registers its kind, in the same transaction.
            name, c._pending_root = c._pending_root, None
            if doc._registry.get(name) is None:
                doc._registry[name] = c.kind

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        doc = self._doc
        try:
            self._ytxn.__exit__(exc_type, exc, tb)
        except BaseException as err:
            if _is_panic(err):
                raise EngineError(f"the CRDT engine failed: {err}") from None
            raise
        finally:
            doc._depth -= 1
        if exc is not None and _is_panic(exc):
            raise EngineError(f"the CRDT engine failed: {exc}") from None
        if doc._depth == 0 and doc._queue:
            doc._deliver()


class Doc:
    """A JSON-like CRDT document: named root containers that merge without conflicts.

    Example:
        >>> from crdtsync import Doc
        >>> a, b = Doc(), Doc()
        >>> a.list("todos").append({"title": "milk", "done": False})
        >>> b.import_update(a.export_update())
        >>> b.counter("likes").increment(2)
        >>> a.import_update(b.export_update(since=a.version))
        >>> a.to_py() == b.to_py() == {"likes": 2, "todos": [{"done": False, "title": "milk"}]}
        True

    Args:
        peer_id: this replica's writer id (an int in ``[1, 2**53)``); random by
            default. Two live replicas must never share one.
        limits: limits applied to every update this document imports.
        clock: wall clock in seconds (default :func:`time.time`), used by
            registers' hybrid logical clocks; tests pass a fake one.
    """

    def __init__(
        self,
        *,
        peer_id: int | None = None,
        limits: UpdateLimits | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if peer_id is None:
            peer_id = 1 + secrets.randbelow(_MAX_PEER_ID - 1)
        elif type(peer_id) is not int or not 0 < peer_id < _MAX_PEER_ID:
            raise InvalidOperationError(f"peer_id must be an int in [1, 2**53), not {peer_id!r}")
        # The engine document; nothing outside this module and model.py touches it.
        self._y: Any = pycrdt.Doc(client_id=peer_id)
        # Limits for imported bytes.
        self._limits = limits or DEFAULT_LIMITS
        # Wall clock for the registers' HLC.
        self._clock = clock or time.time
        # Last HLC timestamp issued or seen: (milliseconds, logical counter).
        self._hlc: tuple[int, int] = (0, 0)
        # Key of this writer's entries in counters and registers.
        self._client_key = str(peer_id)
        # Root name -> kind, replicated.
        self._registry: Any = self._y.get(REGISTRY, type=pycrdt.Map)
        # What the validator knows of this document's structure (see _yupdate.DocIndex).
        self._index = DocIndex({REGISTRY: TYPE_MAP})
        # Updates waiting for predecessors: (v1 update, origin).
        self._held: builtins.list[tuple[bytes, Any]] = []
        # Root containers accessed here, by name.
        self._roots: dict[str, Container] = {}
        # Bumped by every import and text edit: invalidates text offset caches.
        self._text_epoch = 0
        # Nesting depth of our transactions; events are delivered at depth 0.
        self._depth = 0
        # Origin of the outermost open transaction (a _Remote for imports).
        self._origin: Any = None
        # Packaged events and updates waiting for the outermost transaction to end.
        self._queue: builtins.list[tuple[ChangeEvent | None, bytes, Any, bool]] = []
        # Change callbacks, and raw-update callbacks (sync, persistence).
        self._observers: builtins.list[Callable[[ChangeEvent], None]] = []
        self._update_observers: builtins.list[Callable[[bytes, Any, bool], None]] = []
        # Whether anyone observes: if not, edits may skip our transaction wrapper.
        self._observed = False
        # Deep changes collected during the current transaction.
        self._pending: builtins.list[Change] = []
        # Roots whose deep changes we are subscribed to.
        self._watched: dict[str, Any] = {}
        # Last seen content of texts, by path, to express deletions in code points.
        self._mirrors: dict[tuple[str | int, ...], str] = {}
        # Subscription to pycrdt's transaction events, made with the first observer
        # so that unobserved documents pay nothing per edit.
        self._txn_sub: Any = None

    # -- identity and roots ----------------------------------------------------------

    @property
    def peer_id(self) -> int:
        """This replica's writer id."""
        return int(self._y.client_id)

    def map(self, name: str) -> Map:
        """The root map called ``name`` (created empty on first use)."""
        return self._root(name, Map)

    def list(self, name: str) -> List:
        """The root list called ``name``."""
        return self._root(name, List)

    def text(self, name: str) -> Text:
        """The root text called ``name``."""
        return self._root(name, Text)

    def counter(self, name: str) -> Counter:
        """The root counter called ``name``."""
        return self._root(name, Counter)

    def register(self, name: str) -> Register:
        """The root register called ``name``."""
        return self._root(name, Register)

    def tree(self, name: str) -> Tree:
        """The root movable tree called ``name``."""
        from crdtsync.model.tree import Tree

        return self._root(name, Tree)

    def root(self, name: str, kind: str) -> Container:
        """The root called ``name`` of the container kind ``kind`` (e.g. ``"tree"``).

        Raises:
            RootTypeError: if ``name`` is in use with another kind.
            InvalidOperationError: if ``kind`` is unknown.
        """
        cls = kind_class(kind)
        if cls is None:
            raise InvalidOperationError(f"unknown container kind {kind!r}")
        return self._root(name, cls)

    def _root(self, name: str, cls: type[_C]) -> _C:
        existing = self._roots.get(name)
        if existing is not None:
            if type(existing) is not cls:
                raise RootTypeError(f"root {name!r} is a {existing.kind}, not a {cls.kind}")
            return existing
        if type(name) is not str or not name:
            raise InvalidOperationError("root names are non-empty str")
        try:
            check_text(name, "a root name")
        except InvalidValueError as exc:
            raise InvalidOperationError(str(exc)) from None
        if name == REGISTRY:
            raise InvalidOperationError(f"the root name {REGISTRY!r} is reserved")
        kind = self._registry.get(name)
        if kind is not None and kind != cls.kind:
            raise RootTypeError(f"root {name!r} is a {kind}, not a {cls.kind}")
        try:
            y = self._y.get(name, type=cls._engine_type)
        except BaseException as exc:
            if not _is_panic(exc) and not isinstance(exc, Exception):
                raise
            raise RootTypeError(f"root {name!r} exists in the engine with another type") from exc
        root = cls._attached(self, y, pending_root=None if kind else name)
        self._roots[name] = root
        self._index.root_types.setdefault(name, _TYPE_REFS[cls._engine_type])
        if self._observers:
            self._watch(name, root)
        return root

    def roots(self) -> dict[str, str]:
        """Every root that has been written: ``{name: kind}``, sorted by name.

        This is a function of the replicated state alone (the root registry),
        never of which roots this replica happened to access, so replicas that
        imported the same updates list the same roots. A root that only a plain
        Yjs client has written is readable with ``doc.text(name)`` etc., and is
        listed once a crdtsync replica edits it.
        """
        out: dict[str, str] = {}
        for name, kind in self._registry.items():
            if type(kind) is str and kind_class(kind) is not None:
                out[name] = kind
        return dict(sorted(out.items()))

    def __getitem__(self, name: str) -> Any:
        kind = self.roots().get(name)
        if kind is None:
            raise KeyError(name)
        return self.root(name, kind)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.roots()

    def __iter__(self) -> Iterator[str]:
        return iter(self.roots())

    def to_py(self) -> dict[str, Any]:
        """Every root with content, as plain Python values."""
        out = {}
        for name, kind in self.roots().items():
            try:
                root = self.root(name, kind)
            except RootTypeError:
                # Concurrent first writes of one name with two kinds: the registry's
                # winner is what everyone reads; our stale local wrapper is bypassed.
                cls = kind_class(kind)
                assert cls is not None
                root = cls._attached(self, self._y.get(name, type=cls._engine_type))
            out[name] = root.to_py()
        return out

    def __repr__(self) -> str:
        return f"<Doc peer_id={self.peer_id} {self.to_py()!r}>"

    # -- transactions ------------------------------------------------------------------

    def transaction(self, origin: Any = None) -> _Txn:
        """Group edits into one transaction: one update, one event.

        Args:
            origin: any object; observers see it as ``event.origin``.

        Example:
            >>> doc = Doc()
            >>> with doc.transaction(origin="bulk"):
            ...     doc.map("m")["a"] = 1
            ...     doc.map("m")["b"] = 2

        Note:
            Edits made before an exception inside the block are kept: CRDT
            operations cannot be rolled back once made.
        """
        return _Txn(self, origin)

    def _write(self, container: Container | None = None) -> _Txn:
        return _Txn(self, None, container)

    def _hlc_tick(self, seen: tuple[int, int]) -> tuple[int, int]:
        """Next hybrid-logical-clock timestamp, after both our last one and ``seen``."""
        wall = int(self._clock() * 1000)
        last = max(self._hlc, seen)
        ts = (wall, 0) if wall > last[0] else (last[0], last[1] + 1)
        self._hlc = ts
        return ts

    # -- what containers ask of their document (the tree uses these) ---------------

    def edit(self, container: Container) -> _Txn:
        """A transaction for an edit of ``container`` (a root registers its kind on its first edit).

        Edits join an open transaction; events and updates go out when the
        outermost one ends.
        """
        return _Txn(self, None, container)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (edits now join it)."""
        return self._depth > 0

    @property
    def observed(self) -> bool:
        """Whether anyone observes this document's changes or updates."""
        return self._observed

    @property
    def importing(self) -> bool:
        """Whether the open transaction applies a remote update (rather than local edits)."""
        return self._depth > 0 and isinstance(self._origin, _Remote)

    def root_name(self, container: Container) -> str | None:
        """The name of ``container`` if it is this document's wrapper of a root, else ``None``."""
        for name, root in self._roots.items():
            if root is container:
                return name
        return None

    def _tree_shapes(self) -> bytes:
        """The shapes of the trees read here, saved beside the update (``docs/TREE.md``)."""
        from crdtsync.model.tree import tree_cache

        return tree_cache(self)

    def _offer_tree_shapes(self, blob: bytes) -> None:
        """Let this loaded document's trees start from their saved shapes, if still valid."""
        from crdtsync.model.tree import offer_cache

        offer_cache(self, blob)

    # -- versions and updates ----------------------------------------------------------

    @property
    def version(self) -> Version:
        """What this replica has seen: a state vector."""
        return Version.from_bytes(self._y.get_state())

    def export_update(self, since: Version | None = None) -> bytes:
        """Everything this replica has that a replica at ``since`` lacks, as an envelope.

        Args:
            since: the other replica's version; ``None`` for the full state.

        Returns:
            Envelope bytes for :meth:`import_update` (compressed when that pays).
        """
        return encoding.pack(self.export_yjs_update(since))

    def export_yjs_update(self, since: Version | None = None) -> bytes:
        """Like :meth:`export_update`, as a raw Yjs v1 update (what Yjs clients send)."""
        if since is None:
            return bytes(self._y.get_update())
        if not isinstance(since, Version):
            raise InvalidOperationError(f"since must be a Version, not {type(since).__name__}")
        return bytes(self._y.get_update(since.to_bytes()))

    def contains(self, update: bytes) -> bool:
        """Whether this replica already has everything a raw Yjs v1 update carries.

        True for an empty update, and for a catch-up that only repeats known items
        and deletions: what a read-only client may send without writing anything.

        Raises:
            InvalidUpdateError: the bytes are not a valid update.
        """
        parsed = parse_update(bytes(update), self._limits)
        version = self.version
        for client, structs in parsed.clients.items():
            known = version.get(client) or 0
            if any(s.end > known for s in structs if s.kind != STRUCT_SKIP):
                return False
        if not parsed.delete_set:
            return True
        # Our own delete set: what an update since our full version carries.
        ours = parse_update(self.export_yjs_update(since=version), self._limits).delete_set
        for client, ranges in parsed.delete_set.items():
            have = sorted(ours.get(client, ()))
            for clock, length in ranges:
                if not _covered(have, clock, clock + length):
                    return False
        return True

    def save(self) -> bytes:
        """The full history in the compact encoding, for :meth:`load`."""
        return encoding.pack(
            bytes(self._y.get_update()),
            compact=True,
            snapshot=True,
            held=[u for u, _ in self._held],
            cache=self._tree_shapes(),
        )

    @classmethod
    def load(
        cls,
        data: bytes,
        *,
        peer_id: int | None = None,
        limits: UpdateLimits | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Doc:
        """A new document holding what :meth:`save` (or :meth:`export_update`) wrote.

        Raises:
            InvalidUpdateError: if the bytes are not a valid crdtsync document.
        """
        doc = cls(peer_id=peer_id, limits=limits, clock=clock)
        env = encoding.unpack(data, doc._limits)
        doc._apply(env.update, None)
        if doc._held:
            raise MissingUpdatesError(
                "not a complete document: it depends on changes it does not contain "
                "(import it into the document it was exported from instead)",
                0,
                0,
            )
        for update in env.held:
            doc._apply(update, None)
        doc._offer_tree_shapes(env.cache)
        return doc

    def import_update(self, data: bytes, *, origin: Any = None) -> None:
        """Merge an update, snapshot or save from another replica.

        The bytes are treated as hostile: they are fully validated first, and if
        they are refused the document is unchanged.

        Args:
            data: envelope bytes from :meth:`export_update` or :meth:`save`.
            origin: passed to observers as ``event.origin`` (with ``local=False``).

        Raises:
            InvalidUpdateError: malformed, too large or from a newer version.
            EngineError: the engine failed after validation (a bug: please report).
        """
        env = encoding.unpack(data, self._limits)
        self._apply(env.update, origin)
        for update in env.held:
            self._apply(update, origin)

    def import_yjs_update(self, data: bytes, *, origin: Any = None) -> None:
        """Merge a raw Yjs v1 update (from Yjs, y-websocket or pycrdt peers).

        Raises:
            InvalidUpdateError: if the bytes are not a valid update.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidUpdateError(f"updates are bytes, not {type(data).__name__}")
        self._apply(bytes(data), origin)

    @property
    def pending(self) -> int:
        """Updates received ahead of changes they depend on, held until those arrive."""
        return len(self._held)

    def held_updates(self) -> builtins.list[bytes]:
        """The raw updates held until their predecessors arrive (see :attr:`pending`)."""
        return [u for u, _ in self._held]

    def _sync_index(self) -> None:
        """Bring the validator's index up to date with this document.

        Local transactions are recorded lazily, here, as one state-vector diff,
        so that editing pays nothing for it. The diff carries the whole delete
        set, which the index needs even when the state vector did not move: a
        deleted container's items are garbage-collected by yrs, and that changes
        where a later remote item lands (``_yupdate.DocIndex.record_diff``).
        """
        diff = bytes(self._y.get_update(Version(self._index.state).to_bytes()))
        self._index.record_diff(diff, self._limits)

    def _apply(self, update: bytes, origin: Any) -> None:
        self._sync_index()
        try:
            parsed = validate_update(update, self._limits, index=self._index)
        except MissingUpdatesError:
            # Out of order: pycrdt 0.14 would integrate past the gap and diverge
            # (see _yupdate), so we hold the update until its predecessors arrive.
            self._hold(update, origin)
            return
        self._integrate(update, parsed, origin)
        if self._held:
            self._release_held()

    def _hold(self, update: bytes, origin: Any) -> None:
        size = sum(len(u) for u, _ in self._held) + len(update)
        if len(self._held) >= _MAX_HELD or size > self._limits.max_update_bytes:
            raise UpdateLimitError(
                f"too many updates waiting for missing predecessors ({len(self._held)} held, "
                f"{size} bytes); re-sync from this document's version instead"
            )
        self._held.append((update, origin))

    def _release_held(self) -> None:
        progress = True
        while progress and self._held:
            progress = False
            for entry in list(self._held):
                update, origin = entry
                try:
                    parsed = validate_update(update, self._limits, index=self._index)
                except MissingUpdatesError:
                    continue
                except InvalidUpdateError:
                    # It passed every document-independent check when it arrived;
                    # what it depends on now contradicts it. Dropping it keeps the
                    # document safe; a state-vector sync re-sends anything real.
                    self._held.remove(entry)
                    continue
                self._held.remove(entry)
                self._integrate(update, parsed, origin)
                progress = True

    def _integrate(self, update: bytes, parsed: ParsedUpdate, origin: Any) -> None:
        outermost = self._depth == 0
        # Hold delivery until roots that this update created are known, so the
        # event can say so.
        self._depth += 1
        try:
            with _Txn(self, _Remote(origin)):
                if outermost:
                    self._origin = _Remote(origin)
                try:
                    self._y.apply_update(update)
                except Exception as exc:
                    # Validation should make this unreachable; never let an engine
                    # error type escape as if it were ours to document.
                    raise EngineError(f"the CRDT engine refused a validated update: {exc}") from exc
        finally:
            self._depth -= 1
            self._text_epoch += 1
        self._index.record(parsed)
        # yrs may delete more than the update says (a concurrent map write
        # replaces a local container): learn that before validating anything else.
        self._sync_index()
        if self._observers:
            created = self._watch_new_roots()
            if created:
                ev = self._queue[-1][0] if self._queue else None
                if ev is not None and not ev.local and ev.origin is origin:
                    ev = ChangeEvent(origin, False, ev.changes + tuple(created))
                    self._queue[-1] = (ev, *self._queue[-1][1:])
                else:
                    self._queue.append(
                        (ChangeEvent(origin, False, tuple(created)), b"", origin, False)
                    )
        if outermost and self._queue:
            self._deliver()

    # -- events ------------------------------------------------------------------------

    def observe(self, callback: Callable[[ChangeEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every transaction that changed something.

        Args:
            callback: receives a :class:`ChangeEvent`; it runs after the
                transaction, so it may edit the document.

        Returns:
            A function that unsubscribes.
        """
        self._subscribe_transactions()
        if not self._observers:
            for name in self.roots():
                self[name]
            for name, root in self._roots.items():
                self._watch(name, root)
        self._observers.append(callback)

        def unsubscribe() -> None:
            if callback in self._observers:
                self._observers.remove(callback)

        return unsubscribe

    def observe_updates(self, callback: Callable[[bytes, Any, bool], None]) -> Callable[[], None]:
        """Call ``callback(update, origin, local)`` with each transaction's Yjs v1 update.

        This is the hook for persistence and sync: ``update`` is exactly what
        changed, ready for another replica's :meth:`import_yjs_update`.

        Returns:
            A function that unsubscribes.
        """
        self._subscribe_transactions()
        self._update_observers.append(callback)

        def unsubscribe() -> None:
            if callback in self._update_observers:
                self._update_observers.remove(callback)

        return unsubscribe

    def _watch(self, name: str, root: Container) -> None:
        if name in self._watched:
            return
        self._watched[name] = root._y.observe_deep(lambda evs: self._on_deep(name, evs))
        if isinstance(root, Text):
            self._mirrors[(name,)] = str(root._y)

    def _watch_new_roots(self) -> builtins.list[Change]:
        created = []
        for name, kind in self.roots().items():
            if name not in self._watched:
                try:
                    root = self.root(name, kind)
                except RootTypeError:
                    continue
                self._watch(name, root)
                created.append(Change((name,), kind, created=True))
        return created

    def _on_deep(self, name: str, events: Any) -> None:
        from crdtsync.model.tree import nested_trees, tree_changes

        root = self._roots.get(name)
        if (root is not None and root.kind == "tree") or self._registry.get(name) == "tree":
            # A tree's engine layout (operation log, data maps) is not its shape:
            # the tree says what happened to its nodes.
            changes = tree_changes(root, [(ev.path, ev) for ev in events])
            self._pending.append(Change((name,), "tree", tree=changes))
            return
        if root is not None:
            events, trees = nested_trees(self, root._y, events)
            for where, (tree, inside) in trees.items():
                changes = tree_changes(tree, inside)
                self._pending.append(Change((name, *where), "tree", tree=changes))
        for ev in events:
            path = (name, *ev.path)
            target = ev.target
            if isinstance(ev, pycrdt.TextEvent):
                self._pending.append(Change(path, "text", delta=self._text_delta(path, ev)))
            elif isinstance(ev, pycrdt.ArrayEvent):
                self._pending.append(Change(path, "list", delta=self._list_delta(ev)))
            elif isinstance(ev, pycrdt.MapEvent):
                kind = "map"
                if KIND_KEY in target:
                    kind = str(target[KIND_KEY])
                elif len(path) == 1:
                    kind = self._registry.get(name) or getattr(self._roots.get(name), "kind", "map")
                if kind == "map":
                    keys = {k: str(v.get("action")) for k, v in ev.keys.items()}  # type: ignore[attr-defined]
                    self._pending.append(Change(path, kind, keys=keys))
                else:
                    self._pending.append(Change(path, kind))

    def _list_delta(self, ev: Any) -> builtins.list[dict[str, Any]]:
        from crdtsync.model.containers import _plain

        out: builtins.list[dict[str, Any]] = []
        for op in ev.delta:
            if "insert" in op:
                out.append({"insert": [_plain(self, v) for v in op["insert"]]})
            else:
                out.append(dict(op))
        return out

    def _text_delta(
        self, path: tuple[str | int, ...], ev: Any
    ) -> builtins.list[dict[str, Any]] | None:
        """Translate a byte-offset text delta into code points, using the old content."""
        new = str(ev.target)
        old = self._mirrors.get(path)
        self._mirrors[path] = new
        if old is None:
            return None
        delta: builtins.list[dict[str, Any]] = []
        pos = 0  # code-point position in old
        for op in ev.delta:
            if "insert" in op:
                delta.append({"insert": op["insert"]})
                continue
            nbytes = op.get("retain", op.get("delete", 0))
            start = pos
            consumed = 0
            while consumed < nbytes and pos < len(old):
                consumed += len(old[pos].encode("utf-8"))
                pos += 1
            if consumed != nbytes:
                return None  # our mirror is out of step; callers re-read the text
            key = "retain" if "retain" in op else "delete"
            delta.append({key: pos - start})
        return delta

    def _on_transaction(self, event: Any) -> None:
        # Runs inside pycrdt's commit: only package; delivery happens after it.
        changes, self._pending = self._pending, []
        origin = self._origin
        local = not isinstance(origin, _Remote)
        if not local:
            origin = origin.origin
        ev = ChangeEvent(origin, local, tuple(changes)) if (changes and self._observers) else None
        if ev is not None or self._update_observers:
            update = bytes(event.update) if self._update_observers else b""
            self._queue.append((ev, update, origin, local))

    def _deliver(self) -> None:
        while self._queue:
            ev, update, origin, local = self._queue.pop(0)
            if ev is not None:
                for cb in list(self._observers):
                    cb(ev)
            if update:
                for ucb in list(self._update_observers):
                    ucb(update, origin, local)

    def _subscribe_transactions(self) -> None:
        self._observed = True
        if self._txn_sub is None:
            self._txn_sub = self._y.observe(self._on_transaction)


def _covered(ranges: builtins.list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether sorted ``(clock, length)`` ranges cover ``[start, end)``."""
    pos = start
    for clock, length in ranges:
        if clock > pos:
            break
        pos = max(pos, clock + length)
        if pos >= end:
            return True
    return pos >= end
