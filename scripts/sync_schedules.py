"""Long run of the sync fault-injection state machine (tests/helpers/sync_machine.py).

Usage: python scripts/sync_schedules.py --schedules 10000 [--steps 30] [--seed N]

Each schedule is one generated run of 3-5 peers with random edits, faults,
partitions, cuts and restarts, ending with heal + convergence checks. Runs in
batches so progress is printed; a failure is shrunk and printed by Hypothesis
(add it to tests/protocol/test_regressions.py as a fixture) and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import sync_machine
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedules", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=30, help="rules per schedule")
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args(argv)
    start = time.time()
    done = 0
    while done < args.schedules:
        n = min(args.batch, args.schedules - done)
        before = sync_machine.COMPLETED[0]
        run_state_machine_as_test(
            sync_machine.SyncMachine,
            settings=settings(
                max_examples=n,
                stateful_step_count=args.steps,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
        # Hypothesis may run a few extra examples; count what completed.
        done += max(n, sync_machine.COMPLETED[0] - before)
        print(
            f"{sync_machine.COMPLETED[0]} schedules completed, 0 failures, "
            f"{time.time() - start:.0f} s",
            flush=True,
        )
    print(f"TOTAL: {sync_machine.COMPLETED[0]} schedules, 0 failures, {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
