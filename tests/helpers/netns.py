"""A network namespace lab for the LAN tests: hosts on bridges, built and torn down per test.

Nothing here touches the machine's own network namespace or interfaces: the
bridges live in a "switch" namespace of their own, each host is a namespace
with one veth interface (``eth0``) whose other end is plugged into a bridge in
the switch namespace. Multicast (mDNS) therefore reaches exactly the hosts on
the same bridge, and no packet can leave to the real network::

    with Lab(hosts=5, bridges=2, placement=[0, 0, 0, 0, 1]) as lab:
        proc = lab.popen(2, [sys.executable, "node.py"])     # runs inside host 2
        lab.link_down(3)                                      # partition host 3
        lab.link_up(3)
        lab.address(1)                                        # '10.77.0.2'

Names are unique per lab (``cl<pid>x<n>...``) and everything is deleted on
exit, even when the test fails; namespaces left by a killed test run (whose
pid no longer exists) are swept when the next lab starts. :func:`unavailable`
says why a lab cannot be built here (not root, no ``ip``, no namespaces), for
``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

_PREFIX = "cl"
_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and out.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


class LabError(RuntimeError):
    """Building or changing the lab failed."""


def unavailable() -> str | None:
    """Why no lab can be built on this machine, or None when one can."""
    if os.geteuid() != 0:
        return "the namespace lab needs root (CI runs as root)"
    if shutil.which("ip") is None:
        return "the namespace lab needs `ip` (Debian package iproute2)"
    name = f"{_PREFIX}{os.getpid()}probe"
    out = _ip("netns", "add", name, check=False)
    if out.returncode != 0:
        return f"cannot create network namespaces here: {out.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def _sweep_stale() -> None:
    """Delete namespaces left by lab runs whose process is gone."""
    out = _ip("netns", "list", check=False)
    for line in out.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{_PREFIX}(\d+)x\w*", name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _ip("netns", "del", name, check=False)
        except PermissionError:
            pass


class Lab:
    """Hosts in network namespaces, on one or more bridges.

    Args:
        hosts: how many host namespaces.
        bridges: how many bridges (separate layer-2 segments, separate subnets:
            bridge ``b`` is ``10.77.b.0/24``).
        placement: the bridge of each host (default: all on bridge 0).
        router: add a router namespace (``10.77.b.1`` on every bridge, forwarding
            on) and a default route through it on every host: unicast crosses
            bridges, multicast (mDNS) does not.
    """

    def __init__(
        self,
        hosts: int,
        *,
        bridges: int = 1,
        placement: Sequence[int] | None = None,
        router: bool = False,
    ):
        if placement is None:
            placement = [0] * hosts
        if len(placement) != hosts or any(not 0 <= b < bridges for b in placement):
            raise ValueError("placement names a bridge for each host")
        self.tag = f"{_PREFIX}{os.getpid()}x{next(_counter)}"
        self.switch = f"{self.tag}sw"
        self.hosts = [f"{self.tag}h{i}" for i in range(hosts)]
        self.placement = list(placement)
        self.bridges = bridges
        self.router = f"{self.tag}rt" if router else None
        self._made: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []

    # -- building -----------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def build(self) -> None:
        """Create the namespaces, the bridges and one veth link per host."""
        _sweep_stale()
        for ns in [self.switch, *self.hosts, *([self.router] if self.router else [])]:
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for b in range(self.bridges):
            _ip("-n", self.switch, "link", "add", f"br{b}", "type", "bridge")
            # No snooping: every host on a bridge hears every multicast packet.
            _ip("-n", self.switch, "link", "set", f"br{b}", "type", "bridge", "mcast_snooping", "0")
            _ip("-n", self.switch, "link", "set", f"br{b}", "up")
        for i, ns in enumerate(self.hosts):
            port = f"p{i}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)  # fmt: skip
            _ip("-n", self.switch, "link", "set", port, "master", f"br{self.placement[i]}")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            # mDNS goes to 224.0.0.251 out of eth0.
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            if self.router:
                _ip("-n", ns, "route", "add", "default", "via", f"10.77.{self.placement[i]}.1")
        if self.router:
            for b in range(self.bridges):
                port = f"r{b}"
                _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name",
                    f"eth{b}", "netns", self.router)  # fmt: skip
                _ip("-n", self.switch, "link", "set", port, "master", f"br{b}")
                _ip("-n", self.switch, "link", "set", port, "up")
                _ip("-n", self.router, "addr", "add", f"10.77.{b}.1/24", "dev", f"eth{b}")
                _ip("-n", self.router, "link", "set", f"eth{b}", "up")
            # /proc/sys/net is the namespace's own (no procps needed).
            forward = "echo 1 > /proc/sys/net/ipv4/ip_forward"
            subprocess.run(
                ["ip", "netns", "exec", self.router, "sh", "-c", forward], check=True, timeout=30
            )

    def destroy(self) -> None:
        """Stop the processes started here and delete every namespace (idempotent)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)  # killed: it ends, unless stuck in the kernel
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made.clear()

    # -- using ---------------------------------------------------------------------

    def address(self, host: int) -> str:
        """The IPv4 address of a host's ``eth0``."""
        return f"10.77.{self.placement[host]}.{host + 2}"

    def popen(self, host: int, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside a host's namespace (killed when the lab is destroyed)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.hosts[host], *argv], **kwargs)
        self._procs.append(proc)
        return proc

    def run(
        self, host: int, argv: Sequence[str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside a host's namespace to completion."""
        return subprocess.run(
            ["ip", "netns", "exec", self.hosts[host], *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def link_down(self, host: int) -> None:
        """Unplug a host from its bridge (a partition; its own interface stays up)."""
        _ip("-n", self.switch, "link", "set", f"p{host}", "down")

    def link_up(self, host: int) -> None:
        """Plug a host back in."""
        _ip("-n", self.switch, "link", "set", f"p{host}", "up")

    def move(self, host: int, bridge: int) -> None:
        """Plug a host into another bridge, keeping its address (a partition that
        leaves each side connected within itself, or its heal)."""
        _ip("-n", self.switch, "link", "set", f"p{host}", "master", f"br{bridge}")

    def namespaces(self) -> list[str]:
        """The namespaces this lab made (switch first)."""
        return list(self._made)
