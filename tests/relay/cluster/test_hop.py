"""The signed hop header: what verifies and what does not (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.relay.cluster.hop import HOP_WINDOW, HopSigner, hop_key

SIGNER = HopSigner(hop_key(b"cluster-test-secret-0123456789abcdef"))
NOW = 1_800_000_000.0


def test_a_signed_hop_verifies_for_its_room_client_and_window_only() -> None:
    value = SIGNER.sign("notes", "10.0.0.7:5123", now=NOW)
    assert SIGNER.verify(value, "notes", "10.0.0.7:5123", now=NOW)
    assert SIGNER.verify(value, "notes", "10.0.0.7:5123", now=NOW + HOP_WINDOW)
    assert SIGNER.verify(value, "notes", "10.0.0.7:5123", now=NOW - HOP_WINDOW)
    assert not SIGNER.verify(value, "notes", "10.0.0.7:5123", now=NOW + HOP_WINDOW + 1)
    assert not SIGNER.verify(value, "notes", "10.0.0.8:5123", now=NOW)
    assert not SIGNER.verify(value, "notes2", "10.0.0.7:5123", now=NOW)
    assert not SIGNER.verify(value, "notes", None, now=NOW)
    other = HopSigner(hop_key(b"another cluster's secret, 32 byte"))
    assert not other.verify(value, "notes", "10.0.0.7:5123", now=NOW)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "1",
        "v1",
        "v1 x y",
        f"v1 {int(NOW)}",
        f"v2 {int(NOW)} " + "0" * 64,
        f"v1 {int(NOW)} " + "0" * 64,
        f"v1  {int(NOW)} " + "0" * 64,
        "v1 ²³ " + "0" * 64,  # digits to str.isdigit, not to int()
        "v1 " + "9" * 40 + " " + "0" * 64,
        "v1 -5 " + "0" * 64,
        "x" * 10_000,
    ],
)
def test_malformed_or_forged_hops_never_verify(value: str | None) -> None:
    assert not SIGNER.verify(value, "notes", "10.0.0.7:5123", now=NOW)


@given(
    room=st.text(max_size=40),
    client=st.text(max_size=40),
    flip=st.integers(min_value=0, max_value=200),
)
def test_any_change_of_a_signed_hop_fails(room: str, client: str, flip: int) -> None:
    value = SIGNER.sign(room, client, now=NOW)
    assert SIGNER.verify(value, room, client, now=NOW)
    i = flip % len(value)
    changed = value[:i] + ("1" if value[i] != "1" else "2") + value[i + 1 :]
    assert not SIGNER.verify(changed, room, client, now=NOW)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        HopSigner(b"short")
