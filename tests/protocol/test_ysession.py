"""YSession, the sans-I/O y-protocols session: two sessions and a list in between.

The same object runs in YProvider (client) and in the relay's y-protocols
endpoint (server); here it is driven without any I/O, with time passed in.
"""

from __future__ import annotations

import doctest
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import Doc
from crdtsync.errors import (
    AuthError,
    ForbiddenWriterError,
    FrameTooLargeError,
    InvalidRoomError,
    InvalidUpdateError,
    MalformedFrameError,
    MalformedUpdateError,
    RateLimitError,
    ReadOnlyError,
    RoomNotAllowedError,
    TokenError,
    UpdateRejectedError,
)
from crdtsync.format.version import Version
from crdtsync.format.yupdate import parse_update
from crdtsync.protocol import limits, ysession
from crdtsync.protocol import yprotocol as y
from crdtsync.protocol.awareness import encode_awareness
from crdtsync.protocol.session import Role, WriterRegistry, new_writes
from crdtsync.protocol.ysession import (
    AccessDenied,
    AwarenessQueried,
    AwarenessReceived,
    Closed,
    Synced,
    SyncRequested,
    UpdateReceived,
    YSession,
    YSessionOptions,
    YState,
)

WRITER = YSessionOptions(verify_writers=True, declare_presence=True)
KNOWN_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 4400, 4401, 4403, 4529}


def test_doctests() -> None:
    for mod in (ysession, limits):
        result = doctest.testmod(mod)
        assert result.failed == 0
        assert result.attempted > 0


def react(s: YSession, doc: Doc) -> list[Any]:
    """What YProvider and the relay do with events; returns the events."""
    seen = []
    while events := s.events_received():
        for ev in events:
            seen.append(ev)
            if isinstance(ev, SyncRequested):
                s.send_sync_step2(doc.export_yjs_update(since=ev.version))
            elif isinstance(ev, UpdateReceived):
                if s.check_writers(new_writes(ev.writes, doc.version)):
                    try:
                        doc.import_yjs_update(ev.update)
                    except InvalidUpdateError as exc:
                        s.reject_update(exc)
                    else:
                        s.update_applied(ev)
            elif isinstance(ev, AwarenessQueried):
                s.send_awareness(encode_awareness([]))
    return seen


class Pair:
    """A client and a server session, each with its document."""

    def __init__(self, client_doc: Doc, server_doc: Doc, **server: Any) -> None:
        self.client = YSession.client()
        self.server = YSession.server(**server)
        self.docs = {id(self.client): client_doc, id(self.server): server_doc}
        self.seen: dict[int, list[Any]] = {id(self.client): [], id(self.server): []}

    def start(self) -> None:
        self.client.start(self.docs[id(self.client)].version)
        self.server.start(self.docs[id(self.server)].version)

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for src, dst in ((self.client, self.server), (self.server, self.client)):
                for message in src.data_to_send():
                    dst.receive_data(message)
                    moved = True
                self.seen[id(dst)] += react(dst, self.docs[id(dst)])
            if not moved:
                return
        raise AssertionError("the sessions did not settle")


def test_the_exchange_syncs_both_ways_and_live_updates_flow() -> None:
    tab, room = Doc(), Doc()
    tab.text("t").insert(0, "from the tab. ")
    room.text("t").insert(0, "from the room. ")
    pair = Pair(tab, room)
    pair.start()
    pair.pump()
    assert str(tab.text("t")) == str(room.text("t"))
    assert pair.client.state is YState.SYNCED
    assert pair.server.state is YState.SYNCED
    assert [type(e) for e in pair.seen[id(pair.client)]].count(Synced) == 1

    unsubscribe = tab.observe_updates(lambda u, origin, local: pair.client.send_update(u))
    tab.text("t").insert(0, "live. ")
    pair.pump()
    unsubscribe()
    assert str(room.text("t")).startswith("live. ")
    # Later updates and step 2s do not make it "synced" again.
    assert [type(e) for e in pair.seen[id(pair.client)]].count(Synced) == 1


