"""LAN peers in separate processes on 127.0.0.1: they find each other, converge, survive restarts.

Each process is ``tests/helpers/lan_peer.py``: a real Peer that calls
``start_lan`` with zeroconf bound to 127.0.0.1 only (never the machine's real
interface). The namespace lab (``tests/transports/lan/test_lan_lab.py``) runs
the same program on real interfaces between namespaces.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.lab_nodes import PeerNode, wait_peers

from crdtsync.transports.lan import GroupKey

LOOPBACK = ("--interface", "127.0.0.1")


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "team.key"
    GroupKey.generate().save(path)
    return path


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[PeerNode]]:
    nodes: list[PeerNode] = []
    yield nodes
    for node in nodes:
        node.stop()


def _converged(nodes: list[PeerNode], count: int) -> bool:
    states = [n.state for n in nodes]
    return all(s["count"] == count for s in states) and len({s["digest"] for s in states}) == 1


@pytest.mark.parametrize("members", [2, 3])
def test_peers_in_separate_processes_discover_each_other_and_converge(
    members: int, key: Path, tmp_path: Path, started: list[PeerNode]
) -> None:
    for i in range(members):
        started.append(PeerNode(f"p{i}", key, tmp_path / f"p{i}.db", *LOOPBACK))
    nodes = started
    wait_peers(lambda: all(n.ready for n in nodes), "every peer ready", nodes)
    fps = {n.fingerprint for n in nodes}
    for i, node in enumerate(nodes):
        node.send(append=10, tag=f"p{i}")
    wait_peers(lambda: all(n.links == fps - {n.fingerprint} for n in nodes), "a full mesh", nodes)
    wait_peers(lambda: _converged(nodes, 10 * members), "every document the same", nodes)
    for node in nodes:
        linked = {s["device"] for s in node.statuses("linked")}
        assert linked == fps - {node.fingerprint}, node.lines
        assert not node.statuses("refused"), node.statuses("refused")
    for node in nodes:
        node.stop()
        assert node.proc.returncode == 0


def test_a_restarted_peer_replaces_its_old_link_at_once(
    key: Path, tmp_path: Path, started: list[PeerNode]
) -> None:
    # B's first process freezes (SIGSTOP): its TCP links stay up but it answers
    # nothing, as after a crash of the machine. B restarts (a new process, the same
    # device identity): A replaces the old link when the new one arrives, instead
    # of waiting for the old session's idle timeout (45 s).
    identity = str(tmp_path / "b.identity")
    a = PeerNode("a", key, tmp_path / "a.db", *LOOPBACK)
    b1 = PeerNode("b1", key, tmp_path / "b1.db", *LOOPBACK, "--identity", identity)
    started += [a, b1]
    wait_peers(lambda: a.ready and b1.ready, "ready", started)
    wait_peers(lambda: a.links == {b1.fingerprint}, "A linked with B", started)
    b1.send(append=5, tag="b1")
    wait_peers(lambda: _converged([a, b1], 5), "synced", started)
    b1.proc.send_signal(signal.SIGSTOP)
    try:
        a.send(append=5, tag="a")  # goes into the frozen link
        b2 = PeerNode("b2", key, tmp_path / "b2.db", *LOOPBACK, "--identity", identity)
        started.append(b2)
        wait_peers(lambda: b2.ready, "B restarted", [a, b2])
        assert b2.fingerprint == b1.fingerprint
        waited = wait_peers(
            lambda: bool(a.statuses("replaced")), "A replaces the old link", [a, b2], timeout=30
        )
        (replaced,) = a.statuses("replaced")[:1]
        assert replaced["device"] == b2.fingerprint
        since_start = replaced["t"] - b2.started
        print(f"replaced {since_start:.2f} s after B's new process started ({waited:.2f} s waited)")
        # Well before the old session's idle timeout (45 s): the new link replaced it.
        assert since_start < 30
        wait_peers(lambda: _converged([a, b2], 10), "A and the new B converged", [a, b2])
    finally:
        b1.kill()
        started.remove(b1)


def test_a_killed_peer_is_relinked_when_it_restarts(
    key: Path, tmp_path: Path, started: list[PeerNode]
) -> None:
    identity = str(tmp_path / "b.identity")
    a = PeerNode("a", key, tmp_path / "a.db", *LOOPBACK)
    b1 = PeerNode("b1", key, tmp_path / "b.db", *LOOPBACK, "--identity", identity)
    started += [a, b1]
    wait_peers(lambda: a.links == {b1.fingerprint} if b1.ready else False, "linked", started)
    b1.kill()
    started.remove(b1)
    wait_peers(lambda: a.links == set(), "A saw the link end", [a])
    a.send(append=3, tag="a")
    start = time.time()
    b2 = PeerNode("b2", key, tmp_path / "b.db", *LOOPBACK, "--identity", identity)
    started.append(b2)
    wait_peers(lambda: a.links == {b2.fingerprint} if b2.ready else False, "relinked", [a, b2])
    linked = [s for s in a.statuses("linked") if s["t"] > start]
    print(f"relinked {linked[0]['t'] - start:.2f} s after the new process started")
    wait_peers(lambda: _converged([a, b2], 3), "B caught up", [a, b2])
