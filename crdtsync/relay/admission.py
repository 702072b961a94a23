"""Who may hold a connection, or make a room, before the relay spends anything on them.

Theory of operation
===================

Connections and rooms are what an attacker with no token, or only a reader's,
can make the relay keep. Both are budgeted here, without I/O (time is passed
in, and connections are opaque keys), and the asyncio shells apply the answers:

* :class:`ConnectionBudget`: every TCP connection is *pending* from the moment
  it is accepted (``ReadPausingConnection.connection_made``, before a byte of
  HTTP is read) until it authenticates (a crdtsync handshake accepted, a
  y-protocols token checked). Pending connections are budgeted apart from
  authenticated ones (``max_connections``): at most ``max_unauth`` in all and
  ``max_unauth_per_address`` from one client address (an IPv6 address counts
  by its /64, what one host usually has). A newcomer over its address's share
  is refused at once; a newcomer over the global share evicts the *oldest*
  pending connection, so that sockets opened and left silent (a slowloris, on
  HTTP or before a HELLO) can delay honest clients by at most the time the
  attacker takes to replace them, never lock them out for a whole handshake
  timeout. And an address may open ``per_address_rate`` connections a second
  (bursts of ten seconds' worth): each costs a WebSocket handshake and a token
  check, authenticated or not, so opening and closing them is budgeted too.
* Cluster nodes: on a room's owner, every y-protocols client another node
  proxies arrives from that node's address, and was budgeted already where it
  connected. ``exempt`` names the hosts of the cluster's live nodes: their
  connections skip the per-address checks at accept (they still count among
  pending connections). Whether such a connection really is a proxied one is
  known only once its HTTP request is read (a signed hop header,
  ``crdtsync.relay.cluster.hop``); one that is not is charged to its own address then
  (:meth:`ConnectionBudget.charge`), and refused if that is over its budget.
* :class:`RoomBudget`: rooms made per client address, a token bucket of
  ``per_minute`` (all the address's connections together: a y-protocols client
  makes one room per connection, so only the address bounds it).

:func:`raise_open_files` raises the process's ``RLIMIT_NOFILE`` to what the
configured connection limits need (one descriptor per connection).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crdtsync.errors import RateLimitError
from crdtsync.protocol.limits import TokenBucket

__all__ = [
    "ConnectionBudget",
    "Decision",
    "RateByAddress",
    "RoomBudget",
    "address_key",
    "raise_open_files",
]

#: Descriptors the relay needs beyond one per connection (the store's files,
#: listening sockets, the event loop's own, logs).
FD_SLACK = 256


def address_key(address: str) -> str:
    """The budget key of a client address (``host:port``, ``[v6]:port`` or a bare host).

    IPv4 addresses count alone; IPv6 addresses by their /64 (a host usually has
    a whole /64 to pick addresses from).
    """
    host = address
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class Decision:
    """What to do with a new connection.

    Attributes:
        admit: keep it (False: close it at once).
        evict: a pending connection to close to make room for it (or None).
        why: why it is refused: ``"pending"`` (its address's share of pending
            connections is taken) or ``"rate"`` (its address opens them too fast).
    """

    admit: bool
    evict: object | None = None
    why: str = ""


class ConnectionBudget:
    """Pending (unauthenticated) connections, budgeted apart from authenticated ones.

    Args:
        max_unauth: pending connections in all; a newcomer beyond evicts the oldest.
        max_per_address: pending connections from one address (:func:`address_key`);
            a newcomer beyond is refused.
        per_address_rate: connections one address may open per second, after a
            burst of ten times as many (None: no limit); a newcomer beyond is
            refused.
        exempt: whether a host (an :func:`address_key`) is a node of the relay's
            cluster, whose connections skip the per-address checks at accept
            until :meth:`charge` (None: nobody is).

    Example:
        >>> budget = ConnectionBudget(max_unauth=2, max_per_address=1)
        >>> budget.admit("a", "10.0.0.1:5000")
        Decision(admit=True, evict=None, why='')
        >>> budget.admit("b", "10.0.0.1:5001")   # the address's share is taken
        Decision(admit=False, evict=None, why='pending')
        >>> budget.admit("c", "10.0.0.2:5000")
        Decision(admit=True, evict=None, why='')
        >>> budget.admit("d", "10.0.0.3:5000")   # full: the oldest pending one goes
        Decision(admit=True, evict='a', why='')
        >>> budget.authenticated("c"); budget.pending, budget.authenticated_count
        (1, 1)
    """

    def __init__(
        self,
        max_unauth: int,
        max_per_address: int,
        per_address_rate: float | None = None,
        *,
        exempt: Callable[[str], bool] | None = None,
    ) -> None:
        self.max_unauth = max_unauth
        self.max_per_address = max_per_address
        self._exempt = exempt
        # Pending connections from a node's host, not yet charged to any address.
        self._unkeyed: dict[object, str] = {}
        self._unkeyed_per_host: dict[str, int] = {}
        # Such connections one node host may have pending at once (its handshakes
        # in flight): more are budgeted as anyone's, so a process on a node's host
        # that opens silent sockets churns at most this share of the pending pool.
        self.max_exempt_per_host = max(max_per_address, max_unauth // 4)
        self._rates = RateByAddress(per_address_rate) if per_address_rate else None
        # Pending connections, oldest first: connection -> address key (None: not
        # charged to an address, from a node's host).
        self._pending: OrderedDict[object, str | None] = OrderedDict()
        self._per_address: dict[str, int] = {}
        # Authenticated connections still open.
        self._authenticated: set[object] = set()

    @property
    def pending(self) -> int:
        """Connections accepted and not yet authenticated."""
        return len(self._pending)

    @property
    def authenticated_count(self) -> int:
        """Authenticated connections still open."""
        return len(self._authenticated)

    def admit(self, conn: object, address: str, *, now: float = 0.0) -> Decision:
        """A connection was accepted from ``address``: keep it, and what to evict for it."""
        key = address_key(address)
        exempt = (
            self._exempt is not None
            and self._exempt(key)
            and self._unkeyed_per_host.get(key, 0) < self.max_exempt_per_host
        )
        if not exempt:
            refused = self._refusal(key, now)
            if refused is not None:
                return refused
        evict: object | None = None
        if len(self._pending) >= self.max_unauth:
            evict, _ = next(iter(self._pending.items()))
            self._drop(evict)
        if exempt:
            self._pending[conn] = None
            self._unkeyed[conn] = key
            self._unkeyed_per_host[key] = self._unkeyed_per_host.get(key, 0) + 1
        else:
            self._pending[conn] = key
            self._per_address[key] = self._per_address.get(key, 0) + 1
        return Decision(admit=True, evict=evict)

    def exempted(self, conn: object) -> bool:
        """Whether ``conn`` came from a node's host and was not charged to an address yet."""
        return conn in self._unkeyed

    def charge(self, conn: object, address: str, *, now: float = 0.0) -> Decision:
        """Charge an :meth:`exempted` connection to ``address`` after all.

        For a connection from a node's host that turned out not to be a proxied
        one (no valid hop header): the per-address checks :meth:`admit` skipped
        apply now. Refused: the caller closes it (it stays pending until then).
        A connection not exempted is admitted as it is (it was charged at accept).
        """
        if conn not in self._unkeyed:
            return Decision(admit=True)
        key = address_key(address)
        refused = self._refusal(key, now)
        if refused is not None:
            return refused
        self._unmark(conn)
        if conn in self._pending:
            self._pending[conn] = key
            self._per_address[key] = self._per_address.get(key, 0) + 1
        return Decision(admit=True)

    def forwarded(self, conn: object) -> None:
        """``conn`` proved it was proxied by a node (a valid hop): never charged to an address."""
        self._unmark(conn)

    def _refusal(self, key: str, now: float) -> Decision | None:
        """The per-address checks: a refusal, or None (a rate token was taken)."""
        if self._per_address.get(key, 0) >= self.max_per_address:
            return Decision(admit=False, why="pending")
        if self._rates is not None and not self._rates.take(key, now):
            return Decision(admit=False, why="rate")
        return None

    def authenticated(self, conn: object) -> None:
        """``conn`` authenticated: it leaves the pending budget (idempotent)."""
        if conn in self._pending:
            self._drop(conn)
            self._authenticated.add(conn)

    def closed(self, conn: object) -> None:
        """``conn`` is gone (idempotent)."""
        self._drop(conn)
        self._authenticated.discard(conn)

    def _unmark(self, conn: object) -> None:
        """``conn`` is no longer an exempted connection awaiting its charge (idempotent)."""
        host = self._unkeyed.pop(conn, None)
        if host is not None:
            left = self._unkeyed_per_host[host] - 1
            if left:
                self._unkeyed_per_host[host] = left
            else:
                del self._unkeyed_per_host[host]

    def _drop(self, conn: object) -> None:
        key = self._pending.pop(conn, None)
        self._unmark(conn)
        if key is not None:
            left = self._per_address[key] - 1
            if left:
                self._per_address[key] = left
            else:
                del self._per_address[key]


