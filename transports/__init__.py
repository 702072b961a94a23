"""Transports: what moves a sync session's bytes between peers.

This directory installs as ``crdtsync.transports`` (see ``pyproject.toml``).
:mod:`crdtsync.transports.base` holds the :class:`Transport` and
:class:`Connection` protocols; :mod:`crdtsync.transports.memory` an in-memory
network with seeded fault injection, for tests; :mod:`crdtsync.transports.websocket`
the WebSocket transport (``ws://`` and ``wss://``). A LAN transport plugs in here
later; every transport passes the same ``crdtsync.testing.check_transport`` suite.
"""

from .base import Connection, Handler, Listener, Transport
from .memory import Faults, MemoryNetwork, MemoryTransport
from .websocket import WebSocketConnection, WebSocketListener, WebSocketTransport

__all__ = [
    "Connection",
    "Faults",
    "Handler",
    "Listener",
    "MemoryNetwork",
    "MemoryTransport",
    "Transport",
    "WebSocketConnection",
    "WebSocketListener",
    "WebSocketTransport",
]
