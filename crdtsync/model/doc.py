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

Bytes from outside take one path: envelope (``encoding.unpack``), one parse
(the compact decoder's own, or the parser's), the checker's one pass that
checks every rule and integrates the update into the document's index
(``DocIndex.begin``), and only then pycrdt, inside a transaction whose origin
marks it remote. The checker (:mod:`crdtsync.format.checker`) is the Rust
port of the index when the extension is built (the parse then stays in Rust
from the envelope to the bytes handed to pycrdt), else the Python reference;
both accept, refuse and hand pycrdt the same. Updates that arrive ahead of what
they depend on are held, within budgets, until it arrives. pycrdt's Rust panics are
``BaseException``\\ s; they are translated into :class:`EngineError` at the one
place pycrdt is called.

Events: pycrdt reports deep changes per root and then one transaction event. We
collect the former, package them on the latter, and deliver the package after
the outermost transaction has closed, outside pycrdt's call stack, so that a
callback may itself edit the document.
"""

from __future__ import annotations

import builtins
import heapq
import logging
import secrets
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

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
from crdtsync.format.accel import NativeUpdate, Parsed
from crdtsync.format.checker import (
    BEGAN_FORMATTING,
    BEGAN_PLAIN,
    Began,
    Checker,
    NativeChecker,
    PyChecker,
    new_checker,
)
from crdtsync.format.version import Version
from crdtsync.format.yupdate import (
    CONTENT_ANY,
    CONTENT_BINARY,
    CONTENT_EMBED,
    CONTENT_FORMAT,
    CONTENT_JSON,
    CONTENT_STRING,
    CONTENT_TYPE,
    TYPE_ARRAY,
    TYPE_MAP,
    TYPE_TEXT,
    MissingUpdatesError,
    UpdateLimits,
    parse_update,
)
from crdtsync.model._engine_private import observe_transactions, update_applier
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
from crdtsync.model.text_mirrors import TextMirrors
from crdtsync.model.tree_events import TreeChange
from crdtsync.model.values import check_text

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable

    from crdtsync.model.tree import Tree
    from crdtsync.model.undo import UndoManager

__all__ = ["DEFAULT_LIMITS", "Change", "ChangeEvent", "Doc"]

REGISTRY = "__crdtsync_roots"
DEFAULT_LIMITS = UpdateLimits()
_MAX_PEER_ID = 2**53  # JS clients read client ids as doubles
#: Local transactions buffered before they are recorded in the index anyway.
_LOCAL_BATCH = 512
log = logging.getLogger("crdtsync.doc")
# Engine type ref of each engine root type, for the validator's index.
_TYPE_REFS: dict[Any, int] = {
    pycrdt.Map: TYPE_MAP,
    pycrdt.Array: TYPE_ARRAY,
    pycrdt.Text: TYPE_TEXT,
}

_C = TypeVar("_C", bound=Container)
_BYTES_LIKE = (bytes, bytearray, memoryview)


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
            for list inserts). Every text change carries one, local or remote,
            the first edit included; a text that appears with content (a new
            ``Text("abc")``, a root a remote update created) is reported as
            ``[{"insert": "abc"}]``. ``None`` would mean this replica lost
            track of the text (a bug, logged on ``crdtsync.doc``): read it then.
            (Texts inside a tree's node data are reported by the tree's
            ``data`` changes.)
        created: the whole root appeared in this transaction (read it whole;
            a text root also carries its content as ``delta``, and texts
            inside a new root are reported like new texts).
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


#: The origin of imports made without one (most): one object, not one per import.
_REMOTE_NONE = _Remote(None)


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
        origin = self._origin
        if doc._depth == 0:
            doc._origin = origin
        doc._depth += 1
        try:
            ytxn = self._ytxn = doc._y.transaction(origin)
            ytxn.__enter__()
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

    Examples:
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
        native: check imported updates with the Rust core (True) or the
            Python reference (False); by default the Rust core when it is
            built (see :mod:`crdtsync.format.accel`). Both accept and refuse
            the same updates; the choice is for comparisons and tests.
    """

    def __init__(
        self,
        *,
        peer_id: int | None = None,
        limits: UpdateLimits | None = None,
        clock: Callable[[], float] | None = None,
        native: bool | None = None,
    ) -> None:
        if peer_id is None:
            peer_id = 1 + secrets.randbelow(_MAX_PEER_ID - 1)
        elif type(peer_id) is not int or not 0 < peer_id < _MAX_PEER_ID:
            raise InvalidOperationError(f"peer_id must be an int in [1, 2**53), not {peer_id!r}")
        # The engine document; nothing outside this module and model.py touches it.
        self._y: Any = pycrdt.Doc(client_id=peer_id)
        # Its apply_update for unobserved imports (see _engine_apply).
        self._engine_apply_bare = update_applier(self._y)
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
        # What the validator knows of this document's structure (see
        # format/checker.py: the Rust or the Python DocIndex).
        try:
            self._checker: Checker = new_checker({REGISTRY: TYPE_MAP}, native=native)
        except RuntimeError as exc:
            raise InvalidOperationError(f"native=True: {exc}") from None
        # The checker's import calls under the update limits (see Checker.import_calls).
        self._begin_import, self._commit_import = self._checker.import_calls(self._limits)
        # The same limits in the form stored state is read under.
        self._whole = self._document_limits()
        # Whether the index hears of local transactions (from the first import on).
        self._index_live = False
        # Local transactions' updates not recorded in the index yet.
        self._local: builtins.list[bytes] = []
        # Our own import's engine transaction is running (its event is not local).
        self._importing = False
        # Whether imports run in an engine transaction whose origin marks them
        # remote: needed once an undo manager watches this document (pycrdt's
        # would otherwise record imports made without an origin as local edits).
        self._engine_origins = False
        # Whether that transaction's delete set must reach the index (yrs may
        # delete redundant formatting items of its own accord), and the set.
        self._want_event_deletes = False
        self._event_deletes: bytes | None = None
        # The last parse new_writers() made, for the import of the same bytes.
        self._last_parse: tuple[bytes, Parsed] | None = None
        # Updates waiting for predecessors, by arrival number; their arrival
        # order with times (for expiry); per client, a heap of (clock, number):
        # an update is retried once the client's clock passes that clock.
        self._held: dict[int, _Held] = {}
        self._held_order: deque[tuple[float, int]] = deque()
        self._waiting: dict[int, builtins.list[tuple[int, int]]] = {}
        self._held_seq = 0
        self._held_bytes = 0
        self._held_deletes = 0  # deleted ranges in held delete-only updates
        self._held_per_origin: dict[int, int] = {}
        # Root containers accessed here, by name.
        self._roots: dict[str, Container] = {}
        # Roots that imported updates put content in, by the kind their content
        # shows (plain Yjs clients write no root registry entry): see roots().
        self._yjs_roots: dict[str, str] = {}
        # Imports so far, and how many there were at the last look for Yjs-only roots.
        self._imports = 0
        self._roots_scanned = -1
        # Bumped by every import and text edit: invalidates text offset caches.
        self._text_epoch = 0
        # The epoch of the last change other than a plain ASCII import (see
        # text_ascii_epoch): an ASCII text's cache from then on only needs its length.
        self._text_ascii_epoch = 0
        # Nesting depth of our transactions; events are delivered at depth 0.
        self._depth = 0
        # Origin of the outermost open transaction (a _Remote for imports).
        self._origin: Any = None
        # Packaged events and updates waiting for the outermost transaction to end.
        self._queue: builtins.list[tuple[ChangeEvent | None, bytes, Any, bool]] = []
        # Change callbacks, and raw-update callbacks (sync, persistence).
        self._observers: builtins.list[Callable[[ChangeEvent], None]] = []
        # (A tuple, replaced on each change: delivery iterates it without a copy.)
        self._update_observers: tuple[Callable[[bytes, Any, bool], None], ...] = ()
        # Whether anyone observes: if not, edits may skip our transaction wrapper.
        self._observed = False
        # Deep changes collected during the current transaction.
        self._pending: builtins.list[Change] = []
        # Roots whose deep changes we are subscribed to.
        self._watched: dict[str, Any] = {}
        # Last seen content of the observed texts, for deltas in code points.
        self._mirrors = TextMirrors()
        # Subscription to pycrdt's transaction events, made with the first observer
        # so that unobserved documents pay nothing per edit.
        self._txn_sub: Any = None
        # Where _on_transaction puts what it raises (see _subscribe_engine).
        self._engine_errors: builtins.list[Exception] = []
        # A loaded document whose engine has not applied its history yet (see
        # load and _hydrate); None once it has, and for every other document.
        self._lazy: _Lazy | None = None
        # The lazy state being filled while Doc.load applies its update.
        self._deferring: _Lazy | None = None

    # -- hydration (see load) -----------------------------------------------------------

    if not TYPE_CHECKING:  # (mypy would otherwise take any attribute name)

        def __getattr__(self, name: str) -> Any:
            # Called only for attributes the instance lacks: the engine's, removed
            # while a loaded document's engine has not applied its history (see
            # _Lazy). Whatever reaches for the engine first applies it, so nothing
            # can read an empty engine; once hydrated this is never called again.
            if name in _ENGINE_ATTRS:
                lazy = self.__dict__.get("_lazy")
                if lazy is not None:
                    self._hydrate()
                    return self.__dict__[name]
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _hydrate(self) -> None:
        """Apply a lazily loaded document's history to the engine, as :meth:`load` would have.

        The index committed the update at load, after checking all of it: it
        is not checked again. The engine applies it in a bare transaction with
        nothing subscribed (as the eager load does), then the document
        subscribes to the engine's transactions, the trees bound meanwhile get
        their engine objects and attach their observers (so the load's own
        events are never queued as remote operations), and what the lazy
        checks assumed is verified against the engine.
        """
        lazy = self._lazy
        if lazy is None:
            return
        update, lazy.update = lazy.update, b""
        if lazy.parsed is not None:  # (hydrated while offering the shapes)
            lazy.parsed.release()
            lazy.parsed = None
            lazy.registry_entries = None
        self._y = lazy.y
        self._registry = lazy.registry
        self._engine_apply_bare = lazy.apply_bare
        self._lazy = None
        try:
            lazy.apply_bare(update)
        except BaseException as exc:
            _raise_apply_failure(exc)
        finally:
            del update
            self._subscribe_engine()
        from crdtsync.model.tree import attach_lazy

        if lazy.roots_asked:
            # The eager load's offer_cache asked roots() right after the apply:
            # same side effects here (the engine roots it types, the kinds it
            # learns of Yjs-only roots, at the same import count).
            self.roots()
        version = Version.from_bytes(self._y.get_state()).to_bytes()
        if version != lazy.version:
            log.error("a lazily loaded document's version differs from its index's (a bug)")
        for name, tree in lazy.trees.items():
            root_y = self._y.get(name, type=pycrdt.Map)
            if self._registry.get(name) != "tree":
                log.error("root %r was taken for a tree before hydration, wrongly (a bug)", name)
            attach_lazy(self, tree, root_y, lazy.sizes.get(name), version == lazy.version)

    def _defer_engine(self, lazy: _Lazy) -> None:
        """Start a loaded document unhydrated: its engine attributes go into ``lazy``."""
        checker = self._checker
        assert isinstance(checker, NativeChecker)
        lazy.y = self._y
        lazy.registry = self._registry
        lazy.apply_bare = self._engine_apply_bare
        lazy.version = Version(checker.state()).to_bytes()
        lazy.registry_entries = checker.map_entries(REGISTRY) or {}
        for name in _ENGINE_ATTRS:
            delattr(self, name)
        self._lazy = lazy

    def _version_bytes(self) -> bytes:
        """:attr:`version` as bytes; from the index while the engine is not hydrated."""
        lazy = self._lazy
        if lazy is not None:
            return lazy.version
        return self.version.to_bytes()

    def _lazy_registry_kind(self, name: str) -> str | None:
        """The root registry's kind for ``name`` before hydration (``None``: none).

        Raises:
            LookupError: the index and the load's parse cannot tell (then the
                caller hydrates and asks the engine).
        """
        lazy = self._lazy
        if lazy is None or lazy.parsed is None:
            raise LookupError(name)
        entries = lazy.registry_entries
        if entries is None:
            raise LookupError(name)
        entry = entries.get(name)
        if entry is None:
            return None
        client, clock, kind, _ = entry
        value = lazy.parsed.any_string(client, clock) if kind == CONTENT_ANY else None
        if value is None:
            raise LookupError(name)
        return value

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
        # Any str is a root name, "" included: Yjs allows `getMap("")`, and a
        # name the engine can hold but this refused made every read of the
        # document raise once an update wrote it (fuzz run of 2026-12-07).
        if type(name) is not str:
            raise InvalidOperationError("root names are str")
        try:
            check_text(name, "a root name")
        except InvalidValueError as exc:
            raise InvalidOperationError(str(exc)) from None
        if name == REGISTRY:
            raise InvalidOperationError(f"the root name {REGISTRY!r} is reserved")
        lazy = self._lazy
        if lazy is not None:
            if cls.kind == "tree" and name in lazy.tree_names:
                # A tree whose saved shape was offered (see offer_cache): its
                # wrapper gets its engine object at hydration.
                from crdtsync.model.tree import lazy_root

                tree = lazy_root(self)
                lazy.trees[name] = tree
                self._roots[name] = tree
                self._checker.set_root_type(name, TYPE_MAP)
                return cast("_C", tree)
            self._hydrate()
        kind = self._registry.get(name)
        if kind is not None and kind != cls.kind:
            raise RootTypeError(f"root {name!r} is a {kind}, not a {cls.kind}")
        yjs_kind = self._yjs_roots.get(name) if kind is None else None
        if yjs_kind is not None and _ENGINE_OF[yjs_kind] is not cls._engine_type:
            raise RootTypeError(f"root {name!r} is a Yjs {yjs_kind}, not a {cls.kind}")
        try:
            y = self._y.get(name, type=cls._engine_type)
        except BaseException as exc:
            if not _is_panic(exc) and not isinstance(exc, Exception):
                raise
            raise RootTypeError(f"root {name!r} exists in the engine with another type") from exc
        root = cls._attached(self, y, pending_root=None if kind else name)
        self._roots[name] = root
        self._checker.set_root_type(name, _TYPE_REFS[cls._engine_type])
        if self._observers:
            self._watch(name, root)
        return root

    def roots(self) -> dict[str, str]:
        """Every root that has been written: ``{name: kind}``, sorted by name.

        This is a function of the replicated state alone (the root registry),
        never of which roots this replica happened to access, so replicas that
        imported the same updates list the same roots. A root that only a plain
        Yjs client has written is listed as soon as it has content, with the
        kind of its Yjs type (``Y.Map`` ``"map"``, ``Y.Array`` ``"list"``,
        ``Y.Text`` ``"text"``), told from the first item written into it; the
        registry's kind wins where both exist.
        """
        out: dict[str, str] = {}
        for name, kind in self._registry.items():
            if type(kind) is str and kind_class(kind) is not None:
                out[name] = kind
        if self._index_live:  # content outside the registry only comes in imports
            out.update(self._yjs_only_roots(out))
        return dict(sorted(out.items()))

    def _yjs_only_roots(self, registered: dict[str, str]) -> dict[str, str]:
        """Roots with live content that the registry does not name, by kind.

        Listing only roots with live content keeps this a function of the
        replicated state: the items a root ever held may reach another replica
        already deleted. The kind comes from the items of the state (see
        :meth:`_classify_engine_roots`), else from this replica's own wrapper.
        """
        self._classify_engine_roots()
        names = set(self._yjs_roots)
        # A root read here before its content came has a wrapper that tells its kind.
        names.update(self._roots)
        out: dict[str, str] = {}
        registry = self._registry
        for name in names:
            if name in registered or name == REGISTRY or name in registry:
                continue  # the registry decides, even for a kind this release does not know
            wrapper = self._roots.get(name)
            kind = self._yjs_roots.get(name)
            if kind is None and wrapper is not None and wrapper.kind in ("text", "list"):
                kind = wrapper.kind
            engine_type = _ENGINE_OF.get(kind) if kind is not None else None
            if kind is None or engine_type is None:
                continue
            if wrapper is not None:
                if wrapper._engine_type is not engine_type:
                    continue
                y = wrapper._y
            else:
                try:
                    y = self._y.get(name, type=engine_type)
                except BaseException as exc:
                    if not _is_panic(exc) and not isinstance(exc, Exception):
                        raise
                    continue  # the engine holds it with another type
            if len(y):
                out[name] = kind
        return out

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

        Examples:
            >>> doc = Doc()
            >>> with doc.transaction(origin="bulk"):
            ...     doc.map("m")["a"] = 1
            ...     doc.map("m")["b"] = 2

        Note:
            Edits made before an exception inside the block are kept: CRDT
            operations cannot be rolled back once made.
        """
        return _Txn(self, origin)

    def undo_manager(
        self,
        containers: Iterable[Container],
        *,
        origins: Iterable[Hashable] | None = None,
        capture_timeout: float = 0.5,
    ) -> UndoManager:
        """Undo and redo of this replica's own edits to ``containers``.

        See :class:`crdtsync.undo.UndoManager` for what is recorded and how.
        """
        from .undo import UndoManager

        return UndoManager(self, containers, origins=origins, capture_timeout=capture_timeout)

    def watched_by_undo(self) -> None:
        """An undo manager now watches this document: imports carry a remote origin.

        (For :class:`~crdtsync.model.undo.UndoManager`; applications never call it.)
        """
        self._engine_origins = True

    def engine_write(self, origin: Any, write: Callable[[], bool]) -> bool:
        """Run an engine call that makes its own transaction (undo, redo) as a local edit.

        Observers see it as a local transaction from ``origin``; text offset
        caches are invalidated, as after an import. (For
        :class:`~crdtsync.model.undo.UndoManager`; applications never call it.)
        """
        if self._depth:
            raise InvalidOperationError("undo and redo cannot run inside a transaction")
        self._origin = origin
        self._depth += 1
        try:
            done = write()
        except BaseException as exc:
            if _is_panic(exc):
                raise EngineError(f"the CRDT engine failed: {exc}") from None
            raise
        finally:
            self._depth -= 1
            self._text_epoch += 1
            self._text_ascii_epoch = self._text_epoch
        if self._queue:
            self._deliver()
        return bool(done)

    def hlc_tick(self, seen: tuple[int, int]) -> tuple[int, int]:
        """Next hybrid-logical-clock timestamp, after both our last one and ``seen``.

        (For registers: the timestamp of a write.)
        """
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
    def writer_key(self) -> str:
        """This replica's writer id as a map key (counters and registers keep one entry each)."""
        return self._client_key

    @property
    def text_epoch(self) -> int:
        """A number that changes whenever any text may have changed behind a container's back.

        A :class:`Text` keeps its code-point index while the epoch it recorded
        is current; imports, undo and redo move the epoch on.
        """
        return self._text_epoch

    @property
    def text_ascii_epoch(self) -> int:
        """The :attr:`text_epoch` of the last change other than a plain ASCII import.

        Imports whose structs are all ASCII strings, deletions or GC (see
        ``Checker.plain_ascii``) keep an ASCII text ASCII and without embeds:
        a :class:`Text` whose cache was ASCII at an epoch from this one on
        only needs its length again.
        """
        return self._text_ascii_epoch

    def text_edited(self) -> int:
        """A text changed through its own container: move the epoch on, and return it."""
        self._text_epoch += 1
        self._text_ascii_epoch = self._text_epoch
        return self._text_epoch

    @property
    def limits(self) -> UpdateLimits:
        """The limits that updates imported into this document are checked against."""
        return self._limits

    def index(self) -> Checker:
        """The validator's index of this document, brought up to date with local edits.

        (For model code that locates items, such as relative positions.)
        """
        self._sync_index()
        return self._checker

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
        """Like :meth:`export_update`, as a raw Yjs v1 update (what Yjs clients send).

        Raises:
            EngineError: the engine panicked encoding its state (a state that an
                engine bug has already corrupted: see ``tests/model/test_engine_panic.py``).
        """
        if since is not None and not isinstance(since, Version):
            raise InvalidOperationError(f"since must be a Version, not {type(since).__name__}")
        try:
            if since is None:
                return bytes(self._y.get_update())
            return bytes(self._y.get_update(since.to_bytes()))
        except BaseException as exc:
            if _is_panic(exc):
                raise EngineError(f"the CRDT engine failed: {exc}") from None
            raise

    def contains(self, update: bytes) -> bool:
        """Whether importing a raw Yjs v1 update would change nothing and hold nothing.

        True exactly when every struct of the update (Skip structs included)
        lies within the clocks this replica has, and every range its delete
        set names is already deleted here: an empty update, or a catch-up that
        only repeats known items and deletions (what a read-only client may
        send without writing anything). False when the update would add
        something, or would be held (it reaches past the clocks this replica
        has: a gap, a Skip, a deletion of something not here yet). The answer
        costs in proportion to the update, not to the document.

        Raises:
            InvalidUpdateError: the bytes are not a valid update.
        """
        parsed = self._checker.parse(bytes(update), self._limits)
        self._sync_index()
        return self._checker.contains(parsed)

    def new_writers(self, update: bytes) -> builtins.list[int]:
        """Client ids under which a raw Yjs v1 update writes structs this replica lacks.

        What a sync layer's writer check needs (which ids a peer may write
        under). The parse is kept for an :meth:`import_yjs_update` of the same
        bytes right after, so checking the writers costs no second parse.

        Raises:
            InvalidUpdateError: the bytes are not a valid update.
        """
        data = bytes(update)
        parsed = self._checker.parse(data, self._limits)
        self._last_parse = (data, parsed)
        writes = self._checker.writes(parsed)
        if not writes:
            return []
        known = self.version
        return [c for c, end in writes.items() if end > (known.get(c) or 0)]

    def save(self) -> bytes:
        """The full history in the compact encoding, for :meth:`load`."""
        return encoding.pack(
            bytes(self._y.get_update()),
            compact=True,
            snapshot=True,
            held=self.held_updates(),
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
        native: bool | None = None,
    ) -> Doc:
        """A new document holding what :meth:`save` (or :meth:`export_update`) wrote.

        Stored state is read under ``limits.max_document_bytes`` (a document
        is larger than any one update it grew by); each held update it carries
        under the per-update limits. ``native`` is as for :class:`Doc`.

        The whole save is checked here. With the Rust core, a save that
        carries tree shapes (and no held updates) applies its history to the
        CRDT engine on first need rather than here: reading a tree from its
        saved shape does not need it; any other use (an edit, a data map,
        ``to_py``, an import or export, ``version``...) applies it first,
        with the same result as applying it here (``docs/TREE.md``,
        "Saved shapes").

        Raises:
            InvalidUpdateError: if the bytes are not a valid crdtsync document.
        """
        doc = cls(peer_id=peer_id, limits=limits, clock=clock, native=native)
        whole = doc._whole
        env = encoding.unpack(data, whole, native=doc._checker.native)
        deferring = None
        if (
            _LAZY_LOADS
            and env.cache
            and not env.held
            and env.parsed is not None
            and isinstance(doc._checker, NativeChecker)
        ):
            # Hydration: the engine's apply waits until something needs the
            # engine (a tree read from its saved shape does not). Everything
            # else about the load (the decoder, the index's whole check and
            # commit) happens now.
            deferring = doc._deferring = _Lazy()
        try:
            doc._apply(env.update, None, env.parsed, whole)
        finally:
            doc._deferring = None
            if deferring is not None and deferring.parsed is not None and not deferring.update:
                deferring.parsed.release()  # kept for nothing: the engine applied it
        if deferring is not None and deferring.update:
            doc._defer_engine(deferring)
            try:
                doc._offer_tree_shapes(env.cache)
            finally:
                lazy = doc._lazy
                if lazy is not None and lazy.parsed is not None:
                    lazy.parsed.release()
                    lazy.parsed = None
                    lazy.registry_entries = None
            return doc
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
            InvalidOperationError: called inside an open transaction of this
                document (see :meth:`import_yjs_update`).
            EngineError: the engine failed after validation (a bug: please report).
        """
        if self._depth:
            self._refuse_nested_import()
        env = encoding.unpack(data, self._limits, native=self._checker.native)
        self._apply(env.update, origin, env.parsed)
        for update in env.held:
            self._apply(update, origin)

    def import_yjs_update(self, data: bytes, *, origin: Any = None) -> None:
        """Merge a raw Yjs v1 update (from Yjs, y-websocket or pycrdt peers).

        An update that depends on changes this replica does not have yet is
        held (see :attr:`pending`) and applied when they arrive.

        Raises:
            InvalidUpdateError: if the bytes are not a valid update.
            UpdateLimitError: it exceeds a limit, or holding it would exceed the
                budget for held updates (``UpdateLimits.max_held_*``,
                ``max_pending_deletes``).
            InvalidOperationError: called inside an open transaction of this
                document (``with doc.transaction():``, or an observer called
                during one): a remote update is its own transaction, so that
                observers and undo managers see it as remote. Nothing changed.
        """
        if self._depth:
            self._refuse_nested_import()
        if type(data) is not bytes:
            if not isinstance(data, _BYTES_LIKE):
                raise InvalidUpdateError(f"updates are bytes, not {type(data).__name__}")
            data = bytes(data)
        if self._held_order or not self._index_live or self._last_parse is not None:
            self._apply(data, origin)
            return
        # What _apply does, for the common case (a live index, nothing held
        # that may expire, no parse to reuse): one Python call less per import.
        if self._local:
            self._record_local()
        try:
            moved = self._integrate(data, None, origin, self._limits)
        except MissingUpdatesError as exc:
            self._hold(data, origin, [exc.needs])
            return
        except InvalidUpdateError:
            self._check_poisoned()
            raise
        if self._waiting and moved:
            self._release_held(moved)

    def _refuse_nested_import(self) -> None:
        # pycrdt cannot open the import's transaction (origin: remote) inside
        # one with another origin, and folding the update into the caller's
        # transaction would show it as a local edit (to undo managers too).
        raise InvalidOperationError(
            "cannot import an update inside an open transaction of this document: "
            "import it once the transaction has ended"
        )

    @property
    def pending(self) -> int:
        """Updates received ahead of changes they depend on, held until those arrive."""
        return len(self._held)

    def held_updates(self) -> builtins.list[bytes]:
        """The raw updates held until their predecessors arrive (see :attr:`pending`)."""
        return [h.update for h in self._held.values()]

    # -- the import path ---------------------------------------------------------------
    #
    # Bytes -> one parse (or the compact decoder's own) -> DocIndex.begin, which
    # checks every rule and integrates the structs into the index in one pass ->
    # pycrdt -> IndexUpdate.commit (deletions). Local transactions reach the index
    # through their own update (pycrdt's transaction event), recorded before the
    # next import; nothing here costs in proportion to the document. An import
    # of raw bytes is parsed and begun in one call (Checker.parse_begin, bound
    # once with the document's limits: Checker.import_calls), and the common
    # one (no formatting, no open transaction, no deep observers) is applied
    # and committed inline in _integrate: on a keystroke each Python call on
    # this path is a few percent of the import.

    def _document_limits(self) -> UpdateLimits:
        """The limits for stored state: ``max_document_bytes`` instead of the update size."""
        lim = self._limits
        return replace(lim, max_update_bytes=max(lim.max_update_bytes, lim.max_document_bytes))

    def _sync_index(self, *, subscribe: bool = True) -> None:
        """Bring the validator's index up to date with this document's own changes.

        Until the first import the index listens to nothing, so that a document
        only ever edited locally pays nothing for it; the first import records
        what happened so far as one state-vector diff and subscribes to the
        engine's transactions. From then on each local transaction's update
        (which carries its deletions: a deleted container's items are GC'd by
        yrs, and that changes where later remote items land) is recorded here,
        before the next import is checked.

        Args:
            subscribe: subscribe to the engine's transactions now; ``_apply``
                passes False for a first import made outside any transaction,
                and subscribes once the engine has applied it (see there).
        """
        if not self._index_live:
            diff = bytes(self._y.get_update(Version(self._checker.state()).to_bytes()))
            try:
                self._checker.record_diff(diff, self._whole)
            except InvalidUpdateError as exc:
                log.error("the validator's index could not record the document (%s)", exc)
                self._rebuild_index()
            self._index_live = True
            if subscribe:
                self._subscribe_engine()
            return
        if self._local:
            self._record_local()

    def _record_local(self) -> None:
        local, self._local = self._local, []
        limits = self._whole
        checker = self._checker
        try:
            checker.record_local(local, limits)
        except InvalidUpdateError as exc:
            # The engine's own transaction did not fit the index: a bug in the
            # index. Rebuild it from the engine's state rather than check later
            # updates against a wrong one (and rather than fail the user's edit).
            log.error("the validator's index lost track of a local change (%s); rebuilding", exc)
            self._rebuild_index()

    def _rebuild_index(self) -> None:
        """A new index from the engine's state (after a bug in the index)."""
        checker = self._checker.fresh()
        full = bytes(self._y.get_update())
        try:
            checker.record_diff(full, self._whole)
        except InvalidUpdateError as exc:
            if not checker.native:
                raise
            # The Rust index failed on the document itself: carry on with the
            # Python reference, which is slower but does not share its bugs.
            log.error("the Rust index cannot hold this document (%s); using the Python one", exc)
            checker = PyChecker(dict(checker.snapshot()["root_types"]))
            checker.record_diff(full, self._whole)
        self._checker = checker
        self._begin_import, self._commit_import = checker.import_calls(self._limits)

    def _apply(
        self,
        update: bytes,
        origin: Any,
        parsed: Parsed | None = None,
        limits: UpdateLimits | None = None,
    ) -> None:
        limits = limits or self._limits
        if self._held_order:
            self._expire_held()
        fresh = not self._index_live
        if fresh or self._local:
            # A first import made outside our transactions (Doc.load's, say)
            # subscribes to the engine's transactions once the engine applied
            # it (below): a subscribed pycrdt encodes each transaction's whole
            # update for the event, on a load a fifth of pycrdt's own time, and
            # an import's event only matters for the deletions yrs may make of
            # its own accord (then _integrate subscribes before applying).
            self._sync_index(subscribe=not fresh or self._depth > 0)
        try:
            if parsed is None and self._last_parse is not None:
                cached, self._last_parse = self._last_parse, None
                if cached[0] is update or cached[0] == update:
                    parsed = cached[1]
            try:
                moved = self._integrate(update, parsed, origin, limits)
            except MissingUpdatesError as exc:
                # Out of order: pycrdt 0.14 would integrate past the gap and diverge
                # (see _yupdate), so we hold the update until its predecessors arrive.
                self._hold(update, origin, [exc.needs])
                return
            except InvalidUpdateError:
                self._check_poisoned()
                raise
            if self._waiting and moved:
                self._release_held(moved)
        finally:
            if fresh and not (self._deferring is not None and self._deferring.update):
                self._subscribe_engine()  # (a deferred load's waits for _hydrate)

    def _check_poisoned(self) -> None:
        """After a refused update: rebuild the index if a bug (a panic) poisoned it."""
        if self._checker.poisoned:
            log.error("the Rust index failed (a bug); rebuilding it from the engine")
            self._rebuild_index()

    def _integrate(
        self, update: bytes, parsed: Parsed | None, origin: Any, limits: UpdateLimits
    ) -> builtins.list[int]:
        """Check, apply and index one update; returns the clients whose clocks moved.

        ``parsed`` is the update's parse if one was made already (a load's, or
        :meth:`new_writers`'); otherwise the update is parsed and begun in one
        step (``Checker.parse_begin``: one call into Rust for an import).

        Deletions of clocks this replica does not have yet are split off and
        held as a delete-only update: yrs would keep them pending, re-read all
        of them on every later update, and leave them out of :meth:`save`.
        """
        checker = self._checker
        if parsed is None:
            if limits is self._limits:
                got = self._begin_import(update)
            else:
                got = checker.parse_begin(update, limits)
            if not isinstance(got, int):
                parsed = got  # deletions to split off: the two steps below, with the budget
            elif got & BEGAN_FORMATTING or self._depth or self._engine_origins or self._watched:
                began: Began = (update, got & BEGAN_FORMATTING != 0, None, 0, ())
                return self._applied(began, got & BEGAN_PLAIN != 0, origin)
            else:
                # The common import (every keystroke): _applied and the bare
                # path of _engine_apply, inline (each Python call is a few
                # percent of a keystroke's import).
                self._depth = 1
                self._importing = True
                self._origin = _REMOTE_NONE if origin is None else _Remote(origin)
                try:
                    self._engine_apply_bare(update)
                except BaseException as exc:
                    self._import_failed(exc)
                self._depth = 0
                self._importing = False
                self._text_epoch += 1
                if not got & BEGAN_PLAIN:
                    self._text_ascii_epoch = self._text_epoch
                moved = self._commit_import()
                self._imports += 1
                if self._observers:
                    self._announce_new_roots(origin)
                if self._queue:
                    self._deliver()
                return moved

        def budget(n_later: int, later: bytes) -> None:
            if self._held_deletes + n_later > limits.max_pending_deletes:
                raise UpdateLimitError(
                    f"the update deletes {n_later} ranges of changes this document does "
                    f"not have, {self._held_deletes} are waiting already: more than "
                    f"max_pending_deletes={limits.max_pending_deletes}"
                )
            self._check_hold_budget(len(later), origin)

        plain = checker.plain_ascii(parsed)  # (before begin, which spends the parse)
        deferring = self._deferring
        if deferring is not None and isinstance(checker, NativeChecker):
            # A lazy load reads map entries' values from its parse (see load).
            began = checker.begin_kept(update, parsed, limits, budget, keep=True)
            deferring.parsed = cast("NativeUpdate", parsed)
        else:
            began = checker.begin(update, parsed, limits, budget)
        return self._applied(began, plain, origin)

    def _applied(self, began: Began, plain: bool, origin: Any) -> builtins.list[int]:
        """:meth:`_integrate` once begun: the engine applies the update, the index commits.

        Args:
            began: what ``Checker.begin`` returned: the bytes for pycrdt,
                whether the engine transaction's delete set must reach the
                index, and the deletions split off to hold.
            plain: whether the update is plain ASCII (see :attr:`text_ascii_epoch`).
            origin: the import's origin.
        """
        engine, want, later, n_later, needs = began
        checker = self._checker
        deferring = self._deferring
        if deferring is not None and not want and later is None:
            # A lazy load (see load): the index commits now, the engine's
            # apply (_engine_apply's bare path) waits for _hydrate.
            deferring.update = engine
            self._origin = _REMOTE_NONE  # (as _engine_apply leaves it)
            self._text_epoch += 1
            if not plain:
                self._text_ascii_epoch = self._text_epoch
            moved = checker.commit()
            self._imports += 1
            return moved
        self._want_event_deletes = want
        if want and self._txn_sub is None:
            self._subscribe_engine()  # (a first import: see _apply)
        try:
            self._engine_apply(engine, origin, plain)
        except BaseException:
            checker.rollback()
            raise
        finally:
            self._want_event_deletes = False
        moved = checker.commit()
        self._imports += 1
        if self._event_deletes is not None:
            # yrs deleted formatting items of its own accord (redundant ones).
            ds, self._event_deletes = self._event_deletes, None
            checker.record_delete_set(ds, self._whole)
        if later is not None:
            self._hold(later, origin, builtins.list(needs), n_later)
        if self._observers:
            self._announce_new_roots(origin)
        if self._depth == 0 and self._queue:
            self._deliver()
        return moved

    def _import_failed(self, exc: BaseException) -> None:
        """The engine failed on a begun import outside any transaction (see :meth:`_integrate`).

        Ends the import as :meth:`_engine_apply` does, rolls the index back and
        raises what :meth:`_engine_apply` raises.
        """
        self._depth = 0
        self._importing = False
        self._text_epoch += 1
        self._text_ascii_epoch = self._text_epoch
        self._checker.rollback()
        _raise_apply_failure(exc)

    def _announce_new_roots(self, origin: Any) -> None:
        """Tell change observers of the roots an import created (with its own event, if any)."""
        created = self._watch_new_roots()
        if created:
            ev = self._queue[-1][0] if self._queue else None
            if ev is not None and not ev.local and ev.origin is origin:
                ev = ChangeEvent(origin, False, ev.changes + tuple(created))
                self._queue[-1] = (ev, *self._queue[-1][1:])
            else:
                self._queue.append((ChangeEvent(origin, False, tuple(created)), b"", origin, False))

    def _classify_engine_roots(self) -> None:
        """Learn the kind of roots the engine holds that nothing here names yet.

        Roots written only by plain Yjs clients are known to the engine by name,
        with no type until someone reads them. Their kind is told from the
        items of the whole state (a function of the replicated state, whatever
        order the updates came in): an item that names its root (no origin to
        inherit it from) that is keyed shows a map, text content a text, values
        a list. The state is parsed (by the Python reference parser, on the
        engine's own bytes) only when the engine holds a root nothing names and
        the document changed since the last look: Yjs-only roots are rare, and
        their kind never changes once seen.
        """
        engine_roots = self._y.keys()  # pycrdt's Doc lists its root names with keys()
        known = self._yjs_roots
        unknown = {n for n in engine_roots if type(n) is str and n != REGISTRY and n not in known}
        unknown.difference_update(self._registry.keys())
        if not unknown or self._roots_scanned == self._imports:
            return
        self._roots_scanned = self._imports
        parsed = parse_update(bytes(self._y.get_update()), self._whole)
        checker = None
        for structs in parsed.clients.values():
            for st in structs:
                name, sub = st.parent, st.parent_sub
                if name is None:
                    # The root is inherited from an origin (a root's first items may
                    # be deleted: then only later ones show its kind): the index
                    # knows where the item lives.
                    if _root_kind_of(st.kind, None, st.content) is None:
                        continue
                    if checker is None:
                        if not self._index_live or self._local:
                            self._sync_index()
                        checker = self._checker
                    where = checker.where_of(st.client, st.clock)
                    if where is None:
                        continue
                    name, sub = where
                if type(name) is not str or name not in unknown or name in known:
                    continue
                kind = _root_kind_of(st.kind, sub, st.content)
                if kind is not None:
                    known[name] = kind

    def _engine_apply(self, update: bytes, origin: Any, plain: bool) -> None:
        """Hands validated bytes to pycrdt, in a transaction marked remote.

        ``plain``: the update is a plain ASCII one (see :attr:`text_ascii_epoch`).
        """
        if self._depth:
            self._engine_apply_nested(update, origin)
            return
        # The common case, kept short (one pycrdt transaction, its origin marking
        # it remote for observers and undo managers). Delivery waits for the
        # caller, so the event can name the roots this update created.
        remote = _REMOTE_NONE if origin is None else _Remote(origin)
        self._depth = 1
        self._importing = True
        self._origin = remote
        applied = False
        try:
            if self._engine_origins:
                with self._y.transaction(origin=remote):
                    self._y.apply_update(update)
            elif self._watched:
                # Deep observers (for ChangeEvents) read the engine's events
                # through pycrdt's Python transaction.
                self._y.apply_update(update)
            else:
                # Nobody reads the document from an engine callback (update
                # observers get the bytes after it): the engine's own
                # transaction, without pycrdt's Python one.
                self._engine_apply_bare(update)
            applied = plain
        except BaseException as exc:
            _raise_apply_failure(exc)
        finally:
            self._depth = 0
            self._importing = False
            self._text_epoch += 1
            if not applied:
                self._text_ascii_epoch = self._text_epoch

    def _engine_apply_nested(self, update: bytes, origin: Any) -> None:
        """:meth:`_engine_apply` inside an open transaction of ours."""
        self._depth += 1
        try:
            with _Txn(self, _Remote(origin)):
                try:
                    self._y.apply_update(update)
                except Exception as exc:
                    raise EngineError(f"the CRDT engine refused a validated update: {exc}") from exc
        finally:
            self._depth -= 1
            self._text_epoch += 1
            self._text_ascii_epoch = self._text_epoch

    # -- held updates --------------------------------------------------------------------

    def _check_hold_budget(self, size: int, origin: Any) -> None:
        lim = self._limits
        if len(self._held) >= lim.max_held_updates or self._held_bytes + size > lim.max_held_bytes:
            raise UpdateLimitError(
                f"too many updates waiting for missing predecessors ({len(self._held)} held, "
                f"{self._held_bytes} bytes); re-sync from this document's version instead"
            )
        if (
            origin is not None
            and self._held_per_origin.get(id(origin), 0) >= lim.max_held_per_origin
        ):
            raise UpdateLimitError(
                f"{lim.max_held_per_origin} updates from this origin are already waiting for "
                "missing predecessors; re-sync from this document's version instead"
            )

    def _hold(
        self, update: bytes, origin: Any, needs: builtins.list[tuple[int, int]], deletes: int = 0
    ) -> None:
        self._check_hold_budget(len(update), origin)
        self._held_seq += 1
        entry = _Held(self._held_seq, update, origin, self._clock(), needs, deletes)
        self._add_held(entry)
        self._held_order.append((entry.since, entry.seq))

    def _add_held(self, entry: _Held) -> None:
        self._held[entry.seq] = entry
        self._held_bytes += len(entry.update)
        self._held_deletes += entry.deletes
        if entry.origin is not None:
            key = id(entry.origin)
            self._held_per_origin[key] = self._held_per_origin.get(key, 0) + 1
        for client, clock in entry.needs:
            heapq.heappush(self._waiting.setdefault(client, []), (clock, entry.seq))

    def _drop_held(self, seq: int) -> _Held | None:
        entry = self._held.pop(seq, None)
        if entry is None:
            return None
        self._held_bytes -= len(entry.update)
        self._held_deletes -= entry.deletes
        if entry.origin is not None:
            key = id(entry.origin)
            left = self._held_per_origin[key] - 1
            if left:
                self._held_per_origin[key] = left
            else:
                del self._held_per_origin[key]
        return entry

    def _expire_held(self) -> None:
        """Drops held updates older than ``held_timeout`` (oldest first)."""
        order = self._held_order
        if not order:
            return
        deadline = self._clock() - self._limits.held_timeout
        while order and (order[0][0] <= deadline or order[0][1] not in self._held):
            since, seq = order.popleft()
            if seq in self._held and since <= deadline:
                self._drop_held(seq)
                log.info(
                    "dropped an update held for %.0f s waiting for missing predecessors",
                    self._clock() - since,
                )
        if not self._held:
            order.clear()
            self._waiting.clear()

    def _release_held(self, moved: builtins.list[int]) -> None:
        """Retry the held updates waiting for clocks that just arrived."""
        clients = set(moved)
        while clients:
            ready: set[int] = set()
            for client in clients:
                heap = self._waiting.get(client)
                if not heap:
                    continue
                have = self._checker.state_of(client)
                while heap and heap[0][0] < have:
                    ready.add(heapq.heappop(heap)[1])
                if not heap:
                    del self._waiting[client]
            clients = set()
            for seq in sorted(ready):
                entry = self._drop_held(seq)
                if entry is None:
                    continue  # applied or dropped meanwhile (also waited elsewhere)
                try:
                    parsed = self._checker.parse(entry.update, self._limits)
                    clients.update(
                        self._integrate(entry.update, parsed, entry.origin, self._limits)
                    )
                except MissingUpdatesError as exc:
                    entry.needs = [exc.needs]
                    self._add_held(entry)
                except InvalidUpdateError as exc:
                    # It passed every document-independent check when it arrived;
                    # what it depends on now contradicts it. Dropping it keeps the
                    # document safe; a state-vector sync re-sends anything real.
                    log.info("dropped a held update that no longer applies: %s", exc)

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
        self._update_observers += (callback,)

        def unsubscribe() -> None:
            observers = builtins.list(self._update_observers)
            if callback in observers:
                observers.remove(callback)
                self._update_observers = tuple(observers)

        return unsubscribe

    def _watch(self, name: str, root: Container) -> None:
        if name in self._watched:
            return
        # (Weakly, as _subscribe_engine's callback: the engine holds it.)
        on_deep = _weak_callback(self, lambda doc, events: doc._on_deep(name, events))
        self._watched[name] = root._y.observe_deep(on_deep)
        if root.kind in ("map", "list", "text"):
            self._mirrors.scan((name,), root._y)

    def _watch_new_roots(self) -> builtins.list[Change]:
        created = []
        for name, kind in self.roots().items():
            if name not in self._watched:
                try:
                    root = self.root(name, kind)
                except RootTypeError:
                    continue
                self._watch(name, root)
                found: builtins.list[tuple[tuple[str | int, ...], str]] = []
                if root.kind in ("map", "list"):
                    self._mirrors.scan((name,), root._y, found)
                content = str(root._y) if isinstance(root, Text) else ""
                delta = [{"insert": content}] if content else None
                created.append(Change((name,), kind, delta=delta, created=True))
                # Texts inside the new root, with their content, like new nested texts.
                created.extend(
                    Change(path, "text", delta=[{"insert": text}])
                    for path, text in found
                    if len(path) > 1
                )
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
        # Paths and mirrors follow the structure first (see text_mirrors), then
        # every text delta is translated against them.
        appeared = self._mirrors.follow(
            [((name, *ev.path), ev) for ev in events if not isinstance(ev, pycrdt.TextEvent)]
        )
        for ev in events:
            path = (name, *ev.path)
            target = ev.target
            if isinstance(ev, pycrdt.TextEvent):
                self._pending.append(Change(path, "text", delta=self._mirrors.delta(path, ev)))
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
        for path, content in appeared:
            # A text created with its content: yrs sends no event of its own.
            self._pending.append(Change(path, "text", delta=[{"insert": content}]))

    def _list_delta(self, ev: Any) -> builtins.list[dict[str, Any]]:
        from crdtsync.model.containers import _plain

        out: builtins.list[dict[str, Any]] = []
        for op in ev.delta:
            if "insert" in op:
                out.append({"insert": [_plain(self, v) for v in op["insert"]]})
            else:
                out.append(dict(op))
        return out

    def _on_transaction(self, event: Any) -> None:
        # Runs inside pycrdt's commit, called by the engine itself (see
        # _subscribe_engine): only package; delivery happens after it. What it
        # raises goes where pycrdt's own wrapper would put it, to be raised
        # once the transaction is over.
        try:
            update = b""  # the transaction's update, read from the engine at most once
            if self._index_live:
                if self._importing:
                    if self._want_event_deletes:
                        self._event_deletes = bytes(event.delete_set)
                else:
                    update = bytes(event.update)
                    local_updates = self._local
                    local_updates.append(update)
                    if len(local_updates) >= _LOCAL_BATCH:
                        self._record_local()
            if not self._observed:
                return  # nobody observes: nothing to package
            origin = self._origin
            local = not isinstance(origin, _Remote)
            if not local:
                origin = origin.origin
            ev = None
            if self._pending:
                changes, self._pending = self._pending, []
                if self._observers:
                    ev = ChangeEvent(origin, local, tuple(changes))
            if self._update_observers:
                if not update:
                    update = bytes(event.update)
                self._queue.append((ev, update, origin, local))
            elif ev is not None:
                self._queue.append((ev, b"", origin, local))
        except Exception as exc:
            self._engine_errors.append(exc)

    def _deliver(self) -> None:
        queue = self._queue
        while queue:
            ev, update, origin, local = queue.pop(0)
            if ev is not None:
                for cb in tuple(self._observers):
                    cb(ev)
            if update:
                for ucb in self._update_observers:
                    ucb(update, origin, local)

    def _subscribe_transactions(self) -> None:
        self._observed = True
        self._subscribe_engine()

    def _subscribe_engine(self) -> None:
        if self._txn_sub is None:
            # Called by the engine without pycrdt's Python wrapper (one call
            # less per transaction); _on_transaction hands what it raises to
            # _engine_errors, as that wrapper would. The engine holds the
            # callback where Python's collector cannot see it: a bound method
            # would keep this document (and its engine) alive forever, so the
            # engine holds it weakly (tests/model/test_doc_lifetime.py).
            on_transaction = _weak_callback(self, Doc._on_transaction)
            self._txn_sub, self._engine_errors = observe_transactions(self._y, on_transaction)