def test_messages_in_order_and_presence() -> None:
    s = YSession.server()
    s.start(Version(), encode_awareness([(7, 1, {"u": 1})]))
    first, second = s.data_to_send()
    assert isinstance(y.decode(first), y.SyncStep1)
    assert isinstance(y.decode(second), y.AwarenessMessage)
    data = encode_awareness([(9, 2, {"c": 3})])
    s.receive_data(y.encode_awareness(data))
    s.receive_data(y.encode_query_awareness())
    ev = s.events_received()
    assert ev == [AwarenessReceived(data, ((9, 2, {"c": 3}),)), AwarenessQueried()]


@pytest.mark.parametrize(
    ("message", "error", "code"),
    [
        (b"\xff\xff\xff", MalformedFrameError, 1002),
        (b"\x00\x07\x00", MalformedFrameError, 1002),  # unknown sync step
        (b"\x09", MalformedFrameError, 1002),  # unknown message type
        (y.encode_update(b"x" * 2000), FrameTooLargeError, 1009),
        (y.encode_awareness(b"\x01\x05\x01\x03{x}"), MalformedFrameError, 1002),
    ],
)
def test_bad_input_closes_with_its_code_and_never_raises(
    message: bytes, error: type[Exception], code: int
) -> None:
    s = YSession.server(options=YSessionOptions(max_payload=1000))
    s.receive_data(message)
    (ev,) = s.events_received()
    assert isinstance(ev, Closed)
    assert type(ev.error) is error
    assert ev.code == code == s.close_code
    assert s.closed
    # Closed: everything is ignored, nothing is sent.
    s.receive_data(y.encode_sync_step1(Version()))
    assert s.events_received() == []
    assert not s.send_update(b"\x00\x00")
    assert s.data_to_send() == []


def test_an_update_the_shell_refuses_is_1007_on_a_server_and_1002_on_a_client() -> None:
    for role, code in ((Role.SERVER, 1007), (Role.CLIENT, 1002)):
        s = YSession(role)
        s.reject_update(MalformedUpdateError("not an update"))
        assert s.close_code == code


def test_a_server_verifying_writers_refuses_garbage_updates() -> None:
    s = YSession.server(options=WRITER)
    s.receive_data(y.encode_sync_step2(b"\x01\x02\x03\x04\x05\x06"))
    (ev,) = s.events_received()
    assert isinstance(ev, Closed)
    assert isinstance(ev.error, UpdateRejectedError)
    assert ev.code == 1007


def test_text_messages_close_with_1003() -> None:
    s = YSession.server()
    s.receive_text()
    assert s.close_code == 1003
    assert s.close_reason == "binary messages only"


def test_the_rate_limit_is_a_token_bucket_on_the_time_passed_in() -> None:
    s = YSession.server(now=0.0, options=YSessionOptions(rate=10.0, burst=5))
    ping = y.encode_query_awareness()
    for _ in range(5):
        s.receive_data(ping, now=0.0)
    s.receive_data(ping, now=0.5)  # half a second: 5 tokens back
    assert not s.closed
    for _ in range(5):
        s.receive_data(ping, now=0.5)
    assert s.closed
    (last,) = [e for e in s.events_received() if isinstance(e, Closed)]
    assert isinstance(last.error, RateLimitError)
    assert last.code == 4529


def test_writers_first_presence_declares_and_new_structs_are_exclusive() -> None:
    registry = WriterRegistry()
    tab = YSession.server(options=WRITER, registry=registry)
    tab.receive_data(y.encode_awareness(encode_awareness([(42, 1, {"me": 1})])))
    assert registry.owner(42) is tab
    # Later presence messages (echoes of others) declare nothing.
    tab.receive_data(y.encode_awareness(encode_awareness([(43, 1, {"echo": 1})])))
    assert registry.owner(43) is None

    # Another connection writing new structs under 42 is refused and closed (1008).
    forger = YSession.server(options=WRITER, registry=registry)
    doc = Doc(peer_id=42)
    doc.text("t").insert(0, "forged")
    forged = doc.export_yjs_update()
    forger.receive_data(y.encode_update(forged))
    (ev,) = forger.events_received()
    assert isinstance(ev, UpdateReceived)
    assert ev.writes == parse_update(forged).state_vector_after()
    assert not forger.check_writers(new_writes(ev.writes, Version()))
    assert forger.close_code == 1008
    assert isinstance(forger.error, ForbiddenWriterError)
    # Structs the receiver already has claim nothing.
    third = YSession.server(options=WRITER, registry=registry)
    assert third.check_writers(new_writes(ev.writes, doc.version))
    # A closed session's ids are free again.
    tab.receive_eof()
    assert registry.owner(42) is None


