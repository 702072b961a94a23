r"""The container types of a document: Map, List, Text, Counter, Register.

Theory of operation
-------------------
Every container is a thin wrapper around one pycrdt shared type; pycrdt never
leaks out of this module and :mod:`crdtsync.model.doc`. The mapping, which is also
what a Yjs client sees (``ydoc.getMap(name)`` and so on):

==========  ==========  ==============================================================
container   Yjs type    layout
==========  ==========  ==============================================================
Map         Y.Map       user keys -> values (nested containers or encoded scalars)
List        Y.Array     values
Text        Y.Text      the text; offsets translated to code points (``_text_index``)
Counter     Y.Map       ``str(client id) -> that writer's running total`` (a number);
                        the value is the sum. Each writer only ever writes its own
                        key, so there is never a conflict to resolve and no
                        increment is lost: a PN-counter.
Register    Y.Map       ``str(client id) -> {"v": value, "t": [ms, counter]}``: the
                        entries nobody has overwritten yet. A write deletes every
                        entry its writer has seen and sets its own key, so concurrent
                        writes (neither saw the other) survive side by side; the
                        winner is the greatest hybrid logical clock ``t``, ties
                        broken by client id.
==========  ==========  ==============================================================

Nested counters, registers (and trees) are Y.Maps carrying the reserved key
``"\\x00k"`` naming their kind (every kind is listed in
:mod:`crdtsync.model.kinds`), which user map keys may not start with; root
containers get their kind from the document's root registry instead (see
:mod:`crdtsync.model.doc`), because writing a marker when a root is merely accessed
would be an edit.

A container constructed by the user (``Counter()``, ``Text("hi")``, ``Map({...})``)
is *detached*: it only holds an initial value. Assigning it into a document
*attaches* it: the same object then edits the stored container.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pycrdt

from crdtsync.errors import EngineError, InvalidOperationError, InvalidValueError
from crdtsync.model import values
from crdtsync.model._engine_private import text_writer
from crdtsync.model.kinds import kind_class
from crdtsync.model.text_index import TextIndex, embed_positions
from crdtsync.model.values import check_key, check_text

if TYPE_CHECKING:
    from crdtsync.model.doc import Doc

__all__ = [
    "KIND_KEY",
    "Container",
    "Counter",
    "List",
    "Map",
    "Register",
    "Text",
    "to_engine",
    "wrap",
]

#: Reserved key marking the kind of a nested Y.Map that is not a plain map.
KIND_KEY = "\x00k"

_C = TypeVar("_C", bound="Container")


class Container:
    """Base of all containers: attachment to a document and common helpers."""

    kind: ClassVar[str] = ""
    _engine_type: ClassVar[type[Any]] = pycrdt.Map

    __slots__ = ("__weakref__", "_doc", "_pending_root", "_read_at", "_y")

    def __init__(self) -> None:
        # The owning document, or None while detached.
        self._doc: Doc | None = None
        # The pycrdt shared type, or None while detached.
        self._y: Any = None
        # Root name still to be written into the root registry on the first edit.
        self._pending_root: str | None = None
        # (parent engine type, key or index) this wrapper was read from, so that
        # assigning it back there (``m["c"] += 1``) is recognised as a no-op.
        self._read_at: tuple[Any, str | int] | None = None

    # -- attachment ---------------------------------------------------------------

    @classmethod
    def _attached(cls: type[_C], doc: Doc, y: Any, pending_root: str | None = None) -> _C:
        obj = cls.__new__(cls)
        obj._bind(doc, y)
        obj._pending_root = pending_root
        return obj

    def _bind(self, doc: Doc, y: Any) -> None:
        self._doc = doc
        self._y = y
        self._pending_root = None
        self._read_at = None

    def _is_at(self, parent: Any, where: str | int) -> bool:
        """Whether this wrapper was read from ``parent[where]`` (the same engine object)."""
        at = self._read_at
        return at is not None and at[0] is parent and at[1] == where

    @property
    def attached(self) -> bool:
        """Whether this container lives in a document (rather than holding an initial value)."""
        return self._doc is not None

    def _d(self) -> Doc:
        doc = self._doc
        if doc is None:
            raise InvalidOperationError(
                f"this {type(self).__name__} is not in a document yet: assign it into one first"
            )
        return doc

    def _prelim(self, doc: Doc) -> Any:
        """The pycrdt preliminary type holding this detached container's initial value."""
        raise NotImplementedError  # every concrete container overrides it

    def to_py(self) -> Any:
        """The plain Python value of this container (dicts, lists, str, numbers...)."""
        raise NotImplementedError  # every concrete container overrides it

    def __repr__(self) -> str:
        state = "" if self.attached else "detached "
        return f"<{state}{type(self).__name__} {self.to_py()!r}>"


