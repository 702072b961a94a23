"""Passing things on, in order, once the store says what came before them is stored.

The relay acknowledges nothing it has not stored. Imports are group-committed
(many updates, one fsync, on the store's worker thread), so whatever may carry
an imported update (a forwarded update, a sync step 2, a cluster node's watcher
event) waits for the store's durability mark to pass it. :class:`AfterStored`
is that wait, shared by the relay's y-protocols outbox
(:class:`~crdtsync.relay.rooms.Rooms`) and a cluster node's document watcher
(:mod:`crdtsync.relay.cluster.node`): items queue while one task waits for the
store; each wait covers everything queued before it started, and the items are
handed on in the order they came, with the store's failures since the last
wait, so the caller drops what a failed room would have carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

from crdtsync.errors import StoreError
from crdtsync.relay.logs import log

__all__ = ["AfterStored", "Durable"]

T = TypeVar("T")

#: ``durable(mark)``: wait until everything imported so far is stored; return the
#: new mark and the store's failures since ``mark``, by room (``""``: all rooms).
Durable = Callable[[int], Awaitable[tuple[int, dict[str, StoreError]]]]


class AfterStored(Generic[T]):
    """Hands queued items on, in order, once everything imported before them is stored.

    Args:
        durable: the store's wait (``RoomBackend.durable`` or ``Peer.durable``).
        deliver: called on the event loop with each batch, in order, and the
            failures the wait reported (empty when all was stored); a store
            error raised by the wait itself counts as every room failing.
        commit: called before each wait, for a backend that commits on the
            loop (its ``commit``); ``None``: the wait alone commits.
        what: what is passed on, for the log line of an unexpected error.
    """

    def __init__(
        self,
        durable: Durable,
        deliver: Callable[[list[T], Mapping[str, StoreError]], None],
        *,
        commit: Callable[[], None] | None = None,
        what: str,
    ) -> None:
        self._durable = durable
        self._deliver = deliver
        self._commit = commit
        self._what = what
        self._queue: list[T] = []
        self._task: asyncio.Task[None] | None = None
        self._mark = 0  # the store's durability mark: failures after it are new
        self._closed = False

    def push(self, item: T) -> None:
        """Queue ``item``; it is handed on once what was imported before it is stored."""
        self.extend((item,))

    def extend(self, items: list[T] | tuple[T, ...]) -> None:
        """Queue ``items`` in order (see :meth:`push`)."""
        if self._closed or not items:
            return
        self._queue.extend(items)
        if self._task is None:
            self._start()

    async def drain(self) -> None:
        """Return once everything queued so far was handed on (or dropped by a close)."""
        while self._task is not None:
            await asyncio.wait({self._task})

    def close(self) -> None:
        """Stop: nothing queued is handed on any more (it was not known stored)."""
        self._closed = True
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._task.add_done_callback(self._done)

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                if self._commit is not None:
                    self._commit()
                self._mark, failed = await self._durable(self._mark)
            except StoreError as exc:
                failed = {"": exc}
            self._deliver(batch, failed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A bug in ``deliver``: logged, and the items queued since go on regardless.
            log.error("passing on %s once stored failed", self._what, exc_info=exc)
        if self._queue and not self._closed:
            self._start()
