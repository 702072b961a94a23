"""Document versions: what a replica has seen, as a map from writer to clock.

A :class:`Version` is a state vector: for every writer (engine client id) the
number of operations of that writer the document holds. Versions are partially
ordered: ``a <= b`` when ``b`` has seen everything ``a`` has. They travel as the
Yjs state-vector encoding (``varuint count, (varuint client, varuint clock)*``),
which is what sync peers exchange.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from crdtsync.errors import MalformedUpdateError, UpdateLimitError
from crdtsync.format.varint import VarintError, read_varuint, write_varuint

__all__ = ["Version"]

_MAX_VARUINT_BITS = 56  # 8 bytes: 53 bits is the range JS clients can represent
_MAX_ENTRIES = 1_000_000


class Version(Mapping[int, int]):
    """An immutable state vector ``{client id: clock}``.

    Examples:
        >>> v = Version({1: 3})
        >>> Version.from_bytes(v.to_bytes()) == v
        True
        >>> Version({1: 2}) <= v
        True
    """

    __slots__ = ("_clocks",)

    def __init__(self, clocks: Mapping[int, int] | None = None) -> None:
        # Zero clocks carry no information; dropping them makes equality exact.
        self._clocks: dict[int, int] = {c: k for c, k in (clocks or {}).items() if k > 0}

    @classmethod
    def from_bytes(cls, data: bytes) -> Version:
        """Decode a Yjs state vector.

        Args:
            data: the encoded state vector.

        Returns:
            The version.

        Raises:
            MalformedUpdateError: if the bytes are not a state vector.
            UpdateLimitError: if it lists more than a million writers.
        """
        pos = 0

        def read() -> int:
            nonlocal pos
            try:
                value, pos = read_varuint(data, pos, bits=_MAX_VARUINT_BITS)
            except VarintError as exc:
                what = "truncated" if exc.truncated else "varint too long"
                raise MalformedUpdateError(f"state vector {what} at byte {exc.start}") from None
            return value

        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedUpdateError("a state vector is bytes")
        data = bytes(data)
        n = read()
        if n > _MAX_ENTRIES:
            raise UpdateLimitError(f"state vector lists {n} writers (limit {_MAX_ENTRIES})")
        clocks: dict[int, int] = {}
        for _ in range(n):
            client = read()
            clocks[client] = read()
        if pos != len(data):
            raise MalformedUpdateError(f"{len(data) - pos} trailing bytes after state vector")
        return cls(clocks)

    def to_bytes(self) -> bytes:
        """Encode as a Yjs state vector (sorted by client id, so deterministic)."""
        out = bytearray()
        write_varuint(out, len(self._clocks))
        for client in sorted(self._clocks):
            write_varuint(out, client)
            write_varuint(out, self._clocks[client])
        return bytes(out)

    def __getitem__(self, client: int) -> int:
        return self._clocks[client]

    def get(self, client: int, default: int | None = 0) -> int | None:  # type: ignore[override]
        """Clock of ``client``, 0 if it never wrote."""
        return self._clocks.get(client, default)

    def __iter__(self) -> Iterator[int]:
        return iter(self._clocks)

    def __len__(self) -> int:
        return len(self._clocks)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Version):
            return self._clocks == other._clocks
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._clocks.items()))

    def __le__(self, other: Version) -> bool:
        return all(other._clocks.get(c, 0) >= k for c, k in self._clocks.items())

    def __ge__(self, other: Version) -> bool:
        return other <= self

    def __lt__(self, other: Version) -> bool:
        return self <= other and self != other

    def __gt__(self, other: Version) -> bool:
        return other < self

    def concurrent(self, other: Version) -> bool:
        """True when neither version has seen everything the other has."""
        return not (self <= other) and not (other <= self)

    def merge(self, other: Version) -> Version:
        """The least version that has seen both."""
        out = dict(self._clocks)
        for c, k in other._clocks.items():
            if k > out.get(c, 0):
                out[c] = k
        return Version(out)

    def __repr__(self) -> str:
        return f"Version({self._clocks!r})"
