"""Relay cluster nodes as real child processes (``crdtsync relay --store postgresql://...``).

Used by ``tests/relay/cluster/test_nodes.py``, ``scripts/cluster_kill.py`` and
``benchmarks/bench_cluster.py``. Each node is a :class:`helpers.relaychild.RelayChild`
on its own free port of 127.0.0.1 with ``--node-url`` set to it; its JSON log
lines are kept, and the ``listening`` line says it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from helpers.relaychild import RelayChild, RelayChildError


class NodeError(RelayChildError):
    """A node did not start, or misbehaved."""


class NodeProcess(RelayChild):
    """One cluster node: ``python -m crdtsync relay --store DSN --node-url ws://...``.

    Args:
        dsn: the cluster's database.
        secret_file: the cluster's token secret (None: no authentication).
        lease_ttl: the node's lease time (seconds).
        extra: more command-line options.
        name: names the node in errors and kept logs.
    """

    error = NodeError

    def __init__(
        self,
        dsn: str,
        *,
        secret_file: Path | None = None,
        lease_ttl: float = 3.0,
        extra: tuple[str, ...] = (),
        name: str = "node",
    ) -> None:
        super().__init__(name=name)
        self.dsn = dsn
        self.secret_file = secret_file
        self.lease_ttl = lease_ttl
        self.extra = extra

    def options(self) -> list[str]:
        argv = [
            "--store",
            self.dsn,
            "--node-url",
            f"ws://127.0.0.1:{self.port}",
            "--lease-ttl",
            str(self.lease_ttl),
            *self.extra,
        ]
        if self.secret_file is not None:
            argv += ["--secret-file", str(self.secret_file)]
        return argv


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
