"""Lab host processes (``lan_node.py``) and waiting on their output; shared by tests and scripts."""

from __future__ import annotations

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
