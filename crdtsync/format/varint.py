"""lib0 variable-length unsigned integers: the one implementation in crdtsync.

lib0 (Yjs's encoding library) writes an unsigned integer little-endian, 7 bits
a byte, the high bit set on every byte but the last. Yjs updates, state
vectors, y-protocols messages, awareness updates, crdtsync frame lengths and
the compact document columns all use it.

Readers differ only in how many bits they accept and whether they refuse
non-canonical encodings (a trailing ``0x00`` continuation byte, which no lib0
writer emits); they pass those as arguments and translate :class:`VarintError`
into their own error class, so a message names what was being read.

The Yjs v1 update parser (:mod:`crdtsync.format.yupdate`) inlines the one-byte
case in its hot loop and calls :func:`read_varuint` for the rest.
"""

from __future__ import annotations

__all__ = ["VarintError", "read_varuint", "varuint_bytes", "write_varuint"]


class VarintError(ValueError):
    """A varuint that does not decode. Never escapes crdtsync: callers translate it.

    Attributes:
        truncated: the bytes end inside the number (a stream reader may wait for more).
        start: offset of the number's first byte.
    """

    def __init__(self, reason: str, start: int, *, truncated: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.start = start
        self.truncated = truncated


def write_varuint(out: bytearray, n: int) -> None:
    """Append ``n`` (>= 0) to ``out`` as a lib0 varuint."""
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)


def varuint_bytes(n: int) -> bytes:
    """``n`` (>= 0) as a lib0 varuint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    write_varuint(out, n)
    return bytes(out)


def read_varuint(
    data: bytes | bytearray, pos: int, *, bits: int = 53, canonical: bool = False
) -> tuple[int, int]:
    """Read a varuint of at most ``bits`` bits at ``pos``.

    Args:
        data: the bytes.
        pos: offset of the number's first byte.
        bits: the largest value accepted has this many bits; at most
            ``ceil(bits / 7)`` bytes are read, so a long run of continuation
            bytes costs nothing.
        canonical: refuse a number written with more bytes than needed.

    Returns:
        ``(value, offset after the number)``.

    Raises:
        VarintError: truncated (``.truncated``), too long, overflowing ``bits``,
            or not canonical.
    """
    start = pos
    value = shift = 0
    n = len(data)
    while True:
        if pos >= n:
            raise VarintError("truncated varuint", start, truncated=True)
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if canonical and b == 0 and pos - start > 1:
                raise VarintError("non-canonical varuint", start)
            if value >> bits:
                raise VarintError(f"varuint overflows {bits} bits", start)
            return value, pos
        if shift >= bits:
            raise VarintError(f"varuint overflows {bits} bits", start)
