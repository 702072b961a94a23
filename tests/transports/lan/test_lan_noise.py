"""The Noise handshake against published test vectors, and its refusals.

Vectors (``tests/lan/vectors/``, each file names its source and licence):
cacophony's Noise_XX and Noise_XXpsk3 with ChaChaPoly and BLAKE2s, and snow's
Noise_XX with the same primitives (a second, independent implementation).
Messages alternate initiator, responder, initiator; after the third the
transport messages go on alternating, the first from the responder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from crdtsync.errors import HandshakeError, LinkFrameError, LocalProtocolError
from crdtsync.transports.lan.noise import CipherState, HandshakeState

VECTORS = Path(__file__).parent / "vectors"


def _load() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(VECTORS.glob("*.json")):
        data = json.loads(path.read_text())
        assert data["source"], f"{path.name} must name its source"
        assert data["licence"], f"{path.name} must name its licence"
        out.extend({**v, "_file": path.name} for v in data["vectors"])
    return out


ALL = _load()


def _psk(v: dict[str, Any], side: str) -> bytes | None:
    psks = v.get(f"{side}_psks") or []
    assert len(psks) <= 1
    return bytes.fromhex(psks[0]) if psks else None


@pytest.mark.parametrize("v", ALL, ids=[f"{v['_file']}:{v['protocol_name']}" for v in ALL])
def test_published_vector(v: dict[str, Any]) -> None:
    name = v["protocol_name"]
    assert name in ("Noise_XX_25519_ChaChaPoly_BLAKE2s", "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s")
    init = HandshakeState(
        initiator=True,
        static=bytes.fromhex(v["init_static"]),
        ephemeral=bytes.fromhex(v["init_ephemeral"]),
        prologue=bytes.fromhex(v["init_prologue"]),
        psk=_psk(v, "init"),
    )
    resp = HandshakeState(
        initiator=False,
        static=bytes.fromhex(v["resp_static"]),
        ephemeral=bytes.fromhex(v["resp_ephemeral"]),
        prologue=bytes.fromhex(v["resp_prologue"]),
        psk=_psk(v, "resp"),
    )
    assert ("psk3" in name) == (_psk(v, "init") is not None)
    messages = v["messages"]
    assert len(messages) > 3
    for i, m in enumerate(messages[:3]):
        writer, reader = (init, resp) if i % 2 == 0 else (resp, init)
        payload = bytes.fromhex(m["payload"])
        wire = writer.write_message(payload)
        assert wire.hex() == m["ciphertext"], f"handshake message {i + 1} differs"
        assert reader.read_message(wire) == payload
    assert init.complete
    assert resp.complete
    if "handshake_hash" in v:
        assert init.handshake_hash.hex() == v["handshake_hash"]
    assert init.handshake_hash == resp.handshake_hash
    assert init.remote_static is not None
    assert resp.remote_static is not None
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    for i, m in enumerate(messages[3:]):
        # After the handshake: responder first, then alternating.
        send, recv = (r_send, i_recv) if i % 2 == 0 else (i_send, r_recv)
        payload = bytes.fromhex(m["payload"])
        wire = send.encrypt_with_ad(b"", payload)
        assert wire.hex() == m["ciphertext"], f"transport message {i + 1} differs"
        assert recv.decrypt_with_ad(b"", wire) == payload


def _pair(
    psk_i: bytes = b"k" * 32, psk_r: bytes = b"k" * 32, prologue_r: bytes = b"p"
) -> tuple[HandshakeState, HandshakeState]:
    init = HandshakeState(initiator=True, static=os.urandom(32), prologue=b"p", psk=psk_i)
    resp = HandshakeState(initiator=False, static=os.urandom(32), prologue=prologue_r, psk=psk_r)
    return init, resp


def test_wrong_psk_fails_at_message_three() -> None:
    init, resp = _pair(psk_r=b"x" * 32)
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())  # no psk in messages 1 and 2
    with pytest.raises(HandshakeError, match="another group key"):
        resp.read_message(init.write_message())
    with pytest.raises(LocalProtocolError):
        resp.write_message()


def test_different_prologue_fails_at_message_one() -> None:
    init, resp = _pair(prologue_r=b"other")
    with pytest.raises(HandshakeError, match="fails authentication"):
        resp.read_message(init.write_message())


@pytest.mark.parametrize("index", [0, 1, 2])
def test_any_flipped_bit_in_the_handshake_is_refused(index: int) -> None:
    init, resp = _pair()
    sides = [(init, resp), (resp, init), (init, resp)]
    for i, (writer, reader) in enumerate(sides):
        wire = bytearray(writer.write_message(b"payload"))
        if i == index:
            wire[len(wire) // 2] ^= 0x01
            with pytest.raises(HandshakeError):
                reader.read_message(bytes(wire))
            return
        reader.read_message(bytes(wire))


@pytest.mark.parametrize("cut", [0, 5, 31, 40])
def test_short_messages_are_refused(cut: int) -> None:
    init, resp = _pair()
    resp.read_message(init.write_message())
    with pytest.raises(HandshakeError):
        init.read_message(resp.write_message()[:cut])


def test_low_order_point_is_refused() -> None:
    init, resp = _pair()
    resp.read_message(init.write_message())
    msg = resp.write_message()
    with pytest.raises(HandshakeError, match="low-order"):
        init.read_message(b"\x00" * 32 + msg[32:])  # the all-zero point, met by "ee"


def test_turns_are_enforced() -> None:
    init, resp = _pair()
    with pytest.raises(LocalProtocolError):
        resp.write_message()
    with pytest.raises(LocalProtocolError):
        init.split()


def test_transport_refuses_replay_reorder_and_tampering() -> None:
    send, recv = CipherState(b"k" * 32), CipherState(b"k" * 32)
    a, b, c = (send.encrypt_with_ad(b"", m) for m in (b"a", b"b", b"c"))
    assert recv.decrypt_with_ad(b"", a) == b"a"
    with pytest.raises(LinkFrameError) as info:
        recv.decrypt_with_ad(b"", a)  # replayed
    assert info.value.kind == "tampered"
    with pytest.raises(LinkFrameError):
        recv.decrypt_with_ad(b"", c)  # reordered (b skipped)
    bad = bytearray(b)
    bad[0] ^= 1
    with pytest.raises(LinkFrameError):
        recv.decrypt_with_ad(b"", bytes(bad))
    with pytest.raises(LinkFrameError):
        recv.decrypt_with_ad(b"ad", b)  # other associated data
    assert recv.decrypt_with_ad(b"", b) == b"b"  # the failures did not advance the nonce
    assert recv.decrypt_with_ad(b"", c) == b"c"
