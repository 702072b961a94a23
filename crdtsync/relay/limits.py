"""What bounds a connection to the relay before any protocol sees its bytes.

* :class:`SyncConnection`: a crdtsync-protocol connection as the backend's
  sessions see it: every WebSocket message, and every crdtsync frame in it,
  costs a token of the connection's :class:`~crdtsync.protocol.limits.TokenBucket`
  (close 4529 when empty); every byte costs one of its byte budget
  (``max_bytes_per_sec``: over it, the connection is read more slowly);
  before the handshake is accepted, no message may exceed what is left of
  ``max_unauth_bytes`` (refused at its frame header: 1009; in all above it:
  1008). It declares ``Ability.FLOW``, so the Peer sees
  its write buffer and drops it when it reads too slowly.
* :class:`ReadPausingConnection`: the websockets server connection the relay
  runs on: it stops reading from a client whose write buffer is over
  ``max_send_queue``, so a client that pings and never reads waits on TCP
  instead of growing the relay's memory; and it reports to the relay's
  :class:`ConnectionGate` from the moment TCP accepted it, before a byte of
  HTTP is read (the budget of connections not yet authenticated).

The y-protocols side's limits (message rate, payload size, writers) are in its
sans-I/O session, :class:`~crdtsync.protocol.ysession.YSession`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.messages import Assembler
from websockets.asyncio.server import ServerConnection

from crdtsync.errors import ConnectionClosedError
from crdtsync.net import Ability
from crdtsync.protocol.limits import FrameCounter, TokenBucket
from crdtsync.protocol.ysession import CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_RATE_LIMITED
from crdtsync.relay.admission import ConnectionBudget
from crdtsync.relay.config import RelayConfig
from crdtsync.relay.logs import log
from crdtsync.relay.metrics import RelayMetrics
from crdtsync.transports.websocket import WebSocketConnection

__all__ = [
    "ANSWER_RATE",
    "PRESENCE_BURST",
    "PRESENCE_RATE",
    "SYNC_OPEN_BURST",
    "Y_ANSWER_BURST",
    "ConnectionGate",
    "ReadPausingConnection",
    "SyncConnection",
    "byte_budget",
    "now",
    "pause_reading",
]


#: Whole answers one connection may ask for per second (one per 5 s), after its
#: burst: a
#: crdtsync document opened (a catch-up), a y-protocols sync step 1 (a catch-up)
#: or awareness query (everyone's presence). Each costs the relay up to a whole
#: room; honest clients ask once per room and connection.
ANSWER_RATE = 0.2
#: The burst of a y-protocols connection (one room: a step 1 at connect, and a
#: resync now and then).
Y_ANSWER_BURST = 4
#: The burst of a crdtsync connection: its rooms at connect, twice over (at
#: least this, and twice ``max_docs_per_conn``).
SYNC_OPEN_BURST = 128
#: Presence bytes one connection may send per second, after a burst of
#: PRESENCE_BURST: each message goes to the whole room, and its JSON is
#: decoded. More is dropped undecoded (a cursor moving is ~100 bytes; the next
#: message says it all).
PRESENCE_RATE = 64 << 10
PRESENCE_BURST = 512 << 10


def now() -> float:
    """The relay's clock (monotonic seconds)."""
    return time.monotonic()


