"""Every hang, crash or divergence the sync tests found, kept as a regression test.

* Found by the sync state machine (virtual time): frames reordered without any
  fault, so sessions failed and reconnected forever. Fix: the memory transport
  drains in-flight chunks in order.
  ``test_sync_transports.py::test_equal_delivery_times_keep_order``
* Found by the state machine: the loop spun forever at one instant. Fix:
  ``Peer._on_timer`` treats the deadline as reached.
  ``test_timer_fired_early_is_not_rearmed_forever`` below.
* Found by the state machine: ``RuntimeError: no running event loop`` on an edit
  between steps. Fix: timers go to the Peer's loop.
  ``test_sync_peer.py::test_edits_outside_the_running_loop``
* Found by ``benchmarks/bench_sync.py``: in real time each keystroke waited 15 s
  for a keepalive. Fix: a channel reports unsynced when it sends; every event
  wakes waiters. ``test_sync_peer.py::test_wait_synced_wakes_on_each_ack_in_real_time``
"""

from __future__ import annotations

import asyncio

from crdtsync import Peer
from crdtsync.protocol.session import SessionOptions
from crdtsync.testing import run_virtual
from crdtsync.transports.memory import MemoryNetwork


def test_timer_fired_early_is_not_rearmed_forever() -> None:
    """asyncio may run a timer up to its clock resolution early."""

    async def main() -> None:
        net = MemoryNetwork()
        opts = SessionOptions(ping_interval=1.0, idle_timeout=10.0)
        async with (
            Peer(transport=net.transport("a"), options=opts) as a,
            Peer(transport=net.transport("b"), options=opts) as b,
        ):
            await b.listen("mem://b")
            await a.open("d")
            await a.connect("mem://b")
            (link,) = a._links
            due = link.session.get_timer()
            assert due is not None
            sent = link.session._writer.index
            # Fire the timer as if the loop's clock were a hair before the deadline.
            loop = asyncio.get_running_loop()
            assert loop.time() < due
            a._on_timer(link, due)
            assert link.session._writer.index == sent + 1, "the keepalive was sent"
            assert link.session.get_timer() > due, "the timer moved on"

    run_virtual(main())
