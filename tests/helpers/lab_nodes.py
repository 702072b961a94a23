"""Lab host processes (``lan_node.py``) and waiting on their output; shared by tests and scripts."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crdtsync.transports.lan import GroupKey
from helpers.netns import Lab

NODE = str(Path(__file__).parent / "lan_node.py")
WAIT = 60.0  # seconds allowed for a whole lab to reach what a test waits for


class Node:
    """A lan_node.py process in a lab host, its JSON lines collected by a thread."""

    def __init__(self, lab: Lab, host: int, key: Path, tmp: Path, *extra: str) -> None:
        self.host = host
        self.proc = lab.popen(
            host,
            [
                sys.executable,
                NODE,
                "--key-file",
                str(key),
                "--identity",
                str(tmp / f"id{host}"),
                "--ip",
                lab.address(host),
                "--link",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._q: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(json.loads(line))

    def drain(self) -> None:
        while True:
            try:
                self.lines.append(self._q.get_nowait())
            except queue.Empty:
                return

    def values(self, key: str) -> set[str]:
        self.drain()
        return {str(line[key]) for line in self.lines if key in line}

    @property
    def fingerprint(self) -> str:
        return next(iter(self.values("ready")))

    def address(self) -> str:
        return next(iter(self.values("address")))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_for(cond: Callable[[], bool], what: str, nodes: list[Node]) -> None:
    """Poll ``cond`` (every 50 ms) until it holds; fail after WAIT s with every node's output."""
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            report = []
            for n in nodes:
                n.drain()
                report.append(f"host {n.host}: {n.lines}")
            raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(report))
        for n in nodes:
            if n.proc.poll() is not None:
                err = n.proc.stderr.read() if n.proc.stderr else ""
                raise AssertionError(f"host {n.host} exited {n.proc.returncode}: {err[-3000:]}")
        time.sleep(0.05)  # (noqa: sleep) polls other processes' output, bounded by WAIT


PEER = str(Path(__file__).parent / "lan_peer.py")


