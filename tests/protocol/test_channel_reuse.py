"""Sans-I/O regression test: an ACK on a reopened channel acknowledged an update never received.

Fixed by ``SYNC.answers`` (docs/PROTOCOL.md): a late answer to a closed offer is
refused instead of being paired as a new request.


R (the relay, server) offers document "d" to V (a client) unasked, then closes it
(an idle unload) before V's answer arrives. V's answering SYNC reaches R after
the close, so R takes it for a new request and pairs a new channel with it;
V, closing its side on R's DOC_ERROR, then takes R's new SYNC for a new offer and
pairs it with a new channel of its own. R acknowledged V's (empty) catch-up of
the old channel on its new channel, and V counted that ACK for the catch-up of
its new channel, which held V's edit and which R never received:
V.is_synced("d") was True, R never stored the edit.
"""

from crdtsync import Doc, ErrorCode, ProtocolError
from crdtsync.format.version import Version
from crdtsync.protocol.session import (
    CatchUpNeeded,
    DocRequested,
    HelloReceived,
    Session,
    UpdateReceived,
)

R = Session.server(1)
V = Session.client(2)
v_doc = Doc(peer_id=2)
r_received: list[bytes] = []


def deliver(src: Session, dst: Session) -> None:
    """Frame by frame, the receiver reacting to each (as the Peer does per message)."""
    for frame in src.data_to_send():
        dst.receive_data(frame)
        (react_r if dst is R else react_v)()


def react_r() -> None:
    while evs := R.events_received():
        for ev in evs:
            if isinstance(ev, HelloReceived):
                R.accept()
            elif isinstance(ev, DocRequested):
                R.open_doc(ev.name, ev.epoch, Version())
            elif isinstance(ev, CatchUpNeeded):
                R.send_catch_up(ev.name, Doc(peer_id=1).export_yjs_update())
            elif isinstance(ev, UpdateReceived):
                r_received.append(ev.update)  # "stored"
                R.ack(ev.name, ev.seq)


def react_v() -> None:
    while evs := V.events_received():
        for ev in evs:
            if isinstance(ev, DocRequested):
                V.open_doc(ev.name, ev.epoch, v_doc.version)
            elif isinstance(ev, CatchUpNeeded):
                V.send_catch_up(ev.name, v_doc.export_yjs_update(since=ev.since))
            elif isinstance(ev, UpdateReceived):
                V.ack(ev.name, ev.seq)


def test_ack_on_a_reopened_channel_is_not_taken_for_the_new_one() -> None:
    deliver(V, R)  # handshake
    deliver(R, V)

    R.open_doc("d", b"", Version())  # R offers "d" unasked: SYNC on R's channel 0
    R.refuse_doc("d", ProtocolError("document closed", code=ErrorCode.DOC_REFUSED))  # unloaded
    # SYNC R0 and DOC_ERROR(R0) are on the wire; V answers the SYNC before the DOC_ERROR arrives.
    sync_r0, doc_error_r0 = R.data_to_send()
    V.receive_data(sync_r0)
    react_v()  # V: SYNC V0 + its (empty) catch-up, update 1 of V0
    v_doc.text("body").insert(0, "acknowledged but never received")  # V edits meanwhile
    # R: SYNC V0 for a closed document looks like a new request: SYNC R1, catch-up, ACK(R1, 1).
    deliver(V, R)
    V.receive_data(doc_error_r0)  # V closes V0
    react_v()
    # V: SYNC R1 looks like a new offer: SYNC V1 + a catch-up holding the edit; then ACK(R1, 1),
    # which R meant for V0's update 1.
    deliver(R, V)
    received = any(b"never received" in u for u in r_received)
    assert not received
    # V must not believe R holds the edit (fails: V counts the ACK for V1's catch-up).
    assert not V.is_synced("d")


def test_sync_answers_field_round_trips_and_is_optional() -> None:
    from crdtsync.protocol import messages as m

    offer = m.Sync(3, "d", b"", b"\x00")
    answer = m.Sync(4, "d", b"", b"\x00", answers=3)
    assert m.decode_message(m.encode_message(offer)) == offer
    assert m.decode_message(m.encode_message(answer)) == answer
    # An offer is encoded exactly as before the field existed (golden frames unchanged).
    assert m.encode_message(offer) == m.cbor_encode([2, 3, "d", b"", b"\x00"])
