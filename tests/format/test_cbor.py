"""The one CBOR codec: byte-identical to an independent encoder, bounded decoding."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.errors import InvalidValueError, MalformedFrameError
from crdtsync.format.cbor import decode_cbor, encode_cbor

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=300)
    | st.text(max_size=300)
)


def _tree(leaves: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=5)
            | st.dictionaries(st.integers(0, 1000) | st.text(max_size=8), inner, max_size=5)
        ),
        max_leaves=30,
    )


values = _tree(scalars)
# Floats are always written in 64 bits (cbor2 picks the shortest exact width),
# so they are checked by round trip only.
with_floats = _tree(scalars | st.floats(allow_nan=False))


def _tuples(v: object) -> object:
    """Lists decode as tuples (hashable where CBOR allows)."""
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {_tuples(k): _tuples(x) for k, x in v.items()}
    return v


@given(values)
def test_encoding_matches_cbor2_byte_for_byte(value: object) -> None:
    data = encode_cbor(value)
    assert data == cbor2.dumps(value)
    assert decode_cbor(data, error=MalformedFrameError, max_items=10_000) == _tuples(value)


@given(with_floats)
def test_round_trip_with_floats(value: object) -> None:
    data = encode_cbor(value)
    assert decode_cbor(data, error=MalformedFrameError, max_items=10_000) == _tuples(value)
    assert cbor2.loads(data) == value


def test_unencodable_values_are_library_errors() -> None:
    for bad in ({1, 2}, object(), 2**64, -(2**64) - 1):
        with pytest.raises(InvalidValueError):
            encode_cbor(bad)
    deep: list[object] = []
    for _ in range(20):
        deep = [deep]
    with pytest.raises(InvalidValueError, match="deeper"):
        encode_cbor(deep)


def test_hostile_nesting_and_counts_are_refused_without_recursion() -> None:
    with pytest.raises(MalformedFrameError):
        decode_cbor(b"\x81" * 100_000 + b"\x00", error=MalformedFrameError, max_items=10**6)
    with pytest.raises(MalformedFrameError):
        # an array that declares 2**32 items in five bytes
        decode_cbor(b"\x9a\xff\xff\xff\xff", error=MalformedFrameError, max_items=10**6)
