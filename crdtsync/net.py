"""The transport seam: three small protocols an adapter implements in thirty lines.

A :class:`Connection` is an ordered byte pipe: ``send`` writes bytes, ``recv``
returns the next bytes the other side sent. Boundaries between ``send`` calls
need not be kept (a TCP adapter is fine): the sync session frames its own
messages.

Rules every connection keeps (``crdtsync.testing.check_transport`` checks them):

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

Optional abilities are **declared**, never probed: every transport and every
connection says which it has in ``abilities`` (an :class:`Ability` flag set),
and has the members of the matching sub-protocol. Code that needs an ability
asks with the type guards below, which narrow the type for mypy::

    if has_flow_control(conn):        # Ability.FLOW declared
        queued = conn.buffered_amount

============================ ================================ ============================
ability                      members (sub-protocol)           who uses it
============================ ================================ ============================
:attr:`Ability.MESSAGES`     every ``send`` arrives as one    ``YProvider`` and the relay's
                             ``recv``; ``recv_message()``     y-protocols side (its messages
                             (:class:`MessageConnection`)     have no length of their own)
:attr:`Ability.FLOW`         ``buffered_amount``, ``abort()`` ``Peer``'s ``max_send_queue``:
                             (:class:`FlowConnection`)        see and drop a slow reader
:attr:`Ability.CLOSE_CODES`  ``close_with(code, reason)``,    ``YProvider``: y-websocket's
                             ``close_code``, ``close_reason`` close codes (4401: do not
                             (:class:`CloseCodeConnection`)   come back)
============================ ================================ ============================

A transport's ``abilities`` are those of every connection it makes and accepts
(``check_transport`` checks that, and that each declared ability really works:
a transport declaring ``MESSAGES`` that splits or joins messages fails it).
``Transport`` is generic in the connections it makes, so a function that needs
message boundaries says so in its signature: ``Transport[MessageConnection]``
(``YProvider`` does, and refuses a transport that does not declare them).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeGuard, TypeVar, runtime_checkable

__all__ = [
    "Ability",
    "CloseCodeConnection",
    "Connection",
    "FlowConnection",
    "Handler",
    "Listener",
    "MessageConnection",
    "Transport",
    "has_close_codes",
    "has_flow_control",
    "keeps_messages",
]


class Ability(enum.Flag):
    """Optional abilities a transport and its connections declare (see the module docs)."""

    #: Each ``send`` arrives as exactly one ``recv`` (never split or joined):
    #: the connection is a :class:`MessageConnection`.
    MESSAGES = enum.auto()
    #: ``buffered_amount`` and ``abort()``: a :class:`FlowConnection`.
    FLOW = enum.auto()
    #: WebSocket-style close codes: a :class:`CloseCodeConnection`.
    CLOSE_CODES = enum.auto()


@runtime_checkable
class Connection(Protocol):
    """One open connection to a peer."""

    @property
    def abilities(self) -> Ability:
        """The optional abilities this connection has (see :class:`Ability`)."""
        ...

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


class MessageConnection(Connection, Protocol):
    """A connection that keeps message boundaries (declares :attr:`Ability.MESSAGES`).

    Each ``send(data)`` arrives as one ``recv()`` returning exactly ``data``
    (empty messages are skipped by ``recv``).
    """

    async def recv_message(self) -> bytes:
        """The next message exactly as sent, empty ones included.

        For servers that meter what clients send: an empty message costs
        nothing to send, so it must still count against a message-rate limit.

        Raises:
            ConnectionClosedError: the connection is closed.
        """
        ...


class FlowConnection(Connection, Protocol):
    """A connection whose write buffer can be seen and dropped (declares :attr:`Ability.FLOW`)."""

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted by ``send`` and not yet written to the network."""
        ...

    def abort(self) -> None:
        """Drop the connection now: no closing handshake, buffered bytes discarded.

        Both ends' pending and later ``recv``/``send`` calls end with
        ConnectionClosedError.
        """
        ...


class CloseCodeConnection(Connection, Protocol):
    """A connection that closes with a code and reason (declares :attr:`Ability.CLOSE_CODES`)."""

    async def close_with(self, code: int, reason: str) -> None:
        """Close with ``code`` (WebSocket close codes) and ``reason``; idempotent."""
        ...

    @property
    def close_code(self) -> int | None:
        """The close code the peer sent, else the one we sent (1006: none); None while open."""
        ...

    @property
    def close_reason(self) -> str | None:
        """The reason matching :attr:`close_code` (``""`` when none); None while open."""
        ...


def keeps_messages(conn: Connection) -> TypeGuard[MessageConnection]:
    """Whether ``conn`` declares :attr:`Ability.MESSAGES` (narrows it to MessageConnection)."""
    return Ability.MESSAGES in conn.abilities


def has_flow_control(conn: Connection) -> TypeGuard[FlowConnection]:
    """Whether ``conn`` declares :attr:`Ability.FLOW` (narrows it to FlowConnection)."""
    return Ability.FLOW in conn.abilities


def has_close_codes(conn: Connection) -> TypeGuard[CloseCodeConnection]:
    """Whether ``conn`` declares :attr:`Ability.CLOSE_CODES` (narrows it to CloseCodeConnection)."""
    return Ability.CLOSE_CODES in conn.abilities


_C_co = TypeVar("_C_co", bound=Connection, covariant=True)

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
class Transport(Protocol[_C_co]):
    """Makes and accepts connections of type ``_C_co``.

    ``Transport[Connection]`` is any transport; ``Transport[MessageConnection]``
    one whose connections keep message boundaries.
    """

    @property
    def abilities(self) -> Ability:
        """The optional abilities of every connection this transport makes and accepts."""
        ...

    async def connect(self, address: str) -> _C_co:
        """Connect to ``address``. Raises TransportError when that fails."""
        ...

    async def listen(self, address: str, handler: Callable[[_C_co], Awaitable[None]]) -> Listener:
        """Accept connections at ``address``, running ``handler`` on each."""
        ...
