"""The y-protocols proxy between relay nodes: a client's room is served by its owner.

A node that accepts a y-protocols client (stock y-websocket) for a room another
node owns opens a WebSocket to the owner (its ``--node-url`` and the client's
own request target, so the token in the query string goes along and the owner
checks it with the cluster's one secret) and forwards every message both ways,
as is. The node never loads the document: the owner is the one hub of the room
(writer ids, read-only grants, presence and durability are all decided there).

Two headers go to the owner: :data:`HOP_HEADER` (an owner that no longer owns
the room must not proxy again: it closes with :data:`CLOSE_NOT_OWNER`, and the
proxying node resolves the owner again) and ``X-Forwarded-For`` (the client's
address). The hop header is signed over the room, the client's address and the
time (:mod:`~crdtsync.relay.cluster.hop`): only under a valid signature does the
owner take the forwarded address as the client's (logs, per-address budgets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from crdtsync.relay.cluster.hop import FORWARDED_HEADER, HOP_HEADER

__all__ = ["CLOSE_NOT_OWNER", "HOP_HEADER", "ProxyResult", "proxy_y"]

log = logging.getLogger("crdtsync.relay.cluster")

#: WebSocket close code of an owner that does not own the room (any more): resolve again.
#: 45xx like the relay's other retryable codes (y-websocket gives up on 4400-4499).
CLOSE_NOT_OWNER = 4509

# Messages of a client kept for a replay until the owner answers (a sync step 1 and
# an awareness update in practice; a client sending more before any answer loses
# the excess at a re-route, and resyncs at its next reconnect).
_MAX_REPLAY = 64

# Seconds to open the connection to the owner.
_OPEN_TIMEOUT = 5.0


@dataclass(frozen=True)
class ProxyResult:
    """How a proxied connection ended.

    Attributes:
        reached: the owner accepted the connection (False: it could not be reached,
            or refused the upgrade; the caller resolves the owner again).
        not_owner: the owner said it does not own the room (resolve again).
        code: the close code passed on to the client (None: not closed by us).
    """

    reached: bool
    not_owner: bool = False
    code: int | None = None


async def proxy_y(
    ws: ServerConnection,
    url: str,
    *,
    address: str,
    hop: str,
    max_size: int,
    replay: list[bytes | str],
) -> ProxyResult:
    """Forward the client ``ws`` to ``url`` (the owner's node URL and the request target).

    Returns when either side closed; the other is closed with the same code,
    except :data:`CLOSE_NOT_OWNER` and an unreachable owner, which leave the
    client open for the caller to try again.

    Args:
        ws: the client.
        url: where the owner serves the room.
        address: the client's address (``X-Forwarded-For``).
        hop: the signed hop header for this room and client
            (:class:`~crdtsync.relay.cluster.hop.HopSigner`).
        max_size: the largest message (the relay's ``max_frame``).
        replay: messages of the client sent to an owner that turned the
            connection away: sent first (the client's sync step 1 must reach the
            real owner). Extended with what the client sends until the owner
            answers anything, so the caller can pass it to the next attempt.
    """
    try:
        upstream = await connect(
            url,
            additional_headers={HOP_HEADER: hop, FORWARDED_HEADER: address},
            max_size=max_size,
            compression=None,
            open_timeout=_OPEN_TIMEOUT,
            ping_interval=20.0,
            ping_timeout=20.0,
            close_timeout=2.0,
            max_queue=16,
        )
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        log.info("owner unreachable", extra={"fields": {"url": url, "error": str(exc)[:200]}})
        return ProxyResult(reached=False)
    answered = asyncio.Event()
    try:
        for message in replay:
            await upstream.send(message)
        down = asyncio.ensure_future(_pump(ws, upstream, keep=replay, until=answered))
        up = asyncio.ensure_future(_pump(upstream, ws, answered=answered))
        try:
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
        code = upstream.close_code
        if code == CLOSE_NOT_OWNER:
            return ProxyResult(reached=True, not_owner=True)
        if ws.close_code is None:
            # The owner ended it (or died: 1006): the client reconnects and is routed again.
            passed = code if code is not None and code not in (1005, 1006, 1015) else 1013
            reason = upstream.close_reason or "the room's owner closed the connection"
            await ws.close(passed, reason[:120])
            return ProxyResult(reached=True, code=passed)
        return ProxyResult(reached=True, code=ws.close_code)
    finally:
        await upstream.close()


async def _pump(
    src: ServerConnection | ClientConnection,
    dst: ServerConnection | ClientConnection,
    *,
    keep: list[bytes | str] | None = None,
    until: asyncio.Event | None = None,
    answered: asyncio.Event | None = None,
) -> None:
    """Forward messages from ``src`` to ``dst`` until ``src`` closes.

    ``keep`` collects what is forwarded until ``until`` is set (the owner answered);
    ``answered`` is set at the first message forwarded.
    """
    with contextlib.suppress(ConnectionClosed):
        async for message in src:
            if (
                keep is not None
                and until is not None
                and not until.is_set()
                and len(keep) < _MAX_REPLAY
            ):
                keep.append(message)
            await dst.send(message)
            if answered is not None:
                answered.set()
