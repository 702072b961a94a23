"""Sync protocol messages: a strict CBOR subset, message classes and frames.

Layout (the normative description with CDDL is ``docs/PROTOCOL.md``)::

    frame   = varuint(len(body)) || body || check
    body    = CBOR array [type, fields...]
    check   = 4 bytes, big-endian CRC-32 of (frame index as 8 bytes BE || body)

The frame index counts frames per direction from 0. Folding it into the check
value means a dropped, duplicated or reordered frame fails the check of the
*next* frame, exactly like a corrupted one, at no extra byte on the wire; the
session then closes and the reconnect's state-vector exchange repairs whatever
was lost. Real transports (TCP, TLS, WebSocket) already guarantee order and
integrity; the check makes the protocol safe over anything else too (and over
the fault-injecting in-memory transport the tests use).

The CBOR codec here is deliberately small: definite lengths only, no tags, no
undefined, nesting and item counts bounded, duplicate map keys refused. Bytes
from the network are decoded by this code alone, iteratively bounded, so that
hostile input can only ever produce a :class:`~crdtsync.errors.MalformedFrameError`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeAlias

from crdtsync.errors import FrameTooLargeError, MalformedFrameError, UnknownMessageError
from crdtsync.format.cbor import decode_cbor, encode_cbor, write_head
from crdtsync.format.varint import VarintError, read_varuint, write_varuint

__all__ = [
    "MESSAGE_TYPES",
    "PROTOCOL_VERSIONS",
    "Ack",
    "Awareness",
    "Close",
    "DocError",
    "FrameReader",
    "FrameWriter",
    "Hello",
    "Message",
    "MsgType",
    "Part",
    "Ping",
    "Sync",
    "Update",
    "Welcome",
    "cbor_decode",
    "cbor_encode",
    "decode_message",
    "encode_message",
]

#: Protocol versions this release speaks, newest last.
PROTOCOL_VERSIONS: tuple[int, ...] = (1,)

#: Update encodings inside UPDATE: the raw Yjs v1 update, or one zstd frame of it.
ENC_RAW = 0
ENC_ZSTD = 1

_MAX_DEPTH = 16
_MAX_ITEMS = 100_000
_MAX_VARUINT_BITS = 35  # 5 bytes: a frame length fits in 32 bits


class MsgType(IntEnum):
    """Message type numbers (the first element of every frame body)."""

    HELLO = 0
    WELCOME = 1
    SYNC = 2
    UPDATE = 3
    PART = 4
    ACK = 5
    AWARENESS = 6
    DOC_ERROR = 7
    PING = 8
    CLOSE = 9


# -- messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """Client -> server, first frame: versions, identity, auth, writers, documents.

    ``docs`` entries are ``(name, epoch, version)`` with the version as Yjs
    state-vector bytes: each is handled exactly like a SYNC once the session opens.
    """

    versions: tuple[int, ...]
    peer_id: int
    auth: Any = None
    writers: tuple[int, ...] = ()
    docs: tuple[tuple[str, bytes, bytes], ...] = ()
    max_frame: int = 0


@dataclass(frozen=True, slots=True)
class Welcome:
    """Server -> client: the chosen version and the server's identity."""

    version: int
    peer_id: int
    writers: tuple[int, ...] = ()
    max_frame: int = 0


@dataclass(frozen=True, slots=True)
class Sync:
    """Open a document on the sender's channel ``chan``: its epoch and version.

    ``answers`` is the receiver's channel this SYNC answers (None: an offer).
    Without it a late answer to an offer the receiver has already closed looks
    like a new offer, and the two sides pair different channels (the receiver
    would then count acknowledgements meant for one channel on another).
    Optional on the wire: a peer that does not send it is treated as before.
    """

    chan: int
    name: str
    epoch: bytes
    version: bytes
    answers: int | None = None


@dataclass(frozen=True, slots=True)
class Update:
    """Update number ``seq`` of the sender's channel (1 is the catch-up diff)."""

    chan: int
    seq: int
    enc: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Part:
    """A leading chunk of update ``seq``; the UPDATE with the same seq ends it."""

    chan: int
    seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """Every update up to ``seq`` on the peer's channel is durably stored."""

    chan: int
    seq: int


