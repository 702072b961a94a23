"""Golden byte vectors: one frame per message type, decoded and re-encoded exactly.

Each ``tests/golden/protocol/<name>.bin`` is a complete frame written as frame 0
of a direction (length prefix, CBOR body, check value). These bytes are the
protocol: a change that breaks one of them breaks compatibility with deployed
peers and needs a new protocol version (docs/PROTOCOL.md, "Versioning rules").
Regenerate only for a new version: ``python scripts/make_protocol_golden.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtsync.errors import (
    REFINES,
    AuthError,
    ErrorCode,
    LimitExceededError,
    ProtocolError,
    RelayFullError,
    RoomNotAllowedError,
    TokenError,
    TokenExpiredError,
)
from crdtsync.protocol import messages as m

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "protocol"

# Real payloads: a keystroke (Doc(peer_id=7): "hello", then "!" typed at the end),
# its state vector, and a zstd-compressed catch-up of 274 bytes.
_UPDATE = bytes.fromhex("01010706840705012100")
_VERSION = bytes.fromhex("010707")
_ZSTD = bytes.fromhex(
    "28b52ffd6012009d03004405012909002801105f5f6372647473796e635f726f6f747301740177047465"
    "787404010174026162440901030507090b0d0f11131517191b1d1f21232527292b2d2f31333537393b3d3f"
    "41434547494b4d026162002624e0d702724c8ec9313926c7e4983826c7e4981c9363720c0b259501"
)

EXPECTED: dict[str, m.Message] = {
    "hello": m.Hello(
        versions=(1,),
        peer_id=123,
        auth={"token": "s3cret"},
        writers=(123,),
        docs=(("shopping", b"", _VERSION), ("notes", b"\x01" * 16, b"\x00")),
        max_frame=1 << 20,
    ),
    "welcome": m.Welcome(version=1, peer_id=456, writers=(456,), max_frame=1 << 20),
    "sync": m.Sync(chan=2, name="shopping", epoch=b"", version=_VERSION),
    "update": m.Update(chan=2, seq=7, enc=m.ENC_RAW, data=_UPDATE),
    "update-zstd": m.Update(chan=0, seq=1, enc=m.ENC_ZSTD, data=_ZSTD),
    "part": m.Part(chan=2, seq=8, data=b"\x01\x02\x03\x04"),
    "ack": m.Ack(chan=2, seq=7),
    "awareness": m.Awareness(chan=2, data=b'\x01{\x03\x17{"user":"ann","cursor":4}'),
    "doc-error": m.DocError(
        name="notes",
        code=int(ErrorCode.EPOCH_MISMATCH),
        reason="epoch differs",
        your_chan=1,
        my_chan=None,
    ),
    "ping": m.Ping(),
    "close": m.Close(code=int(ErrorCode.AUTH_FAILED), reason="bad token"),
    # Refined codes (added within version 1): the code an older peer knows, then the detail.
    "close-token-expired": m.Close(
        code=int(ErrorCode.AUTH_FAILED),
        reason="token has expired",
        detail=int(ErrorCode.TOKEN_EXPIRED),
    ),
    "close-token-invalid": m.Close(
        code=int(ErrorCode.AUTH_FAILED),
        reason="token signature does not verify",
        detail=int(ErrorCode.TOKEN_INVALID),
    ),
    "doc-error-room-not-allowed": m.DocError(
        name="other",
        code=int(ErrorCode.AUTH_FAILED),
        reason="the token does not allow room 'other'",
        your_chan=0,
        my_chan=None,
        detail=int(ErrorCode.ROOM_NOT_ALLOWED),
    ),
    "doc-error-try-again-later": m.DocError(
        name="busy",
        code=int(ErrorCode.LIMIT_EXCEEDED),
        reason="every room the relay holds in memory is in use: try again later",
        your_chan=0,
        my_chan=None,
        detail=int(ErrorCode.TRY_AGAIN_LATER),
    ),
}


def _frame(msg: m.Message) -> bytes:
    return m.FrameWriter().frame(msg)


def write_vectors() -> None:
    """Write the vectors that are missing (scripts/make_protocol_golden.py).

    Existing vectors are never rewritten: they are what deployed peers send.
    """
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, msg in EXPECTED.items():
        path = GOLDEN / f"{name}.bin"
        if not path.exists():
            path.write_bytes(_frame(msg))


def test_update_payloads_are_valid() -> None:
    from crdtsync.format.version import Version
    from crdtsync.format.yupdate import parse_update

    assert parse_update(_UPDATE).client_ids() == {7}
    assert Version.from_bytes(_VERSION) == Version({7: 7})
    assert m.decode_message(m.encode_message(EXPECTED["update-zstd"])) == EXPECTED["update-zstd"]


def test_every_message_type_has_a_vector() -> None:
    covered = {m.MESSAGE_TYPES[type(msg)] for msg in EXPECTED.values()}
    assert covered == set(m.MsgType)
    assert sorted(p.stem for p in GOLDEN.glob("*.bin")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_vector(name: str) -> None:
    data = (GOLDEN / f"{name}.bin").read_bytes()
    reader = m.FrameReader(max_frame=1 << 20)
    reader.feed(data)
    body = reader.next_body()
    assert body is not None
    assert not reader.buffer
    assert m.decode_message(body) == EXPECTED[name]
    assert _frame(EXPECTED[name]) == data


def test_hello_vector_bytes_are_pinned() -> None:
    """Spot-check the layout by hand, so the vectors cannot drift with the codec."""
    data = (GOLDEN / "ping.bin").read_bytes()
    assert data[:3] == b"\x02\x81\x08"  # length 2, array(1), type 8
    ack = (GOLDEN / "ack.bin").read_bytes()
    assert ack[:5] == b"\x04\x83\x05\x02\x07"  # length 4, array(3), ACK, chan 2, seq 7


def test_newer_fields_are_ignored() -> None:
    """Versioning rule: a decoder ignores fields appended after the ones it knows."""
    body = m.cbor_encode([5, 2, 7, "a field from the future"])
    assert m.decode_message(body) == m.Ack(2, 7)


@pytest.mark.parametrize(
    ("name", "exact"),
    [
        ("close-token-expired", TokenExpiredError),
        ("close-token-invalid", TokenError),
        ("doc-error-room-not-allowed", RoomNotAllowedError),
        ("doc-error-try-again-later", RelayFullError),
    ],
)
def test_refined_codes_read_as_the_older_code_by_older_peers(
    name: str, exact: type[ProtocolError]
) -> None:
    """Codes 18-20 travel as a detail after AUTH_FAILED, 22 after LIMIT_EXCEEDED.

    A peer that predates them decodes only the fields it knows: it reads the older
    code (an AuthError: it stops, as it always did; a LimitExceededError); a newer
    one reads the exact refusal (docs/PROTOCOL.md, "Error codes").
    """
    reader = m.FrameReader(max_frame=1 << 20)
    reader.feed((GOLDEN / f"{name}.bin").read_bytes())
    body = reader.next_body()
    assert body is not None
    msg = m.decode_message(body)
    assert isinstance(msg, m.Close | m.DocError)
    base = REFINES[exact.code]
    assert msg.code == base
    assert type(ProtocolError.for_code(msg.code, msg.reason, detail=msg.detail)) is exact
    fields = m.cbor_decode(body)
    older = m.decode_message(m.cbor_encode(list(fields[:-1])))
    assert isinstance(older, m.Close | m.DocError)
    assert older.detail is None
    assert type(ProtocolError.for_code(older.code, older.reason)) is (
        AuthError if base == ErrorCode.AUTH_FAILED else LimitExceededError
    )
