"""Exact encoding of plain values into the engine's ``Any`` type and back.

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
other ``int``          ``{"$": "i", "v": "<decimal digits>"}``         that object
``float`` non-integral itself                                           a number
``float`` integral,    ``{"$": "f", "v": "<repr>"}``                   that object
inf, -0.0
``bytes``              a byte buffer                                    ``Uint8Array``
``list``               an ``Any`` array of encoded items                an array
``dict`` (str keys)    an ``Any`` map of encoded values; wrapped as     an object
                       ``{"$": "d", "v": {...}}`` if it has a ``"$"``
                       key itself
=====================  ==============================================  ===================

Decoding inverts the table: an integral double is an ``int`` (we never store an
integral ``float`` bare), a non-integral one a ``float``; a map with a ``"$"`` key
is a tag. Values written by foreign Yjs clients decode the same way (a JS ``1.5``
is a float, a JS ``3`` an int; an unknown ``"$"`` tag is kept as a plain dict).

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

from crdtsync.errors import InvalidValueError

__all__ = ["MAX_VALUE_DEPTH", "Value", "check_key", "decode", "encode"]

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
    t = type(value)
    if t is str:
        assert isinstance(value, str)
        return check_text(value, "a string value")
    if value is None or t is bool:
        return value
    if t is int:
        assert isinstance(value, int)
        if -_SAFE_INT <= value <= _SAFE_INT:
            return float(value)
        return {"$": "i", "v": str(value)}
    if t is float:
        assert isinstance(value, float)
        if math.isnan(value):
            raise InvalidValueError("NaN cannot be stored: it never equals itself")
        if math.isinf(value) or value.is_integer():
            return {"$": "f", "v": repr(value)}
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
        for k, v in value.items():
            if type(k) is not str:
                raise InvalidValueError(f"dict keys must be str, not {type(k).__name__}")
            out[check_text(k, "a dict key")] = encode(v, depth + 1)
        if "$" in out:
            return {"$": "d", "v": out}
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
        tag = stored.get("$")
        if tag is not None and len(stored) == 2 and "v" in stored:
            v = stored["v"]
            if tag == "i" and type(v) is str:
                try:
                    return int(v)
                except ValueError:
                    pass
            elif tag == "f" and type(v) is str:
                try:
                    return float(v)
                except ValueError:
                    pass
            elif tag == "d" and type(v) is dict:
                return {k: decode(x, depth + 1) for k, x in v.items()}
        return {k: decode(x, depth + 1) for k, x in stored.items()}
    # Anything else a foreign writer may have put there (e.g. an "undefined").
    return None
