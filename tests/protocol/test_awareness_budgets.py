"""Presence is bounded and only holds what can be sent on (issue 18, review items 4-6)."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.errors import FrameTooLargeError, InvalidValueError, MalformedFrameError
from crdtsync.format.varint import write_varuint
from crdtsync.protocol.awareness import (
    MAX_STATE_BYTES,
    MAX_STATE_VALUES,
    Awareness,
    decode_awareness,
    encode_awareness,
    split_awareness,
    state_cost,
)


def raw_update(*entries: tuple[int, int, str]) -> bytes:
    """An awareness update with JSON texts exactly as given (what a hostile peer sends)."""
    out = bytearray()
    write_varuint(out, len(entries))
    for client, clock, text in entries:
        raw = text.encode("utf-8", "surrogatepass")
        write_varuint(out, client)
        write_varuint(out, clock)
        write_varuint(out, len(raw))
        out += raw
    return bytes(out)


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        '{"x": NaN}',
        "1e999",
        "[-1e400]",
        '"\\ud83d"',
        '{"\\udc00": 1}',
    ],
)
def test_states_that_cannot_be_sent_on_are_refused(text: str) -> None:
    # A 10-byte NaN state once made the whole room unjoinable: decode accepted it,
    # encode (for every newcomer's full-presence message) refused it.
    with pytest.raises(MalformedFrameError):
        decode_awareness(raw_update((7, 1, text)))
    aw = Awareness(1)
    with pytest.raises(MalformedFrameError):
        aw.apply_update(raw_update((7, 1, text)), now=0.0)
    assert aw.states == {}
    aw.full_update()  # still encodes


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(json_values.filter(lambda v: v is not None))
def test_whatever_is_accepted_re_encodes(state: object) -> None:
    # Python's json writes lone surrogates as escapes; decode must refuse those.
    text = json.dumps(state)
    try:
        entries = decode_awareness(raw_update((5, 1, text)))
    except MalformedFrameError:
        assert (
            any(
                0xD800 <= ord(c) <= 0xDFFF for c in text.encode().decode("unicode_escape", "ignore")
            )
            or "\\ud" in text
        )
        return
    encode_awareness(entries)  # never raises for what decode accepted


def test_one_state_is_capped_in_bytes_and_in_values() -> None:
    big = json.dumps("x" * MAX_STATE_BYTES)
    with pytest.raises(FrameTooLargeError, match="bytes"):
        decode_awareness(raw_update((7, 1, big)))
    many = "[" + ",".join(["[]"] * MAX_STATE_VALUES) + "]"
    assert len(many) < MAX_STATE_BYTES
    with pytest.raises(FrameTooLargeError, match="values"):
        decode_awareness(raw_update((7, 1, many)))
    with pytest.raises(InvalidValueError):
        Awareness(1).set_local_state(["x" * 70_000], now=0.0)


def test_a_room_budget_keeps_presence_small_and_keeps_earlier_states() -> None:
    aw = Awareness(1, max_bytes=20_000)
    state = {"name": "x" * 4000}
    cost = state_cost(state)
    for client in range(2, 10):
        aw.apply_update(encode_awareness([(client, 1, state)]), now=0.0)
    assert len(aw.states) == 20_000 // cost
    assert aw.total_cost <= 20_000
    kept = dict(aw.states)
    # a client already present grows its state over the budget: it keeps the old one
    first = next(iter(kept))
    aw.apply_update(encode_awareness([(first, 2, {"name": "y" * 9000})]), now=0.0)
    assert aw.states[first] == state
    # leaving frees the budget for a newcomer
    aw.apply_update(encode_awareness([(first, 3, None)]), now=0.0)
    change = aw.apply_update(encode_awareness([(99, 1, state)]), now=0.0)
    assert change.added == (99,)
    assert aw.total_cost == sum(state_cost(s) for s in aw.states.values())


def test_the_budget_tracks_memory_not_just_wire_bytes() -> None:
    # Amplification: a small JSON text of many tiny values is charged per value.
    states = ["[" + ",".join(["[]"] * 2000) + "]" for _ in range(8)]
    aw = Awareness(1, max_bytes=1 << 20)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, text in enumerate(states):
        aw.apply_update(raw_update((100 + i, 1, text)), now=0.0)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert aw.total_cost <= 1 << 20
    # the charge is within a small factor of what the states really hold
    assert grown < 3 * aw.total_cost, (grown, aw.total_cost)


def test_the_full_presence_message_is_cached_until_a_change() -> None:
    aw = Awareness(1)
    aw.apply_update(encode_awareness([(2, 1, {"a": 1})]), now=0.0)
    first = aw.full_update()
    assert aw.full_update() is first
    aw.apply_update(encode_awareness([(3, 1, {"b": 2})]), now=0.0)
    second = aw.full_update()
    assert second is not first
    assert [c for c, _, _ in decode_awareness(second)] == [2, 3]
    aw.remove([3], now=1.0)
    assert [c for c, _, _ in decode_awareness(aw.full_update())] == [2]
    aw.set_local_state({"me": True}, now=2.0)
    assert [c for c, _, _ in decode_awareness(aw.full_update())] == [1, 2]


def test_a_large_presence_is_split_between_entries() -> None:
    entries = [(900 + i, 1, {"junk": "x" * 60_000}) for i in range(20)]
    data = encode_awareness(entries)
    parts = split_awareness(data, 200_000)
    assert len(parts) == 7
    assert all(len(p) <= 200_000 for p in parts)
    assert [e for p in parts for e in decode_awareness(p)] == entries
    assert split_awareness(data, len(data)) == [data]
    # an entry that fits no part is left out, the rest still travels
    assert [e for p in split_awareness(data, 50_000) for e in decode_awareness(p)] == []