@dataclass(frozen=True, slots=True)
class Awareness:
    """A y-protocols awareness update for the document of the sender's channel."""

    chan: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DocError:
    """The sender refuses or closes document ``name`` on this session.

    ``your_chan`` is the receiver's channel being closed and ``my_chan`` the
    sender's own, each None when the sender does not know or have one: the
    receiver closes its channel for ``name`` only if one of them matches, so a
    late DOC_ERROR never closes a newer channel of the same document.
    ``detail`` refines ``code`` (``errors.REFINES``: why an ``AUTH_FAILED``, or
    that a ``LIMIT_EXCEEDED`` is for now);
    appended within version 1, so older peers read ``code`` alone.
    """

    name: str
    code: int
    reason: str = ""
    your_chan: int | None = None
    my_chan: int | None = None
    detail: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """Keepalive: sent when nothing else was sent for a while."""


@dataclass(frozen=True, slots=True)
class Close:
    """Last frame of a session, with an error code (0: normal).

    ``detail`` refines ``code`` (``errors.REFINES``: why an ``AUTH_FAILED``, or
    that a ``LIMIT_EXCEEDED`` is for now);
    appended within version 1, so older peers read ``code`` alone.
    """

    code: int
    reason: str = ""
    detail: int | None = None


Message: TypeAlias = (
    Hello | Welcome | Sync | Update | Part | Ack | Awareness | DocError | Ping | Close
)

#: Message class -> type number.
MESSAGE_TYPES: dict[type[Any], MsgType] = {
    Hello: MsgType.HELLO,
    Welcome: MsgType.WELCOME,
    Sync: MsgType.SYNC,
    Update: MsgType.UPDATE,
    Part: MsgType.PART,
    Ack: MsgType.ACK,
    Awareness: MsgType.AWARENESS,
    DocError: MsgType.DOC_ERROR,
    Ping: MsgType.PING,
    Close: MsgType.CLOSE,
}


# -- CBOR subset --------------------------------------------------------------------------


def cbor_encode(value: Any) -> bytes:
    """Encode ``value`` as CBOR (see :func:`crdtsync.format.cbor.encode_cbor`), at most 16 deep."""
    return encode_cbor(value, max_depth=_MAX_DEPTH)


def cbor_decode(data: bytes) -> Any:
    """Decode one CBOR item of the subset :func:`cbor_encode` writes (plus half/single floats).

    Lists decode as tuples, so decoded values are hashable where CBOR allows.

    Raises:
        MalformedFrameError: anything else, truncation, trailing bytes, nesting deeper
            than 16, more than 100,000 items, duplicate map keys.
    """
    return decode_cbor(data, error=MalformedFrameError, max_items=_MAX_ITEMS, max_depth=_MAX_DEPTH)


# -- message <-> CBOR -----------------------------------------------------------------------


def encode_message(msg: Message) -> bytes:
    """The CBOR body of a message."""
    if isinstance(msg, Update):
        # The keystroke path: build the array directly (same bytes as the generic path).
        out = bytearray(b"\x85\x03")
        write_head(out, 0, msg.chan)
        write_head(out, 0, msg.seq)
        write_head(out, 0, msg.enc)
        write_head(out, 2, len(msg.data))
        out += msg.data
        return bytes(out)
    return cbor_encode(_fields(msg))