def to_engine(value: object, doc: Doc, depth: int = 0) -> Any:
    """Convert a user value into what pycrdt stores, checking it all first.

    dicts and lists become nested maps and lists; containers their preliminary
    types; scalars are encoded by :mod:`crdtsync.model.values`. Nothing is written:
    a bad value anywhere raises before the caller touches the engine.

    Args:
        value: the user's value.
        doc: the document it goes into (to refuse containers of another document).
        depth: current nesting depth.

    Returns:
        The engine value or preliminary type.

    Raises:
        InvalidValueError: for anything that cannot be stored.
    """
    t = values.plain_type(value)  # a read-only value read back is stored like its copy
    if t is dict or t is list:
        if depth >= values.MAX_VALUE_DEPTH:
            raise InvalidValueError(f"value nested deeper than {values.MAX_VALUE_DEPTH} levels")
        if t is dict:
            assert isinstance(value, dict)
            return pycrdt.Map(
                {check_key(k): to_engine(v, doc, depth + 1) for k, v in value.items()}
            )
        assert isinstance(value, list)
        return pycrdt.Array([to_engine(v, doc, depth + 1) for v in value])
    if isinstance(value, Container):
        if value.attached:
            raise InvalidValueError(
                f"this {type(value).__name__} is already in a document; "
                "assign a new one (or its .to_py() value) instead"
            )
        return value._prelim(doc)
    return values.encode(value, depth)


def _adopt(value: object, stored: Any, doc: Doc) -> None:
    """After a detached container was written, make the user's object edit the stored one."""
    if isinstance(value, Container) and not value.attached:
        value._bind(doc, stored)


def wrap(doc: Doc, stored: Any, read_at: tuple[Any, str | int] | None = None) -> Any:
    """Turn what pycrdt returns into a container wrapper or an exact Python value.

    Plain ``dict`` and ``list`` values (stored whole, as a Yjs client's
    ``ymap.set(k, {...})`` does) come back read-only
    (:class:`~crdtsync.model.values.ReadOnlyDict`): changing them would change
    nothing in the document.

    Args:
        doc: the document.
        stored: what pycrdt returned.
        read_at: ``(parent engine type, key or index)`` it was read from.
    """
    t = type(stored)
    obj: Container
    if t is pycrdt.Map:
        kind = stored.get(KIND_KEY) if KIND_KEY in stored else None
        cls = (kind_class(kind) or Map) if kind is not None else Map
        obj = cls._attached(doc, stored)
    elif t is pycrdt.Array:
        obj = List._attached(doc, stored)
    elif t is pycrdt.Text:
        obj = Text._attached(doc, stored)
    else:
        return values.read_only(values.decode(stored))
    obj._read_at = read_at
    return obj


def _plain(doc: Doc, stored: Any) -> Any:
    """``wrap(...).to_py()`` without building wrappers for scalars."""
    t = type(stored)
    if t is pycrdt.Map or t is pycrdt.Array or t is pycrdt.Text:
        return wrap(doc, stored).to_py()
    return values.decode(stored)


def engine_error(exc: BaseException) -> BaseException:
    """Translate a pycrdt panic into :class:`EngineError`; return anything else unchanged.

    pyo3 raises ``pyo3_runtime.PanicException``, a ``BaseException`` that cannot
    be imported by name; it is recognised by name so that real exits
    (``KeyboardInterrupt``, ``SystemExit``) pass through untouched.
    """
    if type(exc).__name__ == "PanicException":
        return EngineError(f"the CRDT engine failed: {exc}")
    return exc