async def pause_reading(
    seconds: float, wait_closed: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Read nothing from a connection for ``seconds``, or until it closes."""
    if wait_closed is None:
        await asyncio.sleep(seconds)
        return
    closed = asyncio.ensure_future(wait_closed())
    try:
        await asyncio.wait({closed}, timeout=seconds)
    finally:
        closed.cancel()


def byte_budget(config: RelayConfig) -> TokenBucket:
    """A connection's budget of bytes received: ``max_bytes_per_sec``, bursts of 2 updates."""
    return TokenBucket(config.max_bytes_per_sec, 2 * config.max_update, now())


class SyncConnection:
    """A crdtsync-protocol connection as the backend sees it: metered and limited.

    Args:
        inner: the WebSocket connection.
        address: the client's ``host:port``.
        config: the limits.
        metrics: where messages, bytes and errors are counted.
        draining: whether the relay is shutting down (a close is then 1001).
        on_authenticate: called once the handshake is accepted.
        wait_closed: waits until the connection is closed (a pause for the byte
            budget ends then).
    """

    def __init__(
        self,
        inner: WebSocketConnection,
        address: str,
        config: RelayConfig,
        metrics: RelayMetrics,
        draining: Callable[[], bool],
        *,
        on_authenticate: Callable[[], None] | None = None,
        wait_closed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._inner = inner
        self._on_authenticate = on_authenticate
        self._wait_closed = wait_closed
        self._address = address
        self._config = config
        self._metrics = metrics
        self._draining = draining
        self._authenticated = False
        # Bytes received before the handshake was accepted.
        self.unauth_bytes = 0
        self._bucket = TokenBucket(config.max_msgs_per_sec, config.max_msgs_burst, now())
        # Bytes: a faster sender is read more slowly (no message is refused for it).
        self._bytes = byte_budget(config)
        self._resume_at = 0.0
        self._frames = FrameCounter()
        # When the message being processed arrived (propagation latency).
        self.t0 = 0.0
        # Until authenticated, no message (finished or not) may exceed what is
        # left of max_unauth_bytes: websockets refuses it at the frame header.
        inner.limit_message_size(config.max_unauth_bytes)

    @property
    def authenticated(self) -> bool:
        """Whether the handshake was accepted (the message limit is lifted then)."""
        return self._authenticated

    def authenticate(self) -> None:
        """The handshake was accepted: messages up to ``max_frame`` from now on."""
        self._authenticated = True
        self._inner.limit_message_size(self._config.max_frame)
        if self._on_authenticate is not None:
            self._on_authenticate()

    # -- Connection ----------------------------------------------------------------------

    @property
    def abilities(self) -> Ability:
        """``FLOW``: the Peer reads ``buffered_amount`` and aborts slow consumers."""
        return Ability.FLOW

    @property
    def remote_address(self) -> str:
        """The client's ``host:port``."""
        return self._address

    @property
    def buffered_amount(self) -> int:
        """Bytes in the socket's write buffer."""
        return self._inner.buffered_amount

    async def send(self, data: bytes) -> None:
        """Send one frame batch as one message. Raises ConnectionClosedError once closed."""
        await self._inner.send(data)
        self._metrics.count_out("crdtsync", len(data))

    async def recv(self) -> bytes:
        """The next non-empty message, once it passed the limits.

        Raises:
            ConnectionClosedError: the connection closed, or a limit closed it.
        """
        config, metrics = self._config, self._metrics
        while True:
            pause = self._resume_at - now()
            if pause > 0:  # over its byte rate: read nothing meanwhile
                await pause_reading(pause, self._wait_closed)
            try:
                data = await self._inner.recv_message()
            except ConnectionClosedError:
                if self._inner.close_code == 1009 and not self._authenticated:
                    metrics.error("unauthenticated_data")
                raise
            t = now()
            self.t0 = t
            metrics.count_in("crdtsync", len(data))
            self._resume_at = t + self._bytes.owe(t, len(data))
            if not self._authenticated:
                self.unauth_bytes += len(data)
                left = config.max_unauth_bytes - self.unauth_bytes
                if left < 0:
                    metrics.error("unauthenticated_data")
                    await self._inner.close_with(
                        CLOSE_POLICY, "too much data before authentication"
                    )
                    raise ConnectionClosedError("too much data before authentication")
                self._inner.limit_message_size(max(left, 1))
            # Every message costs one token, an empty one too; a message carrying
            # several frames costs one per frame.
            if not self._bucket.take(t, max(1, self._frames.feed(data))):
                metrics.error("rate_limited")
                await self._inner.close_with(CLOSE_RATE_LIMITED, "message rate limit exceeded")
                raise ConnectionClosedError("message rate limit exceeded")
            if data:
                return data

    async def close(self) -> None:
        """Close (1001 while the relay drains, else 1000)."""
        if self._draining():
            await self._inner.close_with(CLOSE_GOING_AWAY, "relay shutting down")
        else:
            await self._inner.close()

    def abort(self) -> None:
        """Drop the connection now. The Peer does it only to slow consumers: counted so."""
        self._metrics.error("slow_consumer")
        log.warning("slow consumer", extra={"fields": {"remote": self._address}})
        self._inner.abort()


class ConnectionGate:
    """The asyncio side of :class:`~crdtsync.relay.admission.ConnectionBudget`.

    Told of every TCP connection as it is accepted and as it ends; closes what
    the budget refuses or evicts (an abort: nothing is owed to a connection
    that has not said who it is), and counts it.

    Args:
        budget: the budget of pending connections.
        metrics: where refusals and evictions are counted.
    """

    def __init__(self, budget: ConnectionBudget, metrics: RelayMetrics) -> None:
        self.budget = budget
        self._metrics = metrics

    def accepted(self, conn: ServerConnection, transport: asyncio.BaseTransport) -> bool:
        """A TCP connection was accepted: admit it (True), or refuse it, or evict another for it.

        A refused connection is aborted here, before websockets spends anything on
        it (a flood of them costs the accept and this, no handler task).
        """
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        decision = self.budget.admit(conn, host, now=now())
        if isinstance(decision.evict, ServerConnection):
            self._metrics.error("unauthenticated_evicted")
            decision.evict.transport.abort()
        if not decision.admit:
            rate = decision.why == "rate"
            self._metrics.error("connection_rate" if rate else "too_many_unauthenticated")
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            else:  # (a TCP server's transports are asyncio.Transport)
                transport.close()
        return decision.admit

    def exempted(self, conn: ServerConnection) -> bool:
        """Whether ``conn`` came from a cluster node's host and is not charged to an address yet."""
        return self.budget.exempted(conn)

    def forwarded(self, conn: ServerConnection) -> None:
        """``conn`` carries a valid hop header: its client was budgeted by the proxying node."""
        self.budget.forwarded(conn)

    def charge(self, conn: ServerConnection, address: str) -> bool:
        """Charge an exempted connection to its own ``address`` (no valid hop header).

        Returns False, counted like a refusal at accept, when that address is
        over its budget: the caller closes the connection.
        """
        decision = self.budget.charge(conn, address, now=now())
        if not decision.admit:
            rate = decision.why == "rate"
            self._metrics.error("connection_rate" if rate else "too_many_unauthenticated")
        return decision.admit

    def authenticated(self, conn: ServerConnection) -> None:
        """``conn`` authenticated: it counts against ``max_connections`` from now on."""
        self.budget.authenticated(conn)

    def lost(self, conn: ServerConnection) -> None:
        """``conn`` ended."""
        self.budget.closed(conn)


class ReadPausingConnection(ServerConnection):
    """A server connection that stops reading while its write buffer is over the limit.

    websockets answers every PING with a PONG written straight to the socket,
    whatever the buffer holds: a client that pings and never reads (before any
    authentication, on either protocol) would grow the relay's memory without
    bound, and no message limit sees control frames. Not reading from it until
    it reads what we wrote pushes back on it through TCP instead.

    Use a subclass with ``write_limit`` set (:meth:`with_limit`).
    """

    #: Write-buffer bytes above which reading pauses (the relay's max_send_queue).
    write_limit = 8 << 20
    #: Told of every connection accepted and ended (None: nobody).
    gate: ConnectionGate | None = None

    @classmethod
    def with_limit(
        cls, limit: int, gate: ConnectionGate | None = None
    ) -> type[ReadPausingConnection]:
        """A subclass pausing reads above ``limit`` bytes (for ``serve(create_connection=)``).

        ``gate`` hears of each connection from its TCP accept on.
        """
        return type("ReadPausingConnection", (cls,), {"write_limit": limit, "gate": gate})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set up, with our own resume callback for the incoming message queue.

        A connection the gate refuses is aborted before websockets sets it up.
        """
        self._refused = self.gate is not None and not self.gate.accepted(self, transport)
        if self._refused:
            return
        super().connection_made(transport)
        self._paused_for_writes = False
        # websockets resumes reading when its message queue drains: not while we
        # hold reading for the write buffer. The queue takes pause/resume
        # callbacks; it gets ours (same limits as websockets gave it).
        self.recv_messages = Assembler(
            self.max_queue_high,
            self.max_queue_low,
            pause=self.transport.pause_reading,
            resume=self._resume_for_queue,
        )

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection ended: tell the gate."""
        if self._refused:
            return  # never set up, never counted
        super().connection_lost(exc)
        if self.gate is not None:
            self.gate.lost(self)

    def _resume_for_queue(self) -> None:
        if not self._paused_for_writes:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        """Read, and stop reading once the write buffer is over the limit."""
        super().data_received(data)
        transport = self.transport
        if not self._paused_for_writes and transport.get_write_buffer_size() > self.write_limit:
            self._paused_for_writes = True
            transport.pause_reading()

    def resume_writing(self) -> None:
        """The buffer drained below its low mark: read again (unless the queue is full)."""
        super().resume_writing()
        if self._paused_for_writes:
            self._paused_for_writes = False
            if not self.recv_messages.paused:
                self.transport.resume_reading()
