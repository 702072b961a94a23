"""A stock y-websocket client (node, tests/interop/yws_relay_peer.mjs) driven by JSON lines.

The one driver for every test that runs a stock y-websocket client (the interop
tests, the relay cluster's): every wait is an event-driven condition checked on
the node side, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from helpers.nodeenv import ensure_node_modules


class YwsClient:
    """One node process running a y-websocket ``WebsocketProvider``."""

    def __init__(self) -> None:
        self.script = ensure_node_modules() / "yws_relay_peer.mjs"
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> YwsClient:
        self.proc = await asyncio.create_subprocess_exec(
            "node",
            str(self.script),
            cwd=self.script.parent,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._read_stderr())]
        return self

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            fut = self._pending.pop(msg["id"], None) if "id" in msg else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif "event" in msg:
                self.events.append(msg)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(AssertionError(f"node exited: {self.stderr.decode()[-2000:]}"))

    async def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.stderr += chunk

    async def call(self, op: str, *, deadline: float = 60.0, **args: Any) -> dict[str, Any]:
        """Send a command; return its answer (with the client's state)."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        ident = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        self.proc.stdin.write(json.dumps({"id": ident, "op": op, **args}).encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(fut, deadline)
        assert "error" not in answer, answer
        return answer

    async def wait(self, timeout: float = 30.0, **conditions: Any) -> dict[str, Any]:
        """Wait until every condition holds on the client (see the script); assert it did."""
        answer = await self.call(
            "wait", deadline=timeout + 10, timeout=timeout * 1000, **conditions
        )
        assert answer["ok"], (
            f"y-websocket: {conditions} not reached: {answer} {self.stderr.decode()[-500:]}"
        )
        return answer

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.write(b'{"op": "quit"}\n')
                await self.proc.stdin.drain()
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10.0)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 10.0)


@contextlib.asynccontextmanager
async def yws_clients(n: int) -> AsyncIterator[list[YwsClient]]:
    """Start ``n`` clients one after the other; close them all on the way out."""
    clients: list[YwsClient] = []
    try:
        for _ in range(n):
            clients.append(await YwsClient().start())
        yield clients
    finally:
        for client in clients:
            await client.close()
