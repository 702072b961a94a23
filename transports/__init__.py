"""Transports: what moves a sync session's bytes between peers.

This directory installs as ``crdtsync.transports`` (see ``pyproject.toml``).
:mod:`crdtsync.transports.base` holds the :class:`Transport` and
:class:`Connection` protocols; :mod:`crdtsync.transports.memory` an in-memory
network with seeded fault injection, for tests. WebSocket and LAN transports
plug in here later and pass the same ``crdtsync.testing.check_transport`` suite.
"""

from .base import Connection, Handler, Listener, Transport
from .memory import Faults, MemoryNetwork, MemoryTransport

__all__ = [
    "Connection",
    "Faults",
    "Handler",
    "Listener",
    "MemoryNetwork",
    "MemoryTransport",
    "Transport",
]
