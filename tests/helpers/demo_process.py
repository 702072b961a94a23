"""``crdtsync demo`` as a subprocess, for the apps tests: started, read line by line, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

WAIT = 30.0
_LINK = re.compile(r"^\s+(\w+): (http://\S+)$")
_EDIT = re.compile(r"^\s+(crdtsync edit .*)$")
_RELAY = re.compile(r"relay on (ws://\S+),")


@dataclass
class Demo:
    """A running ``crdtsync demo`` and what it printed."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    edit: str = ""
    relay: str = ""

    async def read_line(self, timeout: float = WAIT) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise EOFError("crdtsync demo closed its output")
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def wait_for(self, pattern: str, timeout: float = WAIT) -> str:
        """Read lines until one contains ``pattern``; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = await self.read_line(max(0.1, deadline - loop.time()))
            if pattern in line:
                return line

    async def ready(self) -> None:
        """Read the banner: relay URL, links, editor command."""
        while not (self.links.get("bob") and self.edit):
            line = await self.read_line()
            if m := _RELAY.search(line):
                self.relay = m.group(1)
            elif m := _LINK.match(line):
                self.links[m.group(1)] = m.group(2)
            elif m := _EDIT.match(line):
                self.edit = m.group(1)

    def token(self, name: str) -> str:
        fragment = parse_qs(urlsplit(self.links[name]).fragment)
        return fragment["token"][0]

    async def stop(self, sig: int = signal.SIGINT, timeout: float = WAIT) -> int:
        """Send ``sig``; wait for the stop line and the exit status."""
        self.proc.send_signal(sig)
        await self.wait_for("crdtsync demo: stopped", timeout)
        return await asyncio.wait_for(self.proc.wait(), timeout)


@contextlib.asynccontextmanager
async def demo_process(data: Path, *args: str) -> AsyncIterator[Demo]:
    """``python -m crdtsync demo --port 0 --data DATA ARGS``, killed at the end if still running."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crdtsync",
        "demo",
        "--port",
        "0",
        "--data",
        str(data),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    demo = Demo(proc)
    try:
        yield demo
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
