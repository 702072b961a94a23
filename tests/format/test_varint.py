"""The one lib0 varuint codec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.format.varint import VarintError, read_varuint, varuint_bytes, write_varuint


@given(st.integers(min_value=0, max_value=2**53 - 1))
def test_round_trip_and_shortest_form(n: int) -> None:
    data = varuint_bytes(n)
    out = bytearray()
    write_varuint(out, n)
    assert bytes(out) == data
    assert read_varuint(data + b"\xff", 0, canonical=True) == (n, len(data))
    assert len(data) == max(1, (n.bit_length() + 6) // 7)


def test_truncated_is_told_apart_from_garbage() -> None:
    with pytest.raises(VarintError) as info:
        read_varuint(b"\x80\x80", 0)
    assert info.value.truncated
    with pytest.raises(VarintError) as info:
        read_varuint(b"\xff" * 20, 0, bits=32)
    assert not info.value.truncated
    assert "overflows 32 bits" in info.value.reason


def test_limits_and_canonical_form() -> None:
    assert read_varuint(varuint_bytes(2**32 - 1), 0, bits=32)[0] == 2**32 - 1
    with pytest.raises(VarintError, match="overflows"):
        read_varuint(varuint_bytes(2**32), 0, bits=32)
    assert read_varuint(b"\x81\x00", 0) == (1, 2)  # lenient readers accept it
    with pytest.raises(VarintError, match="non-canonical"):
        read_varuint(b"\x81\x00", 0, canonical=True)
