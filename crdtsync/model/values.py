r"""Exact encoding of plain values into the engine's ``Any`` type and back.

Theory of operation
-------------------
Yjs (and so pycrdt) stores leaf values as ``Any``: null, booleans, IEEE doubles,
strings, byte buffers, arrays and string-keyed maps. pycrdt reads every number
back as a ``float`` and cannot store integers beyond 64 bits, so ``1`` would come
back as ``1.0`` and ``2**60 + 1`` would lose its last bits. We therefore write:

=====================  ==============================================  ===================
Python value           stored ``Any``                                   a Yjs client sees
=====================  ==============================================  ===================
``None``/``bool``/str  itself                                           itself
``int``, |i| <= 2**53  the double ``float(i)`` (exact in that range)    a number
other ``int``          ``{"\x00i": "<decimal digits>"}``                that object
``float`` non-integral itself                                           a number
``float`` integral,    ``{"\x00f": "<repr>"}``                          that object
inf, -0.0
``bytes``              a byte buffer                                    ``Uint8Array``
``list``               an ``Any`` array of encoded items                an array
``dict`` (str keys)    an ``Any`` map of encoded values; wrapped as     an object
                       ``{"\x00d": {...}}`` if a key starts with NUL
=====================  ==============================================  ===================

The tags are one-entry maps whose key starts with NUL (``"\x00"``), which no
JSON user writes and which crdtsync refuses as a map key: the same reserved
prefix as the nested kinds' ``"\x00k"``. So every value a user or a Yjs client
writes reads back as itself; a JS ``{ $: 'i', v: '5' }`` is that object.

Decoding inverts the table: an integral double is an ``int`` (we never store an
integral ``float`` bare), a non-integral one a ``float``; a one-entry map with
a well-formed ``"\x00i"``/``"\x00f"``/``"\x00d"`` tag is the tagged value. Values
written by foreign Yjs clients decode the same way (a JS ``1.5`` is a float, a
JS ``3`` an int; a malformed or unknown tag is kept as a plain dict).

Values written by 0.1 (legacy tags)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Earlier versions tagged with a ``"$"`` key: ``{"$": "i", "v": digits}``,
``{"$": "f", "v": repr}`` and ``{"$": "d", "v": {...}}``. Those documents are
still read, by one rule: a two-entry ``{"$", "v"}`` map is a legacy tag only
when it is exactly what an earlier version wrote, which no earlier version
could have written as a plain value: ``"i"`` with the canonical digits of an
int beyond +/-2**53 (a smaller int was always stored as a number), ``"f"`` with
the ``repr`` of an integral or infinite float (other floats were stored
bare), ``"d"`` around a dict that itself has a ``"$"`` key (other dicts were
stored bare). Anything else, such as ``{"$": "i", "v": "5"}``, is user data and
reads back as the dict it is. crdtsync itself wraps a dict of exactly one of
those three canonical shapes in ``"\x00d"``, so every value it writes reads
back as itself; only such a dict written by a plain Yjs client reads as the
tagged value.

``dict`` and ``list`` are only stored as ``Any`` where the value is immutable (a
register's value); in maps and lists they become nested shared containers,
which the model layer handles before calling :func:`encode`.

NaN is refused: it is not equal to itself, so two replicas holding it could never
be seen to agree. ``tuple``, ``set``, ``bytearray`` and other types are refused
rather than silently converted, so that every value reads back with its type.
"""

from __future__ import annotations

import math
from typing import Any

from crdtsync.errors import InvalidValueError, ReadOnlyValueError

__all__ = [
    "MAX_VALUE_DEPTH",
    "ReadOnlyDict",
    "ReadOnlyList",
    "Value",
    "check_key",
    "decode",
    "encode",
    "read_only",
]

#: Tags of values that Yjs's ``Any`` cannot hold exactly: one-entry maps whose
#: key starts with NUL, a prefix no JSON user writes and no crdtsync key may use.
TAG_INT = "\x00i"
TAG_FLOAT = "\x00f"
TAG_DICT = "\x00d"

#: Deepest nesting of lists/dicts accepted in one value. It matches the default
#: ``max_any_depth`` of the update validator, so anything we write we also accept.
MAX_VALUE_DEPTH = 64

_SAFE_INT = 2**53

#: Plain Python values a document can hold.
Value = None | bool | int | float | str | bytes | list["Value"] | dict[str, "Value"]


