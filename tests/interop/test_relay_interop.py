"""The stock y-websocket client (node) and crdtsync Peers edit the same rooms of our relay.

tests/helpers/yws.py runs tests/interop/yws_relay_peer.mjs (y-websocket 3.1.0's
``WebsocketProvider`` with ``WebSocketPolyfill: WebSocket`` from ``ws``), driven by JSON lines on
stdin/stdout: every wait is an event-driven condition on one side or the other,
never a sleep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.yws import yws_clients

from crdtsync import Doc, Peer
from crdtsync.relay import Relay, RelayConfig, mint_token
from crdtsync.transports.websocket import WebSocketTransport

pytestmark = pytest.mark.anyio

SECRET = b"interop-test-secret-0123456789abcdef"


async def until(
    cond: Callable[[], bool],
    subscribe: list[Callable[[Callable[..., None]], Callable[[], None]]],
    timeout: float = 20.0,
) -> bool:
    """Wait until ``cond()`` holds, re-checking whenever a subscribed source fires."""
    changed = asyncio.Event()
    unsubscribe = [sub(lambda *_: changed.set()) for sub in subscribe]
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                changed.clear()
                await changed.wait()
    except TimeoutError:
        return cond()
    finally:
        for unsub in unsubscribe:
            unsub()
    return True


def text_of(doc: Doc) -> str:
    return str(doc.text("body"))


async def python_peer(url: str, room: str, token: str | None = None) -> tuple[Peer, Doc]:
    peer = Peer(transport=WebSocketTransport())
    await peer.start()
    try:
        await peer.connect(url, token=token)
        doc = await peer.open(room)
        assert await peer.wait_synced(room, timeout=10)
    except BaseException:
        await peer.close()
        raise
    return peer, doc


def tokens(tag: str, n: int) -> list[str]:
    return [f"{tag}{j};" for j in range(n)]


# -- a node client and a Python Peer in one room ------------------------------------------------


async def test_node_and_python_peer_converge_and_share_presence(tmp_path: Path) -> None:
    async with Relay(RelayConfig(port=0, data=str(tmp_path / "relay.db"))) as relay:
        peer, doc = await python_peer(relay.url, "notes")
        try:
            doc.text("body").insert(0, "python was here. ")
            assert await peer.wait_synced("notes", timeout=10)
            async with yws_clients(1) as (node,):
                await node.call("connect", url=relay.url, room="notes")
                await node.wait(synced=True, text="python was here. ")

                # Concurrent edits: node and Python insert at random places at once.
                n = 60
                rng = random.Random(5)

                remote = [0]  # node's transactions seen here
                unsubscribe = doc.observe_updates(
                    lambda _u, _o, local: remote.__setitem__(0, remote[0] + (not local))
                )
                storm = asyncio.ensure_future(node.call("storm", n=n, seed=7, tag="N"))
                for j, token in enumerate(tokens("P", n)):
                    # Edit in step with node's storm: each Python edit follows one of
                    # node's, while node goes on typing without waiting for ours.
                    await until(lambda j=j: remote[0] > j or storm.done(), [doc.observe_updates])
                    body = doc.text("body")
                    body.insert(rng.randint(0, len(str(body))), token)
                unsubscribe()
                await storm
                assert remote[0] > 0
                expected = "python was here. " + "".join(tokens("P", n) + tokens("N", n))
                answer = await node.wait(length=len(expected))
                assert await until(
                    lambda: len(text_of(doc)) == len(expected), [doc.observe_updates]
                )
                assert answer["text"] == text_of(doc)
                assert Counter(text_of(doc)) == Counter(expected)
                assert text_of(await relay.peer.open("notes")) == text_of(doc)

                # Deletes and non-BMP text, both ways (JS indexes UTF-16, we code points).
                rest = text_of(doc)[6:]  # both sides hold the same text now
                await node.call("delete", index=0, length=6)
                assert await until(lambda: text_of(doc) == rest, [doc.observe_updates])
                doc.text("body").insert(0, "héllo 😀 ")
                answer = await node.wait(text="héllo 😀 " + rest)
                end = len(answer["text"].encode("utf-16-le")) // 2  # a UTF-16 index
                await node.call("insert", index=end, text=" ✓🎉")
                final = "héllo 😀 " + rest + " ✓🎉"
                assert await until(lambda: text_of(doc) == final, [doc.observe_updates])
                assert (await node.wait(text=final))["text"] == text_of(doc)

                # Presence, node -> Python.
                await node.call("presence", field="user", value={"name": "node"})
                node_state = {"user": {"name": "node"}}
                assert await until(
                    lambda: node_state in peer.presence("notes").states.values(),
                    [peer.on_presence],
                )
                # Python -> node.
                peer.set_presence("notes", {"user": {"name": "py", "color": "#0af"}})
                answer = await node.wait(presence=[{"user": {"name": "py", "color": "#0af"}}])
                assert str(peer.peer_id) in answer["presence"]
                assert answer["closes"] == []
                node_id = answer["clientID"]
            # Node left: its presence goes away on the Python side too.
            assert await until(
                lambda: node_id not in peer.presence("notes").states, [peer.on_presence]
            )
        finally:
            await peer.close()


async def test_relay_tokens_for_y_websocket_clients(tmp_path: Path) -> None:
    config = RelayConfig(port=0, data=str(tmp_path / "relay.db"), secret=SECRET)
    async with Relay(config) as relay:
        write = mint_token(SECRET, "notes", write=True, ttl=600)
        peer, doc = await python_peer(relay.url, "notes", token=write)
        try:
            doc.text("body").insert(0, "for token holders only")
            assert await peer.wait_synced("notes", timeout=10)
            expired = mint_token(SECRET, "notes", write=True, ttl=60, now=time.time() - 3600)
            other_room = mint_token(SECRET, "other", write=True, ttl=600)
            forged = mint_token(b"not-the-relay-secret-0123456789ab", "notes", write=True, ttl=600)
            async with yws_clients(5) as (good, bad, old, wrong, fake):
                await good.call("connect", url=relay.url, room="notes", params={"token": write})
                await bad.call("connect", url=relay.url, room="notes", params={"token": "garbage"})
                await old.call("connect", url=relay.url, room="notes", params={"token": expired})
                await wrong.call(
                    "connect", url=relay.url, room="notes", params={"token": other_room}
                )
                await fake.call("connect", url=relay.url, room="notes", params={"token": forged})

                answer = await good.wait(synced=True, text="for token holders only")
                await good.call("insert", index=0, text="node: ")
                assert await until(
                    lambda: text_of(doc) == "node: for token holders only", [doc.observe_updates]
                )

                for node, code in ((bad, 4401), (old, 4401), (wrong, 4403), (fake, 4401)):
                    answer = await node.wait(closed=code, terminal=code)
                    # Refused before anything of the document was sent.
                    assert answer["text"] == ""
                    assert not answer["synced"]
                    assert {c["code"] for c in answer["closes"]} == {code}
                    # y-websocket got the y-protocols "permission denied" message first.
                    assert any("Permission denied" in w for w in answer["warnings"])
                assert (await good.call("state"))["closes"] == []
        finally:
            await peer.close()


# -- two node clients and the relay -------------------------------------------------------------


async def test_two_y_websocket_clients_converge_in_an_edit_storm(tmp_path: Path) -> None:
    n = 200
    expected = "".join(tokens("A", n) + tokens("B", n))
    config = RelayConfig(port=0, data=str(tmp_path / "relay.db"))
    async with Relay(config) as relay, yws_clients(2) as (a, b):
        for node in (a, b):
            await node.call("connect", url=relay.url, room="storm")
        for node in (a, b):
            await node.wait(synced=True)
        # Both type at once, each edit a transaction at a random place.
        await asyncio.gather(
            a.call("storm", n=n, seed=1, tag="A"), b.call("storm", n=n, seed=2, tag="B")
        )
        ta = (await a.wait(length=len(expected)))["text"]
        tb = (await b.wait(length=len(expected)))["text"]
        assert ta == tb
        assert Counter(ta) == Counter(expected)
        room = await relay.peer.open("storm")
        assert text_of(room) == ta
    # The relay stored it all: a fresh Peer gets the same text from the restarted relay.
    async with Relay(RelayConfig(port=0, data=str(tmp_path / "relay.db"))) as relay:
        peer, doc = await python_peer(relay.url, "storm")
        try:
            assert text_of(doc) == ta
        finally:
            await peer.close()