def _raise_apply_failure(exc: BaseException) -> NoReturn:
    """Raise what the engine failing to apply a validated update becomes.

    A panic becomes :class:`EngineError`; so does any other ``Exception``
    (validation should make it unreachable: never let an engine error type
    escape as if it were ours to document). Anything else (``KeyboardInterrupt``)
    goes on as it is.
    """
    if _is_panic(exc):
        raise EngineError(f"the CRDT engine failed: {exc}") from None
    if isinstance(exc, Exception):
        raise EngineError(f"the CRDT engine refused a validated update: {exc}") from exc
    raise exc


def _weak_callback(doc: Doc, method: Callable[..., None]) -> Callable[[Any], None]:
    """``method(doc, arg)`` for an engine callback, holding ``doc`` weakly.

    The engine keeps its callbacks in Rust, out of sight of Python's cycle
    collector: a callback holding the document would keep the document, its
    engine and everything in it alive after the last reference to it is gone.
    """
    ref = weakref.ref(doc)

    def callback(arg: Any) -> None:
        d = ref()
        if d is not None:
            method(d, arg)

    return callback


# Engine type of each kind a plain Yjs root can show.
_ENGINE_OF: dict[str, Any] = {"map": pycrdt.Map, "list": pycrdt.Array, "text": pycrdt.Text}
_TEXT_CONTENT = frozenset((CONTENT_STRING, CONTENT_FORMAT, CONTENT_EMBED))
_LIST_CONTENT = frozenset((CONTENT_ANY, CONTENT_JSON, CONTENT_BINARY, CONTENT_TYPE))


