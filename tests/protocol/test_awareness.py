"""Presence (y-protocols awareness) bookkeeping: bounded, and timers without scans.

Regressions for the review of 2026-12-05 (bug C): metadata of departed clients
was never freed, nothing bounded the states one connection brings, and every
presence message scanned every state ever seen.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.peer.peer import MAX_PRESENCE_PER_CONNECTION, presence_fits
from crdtsync.protocol import awareness as aw_mod
from crdtsync.protocol.awareness import Awareness

T = 30.0


def test_departed_clients_are_forgotten_after_the_timeout() -> None:
    a = Awareness(1, timeout=T)
    a.apply_entries([(c, 1, {"c": c}) for c in range(100, 200)], now=0.0)
    a.apply_entries([(c, 2, None) for c in range(100, 200)], now=1.0)
    assert not a.states
    assert len(a.meta) == 100
    # A late old update within the timeout does not resurrect anyone.
    assert not a.apply_entries([(150, 1, {"c": 150})], now=2.0)
    assert a.get_timer() == 1.0 + T
    a.handle_timer(1.0 + T)
    assert a.meta == {}


def test_removal_of_an_unknown_client_keeps_nothing() -> None:
    """600,000 "gone" entries for made-up ids used to stay in meta forever."""
    a = Awareness(1, timeout=T)
    for batch in range(5):
        entries = [(10_000 * batch + i, 1, None) for i in range(10_000)]
        assert not a.apply_entries(entries, now=float(batch))
    assert a.meta == {}
    assert a.get_timer() is None


def test_states_are_capped() -> None:
    a = Awareness(1, timeout=T)
    change = a.apply_entries([(c, 1, {}) for c in range(10, 10 + aw_mod.MAX_STATES + 50)], now=0.0)
    assert len(a.states) == aw_mod.MAX_STATES == len(change.added)
    a.apply_entries([(10, 2, None)], now=1.0)
    assert a.apply_entries([(10**9, 1, {})], now=1.0).added == (10**9,)


def test_one_connection_may_bring_only_so_many_states() -> None:
    a = Awareness(1, timeout=T)
    a.apply_entries([(c, 1, {}) for c in range(1000, 1300)], now=0.0)
    own: set[int] = set()
    echoes = [(c, 1, {}) for c in range(1000, 1300)]  # others' states, echoed
    assert presence_fits(own, echoes, a)
    too_many = [(c, 1, {}) for c in range(MAX_PRESENCE_PER_CONNECTION + 1)]
    assert not presence_fits(own, too_many, a)
    assert presence_fits(own, too_many[:-1], a)


def _reference_timer(a: Awareness) -> float | None:
    """The timer by brute force (what the code did before: a scan of everything)."""
    deadlines = [
        t + a.timeout for c, (_, t) in a.meta.items() if c in a.states and c != a.client_id
    ]
    deadlines += [
        t + a.timeout for c, (_, t) in a.meta.items() if c not in a.states and c != a.client_id
    ]
    if a.local_state is not None:
        deadlines.append(a.meta[a.client_id][1] + a.timeout / 2)
    return min(deadlines) if deadlines else None


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("apply"),
            st.integers(1, 6),  # client (1 is us)
            st.integers(0, 5),  # clock
            st.one_of(st.none(), st.integers(0, 3)),  # state
        ),
        st.tuples(st.just("local"), st.one_of(st.none(), st.integers(0, 3))),
        st.tuples(st.just("remove"), st.frozensets(st.integers(1, 6))),
        st.tuples(st.just("tick")),
        st.tuples(st.just("wait"), st.floats(0, 40)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_timers_and_states_match_a_scan_of_everything(program: list[tuple[Any, ...]]) -> None:
    a = Awareness(1, timeout=T)
    now = 0.0
    for op in program:
        if op[0] == "apply":
            _, client, clock, state = op
            a.apply_entries([(client, clock, None if state is None else {"s": state})], now=now)
        elif op[0] == "local":
            a.set_local_state(None if op[1] is None else {"me": op[1]}, now=now)
        elif op[0] == "remove":
            a.remove(op[1], now=now)
        elif op[0] == "tick":
            timer = a.get_timer()
            if timer is not None:
                now = max(now, timer)
                a.handle_timer(now)
        else:
            now += op[1]
        timer = a.get_timer()
        reference = _reference_timer(a)
        # The timer is never later than anything due (it may be earlier: a
        # forgotten tombstone's deadline is served by a tick that finds nothing).
        if reference is not None:
            assert timer is not None
            assert timer <= reference
        assert set(a.states) <= set(a.meta)
    # Silent remote states expire, then their tombstones are forgotten too.
    a.handle_timer(now + 10 * T)
    a.handle_timer(now + 20 * T)
    assert set(a.states) <= {a.client_id}
    assert set(a.meta) <= {a.client_id}


def test_many_new_clients_in_one_update_rebuild_the_heap_safely() -> None:
    """Found by the long relay fuzz run: the heap was rebuilt before a newcomer's clock was set."""
    a = Awareness(1, timeout=T)
    a.apply_entries([(c, 1, {}) for c in range(100, 400)], now=1.0)
    a.apply_entries([(c, 2, None) for c in range(100, 350)], now=2.0)  # the heap keeps them
    a.apply_entries([(c, 1, {"new": c}) for c in range(1000, 1010)], now=3.0)  # newcomers
    assert len(a.states) == 60
    assert len(a._expiry) <= 2 * len(a.states) + 64
    assert a.get_timer() == 1.0 + T