def _fields(msg: Message) -> list[Any]:
    if isinstance(msg, Hello):
        docs = [[name, epoch, version] for name, epoch, version in msg.docs]
        return [
            MsgType.HELLO,
            list(msg.versions),
            msg.peer_id,
            msg.auth,
            list(msg.writers),
            docs,
            msg.max_frame,
        ]
    if isinstance(msg, Welcome):
        return [MsgType.WELCOME, msg.version, msg.peer_id, list(msg.writers), msg.max_frame]
    if isinstance(msg, Sync):
        fields = [MsgType.SYNC, msg.chan, msg.name, msg.epoch, msg.version]
        return fields if msg.answers is None else [*fields, msg.answers]
    if isinstance(msg, Update):
        return [MsgType.UPDATE, msg.chan, msg.seq, msg.enc, msg.data]
    if isinstance(msg, Part):
        return [MsgType.PART, msg.chan, msg.seq, msg.data]
    if isinstance(msg, Ack):
        return [MsgType.ACK, msg.chan, msg.seq]
    if isinstance(msg, Awareness):
        return [MsgType.AWARENESS, msg.chan, msg.data]
    if isinstance(msg, DocError):
        fields = [MsgType.DOC_ERROR, msg.name, msg.code, msg.reason, msg.your_chan, msg.my_chan]
        return fields if msg.detail is None else [*fields, msg.detail]
    if isinstance(msg, Ping):
        return [MsgType.PING]
    if isinstance(msg, Close):
        fields = [MsgType.CLOSE, msg.code, msg.reason]
        return fields if msg.detail is None else [*fields, msg.detail]
    raise TypeError(f"not a message: {msg!r}")


def _uint(v: Any, what: str, limit: int = 2**64 - 1) -> int:
    if type(v) is not int or not 0 <= v <= limit:
        raise MalformedFrameError(f"{what} must be an unsigned integer, got {v!r}")
    return v


def _bytes(v: Any, what: str) -> bytes:
    if type(v) is not bytes:
        raise MalformedFrameError(f"{what} must be a byte string")
    return v


def _text(v: Any, what: str) -> str:
    if type(v) is not str:
        raise MalformedFrameError(f"{what} must be a text string")
    return v


def _uints(v: Any, what: str) -> tuple[int, ...]:
    if type(v) is not tuple:
        raise MalformedFrameError(f"{what} must be an array")
    return tuple(_uint(x, what) for x in v)


# Field count per type: versions add fields at the end, and a decoder of an older
# version ignores the extra ones (see "Versioning rules" in docs/PROTOCOL.md).
_ARITY = {
    MsgType.HELLO: 7,
    MsgType.WELCOME: 5,
    MsgType.SYNC: 5,
    MsgType.UPDATE: 5,
    MsgType.PART: 4,
    MsgType.ACK: 3,
    MsgType.AWARENESS: 3,
    MsgType.DOC_ERROR: 6,
    MsgType.PING: 1,
    MsgType.CLOSE: 3,
}


