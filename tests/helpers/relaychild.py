"""``python -m crdtsync relay`` as a child process whose JSON log lines are kept.

The one way tests, scripts and benchmarks start a relay process: the relay
cluster's nodes (``helpers.cluster.NodeProcess``) and the SIGKILL crash test
(``scripts/relay_crash_test.py``) subclass :class:`RelayChild` and say only which
options they pass. The ``listening`` log line says the relay is up; every wait is
on a log line or the process, with a timeout.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RelayChildError(RuntimeError):
    """A relay child process did not start, or misbehaved."""


class RelayChild:
    """One relay child process on 127.0.0.1.

    Subclasses give the command-line options (:meth:`options`). By default a
    free port is picked at each start. With ``fixed_port`` the relay listens on
    ``port`` (0 at the first start: the relay picks one, and the port it logs
    is kept), so a restart after SIGKILL comes back at the same URL.

    Args:
        name: names the process in errors and kept logs.
        port: with ``fixed_port``, the port to listen on (0: the relay picks).
        fixed_port: listen on the same port at every start.
        log_level: the relay's ``--log-level``.
    """

    error: type[Exception] = RelayChildError

    def __init__(
        self,
        *,
        name: str = "relay",
        port: int = 0,
        fixed_port: bool = False,
        log_level: str = "info",
    ) -> None:
        self.name = name  # names the process in errors and kept logs
        self.port = port  # the port it listens on (0 until known)
        self.fixed_port = fixed_port  # restarts reuse the port of the first start
        self.log_level = log_level
        self.url = ""  # ws://127.0.0.1:PORT once it logged `listening`
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []  # parsed stdout log lines of this incarnation
        self.stderr = bytearray()  # the last 64 KiB of its stderr
        self._readers: list[asyncio.Task[None]] = []
        self._listening: asyncio.Future[str] | None = None
        self._line_event = asyncio.Event()

    def options(self) -> list[str]:
        """The relay's options after ``--host``, ``--port`` and ``--log-level``."""
        raise NotImplementedError

    async def start(self, timeout: float = 60.0, attempts: int = 5) -> str:
        """Start the relay; return its URL once it logs ``listening``.

        A port that is busy (taken by another process since it was picked, or
        not yet free after a SIGKILL) is tried again, up to ``attempts`` times
        within ``timeout`` seconds; any other failure to start raises at once.

        Raises:
            RelayChildError: (or the subclass's ``error``) it did not start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        for _attempt in range(attempts):
            if not self.fixed_port:
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
                "--log-level",
                self.log_level,
                *self.options(),
            ]
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
            either: list[asyncio.Future[Any]] = [self._listening, exited]
            try:
                await asyncio.wait(
                    either,
                    timeout=max(0.1, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                if not exited.done():
                    exited.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await exited
            if self._listening.done():
                self.url = self._listening.result()
                self.port = int(self.url.rsplit(":", 1)[1])
                return self.url
            await self.kill()
            if b"address already in use" not in bytes(self.stderr).lower():
                break
            if loop.time() >= deadline:
                break
            if self.fixed_port:
                # Nothing announces that a port became free: a short pause, bounded
                # by `attempts`, before binding the same port again.
                await asyncio.sleep(0.1)  # (noqa: sleep) no event says a port is free
        raise self.error(
            f"{self.name} did not start on port {self.port}: "
            f"{bytes(self.stderr[-3000:]).decode(errors='replace')}"
        )

    async def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        keep = os.environ.get("CRDTSYNC_NODE_LOG_DIR")
        while line := await self.proc.stdout.readline():
            if keep:  # for debugging a failing run: every process's log lines, kept
                with open(Path(keep) / f"{self.name}-{self.port}.log", "ab") as f:
                    f.write(line)
            try:
                event = json.loads(line)
            except ValueError:
                event = {"level": "error", "event": "unparsable log line", "line": repr(line)}
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
                raise self.error(f"{self.name}: no {event!r} log line within {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._line_event.wait(), remaining)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` (SIGSTOP, SIGCONT, ...) to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL the process and wait for it and its output pipes."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # a stopped process dies only once resumed
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
        await asyncio.wait_for(self.proc.wait(), 20.0)
        await asyncio.wait_for(asyncio.gather(*self._readers), 20.0)

    def http(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        """GET ``path`` of the relay (blocking: call in a thread)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=timeout
            ) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
