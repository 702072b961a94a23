"""The sessions' budgets without I/O: documents opened, answers asked for, presence bytes.

Both sessions take the time as an argument, so the budgets are driven with a
fake clock: counts and closes, no waiting.
"""

from __future__ import annotations

from crdtsync import Doc
from crdtsync.errors import ErrorCode, RateLimitError
from crdtsync.format.version import Version
from crdtsync.protocol import session as p
from crdtsync.protocol import yprotocol as y
from crdtsync.protocol.awareness import encode_awareness
from crdtsync.protocol.limits import TokenBucket, presence_fits_rate
from crdtsync.protocol.ysession import (
    AwarenessQueried,
    AwarenessReceived,
    SyncRequested,
    YSession,
    YSessionOptions,
)


def _open_server(options: p.SessionOptions) -> tuple[p.Session, p.Session]:
    client = p.Session.client(1, writers=[1])
    server = p.Session.server(2, options=options)
    for frame in client.data_to_send():
        server.receive_data(frame)
    server.events_received()
    server.accept()
    server.events_received()
    for frame in server.data_to_send():
        client.receive_data(frame)
    client.events_received()
    return client, server


def _deliver(src: p.Session, dst: p.Session, now: float) -> None:
    for frame in src.data_to_send():
        dst.receive_data(frame, now=now)


def test_documents_opened_are_budgeted_then_refilled() -> None:
    client, server = _open_server(p.SessionOptions(open_burst=3, open_rate=0.5))
    for i in range(3):
        client.open_doc(f"d{i}", b"", Version())
    _deliver(client, server, now=0.0)
    assert [type(e) for e in server.events_received()] == [p.DocRequested] * 3
    client.refuse_doc("d0", p.ProtocolError("bye", code=ErrorCode.DOC_REFUSED))
    client.open_doc("d3", b"", Version())  # a fourth at once: over the burst
    _deliver(client, server, now=0.0)
    assert server.closed
    assert isinstance(server.error, RateLimitError)
    assert server.close_code == ErrorCode.LIMIT_EXCEEDED
    # Two seconds later, at 0.5 a second, one more would have been fine.
    client2, server2 = _open_server(p.SessionOptions(open_burst=1, open_rate=0.5))
    client2.open_doc("a", b"", Version())
    _deliver(client2, server2, now=0.0)
    client2.open_doc("b", b"", Version())
    _deliver(client2, server2, now=2.0)
    assert not server2.closed


def test_answers_to_the_peer_are_budgeted() -> None:
    server = YSession.server(options=YSessionOptions(answer_burst=2, answer_rate=0.2))
    server.receive_data(y.encode_sync_step1(Version()), now=0.0)
    server.receive_data(y.encode_query_awareness(), now=0.0)
    assert [type(e) for e in server.events_received()] == [SyncRequested, AwarenessQueried]
    server.receive_data(y.encode_sync_step1(Version()), now=1.0)  # 0.2 of a token back
    assert server.closed
    assert isinstance(server.error, RateLimitError)
    assert server.close_code == 4529
    # Five seconds after the burst: one more.
    other = YSession.server(options=YSessionOptions(answer_burst=1, answer_rate=0.2))
    other.receive_data(y.encode_sync_step1(Version()), now=0.0)
    other.receive_data(y.encode_sync_step1(Version()), now=5.0)
    assert not other.closed


def test_presence_over_its_byte_rate_is_dropped_undecoded() -> None:
    options = YSessionOptions(presence_rate=1000.0, presence_burst=1000)
    server = YSession.server(options=options)
    big = y.encode_awareness(encode_awareness([(7, 1, {"x": "y" * 1500})]))
    small = y.encode_awareness(encode_awareness([(7, 2, {"x": 1})]))
    server.receive_data(big, now=0.0)  # one message always fits (into debt)
    server.receive_data(small, now=0.1)  # in debt: dropped
    # Not JSON, but dropped before it is decoded: no close.
    server.receive_data(y.encode_awareness(b"\x01\x07\x03\x03{{{"), now=0.2)
    assert not server.closed
    server.receive_data(small, now=2.0)  # the debt is paid
    received = [e for e in server.events_received() if isinstance(e, AwarenessReceived)]
    assert [e.entries[0][1] for e in received] == [1, 2]


def test_crdtsync_presence_over_its_byte_rate_is_dropped() -> None:
    client, server = _open_server(p.SessionOptions(presence_rate=1000.0, presence_burst=1000))
    client.open_doc("d", b"", Version())
    _deliver(client, server, now=0.0)
    server.events_received()
    server.open_doc("d", b"", Version())
    _deliver(server, client, now=0.0)
    client.events_received()
    big = encode_awareness([(7, 1, {"x": "y" * 1500})])
    small = encode_awareness([(7, 2, {"x": 1})])
    client.send_awareness("d", big)
    client.send_awareness("d", small)
    _deliver(client, server, now=0.0)
    client.send_awareness("d", small)
    _deliver(client, server, now=3.0)
    received = [e for e in server.events_received() if isinstance(e, p.AwarenessReceived)]
    assert len(received) == 2  # the big one, and the small one once the debt was paid
    assert not server.closed


def test_update_bytes_count_what_compressed_frames_inflate_to() -> None:
    client, server = _open_server(p.SessionOptions())
    author = Doc()
    author.text("t").insert(0, "z" * 100_000)
    client.open_doc("d", b"", Version())
    _deliver(client, server, now=0.0)
    server.events_received()
    server.open_doc("d", b"", Version())
    _deliver(server, client, now=0.0)
    client.events_received()
    client.send_catch_up("d", author.export_yjs_update())
    frames = client.data_to_send()
    assert sum(map(len, frames)) < 2_000  # compressed on the wire
    for frame in frames:
        server.receive_data(frame)
    assert server.update_bytes == len(author.export_yjs_update()) > 100_000


def test_owing_tokens_and_presence_fit() -> None:
    bucket = TokenBucket(rate=10.0, burst=10, now=0.0)
    assert bucket.owe(0.0, 30) == 2.0  # 20 owed at 10 a second
    assert not presence_fits_rate(bucket, 1.0, 1)
    assert presence_fits_rate(bucket, 2.0, 5)
