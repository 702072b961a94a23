"""Per-address admission budgets on a room's owner, with clients proxied by another node.

Two node processes on one database. Every y-protocols client of node1 for a room
node0 owns reaches node0 from node1's address (127.0.0.1): the owner must budget
each client once, where it connected (node1), and charge it nothing more by
node1's address; a forged hop header gets nothing. Test clients connect from
their own loopback addresses (127.0.x.y: Linux routes all of 127.0.0.0/8 to
lo), so that each one's budget at node1 is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.cluster import NodeError, NodeProcess
from helpers.postgres import PgServer
from helpers.relay import YClient
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from crdtsync.protocol import ysession as ys
from crdtsync.relay import mint_token
from crdtsync.relay.cluster.hop import FORWARDED_HEADER, HOP_HEADER, HopSigner, hop_key

pytestmark = pytest.mark.anyio

SECRET = b"cluster-test-secret-0123456789abcdef"
SPOOFED = "203.0.113.7:4242"
# One new connection per address every 5 s, in bursts of 2 (ten seconds' worth).
LIMITS = ("--max-new-conns-per-sec", "0.2", "--max-new-rooms-per-min", "1")


def token(room: str, *, write: bool = True) -> str:
    return mint_token(SECRET, room, write=write, ttl=3600)


@contextlib.asynccontextmanager
async def two_nodes(dsn: str, tmp_path: Path) -> AsyncIterator[list[NodeProcess]]:
    secret = tmp_path / "cluster.key"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    nodes = [NodeProcess(dsn, secret_file=secret, name=f"node{i}", extra=LIMITS) for i in range(2)]
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(node.kill() for node in nodes))


async def open_from(source: str, url: str, room: str, **kw: Any) -> YClient:
    """A y-protocols client connecting from the loopback address ``source``."""
    return await YClient.open(url, room, local_addr=(source, 0), open_timeout=30, **kw)


def remotes(node: NodeProcess, event: str) -> list[str]:
    return [str(line.get("remote")) for line in node.lines if line.get("event") == event]


async def wait_connected(node: NodeProcess, hosts: set[str], timeout: float = 30.0) -> set[str]:
    """The hosts of ``node``'s "connected" log lines, once they include ``hosts``."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {r.rpartition(":")[0] for r in remotes(node, "connected")}
        if hosts <= seen or time.monotonic() > deadline:
            return seen
        with contextlib.suppress(NodeError):
            await node.wait_log("connected", timeout=1.0, start=len(node.lines))


async def take(node: NodeProcess, room: str, source: str) -> None:
    """Make ``node`` own ``room`` without creating it (a reader of a room that does not exist)."""
    client = await open_from(source, node.url, room, token=token(room, write=False))
    with pytest.raises(ConnectionClosed):
        await client.sync()
    assert client.ws.close_code == ys.CLOSE_NO_SUCH_ROOM


async def test_a_node_proxying_many_clients_gets_them_all_served_and_rooms_budget_by_client(
    pg_server: PgServer, pg_dsn: str, tmp_path: Path
) -> None:
    async with two_nodes(pg_dsn, tmp_path) as (owner, proxy):
        writer = await open_from("127.0.9.1", owner.url, "r", token=token("r"))
        await writer.sync()  # node0 owns "r" (and made it)

        # 24 clients, each from its own address, reach "r" through node1 at once:
        # twelve times node0's per-address burst, all from node1's address there.
        sources = [f"127.0.1.{i}" for i in range(1, 25)]
        clients = await asyncio.gather(
            *(open_from(s, proxy.url, "r", token=token("r")) for s in sources)
        )
        await asyncio.gather(*(c.sync() for c in clients))
        for c in clients:
            assert c.ws.close_code is None
        # The owner logs and budgets each client by its own address, not node1's.
        assert set(sources) <= await wait_connected(owner, set(sources))
        assert not [r for r in remotes(owner, "refused") if r.startswith("127.0.0.1:")]
        for c in clients:
            await c.ws.close()

        # Room creation through the proxy is budgeted by the client's address
        # (one a minute): a second new room of one client is refused by the
        # owner; another client behind the same node still creates one.
        for i, room in enumerate(("n1", "n2")):
            await take(owner, room, f"127.0.8.{i + 1}")
        one = "127.0.2.1"
        made = await open_from(one, proxy.url, "n1", token=token("n1"))
        await made.sync()
        await made.ws.close()
        refused = await open_from(one, proxy.url, "n2", token=token("n2"))
        with pytest.raises(ConnectionClosed):
            await refused.sync()
        assert refused.ws.close_code == ys.CLOSE_RATE_LIMITED
        line = await owner.wait_log("room creation refused")
        assert str(line["remote"]).startswith(one + ":")
        other = await open_from("127.0.2.2", proxy.url, "n2", token=token("n2"))
        await other.sync()
        assert other.ws.close_code is None
        await other.ws.close()
        await writer.ws.close()


async def test_forged_hop_headers_get_no_exemption_and_no_spoofed_address(
    pg_server: PgServer, pg_dsn: str, tmp_path: Path
) -> None:
    async with two_nodes(pg_dsn, tmp_path) as (owner, _proxy):
        writer = await open_from("127.0.9.1", owner.url, "r", token=token("r"))
        await writer.sync()
        stamp = int(time.time())
        wrong_key = HopSigner(hop_key(b"not the cluster's secret, 32 bytes"))
        forgeries = [
            {HOP_HEADER: "1", FORWARDED_HEADER: SPOOFED},  # the old unsigned header
            {HOP_HEADER: f"v1 {stamp} {'0' * 64}", FORWARDED_HEADER: SPOOFED},
            {HOP_HEADER: wrong_key.sign("r", SPOOFED, now=stamp), FORWARDED_HEADER: SPOOFED},
        ]

        async def forge(source: str, headers: dict[str, str]) -> int | None:
            """Connect with forged headers: the close code (None: served)."""
            try:
                client = await open_from(
                    source, owner.url, "r", token=token("r"), additional_headers=headers
                )
            except (OSError, InvalidHandshake):
                return -1  # refused at accept, before the HTTP request
            try:
                await client.sync()
            except ConnectionClosed:
                return client.ws.close_code
            await client.ws.close()
            return None

        # From a node's own host (127.0.0.1, exempt at accept until the request
        # is read) and from elsewhere: twelve at once each, six times the burst.
        for source in ("127.0.0.1", "127.0.3.1"):
            outcomes = await asyncio.gather(
                *(forge(source, forgeries[i % len(forgeries)]) for i in range(12))
            )
            refused = [o for o in outcomes if o is not None]
            assert refused, f"forged hops from {source} were all served: {outcomes}"
            expected = {ys.CLOSE_TRY_AGAIN_LATER} if source == "127.0.0.1" else {-1}
            assert set(refused) <= expected, outcomes
        # Nothing the owner logged names the spoofed address; what it served is
        # logged under the forgers' real addresses.
        assert SPOOFED not in "\n".join(str(line) for line in owner.lines)
        seen = {r.rpartition(":")[0] for r in remotes(owner, "connected")}
        assert {"127.0.0.1", "127.0.3.1"} & seen
        await writer.ws.close()
