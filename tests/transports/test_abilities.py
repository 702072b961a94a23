"""Declared abilities: check_transport checks each one a transport declares, and catches liars."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from crdtsync.net import (
    Ability,
    Connection,
    Listener,
    Transport,
    has_close_codes,
    has_flow_control,
    keeps_messages,
)
from crdtsync.testing import check_transport
from crdtsync.transports.memory import MemoryNetwork, MemoryTransport
from crdtsync.transports.websocket import WebSocketTransport


class _SplittingConnection:
    """Declares MESSAGES but sends every message in two halves: a liar."""

    abilities = Ability.MESSAGES

    def __init__(self, inner: Connection) -> None:
        self.inner = inner

    @property
    def remote_address(self) -> str:
        return self.inner.remote_address

    async def send(self, data: bytes) -> None:
        half = max(1, len(data) // 2)
        await self.inner.send(data[:half])
        if data[half:]:
            await self.inner.send(data[half:])

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def recv_message(self) -> bytes:
        return await self.inner.recv()

    async def close(self) -> None:
        await self.inner.close()


class _SplittingTransport:
    abilities = Ability.MESSAGES

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner

    async def connect(self, address: str) -> _SplittingConnection:
        return _SplittingConnection(await self.inner.connect(address))

    async def listen(
        self, address: str, handler: Callable[[_SplittingConnection], Awaitable[None]]
    ) -> Listener:
        async def wrapped(conn: Connection) -> None:
            await handler(_SplittingConnection(conn))

        return await self.inner.listen(address, wrapped)


@pytest.mark.anyio
async def test_a_transport_lying_about_message_boundaries_fails_the_suite() -> None:
    net = MemoryNetwork()
    liar: Transport[Connection] = _SplittingTransport(net.transport("s"))
    with pytest.raises(AssertionError, match="split or joined messages"):
        await check_transport(lambda: (liar, _SplittingTransport(net.transport("c")), "mem://x"))


@pytest.mark.anyio
async def test_transports_declare_what_their_connections_do() -> None:
    net = MemoryNetwork()
    assert net.transport("a").abilities == Ability(0)
    ws = WebSocketTransport()
    assert ws.abilities == Ability.MESSAGES | Ability.FLOW | Ability.CLOSE_CODES
    listener = await ws.listen("ws://127.0.0.1:0", _hold)
    try:
        conn = await ws.connect(listener.address)
        # The type guards narrow by the declaration, not by probing attributes.
        assert keeps_messages(conn)
        assert has_flow_control(conn)
        assert has_close_codes(conn)
        await conn.close()
    finally:
        await listener.close()


async def _hold(conn: Connection) -> None:
    await conn.recv()