def _norm_index(index: int, length: int, *, insert: bool = False) -> int:
    if type(index) is not int:
        raise InvalidOperationError(f"indexes are int, not {type(index).__name__}")
    if insert:
        # list.insert semantics: clamp into range.
        if index < 0:
            index = max(0, index + length)
        return min(index, length)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for length {length}")
    return index


# --------------------------------------------------------------------------------
# Map


class Map(Container):
    """A map from str keys to values; nested dicts and lists become nested containers.

    Examples:
        >>> from crdtsync import Doc
        >>> m = Doc().map("settings")
        >>> m["size"] = 2**70
        >>> m.to_py()
        {'size': 1180591620717411303424}
    """

    kind = "map"
    __slots__ = ("_initial",)

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        """Create a detached map holding ``initial``; assign it into a document to use it."""
        super().__init__()
        self._initial: dict[str, Any] = dict(initial or {})

    def _prelim(self, doc: Doc) -> Any:
        return to_engine(self._initial, doc)

    def _bind(self, doc: Doc, y: Any) -> None:
        super()._bind(doc, y)
        self._initial = {}

    def __getitem__(self, key: str) -> Any:
        if self._doc is None:
            return self._initial[key]
        if type(key) is not str or key.startswith("\x00"):
            raise KeyError(key)
        y = self._y
        return wrap(self._doc, y[key], (y, key))

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        doc = self._d()
        check_key(key)
        if isinstance(value, Container) and value._is_at(self._y, key):
            # ``m["c"] += 1``: Python assigns the edited container back to the
            # key it was read from; the edit is already in the document.
            return
        stored = to_engine(value, doc)
        with doc.edit(self):
            self._y[key] = stored
            if isinstance(value, Container):
                _adopt(value, self._y[key], doc)

    def __delitem__(self, key: str) -> None:
        doc = self._d()
        if key not in self:
            raise KeyError(key)
        with doc.edit(self):
            del self._y[key]

    def pop(self, key: str, *default: Any) -> Any:
        """Remove ``key`` and return its plain value (or ``default`` if given and absent)."""
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        value = _plain(self._d(), self._y[key])
        del self[key]
        return value

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Return ``self[key]``, first setting it to ``default`` if absent."""
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set many keys in one transaction, like ``dict.update``."""
        items = list(dict(other, **kwargs).items())
        doc = self._d()
        for k, v in items:  # check every value before writing any
            check_key(k)
            to_engine(v, doc)
        with doc.edit(self):
            for k, v in items:
                self[k] = v

    def clear(self) -> None:
        """Remove every key."""
        doc = self._d()
        with doc.edit(self):
            for k in list(self):
                del self._y[k]

    def __contains__(self, key: object) -> bool:
        if self._doc is None:
            return key in self._initial
        return type(key) is str and not key.startswith("\x00") and key in self._y

    def __iter__(self) -> Iterator[str]:
        if self._doc is None:
            return iter(list(self._initial))
        return iter(sorted(k for k in self._y if not k.startswith("\x00")))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def keys(self) -> list[str]:
        """The keys, sorted (the engine's order differs between replicas)."""
        return list(self)

    def values(self) -> list[Any]:
        """The values, in key order."""
        return [self[k] for k in self]

    def items(self) -> list[tuple[str, Any]]:
        """``(key, value)`` pairs in key order."""
        return [(k, self[k]) for k in self]

    def to_py(self) -> dict[str, Any]:
        """A plain ``dict``, recursively."""
        if self._doc is None:
            return dict(self._initial)
        doc = self._doc
        y = self._y
        return {k: _plain(doc, y[k]) for k in self}


# --------------------------------------------------------------------------------
# List


