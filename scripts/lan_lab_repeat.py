"""Repeat the LAN lab: N hosts in namespaces, random start jitter, until all linked.

Usage (root): python scripts/lan_lab_repeat.py [--runs 20] [--hosts 5] [--jitter 1.0]

Each run builds a fresh lab (one bridge, ``--hosts`` namespaces), starts a
``lan_node.py`` in each after a random delay of up to ``--jitter`` seconds, and
waits until every host discovered every other and linked with it both ways
(hello and ack over an encrypted link). Prints, per run, the seconds from the
first process start to that point, then the median and the worst. Exits 1 at
the first run that does not get there within 60 s (with every host's output).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.lab_nodes import Node, wait_for
from helpers.netns import Lab, unavailable

from crdtsync.transports.lan import GroupKey


def one_run(hosts: int, jitter: float) -> float:
    with tempfile.TemporaryDirectory() as tmp, Lab(hosts) as lab:
        key = Path(tmp) / "team.key"
        GroupKey.generate().save(key)
        t0 = time.monotonic()
        nodes = [Node(lab, i, key, Path(tmp), "--jitter", str(jitter)) for i in range(hosts)]
        try:
            wait_for(lambda: all(n.values("ready") for n in nodes), "every host ready", nodes)
            fps = {n.fingerprint for n in nodes}

            def linked() -> bool:
                return all(
                    n.values(what) >= fps - {n.fingerprint}
                    for n in nodes
                    for what in ("linked", "heard")
                )

            wait_for(linked, "every host linked with every other", nodes)
            return time.monotonic() - t0
        finally:
            for n in nodes:
                n.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--jitter", type=float, default=1.0)
    args = parser.parse_args()
    why = unavailable()
    if why:
        print(f"cannot run the lab: {why}", file=sys.stderr)
        return 2
    times = []
    for run in range(args.runs):
        try:
            times.append(one_run(args.hosts, args.jitter))
        except AssertionError as exc:
            print(f"run {run + 1} failed: {exc}", file=sys.stderr)
            return 1
        print(f"run {run + 1}: all {args.hosts} hosts linked after {times[-1]:.2f} s", flush=True)
    print(f"{args.runs} runs: median {statistics.median(times):.2f} s, worst {max(times):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
