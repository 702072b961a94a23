"""Rate limiting without I/O: a token bucket, and a counter of crdtsync frames in a stream.

Both take the time as an argument (``now``), like the sessions, so tests drive
them with a fake clock. The relay charges one token per WebSocket message, and
on the crdtsync protocol one per frame a message carries
(:class:`FrameCounter`); :class:`~crdtsync.protocol.ysession.YSession` charges
one per y-protocols message.
"""

from __future__ import annotations

__all__ = ["FrameCounter", "TokenBucket", "presence_fits_rate"]


class TokenBucket:
    """A token bucket: ``rate`` messages per second, bursts of ``burst``.

    Example:
        >>> bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
        >>> [bucket.take(0.0) for _ in range(4)]
        [True, True, True, False]
        >>> bucket.take(0.5)   # half a second brings one token back
        True
    """

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        # Tokens added per second.
        self.rate = rate
        # The bucket's size (and its content at the start).
        self.burst = float(burst)
        # Tokens in the bucket at time ``last``.
        self.tokens = float(burst)
        self.last = now

    def take(self, now: float, n: int = 1) -> bool:
        """Take ``n`` tokens at time ``now``; False (taking none) when there are fewer."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def owe(self, now: float, n: int) -> float:
        """Take ``n`` tokens at time ``now``, into debt if need be.

        For what cannot be refused, only slowed down (bytes already received):
        the caller waits before taking more.

        Returns:
            Seconds until the bucket is out of debt (0.0 when it is not).

        Example:
            >>> bucket = TokenBucket(rate=100.0, burst=100, now=0.0)
            >>> bucket.owe(0.0, 150)   # 50 tokens of debt: half a second
            0.5
            >>> bucket.owe(1.0, 10)
            0.0
        """
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def presence_fits_rate(bucket: TokenBucket, now: float, size: int) -> bool:
    """Whether a presence message of ``size`` bytes may be taken (and take it).

    Taken whenever the bucket is not in debt, even into debt: one message of
    any size passes, and the next waits until the debt is paid.

    Example:
        >>> bucket = TokenBucket(rate=100.0, burst=100, now=0.0)
        >>> presence_fits_rate(bucket, 0.0, 150), presence_fits_rate(bucket, 0.1, 1)
        (True, False)
        >>> presence_fits_rate(bucket, 0.5, 1)
        True
    """
    if bucket.owe(now, 0) > 0:
        return False
    bucket.owe(now, size)
    return True


class FrameCounter:
    r"""Counts crdtsync frames starting in a byte stream, across message boundaries.

    The rate limit is per frame: one WebSocket message may carry any number of
    frames (the session reads a stream), so counting messages would let a
    client pack thousands of frames into one. Only the length prefixes are
    read (``varuint(len) || body || 4-byte check``, ``docs/PROTOCOL.md``); the
    session validates everything else.

    Example:
        >>> counter = FrameCounter()
        >>> counter.feed(b"\x01A1234" + b"\x02")    # one frame, and the start of another
        2
        >>> counter.feed(b"BC1234")
        0
    """

    __slots__ = ("_len", "_shift", "_skip")

    def __init__(self) -> None:
        self._skip = 0  # bytes of the current frame still to come
        self._len = 0  # length prefix being read
        self._shift = -1  # -1: between frames; else bits of the prefix read so far

    def feed(self, data: bytes) -> int:
        """Read ``data``; returns how many frames start in it."""
        frames = 0
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            if self._shift < 0:
                frames += 1
                self._shift, self._len = 0, 0
            b = data[i]
            i += 1
            self._len |= (b & 0x7F) << self._shift
            self._shift += 7
            if not b & 0x80 or self._shift > 35:
                # A prefix longer than 5 bytes is malformed: the session says so.
                self._skip, self._shift = self._len + 4, -1
        return frames