def check_text(text: str, what: str = "text") -> str:
    r"""Check that a ``str`` can be stored: UTF-8 encodable (no lone surrogates).

    Python strings may hold lone surrogates (``"\udf5c"``, from
    ``surrogateescape`` decoding or a JSON ``\ud83d`` escape); the engine stores
    UTF-8 and panics or fails half-way through a write on them.

    Raises:
        InvalidValueError: it holds a lone surrogate.
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidValueError(
                f"{what} holds a lone surrogate at index {exc.start}: not valid Unicode text"
            ) from None
    return text


def check_key(key: object) -> str:
    """Check that ``key`` can name a map entry.

    Args:
        key: the candidate key.

    Returns:
        The key.

    Raises:
        InvalidValueError: if it is not a ``str`` or begins with NUL, which
            crdtsync reserves for its own markers.
    """
    if type(key) is not str:
        raise InvalidValueError(f"map keys must be str, not {type(key).__name__}")
    if key.startswith("\x00"):
        raise InvalidValueError("map keys starting with NUL are reserved by crdtsync")
    return check_text(key, "a map key")


def encode(value: object, depth: int = 0) -> Any:
    """Encode a plain value into what the engine stores (see the module table).

    Args:
        value: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, or a
            ``list``/``dict`` of those.
        depth: current nesting depth (callers leave the default).

    Returns:
        The engine value.

    Raises:
        InvalidValueError: for unsupported types, NaN, non-str dict keys or
            nesting deeper than :data:`MAX_VALUE_DEPTH`.
    """
    t = plain_type(value)
    if t is str:
        assert isinstance(value, str)
        return check_text(value, "a string value")
    if value is None or t is bool:
        return value
    if t is int:
        assert isinstance(value, int)
        if -_SAFE_INT <= value <= _SAFE_INT:
            return float(value)
        return {TAG_INT: str(value)}
    if t is float:
        assert isinstance(value, float)
        if math.isnan(value):
            raise InvalidValueError("NaN cannot be stored: it never equals itself")
        if math.isinf(value) or value.is_integer():
            return {TAG_FLOAT: repr(value)}
        return value
    if t is bytes:
        return value
    if depth >= MAX_VALUE_DEPTH:
        raise InvalidValueError(f"value nested deeper than {MAX_VALUE_DEPTH} levels")
    if t is list:
        assert isinstance(value, list)
        return [encode(v, depth + 1) for v in value]
    if t is dict:
        assert isinstance(value, dict)
        out = {}
        reserved = False
        for k, v in value.items():
            if type(k) is not str:
                raise InvalidValueError(f"dict keys must be str, not {type(k).__name__}")
            out[check_text(k, "a dict key")] = encode(v, depth + 1)
            reserved = reserved or k.startswith("\x00")
        if reserved or (
            len(out) == 2 and "$" in out and "v" in out and _legacy(out, depth) is not _NOT_LEGACY
        ):
            # A user dict that would read as a tag (a key with our reserved
            # prefix, or the exact shape of a 0.1 tag): wrap it.
            return {TAG_DICT: out}
        return out
    raise InvalidValueError(_unsupported(value))


def _unsupported(value: object) -> str:
    name = type(value).__name__
    hint = {
        "tuple": "use a list",
        "bytearray": "use bytes(...)",
        "memoryview": "use bytes(...)",
        "set": "use a list or a dict",
        "frozenset": "use a list or a dict",
    }.get(name, "store None, bool, int, float, str, bytes, list or dict")
    return f"cannot store a value of type {name}: {hint}"


def decode(stored: Any, depth: int = 0) -> Any:
    """Decode an engine value back into the exact Python value (inverse of :func:`encode`).

    Values a foreign client wrote are decoded best-effort by the same rules.

    Args:
        stored: what the engine returned.
        depth: current nesting depth (callers leave the default).

    Returns:
        The Python value.
    """
    t = type(stored)
    if t is float:
        if stored.is_integer():
            return int(stored)
        return stored
    if stored is None or t is bool or t is str or t is int:
        return stored
    if t is bytearray or t is bytes:
        return bytes(stored)
    if depth >= 4 * MAX_VALUE_DEPTH:
        # Unreachable through the validator (it bounds Any depth); a guard so that
        # a pathological in-memory value cannot exhaust the Python stack.
        raise InvalidValueError("stored value nested too deeply")
    if t is list:
        return [decode(v, depth + 1) for v in stored]
    if t is dict:
        if len(stored) == 1:
            ((k, v),) = stored.items()
            if k == TAG_INT:
                n = _canonical_int(v)
                if n is not None:
                    return n
            elif k == TAG_FLOAT:
                x = _canonical_float(v)
                if x is not None:
                    return x
            elif k == TAG_DICT and type(v) is dict:
                return {k2: decode(x2, depth + 1) for k2, x2 in v.items()}
        elif len(stored) == 2 and "$" in stored and "v" in stored:
            legacy = _legacy(stored, depth)
            if legacy is not _NOT_LEGACY:
                return legacy
        return {k: decode(x, depth + 1) for k, x in stored.items()}
    # Anything else a foreign writer may have put there (e.g. an "undefined").
    return None


_NOT_LEGACY: Any = object()


def _canonical_int(v: object) -> int | None:
    """The int whose canonical decimal digits ``v`` is, else None."""
    if type(v) is not str or not 0 < len(v) <= 4000:
        return None
    try:
        n = int(v)
    except ValueError:
        return None
    return n if str(n) == v else None


def _canonical_float(v: object) -> float | None:
    """The float whose ``repr`` ``v`` is, else None (NaN is never stored)."""
    if type(v) is not str or not 0 < len(v) <= 32:
        return None
    try:
        x = float(v)
    except ValueError:
        return None
    return x if repr(x) == v and not math.isnan(x) else None


def _legacy(stored: dict[str, Any], depth: int) -> Any:
    """Decode a ``{"$": tag, "v": value}`` map that version 0.1 wrote, else ``_NOT_LEGACY``.

    Only the forms 0.1 wrote for values it could not store bare are legacy
    (see the module docstring): anything else is user data.
    """
    tag, v = stored["$"], stored["v"]
    if tag == "i":
        n = _canonical_int(v)
        if n is not None and not -_SAFE_INT <= n <= _SAFE_INT:
            return n
    elif tag == "f":
        x = _canonical_float(v)
        if x is not None and (math.isinf(x) or x.is_integer()):
            return x
    elif tag == "d" and type(v) is dict and "$" in v:
        return {k: decode(x, depth + 1) for k, x in v.items()}
    return _NOT_LEGACY


_READ_ONLY_HINT = (
    "it is a plain value stored whole (for example a JS object given to "
    "ymap.set), so changing it in place would change nothing in the document. "
    "Assign a changed copy instead (m[key] = {**value, 'x': 1}), or store a "
    "nested map that both sides can edit: in Python assign a dict or Map(...) to "
    "a map key, in JS ymap.set(key, new Y.Map(Object.entries(obj))) "
    "(see docs/YJS.md)"
)


def _refuse(self: object, *args: object, **kwargs: object) -> Any:
    raise ReadOnlyValueError(f"this {type(self).__name__} is read-only: {_READ_ONLY_HINT}")


class ReadOnlyDict(dict[str, Any]):
    """A plain ``dict`` value read from a document (stored whole): read-only.

    It compares, iterates and serialises like a ``dict``; ``.copy()``,
    ``dict(value)`` and :mod:`copy` give an ordinary, mutable ``dict``. Any
    change in place raises :class:`~crdtsync.errors.ReadOnlyValueError`.
    """

    __slots__ = ()

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        # Copies and pickles are plain dicts (their values plain too).
        return (dict, (dict(self),))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()


class ReadOnlyList(list[Any]):
    """A plain ``list`` value read from a document (stored whole): read-only.

    Like :class:`ReadOnlyDict`: ``list(value)`` or ``value.copy()`` is mutable.
    """

    __slots__ = ()

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()


def read_only(value: Any) -> Any:
    """``value`` with every ``dict`` and ``list`` in it made read-only (others unchanged).

    Args:
        value: a decoded value (see :func:`decode`).
    """
    t = type(value)
    if t is dict:
        return ReadOnlyDict({k: read_only(v) for k, v in value.items()})
    if t is list:
        return ReadOnlyList([read_only(v) for v in value])
    return value


def plain_type(value: object) -> type:
    """The type of ``value``, with the read-only dict and list counted as ``dict``/``list``."""
    t = type(value)
    if t is ReadOnlyDict:
        return dict
    if t is ReadOnlyList:
        return list
    return t