def test_a_read_only_server_session_neither_parses_nor_declares() -> None:
    registry = WriterRegistry()
    s = YSession.server(registry=registry)  # no verify_writers, no declare_presence
    s.receive_data(y.encode_awareness(encode_awareness([(42, 1, {"me": 1})])))
    s.receive_data(y.encode_update(b"not an update at all"))
    events = s.events_received()
    assert isinstance(events[-1], UpdateReceived)
    assert events[-1].writes == {}
    assert len(registry) == 0
    s.refuse_update("read-only access: update refused")
    (denied,) = s.data_to_send()
    assert y.decode(denied) == y.AuthDenied("read-only access: update refused")
    assert not s.closed


def test_permission_denied_before_sync_is_final_after_sync_is_a_refused_write() -> None:
    before = YSession.client()
    before.receive_data(y.encode_auth_denied("no access"))
    denied, closed = before.events_received()
    assert isinstance(denied, AccessDenied)
    assert denied.final
    assert type(denied.error) is AuthError  # access refused (a close code may say more)
    assert "no access" in str(denied.error)
    assert isinstance(closed, Closed)
    assert closed.code == 1000
    assert before.closed

    after = YSession.client()
    after.receive_data(y.encode_sync_step2(b"\x00\x00"))
    (ev,) = after.events_received()
    assert isinstance(ev, UpdateReceived)
    after.update_applied(ev)
    assert after.events_received() == [Synced()]
    after.receive_data(y.encode_auth_denied("read-only"))
    (denied,) = after.events_received()
    assert isinstance(denied, AccessDenied)
    assert not denied.final
    assert isinstance(denied.error, ReadOnlyError)  # a refused write: read-only access
    assert after.synced

    server = YSession.server()
    server.receive_data(y.encode_auth_denied("means nothing to a server"))
    assert server.events_received() == []
    assert not server.closed


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (TokenError("bad token"), 4401, True),
        (RoomNotAllowedError("not this room"), 4403, True),
        (AuthError("refused"), 4401, True),
        (InvalidRoomError("bad name"), 4400, False),
    ],
)
def test_deny_refuses_before_anything_of_the_room(
    error: AuthError | InvalidRoomError, code: int, message: bool
) -> None:
    s = YSession.server()
    s.deny(error)
    sent = s.data_to_send()
    assert s.close_code == code
    if message:
        assert [y.decode(m) for m in sent] == [y.AuthDenied(str(error))]
    else:
        assert sent == []


def test_the_transition_table_covers_every_open_state() -> None:
    kinds = get_args(y.YMessage)
    for role in Role:
        for state in (YState.CONNECTED, YState.SYNCED):
            for kind in kinds:
                handler = ysession.Y_TRANSITIONS[(role, state, kind)]
                assert handler.__qualname__.startswith("YSession._on_")
    assert not any(state is YState.CLOSED for _, state, _ in ysession.Y_TRANSITIONS)


_MESSAGE = st.one_of(
    st.binary(max_size=64),
    # Well-formed envelopes around garbage payloads reach the handlers.
    st.builds(lambda b: b"\x00\x00" + bytes([len(b)]) + b, st.binary(max_size=40)),
    st.builds(lambda b: b"\x00\x01" + bytes([len(b)]) + b, st.binary(max_size=40)),
    st.builds(lambda b: b"\x00\x02" + bytes([len(b)]) + b, st.binary(max_size=40)),
    st.builds(lambda b: b"\x01" + bytes([len(b)]) + b, st.binary(max_size=40)),
    st.builds(lambda b: b"\x02\x00" + bytes([len(b)]) + b, st.binary(max_size=40)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_MESSAGE, max_size=20), st.sampled_from(list(Role)))
def test_arbitrary_messages_never_raise(messages: list[bytes], role: Role) -> None:
    options = WRITER if role is Role.SERVER else YSessionOptions()
    s = YSession(role, options=YSessionOptions(max_payload=32) if not messages else options)
    doc = Doc()
    for message in messages:
        s.receive_data(message)
        react(s, doc)
    if s.closed:
        assert s.close_code in KNOWN_CODES
    # The shell's answers never raise either, whatever the state.
    s.send_update(b"\x00\x00")
    s.send_awareness(encode_awareness([]))
    s.close()
    assert s.closed
