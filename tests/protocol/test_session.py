"""The sans-I/O session: two sessions and a list in between, a fake clock, no sockets."""

from __future__ import annotations

import doctest
import zlib
from typing import Any

import pytest
import zstandard

from crdtsync import Doc, ErrorCode, ProtocolError
from crdtsync.errors import (
    AuthError,
    ConnectionClosedError,
    EpochMismatchError,
    ForbiddenWriterError,
    FrameTooLargeError,
    LimitExceededError,
    LocalProtocolError,
    MalformedFrameError,
    ProtocolTimeoutError,
    RoomNotAllowedError,
    TokenError,
    TokenExpiredError,
    UnexpectedMessageError,
    UnknownMessageError,
    UpdateRejectedError,
    VersionMismatchError,
)
from crdtsync.format.version import Version
from crdtsync.format.yupdate import UpdateLimits
from crdtsync.protocol import awareness as aw_mod
from crdtsync.protocol import messages as m
from crdtsync.protocol import session as protocol
from crdtsync.protocol.session import (
    AwarenessReceived,
    CatchUpNeeded,
    Closed,
    DocClosed,
    DocRequested,
    DocState,
    DocSynced,
    HelloReceived,
    Opened,
    Session,
    SessionOptions,
    State,
    UpdateReceived,
    WriterRegistry,
    new_writes,
)


class Side:
    """One endpoint: a session plus the documents its shell serves."""

    def __init__(self, session: Session, docs: dict[str, Doc]) -> None:
        self.s = session
        self.docs = docs
        self.events: list[Any] = []
        self.auto_accept = True

    def react(self) -> None:
        while evs := self.s.events_received():
            for ev in evs:
                self.events.append(ev)
                if isinstance(ev, HelloReceived) and self.auto_accept:
                    self.s.accept()
                elif isinstance(ev, DocRequested):
                    doc = self.docs.setdefault(ev.name, Doc())
                    self.s.open_doc(ev.name, ev.epoch, doc.version)
                elif isinstance(ev, CatchUpNeeded):
                    self.s.send_catch_up(
                        ev.name, self.docs[ev.name].export_yjs_update(since=ev.since)
                    )
                elif isinstance(ev, UpdateReceived):
                    doc = self.docs[ev.name]
                    if not self.s.check_writers(new_writes(ev.writes, doc.version)):
                        continue
                    doc.import_yjs_update(ev.update)
                    self.s.ack(ev.name, ev.seq)

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


class Pair:
    """h11's ConnectionPair: a client and a server side, frames moved by hand."""

    def __init__(
        self,
        client_docs: dict[str, Doc] | None = None,
        server_docs: dict[str, Doc] | None = None,
        *,
        options: SessionOptions | None = None,
        registry: WriterRegistry | None = None,  # the server's (shared by "relay" servers)
        now: float = 0.0,
        client_epochs: dict[str, bytes] | None = None,
        client_id: int = 1,
    ) -> None:
        cdocs = client_docs if client_docs is not None else {}
        epochs = client_epochs or {}
        self.client = Side(
            Session.client(
                client_id,
                docs=[(n, epochs.get(n, b""), d.version) for n, d in cdocs.items()],
                writers=[client_id],
                now=now,
                options=options,
            ),
            cdocs,
        )
        self.server = Side(
            Session.server(2, now=now, options=options, registry=registry),
            server_docs if server_docs is not None else {},
        )
        self.wire: list[tuple[str, bytes]] = []

    def pump(self, max_rounds: int = 100) -> None:
        for _ in range(max_rounds):
            moved = False
            for src, dst, tag in (
                (self.client, self.server, "c>s"),
                (self.server, self.client, "s>c"),
            ):
                for frame in src.s.data_to_send():
                    self.wire.append((tag, frame))
                    dst.s.receive_data(frame)
                    moved = True
                dst.react()
            self.client.react()
            if not moved:
                return
        raise AssertionError("the sessions did not settle")


def test_doctests() -> None:
    from crdtsync.store import memory, sqlite
    from crdtsync.transports import memory as memory_transport

    for mod in (protocol, aw_mod, memory, sqlite, memory_transport):
        result = doctest.testmod(mod)
        assert result.failed == 0
        assert result.attempted > 0


def test_handshake_and_initial_sync_both_ways() -> None:
    a, b = Doc(), Doc()
    a.text("t").insert(0, "from a")
    b.map("m")["k"] = "from b"
    pair = Pair({"d": a}, {"d": b})
    pair.pump()
    assert pair.client.s.state is State.OPEN
    assert pair.server.s.state is State.OPEN
    assert pair.client.s.version == 1
    assert pair.server.s.peer_id == 1
    assert pair.client.s.peer_id == 2
    assert a.to_py() == b.to_py() == {"t": "from a", "m": {"k": "from b"}}
    assert pair.client.s.is_synced("d")
    assert pair.server.s.is_synced("d")
    assert pair.client.of(DocSynced)
    assert pair.server.of(DocSynced)
    assert [type(e) for e in pair.server.events[:2]] == [HelloReceived, Opened]