class PeerNode:
    """A ``lan_peer.py`` process (a real Peer on the LAN): JSON lines out, commands in.

    Args:
        name: what the test calls it (in failure reports).
        key: the group key file.
        store: the store file.
        extra: more arguments for ``lan_peer.py``.
        lab: the lab whose host runs it (None: this machine's namespace).
        host: the lab host.
    """

    def __init__(
        self,
        name: str,
        key: Path,
        store: Path,
        *extra: str,
        lab: Lab | None = None,
        host: int = 0,
    ) -> None:
        self.name = name
        self.host = host
        argv = [sys.executable, PEER, "--key-file", str(key), "--store", str(store), *extra]
        kwargs: dict[str, Any] = {
            "stdin": subprocess.PIPE,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "text": True,
        }
        self.started = time.time()
        self.proc = (
            lab.popen(host, argv, **kwargs) if lab is not None else subprocess.Popen(argv, **kwargs)
        )
        self.lines: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._q: queue.Queue[dict[str, Any]] = queue.Queue()
        self._readers = [  # they end at the process's EOF
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._q.put(json.loads(line))
            except ValueError:
                self.errors.append(f"(stdout, not JSON) {line}")

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line)

    def read_to_end(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout`` s each) for the readers to take an exited process's output."""
        for reader in self._readers:
            reader.join(timeout)

    def drain(self) -> None:
        while True:
            try:
                self.lines.append(self._q.get_nowait())
            except queue.Empty:
                return

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def last(self, key: str) -> Any:
        """The latest value of ``key`` in the output (None if never seen)."""
        self.drain()
        for line in reversed(self.lines):
            if key in line:
                return line[key]
        return None

    def first(self, key: str, value: Any = None) -> dict[str, Any] | None:
        """The first line with ``key`` (equal to ``value`` when given)."""
        self.drain()
        for line in self.lines:
            if key in line and (value is None or line[key] == value):
                return line
        return None

    def statuses(self, kind: str) -> list[dict[str, Any]]:
        self.drain()
        return [line for line in self.lines if line.get("status") == kind]

    @property
    def ready(self) -> bool:
        return self.last("ready") is not None

    @property
    def fingerprint(self) -> str:
        return str(self.last("ready"))

    @property
    def address(self) -> str:
        """Where it listens (its ``ready`` line)."""
        ready = self.first("ready")
        return "" if ready is None else str(ready["address"])

    @property
    def links(self) -> set[str]:
        return set(self.last("links") or ())

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.last("state") or {"count": 0, "digest": ""})

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if it does not end in 20 s; streams closed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_streams()

    def kill(self) -> None:
        """SIGKILL (a stopped process dies of it too); streams closed."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._close_streams()

    def _close_streams(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                with contextlib.suppress(BrokenPipeError):  # stdin of a process that is gone
                    stream.close()

    def stderr(self) -> str:
        """The end of what it wrote on stderr so far."""
        return "".join(self.errors)[-3000:]


def wait_peers(
    cond: Callable[[], bool], what: str, nodes: list[PeerNode], timeout: float = WAIT
) -> float:
    """Poll ``cond`` (every 50 ms) until it holds; returns the seconds waited.

    Fails after ``timeout`` seconds, or at once when a node exited, with every
    node's output.
    """
    start = time.monotonic()
    deadline = start + timeout
    while not cond():
        for n in nodes:
            if n.proc.poll() is not None:
                n.read_to_end()
                raise AssertionError(f"{n.name} exited {n.proc.returncode}: {n.stderr()}")
        if time.monotonic() > deadline:
            for n in nodes:
                with contextlib.suppress(ProcessLookupError):
                    n.proc.send_signal(signal.SIGUSR1)  # its stacks, to stderr
            # A failure report only: nothing says when a live process has written its stacks.
            time.sleep(1.0)  # (noqa: sleep) the stacks take a moment to be written
            report = []
            for n in nodes:
                n.drain()
                report.append(f"{n.name}: {n.lines[-40:]}\n{n.name} stderr: {n.stderr()}")
            raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(report))
        time.sleep(0.05)  # (noqa: sleep) polls other processes' output, bounded by timeout
    return time.monotonic() - start


# -- whole-lab scenarios (scripts/lan_lab_repeat.py, benchmarks/bench_lan.py) -----------------


def _converged(nodes: list[PeerNode], count: int) -> bool:
    states = [n.state for n in nodes]
    return all(s["count"] == count for s in states) and len({s["digest"] for s in states}) == 1


def lab_converge(hosts: int, jitter: float, edits: int) -> float:
    """Real Peers in ``hosts`` namespaces, started with jitter, each appending ``edits`` items.

    Returns:
        Seconds from the first process start until every host is linked with
        every other and every document is the same (checked afterwards: one
        connection per pair).
    """
    with tempfile.TemporaryDirectory() as folder, Lab(hosts) as lab:
        tmp = Path(folder)
        key = tmp / "team.key"
        GroupKey.generate().save(key)
        t0 = time.time()
        nodes = [
            PeerNode(
                f"h{i}",
                key,
                tmp / f"h{i}.db",
                "--interface",
                lab.address(i),
                "--jitter",
                str(jitter),
                lab=lab,
                host=i,
            )
            for i in range(hosts)
        ]
        try:
            wait_peers(lambda: all(n.ready for n in nodes), "every host ready", nodes)
            for i, node in enumerate(nodes):
                node.send(append=edits, tag=f"h{i}")
            fps = {n.fingerprint for n in nodes}

            def done() -> bool:
                linked = all(n.links == fps - {n.fingerprint} for n in nodes)
                return linked and _converged(nodes, edits * hosts)

            wait_peers(done, "every host linked with every other, every document the same", nodes)
            finished = max(float(n.last("t")) for n in nodes)
            for node in nodes:
                node.send(report=True)
            wait_peers(
                lambda: all(n.last("connections") == hosts - 1 for n in nodes),
                "one connection per pair",
                nodes,
            )
            return finished - t0
        finally:
            for n in nodes:
                n.stop()


def lab_partition_heal(edits: int, hosts: int = 5, hold: float = 0.0) -> tuple[float, float]:
    """A partition {0..2} | {3..}, ``edits`` appended on each side, then the heal.

    The partition lasts until both sides converged, and at least ``hold`` seconds.

    Returns:
        (seconds from the heal until every document is the same, seconds the
        partition lasted).
    """
    with tempfile.TemporaryDirectory() as folder, Lab(hosts, bridges=2) as lab:
        tmp = Path(folder)
        key = tmp / "team.key"
        GroupKey.generate().save(key)
        nodes = [
            PeerNode(f"h{i}", key, tmp / f"h{i}.db", "--interface", lab.address(i), lab=lab, host=i)
            for i in range(hosts)
        ]
        try:
            wait_peers(lambda: all(n.ready for n in nodes), "every host ready", nodes)
            fps = {n.fingerprint for n in nodes}
            wait_peers(
                lambda: all(n.links == fps - {n.fingerprint} for n in nodes), "a full mesh", nodes
            )
            cut = time.monotonic()
            for host in range(3, hosts):
                lab.move(host, 1)
            left, right = nodes[:3], nodes[3:]
            left[0].send(append=edits, tag="left")
            right[0].send(append=edits, tag="right")
            wait_peers(lambda: _converged(left, edits), "the left side", nodes, timeout=120)
            wait_peers(lambda: _converged(right, edits), "the right side", nodes, timeout=120)
            # The partition lasts `hold` seconds: the scenario's duration, not a wait.
            time.sleep(max(0.0, cut + hold - time.monotonic()))  # (noqa: sleep) the cut lasts
            healed = time.monotonic()
            for host in range(3, hosts):
                lab.move(host, 0)
            waited = wait_peers(
                lambda: _converged(nodes, 2 * edits), "converged after the heal", nodes, timeout=120
            )
            return waited, healed - cut
        finally:
            for n in nodes:
                n.stop()


def lab_restart_relink(hosts: int = 5) -> tuple[float, float]:
    """SIGKILL one of ``hosts`` linked Peers, restart it (same identity and store).

    Returns:
        (seconds from its ``start_lan`` call until every other peer linked with
        it again, the same from its process start).
    """
    with tempfile.TemporaryDirectory() as folder, Lab(hosts) as lab:
        tmp = Path(folder)
        key = tmp / "team.key"
        GroupKey.generate().save(key)

        def start(i: int, name: str) -> PeerNode:
            return PeerNode(
                name,
                key,
                tmp / f"h{i}.db",
                "--interface",
                lab.address(i),
                "--identity",
                str(tmp / f"h{i}.identity"),
                lab=lab,
                host=i,
            )

        nodes = [start(i, f"h{i}") for i in range(hosts)]
        try:
            wait_peers(lambda: all(n.ready for n in nodes), "every host ready", nodes)
            fps = {n.fingerprint for n in nodes}
            wait_peers(
                lambda: all(n.links == fps - {n.fingerprint} for n in nodes), "a full mesh", nodes
            )
            victim = nodes.pop()
            fp = victim.fingerprint
            victim.kill()
            wait_peers(lambda: all(fp not in n.links for n in nodes), "the link seen gone", nodes)
            again = start(hosts - 1, "restarted")
            others = list(nodes)
            nodes.append(again)
            wait_peers(lambda: all(fp in n.links for n in others), "relinked", nodes)
            linked = max(
                min(
                    s["t"]
                    for s in n.statuses("linked")
                    if s["device"] == fp and s["t"] > again.started
                )
                for n in others
            )
            starting = again.first("starting")
            assert starting is not None
            return linked - float(starting["t"]), linked - again.started
        finally:
            for n in nodes:
                n.stop()
