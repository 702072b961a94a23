"""SIGKILL crash test (scripts/crash_test.py): a smaller number of runs in CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import crash_test


def test_committed_edits_survive_sigkill(tmp_path: Path) -> None:
    runs = int(os.environ.get("CRDTSYNC_CRASH_RUNS", "30"))
    stats = crash_test.run(runs, seed=1234, store=tmp_path / "crash.db")
    assert stats["runs"] == runs
    assert stats["committed"] > 0
    assert stats["killed_mid_run"] > 0