def test_only_what_is_missing_is_sent() -> None:
    a = Doc()
    a.text("t").insert(0, "x" * 5000)
    b = Doc()
    b.import_yjs_update(a.export_yjs_update())
    a.text("t").insert(0, "new")
    pair = Pair({"d": a}, {"d": b})
    pair.pump()
    updates = [f for tag, f in pair.wire if tag == "c>s" and len(f) > 100]
    assert not updates, "the catch-up must be a diff against the peer's version"
    assert str(b.text("t")).startswith("new")


def test_many_documents_multiplexed_and_opened_later() -> None:
    cdocs = {f"d{i}": Doc() for i in range(5)}
    for i, d in enumerate(cdocs.values()):
        d.counter("c").increment(i + 1)
    pair = Pair(cdocs, {})
    pair.pump()
    assert {n: d.to_py() for n, d in pair.server.docs.items()} == {
        n: d.to_py() for n, d in cdocs.items()
    }
    late = Doc()
    late.text("t").insert(0, "late")
    pair.client.docs["late"] = late
    pair.client.s.open_doc("late", b"", late.version)
    pair.pump()
    assert str(pair.server.docs["late"].text("t")) == "late"
    assert sorted(pair.client.s.docs()) == sorted(cdocs)  # "late" is in cdocs now
    assert all(pair.client.s.is_synced(n) for n in pair.client.s.docs())


def test_live_updates_and_acks() -> None:
    a, b = Doc(), Doc()
    pair = Pair({"d": a}, {"d": b})
    pair.pump()
    a.observe_updates(lambda u, o, local: local and pair.client.s.send_update("d", u))
    a.text("t").insert(0, "k")
    assert not pair.client.s.is_synced("d"), "unacknowledged update"
    frames = pair.client.s.data_to_send()
    assert len(frames) == 1
    assert len(frames[0]) < 60, "a keystroke travels as its own small update"
    for f in frames:
        pair.server.s.receive_data(f)
    pair.server.react()
    pair.pump()
    assert str(b.text("t")) == "k"
    assert pair.client.s.is_synced("d")


def test_large_update_is_split_and_reassembled() -> None:
    options = SessionOptions(max_frame=4096, compress_min=1 << 30)  # no compression: force chunks
    a = Doc()
    a.text("t").insert(0, "".join(chr(0x41 + i % 50) for i in range(100_000)))
    b = Doc()
    pair = Pair({"d": a}, {"d": b}, options=options)
    pair.pump()
    parts = [f for tag, f in pair.wire if tag == "c>s" and len(f) > 3000]
    assert len(parts) > 20
    assert all(len(f) <= 4096 + 9 for (f,) in [(x,) for x in parts])
    assert str(b.text("t")) == str(a.text("t"))


def test_catch_up_is_compressed() -> None:
    a = Doc()
    for _i in range(300):
        a.text("t").insert(0, "abc ")
    pair = Pair({"d": a}, {"d": Doc()})
    pair.pump()
    c2s = sum(len(f) for tag, f in pair.wire if tag == "c>s")
    assert c2s < len(a.export_yjs_update()) / 2


def test_epoch_mismatch_is_detected_not_merged() -> None:
    a, b = Doc(), Doc()
    a.list("cells").append("old cell")
    b.list("cells").append("new cell")
    pair = Pair({"nb": a}, {"nb": b}, client_epochs={"nb": b"old"})
    pair.server.docs["nb"] = b

    def open_with_new_epoch() -> None:
        while evs := pair.server.s.events_received():
            for ev in evs:
                pair.server.events.append(ev)
                if isinstance(ev, HelloReceived):
                    pair.server.s.accept()
                elif isinstance(ev, DocRequested):
                    pair.server.s.open_doc(ev.name, b"recreated", b.version)

    pair.server.react = open_with_new_epoch  # type: ignore[method-assign]
    pair.pump()
    assert a.to_py() == {"cells": ["old cell"]}
    assert b.to_py() == {"cells": ["new cell"]}
    closed = pair.client.of(DocClosed) + pair.server.of(DocClosed)
    assert closed
    assert all(isinstance(e.error, EpochMismatchError) for e in closed)
    assert all(e.error.code == ErrorCode.EPOCH_MISMATCH for e in closed)
    assert pair.client.s.doc_state("nb") is DocState.CLOSED
    assert pair.client.s.state is State.OPEN, "one document's mismatch does not end the session"