class List(Container):
    """An ordered list of values, edited like a Python ``list``.

    Examples:
        >>> from crdtsync import Doc
        >>> todos = Doc().list("todos")
        >>> todos.append({"title": "milk", "done": False})
        >>> todos[0]["done"] = True
        >>> todos.to_py()
        [{'done': True, 'title': 'milk'}]
    """

    kind = "list"
    _engine_type = pycrdt.Array
    __slots__ = ("_initial",)

    def __init__(self, initial: Iterable[Any] | None = None) -> None:
        """Create a detached list holding ``initial``; assign it into a document to use it."""
        super().__init__()
        self._initial: list[Any] = list(initial or [])

    def _prelim(self, doc: Doc) -> Any:
        return to_engine(self._initial, doc)

    def _bind(self, doc: Doc, y: Any) -> None:
        super()._bind(doc, y)
        self._initial = []

    def __len__(self) -> int:
        if self._doc is None:
            return len(self._initial)
        return len(self._y)

    def __getitem__(self, index: int | slice) -> Any:
        if self._doc is None:
            return self._initial[index]
        y = self._y
        n = len(y)
        if isinstance(index, slice):
            return [wrap(self._doc, y[i], (y, i)) for i in range(*index.indices(n))]
        i = _norm_index(index, n)
        return wrap(self._doc, y[i], (y, i))

    def __iter__(self) -> Iterator[Any]:
        if self._doc is None:
            return iter(list(self._initial))
        doc = self._doc
        return iter([wrap(doc, v) for v in self._y])

    def __contains__(self, value: object) -> bool:
        return any(_eq(v, value) for v in self)

    def index(self, value: Any) -> int:
        """Position of the first item equal to ``value`` (plain values compare by ``to_py()``)."""
        for i, v in enumerate(self):
            if _eq(v, value):
                return i
        raise ValueError(f"{value!r} is not in the list")

    def count(self, value: Any) -> int:
        """Number of items equal to ``value``."""
        return sum(1 for v in self if _eq(v, value))

    def insert(self, index: int, value: Any) -> None:
        """Insert ``value`` before ``index`` (clamped like ``list.insert``)."""
        doc = self._d()
        stored = to_engine(value, doc)
        with doc.edit(self):
            i = _norm_index(index, len(self._y), insert=True)
            self._y.insert(i, stored)
            if isinstance(value, Container):  # reading back costs a walk of the array
                _adopt(value, self._y[i], doc)

    def append(self, value: Any) -> None:
        """Add ``value`` at the end."""
        doc = self._d()
        stored = to_engine(value, doc)
        with doc.edit(self):
            self._y.append(stored)
            if isinstance(value, Container):
                _adopt(value, self._y[len(self._y) - 1], doc)

    def extend(self, items: Iterable[Any]) -> None:
        """Append every item, in one transaction; nothing is written if one is invalid."""
        doc = self._d()
        items = list(items)
        stored = [to_engine(v, doc) for v in items]
        with doc.edit(self):
            start = len(self._y)
            self._y.extend(stored)
            for i, v in enumerate(items):
                if isinstance(v, Container):
                    _adopt(v, self._y[start + i], doc)

    def __setitem__(self, index: int, value: Any) -> None:
        if isinstance(index, slice):
            raise InvalidOperationError("slice assignment is not supported; delete then insert")
        doc = self._d()
        if isinstance(value, Container) and value._is_at(self._y, _norm_index(index, len(self._y))):
            return  # ``items[0] += 1``: the edit is already in the document
        stored = to_engine(value, doc)
        with doc.edit(self):
            i = _norm_index(index, len(self._y))
            del self._y[i]
            self._y.insert(i, stored)
            if isinstance(value, Container):
                _adopt(value, self._y[i], doc)

    def __delitem__(self, index: int | slice) -> None:
        doc = self._d()
        with doc.edit(self):
            n = len(self._y)
            if isinstance(index, slice):
                idx = sorted(range(*index.indices(n)), reverse=True)
                # Contiguous runs are deleted with one range operation.
                for i in idx:
                    del self._y[i]
            else:
                del self._y[_norm_index(index, n)]

    def pop(self, index: int = -1) -> Any:
        """Remove and return the plain value at ``index`` (default: the last)."""
        doc = self._d()
        with doc.edit(self):
            i = _norm_index(index, len(self._y))
            value = _plain(doc, self._y[i])
            del self._y[i]
        return value

    def remove(self, value: Any) -> None:
        """Remove the first item equal to ``value``."""
        del self[self.index(value)]

    def clear(self) -> None:
        """Remove every item."""
        doc = self._d()
        with doc.edit(self):
            if len(self._y):
                del self._y[0 : len(self._y)]

    def to_py(self) -> list[Any]:
        """A plain ``list``, recursively."""
        if self._doc is None:
            return list(self._initial)
        doc = self._doc
        return [_plain(doc, v) for v in self._y]


