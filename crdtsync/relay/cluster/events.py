"""Lease changes as they happen: PostgreSQL ``LISTEN``/``NOTIFY`` (asyncio).

Every acquisition and release of a room (:class:`~crdtsync.relay.cluster.leases.Leases`)
sends a ``NOTIFY`` in the same transaction, delivered when it commits. Nodes
listen to learn at once that a room changed hands: a proxy reconnects to the
new owner, a node that was fenced drops the room, a draining node's rooms are
picked up without waiting for a client to ask.

Only control messages travel here (a room name, an epoch, a node id and URL:
far below ``NOTIFY``'s 8000-byte payload limit). Documents and presence never
do: they go through the owning node (``docs/CLUSTER.md``). Notifications are
hints, not the truth: one may be missed (a listener reconnecting), so a node
still checks the lease table before it acts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from crdtsync.errors import StoreError
from crdtsync.relay.cluster.leases import decode_event, notify_channel

__all__ = ["LeaseEvent", "LeaseEvents"]

_log = logging.getLogger("crdtsync.relay.cluster")


@dataclass(frozen=True)
class LeaseEvent:
    """A room changed hands.

    Attributes:
        room: the room, or None for "some room changed: ask the table".
        epoch: its lease epoch after the change.
        owner: the new owner's node id, or None when the room was released.
        url: the new owner's URL (None when released).
    """

    room: str | None
    epoch: int
    owner: int | None
    url: str | None


class LeaseEvents:
    """Listen to the lease changes of a schema.

    Examples:
        Inside a coroutine::

            async with LeaseEvents(dsn) as events:
                async for ev in events:
                    ...

    Args:
        dsn: the cluster's database.
        schema: the schema the cluster's tables live in.
    """

    def __init__(self, dsn: str, *, schema: str = "crdtsync") -> None:
        self._dsn = dsn
        self._channel = notify_channel(schema)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> LeaseEvents:
        try:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            await self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except psycopg.Error as exc:
            if self._conn is not None:
                await self._conn.close()
            raise StoreError(f"cannot listen for lease changes: {exc}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def __aiter__(self) -> AsyncIterator[LeaseEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[LeaseEvent]:
        if self._conn is None:
            raise StoreError("LeaseEvents is not open (use async with)")
        try:
            async for note in self._conn.notifies():
                try:
                    yield LeaseEvent(*decode_event(note.payload))
                except (ValueError, KeyError, TypeError) as exc:
                    # Someone else's NOTIFY on our channel: not ours to act on.
                    _log.warning("ignoring a malformed lease notification: %s", exc)
        except psycopg.Error as exc:
            raise StoreError(f"lost the lease notifications: {exc}") from None
