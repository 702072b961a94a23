"""Lab host processes (``lan_node.py``) and waiting on their output; shared by tests and scripts."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        time.sleep(0.05)  # deliberate: polling other processes' output, bounded by WAIT


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
        if self.proc.poll() is None or self.proc.stderr is None or self.proc.stderr.closed:
            return ""
        return self.proc.stderr.read()[-3000:]


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
                err = n.proc.stderr.read() if n.proc.stderr else ""
                raise AssertionError(f"{n.name} exited {n.proc.returncode}: {err[-3000:]}")
        if time.monotonic() > deadline:
            report = []
            for n in nodes:
                n.drain()
                report.append(f"{n.name}: {n.lines[-40:]}")
            raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(report))
        time.sleep(0.05)  # deliberate: polling other processes' output, bounded by timeout
    return time.monotonic() - start
