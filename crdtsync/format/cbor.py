"""The one CBOR codec of crdtsync (sync frames and document envelopes).

The decoder is for bytes from outside: general CBOR decoders recurse and trust
declared lengths, while this one walks the input iteratively with explicit
bounds, so hostile bytes get a clear error instead of a deep recursion or a huge
allocation. The encoder writes the same subset, shortest forms only, so equal
values always give equal bytes (the golden vectors depend on it).
"""

from __future__ import annotations

import struct
from typing import Any

from crdtsync.errors import CrdtSyncError, InvalidValueError

__all__ = ["decode_cbor", "encode_cbor", "write_head"]


def write_head(out: bytearray, major: int, n: int) -> None:
    """Append a CBOR head (major type and argument ``n``) in its shortest form.

    Raises:
        InvalidValueError: ``n`` does not fit in 64 bits.
    """
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out += bytes((mt | 24, n))
    elif n < 0x10000:
        out.append(mt | 25)
        out += n.to_bytes(2, "big")
    elif n < 0x100000000:
        out.append(mt | 26)
        out += n.to_bytes(4, "big")
    elif n < 0x10000000000000000:
        out.append(mt | 27)
        out += n.to_bytes(8, "big")
    else:
        raise InvalidValueError(f"integer {n} does not fit in CBOR")


def encode_cbor(value: Any, *, max_depth: int = 16) -> bytes:
    """Encode ``value`` (None, bool, int, float, bytes, str, list/tuple, dict) as CBOR.

    Integers and lengths use their shortest form and floats 64 bits, so equal
    values give equal bytes; dicts keep their order.

    Raises:
        InvalidValueError: another type, an integer beyond 64 bits, or nesting
            deeper than ``max_depth``.
    """
    out = bytearray()
    _encode(out, value, 0, max_depth)
    return bytes(out)


def _encode(out: bytearray, v: Any, depth: int, max_depth: int) -> None:
    # Recursion is bounded by max_depth, and the values are our own, never input.
    if depth > max_depth:
        raise InvalidValueError(f"value nested deeper than {max_depth} for CBOR")
    if v is None:
        out.append(0xF6)
    elif v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif isinstance(v, int):
        if v >= 0:
            write_head(out, 0, v)
        else:
            write_head(out, 1, -1 - v)
    elif isinstance(v, bytes | bytearray | memoryview):
        b = bytes(v)
        write_head(out, 2, len(b))
        out += b
    elif isinstance(v, str):
        b = v.encode("utf-8")
        write_head(out, 3, len(b))
        out += b
    elif isinstance(v, list | tuple):
        write_head(out, 4, len(v))
        for item in v:
            _encode(out, item, depth + 1, max_depth)
    elif isinstance(v, dict):
        write_head(out, 5, len(v))
        for k, item in v.items():
            _encode(out, k, depth + 1, max_depth)
            _encode(out, item, depth + 1, max_depth)
    elif isinstance(v, float):
        out.append(0xFB)
        out += struct.pack(">d", v)
    else:
        raise InvalidValueError(f"cannot encode {type(v).__name__} in CBOR")


def decode_cbor(
    data: bytes, *, error: type[CrdtSyncError], max_items: int, max_depth: int = 16
) -> Any:
    """Decode one CBOR item: definite lengths, no tags, ints, strings, floats, simple values.

    Iterative (hostile nesting cannot exhaust the stack) and bounded before
    anything is allocated. Lists decode as tuples, so decoded values are
    hashable where CBOR allows.

    Args:
        data: the bytes; exactly one item, no trailing bytes.
        error: the exception class raised for anything wrong (the sync protocol
            and the document envelope each raise their own).
        max_items: most items in all.
        max_depth: deepest container nesting.

    Raises:
        error: bad or unsupported CBOR, truncation, trailing bytes, too deep,
            too many items, duplicate map keys.
    """
    n = len(data)
    pos = 0
    items = 0
    # Explicit stack of open containers: [kind, remaining, collected, pending key].
    stack: list[list[Any]] = []
    result: Any = None
    done = False
    while not done:
        if pos >= n:
            raise error(f"CBOR truncated at byte {pos}")
        ib = data[pos]
        pos += 1
        items += 1
        if items > max_items:
            raise error("too many CBOR items in a frame")
        major, info = ib >> 5, ib & 0x1F
        if info < 24:
            arg = info
        elif info <= 27:
            width = 1 << (info - 24)
            if pos + width > n:
                raise error(f"CBOR truncated at byte {pos}")
            raw = data[pos : pos + width]
            pos += width
            if major == 7:
                fmt = {2: ">e", 4: ">f", 8: ">d"}.get(width)
                if fmt is None:
                    raise error(f"CBOR simple value {ib:#x} is not allowed")
                value: Any = struct.unpack(fmt, raw)[0]
                arg = -1
            else:
                arg = int.from_bytes(raw, "big")
        else:
            raise error(f"CBOR header {ib:#x} (indefinite or reserved) at byte {pos - 1}")
        if major == 0:
            value = arg
        elif major == 1:
            value = -1 - arg
        elif major in (2, 3):
            if pos + arg > n:
                raise error(f"CBOR string of {arg} bytes overruns the frame")
            chunk = data[pos : pos + arg]
            pos += arg
            if major == 2:
                value = bytes(chunk)
            else:
                try:
                    value = bytes(chunk).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise error(f"invalid UTF-8 in CBOR text: {exc}") from None
        elif major in (4, 5):
            if arg > max_items:
                raise error("CBOR container too large")
            if len(stack) >= max_depth:
                raise error("CBOR nested too deeply")
            count = arg if major == 4 else 2 * arg
            if count:
                stack.append([major, count, [] if major == 4 else {}, _NO_KEY])
                continue
            value = () if major == 4 else {}
        elif major == 7:
            if info == 20:
                value = False
            elif info == 21:
                value = True
            elif info == 22:
                value = None
            elif arg != -1:
                raise error(f"CBOR simple value {ib:#x} is not allowed")
        else:  # major 6: tags are not part of the protocol
            raise error(f"CBOR tag at byte {pos - 1} is not allowed")
        # Attach the finished value to its parent, closing parents that fill up.
        while True:
            if not stack:
                result = value
                done = True
                break
            top = stack[-1]
            if top[0] == 4:
                top[2].append(value)
            elif top[3] is _NO_KEY:
                if not isinstance(value, int | str | bytes):
                    raise error("CBOR map keys must be integers, text or bytes")
                top[3] = value
            else:
                if top[3] in top[2]:
                    raise error(f"duplicate CBOR map key {top[3]!r}")
                top[2][top[3]] = value
                top[3] = _NO_KEY
            top[1] -= 1
            if top[1]:
                break
            stack.pop()
            value = tuple(top[2]) if top[0] == 4 else top[2]
    if pos != n:
        raise error(f"{n - pos} trailing bytes after the CBOR item")
    return result


_NO_KEY = object()
