"""An in-memory network with seeded fault injection.

Every host gets a :class:`MemoryTransport` from one :class:`MemoryNetwork`;
connections are pairs of queues inside the event loop. With the default
:class:`Faults` (none) it is a perfect ordered pipe, which is what
``check_transport`` expects. Turned on, the faults are drawn from one seeded
:class:`random.Random`, so a failing schedule replays exactly (under the
virtual-time loop of ``crdtsync.testing``):

============ ==================================================================
``drop``      the bytes of one ``send`` vanish
``duplicate`` they are delivered twice
``reorder``   they are held back and delivered after the next ``send``
``delay``     they arrive up to ``max_delay`` seconds late (order kept)
``corrupt``   one bit is flipped
``disconnect`` a prefix is delivered, then the connection drops (mid-stream)
============ ==================================================================

:meth:`MemoryNetwork.partition` splits hosts into groups: traffic between groups
is silently lost (like a pulled cable: no EOF, the sessions notice by their
timeouts) and new connections across groups are refused; :meth:`MemoryNetwork.heal`
ends it.

Memory connections are byte pipes and declare no optional ability
(:class:`~crdtsync.net.Ability`): a fault may cut a ``send`` short, so message
boundaries are not promised, and there is no write buffer to see or drop.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from crdtsync.errors import ConnectionClosedError, TransportError
from crdtsync.net import Ability, Connection, Handler

__all__ = ["Faults", "MemoryNetwork", "MemoryTransport", "NetworkStats"]


@dataclass(frozen=True)
class Faults:
    """Per-``send`` fault probabilities (0 to 1) and the delay bound (seconds)."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    corrupt: float = 0.0
    disconnect: float = 0.0
    max_delay: float = 0.05

    @property
    def any(self) -> bool:
        """Whether any fault is switched on."""
        return any(
            (self.drop, self.duplicate, self.reorder, self.delay, self.corrupt, self.disconnect)
        )


@dataclass
class NetworkStats:
    """Counters of what went over the network."""

    sends: int = 0
    bytes: int = 0
    connections: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class MemoryNetwork:
    """A set of hosts that can reach each other in memory.

    Examples:
        >>> import asyncio
        >>> net = MemoryNetwork(seed=1)
        >>> async def main():
        ...     async def echo(conn):
        ...         await conn.send(await conn.recv())
        ...     await net.transport("server").listen("mem://s", echo)
        ...     conn = await net.transport("client").connect("mem://s")
        ...     await conn.send(b"hi")
        ...     return await conn.recv()
        >>> asyncio.run(main())
        b'hi'

    Args:
        seed: seed of the fault generator.
        faults: faults to inject (none by default).
        latency: seconds every delivery takes.
    """

    def __init__(
        self, *, seed: int = 0, faults: Faults | None = None, latency: float = 0.0
    ) -> None:
        # The only source of randomness: replays are exact for a seed.
        self.rng = random.Random(seed)
        # Faults currently injected.
        self.faults = faults or Faults()
        # Base delivery latency.
        self.latency = latency
        # Counters.
        self.stats = NetworkStats()
        # address -> (host, handler, listener).
        self._listeners: dict[str, tuple[str, Handler, _MemoryListener]] = {}
        # host -> partition group number (absent: group 0 when partitioned).
        self._groups: dict[str, int] | None = None
        self._conns: set[_MemoryConnection] = set()

    def transport(self, host: str) -> MemoryTransport:
        """The transport of ``host`` (a name used by :meth:`partition`)."""
        return MemoryTransport(self, host)

    def set_faults(self, faults: Faults | None) -> None:
        """Change the injected faults (None: none)."""
        self.faults = faults or Faults()

    def partition(self, *groups: Iterable[str]) -> None:
        """Split hosts into groups that cannot reach each other (unlisted hosts: own group)."""
        self._groups = {}
        for i, group in enumerate(groups):
            for host in group:
                self._groups[host] = i

    def heal(self) -> None:
        """End the partition."""
        self._groups = None

    def reachable(self, a: str, b: str) -> bool:
        """Whether hosts ``a`` and ``b`` can talk now."""
        if self._groups is None or a == b:
            return True
        ga, gb = self._groups.get(a), self._groups.get(b)
        return ga is not None and ga == gb

    def disconnect_all(self) -> None:
        """Drop every open connection (both ends see it end)."""
        for conn in list(self._conns):
            conn._abort()

    def _count(self, fault: str) -> None:
        self.stats.faults[fault] = self.stats.faults.get(fault, 0) + 1

    async def _connect(self, host: str, address: str) -> Connection:
        entry = self._listeners.get(address)
        if entry is None:
            raise TransportError(f"nobody listens on {address}")
        server_host, handler, listener = entry
        if not self.reachable(host, server_host):
            raise TransportError(f"{address} is unreachable from {host} (partition)")
        a = _MemoryConnection(self, host, address)
        b = _MemoryConnection(self, server_host, f"{host}")
        a._peer, b._peer = b, a
        self._conns.update((a, b))
        self.stats.connections += 1
        listener._spawn(handler, b)
        return a


