"""Relay cluster nodes as real child processes (``crdtsync relay --store postgresql://...``).

Used by ``tests/relay/cluster/test_nodes.py``, ``scripts/cluster_kill.py`` and
``benchmarks/bench_cluster.py``. Each node listens on its own free port of
127.0.0.1 with ``--node-url`` set to it; its JSON log lines are kept, and the
``listening`` line says it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeError(RuntimeError):
    """A node did not start, or misbehaved."""


class NodeProcess:
    """One cluster node: ``python -m crdtsync relay --store DSN --node-url ws://...``.

    Args:
        dsn: the cluster's database.
        secret_file: the cluster's token secret (None: no authentication).
        lease_ttl: the node's lease time (seconds).
        extra: more command-line options.
    """

    def __init__(
        self,
        dsn: str,
        *,
        secret_file: Path | None = None,
        lease_ttl: float = 3.0,
        extra: tuple[str, ...] = (),
        name: str = "node",
    ) -> None:
        self.dsn = dsn
        self.secret_file = secret_file
        self.lease_ttl = lease_ttl
        self.extra = extra
        self.name = name
        self.port = 0
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self._readers: list[asyncio.Task[None]] = []
        self._listening: asyncio.Future[str] | None = None
        self._line_event = asyncio.Event()

    async def start(self, timeout: float = 60.0) -> str:
        """Start the node; return its URL once it logs ``listening``."""
        loop = asyncio.get_running_loop()
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        for _attempt in range(5):
            self.port = free_port()
            self.lines = []
            self.stderr = bytearray()
            self._listening = loop.create_future()
            argv = [
                sys.executable,
                "-m",
                "crdtsync",
                "relay",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--store",
                self.dsn,
                "--node-url",
                f"ws://127.0.0.1:{self.port}",
                "--lease-ttl",
                str(self.lease_ttl),
                "--log-level",
                "info",
                *self.extra,
            ]
            if self.secret_file is not None:
                argv += ["--secret-file", str(self.secret_file)]
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            self._readers = [
                loop.create_task(self._read_stdout()),
                loop.create_task(self._read_stderr()),
            ]
            exited = loop.create_task(self.proc.wait())
            try:
                await asyncio.wait(
                    [self._listening, exited], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                if not exited.done():
                    exited.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await exited
            if self._listening.done():
                self.url = self._listening.result()
                return self.url
            await self.kill()
            if b"address already in use" not in bytes(self.stderr).lower():
                break
        raise NodeError(
            f"{self.name} did not start: {bytes(self.stderr[-3000:]).decode(errors='replace')}"
        )

    async def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        keep = os.environ.get("CRDTSYNC_NODE_LOG_DIR")
        while line := await self.proc.stdout.readline():
            if keep:  # for debugging a failing run: every node's log lines, kept
                with open(Path(keep) / f"{self.name}-{self.port}.log", "ab") as f:
                    f.write(line)
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsable", "line": repr(line)}
            self.lines.append(event)
            self._line_event.set()
            fut = self._listening
            if event.get("event") == "listening" and fut is not None and not fut.done():
                fut.set_result(str(event["url"]))

    async def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.stderr += chunk
            del self.stderr[:-65536]

    async def wait_log(self, event: str, timeout: float = 30.0, start: int = 0) -> dict[str, Any]:
        """The first log line with ``event`` (from line ``start`` on), waiting for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = start
        while True:
            for line in self.lines[seen:]:
                if line.get("event") == event:
                    return line
            seen = len(self.lines)
            self._line_event.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NodeError(f"{self.name}: no {event!r} log line within {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._line_event.wait(), remaining)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` (SIGSTOP, SIGCONT, ...) to the node."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL the node and wait for it."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        await self._finish()

    async def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (drain) and wait; SIGKILL after ``timeout``. Returns the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
        await self._finish()
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def _finish(self) -> None:
        assert self.proc is not None
        await self.proc.wait()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def http(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        """GET ``path`` of the node (blocking: call in a thread)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=timeout
            ) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()


def metric(text: str, name: str) -> float:
    """The value of the first sample of ``name`` in Prometheus ``text``."""
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


class Balancer:
    """A TCP load balancer on 127.0.0.1: each connection goes to the next live node.

    What a deployment puts in front of the nodes (no stickiness: a wrong node
    proxies or redirects). A node that refuses the connection (killed) is
    skipped; ``ports`` is asked at every connection, so restarted nodes join.
    """

    def __init__(self, ports: Callable[[], list[int]]) -> None:
        self._ports = ports
        self._next = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> Balancer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ports = self._ports()
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for _ in range(len(ports)):
            port = ports[self._next % len(ports)]
            self._next += 1
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        pumps = [
            asyncio.ensure_future(_pipe(reader, up_writer)),
            asyncio.ensure_future(_pipe(up_reader, writer)),
        ]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for w in (writer, up_writer):
            w.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
