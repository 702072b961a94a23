"""proofs/check_sync.py at a bound small enough for CI (the script runs bigger ones)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "proofs"))

import check_sync

from crdtsync.protocol import session as protocol


def test_two_sessions_one_loss_exhaustive() -> None:
    stats = check_sync.check(peers=2, edits=1, losses=1, cuts=0)
    assert stats.finals >= 10
    assert stats.states >= 1000


def test_three_peers_forwarding_no_loss_exhaustive() -> None:
    stats = check_sync.check(peers=3, edits=1, losses=0, cuts=0, reconnects=1)
    assert stats.finals > 0


def test_the_check_is_not_vacuous(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session that counts an update acknowledged before the peer stored it fails S2."""
    real = protocol.Session._send_update

    def eager(self: protocol.Session, ch: protocol._Channel, update: bytes) -> None:
        real(self, ch, update)
        ch.acked = ch.send_seq  # "acked" without waiting for the peer

    monkeypatch.setattr(protocol.Session, "_send_update", eager)
    with pytest.raises(AssertionError, match="S2"):
        check_sync.check(peers=2, edits=1, losses=0, cuts=0)


def test_a_shell_that_does_not_forward_fails_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        check_sync.World,
        "_on_update",
        lambda self, peer, update, origin: (
            [
                s.send_update(check_sync.NAME, update)
                for s in self.sessions_of(peer)
                if origin is None
            ]
        ),
    )
    with pytest.raises(AssertionError, match=r"S2|L1"):
        check_sync.check(peers=3, edits=1, losses=0, cuts=0, reconnects=1)
