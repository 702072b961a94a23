"""pycrdt-websocket's server for the relay benchmark (run in its own venv).

``bench_relay.py`` runs this file with the Python of ``.venv-pycrdt-websocket``
(pycrdt-websocket 0.16.5 needs pycrdt < 0.15; crdtsync's venv is left alone).
It serves ``pycrdt.websocket.WebsocketServer`` (one ``YRoom`` per URL path, no
store: as the node server, which persists nothing either) through one of:

* ``websockets`` (default): the same WebSocket library our relay uses, with the
  same settings (no compression), through a ten-line ``Channel`` adapter; so the
  comparison with our relay is about the room logic, not the WebSocket layer;
* ``hypercorn``: pycrdt-websocket's documented setup, its ``ASGIServer`` under
  Hypercorn (pure-Python wsproto: slower).

Prints ``{"event": "listening", "url": ...}`` on stdout once it accepts
connections; SIGTERM stops it.

    python pycrdt_ws_server.py --host 127.0.0.1 --port 0 [--transport hypercorn]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from typing import Any

from pycrdt.websocket import ASGIServer, WebsocketServer, exception_logger
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class WebsocketsChannel:
    """A ``pycrdt.Channel`` over a ``websockets`` server connection."""

    def __init__(self, ws: ServerConnection) -> None:
        self._ws = ws
        path = ws.request.path if ws.request is not None else "/"
        self._path = path.split("?", 1)[0]  # the room is the path, as in y-websocket

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WebsocketsChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        # The room sends to every client from its own tasks: a client that has
        # just gone must not fail the room (the ASGI adapter behaves the same way).
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message)

    async def recv(self) -> bytes:
        message = await self._ws.recv()
        return message if isinstance(message, bytes) else message.encode()


def _listening(host: str, port: int, transport: str) -> None:
    line = {"event": "listening", "url": f"ws://{host}:{port}", "transport": transport}
    print(json.dumps(line), flush=True)


async def _run_websockets(host: str, port: int, stop: asyncio.Event) -> None:
    async with WebsocketServer(exception_handler=exception_logger) as room_server:

        async def handler(ws: ServerConnection) -> None:
            await room_server.serve(WebsocketsChannel(ws))

        async with serve(handler, host, port, compression=None) as server:
            sock = next(iter(server.sockets))
            _listening(host, sock.getsockname()[1], "websockets")
            await stop.wait()


async def _run_hypercorn(host: str, port: int, stop: asyncio.Event) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    # Bind first and hand Hypercorn the socket, so that port 0 works and the
    # port is known before the "listening" line.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    room_server = WebsocketServer(exception_handler=exception_logger)
    app: Any = ASGIServer(room_server)
    async with room_server:
        _listening(host, sock.getsockname()[1], "hypercorn")
        await hypercorn_serve(app, config, mode="asgi", shutdown_trigger=stop.wait)


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--transport", choices=["websockets", "hypercorn"], default="websockets")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.transport == "hypercorn":
        await _run_hypercorn(args.host, args.port, stop)
    else:
        await _run_websockets(args.host, args.port, stop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
