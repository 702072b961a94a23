"""The LAN link protocol without I/O: a Noise handshake, then authenticated frames.

:class:`LinkCore` is the whole protocol as a plain object, in the shape of the
sync session: bytes go in with :meth:`~LinkCore.receive_data` and
:meth:`~LinkCore.receive_eof`, bytes come out of :meth:`~LinkCore.data_to_send`,
and what happened comes out of :meth:`~LinkCore.events_received`. Bad remote
input never raises: the core records the error (:attr:`~LinkCore.error`), queues
an authenticated CLOSE when it can, and reports a :class:`Closed` event. The
asyncio shell (:mod:`.link`) only moves bytes and enforces the handshake timeout.

Wire format (all integers big-endian)::

    initiator -> responder   preamble: b"CRDTLAN" + version (1 byte, = 1)
    handshake, 3 messages    length (u16, at most 1024) + Noise message
                             Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s, prologue = the preamble,
                             psk = GroupKey.psk; payloads empty but message 3's,
                             which is the initiator's hello (0 to 256 bytes)
    then both ways, frames   length (u32, 16..65535: the ciphertext's size)
                             counter (u64: the frame's number in its direction, from 0)
                             type (u8)
                             ciphertext = ChaCha20-Poly1305(direction key, nonce = counter,
                                          associated data = the 13 header bytes, plaintext = body)

Frame types: ``DATA`` (0, body 1 to 65519 bytes: session bytes), ``CLOSE`` (1,
body a UTF-8 reason of at most 256 bytes: the link ends), ``READY`` (2, body
the responder's hello, 0 to 256 bytes: the responder's first frame). The type
travels in the clear but authenticated (it is associated data), so the body is
encrypted in place, without a copy.
The counter is the Noise nonce made explicit: a frame whose counter is not the
next one is refused before decryption and named (``replayed`` when it goes
back, ``skipped`` when it jumps ahead), and one whose header or ciphertext was
altered fails authentication (``tampered``).

A **hello** is a few opaque bytes each side hands the other during the
handshake (``LinkCore(hello=...)``, :attr:`Opened.hello`), for the layer above:
e.g. a per-process incarnation id, so that a restarted peer's new link can
replace its old one at once. Both hellos travel under keys that include the
group psk (message 3's payload, the READY body), so no non-member reads them.

States::

    initiator: HANDSHAKE --msg 2 read, key verified, msg 3 sent--> CONFIRMING
               CONFIRMING --READY--> OPEN
    responder: HANDSHAKE --msg 3 read, key verified, READY sent--> OPEN
    any: --error, EOF, CLOSE received or close()--> CLOSED

Why READY: in XXpsk3 the group psk enters only in message 3, so until the
responder answers with a frame under the final keys the initiator has no proof
that the responder holds the group key (or that it accepted this device). The
shell hands the connection to its user only at OPEN, so not one session byte
is sent to a peer that has not proved membership.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

from crdtsync.errors import (
    ConnectionClosedError,
    CrdtSyncError,
    HandshakeError,
    LinkFrameError,
    LocalProtocolError,
    PeerIdentityError,
    TransportError,
)

from .identity import DeviceIdentity, GroupKey, RemoteIdentity
from .noise import MAX_MESSAGE, TAGLEN, CipherState, HandshakeState

__all__ = [
    "MAX_BODY",
    "MAX_HANDSHAKE_MESSAGE",
    "MAX_HELLO",
    "PREAMBLE",
    "VERSION",
    "Closed",
    "Data",
    "Event",
    "FrameType",
    "LinkCore",
    "Opened",
    "State",
]

logger = logging.getLogger("crdtsync.lan")

#: The link protocol version this release speaks.
VERSION = 1
_MAGIC = b"CRDTLAN"
#: What the initiator sends first (also the Noise prologue).
PREAMBLE = _MAGIC + bytes([VERSION])
#: Largest hello (see the module docstring).
MAX_HELLO = 256
#: Largest handshake message accepted (ours are at most 112 + 256 bytes).
MAX_HANDSHAKE_MESSAGE = 1024
_HEADER = struct.Struct(">IQB")
_HS_LEN = struct.Struct(">H")
#: Largest body of one frame: a Noise message is at most 65535 bytes.
MAX_BODY = MAX_MESSAGE - TAGLEN
_MAX_REASON = 256


class FrameType(enum.IntEnum):
    """Frame types (the first plaintext byte of a frame)."""

    DATA = 0
    CLOSE = 1
    READY = 2


class State(enum.Enum):
    """Where a link is (see the module docstring)."""

    HANDSHAKE = "handshake"
    CONFIRMING = "confirming"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Opened:
    """The handshake finished: ``remote`` proved its key and the group key.

    Attributes:
        remote: the peer's proven device key.
        hello: the peer's hello bytes (empty if it sent none).
    """

    remote: RemoteIdentity
    hello: bytes = b""


@dataclass(frozen=True)
class Data:
    """Session bytes from the peer (never empty)."""

    data: bytes


@dataclass(frozen=True)
class Closed:
    """The link ended.

    Attributes:
        error: why, when it was not a CLOSE from the peer (then None).
        reason: the peer's CLOSE reason, or the error's message.
    """

    error: TransportError | None
    reason: str


Event = Opened | Data | Closed

#: Checks a peer's proven key; raises PeerIdentityError to refuse it.
Verify = Callable[[RemoteIdentity], None]


class LinkCore:
    """One end of a LAN link, without I/O.

    Args:
        initiator: True on the side that connected.
        identity: this device's key pair.
        group: the group key (its psk binds the handshake to the group).
        verify: called with the peer's proven key before anything else is
            sent; raises :class:`PeerIdentityError` to refuse the peer (a
            fingerprint that does not match its announcement, a device not on
            the allow-list). A peer reaching itself is always refused.
        hello: bytes for the peer's :attr:`Opened.hello` (at most 256).
        ephemeral: a fixed ephemeral private key, for tests only.

    Raises:
        LocalProtocolError: a hello over 256 bytes.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        identity: DeviceIdentity,
        group: GroupKey,
        verify: Verify | None = None,
        hello: bytes = b"",
        ephemeral: bytes | None = None,
    ) -> None:
        if len(hello) > MAX_HELLO:
            raise LocalProtocolError(f"a hello is at most {MAX_HELLO} bytes")
        # Which end we are; what we tell the peer; what it told us.
        self.initiator = initiator
        self._hello = bytes(hello)
        self._remote_hello = b""
        self._identity = identity
        self._verify = verify
        self._hs = HandshakeState(
            initiator=initiator,
            static=identity.private_bytes(),
            prologue=PREAMBLE,
            psk=group.psk,
            ephemeral=ephemeral,
        )
        # Where the link is.
        self.state = State.HANDSHAKE
        # Why it ended (None while open, or after the peer's CLOSE or our close()).
        self.error: TransportError | None = None
        # The peer's proven key, once verified.
        self.remote: RemoteIdentity | None = None
        # The transcript hash once the handshake completed: a channel binding.
        self.handshake_hash: bytes | None = None
        # Transport cipher states, after split().
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        # Bytes received not yet parsed; bytes to send; events not yet taken.
        self._in = bytearray()
        self._out: list[bytes] = []
        self._out_size = 0
        self._events: list[Event] = []
        # The responder reads the preamble first.
        self._need_preamble = not initiator
        if initiator:
            self._queue(PREAMBLE)
            self._write_handshake()

    # -- the I/O-free surface ------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket (never raises for bad input)."""
        if self.state is State.CLOSED or not data:
            return
        try:
            if self.state is not State.HANDSHAKE and not self._in:
                # The common case: frames straight from the chunk read, no copy
                # into the buffer (only an unfinished frame at its end is kept).
                self._frames(data)
            else:
                self._in += data
                self._parse()
        except (TransportError, LocalProtocolError) as exc:
            self._fail(exc if isinstance(exc, TransportError) else HandshakeError(str(exc)))

    def receive_eof(self) -> None:
        """The socket reached its end (the peer closed or the connection was cut)."""
        if self.state is State.CLOSED:
            return
        if self.state is State.HANDSHAKE:
            stage = "before the handshake finished"
            if self.initiator and self._hs.remote_static is None:
                stage = "before answering (not a crdtsync LAN peer, or one that refused us)"
            self._fail(HandshakeError(f"the peer closed the connection {stage}"))
        elif self.state is State.CONFIRMING:
            self._fail(
                HandshakeError(
                    "the peer closed the connection after our last handshake message: "
                    "it holds another group key (or the connection was cut)"
                )
            )
        elif self._in:
            self._fail(
                LinkFrameError(
                    "truncated", f"the connection ended inside a frame ({len(self._in)} bytes)"
                )
            )
        else:
            err = ConnectionClosedError(
                "the connection ended without a close frame (the peer stopped, or the "
                "connection was cut)"
            )
            self._finish(err, str(err))

    def data_to_send(self) -> bytes:
        """Bytes to write to the socket, in order (empty when there are none)."""
        out = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return out

    def events_received(self) -> list[Event]:
        """What happened since the last call, in order."""
        events, self._events = self._events, []
        return events

    # -- sending ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue session bytes (split into frames of at most :data:`MAX_BODY`).

        Raises:
            ConnectionClosedError: the link is closed.
            LocalProtocolError: the link is not open yet.
        """
        if self.state is State.CLOSED:
            why = f": {self.error}" if self.error is not None else ""
            raise ConnectionClosedError(f"the link is closed{why}")
        if self.state is not State.OPEN:
            raise LocalProtocolError("send() before the link is open")
        view = memoryview(data)
        for start in range(0, len(view), MAX_BODY):
            self._seal(FrameType.DATA, view[start : start + MAX_BODY])

    def close(self, reason: str = "") -> None:
        """End the link: a CLOSE frame goes out when keys exist. Idempotent."""
        if self.state is State.CLOSED:
            return
        if self._send is not None:
            self._seal(FrameType.CLOSE, reason.encode("utf-8")[:_MAX_REASON])
        self.state = State.CLOSED
        self._events.append(Closed(None, reason or "closed by this side"))

    @property
    def buffered(self) -> int:
        """Bytes queued by the core and not yet taken by :meth:`data_to_send`."""
        return self._out_size

    # -- internals ------------------------------------------------------------------------

    def _fail(self, error: TransportError) -> None:
        if self.state is State.CLOSED:
            return
        logger.warning("LAN link %s: %s", self._who(), error)
        if self._send is not None:
            # The peer can read this: say why (it may be a bug on its side).
            self._seal(FrameType.CLOSE, f"refused: {error}".encode()[:_MAX_REASON])
        self._finish(error, str(error))

    def _finish(self, error: TransportError | None, reason: str) -> None:
        self.state = State.CLOSED
        self.error = error
        # A new buffer, not clear(): a view of the old one may still be alive in a traceback.
        self._in = bytearray()
        self._events.append(Closed(error, reason))

    def _who(self) -> str:
        return self.remote.fingerprint if self.remote is not None else "(unauthenticated peer)"

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    def _seal(self, ftype: FrameType, body: bytes | memoryview) -> None:
        assert self._send is not None
        header = _HEADER.pack(len(body) + TAGLEN, self._send.n, ftype)
        self._queue(header)
        self._queue(self._send.encrypt_with_ad(header, body))

    def _write_handshake(self, payload: bytes = b"") -> None:
        message = self._hs.write_message(payload)
        self._queue(_HS_LEN.pack(len(message)) + message)

    def _parse(self) -> None:
        if self._need_preamble:
            seen = min(len(self._in), len(_MAGIC))
            if bytes(self._in[:seen]) != _MAGIC[:seen]:
                raise HandshakeError("not a crdtsync LAN peer (bad preamble)")
            if len(self._in) < len(PREAMBLE):
                return
            version = self._in[len(_MAGIC)]
            if version != VERSION:
                raise HandshakeError(
                    f"the peer speaks LAN link version {version}; this side speaks {VERSION}"
                )
            del self._in[: len(PREAMBLE)]
            self._need_preamble = False
        while self.state is State.HANDSHAKE:
            if len(self._in) < _HS_LEN.size:
                return
            (size,) = _HS_LEN.unpack_from(self._in)
            if size > MAX_HANDSHAKE_MESSAGE:
                raise HandshakeError(f"a handshake message of {size} bytes is over the limit")
            if len(self._in) < _HS_LEN.size + size:
                return
            message = bytes(self._in[_HS_LEN.size : _HS_LEN.size + size])
            del self._in[: _HS_LEN.size + size]
            self._handshake_step(message)
        if self.state is not State.CLOSED:
            self._frames(self._in)

    def _frames(self, buf: bytes | bytearray) -> None:
        """Parse the frames in ``buf`` (the buffer, or a chunk just read); keep the rest."""
        pos = 0
        while self.state in (State.CONFIRMING, State.OPEN) and len(buf) - pos >= _HEADER.size:
            end = self._frame(buf, pos)
            if end is None:
                break
            pos = end
        if self.state is State.CLOSED:
            return
        if buf is self._in:
            del self._in[:pos]  # once per call, however many frames
        else:
            self._in = bytearray(memoryview(buf)[pos:])

    def _handshake_step(self, message: bytes) -> None:
        payload = self._hs.read_message(message)
        if self._hs.complete:  # message 3: the initiator's hello
            if len(payload) > MAX_HELLO:
                raise HandshakeError(f"a hello of {len(payload)} bytes is over {MAX_HELLO}")
            self._remote_hello = payload
        elif payload:
            raise HandshakeError("handshake messages 1 and 2 carry no payload in link version 1")
        rs = self._hs.remote_static
        carries_static = (self.initiator and self._hs.my_turn) or self._hs.complete
        if carries_static and self.remote is None:
            assert rs is not None
            remote = RemoteIdentity(rs)
            if rs == self._identity.public_key:
                raise PeerIdentityError("this device reached itself")
            if self._verify is not None:
                try:
                    self._verify(remote)
                except PeerIdentityError:
                    if self._hs.complete:
                        # The initiator proved the group key: tell it why.
                        self._split()
                    raise
                except CrdtSyncError as exc:
                    raise PeerIdentityError(str(exc)) from exc
            self.remote = remote
        if self.initiator:
            self._write_handshake(self._hello)
            self._split()
            self.state = State.CONFIRMING
        elif self._hs.complete:
            self._split()
            self._seal(FrameType.READY, self._hello)
            self._open()
        else:
            self._write_handshake()

    def _split(self) -> None:
        self._send, self._recv = self._hs.split()
        self.handshake_hash = self._hs.handshake_hash

    def _open(self) -> None:
        assert self.remote is not None
        self.state = State.OPEN
        self._events.append(Opened(self.remote, self._remote_hello))

    def _frame(self, buf: bytes | bytearray, pos: int) -> int | None:
        """Parse the frame at ``buf[pos:]``: where it ends, or None if it is not all here."""
        assert self._recv is not None
        length, counter, ftype = _HEADER.unpack_from(buf, pos)
        if length > MAX_MESSAGE:
            raise LinkFrameError(
                "too-large", f"a frame of {length} bytes is over the limit of {MAX_MESSAGE}"
            )
        if length < TAGLEN:
            raise LinkFrameError("malformed", f"a frame of {length} bytes is too short")
        expected = self._recv.n
        if counter < expected:
            raise LinkFrameError(
                "replayed",
                f"frame {counter} arrived again where frame {expected} was due (a replay)",
            )
        if counter > expected:
            raise LinkFrameError(
                "skipped", f"frame {counter} arrived where frame {expected} was due (reordered)"
            )
        end: int = pos + _HEADER.size + length
        if len(buf) < end:
            return None
        header = bytes(buf[pos : pos + _HEADER.size])
        # Decrypted straight from the buffer. Both views are released explicitly,
        # even when decryption fails (a traceback would keep them alive, and the
        # buffer could not be resized while they are).
        with memoryview(buf) as view:
            ciphertext = view[pos + _HEADER.size : end]
            try:
                body = self._recv.decrypt_with_ad(header, ciphertext)
            finally:
                ciphertext.release()
        if self.state is State.CONFIRMING:
            if ftype == FrameType.READY and len(body) <= MAX_HELLO:
                self._remote_hello = body
                self._open()
                return end
            if ftype == FrameType.CLOSE:
                reason = body.decode("utf-8", "replace")
                raise HandshakeError(f"the peer refused the link: {reason}")
            raise LinkFrameError("malformed", "the responder's first frame is not READY")
        if ftype == FrameType.DATA and body:
            self._events.append(Data(body))
        elif ftype == FrameType.CLOSE:
            reason = body.decode("utf-8", "replace")
            self._finish(None, reason or "closed by the peer")
        else:
            raise LinkFrameError("malformed", f"unexpected frame type {ftype} ({len(body)} bytes)")
        return end
