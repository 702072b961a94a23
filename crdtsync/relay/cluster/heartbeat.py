"""A node's own view of its lease: when to renew, and until when to believe in it (sans-I/O).

PostgreSQL decides who owns a room, on its own clock (:mod:`.leases`); this
object decides only what the node does *locally*: when to send the next
heartbeat, and when to stop serving because its lease may have run out. Time
is passed in (the event loop's monotonic clock), so tests drive it on virtual
time, and the node's wall clock is never read.

Why the local deadline is safe: the database sets ``expires_at = now() + ttl``
while it executes the heartbeat, which is after the node sent it. So measured
on any clock that runs at the right rate, the lease lasts at least until
``sent_at + ttl``, whatever the offset between the node's clock and the
database's (skew does not matter, only rate; ``drift`` allows for that). The
node believes in its lease until ``sent_at + ttl * (1 - drift)`` of the last
heartbeat that succeeded, and not a moment longer: a node that was paused (a
SIGSTOP, a long GC, a swapped-out VM) wakes up past that deadline and
:meth:`NodeLease.handle_timer` reports :class:`LeaseExpired` at once, before
it serves anything. Fencing in the database is what keeps data safe whatever
the node believes; this deadline keeps the node from *acting* on a stale
belief (answering reads, relaying presence, holding clients that should move).

Typical shell::

    core = NodeLease(ttl=10.0)
    while True:
        await sleep_until(core.get_timer())
        for ev in core.handle_timer(loop.time()):
            if isinstance(ev, RenewDue):
                sent = core.renewal_sent(loop.time())
                try:
                    await to_thread(leases.heartbeat)
                except StoreError:
                    core.renewal_failed(loop.time())
                else:
                    core.renewed(sent, loop.time())
            elif isinstance(ev, LeaseExpired):
                drop_every_room()
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LeaseExpired", "NodeLease", "RenewDue"]


@dataclass(frozen=True)
class RenewDue:
    """Send a heartbeat now."""


@dataclass(frozen=True)
class LeaseExpired:
    """The node can no longer be sure it is alive: stop serving every room it holds.

    Attributes:
        since: the local time at which the belief ran out.
    """

    since: float


class NodeLease:
    """Heartbeat timing and the local lease deadline of one node.

    Args:
        ttl: the lease time the database grants per heartbeat (seconds).
        renew_every: seconds between heartbeats (default ``ttl / 3``: two may
            fail before the lease runs out).
        retry_every: seconds between attempts after a failed heartbeat
            (default ``ttl / 10``).
        drift: the largest relative clock-rate error allowed for.
    """

    def __init__(
        self,
        ttl: float,
        *,
        renew_every: float | None = None,
        retry_every: float | None = None,
        drift: float = 0.01,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self.renew_every = renew_every if renew_every is not None else ttl / 3
        self.retry_every = retry_every if retry_every is not None else ttl / 10
        if not 0 < self.renew_every < ttl:
            raise ValueError("renew_every must be between 0 and ttl")
        self.drift = drift
        # Local time until which the lease is certainly held (None: never held).
        self.valid_until: float | None = None
        # When the next heartbeat is due (None: one is in flight).
        self._renew_at: float | None = float("-inf")
        self._in_flight: float | None = None
        self._expired_reported = True  # nothing to report before the first success

    def valid(self, now: float) -> bool:
        """Whether the node may act as the owner of its rooms at ``now``."""
        return self.valid_until is not None and now < self.valid_until

    def renewal_sent(self, now: float) -> float:
        """A heartbeat leaves now; returns the token to pass to :meth:`renewed`."""
        self._in_flight = now
        self._renew_at = None
        return now

    def renewed(self, sent_at: float, now: float) -> None:
        """The heartbeat sent at ``sent_at`` succeeded (the database answered at ``now``)."""
        if self._in_flight == sent_at:
            self._in_flight = None
        until = sent_at + self.ttl * (1.0 - self.drift)
        if self.valid_until is None or until > self.valid_until:
            self.valid_until = until
        if until > now:
            self._expired_reported = False
        self._renew_at = sent_at + self.renew_every

    def renewal_failed(self, now: float) -> None:
        """The heartbeat failed (database unreachable): retry soon; the deadline stands."""
        self._in_flight = None
        self._renew_at = now + self.retry_every

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` next has something to do (None: waiting for a reply)."""
        times = []
        if self._renew_at is not None:
            times.append(self._renew_at)
        if not self._expired_reported and self.valid_until is not None:
            times.append(self.valid_until)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[RenewDue | LeaseExpired]:
        """What to do at ``now``: expiry first (a node that slept past it must stop first)."""
        events: list[RenewDue | LeaseExpired] = []
        if not self._expired_reported and self.valid_until is not None and now >= self.valid_until:
            self._expired_reported = True
            events.append(LeaseExpired(self.valid_until))
        if self._renew_at is not None and now >= self._renew_at:
            events.append(RenewDue())
        return events
