"""The y-protocols wire messages that y-websocket speaks (sans-I/O codec).

One WebSocket message carries one of these (lib0 encoding: unsigned varints and
length-prefixed byte arrays)::

    sync        0, then: step 1  0 <state vector bytes>     "here is what I have"
                         step 2  1 <update bytes>           "here is what you lack"
                         update  2 <update bytes>           "a new transaction"
    awareness   1 <awareness update bytes>
    auth        2 0 <reason string>                         permission denied
    query       3                                           "send me everyone's presence"

Decoding is strict (the relay feeds it bytes from anyone): every length is
checked against the data and a limit before anything is sliced, trailing bytes
are refused, and a failure is a :class:`~crdtsync.errors.MalformedFrameError`
(or :class:`~crdtsync.errors.FrameTooLargeError`), never an ``IndexError``. The
update and awareness payloads themselves are only sliced here; the document and
:func:`~crdtsync.protocol.awareness.decode_awareness` validate them.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdtsync.errors import FrameTooLargeError, InvalidUpdateError, MalformedFrameError
from crdtsync.format.varint import VarintError, read_varuint, write_varuint
from crdtsync.format.version import Version

__all__ = [
    "MSG_AUTH",
    "MSG_AWARENESS",
    "MSG_QUERY_AWARENESS",
    "MSG_SYNC",
    "AuthDenied",
    "AwarenessMessage",
    "QueryAwareness",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "YMessage",
    "decode",
    "encode_auth_denied",
    "encode_awareness",
    "encode_query_awareness",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_update",
]

MSG_SYNC = 0
MSG_AWARENESS = 1
MSG_AUTH = 2
MSG_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

_AUTH_DENIED = 0
_MAX_VARUINT_BITS = 56  # 8 bytes: lib0 varuints carry at most 53 bits
_MAX_REASON = 1024


@dataclass(frozen=True)
class SyncStep1:
    """The sender's state vector: answer with a step 2 of what it lacks."""

    version: Version


@dataclass(frozen=True)
class SyncStep2:
    """The update that brings the receiver up to the sender's state."""

    update: bytes


@dataclass(frozen=True)
class SyncUpdate:
    """One transaction's update."""

    update: bytes


@dataclass(frozen=True)
class AwarenessMessage:
    """An awareness (presence) update, y-protocols encoding."""

    data: bytes


@dataclass(frozen=True)
class AuthDenied:
    """The server refused access (y-websocket logs the reason)."""

    reason: str


@dataclass(frozen=True)
class QueryAwareness:
    """A request for every known presence state."""


YMessage = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | AuthDenied | QueryAwareness


def _with_bytes(prefix: bytes, payload: bytes) -> bytes:
    out = bytearray(prefix)
    write_varuint(out, len(payload))
    out += payload
    return bytes(out)


def encode_sync_step1(version: Version) -> bytes:
    """Sync step 1 carrying ``version`` as a state vector."""
    return _with_bytes(b"\x00\x00", version.to_bytes())


def encode_sync_step2(update: bytes) -> bytes:
    """Sync step 2 carrying ``update``."""
    return _with_bytes(b"\x00\x01", update)


def encode_update(update: bytes) -> bytes:
    """A sync update message carrying ``update``."""
    return _with_bytes(b"\x00\x02", update)


def encode_awareness(data: bytes) -> bytes:
    """An awareness message carrying an encoded awareness update."""
    return _with_bytes(b"\x01", data)


def encode_auth_denied(reason: str) -> bytes:
    """A permission-denied auth message."""
    return _with_bytes(b"\x02\x00", reason.encode("utf-8")[:_MAX_REASON])


def encode_query_awareness() -> bytes:
    """A query-awareness message."""
    return b"\x03"


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varuint(self) -> int:
        try:
            value, self.pos = read_varuint(self.data, self.pos, bits=_MAX_VARUINT_BITS)
        except VarintError as exc:
            what = "message truncated" if exc.truncated else "varuint too long"
            raise MalformedFrameError(f"y-protocols {what}") from None
        return value

    def var_bytes(self, limit: int) -> bytes:
        n = self.varuint()
        if n > limit:
            raise FrameTooLargeError(f"y-protocols payload of {n} bytes (limit {limit})")
        end = self.pos + n
        if end > len(self.data):
            raise MalformedFrameError("y-protocols payload overruns the message")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedFrameError(
                f"{len(self.data) - self.pos} trailing bytes after a y-protocols message"
            )


def decode(data: bytes, *, max_payload: int = 1 << 26) -> YMessage:
    """Decode one y-protocols message.

    Args:
        data: the bytes of one WebSocket message.
        max_payload: largest update or awareness payload accepted.

    Returns:
        The message.

    Raises:
        MalformedFrameError: unknown type, truncated, trailing bytes, or a state
            vector that does not decode.
        FrameTooLargeError: a payload over ``max_payload``.
    """
    r = _Reader(bytes(data))
    kind = r.varuint()
    msg: YMessage
    if kind == MSG_SYNC:
        step = r.varuint()
        payload = r.var_bytes(max_payload)
        if step == SYNC_STEP1:
            try:
                msg = SyncStep1(Version.from_bytes(payload))
            except InvalidUpdateError as exc:
                raise MalformedFrameError(f"bad state vector in sync step 1: {exc}") from None
        elif step == SYNC_STEP2:
            msg = SyncStep2(payload)
        elif step == SYNC_UPDATE:
            msg = SyncUpdate(payload)
        else:
            raise MalformedFrameError(f"unknown sync step {step}")
    elif kind == MSG_AWARENESS:
        msg = AwarenessMessage(r.var_bytes(max_payload))
    elif kind == MSG_AUTH:
        sub = r.varuint()
        if sub != _AUTH_DENIED:
            raise MalformedFrameError(f"unknown auth message {sub}")
        raw = r.var_bytes(_MAX_REASON * 4)
        try:
            msg = AuthDenied(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise MalformedFrameError("auth reason is not UTF-8") from None
    elif kind == MSG_QUERY_AWARENESS:
        msg = QueryAwareness()
    else:
        raise MalformedFrameError(f"unknown y-protocols message type {kind}")
    r.end()
    return msg