def test_version_negotiation() -> None:
    client = Session.client(1, versions=[1, 2])
    server = Session.server(2, versions=[1])
    for f in client.data_to_send():
        server.receive_data(f)
    server.accept()
    for f in server.data_to_send():
        client.receive_data(f)
    assert client.version == server.version == 1
    client = Session.client(1, versions=[7])
    server = Session.server(2)
    for f in client.data_to_send():
        server.receive_data(f)
    assert server.state is State.CLOSED
    assert isinstance(server.error, VersionMismatchError)
    for f in server.data_to_send():
        client.receive_data(f)
    assert isinstance(client.error, VersionMismatchError)
    assert client.error.from_peer


def test_auth_hook_rejects() -> None:
    client = Session.client(1, auth={"token": "wrong"})
    server = Session.server(2)
    for f in client.data_to_send():
        server.receive_data(f)
    (hello,) = server.events_received()
    assert isinstance(hello, HelloReceived)
    assert hello.auth == {"token": "wrong"}
    server.reject(AuthError("bad token"))
    for f in server.data_to_send():
        client.receive_data(f)
    assert isinstance(client.error, AuthError)
    assert client.error.code == ErrorCode.AUTH_FAILED
    assert client.error.reason == "bad token"
    assert client.state is State.CLOSED


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (TokenError("token signature does not verify"), ErrorCode.TOKEN_INVALID),
        (TokenExpiredError("token has expired"), ErrorCode.TOKEN_EXPIRED),
        (RoomNotAllowedError("the token does not allow room 'x'"), ErrorCode.ROOM_NOT_ALLOWED),
    ],
)
def test_a_refused_handshake_carries_the_exact_refusal(error: AuthError, detail: int) -> None:
    """The refined code travels after AUTH_FAILED: new peers raise the exact class,
    older peers (which read the fields they know) read AUTH_FAILED as before."""
    client = Session.client(1, auth={"token": "t"})
    server = Session.server(2)
    for f in client.data_to_send():
        server.receive_data(f)
    server.events_received()
    server.reject(error)
    frames = server.data_to_send()
    reader = m.FrameReader(1 << 20)
    reader.feed(b"".join(frames))
    body = reader.next_body()
    assert body is not None
    assert m.decode_message(body) == m.Close(ErrorCode.AUTH_FAILED, error.reason, detail)
    for f in frames:
        client.receive_data(f)
    assert type(client.error) is type(error)
    assert client.error.from_peer
    assert client.error.reason == error.reason
    assert client.close_code == detail
    # A decoder that predates the detail reads the fields it knows: AUTH_FAILED.
    fields = m.cbor_decode(body)
    old = m.decode_message(m.cbor_encode(list(fields[:3])))
    assert isinstance(old, m.Close)
    assert type(ProtocolError.for_code(old.code, old.reason)) is AuthError


class _RefusesB(Side):
    """A server side that refuses document "b" for the token (as the relay's room check)."""

    def react(self) -> None:
        while evs := self.s.events_received():
            for ev in evs:
                self.events.append(ev)
                if isinstance(ev, HelloReceived):
                    self.s.accept()
                elif isinstance(ev, DocRequested) and ev.name == "b":
                    self.s.refuse_doc(ev.name, RoomNotAllowedError("not this room"))
                elif isinstance(ev, DocRequested):
                    doc = self.docs.setdefault(ev.name, Doc())
                    self.s.open_doc(ev.name, ev.epoch, doc.version)
                elif isinstance(ev, CatchUpNeeded):
                    update = self.docs[ev.name].export_yjs_update(since=ev.since)
                    self.s.send_catch_up(ev.name, update)
                elif isinstance(ev, UpdateReceived):
                    self.docs[ev.name].import_yjs_update(ev.update)
                    self.s.ack(ev.name, ev.seq)


def test_a_refused_document_carries_the_exact_refusal() -> None:
    pair = Pair({"a": Doc(), "b": Doc()}, {})
    pair.server = _RefusesB(pair.server.s, pair.server.docs)
    pair.pump()
    closed = [ev for ev in pair.client.events if isinstance(ev, DocClosed)]
    assert [ev.name for ev in closed] == ["b"]
    assert type(closed[0].error) is RoomNotAllowedError
    assert closed[0].error.code == ErrorCode.ROOM_NOT_ALLOWED
    assert closed[0].error.from_peer
    refusal = [f for tag, f in pair.wire if tag == "s>c" and b"not this room" in f]
    assert len(refusal) == 1
    assert pair.client.s.doc_state("a") is DocState.OPEN
    assert pair.client.s.is_synced("a")


@pytest.mark.parametrize(
    ("code", "detail", "expected"),
    [
        (ErrorCode.AUTH_FAILED, None, AuthError),  # an older relay: no detail
        (ErrorCode.AUTH_FAILED, 999, AuthError),  # a detail from the future: ignored
        (ErrorCode.EPOCH_MISMATCH, ErrorCode.TOKEN_EXPIRED, EpochMismatchError),  # not a refinement
        (ErrorCode.AUTH_FAILED, ErrorCode.TOKEN_EXPIRED, TokenExpiredError),
    ],
)
def test_details_are_used_only_when_they_refine_the_code(
    code: int, detail: int | None, expected: type[ProtocolError]
) -> None:
    client = Session.client(1)
    server = Session.server(2)
    for f in client.data_to_send():
        server.receive_data(f)
    writer = m.FrameWriter()
    client.receive_data(writer.frame(m.Close(int(code), "why", detail)))
    assert type(client.error) is expected


