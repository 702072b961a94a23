"""A userspace TCP proxy that injects faults, for the LAN tests (no tc netem here).

Between a client and a server it forwards each direction through a queue and
can, per chunk read from the socket, drop it, send it twice, hold it back
(latency; order is kept, as TCP keeps it) or cut the connection after so many
bytes. :class:`FrameEditor` goes further for the security tests: it follows the
LAN link's wire format (preamble, handshake messages, then frames) and lets a
test drop, repeat, swap or alter whole frames.

Used in-process (``async with Proxy(...)``) or as a script inside a network
namespace::

    python tests/lan/proxy.py --listen 10.0.0.9:7000 --target 10.0.0.2:7000 \\
        --drop 0.01 --duplicate 0.01 --delay 0.02 --seed 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

# Chunk size read from each socket.
_READ = 16 << 10


@dataclass
class Faults:
    """What goes wrong, per chunk (probabilities in [0, 1]).

    Attributes:
        drop: a chunk is not forwarded (bytes lost from a stream: the link must
            notice, since TCP never loses bytes silently).
        duplicate: a chunk is forwarded twice.
        delay: the most seconds a chunk waits before it goes on (uniform).
        cut_after: forwarded bytes per direction after which the connection is cut.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    cut_after: int | None = None


#: Edits a direction's stream: bytes in, bytes out (stateful per connection).
Editor = Callable[[bytes], bytes]


@dataclass
class Stats:
    """What went through, per proxy."""

    connections: int = 0
    forwarded: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    dropped: int = 0
    duplicated: int = 0
    cuts: int = 0
    # Raw bytes as the client and the server sent them (before faults), per connection.
    sent_up: list[bytearray] = field(default_factory=list)
    sent_down: list[bytearray] = field(default_factory=list)


class Proxy:
    """Forwards connections to ``target`` with faults.

    Args:
        target_host: where the real server is.
        target_port: its port.
        faults: chunk-level faults, both directions.
        seed: the random source's seed (runs repeat exactly, given the same chunking).
        up: per connection, a factory of an editor for client-to-server bytes.
        down: the same for server-to-client bytes.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        faults: Faults | None = None,
        seed: int = 0,
        up: Callable[[], Editor] | None = None,
        down: Callable[[], Editor] | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.up = up
        self.down = down
        self.stats = Stats()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen; returns the address clients should connect to."""
        self._server = await asyncio.start_server(self._accept, host, port)
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    def cut(self) -> None:
        """Cut every open connection now (both sides see the TCP connection end)."""
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def __aenter__(self) -> Proxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.transport.abort()
            return
        self.stats.connections += 1
        self._writers |= {c_writer, s_writer}
        up_raw, down_raw = bytearray(), bytearray()
        self.stats.sent_up.append(up_raw)
        self.stats.sent_down.append(down_raw)
        pair = (c_writer, s_writer)
        up = self.up() if self.up else None
        down = self.down() if self.down else None
        tasks = [
            asyncio.ensure_future(self._pipe(c_reader, s_writer, "up", up, up_raw, pair)),
            asyncio.ensure_future(self._pipe(s_reader, c_writer, "down", down, down_raw, pair)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)
            for w in pair:
                w.transport.abort()
                self._writers.discard(w)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        way: str,
        editor: Editor | None,
        raw: bytearray,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        f = self.faults
        sent = 0
        while True:
            try:
                data = await reader.read(_READ)
            except OSError:
                data = b""
            if not data:
                if not writer.is_closing():
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                return
            raw += data
            if editor is not None:
                data = editor(data)
            if f.delay:
                await asyncio.sleep(self.rng.uniform(0, f.delay))  # (noqa: sleep) a fault
            copies = 1
            if f.drop and self.rng.random() < f.drop:
                copies = 0
                self.stats.dropped += 1
            elif f.duplicate and self.rng.random() < f.duplicate:
                copies = 2
                self.stats.duplicated += 1
            for _ in range(copies):
                if f.cut_after is not None and sent + len(data) > f.cut_after:
                    keep = f.cut_after - sent
                    if keep > 0:
                        writer.write(data[:keep])
                    with contextlib.suppress(OSError, RuntimeError):
                        await writer.drain()
                    self.stats.cuts += 1
                    for w in pair:
                        w.transport.abort()
                    return
                if data:
                    writer.write(data)
                    sent += len(data)
                    self.stats.forwarded[way] += len(data)
            try:
                await writer.drain()
            except (OSError, RuntimeError):
                return


class FrameEditor:
    """Edits a LAN link stream one unit at a time (handshake message or frame).

    Args:
        client_side: True for client-to-server bytes (a preamble, then handshake
            messages 1 and 3), False for server-to-client (message 2 only).
        edit: called with each transport frame's number (0 is the responder's
            READY on the server side) and bytes; returns what to forward instead
            (``[]`` drops it, ``[f, f]`` replays it). It may keep frames back
            and return them later, to reorder.
    """

    def __init__(self, *, client_side: bool, edit: Callable[[int, bytes], list[bytes]]) -> None:
        self._buf = bytearray()
        self._preamble = 8 if client_side else 0
        self._handshakes = 2 if client_side else 1
        self._edit = edit
        self.frames = 0

    def __call__(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while True:
            if self._preamble:
                if len(self._buf) < self._preamble:
                    break
                out += self._buf[: self._preamble]
                del self._buf[: self._preamble]
                self._preamble = 0
            elif self._handshakes:
                if len(self._buf) < 2:
                    break
                end = 2 + struct.unpack_from(">H", self._buf)[0]
                if len(self._buf) < end:
                    break
                out += self._buf[:end]
                del self._buf[:end]
                self._handshakes -= 1
            else:
                if len(self._buf) < 13:
                    break
                end = 13 + struct.unpack_from(">I", self._buf)[0]
                if len(self._buf) < end:
                    break
                frame = bytes(self._buf[:end])
                del self._buf[:end]
                for piece in self._edit(self.frames, frame):
                    out += piece
                self.frames += 1
        return bytes(out)


async def _main() -> None:
    parser = argparse.ArgumentParser(description="TCP proxy with injected faults")
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--drop", type=float, default=0.0)
    parser.add_argument("--duplicate", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--cut-after", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lhost, lport = args.listen.rsplit(":", 1)
    thost, tport = args.target.rsplit(":", 1)
    faults = Faults(args.drop, args.duplicate, args.delay, args.cut_after)
    proxy = Proxy(thost, int(tport), faults=faults, seed=args.seed)
    host, port = await proxy.start(lhost, int(lport))
    print(f"proxy {host}:{port} -> {thost}:{tport}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main())
