"""Sync: the sans-I/O session protocol, presence, and the asyncio Peer.

* :mod:`crdtsync.sync.messages`: frames and messages (``docs/PROTOCOL.md``);
* :mod:`crdtsync.sync.protocol`: :class:`Session`, the per-connection state machine;
* :mod:`crdtsync.sync.awareness`: presence states, y-protocols compatible;
* :mod:`crdtsync.sync.peer`: :class:`Peer`, the asyncio shell owning documents,
  a store and connections;
* :mod:`crdtsync.sync.yprotocol`: the y-protocols messages y-websocket speaks;
* :mod:`crdtsync.sync.yclient`: :class:`YProvider`, a document kept in sync with
  a room of any y-websocket server.
"""

from .awareness import Awareness, AwarenessChange
from .peer import Backoff, Grant, HelloInfo, Peer, Status
from .protocol import Session, SessionOptions, WriterRegistry
from .yclient import YProvider

__all__ = [
    "Awareness",
    "AwarenessChange",
    "Backoff",
    "Grant",
    "HelloInfo",
    "Peer",
    "Session",
    "SessionOptions",
    "Status",
    "WriterRegistry",
    "YProvider",
]
