"""Repeat the LAN lab: N hosts in namespaces, random start jitter, until linked and converged.

Usage (root): python scripts/lan_lab_repeat.py [--runs 20] [--hosts 5] [--jitter 1.0]
              [--edits 20] [--links-only]

Each run builds a fresh lab (one bridge, ``--hosts`` namespaces) and starts a
real Peer in each (``tests/helpers/lan_peer.py``: ``Peer.start_lan`` on the
host's interface) after a random delay of up to ``--jitter`` seconds; each
appends ``--edits`` items to one document as soon as it runs. A run succeeds
when every host is linked with every other (exactly one connection per pair)
and every document is the same, with every host's items. Prints, per run, the
seconds from the first process start to that point, then the median and the
worst. Exits 1 at the first run that does not get there within 60 s (with every
host's output).

``--links-only`` runs wave 1's check instead (``tests/helpers/lan_node.py``:
the bare transport, discovery and an encrypted hello both ways).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.lab_nodes import Node, lab_converge, wait_for
from helpers.netns import Lab, unavailable

from crdtsync.transports.lan import GroupKey


def links_run(hosts: int, jitter: float) -> float:
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
    parser.add_argument("--edits", type=int, default=20, help="items each host appends")
    parser.add_argument("--links-only", action="store_true", help="wave 1's transport check")
    args = parser.parse_args()
    why = unavailable()
    if why:
        print(f"cannot run the lab: {why}", file=sys.stderr)
        return 2
    times = []
    what = "linked" if args.links_only else "linked and converged"
    for run in range(args.runs):
        try:
            if args.links_only:
                times.append(links_run(args.hosts, args.jitter))
            else:
                times.append(lab_converge(args.hosts, args.jitter, args.edits))
        except AssertionError as exc:
            print(f"run {run + 1} failed: {exc}", file=sys.stderr)
            return 1
        print(f"run {run + 1}: all {args.hosts} hosts {what} after {times[-1]:.2f} s", flush=True)
    print(f"{args.runs} runs: median {statistics.median(times):.2f} s, worst {max(times):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
