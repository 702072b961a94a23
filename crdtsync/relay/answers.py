"""Whole answers to y-protocols clients: cached per room, budgeted in bytes per address.

A sync step 1 asks the relay for everything a client lacks. From nothing (a
new tab, or a reader asking again and again) that is the whole room: a
4 MB room used to cost a 4 MB export on the event loop per question.
:class:`Answers` keeps, per room, the one answer every client that knows
nothing of the room gets (the room's full state), made once per change of the
room and dropped on the next (the relay's watcher hears every transaction, a
deletion included, and every reload). It is at most the room's own state, so
a room's cache is counted in what the room costs in memory (``--max-loaded-bytes``).

Answers cost bytes to send whether or not they were cached, so each client
address (an IPv6 /64) has a byte budget of answers (``max_answer_bytes_per_sec``
after a burst of :data:`ANSWER_BURST_SECONDS` of it): an answer is always sent whole
(a room larger than the burst is joinable), and runs the address into debt;
while the address is in debt, its connections' next questions wait (their
connection is not read) until the debt is paid. Other addresses never wait.
"""

from __future__ import annotations

from crdtsync.format.version import Version
from crdtsync.protocol.limits import TokenBucket
from crdtsync.relay.admission import address_key
from crdtsync.relay.backend import RoomGuest

__all__ = ["ANSWER_BURST_SECONDS", "Answers"]

#: The burst of an address's answer bytes, in seconds of its rate: a newcomer
#: gets this much at once (a larger room is sent whole, and the address then
#: waits for the debt to be paid).
ANSWER_BURST_SECONDS = 4


class Answers:
    """The full-state answer of each room, and every address's budget of answer bytes.

    Args:
        rate: answer bytes per second per address.
        burst: the bucket size (default: :data:`ANSWER_BURST_SECONDS` of ``rate``).

    Example:
        >>> answers = Answers(rate=100.0, burst=100)
        >>> answers.spend("10.0.0.1:5", 150, now=0.0)   # sent whole, 50 bytes of debt
        >>> answers.wait("10.0.0.1:6", now=0.0)          # the same address waits
        0.5
        >>> answers.wait("10.0.0.2:5", now=0.0)          # another does not
        0.0
    """

    #: Addresses remembered before the ones with a full bucket are forgotten.
    MAX_ADDRESSES = 10_000

    def __init__(self, rate: float, burst: int | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else int(ANSWER_BURST_SECONDS * rate)
        # Room name -> the update answering a sync step 1 that knows nothing of
        # the room, as of the room's current state.
        self._full: dict[str, bytes] = {}
        self._budgets: dict[str, TokenBucket] = {}
        #: How many answers were made (exported) and how many came from the cache.
        self.made = 0
        self.cached = 0

    # -- the cache -------------------------------------------------------------------------

    def catch_up(self, room: str, guest: RoomGuest, since: Version) -> bytes:
        """What a client at ``since`` lacks of ``room``: from the cache when it knows nothing.

        Raises:
            DocNotOpenError: the room was unloaded.
        """
        if not _knows_any(since, guest.version):
            full = self._full.get(room)
            if full is not None:
                self.cached += 1
                return full
            # Yrs diffs against the clocks of the room's own writers only: a
            # version naming nothing the room holds asks for all of it.
            full = self._full[room] = guest.catch_up(Version())
            self.made += 1
            return full
        self.made += 1
        return guest.catch_up(since)

    def changed(self, room: str) -> None:
        """``room`` changed (a transaction, a reload, an unload): its answer is stale."""
        self._full.pop(room, None)

    def cached_bytes(self, room: str) -> int:
        """Bytes the cache holds for ``room``."""
        full = self._full.get(room)
        return len(full) if full is not None else 0

    # -- the byte budget per address -------------------------------------------------------

    def wait(self, address: str, *, now: float) -> float:
        """Seconds ``address`` must wait before it is answered again (0.0: none)."""
        bucket = self._budgets.get(address_key(address))
        return bucket.owe(now, 0) if bucket is not None else 0.0

    def spend(self, address: str, size: int, *, now: float) -> None:
        """``address`` is sent an answer of ``size`` bytes (into debt if need be)."""
        key = address_key(address)
        bucket = self._budgets.get(key)
        if bucket is None:
            if len(self._budgets) >= self.MAX_ADDRESSES:
                self._forget_idle(now)
            bucket = self._budgets[key] = TokenBucket(self.rate, self.burst, now)
        bucket.owe(now, size)

    def _forget_idle(self, now: float) -> None:
        """Forget addresses whose bucket has refilled (they are as good as new)."""
        full = [
            key for key, b in self._budgets.items() if b.tokens + (now - b.last) * b.rate >= b.burst
        ]
        for key in full:
            del self._budgets[key]


def _knows_any(since: Version, current: Version) -> bool:
    """Whether ``since`` holds any change of the room at ``current`` (else: it asks for all)."""
    return any(clock > 0 and client in current for client, clock in since.items())