def _eq(item: Any, value: Any) -> bool:
    if isinstance(item, Container):
        if isinstance(value, Container):
            return item is value or (item._y is not None and item._y == value._y)
        return bool(item.to_py() == value)
    return values.plain_type(item) is values.plain_type(value) and bool(item == value)


# --------------------------------------------------------------------------------
# Text


class Text(Container):
    """Collaborative text, indexed by code point like a Python ``str``.

    Embeds (objects a Yjs peer puts in a text with ``insertEmbed``) are kept,
    synced and exported, but they are not characters here: ``str(text)``,
    ``len(text)`` and every index leave them out, and so do the deltas of
    text changes (:attr:`crdtsync.Change.delta`): an inserted embed is not in
    the delta, a retained or deleted one counts nothing, so applying a delta
    to the previous ``str(text)`` gives the new one.

    Examples:
        >>> from crdtsync import Doc
        >>> body = Doc().text("body")
        >>> body.insert(0, "héllo 😀")
        >>> body.delete(0, 1)
        >>> body += "!"
        >>> str(body), len(body)
        ('éllo 😀!', 7)
    """

    kind = "text"
    _engine_type = pycrdt.Text
    __slots__ = ("_index", "_initial", "_writer")

    def __init__(self, initial: str = "") -> None:
        """Create a detached text holding ``initial``; assign it into a document to use it."""
        super().__init__()
        if type(initial) is not str:
            raise InvalidValueError(f"Text holds str, not {type(initial).__name__}")
        self._initial = initial
        # Offset translation cache (see _text_index).
        self._index: TextIndex | None = None
        # The engine's insert and remove (see _engine_private.text_writer), once used.
        self._writer: tuple[Callable[[int, str], None], Callable[[int, int], None]] | None = None

    def _bind(self, doc: Doc, y: Any) -> None:
        super()._bind(doc, y)
        self._initial = ""
        self._index = None
        self._writer = None

    @classmethod
    def _attached(cls, doc: Doc, y: Any, pending_root: str | None = None) -> Text:
        obj = super()._attached(doc, y, pending_root)
        obj._index = None
        obj._initial = ""
        obj._writer = None
        return obj

    def _prelim(self, doc: Doc) -> Any:
        return pycrdt.Text(self._initial)

    def _new_writer(self) -> tuple[Callable[[int, str], None], Callable[[int, int], None]]:
        self._writer = text_writer(self._y)
        return self._writer

    def _idx(self, doc: Doc) -> TextIndex:
        index = self._index
        if index is None or index.epoch != doc.text_epoch:
            y = self._y
            if index is not None and index.ascii and index.epoch >= doc.text_ascii_epoch:
                # Only plain ASCII imports since (see Doc.text_ascii_epoch):
                # still ASCII without embeds, so the engine's length (bytes)
                # is the code-point length, and nothing else needs reading.
                index.n = len(y)
                index.epoch = doc.text_epoch
                return index
            content = str(y)
            embeds = None
            # The engine counts each embed (a Yjs peer's insertEmbed) as one
            # offset unit and str() leaves them out: a length that differs
            # from the UTF-8 length of the string means embeds to step over.
            n_bytes = len(content) if content.isascii() else len(content.encode("utf-8"))
            if len(y) != n_bytes:
                embeds = embed_positions(y.diff())
            index = self._index = TextIndex(content, doc.text_epoch, embeds)
        return index

    def __str__(self) -> str:
        if self._doc is None:
            return self._initial
        return str(self._y)

    def __len__(self) -> int:
        doc = self._doc
        if doc is None:
            return len(self._initial)
        return self._idx(doc).n

    def __getitem__(self, index: int | slice) -> str:
        return str(self)[index]

    def __contains__(self, sub: object) -> bool:
        return isinstance(sub, str) and sub in str(self)

    def __iter__(self) -> Iterator[str]:
        return iter(str(self))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str(self) == other
        if isinstance(other, Text):
            return self is other or str(self) == str(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def insert(self, index: int, s: str) -> None:
        """Insert ``s`` so that it starts at code point ``index``.

        Args:
            index: 0 <= index <= len(text); negative counts from the end.
            s: the text to insert.

        Raises:
            IndexError: if ``index`` is out of range.
            InvalidValueError: if ``s`` is not a ``str``.
        """
        if type(s) is not str:
            raise InvalidValueError(f"Text.insert takes str, not {type(s).__name__}")
        ascii_s = s.isascii()
        if not ascii_s:  # (ASCII is always valid)
            check_text(s, "inserted text")
        doc = self._doc or self._d()
        idx = self._index
        if idx is None or idx.epoch != doc.text_epoch:
            idx = self._idx(doc)
        n = idx.n
        if type(index) is not int:
            raise InvalidOperationError(f"indexes are int, not {type(index).__name__}")
        if index < 0:
            index += n
        if not 0 <= index <= n:
            raise IndexError(f"text index {index} out of range for length {n}")
        if not s:
            return
        if self._pending_root is None and (doc.in_transaction or not doc.observed):
            # Hot path (typing): no events to package, so the engine's own
            # implicit transaction (or the open one) is all we need.
            writer = self._writer or self._new_writer()
            try:
                writer[0](idx.to_bytes(index), s)
            except BaseException as exc:
                raise engine_error(exc) from None
        else:
            with doc.edit(self):
                self._y.insert(idx.to_bytes(index), s)
        epoch = doc.text_edited()
        if idx.embeds:
            self._index = None  # embed mode: rebuilt on the next edit
            return
        idx.inserted(index, s, None if idx.ascii and ascii_s else str(self._y))
        idx.epoch = epoch

    def delete(self, index: int, length: int = 1) -> None:
        """Delete ``length`` code points starting at ``index``.

        Raises:
            IndexError: if the range is not inside the text.
        """
        doc = self._doc or self._d()
        idx = self._index
        if idx is None or idx.epoch != doc.text_epoch:
            idx = self._idx(doc)
        n = idx.n
        if type(index) is not int or type(length) is not int:
            raise InvalidOperationError("index and length are int")
        if index < 0:
            index += n
        if length < 0 or not 0 <= index <= n or index + length > n:
            raise IndexError(f"text range [{index}, {index + length}) out of range for length {n}")
        if not length:
            return
        spans = idx.spans(index, length)
        quiet = doc.in_transaction or not doc.observed
        if self._pending_root is None and len(spans) == 1 and quiet:
            start, blen = spans[0]
            writer = self._writer or self._new_writer()
            try:
                writer[1](start, blen)
            except BaseException as exc:
                raise engine_error(exc) from None
        else:
            with doc.edit(self):
                for start, blen in spans:  # last first: the earlier offsets stay valid
                    del self._y[start : start + blen]
        epoch = doc.text_edited()
        if idx.embeds:
            self._index = None  # embed mode: rebuilt on the next edit
            return
        idx.deleted(index, length)
        idx.epoch = epoch

    def __delitem__(self, index: int | slice) -> None:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise InvalidOperationError("text slices must be contiguous")
            if stop > start:
                self.delete(start, stop - start)
        else:
            n = len(self)
            i = index + n if index < 0 else index
            if not 0 <= i < n:
                raise IndexError(f"text index {index} out of range for length {n}")
            self.delete(i, 1)

    def __setitem__(self, index: int | slice, s: str) -> None:
        """Replace a character or a contiguous slice with ``s``, in one transaction."""
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise InvalidOperationError("text slices must be contiguous")
        else:
            n = len(self)
            start = index + n if index < 0 else index
            if not 0 <= start < n:
                raise IndexError(f"text index {index} out of range for length {n}")
            stop = start + 1
        if type(s) is not str:
            raise InvalidValueError(f"Text holds str, not {type(s).__name__}")
        with self._d().edit(self):
            if stop > start:
                self.delete(start, stop - start)
            self.insert(start, s)

    def append(self, s: str) -> None:
        """Add ``s`` at the end."""
        self.insert(len(self), s)

    def __iadd__(self, s: str) -> Text:
        self.append(s)
        return self

    def clear(self) -> None:
        """Delete everything."""
        n = len(self)
        if n:
            self.delete(0, n)

    def to_py(self) -> str:
        """The text as a ``str``."""
        return str(self)

    def __repr__(self) -> str:
        state = "" if self.attached else "detached "
        return f"<{state}Text {str(self)!r}>"


# --------------------------------------------------------------------------------
# Counter


class Counter(Container):
    """A counter that adds up increments and decrements from every replica.

    Examples:
        >>> from crdtsync import Doc
        >>> likes = Doc().counter("likes")
        >>> likes.increment(5); likes.decrement(2)
        >>> likes.value
        3
    """

    kind = "counter"
    __slots__ = ("_initial",)

    def __init__(self, initial: int = 0) -> None:
        """Create a detached counter at ``initial``; assign it into a document to use it."""
        super().__init__()
        self._initial = _check_delta(initial)

    def _bind(self, doc: Doc, y: Any) -> None:
        super()._bind(doc, y)
        self._initial = 0

    def _prelim(self, doc: Doc) -> Any:
        content: dict[str, Any] = {KIND_KEY: self.kind}
        if self._initial:
            # The initial value is the creating writer's contribution.
            content[doc.writer_key] = values.encode(self._initial)
        return pycrdt.Map(content)

    @property
    def value(self) -> int:
        """The sum of every replica's increments minus decrements."""
        if self._doc is None:
            return self._initial
        total = 0
        for k, v in self._y.items():
            if not k.startswith("\x00"):
                x = values.decode(v)
                if type(x) is int:  # foreign junk in the map is ignored, deterministically
                    total += x
        return total

    def increment(self, n: int = 1) -> None:
        """Add ``n`` (an int, may be negative)."""
        delta = _check_delta(n)
        doc = self._d()
        key = doc.writer_key
        with doc.edit(self):
            current = values.decode(self._y.get(key, 0.0))
            if type(current) is not int:
                current = 0
            self._y[key] = values.encode(current + delta)

    def decrement(self, n: int = 1) -> None:
        """Subtract ``n``."""
        self.increment(-_check_delta(n))

    def __iadd__(self, n: int) -> Counter:
        self.increment(n)
        return self

    def __isub__(self, n: int) -> Counter:
        self.decrement(n)
        return self

    def __int__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int) and not isinstance(other, bool):
            return self.value == other
        if isinstance(other, Counter):
            return self is other or self.value == other.value
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def contributions(self) -> dict[int, int]:
        """Each writer's net contribution, by engine client id."""
        if self._doc is None:
            return {}
        out = {}
        for k, v in self._y.items():
            if not k.startswith("\x00") and k.isdigit():
                x = values.decode(v)
                if type(x) is int:
                    out[int(k)] = x
        return out

    def to_py(self) -> int:
        """The value."""
        return self.value


