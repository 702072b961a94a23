"""The relay's metrics: a small Prometheus registry, and the relay's series on it.

The relay exposes ``/metrics`` in the Prometheus text format (version 0.0.4).
A dependency-free registry is enough for a dozen series, and keeps the hot path
to a dict lookup and an addition. :class:`RelayMetrics` registers the series
``docs/RELAY.md`` lists and is what every relay module counts with.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

__all__ = ["Counter", "Gauge", "Histogram", "Registry", "RelayMetrics"]

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: Labels = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    return "{" + ",".join(_pair(k, v) for k, v in items) + "}"


def _pair(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'{key}="{escaped}"'


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


class _Metric(ABC):
    kind = ""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.doc = doc

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} {self.kind}"]

    @abstractmethod
    def _lines(self) -> list[str]:
        """The sample lines of this metric."""


class Counter(_Metric):
    """A monotonically increasing count, per label set."""

    kind = "counter"

    def __init__(self, name: str, doc: str) -> None:
        super().__init__(name, doc)
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the series with these labels."""
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        """The current value of one series (0 if never touched)."""
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def _lines(self) -> list[str]:
        return [f"{self.name}{_fmt_labels(k)} {_num(v)}" for k, v in sorted(self.values.items())]


class Gauge(_Metric):
    """A value read when scraped, from a callback returning ``(labels, value)`` pairs."""

    kind = "gauge"

    def __init__(
        self, name: str, doc: str, read: Callable[[], Iterable[tuple[dict[str, str], float]]]
    ) -> None:
        super().__init__(name, doc)
        self.read = read

    def _lines(self) -> list[str]:
        return [
            f"{self.name}{_fmt_labels(tuple(sorted(labels.items())))} {_num(v)}"
            for labels, v in self.read()
        ]


class Histogram(_Metric):
    """Observations counted into fixed buckets (no labels)."""

    kind = "histogram"

    def __init__(self, name: str, doc: str, buckets: Iterable[float]) -> None:
        super().__init__(name, doc)
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def _lines(self) -> list[str]:
        out = []
        running = 0
        for bound, n in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += n
            out.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {running}')
        out.append(f"{self.name}_sum {_num(self.sum)}")
        out.append(f"{self.name}_count {self.count}")
        return out


class Registry:
    """The metrics of one relay, rendered for ``/metrics``."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def counter(self, name: str, doc: str) -> Counter:
        """Register a counter."""
        c = Counter(name, doc)
        self.metrics.append(c)
        return c

    def gauge(
        self, name: str, doc: str, read: Callable[[], Iterable[tuple[dict[str, str], float]]]
    ) -> Gauge:
        """Register a gauge read by ``read()`` at scrape time."""
        g = Gauge(name, doc, read)
        self.metrics.append(g)
        return g

    def histogram(self, name: str, doc: str, buckets: Iterable[float]) -> Histogram:
        """Register a histogram."""
        h = Histogram(name, doc, buckets)
        self.metrics.append(h)
        return h

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        out: list[str] = []
        for m in self.metrics:
            out += m.header()
            out += m._lines()
        return "\n".join(out) + "\n"


#: Buckets of the propagation histogram (seconds).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class RelayMetrics:
    """The relay's series (``docs/RELAY.md``, "Metrics"), and the calls that count them.

    Args:
        connections: returns the open connections, ``(crdtsync, y-protocols)``.
        rooms: returns how many rooms are loaded.
        queues: returns the bytes waiting to be sent on each connection.
        pending: returns how many connections are not yet authenticated.
    """

    def __init__(
        self,
        connections: Callable[[], tuple[int, int]],
        rooms: Callable[[], int],
        queues: Callable[[], list[int]],
        pending: Callable[[], int] = lambda: 0,
    ) -> None:
        r = self.registry = Registry()

        def open_connections() -> list[tuple[dict[str, str], float]]:
            sync, y = connections()
            return [({"protocol": "crdtsync"}, float(sync)), ({"protocol": "y"}, float(y))]

        def queue_depths() -> list[tuple[dict[str, str], float]]:
            depths = queues()
            return [
                ({"stat": "sum"}, float(sum(depths))),
                ({"stat": "max"}, float(max(depths, default=0))),
            ]

        r.gauge("crdtsync_relay_connections", "Open connections by protocol.", open_connections)
        r.gauge(
            "crdtsync_relay_unauthenticated_connections",
            "Connections accepted and not yet authenticated (HTTP requests included).",
            lambda: [({}, float(pending()))],
        )
        #: Connections accepted, by protocol.
        self.connections_total = r.counter(
            "crdtsync_relay_connections_total", "Connections accepted, by protocol."
        )
        r.gauge("crdtsync_relay_rooms", "Rooms loaded in memory.", lambda: [({}, float(rooms()))])
        self._msgs_in = r.counter(
            "crdtsync_relay_messages_received_total", "WebSocket messages received."
        )
        self._bytes_in = r.counter("crdtsync_relay_bytes_received_total", "Bytes received.")
        self._msgs_out = r.counter("crdtsync_relay_messages_sent_total", "WebSocket messages sent.")
        self._bytes_out = r.counter("crdtsync_relay_bytes_sent_total", "Bytes sent.")
        #: Updates stored and sent on, by the protocol they came from.
        self.updates = r.counter(
            "crdtsync_relay_updates_total", "Updates stored and sent on, by origin protocol."
        )
        self._errors = r.counter("crdtsync_relay_errors_total", "Errors, by kind.")
        #: Idle rooms unloaded.
        self.unloaded = r.counter("crdtsync_relay_rooms_unloaded_total", "Idle rooms unloaded.")
        r.gauge(
            "crdtsync_relay_send_queue_bytes",
            "Bytes waiting to be sent: sum and largest over connections.",
            queue_depths,
        )
        #: From receiving an update to having stored it and queued it everywhere.
        self.latency = r.histogram(
            "crdtsync_relay_propagation_seconds",
            "From receiving an update to having stored it and queued it to every other "
            "connection in the room.",
            LATENCY_BUCKETS,
        )

    def count_in(self, protocol: str, n: int) -> None:
        """One message of ``n`` bytes received on ``protocol`` (``crdtsync``, ``y``)."""
        self._msgs_in.inc(protocol=protocol)
        self._bytes_in.inc(n, protocol=protocol)

    def count_out(self, protocol: str, n: int, messages: int = 1) -> None:
        """``messages`` messages of ``n`` bytes each sent on ``protocol``."""
        self._msgs_out.inc(messages, protocol=protocol)
        self._bytes_out.inc(n * messages, protocol=protocol)

    def error(self, kind: str) -> None:
        """Count an error of ``kind`` (``docs/RELAY.md`` lists them)."""
        self._errors.inc(kind=kind)

    def render(self) -> str:
        """The Prometheus text exposition of every series."""
        return self.registry.render()
