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
:attr:`Ability.IDENTITY`     ``remote_identity``,             ``Peer``: binds a session's
                             ``remote_hello``                 peer id and writer ids to the
                             (:class:`IdentityConnection`)    key (``Peer.bind_identities``)
============================ ================================ ============================

A transport's ``abilities`` are those of every connection it makes and accepts
(``check_transport`` checks that, and that each declared ability really works:
a transport declaring ``MESSAGES`` that splits or joins messages fails it).
``Transport`` is generic in the connections it makes, so a function that needs
message boundaries says so in its signature: ``Transport[MessageConnection]``
(``YProvider`` does, and refuses a transport that does not declare them).

**Discovery** is the other seam here: a :class:`Discovery` source yields
:class:`Hint` objects ("a device was seen at these addresses"), which a peer
may try to connect to. Hints are never a proof of anything: the transport's
handshake is (see ``docs/LAN.md``). ``crdtsync.testing.check_discovery`` is its
acceptance suite.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeGuard, TypeVar, runtime_checkable

__all__ = [
    "Ability",
    "CloseCodeConnection",
    "Connection",
    "Discovery",
    "FlowConnection",
    "Handler",
    "Hint",
    "Identity",
    "IdentityConnection",
    "Listener",
    "MessageConnection",
    "Transport",
    "has_close_codes",
    "has_flow_control",
    "has_identity",
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
    #: The peer proved a key in the handshake: an :class:`IdentityConnection`.
    IDENTITY = enum.auto()


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


class Identity(Protocol):
    """A key the peer proved in the transport's handshake (never a mere claim)."""

    @property
    def public_key(self) -> bytes:
        """The proven public key."""
        ...

    @property
    def fingerprint(self) -> str:
        """A short, stable name of the key, for people, logs and allow-lists."""
        ...


class IdentityConnection(Connection, Protocol):
    """A connection whose peer proved a key (declares :attr:`Ability.IDENTITY`).

    Both members are known as soon as the connection is handed out, and never
    change: the handshake authenticated them before any byte of the
    connection's own stream moved.
    """

    @property
    def remote_identity(self) -> Identity:
        """The key the peer proved."""
        ...

    @property
    def remote_hello(self) -> bytes:
        """What the peer declared in the handshake, authenticated with its key.

        Opaque to the transport; the layer above gives it a meaning (a LAN
        peer declares its incarnation and the client id it writes under).
        """
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


def has_identity(conn: Connection) -> TypeGuard[IdentityConnection]:
    """Whether ``conn`` declares :attr:`Ability.IDENTITY` (narrows it to IdentityConnection)."""
    return Ability.IDENTITY in conn.abilities


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


# -- discovery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hint:
    """A device seen (or no longer announced) somewhere.

    Attributes:
        fingerprint: the device announced, or None for an address given by hand
            (any device that proves what the transport requires may answer there).
        addresses: addresses to try, best first (a LAN hint's name the
            fingerprint, ``lan://FINGERPRINT@host:port``, so that a link refuses
            any other device there).
        gone: True when the announcement was withdrawn (a hint too: the
            connection's own keepalives decide whether the peer is really gone).
    """

    fingerprint: str | None
    addresses: tuple[str, ...]
    gone: bool = False


@runtime_checkable
class Discovery(Protocol):
    """A source of :class:`Hint` objects (zeroconf, a list of addresses, ...).

    Rules (``crdtsync.testing.check_discovery`` checks them):

    * ``start`` begins announcing and/or looking; it is called once.
    * ``hints()`` yields hints in the order they were learned; a newer hint about
      a device may replace one not yet taken. Iteration ends after ``close``.
    * Every hint that is not ``gone`` has at least one address, each a URL
      with a scheme (``lan://...``).
    * ``close`` stops everything (a zeroconf source sends its goodbye first);
      it is idempotent.
    * Never a hint about this device itself.
    """

    async def start(self) -> None:
        """Begin announcing and/or looking."""
        ...

    def hints(self) -> AsyncIterator[Hint]:
        """The hints, as they come; ends after :meth:`close`."""
        ...

    async def close(self) -> None:
        """Stop; idempotent."""
        ...