def _check_delta(n: object) -> int:
    if type(n) is not int:
        raise InvalidValueError(f"counters count in int, not {type(n).__name__}")
    return n


# --------------------------------------------------------------------------------
# Register


class Register(Container):
    """A last-writer-wins register that also shows concurrent writes.

    ``value`` is the value of the write with the greatest hybrid logical clock
    (wall-clock milliseconds plus a logical counter, ties broken by writer), so a
    later write wins when clocks are sane and a write always beats every write
    its writer had seen, even when clocks are not. ``conflicts`` lists every
    value written concurrently, winner first, like Automerge's ``getConflicts``.

    Examples:
        >>> from crdtsync import Doc
        >>> status = Doc().register("status")
        >>> status.set("draft")
        >>> status.value, status.conflicts
        ('draft', ['draft'])
    """

    kind = "register"
    __slots__ = ("_has_initial", "_initial")

    _UNSET: ClassVar[object] = object()

    def __init__(self, *initial: Any) -> None:
        """Create a detached register, optionally holding an initial value."""
        super().__init__()
        if len(initial) > 1:
            raise TypeError("Register takes at most one initial value")
        self._has_initial = bool(initial)
        self._initial = initial[0] if initial else None
        if self._has_initial:
            values.encode(self._initial)  # refuse bad values at construction

    def _bind(self, doc: Doc, y: Any) -> None:
        super()._bind(doc, y)
        self._has_initial = False
        self._initial = None

    def _prelim(self, doc: Doc) -> Any:
        content: dict[str, Any] = {KIND_KEY: self.kind}
        if self._has_initial:
            ms, c = doc.hlc_tick((0, 0))
            content[doc.writer_key] = {
                "v": values.encode(self._initial),
                "t": [float(ms), float(c)],
            }
        return pycrdt.Map(content)

    def _entries(self) -> list[tuple[tuple[int, int, int], Any]]:
        """``((ms, counter, client), stored value)`` of live entries, greatest first."""
        out = []
        for k, e in self._y.items():
            if k.startswith("\x00") or not k.isdigit():
                continue
            t = _entry_time(e)
            if t is not None:
                out.append(((t[0], t[1], int(k)), e["v"]))
        out.sort(key=lambda x: x[0], reverse=True)
        return out

    @property
    def value(self) -> Any:
        """The winning value (``None`` if never set); a ``dict`` or ``list`` is read-only."""
        return values.read_only(self.to_py())

    @property
    def conflicts(self) -> list[Any]:
        """Every concurrently written value, winner first; one value once a write has seen all."""
        if self._doc is None:
            return [self._initial] if self._has_initial else []
        return [values.read_only(values.decode(v)) for _, v in self._entries()]

    @property
    def timestamp(self) -> tuple[int, int, int] | None:
        """The winner's ``(milliseconds, logical counter, writer)`` clock, or ``None``."""
        if self._doc is None:
            return None
        entries = self._entries()
        return entries[0][0] if entries else None

    def set(self, value: Any) -> None:
        """Write ``value``, replacing every value this replica has seen.

        Raises:
            InvalidValueError: if the value cannot be stored (nothing is written).
        """
        stored = values.encode(value)
        doc = self._d()
        key = doc.writer_key
        with doc.edit(self):
            # One pass over the entries: the latest timestamp seen, and the other
            # writers' entries, which this write supersedes.
            seen = (0, 0)
            superseded = []
            for k, e in self._y.items():
                if k.startswith("\x00"):
                    continue
                if k != key:
                    superseded.append(k)
                t = _entry_time(e)
                if t is not None and t > seen:
                    seen = t
            ms, c = doc.hlc_tick(seen)
            for k in superseded:
                del self._y[k]
            self._y[key] = {"v": stored, "t": [float(ms), float(c)]}

    def to_py(self) -> Any:
        """The winning value, as plain (mutable) Python values."""
        if self._doc is None:
            return self._initial
        entries = self._entries()
        return values.decode(entries[0][1]) if entries else None


def _entry_time(entry: Any) -> tuple[int, int] | None:
    """The ``(ms, counter)`` of a register entry, or None if it is not a well-formed one.

    Entries may come from foreign writers: anything malformed is ignored, the
    same way on every replica.
    """
    if type(entry) is not dict or "v" not in entry:
        return None
    t = entry.get("t")
    if type(t) is not list or len(t) != 2:
        return None
    ms, c = values.decode(t[0]), values.decode(t[1])
    if type(ms) is not int or type(c) is not int:
        return None
    return ms, c
