"""The signed hop header: how an owner knows a connection was proxied by a node of its cluster.

A node that proxies a y-protocols client to the room's owner sends two headers:
:data:`HOP_HEADER` and ``X-Forwarded-For`` (the client's ``host:port`` as the
proxying node saw it). Anyone can send those headers, so the owner trusts
neither unless the hop header carries a valid MAC:

``X-Crdtsync-Hop: v1 <unix seconds> <hex HMAC-SHA256>``

over ``room``, the forwarded client address and the time, under the cluster's
hop key (:func:`hop_key`). A valid one, younger than :data:`HOP_WINDOW` seconds
(either way: nodes' clocks may differ a little), means a node holding the key
made it for this room and this client within the window: the owner then
treats the client address as the connection's own (its logs, its room-creation
budget, the hooks) and leaves the connection out of the per-address admission
budgets (the proxying node already charged the client once, where it
connected). A missing, malformed, stale or forged header gets nothing: the
connection is budgeted and logged under its real source address, and the
forwarded address is ignored.

Without I/O: time is passed in.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["FORWARDED_HEADER", "HOP_HEADER", "HOP_WINDOW", "HopSigner", "hop_key"]

#: Header on a proxied connection: it came from another node (never proxied again).
HOP_HEADER = "X-Crdtsync-Hop"
#: The client's address as the proxying node saw it (trusted only under a valid hop MAC).
FORWARDED_HEADER = "X-Forwarded-For"
#: Seconds a hop header stays valid, either side of the owner's clock.
HOP_WINDOW = 60.0

_VERSION = "v1"
_LABEL = b"crdtsync relay cluster hop v1"
# The longest header value accepted (a room name is bound by the MAC, not carried).
_MAX_VALUE = 128


def hop_key(secret: bytes) -> bytes:
    """The hop key derived from a cluster secret (the token secret, or the database's key).

    A derived key, not the secret itself: a hop MAC can never pass for a token
    signature, nor the reverse.
    """
    return hmac.new(secret, _LABEL, hashlib.sha256).digest()


class HopSigner:
    """Signs and verifies hop headers under one cluster's hop key.

    Args:
        key: the hop key (:func:`hop_key`).

    Example:
        >>> signer = HopSigner(hop_key(b"k" * 32))
        >>> value = signer.sign("notes", "10.0.0.7:5123", now=1000.0)
        >>> signer.verify(value, "notes", "10.0.0.7:5123", now=1030.0)
        True
        >>> signer.verify(value, "notes", "10.6.6.6:1", now=1030.0)   # another client
        False
        >>> signer.verify(value, "other", "10.0.0.7:5123", now=1030.0)  # another room
        False
        >>> signer.verify(value, "notes", "10.0.0.7:5123", now=1100.0)  # too old
        False
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a hop key needs at least 16 bytes")
        self._key = key

    def _mac(self, room: str, client: str, stamp: int) -> str:
        message = b"\0".join(
            (
                _VERSION.encode(),
                room.encode("utf-8", "surrogatepass"),
                client.encode("utf-8", "surrogatepass"),
                b"%d" % stamp,
            )
        )
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, room: str, client: str, *, now: float) -> str:
        """The hop header value for proxying ``client`` (``host:port``) into ``room``."""
        stamp = int(now)
        return f"{_VERSION} {stamp} {self._mac(room, client, stamp)}"

    def verify(self, value: str | None, room: str, client: str | None, *, now: float) -> bool:
        """Whether ``value`` is a hop header made for ``room`` and ``client`` within the window.

        Everything about the header is hostile until the MAC matched: its size,
        fields and time are checked first, the MAC compared in constant time.
        """
        if value is None or client is None or len(value) > _MAX_VALUE or len(client) > 64:
            return False
        parts = value.split(" ")
        if len(parts) != 3 or parts[0] != _VERSION:
            return False
        if not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) <= 12):
            return False
        stamp = int(parts[1])
        if abs(now - stamp) > HOP_WINDOW:
            return False
        return hmac.compare_digest(parts[2], self._mac(room, client, stamp))