def decode_message(body: bytes) -> Message:
    """Decode a frame body.

    Raises:
        MalformedFrameError: not CBOR, not an array, or fields of the wrong type.
        UnknownMessageError: a message type this version does not define.
    """
    obj = cbor_decode(body)
    if type(obj) is not tuple or not obj or type(obj[0]) is not int:
        raise MalformedFrameError("a frame body is an array starting with the message type")
    try:
        mtype = MsgType(obj[0])
    except ValueError:
        raise UnknownMessageError(f"unknown message type {obj[0]}") from None
    arity = _ARITY[mtype]
    if len(obj) < arity:
        raise MalformedFrameError(f"{mtype.name} has {len(obj) - 1} fields, needs {arity - 1}")
    f = obj[1:arity]
    if mtype is MsgType.UPDATE:
        return Update(
            _uint(f[0], "chan"), _uint(f[1], "seq"), _uint(f[2], "enc"), _bytes(f[3], "data")
        )
    if mtype is MsgType.ACK:
        return Ack(_uint(f[0], "chan"), _uint(f[1], "seq"))
    if mtype is MsgType.PING:
        return Ping()
    if mtype is MsgType.HELLO:
        if type(f[4]) is not tuple:
            raise MalformedFrameError("HELLO docs must be an array")
        docs = []
        for entry in f[4]:
            if type(entry) is not tuple or len(entry) < 3:
                raise MalformedFrameError("a HELLO doc is [name, epoch, version]")
            docs.append(
                (
                    _text(entry[0], "doc name"),
                    _bytes(entry[1], "epoch"),
                    _bytes(entry[2], "version"),
                )
            )
        return Hello(
            _uints(f[0], "versions"),
            _uint(f[1], "peer_id"),
            f[2],
            _uints(f[3], "writers"),
            tuple(docs),
            _uint(f[5], "max_frame"),
        )
    if mtype is MsgType.WELCOME:
        return Welcome(
            _uint(f[0], "version"),
            _uint(f[1], "peer_id"),
            _uints(f[2], "writers"),
            _uint(f[3], "max_frame"),
        )
    if mtype is MsgType.SYNC:
        answers = obj[arity] if len(obj) > arity else None
        return Sync(
            _uint(f[0], "chan"),
            _text(f[1], "doc name"),
            _bytes(f[2], "epoch"),
            _bytes(f[3], "version"),
            None if answers is None else _uint(answers, "answers"),
        )
    if mtype is MsgType.PART:
        return Part(_uint(f[0], "chan"), _uint(f[1], "seq"), _bytes(f[2], "data"))
    if mtype is MsgType.AWARENESS:
        return Awareness(_uint(f[0], "chan"), _bytes(f[1], "data"))
    # Optional fields appended within version 1 (absent from older peers' frames).
    extra = obj[arity] if len(obj) > arity else None
    if mtype is MsgType.DOC_ERROR:
        return DocError(
            _text(f[0], "doc name"),
            _uint(f[1], "code"),
            _text(f[2], "reason"),
            None if f[3] is None else _uint(f[3], "your_chan"),
            None if f[4] is None else _uint(f[4], "my_chan"),
            None if extra is None else _uint(extra, "detail"),
        )
    return Close(
        _uint(f[0], "code"),
        _text(f[1], "reason"),
        None if extra is None else _uint(extra, "detail"),
    )


# -- frames ---------------------------------------------------------------------------------


def _check(index: int, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(index.to_bytes(8, "big")))


@dataclass(slots=True)
class FrameWriter:
    """Turns messages into frames, numbering them for the check value."""

    #: Index of the next frame.
    index: int = 0

    def frame(self, msg: Message) -> bytes:
        """The wire bytes of ``msg`` as the next frame."""
        return self.frame_body(encode_message(msg))

    def frame_body(self, body: bytes) -> bytes:
        """The wire bytes of an already-encoded body as the next frame."""
        out = bytearray()
        write_varuint(out, len(body))
        out += body
        out += _check(self.index, body).to_bytes(4, "big")
        self.index += 1
        return bytes(out)


@dataclass(slots=True)
class FrameReader:
    """Splits received bytes into frame bodies, enforcing the size limit first.

    The length prefix is read before anything else, so an oversized frame is
    refused before a byte of its body is buffered.
    """

    #: Largest accepted body, in bytes.
    max_frame: int
    #: Index of the next frame expected.
    index: int = 0
    #: Received bytes not yet consumed.
    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        """Append received bytes (any split: frames may arrive in pieces or together)."""
        self.buffer += data

    def next_body(self) -> bytes | None:
        """The next complete frame body, or None if more bytes are needed.

        Raises:
            FrameTooLargeError: the length prefix announces more than ``max_frame``.
            MalformedFrameError: a bad length prefix or a failed check value (corrupt,
                dropped, duplicated or reordered frame).
        """
        buf = self.buffer
        try:
            n, pos = read_varuint(buf, 0, bits=_MAX_VARUINT_BITS)
        except VarintError as exc:
            if exc.truncated:
                return None  # wait for the rest of the prefix
            raise MalformedFrameError("frame length prefix too long") from None
        if n > self.max_frame:
            raise FrameTooLargeError(f"frame of {n} bytes exceeds the limit of {self.max_frame}")
        end = pos + n + 4
        if len(buf) < end:
            return None
        body = bytes(buf[pos : pos + n])
        check = int.from_bytes(buf[pos + n : end], "big")
        del buf[:end]
        if check != _check(self.index, body):
            raise MalformedFrameError(
                f"frame {self.index} fails its check value (corrupt, lost, duplicated or reordered)"
            )
        self.index += 1
        return body
