"""The relay's admission budgets without sockets, and its open-files limit in a real process."""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from crdtsync.errors import RateLimitError
from crdtsync.relay.admission import ConnectionBudget, RateByAddress, RoomBudget, address_key

REPO = Path(__file__).resolve().parents[2]


def test_address_keys_group_a_host() -> None:
    assert address_key("10.1.2.3:5000") == address_key("10.1.2.3:6000") == "10.1.2.3"
    assert address_key("[2001:db8::1]:5000") == address_key("2001:db8::ffff") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert address_key("unix-socket") == "unix-socket"


def test_connection_budget_counts_pending_per_address_and_evicts_the_oldest() -> None:
    budget = ConnectionBudget(max_unauth=3, max_per_address=2)
    assert budget.admit("a1", "10.0.0.1").admit
    assert budget.admit("a2", "10.0.0.1").admit
    assert not budget.admit("a3", "10.0.0.1").admit  # refused: nothing recorded
    assert budget.pending == 2
    assert budget.admit("b1", "10.0.0.2").evict is None
    decision = budget.admit("c1", "10.0.0.3")
    assert decision.admit
    assert decision.evict == "a1"  # the oldest pending connection
    assert budget.admit("a4", "10.0.0.1").admit  # a1's slot of its address is free again
    budget.authenticated("b1")
    assert (budget.pending, budget.authenticated_count) == (2, 1)
    budget.authenticated("b1")  # idempotent
    budget.closed("b1")
    budget.closed("c1")
    budget.closed("c1")
    assert (budget.pending, budget.authenticated_count) == (1, 0)


def test_connection_budget_limits_the_rate_of_new_connections_per_address() -> None:
    budget = ConnectionBudget(max_unauth=1000, max_per_address=1000, per_address_rate=2.0)
    taken = [budget.admit(i, "10.0.0.1", now=0.0).admit for i in range(25)]
    assert taken.count(True) == 20  # ten seconds' worth
    assert budget.admit("other", "10.0.0.2", now=0.0).admit
    assert not budget.admit("late", "10.0.0.1", now=0.1).admit
    assert budget.admit("later", "10.0.0.1", now=0.5).admit  # half a second: one more


def test_room_budget_refills_and_forgets_idle_addresses() -> None:
    rooms = RoomBudget(per_minute=3)
    for _ in range(3):
        rooms.create("10.0.0.1:1", now=0.0)
    with pytest.raises(RateLimitError):
        rooms.create("10.0.0.1:2", now=1.0)
    rooms.create("10.0.0.1:2", now=21.0)  # 20 s: one room back
    rooms.create("10.0.0.2:1", now=21.0)  # another address has its own
    # Many addresses: those whose bucket refilled are forgotten, the busy one is not.
    for i in range(RateByAddress.MAX_ADDRESSES + 10):
        rooms.create(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:1", now=1000.0 + i * 1e-6)
    assert len(rooms._rates) <= RateByAddress.MAX_ADDRESSES + 10


# -- RLIMIT_NOFILE in a real relay process ------------------------------------------------------


def _read_lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _relay_until_listening(hard: int, *args: str) -> tuple[list[dict[str, Any]], int]:
    """Run ``crdtsync relay`` under RLIMIT_NOFILE (256, hard).

    Returns:
        Its log records up to "listening", and its soft limit then.
    """

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDTSYNC_")}
    command = [sys.executable, "-m", "crdtsync", "relay", "--memory", "--port", "0", *args]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO,
        preexec_fn=limit,  # noqa: PLW1509  (a resource limit; the child runs nothing else first)
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    records: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while not any(r.get("event") == "listening" for r in records):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the relay exited: {records}"
            records.append(json.loads(line))
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        row = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        soft = int(row.split()[3])
        proc.send_signal(signal.SIGTERM)  # (it may not have its handler yet: no exit code)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
        reader.join(timeout=10)
    return records, soft


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc/PID/limits")
def test_the_relay_raises_its_open_files_limit_to_what_its_limits_need() -> None:
    records, soft = _relay_until_listening(8192, "--max-connections", "2000")
    assert soft == 2000 + 1024 + 256  # max_connections + max_unauth_connections + slack
    assert not any(r.get("event") == "open files limited" for r in records)


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc/PID/limits")
def test_the_relay_says_when_it_cannot_raise_its_open_files_limit() -> None:
    records, soft = _relay_until_listening(1024, "--max-connections", "20000")
    assert soft == 1024  # raised as far as the hard limit lets it
    (warning,) = [r for r in records if r.get("event") == "open files limited"]
    assert warning["level"] == "warning"
    assert warning["limit"] == 1024
    assert warning["needed"] == 20000 + 1024 + 256


def test_connections_of_cluster_nodes_skip_the_per_address_checks_until_charged() -> None:
    nodes = {"10.0.0.5"}
    budget = ConnectionBudget(
        max_unauth=100, max_per_address=2, per_address_rate=0.1, exempt=nodes.__contains__
    )
    # A node's connections: neither its pending share nor its rate applies at accept.
    for i in range(10):
        assert budget.admit(("node", i), "10.0.0.5:4000", now=0.0).admit
        assert budget.exempted(("node", i))
    # Proxied ones (a valid hop): never charged to any address.
    for i in range(5):
        budget.forwarded(("node", i))
        assert not budget.exempted(("node", i))
        budget.authenticated(("node", i))
    # The others were not proxied: charged to the node's address now, as anyone's.
    assert budget.charge(("node", 5), "10.0.0.5:4000", now=0.0).admit
    assert not budget.charge(("node", 6), "10.0.0.5:4000", now=0.0).admit  # burst of 1 spent
    assert budget.exempted(("node", 6))  # still pending: the caller closes it
    # Another address is budgeted at accept as always.
    assert budget.admit("c1", "10.0.0.9:1", now=0.0).admit
    assert budget.admit("c2", "10.0.0.9:2", now=0.0).why == "rate"
    assert budget.charge("c1", "10.0.0.9:1", now=0.0).admit  # charged at accept already
    for i in range(5, 10):
        budget.closed(("node", i))
    budget.closed("c1")
    for i in range(5):
        budget.closed(("node", i))
    assert (budget.pending, budget.authenticated_count) == (0, 0)
    # Every per-address count went back to zero: a fresh address share for the node.
    late = ConnectionBudget(max_unauth=100, max_per_address=2, exempt=nodes.__contains__)
    for i in range(3):
        late.admit(i, "10.0.0.5:1", now=0.0)
    assert late.charge(0, "10.0.0.5:1").admit
    assert late.charge(1, "10.0.0.5:1").admit
    assert late.charge(2, "10.0.0.5:1").why == "pending"


def test_a_node_hosts_uncharged_pending_connections_are_capped() -> None:
    # Silent sockets from a node's host (never a request, so never charged) take
    # at most a quarter of the pending pool; beyond, they are budgeted as anyone's.
    budget = ConnectionBudget(
        max_unauth=40, max_per_address=2, per_address_rate=None, exempt={"10.0.0.5"}.__contains__
    )
    assert budget.max_exempt_per_host == 10
    admitted = [budget.admit(i, "10.0.0.5:1", now=0.0).admit for i in range(20)]
    assert admitted.count(True) == 12  # 10 exempted, then the address's 2
    assert sum(budget.exempted(i) for i in range(20)) == 10
    budget.forwarded(0)  # one handshake finished: room for one more exempted
    budget.authenticated(0)
    assert budget.admit("next", "10.0.0.5:1", now=0.0).admit
    assert budget.exempted("next")
