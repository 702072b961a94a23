"""Presence from any client (read-only included) cannot lock a room (issue 18, items 4-6)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from helpers.relay import YClient, running_relay, ws_peer
from helpers.waiting import eventually
from websockets.exceptions import ConnectionClosed

from crdtsync.format.varint import write_varuint
from crdtsync.protocol import yprotocol as y
from crdtsync.relay import mint_token

pytestmark = pytest.mark.anyio
SECRET = b"relay-test-secret-0123456789abcdef"


def token(room: str = "notes", *, write: bool = True) -> str:
    return mint_token(SECRET, room, write=write, ttl=600)


def raw_awareness(client: int, clock: int, text: str) -> bytes:
    out = bytearray()
    write_varuint(out, 1)
    write_varuint(out, client)
    write_varuint(out, clock)
    raw = text.encode()
    write_varuint(out, len(raw))
    out += raw
    return y.encode_awareness(bytes(out))


async def _newcomers_join(relay_url: str) -> None:
    """A y-protocols client and a Peer both join the room and sync."""
    joiner = await YClient.open(relay_url, "notes", token=token(write=False))
    try:
        await joiner.sync(timeout=10)
    finally:
        await joiner.aclose()
    async with ws_peer() as peer:
        await peer.open("notes")
        await peer.connect(relay_url, token=token(write=False))
        assert await peer.wait_synced("notes", 10)


async def test_a_nan_presence_state_does_not_make_the_room_unjoinable(tmp_path: Path) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay:
        writer = await YClient.open(relay.url, "notes", token=token())
        await writer.sync()
        await writer.edit(lambda d: d.text("body").insert(0, "hi"))
        attacker = await YClient.open(relay.url, "notes", token=token(write=False))
        await attacker.sync()
        for i, text in enumerate(["NaN", '{"x":Infinity}', "1e999", '"\\ud83d"']):
            await attacker.ws.send(raw_awareness(4242, i + 1, text))
        await _newcomers_join(relay.url)
        await writer.aclose()
        await attacker.aclose()


async def test_huge_presence_states_do_not_lock_newcomers_out(tmp_path: Path) -> None:
    # Twenty 1 MB states once made every newcomer's whole-room presence message
    # exceed max_send_queue, so every joiner was dropped as a slow consumer.
    options = {"secret": SECRET, "max_send_queue": 2 << 20, "max_frame": 4 << 20}
    async with running_relay(tmp_path, **options) as relay:
        await relay.peer.open("notes")  # readers join rooms, they never create them
        clients = []
        for i in range(40):
            c = await YClient.open(relay.url, "notes", token=token(write=False), client_id=900 + i)
            await c.sync()
            # half send 1 MB states (refused), half states just under the per-state cap
            size = (1 << 20) if i < 20 else 60_000
            with contextlib.suppress(ConnectionClosed):
                await c.ws.send(raw_awareness(900 + i, 1, json.dumps({"junk": "x" * size})))
            clients.append(c)
        await _newcomers_join(relay.url)
        probe = await YClient.open(relay.url, "notes", token=token(write=False))
        await probe.sync()
        await eventually(
            lambda: len(probe.awareness.states) >= 20, 10, "presence reaches a newcomer"
        )
        assert all(len(json.dumps(s)) < 70_000 for s in probe.awareness.states.values())
        await probe.aclose()
        for c in clients:
            await c.aclose()
