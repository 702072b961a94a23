"""The Noise handshake ``XXpsk3_25519_ChaChaPoly_BLAKE2s``, without I/O.

Written on ``cryptography``'s X25519 and ChaCha20-Poly1305 and the standard
library's BLAKE2s, following revision 34 of the Noise Protocol Framework
specification, and checked against the published test vectors (cacophony's
``Noise_XX_25519_ChaChaPoly_BLAKE2s`` and ``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s``,
in ``tests/lan/vectors/``). Why not the ``noiseprotocol`` package: its last
release is from 2020 and it drives ``cryptography`` through APIs that have since
moved; the few hundred lines below are easier to audit than to pin.

Theory of operation. Three messages, then two cipher states::

    -> e                      initiator's ephemeral key (in psk mode also MixKey(e))
    <- e, ee, s, es           responder's ephemeral, then its static key, encrypted
    -> s, se, psk             initiator's static key, encrypted; then the group psk

Both sides start from ``h = HASH(protocol name)``, ``ck = h`` and mix in the
prologue. Every DH result goes into the chaining key ``ck`` (``MixKey``); every
public value and ciphertext into the transcript hash ``h`` (``MixHash``), which is
the associated data of each encryption: so a single changed byte anywhere in the
handshake makes the next decryption fail. ``psk`` (``MixKeyAndHash``) enters last,
in message 3: the responder knows the initiator holds the group key once
message 3's payload decrypts; the initiator learns the same of the responder only
from the responder's first transport message (the link waits for it, see
:mod:`.channel`). ``split()`` then derives one cipher state per direction.

Transport messages use Noise's implicit nonce: the n-th message of a direction
is encrypted with nonce n, so a replayed, dropped, reordered or altered message
fails authentication. :class:`CipherState` exposes ``n`` so that the link can
name the failure precisely.

Everything here is pure: the ephemeral key can be given (test vectors), time is
never read, and bad remote input raises :class:`~crdtsync.errors.HandshakeError`
or :class:`~crdtsync.errors.LinkFrameError` with the state left unusable.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crdtsync.errors import HandshakeError, LinkFrameError, LocalProtocolError, TransportError

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_MESSAGE",
    "PROTOCOL_XX",
    "PROTOCOL_XXPSK3",
    "TAGLEN",
    "CipherState",
    "HandshakeState",
    "SymmetricState",
]

#: Protocol names (the psk-less one is here for its test vector).
PROTOCOL_XX = b"Noise_XX_25519_ChaChaPoly_BLAKE2s"
PROTOCOL_XXPSK3 = b"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s"
DHLEN = 32
HASHLEN = 32
TAGLEN = 16
#: Noise messages are at most 65535 bytes (spec section 3).
MAX_MESSAGE = 65535
# Nonce 2**64 - 1 is reserved (spec section 5.1).
_MAX_NONCE = (1 << 64) - 1

# The XX pattern; psk3 appends "psk" to the third message.
_XX: tuple[tuple[str, ...], ...] = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "blake2s")


def _hkdf(ck: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """Noise's HKDF (spec section 4.3): two or three HASHLEN outputs."""
    temp = _hmac(ck, ikm)
    out1 = _hmac(temp, b"\x01")
    out2 = _hmac(temp, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, _hmac(temp, out2 + b"\x03")


def _public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        # cryptography refuses an all-zero result: the peer sent a low-order point.
        raise HandshakeError("the peer sent an invalid (low-order) X25519 key") from None


class CipherState:
    """A key and a nonce counter (spec section 5.1); without a key it passes data through.

    Args:
        key: 32 bytes, or None for the empty state of the handshake's start.
    """

    def __init__(self, key: bytes | None = None) -> None:
        # The AEAD, or None while no key is set.
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        # The next nonce, as many messages as went through in this direction.
        self.n = 0

    @property
    def has_key(self) -> bool:
        """Whether a key is set (encryption is a no-op before)."""
        return self._aead is not None

    def _nonce(self) -> bytes:
        if self.n >= _MAX_NONCE:
            raise TransportError("the link's nonces are used up; it must be re-established")
        return b"\x00\x00\x00\x00" + self.n.to_bytes(8, "little")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        """Encrypt with nonce ``n`` and associated data ``ad``, then count one more."""
        if self._aead is None:
            return bytes(plaintext)
        out = self._aead.encrypt(self._nonce(), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        """Decrypt with nonce ``n``; the nonce advances only on success.

        Raises:
            LinkFrameError: ``kind="tampered"``: the ciphertext, its nonce or
                ``ad`` is not what was encrypted.
        """
        if self._aead is None:
            return bytes(ciphertext)
        try:
            out = self._aead.decrypt(self._nonce(), ciphertext, ad)
        except InvalidTag:
            raise LinkFrameError(
                "tampered", f"message {self.n} fails authentication (tampered or wrong key)"
            ) from None
        self.n += 1
        return out


class SymmetricState:
    """The chaining key, transcript hash and current cipher (spec section 5.2)."""

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            h = _hash(protocol_name)
        # The transcript hash (h) and chaining key (ck).
        self.h = h
        self.ck = h
        # Encrypts handshake payloads and static keys once a key is mixed in.
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        """MixKey: a DH result (or in psk mode, an ephemeral key) into ``ck``."""
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k)

    def mix_hash(self, data: bytes) -> None:
        """MixHash: ``h = HASH(h || data)``."""
        self.h = _hash(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        """MixKeyAndHash: the psk, into both ``ck`` and ``h``."""
        self.ck, temp_h, temp_k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """Encrypt with ``h`` as associated data, and hash the ciphertext in."""
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """Decrypt with ``h`` as associated data, and hash the ciphertext in."""
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """The two transport cipher states: (initiator to responder, responder to initiator)."""
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)


class HandshakeState:
    """One side of an XX (or XXpsk3) handshake (spec section 5.3).

    Call :meth:`write_message` and :meth:`read_message` in turn (the initiator
    writes first); after the third message :attr:`complete` is True and
    :meth:`split` gives ``(send, receive)`` cipher states for this side.

    Args:
        initiator: which side this is.
        static: this device's X25519 private key (32 bytes).
        prologue: bytes both sides must agree on (bound into the transcript).
        psk: the 32-byte pre-shared key (``Noise_XXpsk3_...``); None for
            plain ``Noise_XX_...`` (test vectors only: links always use a psk).
        ephemeral: a fixed ephemeral private key, for test vectors only; by
            default a fresh random one.

    Raises:
        LocalProtocolError: a key of the wrong size.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        static: bytes,
        prologue: bytes = b"",
        psk: bytes | None = None,
        ephemeral: bytes | None = None,
    ) -> None:
        if len(static) != DHLEN or (ephemeral is not None and len(ephemeral) != DHLEN):
            raise LocalProtocolError("X25519 private keys are 32 bytes")
        if psk is not None and len(psk) != 32:
            raise LocalProtocolError("a Noise psk is 32 bytes")
        # Which side we are, and the pattern's message list for our mode.
        self.initiator = initiator
        self._psk = psk
        pattern = list(_XX)
        if psk is not None:
            pattern[2] = (*pattern[2], "psk")
        self._pattern: tuple[tuple[str, ...], ...] = tuple(pattern)
        self._symmetric = SymmetricState(PROTOCOL_XXPSK3 if psk is not None else PROTOCOL_XX)
        self._symmetric.mix_hash(prologue)
        # Our static key pair, ephemeral key pair (made when first written), and
        # the peer's keys as they are read.
        self._s = X25519PrivateKey.from_private_bytes(static)
        self._e_fixed = ephemeral
        self._e: X25519PrivateKey | None = None
        self._re: bytes | None = None
        self._rs: bytes | None = None
        # Index of the next message in the pattern; set to -1 once a failure
        # made this state unusable.
        self._index = 0

    @property
    def complete(self) -> bool:
        """Whether all three messages went through."""
        return self._index == len(self._pattern)

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once its message carrying it was read."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """The transcript hash ``h`` (a channel binding once complete)."""
        return self._symmetric.h

    @property
    def my_turn(self) -> bool:
        """Whether the next message is ours to write."""
        return not self.complete and (self._index % 2 == 0) == self.initiator

    def _check_turn(self, writing: bool) -> None:
        if self._index < 0:
            raise LocalProtocolError("this handshake already failed")
        if self.complete:
            raise LocalProtocolError("the handshake is complete")
        if self.my_turn != writing:
            raise LocalProtocolError("not this side's turn to " + ("write" if writing else "read"))

    def _mix_dh(self, token: str) -> None:
        e, s = self._e, self._s
        re, rs = self._re, self._rs
        # Which of our keys meets which of theirs: the first letter is the
        # initiator's key, the second the responder's.
        if token == "ee":
            mine, theirs = e, re
        elif token == "es":
            mine, theirs = (e, rs) if self.initiator else (s, re)
        else:  # "se"
            mine, theirs = (s, re) if self.initiator else (e, rs)
        assert mine is not None
        assert theirs is not None
        self._symmetric.mix_key(_dh(mine, theirs))

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message, carrying ``payload``.

        Raises:
            LocalProtocolError: not our turn, or the message would exceed 65535 bytes.
        """
        self._check_turn(writing=True)
        sym = self._symmetric
        out = bytearray()
        for token in self._pattern[self._index]:
            if token == "e":
                if self._e_fixed is not None:
                    self._e = X25519PrivateKey.from_private_bytes(self._e_fixed)
                else:
                    self._e = X25519PrivateKey.from_private_bytes(os.urandom(DHLEN))
                pub = _public(self._e)
                out += pub
                sym.mix_hash(pub)
                if self._psk is not None:
                    sym.mix_key(pub)
            elif token == "s":
                out += sym.encrypt_and_hash(_public(self._s))
            elif token == "psk":
                assert self._psk is not None
                sym.mix_key_and_hash(self._psk)
            else:
                self._mix_dh(token)
        out += sym.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            self._index = -1
            raise LocalProtocolError("a Noise message is at most 65535 bytes")
        self._index += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Read the peer's next handshake message and return its payload.

        Raises:
            HandshakeError: the message is malformed or fails authentication (a
                different group key, a different prologue, or tampering); the
                state is then unusable.
            LocalProtocolError: not the peer's turn.
        """
        self._check_turn(writing=False)
        sym = self._symmetric
        rest = memoryview(message)
        try:
            if len(message) > MAX_MESSAGE:
                raise HandshakeError("handshake message over 65535 bytes")
            for token in self._pattern[self._index]:
                if token == "e":
                    if len(rest) < DHLEN:
                        raise HandshakeError("handshake message too short for a key")
                    self._re = bytes(rest[:DHLEN])
                    rest = rest[DHLEN:]
                    sym.mix_hash(self._re)
                    if self._psk is not None:
                        sym.mix_key(self._re)
                elif token == "s":
                    size = DHLEN + (TAGLEN if sym.cipher.has_key else 0)
                    if len(rest) < size:
                        raise HandshakeError("handshake message too short for a key")
                    self._rs = sym.decrypt_and_hash(bytes(rest[:size]))
                    rest = rest[size:]
                elif token == "psk":
                    assert self._psk is not None
                    sym.mix_key_and_hash(self._psk)
                else:
                    self._mix_dh(token)
            if sym.cipher.has_key and len(rest) < TAGLEN:
                raise HandshakeError("handshake message too short for its tag")
            payload = sym.decrypt_and_hash(bytes(rest))
        except LinkFrameError:
            number, psk = self._index + 1, "psk" in self._pattern[self._index]
            self._index = -1
            cause = "the other side holds another group key" if psk else "another link version"
            raise HandshakeError(
                f"handshake message {number} fails authentication: {cause}, or it was altered"
            ) from None
        except HandshakeError:
            self._index = -1
            raise
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """``(send, receive)`` cipher states for this side, once complete.

        Raises:
            LocalProtocolError: the handshake is not complete.
        """
        if not self.complete:
            raise LocalProtocolError("split() before the handshake completed")
        c1, c2 = self._symmetric.split()
        return (c1, c2) if self.initiator else (c2, c1)