class MemoryTransport:
    """The :class:`~crdtsync.net.Transport` of one host on a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, host: str) -> None:
        self.network = network
        self.host = host

    @property
    def abilities(self) -> Ability:
        """None: memory connections are plain byte pipes."""
        return Ability(0)

    async def connect(self, address: str) -> Connection:
        """See :meth:`Transport.connect`."""
        return await self.network._connect(self.host, address)

    async def listen(self, address: str, handler: Handler) -> _MemoryListener:
        """See :meth:`Transport.listen`."""
        if address in self.network._listeners:
            raise TransportError(f"{address} is already in use")
        listener = _MemoryListener(self.network, address)
        self.network._listeners[address] = (self.host, handler, listener)
        return listener


class _MemoryListener:
    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self._network = network
        self._address = address
        # Handler tasks, kept referenced until they finish.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return self._address

    def _spawn(self, handler: Handler, conn: _MemoryConnection) -> None:
        async def run() -> None:
            try:
                await handler(conn)
            finally:
                await conn.close()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        entry = self._network._listeners.get(self._address)
        if entry is not None and entry[2] is self:
            del self._network._listeners[self._address]


class _MemoryConnection:
    """One end of an in-memory connection."""

    def __init__(self, network: MemoryNetwork, host: str, remote: str) -> None:
        self._network = network
        self._host = host
        self._remote = remote
        self._peer: _MemoryConnection | None = None
        # Delivered chunks; None marks the end.
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closed = False
        self._eof = False
        # Chunks in flight towards the peer, (delivery time, chunk), in send order:
        # one timer drains them, so equal delivery times cannot swap two chunks.
        self._in_flight: deque[tuple[float, bytes | None]] = deque()
        self._drain_at: float | None = None
        # A chunk held back by a reorder fault.
        self._held: bytes | None = None

    @property
    def abilities(self) -> Ability:
        return Ability(0)

    @property
    def remote_address(self) -> str:
        return self._remote

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionClosedError("send on a closed connection")
        peer = self._peer
        assert peer is not None
        net = self._network
        net.stats.sends += 1
        net.stats.bytes += len(data)
        if not net.reachable(self._host, peer._host):
            net._count("partition")
            return
        f = net.faults
        data = bytes(data)
        delay = 0.0
        if f.any:
            rng = net.rng
            if rng.random() < f.drop:
                net._count("drop")
                return
            if rng.random() < f.corrupt and data:
                net._count("corrupt")
                i = rng.randrange(len(data) * 8)
                b = bytearray(data)
                b[i // 8] ^= 1 << (i % 8)
                data = bytes(b)
            if rng.random() < f.disconnect:
                net._count("disconnect")
                self._deliver(peer, data[: rng.randrange(len(data) + 1)], 0.0)
                self._abort()
                return
            if rng.random() < f.delay:
                net._count("delay")
                delay = rng.random() * f.max_delay
            if rng.random() < f.reorder and self._held is None:
                net._count("reorder")
                self._held = data
                return
            if rng.random() < f.duplicate:
                net._count("duplicate")
                self._deliver(peer, data, delay)
        self._deliver(peer, data, delay)
        if self._held is not None:
            held, self._held = self._held, None
            self._deliver(peer, held, delay)

    def _deliver(self, peer: _MemoryConnection, data: bytes | None, delay: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + self._network.latency + delay
        if self._in_flight:
            when = max(when, self._in_flight[-1][0])
        self._in_flight.append((when, data))
        self._drain(peer)

    def _drain(self, peer: _MemoryConnection) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._in_flight and self._in_flight[0][0] <= now:
            peer._inbox.put_nowait(self._in_flight.popleft()[1])
        if self._in_flight and self._drain_at is None:
            self._drain_at = self._in_flight[0][0]

            def fire() -> None:
                self._drain_at = None
                self._drain(peer)

            loop.call_at(self._drain_at, fire)

    async def recv(self) -> bytes:
        while True:
            if self._eof:
                raise ConnectionClosedError("the connection is closed")
            data = await self._inbox.get()
            if data is None:
                self._eof = True
                continue
            if data:
                return data

    def _abort(self) -> None:
        """Close both ends now (a dropped connection)."""
        for end in (self, self._peer):
            if end is not None and not end._closed:
                end._closed = True
                end._inbox.put_nowait(None)
                self._network._conns.discard(end)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._network._conns.discard(self)
        peer = self._peer
        if peer is not None:
            # The end-of-stream goes after every byte already in flight.
            self._deliver(peer, None, 0.0)
            peer._closed_by_peer()
        self._inbox.put_nowait(None)

    def _closed_by_peer(self) -> None:
        # The peer closed: our sends now fail; our recv ends after what is in flight.
        self._closed = True
        self._network._conns.discard(self)