def _open_pair() -> Pair:
    pair = Pair({"d": Doc()}, {"d": Doc()})
    pair.pump()
    return pair


def _hostile(pair: Pair, data: bytes) -> Session:
    """Feed raw bytes to the server as if from the client."""
    before = {n: (d.to_py(), d.version) for n, d in pair.server.docs.items()}
    s = pair.server.s
    s.receive_data(data)  # must not raise
    pair.server.react()
    assert {n: (d.to_py(), d.version) for n, d in pair.server.docs.items()} == before
    return s


def _frame(index: int, body: bytes) -> bytes:
    w = m.FrameWriter(index=index)
    return w.frame_body(body)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\xff\x00", MalformedFrameError),  # not CBOR
        (m.cbor_encode([]), MalformedFrameError),  # empty array
        (m.cbor_encode({"a": 1}), MalformedFrameError),  # not an array
        (m.cbor_encode([99]), UnknownMessageError),
        (m.cbor_encode([3, 0]), MalformedFrameError),  # UPDATE missing fields
        (m.cbor_encode([3, 0, 1, 0, "text"]), MalformedFrameError),  # wrong field type
        (m.cbor_encode([0, [1], 1, None, [], [], 0]), UnexpectedMessageError),  # HELLO again
        (m.cbor_encode([3, 77, 1, 0, b""]), UnexpectedMessageError),  # unknown channel
        (m.cbor_encode([3, 0, 5, 0, b"\x00\x00"]), UnexpectedMessageError),  # seq gap
        (m.cbor_encode([5, 0, 99]), UnexpectedMessageError),  # ACK beyond sent
        (m.cbor_encode([3, 0, 2, 9, b"\x00\x00"]), MalformedFrameError),  # unknown encoding
        (m.cbor_encode([3, 0, 2, 1, b"not zstd"]), MalformedFrameError),
        (m.cbor_encode([3, 0, 2, 0, b"\x01\x02\x03"]), UpdateRejectedError),  # invalid v1
        (m.cbor_encode([6, 0, b"\x05"]), MalformedFrameError),  # truncated awareness
        (m.cbor_encode([2, 9, "", b"", b"\x00"]), MalformedFrameError),  # empty doc name
        (m.cbor_encode([2, 9, "x", b"", b"\x01"]), MalformedFrameError),  # bad version
        (m.cbor_encode([2, 0, "d", b"", b"\x00"]), UnexpectedMessageError),  # channel reuse
        (b"\x9f\xff", MalformedFrameError),  # indefinite length
        (b"\xc1\x00", MalformedFrameError),  # tag
        (b"\x81" * 40 + b"\x00", MalformedFrameError),  # too deep
        (m.cbor_encode([1, 1, 2, [], 0]), UnexpectedMessageError),  # WELCOME to a server
    ],
)
def test_hostile_frames_close_with_a_code(body: bytes, error: type[ProtocolError]) -> None:
    pair = _open_pair()
    s = _hostile(pair, _frame(pair.server.s._reader.index, body))
    assert s.state is State.CLOSED
    assert type(s.error) is error, s.error
    closed = pair.server.of(Closed)
    assert closed
    assert closed[-1].error is s.error
    (close_frame,) = s.data_to_send()
    reader = m.FrameReader(1 << 20, index=s._writer.index - 1)
    reader.feed(close_frame)
    body_out = reader.next_body()
    assert body_out is not None
    msg = m.decode_message(body_out)
    assert isinstance(msg, m.Close)
    assert msg.code == error.code
    # Once closed, more input is ignored and nothing is sent.
    s.receive_data(b"\x00" * 100)
    assert s.data_to_send() == []


def test_oversized_frame_refused_before_buffering() -> None:
    pair = _open_pair()
    s = pair.server.s
    # Announce a 100 MiB frame but send only the length prefix.
    n = 100 << 20
    prefix = bytearray()
    while n > 0x7F:
        prefix.append(0x80 | (n & 0x7F))
        n >>= 7
    prefix.append(n)
    s.receive_data(bytes(prefix))
    assert isinstance(s.error, FrameTooLargeError)
    assert s.error.code == ErrorCode.FRAME_TOO_LARGE
    assert len(s._reader.buffer) <= 8