def _root_kind_of(content_kind: int, parent_sub: str | None, content: Any) -> str | None:
    """The kind of root an item shows: a keyed item a map, text content a text, values a list."""
    if parent_sub is not None:
        return "map"
    if content_kind in _TEXT_CONTENT:
        return "text"
    if content_kind in _LIST_CONTENT:
        if content_kind == CONTENT_TYPE and content.type_ref not in _TYPE_REFS.values():
            return None  # an XML element: the root is an XML fragment
        return "list"
    return None


#: Doc attributes that hold the engine or closures over it: absent while a
#: loaded document is unhydrated (Doc.__getattr__ then hydrates it).
_ENGINE_ATTRS = frozenset(("_y", "_registry", "_engine_apply_bare"))
#: Whether Doc.load may defer the engine's apply (tests switch it off to
#: compare lazy loads with eager ones).
_LAZY_LOADS = True


@dataclass(eq=False, slots=True)
class _Lazy:
    """A loaded document's engine and the history it has not applied yet (see ``Doc.load``)."""

    # The v1 update for the engine (held only until hydration).
    update: bytes = b""
    # The engine document, its root registry and bare apply (Doc._y, _registry,
    # _engine_apply_bare while hydrated).
    y: Any = None
    registry: Any = None
    apply_bare: Any = None
    # The state vector the index committed, as the engine would encode it.
    version: bytes = b""
    # The load's parse, kept (and the registry's live entries) until the saved
    # tree shapes have been offered.
    parsed: NativeUpdate | None = None
    registry_entries: dict[str, tuple[int, int, int, int | None]] | None = None
    # Root names the registry establishes as trees; their wrappers made before
    # hydration, and the container sizes their saved shapes were checked against.
    tree_names: set[str] = field(default_factory=set)
    # Whether the shapes' offer would have asked Doc.roots() (see _hydrate).
    roots_asked: bool = False
    trees: dict[str, Tree] = field(default_factory=dict)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class _Held:
    """An update held until the changes it needs arrive."""

    seq: int  # arrival number
    update: bytes
    origin: Any
    since: float  # arrival time (the document's clock)
    needs: builtins.list[tuple[int, int]]  # retried once one of these clocks is here
    deletes: int = 0  # ranges, for a delete-only update split off an import
