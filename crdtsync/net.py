"""The transport seam: three small protocols an adapter implements in thirty lines.

A :class:`Connection` is an ordered byte pipe: ``send`` writes bytes, ``recv``
returns the next bytes the other side sent. Boundaries between ``send`` calls
need not be kept (a TCP adapter is fine): the sync session frames its own
messages. A message transport (WebSocket) may send each ``send`` as one message.

Rules (``crdtsync.testing.check_transport`` checks them):

* bytes arrive in order, or the connection ends; never silently reordered by
  the transport itself (the in-memory network breaks this on purpose, only when
  told to inject faults);
* ``recv`` raises :class:`~crdtsync.errors.ConnectionClosedError` once the
  connection is closed (by either side) and every byte sent before the close was
  received;
* ``send`` after ``close`` raises :class:`~crdtsync.errors.ConnectionClosedError`;
  ``close`` is idempotent;
* ``connect`` to an address nobody listens on raises
  :class:`~crdtsync.errors.TransportError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

__all__ = ["Connection", "Handler", "Listener", "Transport"]


@runtime_checkable
class Connection(Protocol):
    """One open connection to a peer."""

    @property
    def remote_address(self) -> str:
        """Who is on the other side (for status events and logs)."""
        ...

    async def send(self, data: bytes) -> None:
        """Send bytes. Raises ConnectionClosedError if the connection is closed."""
        ...

    async def recv(self) -> bytes:
        """The next bytes received (never empty). Raises ConnectionClosedError at the end."""
        ...

    async def close(self) -> None:
        """Close the connection (idempotent); the peer's ``recv`` then ends."""
        ...


#: Called with each accepted connection; the connection ends when it returns.
Handler = Callable[[Connection], Awaitable[None]]


@runtime_checkable
class Listener(Protocol):
    """A listening endpoint."""

    @property
    def address(self) -> str:
        """The address peers connect to."""
        ...

    async def close(self) -> None:
        """Stop accepting connections (open ones stay open)."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Makes and accepts connections."""

    async def connect(self, address: str) -> Connection:
        """Connect to ``address``. Raises TransportError when that fails."""
        ...

    async def listen(self, address: str, handler: Handler) -> Listener:
        """Accept connections at ``address``, running ``handler`` on each."""
        ...
