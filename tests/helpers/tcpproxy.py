"""A userspace TCP proxy on 127.0.0.1 that a test can cut and restore (network partitions).

Put it between a client and a server (a relay node and PostgreSQL)::

    async with TcpProxy("127.0.0.1", pg_port) as proxy:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
        ...
        proxy.cut()          # a partition: nothing passes either way
        proxy.restore()      # traffic flows again

Two ways to cut, like the two faces of a real partition:

* ``cut(reset=False)`` (a black hole): the connections stay open but bytes stop
  both ways, and new connections are accepted but not forwarded: the client
  sees silence and must time out on its own;
* ``cut(reset=True)``: every connection is aborted (RST) and new ones are
  refused the same way, like a peer that restarted or a firewall that rejects.

Bounded: at most ``max_connections`` connections (others are closed at once),
and each direction holds at most one 64 KiB chunk in flight (reads pause while
the other side's buffer is full), so a cut proxy never buffers without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

_CHUNK = 65536


class TcpProxy:
    """Forward TCP connections from ``127.0.0.1:port`` to ``host:target_port``.

    Args:
        host: the target's address (loopback only in tests).
        target_port: the target's port.
        max_connections: connections beyond this are closed on accept.
    """

    def __init__(self, host: str, target_port: int, *, max_connections: int = 256) -> None:
        self.host = host
        self.target_port = target_port
        self.max_connections = max_connections
        self.port = 0
        self._server: asyncio.Server | None = None
        # Set while traffic may flow; cleared by a black-hole cut.
        self._open = asyncio.Event()
        self._open.set()
        self._reset = False
        self._conns: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Accepted, forwarded and refused connection counts (for assertions).
        self.accepted = 0
        self.refused = 0

    async def start(self) -> TcpProxy:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self

    async def close(self) -> None:
        """Stop listening and abort every connection."""
        if self._server is not None:
            self._server.close()
        for pair in list(self._conns):
            pair.abort()
        # Every connection's task ends once aborted: wait for them, leave none behind.
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connections(self) -> int:
        """Connections currently open through the proxy."""
        return len(self._conns)

    def cut(self, *, reset: bool = False) -> None:
        """Partition: stop all traffic (``reset``: abort every connection too)."""
        self._open.clear()
        self._reset = reset
        if reset:
            for pair in list(self._conns):
                pair.abort()

    def restore(self) -> None:
        """Heal the partition: bytes flow again, new connections are forwarded."""
        self._reset = False
        self._open.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._reset or len(self._conns) >= self.max_connections:
            self.refused += 1
            _abort(writer)
            return
        self.accepted += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        pair = _Pair(writer)
        self._conns.add(pair)
        try:
            # A black hole accepts but does not connect onward until restored.
            if not self._open.is_set():
                await pair.wait(self._open)
            if pair.aborted or self._reset:
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.target_port), 10.0
                )
            except (OSError, TimeoutError):
                return
            pair.upstream = up_writer
            await asyncio.gather(
                self._pump(reader, up_writer, pair), self._pump(up_reader, writer, pair)
            )
        finally:
            self._conns.discard(pair)
            pair.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                # Held here (one chunk at most) while the partition lasts.
                if not self._open.is_set():
                    await pair.wait(self._open)
                if pair.aborted:
                    return
                writer.write(data)
                await writer.drain()
            # A partition holds the end of a connection too (no FIN crosses it).
            if not self._open.is_set():
                await pair.wait(self._open)
            if pair.aborted:
                return
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()
        except (OSError, asyncio.IncompleteReadError):
            pair.abort()


class _Pair:
    """Both ends of one proxied connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.aborted = False
        self._aborted = asyncio.Event()

    async def wait(self, event: asyncio.Event) -> None:
        """Wait until ``event`` is set or this connection is aborted."""
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._aborted.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def abort(self) -> None:
        if self.aborted:
            return
        self.aborted = True
        self._aborted.set()
        _abort(self.client)
        if self.upstream is not None:
            _abort(self.upstream)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    writer.transport.abort()
