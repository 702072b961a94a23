"""The sans-I/O link core driven by two instances and a list in between."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.errors import (
    ConnectionClosedError,
    HandshakeError,
    LinkFrameError,
    LocalProtocolError,
)
from crdtsync.transports.lan import DeviceIdentity, GroupKey
from crdtsync.transports.lan.channel import (
    MAX_BODY,
    Closed,
    Data,
    LinkCore,
    Opened,
    State,
)

GROUP = GroupKey(b"g" * 32)
A = DeviceIdentity(b"a" * 32)
B = DeviceIdentity(b"b" * 32)


def _pair() -> tuple[LinkCore, LinkCore]:
    return (
        LinkCore(initiator=True, identity=A, group=GROUP),
        LinkCore(initiator=False, identity=B, group=GROUP),
    )


def _shuttle(a: LinkCore, b: LinkCore) -> None:
    """Move bytes both ways until neither side has anything to send."""
    while True:
        x, y = a.data_to_send(), b.data_to_send()
        if not x and not y:
            return
        b.receive_data(x)
        a.receive_data(y)


def _data(core: LinkCore) -> bytes:
    return b"".join(e.data for e in core.events_received() if isinstance(e, Data))


def test_handshake_and_data_both_ways() -> None:
    a, b = _pair()
    _shuttle(a, b)
    assert a.state is b.state is State.OPEN
    (ea,), (eb,) = a.events_received(), b.events_received()
    assert isinstance(ea, Opened)
    assert ea.remote.public_key == B.public_key
    assert isinstance(eb, Opened)
    assert eb.remote.public_key == A.public_key
    assert a.handshake_hash == b.handshake_hash
    big = bytes(range(256)) * 1000
    a.send(big)
    b.send(b"back")
    _shuttle(a, b)
    assert _data(b) == big
    assert _data(a) == b"back"


def test_send_before_open_and_after_close() -> None:
    a, b = _pair()
    with pytest.raises(LocalProtocolError):
        a.send(b"early")
    _shuttle(a, b)
    a.close("bye")
    a.close("again")  # idempotent
    with pytest.raises(ConnectionClosedError):
        a.send(b"late")
    b.events_received()
    _shuttle(a, b)
    (event,) = b.events_received()
    assert event == Closed(None, "bye")
    assert b.state is State.CLOSED
    with pytest.raises(ConnectionClosedError):
        b.send(b"x")


def test_initiator_waits_for_ready() -> None:
    a, b = _pair()
    b.receive_data(a.data_to_send())  # preamble + message 1
    a.receive_data(b.data_to_send())  # message 2
    assert a.state is State.CONFIRMING  # message 3 queued: still no proof the responder is a member
    assert a.events_received() == []
    b.receive_data(a.data_to_send())
    assert b.state is State.OPEN
    a.receive_data(b.data_to_send())  # READY
    assert a.state is State.OPEN


def test_wrong_psk_is_reported_on_both_sides() -> None:
    a = LinkCore(initiator=True, identity=A, group=GROUP)
    b = LinkCore(initiator=False, identity=B, group=GroupKey(b"h" * 32))
    _shuttle(a, b)
    assert b.state is State.CLOSED
    assert isinstance(b.error, HandshakeError)
    assert a.state is State.CONFIRMING
    a.receive_eof()  # the responder hung up
    assert isinstance(a.error, HandshakeError)
    assert "another group key" in str(a.error)
    assert not any(isinstance(e, Opened) for e in a.events_received() + b.events_received())


@pytest.mark.parametrize("version", [0, 2, 255])
def test_other_versions_are_refused(version: int) -> None:
    b = LinkCore(initiator=False, identity=B, group=GROUP)
    b.receive_data(b"CRDTLAN" + bytes([version]))
    assert isinstance(b.error, HandshakeError)
    assert f"version {version}" in str(b.error)


def test_garbage_is_refused_early() -> None:
    b = LinkCore(initiator=False, identity=B, group=GROUP)
    b.receive_data(b"GE")
    assert b.state is State.CLOSED
    assert "preamble" in str(b.error)


def test_an_oversize_handshake_message_is_refused() -> None:
    b = LinkCore(initiator=False, identity=B, group=GROUP)
    b.receive_data(b"CRDTLAN\x01\xff\xff")
    assert "over the limit" in str(b.error)
    assert b.data_to_send() == b""


def test_eof_inside_a_frame() -> None:
    a, b = _pair()
    _shuttle(a, b)
    a.send(b"hello")
    wire = a.data_to_send()
    b.receive_data(wire[:-1])
    b.receive_eof()
    assert isinstance(b.error, LinkFrameError)
    assert b.error.kind == "truncated"
    assert _data(b) == b""


def test_eof_between_frames_is_a_close_without_a_close_frame() -> None:
    a, b = _pair()
    _shuttle(a, b)
    b.events_received()
    b.receive_eof()
    assert isinstance(b.error, ConnectionClosedError)


def test_frames_are_at_most_max_body() -> None:
    a, b = _pair()
    _shuttle(a, b)
    a.send(b"x" * (MAX_BODY * 2 + 1))
    wire = a.data_to_send()
    assert len(wire) == 3 * (13 + 16) + MAX_BODY * 2 + 1
    b.receive_data(wire)
    assert [len(e.data) for e in b.events_received() if isinstance(e, Data)] == [
        MAX_BODY,
        MAX_BODY,
        1,
    ]


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=5000), max_size=20),
)
def test_any_chunking_delivers_the_same_bytes(messages: list[bytes], cuts: list[int]) -> None:
    a, b = _pair()
    _shuttle(a, b)
    b.events_received()
    for m in messages:
        a.send(m)
    wire = a.data_to_send()
    pos = 0
    for cut in cuts:
        b.receive_data(wire[pos : pos + cut])
        pos += cut
    b.receive_data(wire[pos:])
    assert _data(b) == b"".join(messages)
    assert b.state is State.OPEN


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_flipped_bit_anywhere_is_never_delivered(data: st.DataObject) -> None:
    # Two responders with the same ephemeral key answer alike: one completes the
    # handshake with the initiator, the other receives the initiator's whole
    # stream (preamble, messages 1 and 3, frames) with one bit flipped.
    eph = b"e" * 32
    a = LinkCore(initiator=True, identity=A, group=GROUP)
    b1 = LinkCore(initiator=False, identity=B, group=GROUP, ephemeral=eph)
    b2 = LinkCore(initiator=False, identity=B, group=GROUP, ephemeral=eph)
    stream = bytearray(a.data_to_send())
    b1.receive_data(bytes(stream))
    a.receive_data(b1.data_to_send())
    message3 = a.data_to_send()
    stream += message3
    b1.receive_data(message3)
    a.receive_data(b1.data_to_send())  # READY
    assert a.state is State.OPEN
    messages = [b"first", b"second" * 50, b"third"]
    for m in messages:
        a.send(m)
    stream += a.data_to_send()
    index = data.draw(st.integers(min_value=0, max_value=len(stream) - 1))
    stream[index] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    b2.receive_data(bytes(stream))
    b2.receive_eof()  # a longer length waits for bytes that never come: truncated
    delivered = b"".join(e.data for e in b2.events_received() if isinstance(e, Data))
    want = b"".join(messages)
    assert delivered != want, "a flipped bit went unnoticed"
    assert want.startswith(delivered)
    assert b2.state is State.CLOSED
    assert b2.error is not None


def test_hellos_cross_under_the_group_keys() -> None:
    a = LinkCore(initiator=True, identity=A, group=GROUP, hello=b"from a")
    b = LinkCore(initiator=False, identity=B, group=GROUP, hello=b"from b" * 40)
    _shuttle(a, b)
    (ea,), (eb,) = a.events_received(), b.events_received()
    assert isinstance(ea, Opened)
    assert ea.hello == b"from b" * 40
    assert isinstance(eb, Opened)
    assert eb.hello == b"from a"
    with pytest.raises(LocalProtocolError):
        LinkCore(initiator=True, identity=A, group=GROUP, hello=b"x" * 257)
