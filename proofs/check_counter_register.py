"""Exhaustive small-scope check: counters and registers converge under every delivery order.

Scope (the bound): 3 replicas. A *history* is a sequence of ``length`` events,
each either ``W(i)`` -- replica ``i`` writes (in one transaction: increments the
counter by a replica-specific amount and sets the register to a fresh value) --
or ``S(i, j)`` -- replica ``i`` sends everything it has to ``j``. Every history
over that alphabet is enumerated. For each, every permutation of the resulting
write updates is then applied to a fresh replica (so updates arrive out of
causal order, which the engine must buffer), and every replica of the history
also receives every update in reverse and forward order.

Checked for every execution:

* convergence: every permutation yields the same ``to_py()`` and version as the
  replicas of the history after a full exchange;
* counter law: the value is the sum of all increments;
* register law: ``conflicts`` is exactly the set of writes not seen by any other
  write (the maximal elements of the happened-before order), and ``value`` is
  the one among them with the greatest (HLC, writer) timestamp.

Run ``python proofs/check_counter_register.py --length 5`` for the reported
bound; ``tests/proofs/test_counter_register.py`` runs ``--length 3`` in CI.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crdtsync import Doc

REPLICAS = 3


class Clock:
    """A shared fake wall clock that stands still, so HLC counters and ties are exercised."""

    def __call__(self) -> float:
        return 1000.0


@dataclass
class Write:
    """One write: who, the value, its update, and the writes its writer had seen."""

    writer: int
    value: str
    delta: int
    update: bytes
    seen: frozenset[int]


@dataclass
class Stats:
    """Counts of what was checked."""

    histories: int = 0
    executions: int = 0
    max_writes: int = 0
    by_writes: dict[int, int] = field(default_factory=dict)


def events() -> list[tuple[str, int, int]]:
    """The event alphabet: W(i) and S(i, j)."""
    out = [("W", i, i) for i in range(REPLICAS)]
    out += [("S", i, j) for i in range(REPLICAS) for j in range(REPLICAS) if i != j]
    return out


def histories(length: int) -> Iterator[tuple[tuple[str, int, int], ...]]:
    """Every event sequence of the given length (with at most two writes per replica)."""
    for h in itertools.product(events(), repeat=length):
        counts = [sum(1 for e in h if e[0] == "W" and e[1] == i) for i in range(REPLICAS)]
        if max(counts) <= 2:
            yield h


def run_history(h: tuple[tuple[str, int, int], ...], stats: Stats) -> None:
    """Run one history and check every delivery order of its writes."""
    clock = Clock()
    docs = [Doc(peer_id=i + 1, clock=clock) for i in range(REPLICAS)]
    # Indexes of the writes each replica holds.
    holds: list[set[int]] = [set() for _ in range(REPLICAS)]
    writes: list[Write] = []
    for kind, i, j in h:
        if kind == "W":
            doc = docs[i]
            before = doc.version
            seen = frozenset(holds[i])
            n = len(writes)
            value = f"w{n}"
            delta = (i + 1) * 10**n
            with doc.transaction():
                doc.counter("c").increment(delta)
                doc.register("r").set(value)
            writes.append(Write(i, value, delta, doc.export_update(since=before), seen))
            holds[i].add(n)
        else:
            for w in sorted(holds[i] - holds[j]):
                docs[j].import_update(writes[w].update)
            holds[j] |= holds[i]
    stats.histories += 1
    stats.by_writes[len(writes)] = stats.by_writes.get(len(writes), 0) + 1
    stats.max_writes = max(stats.max_writes, len(writes))
    if not writes:
        return

    # Full exchange among the history's replicas, in two different orders.
    for d in docs:
        for w in writes:
            d.import_update(w.update)
        for w in reversed(writes):
            d.import_update(w.update)  # duplicates are no-ops
    reference = docs[0].to_py()
    version = docs[0].version
    for d in docs[1:]:
        assert d.to_py() == reference, (h, d.to_py(), reference)
        assert d.version == version

    # Laws.
    assert docs[0].counter("c").value == sum(w.delta for w in writes), h
    dominated = set().union(*(w.seen for w in writes))
    maximal = {w.value for n, w in enumerate(writes) if n not in dominated}
    conflicts = docs[0].register("r").conflicts
    assert set(conflicts) == maximal, (h, conflicts, maximal)
    assert len(conflicts) == len(maximal)
    assert docs[0].register("r").value == conflicts[0]

    # Every delivery order into a fresh replica.
    for order in itertools.permutations(range(len(writes))):
        fresh = Doc(peer_id=99, clock=clock)
        for n in order:
            fresh.import_update(writes[n].update)
        assert fresh.to_py() == reference, (h, order, fresh.to_py(), reference)
        assert fresh.version == version
        stats.executions += 1


def check(length: int) -> Stats:
    """Check every history of ``length`` events; raises AssertionError on a counterexample."""
    stats = Stats()
    for h in histories(length):
        run_history(h, stats)
    return stats


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=5, help="events per history")
    args = parser.parse_args()
    t0 = time.perf_counter()
    stats = check(args.length)
    dt = time.perf_counter() - t0
    print(
        f"replicas={REPLICAS} length={args.length}: {stats.histories} histories, "
        f"{stats.executions} delivery orders checked, up to {stats.max_writes} concurrent "
        f"writes, writes per history {dict(sorted(stats.by_writes.items()))}, {dt:.1f} s: OK"
    )


if __name__ == "__main__":
    main()