class RateByAddress:
    """A token bucket per address key, forgetting addresses whose bucket is full again.

    Args:
        rate: tokens per second.
        burst: the bucket size (default: ten seconds' worth).
    """

    #: Addresses remembered before the ones with a full bucket are forgotten.
    MAX_ADDRESSES = 10_000

    def __init__(self, rate: float, burst: int | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1, int(10 * rate))
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float) -> bool:
        """Take a token for ``key``; False when its bucket is empty."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_ADDRESSES:
                self._forget_idle(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_idle(self, now: float) -> None:
        """Forget addresses whose bucket has refilled (they are as good as new)."""
        full = [
            key for key, b in self._buckets.items() if b.tokens + (now - b.last) * b.rate >= b.burst
        ]
        for key in full:
            del self._buckets[key]


class RoomBudget:
    """Rooms one client address may create: ``per_minute``, in bursts of as many.

    Args:
        per_minute: rooms an address may create per minute.

    Example:
        >>> rooms = RoomBudget(per_minute=2)
        >>> rooms.create("10.0.0.1:1", now=0.0); rooms.create("10.0.0.1:2", now=0.0)
        >>> rooms.create("10.0.0.1:3", now=0.0)
        Traceback (most recent call last):
        ...
        crdtsync.errors.RateLimitError: more than 2 new rooms a minute from this address
        >>> rooms.create("10.0.0.1:3", now=30.0)   # half a minute gives one back
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._rates = RateByAddress(per_minute / 60.0, per_minute)

    def create(self, address: str, *, now: float) -> None:
        """A client at ``address`` is about to create a room.

        Raises:
            RateLimitError: it created ``per_minute`` rooms in the last minute.
        """
        if not self._rates.take(address_key(address), now):
            raise RateLimitError(
                f"more than {self.per_minute} new rooms a minute from this address"
            )


def raise_open_files(need: int) -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``need`` descriptors (up to the hard limit).

    Returns:
        ``(soft limit now, hard limit)``; the soft limit is below ``need`` when
        the hard limit is (the caller says so in its log).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, hard
        soft = target
    return soft, hard
