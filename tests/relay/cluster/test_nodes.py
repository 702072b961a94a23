"""Three relay processes sharing one PostgreSQL database: one room, clients on every node.

Stock y-websocket clients (node) on each node, a Python Peer on the room's
owner, raw y-protocols clients for what a stock client will not do (forge a
client id, write over a read-only token). Everything is real: processes,
sockets on 127.0.0.1, PostgreSQL started by the test as the ``postgres`` user.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from helpers.cluster import NodeProcess, metric
from helpers.postgres import PgServer
from helpers.relay import YClient
from helpers.yws import yws_clients

from crdtsync import Doc, Peer
from crdtsync.protocol import yprotocol as y
from crdtsync.relay import mint_token
from crdtsync.transports.websocket import WebSocketTransport

pytestmark = pytest.mark.anyio

SECRET = b"cluster-test-secret-0123456789abcdef"


def token(room: str = "r", *, write: bool = True) -> str:
    return mint_token(SECRET, room, write=write, ttl=3600)


@contextlib.asynccontextmanager
async def cluster(
    dsn: str, tmp_path: Path, n: int = 3, **kw: object
) -> AsyncIterator[list[NodeProcess]]:
    secret = tmp_path / "cluster.key"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    nodes = [NodeProcess(dsn, secret_file=secret, name=f"node{i}", **kw) for i in range(n)]  # type: ignore[arg-type]
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(node.kill() for node in nodes))


async def test_clients_on_three_nodes_converge_with_presence_and_the_owners_policy(
    pg_server: PgServer, pg_dsn: str, tmp_path: Path
) -> None:
    async with cluster(pg_dsn, tmp_path) as nodes, yws_clients(3) as ywss:
        # The first client makes node0 the owner; the others reach it through node1, node2.
        for yws, node in zip(ywss, nodes, strict=True):
            await yws.call("connect", url=node.url, room="r", params={"token": token()})
            await yws.wait(synced=True)
        status, text = await asyncio.to_thread(nodes[0].http, "/metrics")
        assert status == 200
        assert metric(text, "crdtsync_cluster_rooms_owned") == 1
        for node in nodes[1:]:
            _, text = await asyncio.to_thread(node.http, "/metrics")
            assert metric(text, "crdtsync_cluster_rooms_owned") == 0
            assert metric(text, "crdtsync_cluster_rooms_proxied") == 1
            assert await asyncio.to_thread(node.http, "/readyz") == (200, "ready\n")

        # A Python Peer on the owner; another on node1 is told where the room lives.
        peer = Peer(transport=WebSocketTransport())
        other = Peer(transport=WebSocketTransport())
        async with peer, other:
            await peer.connect(nodes[0].url, token=token())
            doc = await peer.open("r")
            assert await peer.wait_synced("r", timeout=30)
            # The Peer on node1 is refused the room (ROOM_MOVED, naming the owner) and
            # follows: it connects to the owner too, and syncs the room there.
            moved: list[object] = []
            other.on_status(lambda st: moved.append(st.error) if st.error else None)
            await other.connect(nodes[1].url, token=token())
            odoc = await other.open("r")
            assert await other.wait_synced("r", timeout=30)
            assert nodes[0].url in [address for address, _, _ in other.connections()]
            odoc.text("body").insert(0, "Q;")

            # Concurrent edits from every node converge everywhere.
            storms = [
                yws.call("storm", n=20, seed=i + 1, tag=f"N{i}-") for i, yws in enumerate(ywss)
            ]
            for j in range(20):
                doc.text("body").insert(0, f"P-{j};")
            await asyncio.gather(*storms)
            want = [f"N{i}-{j};" for i in range(3) for j in range(20)]
            want += [f"P-{j};" for j in range(20)] + ["Q;"]
            # (a storm inserts at random places, inside others' tokens too: compare
            # lengths and whole texts, not tokens)
            answers = [await yws.wait(length=sum(map(len, want))) for yws in ywss]
            texts = {a["text"] for a in answers}
            assert len(texts) == 1
            assert await peer.wait_synced("r", timeout=30)
            final = texts.pop()
            changed = asyncio.Event()
            unsubscribe = doc.observe_updates(lambda *_: changed.set())
            try:
                async with asyncio.timeout(30):
                    while str(doc.text("body")) != final:
                        changed.clear()
                        await changed.wait()
            finally:
                unsubscribe()

            # Presence crosses nodes: everyone's hub is the owner.
            await ywss[2].call("presence", field="name", value="on-node2")
            await ywss[1].wait(presence=[{"name": "on-node2"}])
            await ywss[0].wait(presence=[{"name": "on-node2"}])

            # Read-only through node2: the owner denies the write; nothing stored.
            reader = await YClient.open(nodes[2].url, "r", token=token(write=False))
            await reader.sync()
            await reader.edit(lambda d: d.text("body").insert(0, "EVIL "))
            await reader.pump_until(
                lambda: any(isinstance(x, y.AuthDenied) for x in reader.received), 30
            )
            await reader.aclose()

            # A forged writer id through node1: the writer registry is the owner's.
            victim_id = int((await ywss[0].call("state"))["clientID"])
            forger = await YClient.open(nodes[1].url, "r", token=token(), client_id=victim_id)
            await forger.sync(30)
            forged = Doc(peer_id=victim_id)
            forged.import_yjs_update(forger.doc.export_yjs_update())
            before = forged.version
            forged.text("body").insert(0, "FORGED ")
            await forger.ws.send(y.encode_update(forged.export_yjs_update(since=before)))
            code, _, _ = await forger.closed(30)
            assert code == 1008

            # Neither reached anyone: a fresh client through the third node reads the room.
            fresh = await YClient.open(nodes[2].url, "r", token=token())
            await fresh.sync(30)
            assert fresh.text() == final
            assert "EVIL" not in fresh.text()
            assert "FORGED" not in fresh.text()
            await fresh.aclose()


async def test_a_hundred_rooms_spread_over_three_nodes(
    pg_server: PgServer, pg_dsn: str, tmp_path: Path
) -> None:
    async with cluster(pg_dsn, tmp_path) as nodes:
        rooms = [f"room-{i}" for i in range(100)]
        # Each room is first asked for on node i % 3 (which takes it), then written
        # through the next node (proxied) and read back through the third.
        for i, room in enumerate(rooms):
            first = await YClient.open(nodes[i % 3].url, room, token=token(room))
            await first.sync(30)
            writer = await YClient.open(nodes[(i + 1) % 3].url, room, token=token(room))
            await writer.sync(30)
            await writer.edit(lambda d, room=room: d.text("body").insert(0, room))
            await first.pump_until(lambda first=first, room=room: first.text() == room, 30)
            for c in (first, writer):
                await c.aclose()
        owned = []
        for node in nodes:
            _, text = await asyncio.to_thread(node.http, "/metrics")
            owned.append(metric(text, "crdtsync_cluster_rooms_owned"))
        assert sum(owned) == 100
        assert all(n > 0 for n in owned), owned
        for i, room in enumerate(rooms):
            reader = await YClient.open(nodes[(i + 2) % 3].url, room, token=token(room))
            await reader.sync(30)
            assert reader.text() == room
            await reader.aclose()


async def test_sigterm_drains_and_hands_the_rooms_over_at_once(
    pg_server: PgServer, pg_dsn: str, tmp_path: Path
) -> None:
    async with cluster(pg_dsn, tmp_path, n=2, lease_ttl=3600.0) as (leaving, staying):
        assert await asyncio.to_thread(leaving.http, "/healthz") == (200, "ok\n")
        a = await YClient.open(leaving.url, "d", token=token("d"))
        await a.sync(30)
        await a.edit(lambda doc: doc.text("body").insert(0, "kept"))
        b = await YClient.open(staying.url, "d", token=token("d"))  # proxied
        await b.sync(30)
        assert b.text() == "kept"
        assert await leaving.terminate() == 0
        # Its clients were closed (1001 directly; the proxied one with what the owner said).
        code, _, _ = await a.closed(30)
        assert code == 1001
        code, _, _ = await b.closed(30)
        assert code is not None
        # The room was released, not left to a TTL (an hour here): the other node
        # takes it at once and serves it from the database.
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT owner FROM crdtsync.leases WHERE room = %s", (b"d",)
            ).fetchone()
        assert row == (None,)
        c = await YClient.open(staying.url, "d", token=token("d"))
        await c.sync(30)
        assert c.text() == "kept"
        await c.aclose()
        _, text = await asyncio.to_thread(staying.http, "/metrics")
        assert metric(text, "crdtsync_cluster_rooms_owned") == 1
