"""NodeLease: when a node renews and when it stops believing in its lease (virtual time)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.relay.cluster.heartbeat import LeaseExpired, NodeLease, RenewDue


def test_renews_every_third_of_the_ttl_and_believes_until_send_time_plus_ttl() -> None:
    core = NodeLease(ttl=9.0, drift=0.0)
    assert not core.valid(0.0)
    assert core.handle_timer(0.0) == [RenewDue()]
    sent = core.renewal_sent(0.0)
    assert core.get_timer() is None  # waiting for the answer
    core.renewed(sent, now=0.5)  # the database answered half a second later
    # Believed from the *sending* time: the database's expiry is later than that.
    assert core.valid_until == 9.0
    assert core.valid(8.99)
    assert not core.valid(9.0)
    assert core.get_timer() == 3.0
    assert core.handle_timer(2.9) == []
    assert core.handle_timer(3.0) == [RenewDue()]


def test_a_node_that_slept_past_its_deadline_stops_first() -> None:
    core = NodeLease(ttl=9.0, drift=0.0)
    core.handle_timer(0.0)
    core.renewed(core.renewal_sent(0.0), 0.1)
    # SIGSTOP for a minute: the first thing the node hears on waking is the expiry.
    events = core.handle_timer(60.0)
    assert events == [LeaseExpired(9.0), RenewDue()]
    assert not core.valid(60.0)
    # A late renewal revives it (the database decides whether its rooms are still its).
    core.renewed(core.renewal_sent(60.0), 60.2)
    assert core.valid(61.0)
    assert core.handle_timer(69.0) == [LeaseExpired(69.0), RenewDue()]


def test_failed_renewals_retry_quickly_and_do_not_extend_the_deadline() -> None:
    core = NodeLease(ttl=10.0, drift=0.0)
    core.handle_timer(0.0)
    core.renewed(core.renewal_sent(0.0), 0.0)
    t = 10.0 / 3
    assert core.handle_timer(t) == [RenewDue()]
    core.renewal_sent(t)
    core.renewal_failed(t + 0.5)
    assert core.get_timer() == pytest.approx(t + 0.5 + 1.0)
    assert core.valid_until == 10.0
    assert core.handle_timer(10.0) == [LeaseExpired(10.0), RenewDue()]  # the retry is overdue too


def test_drift_shortens_the_belief() -> None:
    core = NodeLease(ttl=100.0, drift=0.01)
    core.renewed(core.renewal_sent(0.0), 0.0)
    assert core.valid_until == pytest.approx(99.0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        NodeLease(ttl=0)
    with pytest.raises(ValueError, match="renew_every"):
        NodeLease(ttl=1.0, renew_every=2.0)


@given(
    st.lists(
        st.tuples(st.floats(0.0, 20.0), st.booleans(), st.floats(0.0, 5.0)),
        min_size=1,
        max_size=40,
    )
)
def test_never_valid_past_ttl_after_the_last_successful_send(
    steps: list[tuple[float, bool, float]],
) -> None:
    """Whatever happens, the node never believes longer than the database could have granted."""
    ttl = 10.0
    core = NodeLease(ttl=ttl, drift=0.0)
    now = 0.0
    last_ok_send: float | None = None
    expired_seen = 0
    for gap, ok, latency in steps:
        now += gap
        events = core.handle_timer(now)
        expired_seen += sum(isinstance(e, LeaseExpired) for e in events)
        if any(isinstance(e, RenewDue) for e in events):
            sent = core.renewal_sent(now)
            now += latency
            if ok:
                core.renewed(sent, now)
                last_ok_send = sent if last_ok_send is None else max(last_ok_send, sent)
            else:
                core.renewal_failed(now)
        if core.valid(now):
            assert last_ok_send is not None
            assert now < last_ok_send + ttl
        timer = core.get_timer()
        assert timer is not None
