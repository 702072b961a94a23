"""Discovery and links across real network namespaces (the lab of ``netns.py``).

Each host is a namespace with one process (``lan_node.py``) that announces
itself with zeroconf on its own interface, browses, and links to every group
member it hears of. Skipped, with the reason, where namespaces cannot be made
(not root, no ``ip``); CI runs as root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.lab_nodes import Node, wait_for
from helpers.netns import Lab, unavailable

from crdtsync.transports.lan import GroupKey

HERE = Path(__file__).parent
PROXY = str(HERE.parents[1] / "helpers" / "lan_proxy.py")

_why = unavailable()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=_why or "")]


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "team.key"
    GroupKey.generate().save(path)
    return path


@pytest.mark.parametrize("members", [2, 5])
def test_members_discover_and_link_and_another_bridge_is_not_seen(
    members: int, key: Path, tmp_path: Path
) -> None:
    # `members` hosts on bridge 0, one more on bridge 1 (same group key).
    placement = [0] * members + [1]
    with Lab(members + 1, bridges=2, placement=placement) as lab:
        nodes = [Node(lab, i, key, tmp_path) for i in range(members + 1)]
        try:
            wait_for(lambda: all(n.values("ready") for n in nodes), "every host ready", nodes)
            fps = [n.fingerprint for n in nodes]
            group, alone = nodes[:members], nodes[members]

            def linked() -> bool:
                return all(
                    n.values(what) >= set(fps[:members]) - {n.fingerprint}
                    for n in group
                    for what in ("linked", "heard")
                )

            wait_for(linked, "every member linked with every other", nodes)
            for n in group:
                others = set(fps[:members]) - {n.fingerprint}
                assert n.values("hint") >= others, "every member announced"
                assert fps[members] not in n.values("hint"), "a host on another bridge was seen"
                assert n.values("linked") >= others, "the encrypted link carried hello and ack"
                assert n.values("heard") >= others
            assert alone.values("hint") == set(), "the host on bridge 1 heard of someone"
        finally:
            for n in nodes:
                n.stop()
    for n in nodes:
        assert n.proc.returncode == 0
        assert not n.values("error"), n.values("error")


def test_another_bridge_is_reachable_by_a_manual_address(key: Path, tmp_path: Path) -> None:
    with Lab(2, bridges=2, placement=[0, 1], router=True) as lab:
        first = Node(lab, 0, key, tmp_path)
        nodes = [first]
        try:
            wait_for(lambda: bool(first.values("address")), "host 0 ready", nodes)
            second = Node(lab, 1, key, tmp_path, "--peer", first.address())
            nodes.append(second)
            wait_for(lambda: bool(second.values("linked")), "the manual link", nodes)
            assert second.values("linked") == {first.fingerprint}
            wait_for(lambda: bool(first.values("heard")), "host 0 heard host 1", nodes)
            assert first.values("hint") == set(), "multicast crossed the router"
            hints = [line for line in second.lines if "hint" in line]
            assert [h["hint"] for h in hints] == [None]  # the manual address: no fingerprint
        finally:
            for n in nodes:
                n.stop()


def test_links_across_namespaces_through_the_fault_proxy(key: Path, tmp_path: Path) -> None:
    # host 0 serves; host 2 runs the proxy (delay and a cut); host 1 connects through it.
    with Lab(3) as lab:
        server = Node(lab, 0, key, tmp_path)
        nodes = [server]
        try:
            wait_for(lambda: bool(server.values("address")), "host 0 ready", nodes)
            port = int(server.address().rsplit(":", 1)[1])
            proxies = {}
            for name, args, listen in (
                ("slow", ["--delay", "0.05"], 7000),
                ("cut", ["--cut-after", "60"], 7001),  # inside handshake message 3
            ):
                proxies[name] = lab.popen(
                    2,
                    [
                        sys.executable,
                        PROXY,
                        "--listen",
                        f"{lab.address(2)}:{listen}",
                        "--target",
                        f"{lab.address(0)}:{port}",
                        *args,
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert proxies[name].stdout is not None
                assert proxies[name].stdout.readline().startswith("proxy ")
            client = Node(
                lab,
                1,
                key,
                tmp_path,
                "--peer",
                f"lan://{server.fingerprint}@{lab.address(2)}:7000",
                "--peer",
                f"lan://{lab.address(2)}:7001",
            )
            nodes.append(client)
            wait_for(lambda: server.fingerprint in client.values("linked"), "link via proxy", nodes)
            wait_for(lambda: bool(client.values("error")), "the cut link's error", nodes)
            assert any("7001" in e for e in client.values("error"))
        finally:
            for n in nodes:
                n.stop()
