"""Hypothesis stateful test: peers converge under faults and partitions (see sync_machine.py).

CI runs a modest number of schedules; ``scripts/sync_schedules.py --schedules 10000``
runs the long one.
"""

from __future__ import annotations

import os

from helpers.sync_machine import SyncMachine
from hypothesis import HealthCheck, settings

SyncMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("CRDTSYNC_SYNC_SCHEDULES", "60")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestSyncSchedules = SyncMachine.TestCase