def test_corrupt_lost_duplicated_reordered_frames_are_detected() -> None:
    for mutate in ("corrupt", "drop", "duplicate", "reorder"):
        a = Doc()
        pair = Pair({"d": a}, {"d": Doc()})
        pair.pump()
        session = pair.client.s
        a.observe_updates(lambda u, o, local, s=session: local and s.send_update("d", u))
        for ch in "abc":
            a.text("t").insert(0, ch)
        frames = pair.client.s.data_to_send()
        assert len(frames) == 3
        if mutate == "corrupt":
            b = bytearray(frames[1])
            b[len(b) // 2] ^= 0x10
            frames[1] = bytes(b)
        elif mutate == "drop":
            del frames[1]
        elif mutate == "duplicate":
            frames.insert(1, frames[1])
        else:
            frames[1], frames[2] = frames[2], frames[1]
        before = pair.server.docs["d"].to_py()
        for f in frames:
            pair.server.s.receive_data(f)
        pair.server.react()
        assert pair.server.s.state is State.CLOSED, mutate
        assert isinstance(pair.server.s.error, MalformedFrameError | UnexpectedMessageError), mutate
        # Frames before the damaged one were applied; nothing after it.
        assert len(str(pair.server.docs["d"].text("t"))) <= 2 + len(before.get("t", ""))


def test_bytes_split_anywhere_decode_the_same() -> None:
    a = Doc()
    a.text("t").insert(0, "split me")
    client = Session.client(1, docs=[("d", b"", a.version)])
    server = Session.server(2)
    stream = b"".join(client.data_to_send())
    for byte in stream:
        server.receive_data(bytes([byte]))
    (hello,) = server.events_received()
    assert isinstance(hello, HelloReceived)
    assert hello.docs == ("d",)


def test_forged_writer_is_rejected() -> None:
    """A 9-byte update under another peer's client id is refused (relay-side check)."""
    registry = WriterRegistry()
    relay_docs: dict[str, Doc] = {"d": Doc()}
    victim_doc, attacker_doc = Doc(peer_id=111), Doc(peer_id=222)
    victim_doc.text("t").insert(0, "v")
    victim = Pair({"d": victim_doc}, relay_docs, registry=registry, client_id=111)
    victim.pump()
    attacker = Pair({"d": attacker_doc}, relay_docs, registry=registry, client_id=222)
    attacker.pump()
    assert victim.server.s.state is State.OPEN, victim.server.s.error
    assert attacker.server.s.state is State.OPEN, attacker.server.s.error
    # Structs under the victim's client id (111) with a clock far ahead.
    clock = relay_docs["d"].version[111]
    # A GC of 1000 clocks at the victim's next clock: a relay importing it drops
    # the victim's next 1000 operations as already known.
    forged = bytes([1, 1, 111, clock, 0, 0xE8, 0x07, 0])
    assert len(forged) < 10
    attacker.client.s._send_update(attacker.client.s._docs["d"], forged)
    attacker.pump()
    assert isinstance(attacker.server.s.error, ForbiddenWriterError)
    assert attacker.server.s.error.code == ErrorCode.FORBIDDEN_WRITER
    assert relay_docs["d"].version[111] == clock, "the relay's state for the victim is intact"
    victim_doc.observe_updates(lambda u, o, local: local and victim.client.s.send_update("d", u))
    victim_doc.text("t").insert(1, "w")
    victim.pump()
    assert str(relay_docs["d"].text("t")) == "vw", "the victim's later edits still arrive"


def test_a_live_sessions_ids_are_not_taken_by_a_newcomer_with_its_peer_id() -> None:
    """Bug A: the peer id in HELLO is public; declaring it must not take a live owner's ids."""
    registry = WriterRegistry()
    doc = Doc(peer_id=5)
    doc.text("t").insert(0, "x")
    first = Pair({"d": doc}, {"d": Doc()}, registry=registry)  # peer id 1, writers [1]
    first.pump()
    second = Pair({"d": doc}, {"d": Doc()}, registry=registry)  # the same peer id
    second.pump()
    assert isinstance(second.server.s.error, ForbiddenWriterError)
    assert registry.owner(1) is first.server.s
    # Once the relay has seen the first one go, the same peer gets in (a reconnect).
    first.client.s.close()
    first.pump()
    assert registry.owner(1) is None
    third = Pair({"d": doc}, {"d": Doc()}, registry=registry)
    third.pump()
    assert third.server.s.state is State.OPEN
    assert registry.owner(1) is third.server.s


def test_forwarding_known_structs_claims_nothing() -> None:
    """Bug M: resending edits the server already has is no claim on their author's id."""
    registry = WriterRegistry()
    relay = {"d": Doc()}
    author = Doc(peer_id=111)
    author.text("t").insert(0, "by 111")
    a = Pair({"d": author}, relay, registry=registry, client_id=111)
    a.pump()
    a.client.s.close()
    a.pump()
    # Another peer holding 111's edits (and its own) syncs while 111 is away.
    holder = Doc(peer_id=222)
    holder.import_yjs_update(author.export_yjs_update())
    holder.text("t").insert(0, "[222] ")
    b = Pair({"d": holder}, relay, registry=registry, client_id=222)
    b.pump()
    assert b.server.s.state is State.OPEN, b.server.s.error
    assert registry.owner(111) is None, "known structs of 111 passed through: no claim"
    # A peer that declared its ids forwards *new* structs of an absent author: allowed,
    # and it still owns nothing but its own, so the author gets back in.
    author.text("t").insert(6, "!")
    holder.import_yjs_update(author.export_yjs_update())
    holder.observe_updates(lambda u, o, local: None)
    b.client.s.send_update("d", author.export_yjs_update(since=relay["d"].version))
    b.pump()
    assert b.server.s.state is State.OPEN, b.server.s.error
    assert str(relay["d"].text("t")) == "[222] by 111!"
    assert registry.owner(111) is None
    back = Pair({"d": author}, relay, registry=registry, client_id=111)
    back.pump()
    assert back.server.s.state is State.OPEN, back.server.s.error
    assert registry.owner(111) is back.server.s


def test_read_only_accept_declares_nothing() -> None:
    """Bug H: a read-only peer's HELLO writers are not bound to it."""
    registry = WriterRegistry()
    pair = Pair({"d": Doc()}, {"d": Doc()}, registry=registry, client_id=77)
    pair.server.auto_accept = False
    pair.pump()
    pair.server.s.accept(declare=False)
    pair.pump()
    assert pair.server.s.state is State.OPEN
    assert registry.owner(77) is None


def test_hello_with_too_many_writers_is_refused() -> None:
    """Bug N: HELLO writers are bounded; release costs only the owner's own ids."""
    registry = WriterRegistry()
    server = Session.server(2, registry=registry)
    client = Session.client(9, writers=range(registry.max_per_owner + 1))
    for f in client.data_to_send():
        server.receive_data(f)
    assert isinstance(server.error, LimitExceededError)
    ok = Session.client(9, writers=range(1000, 1000 + registry.max_per_owner))
    server2 = Session.server(2, registry=registry)
    for f in ok.data_to_send():
        server2.receive_data(f)
    server2.events_received()
    server2.accept()
    assert len(registry) == registry.max_per_owner
    others = [Session.server(3, registry=registry) for _ in range(50)]
    for i, s in enumerate(others):
        assert registry.declare(s, [5000 + i]) is None
    s0 = others[0]
    s0.close()
    # release() goes through the owner's own ids only (an index, not a scan of all).
    assert registry._ids.get(s0) is None
    assert len(registry) == registry.max_per_owner + 49
    assert registry.claim_writes(others[1], [5000]) is None  # freed


def test_timers_with_a_fake_clock() -> None:
    opts = SessionOptions(handshake_timeout=5, ping_interval=10, idle_timeout=30, ack_timeout=20)
    patient = SessionOptions(
        handshake_timeout=5, ping_interval=10, idle_timeout=100, ack_timeout=20
    )
    client = Session.client(1, options=opts, now=100.0)
    assert client.get_timer() == 105.0
    client.handle_timer(104.9)
    assert client.state is State.HELLO_SENT
    client.handle_timer(105.0)
    assert isinstance(client.error, ProtocolTimeoutError)
    assert client.get_timer() is None

    a = Doc()
    pair = Pair({"d": a}, {"d": Doc()}, options=patient, now=0.0)
    pair.pump()
    c = pair.client.s
    assert c.get_timer() == 10.0  # keepalive due
    c.handle_timer(10.0)
    (ping,) = c.data_to_send()
    pair.server.s.receive_data(ping, now=10.0)
    assert pair.server.s.state is State.OPEN
    a.observe_updates(lambda u, o, local: local and c.send_update("d", u))
    c.handle_timer(12.0)
    a.text("t").insert(0, "x")  # sent at t=12, never acknowledged
    c.data_to_send()
    assert c.get_timer() == 22.0  # ping at 12 + 10 comes first
    c.handle_timer(22.0)
    assert c.state is State.OPEN
    c.receive_data(b"", now=25.0)
    c.handle_timer(32.0)
    assert isinstance(c.error, ProtocolTimeoutError)
    assert "acknowledged" in str(c.error)
    # Idle: nothing received for idle_timeout.
    pair = Pair({"d": Doc()}, {"d": Doc()}, options=opts, now=0.0)
    pair.pump()
    s = pair.server.s
    for t in (10.0, 20.0):
        s.handle_timer(t)
    s.handle_timer(30.0)
    assert isinstance(s.error, ProtocolTimeoutError)
    assert "nothing received" in str(s.error)


def test_eof_and_local_close() -> None:
    pair = _open_pair()
    pair.client.s.receive_eof()
    assert isinstance(pair.client.s.error, ConnectionClosedError)
    pair = _open_pair()
    pair.client.s.close()
    pair.pump()
    assert pair.server.s.state is State.CLOSED
    assert pair.server.s.error is None
    assert pair.server.s.close_code == ErrorCode.NO_ERROR


def test_local_misuse_raises_local_protocol_error() -> None:
    s = Session.server(2)
    with pytest.raises(LocalProtocolError):
        s.accept()
    with pytest.raises(LocalProtocolError):
        s.open_doc("d", b"", Version())
    pair = _open_pair()
    with pytest.raises(LocalProtocolError):
        pair.client.s.open_doc("d", b"", Version())
    with pytest.raises(LocalProtocolError):
        pair.client.s.ack("d", 99)
    assert pair.client.s.send_update("nope", b"\x00\x00") is False


def test_doc_error_and_stale_doc_error_are_handled() -> None:
    pair = _open_pair()
    pair.server.s.refuse_doc("d", ProtocolError("go away", code=ErrorCode.DOC_REFUSED))
    pair.pump()
    closed = pair.client.of(DocClosed)
    assert closed
    assert closed[-1].error.code == ErrorCode.DOC_REFUSED
    assert closed[-1].error.from_peer
    # Re-open on fresh channels: a DOC_ERROR about the old channels is ignored.
    pair.client.s.open_doc("d", b"", pair.client.docs["d"].version)
    stale = m.DocError("d", int(ErrorCode.DOC_REFUSED), "old", your_chan=0, my_chan=0)
    pair.client.s.receive_data(pair.server.s._writer.frame(stale))
    pair.pump()
    assert pair.client.s.doc_state("d") is DocState.OPEN
    assert pair.client.s.is_synced("d")


def test_awareness_is_carried_and_validated() -> None:
    pair = _open_pair()
    ann = aw_mod.Awareness(1)
    data = ann.set_local_state({"user": "ann", "cursor": 4}, now=0.0)
    assert pair.client.s.send_awareness("d", data)
    pair.pump()
    (ev,) = pair.server.of(AwarenessReceived)
    assert ev.name == "d"
    assert ev.data == data
    assert ev.entries == ((1, 1, {"user": "ann", "cursor": 4}),)


def test_check_value_covers_frame_index() -> None:
    body = m.encode_message(m.Ping())
    f0 = m.FrameWriter(index=0).frame_body(body)
    f1 = m.FrameWriter(index=1).frame_body(body)
    assert f0[:-4] == f1[:-4]
    assert f0 != f1
    assert int.from_bytes(f0[-4:], "big") == zlib.crc32(body, zlib.crc32((0).to_bytes(8, "big")))


def test_zstd_bomb_refused_before_inflating() -> None:
    pair = _open_pair()
    limit = pair.server.s.options.limits.max_update_bytes
    # 64 MiB + 1 of zeros compresses to a few kilobytes that declare their size.
    big = zstandard.ZstdCompressor(write_content_size=True).compress(b"\x00" * (limit + 1))
    assert len(big) < 1 << 20
    s = _hostile(pair, _frame(pair.server.s._reader.index, m.cbor_encode([3, 0, 2, 1, big])))
    assert isinstance(s.error, FrameTooLargeError)


def test_awareness_bytes_are_y_protocols_compatible() -> None:
    """Our awareness updates and pycrdt's (y-protocols) read each other."""
    import pycrdt

    ours = aw_mod.Awareness(42)
    data = ours.set_local_state({"user": {"name": "ann"}, "cursor": {"anchor": 3}}, now=0.0)
    theirs = pycrdt.Awareness(pycrdt.Doc(client_id=7))
    theirs.apply_awareness_update(data, "test")
    assert theirs.states[42] == {"user": {"name": "ann"}, "cursor": {"anchor": 3}}

    theirs.set_local_state({"user": "yjs"})
    back = aw_mod.Awareness(42)
    change = back.apply_update(theirs.encode_awareness_update([7]), now=0.0)
    assert change.added == (7,)
    assert back.states[7] == {"user": "yjs"}
    # Removal (JSON null) is understood both ways.
    gone = ours.set_local_state(None, now=1.0)
    theirs.apply_awareness_update(gone, "test")
    assert 42 not in theirs.states


def test_unfinished_parts_share_one_budget_per_session() -> None:
    """Bug I: PART reassembly is bounded per session, not per document."""
    limits = UpdateLimits(max_update_bytes=10_000)
    opts = SessionOptions(limits=limits)
    names = [f"d{i}" for i in range(4)]
    pair = Pair({n: Doc() for n in names}, {}, options=opts)
    pair.pump()
    assert all(pair.client.s.is_synced(n) for n in names)
    c = pair.client.s
    for n in names[:2]:
        ch = c._docs[n]
        c._send(m.Part(ch.local_chan, ch.send_seq + 1, b"x" * 4_000))  # 8,000 in all: fine
    pair.pump()
    assert pair.server.s.state is State.OPEN
    ch = c._docs[names[2]]
    c._send(m.Part(ch.local_chan, ch.send_seq + 1, b"x" * 4_000))  # 12,000 > 10,000
    pair.pump()
    assert isinstance(pair.server.s.error, FrameTooLargeError)
    assert "this session" in str(pair.server.s.error)


def test_finished_parts_return_their_budget() -> None:
    limits = UpdateLimits(max_update_bytes=10_000)
    opts = SessionOptions(limits=limits, max_frame=1_000, compress_min=1 << 30)
    a = Doc()
    pair = Pair({"d": a}, {}, options=opts)
    pair.pump()
    a.observe_updates(lambda u, o, local: local and pair.client.s.send_update("d", u))
    for i in range(5):  # each ~4 KB, sent in PARTs of 1 KB: 20 KB in all, 4 KB at once
        a.text("t").insert(0, "abcd" * 1000)
        pair.pump()
        assert pair.server.s.state is State.OPEN, (i, pair.server.s.error)
    assert pair.server.s._parts_bytes == 0
    assert len(str(pair.server.docs["d"].text("t"))) == 20_000


def _open_sessions(options: SessionOptions) -> tuple[Session, Session]:
    """A server and a client session, handshake done, frames moved by hand."""
    server = Session.server(2, options=options)
    client = Session.client(1)
    for f in client.data_to_send():
        server.receive_data(f)
    server.events_received()
    server.accept()
    for f in server.data_to_send():
        client.receive_data(f)
    client.events_received()
    return server, client


def _ask_and_refuse(client: Session, server: Session, name: str) -> None:
    """The client opens ``name``; the server refuses it; both read the other's frames."""
    client.open_doc(name, b"", Version())
    for f in client.data_to_send():
        server.receive_data(f)
    for ev in server.events_received():
        if isinstance(ev, DocRequested):
            server.refuse_doc(ev.name, AuthError("not yours"))
    for f in server.data_to_send():
        client.receive_data(f)
    client.events_received()


def test_refused_documents_are_forgotten_and_bounded() -> None:
    """Bug J: refused channels are not kept forever, and endless refusals close the session."""
    server, client = _open_sessions(SessionOptions(max_refusals=300))
    for i in range(2_000):
        _ask_and_refuse(client, server, f"nope-{i}")
        if server.closed:
            break
    assert isinstance(server.error, LimitExceededError), server.error
    assert i == 300
    assert len(server._docs) <= protocol._MAX_REMEMBERED
    assert len(server._dead_remote) <= protocol._MAX_REMEMBERED


def test_closed_channels_are_remembered_only_up_to_a_bound() -> None:
    server, client = _open_sessions(SessionOptions(max_refusals=10**6))
    for i in range(3 * protocol._MAX_REMEMBERED):
        _ask_and_refuse(client, server, f"d{i}")
    assert server.state is State.OPEN
    assert len(server._docs) <= protocol._MAX_REMEMBERED
    assert len(server._dead_remote) <= protocol._MAX_REMEMBERED
    # A late frame on a recently closed channel is still ignored, not an error.
    last = client._docs[f"d{3 * protocol._MAX_REMEMBERED - 1}"]
    assert last.local_chan is not None
    server.receive_data(client._writer.frame(m.Ack(last.local_chan, 0)))
    assert server.state is State.OPEN


def test_an_update_before_garbage_in_the_same_read_is_still_checked_not_bound() -> None:
    """Found by the long relay fuzz run: a shell and its model must agree on it.

    The session closes on the garbage after a valid UPDATE; the update's event
    is still delivered. check_writers must answer from the registry alone (a
    closed session binds nothing), whether or not the update has structs.
    """
    registry = WriterRegistry()
    a = Doc(peer_id=9)
    a.text("t").insert(0, "abc")
    pair = Pair({"d": a}, {"d": Doc()}, registry=registry, client_id=9)
    pair.pump()
    before = a.version
    with a.transaction():
        a.text("t").delete(0, 1)
    delete_only = a.export_yjs_update(since=before)
    a.text("t").insert(0, "x")
    c = pair.client.s
    c.send_update("d", delete_only)
    c.send_update("d", a.export_yjs_update(since=before))
    data = b"".join(c.data_to_send()) + b"\xfe" * 15
    s = pair.server.s
    s.receive_data(data)
    assert s.closed
    updates = [ev for ev in s.events_received() if isinstance(ev, UpdateReceived)]
    assert len(updates) == 2
    for ev in updates:
        assert s.check_writers(new_writes(ev.writes, pair.server.docs["d"].version))
    assert registry._ids.get(s) is None, "a closed session binds nothing"
    # Another live connection's id is still refused.
    other = Session.server(3, registry=registry)
    assert registry.declare(other, [4242]) is None
    assert not s.check_writers([4242])
