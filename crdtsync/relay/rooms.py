"""The relay's rooms: who is in each, what goes out to them, and unloading idle ones.

:class:`Rooms` is the relay's side of the backend seam
(:class:`~crdtsync.relay.backend.RoomBackend`): it watches the backend
(:class:`~crdtsync.peer.peer.DocWatcher`) and sends every transaction and
presence update of a room to the room's y-protocols clients but the one it came
from. Every y-protocols send goes through one outbox, in order, flushed on the
next loop iteration and sent once ``backend.durable()`` says everything imported
before is stored: imported updates are group-committed (many updates, one
fsync, on the store's worker thread while the loop goes on), and a forwarded
update or a sync step 2 may carry some of them, so nothing leaves before it is
stored. Each
update is framed once for all its receivers (:func:`~crdtsync.relay.yconn.fanout`);
a receiver whose write buffer grows past ``max_send_queue`` (its latest sync step
2 exempt) is dropped as a slow consumer.

Rooms nobody uses (no session, no guest: ``backend.users``) for ``idle_unload``
seconds are compacted and unloaded (:meth:`Rooms.sweep`). The bytes of the
rooms loaded (each room's size, ``backend.doc_size``, plus its cached
catch-up answer) are capped by ``max_loaded_bytes``: loading one more room
over it first unloads idle rooms, least recently used first, and when every
loaded room is in use the new one is refused (``RelayFullError``; clients
retry later) (:meth:`Rooms.make_room`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import partial

from crdtsync.errors import RelayFullError, StoreError
from crdtsync.peer.guests import Origin
from crdtsync.protocol import yprotocol as y
from crdtsync.relay.answers import Answers
from crdtsync.relay.backend import RoomBackend, on_each_transaction
from crdtsync.relay.config import RelayConfig
from crdtsync.relay.limits import SyncConnection, now
from crdtsync.relay.logs import log
from crdtsync.relay.metrics import RelayMetrics
from crdtsync.relay.stored import AfterStored
from crdtsync.relay.yconn import YConnection, buffered, fanout

__all__ = ["Rooms"]

# One queued send: (receivers, message, when the update it carries arrived, catch-up?).
_Send = tuple[list[YConnection], bytes, float | None, bool]


class Rooms:
    """The y-protocols clients of every room, and what is sent to them.

    Args:
        backend: where the rooms live.
        config: the relay's limits (``max_send_queue``, ``idle_unload``).
        metrics: where sends, updates, latencies and errors are counted.
    """

    def __init__(self, backend: RoomBackend, config: RelayConfig, metrics: RelayMetrics) -> None:
        self._backend = backend
        self._config = config
        self._metrics = metrics
        # Room name -> its y-protocols clients; and each client by its guest.
        self._members: dict[str, set[YConnection]] = {}
        self._by_guest: dict[object, YConnection] = {}
        self._count = 0  # clients in all rooms (asked at every new connection)
        # Sends waiting for the backend's group commit, in order.
        self._outbox: list[_Send] = []
        self._flush_handle: asyncio.Handle | None = None
        # Flushed sends, sent once the backend says what they may carry is stored.
        self._stored: AfterStored[_Send] = AfterStored(
            backend.durable, self._send, commit=backend.commit, what="y-protocols sends"
        )
        # Room name -> since when nobody used it.
        self._idle_since: dict[str, float] = {}
        # Rooms being unloaded to make memory for others (not chosen twice).
        self._shedding: dict[str, asyncio.Task[None]] = {}
        #: Each room's full-state answer, and every address's budget of answer bytes.
        self.answers = Answers(config.max_answer_bytes_per_sec)
        self._unwatch = backend.watch(self)
        # A room loaded again (or replaced) answers from its new state.
        self._unopen = backend.on_open(self._opened)

    def _opened(self, name: str, doc: object) -> None:
        """Room ``name`` was loaded: its cached answer follows every transaction of ``doc``."""
        self.answers.changed(name)
        # The watcher may hear of a transaction only once it is stored (a cluster
        # node's backend passes transactions on in commit order): a client that
        # synced from nothing in between was answered from the answer cached
        # before it, and the update's own send had gone to the members of its time.
        # The document's own update hook runs in the transaction itself.
        on_each_transaction(doc, partial(self.answers.changed, name))

    # -- membership ----------------------------------------------------------------------

    def add(self, yc: YConnection) -> None:
        """A y-protocols client joined its room."""
        members = self._members.setdefault(yc.room, set())
        if yc not in members:
            members.add(yc)
            self._count += 1
        self._by_guest[yc.guest] = yc
        self._idle_since.pop(yc.room, None)

    def remove(self, yc: YConnection) -> None:
        """A y-protocols client left (its guest leaves separately)."""
        members = self._members.get(yc.room)
        if members is not None and yc in members:
            members.discard(yc)
            self._count -= 1
            if not members:
                del self._members[yc.room]
                # Least recently used first (the sweep forgets it if sessions use it).
                self._idle_since.setdefault(yc.room, now())
        if self._by_guest.get(yc.guest) is yc:
            del self._by_guest[yc.guest]

    @property
    def count(self) -> int:
        """How many y-protocols clients there are, in all rooms."""
        return self._count

    def connections(self) -> list[YConnection]:
        """Every y-protocols client of every room."""
        return [yc for members in self._members.values() for yc in members]

    # -- DocWatcher ----------------------------------------------------------------------

    def updated(self, name: str, update: bytes, origin: Origin) -> None:
        """A transaction of room ``name`` (stored, or queued for the commit): send it on."""
        self.answers.changed(name)
        source = self._by_guest.get(origin)
        t0: float | None = None
        if source is not None:
            self._metrics.updates.inc(protocol="y")
            t0 = source.t0
        elif isinstance(origin, SyncConnection):
            self._metrics.updates.inc(protocol="crdtsync")
            t0 = origin.t0
        members = [yc for yc in self._members.get(name, ()) if yc is not source and not yc.closed]
        if members or t0 is not None:
            # An empty send with a t0 still measures the propagation time.
            self.queue(members, y.encode_update(update) if members else b"", t0)

    def presence(self, name: str, data: bytes, origin: Origin) -> None:
        """A presence update of room ``name``: send it to its y-protocols clients but its source."""
        source = self._by_guest.get(origin)
        members = [yc for yc in self._members.get(name, ()) if yc is not source and not yc.closed]
        if members:
            self.queue(members, y.encode_awareness(data))

    # -- the outbox ----------------------------------------------------------------------

    def queue(
        self,
        members: list[YConnection],
        message: bytes,
        t0: float | None = None,
        *,
        catch_up: bool = False,
    ) -> None:
        """Send ``message`` to ``members`` once what it may carry is stored (next iteration)."""
        self._outbox.append((members, message, t0, catch_up))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send everything queued once the backend has stored what it may carry.

        The commit runs off the event loop (``backend.durable``: the store's
        worker thread, one transaction for whatever was imported meanwhile);
        batches go out in order. The store failing: those rooms' sends are not
        made, and their clients are dropped (they resend when they reconnect).
        """
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        outbox, self._outbox = self._outbox, []
        if not outbox:
            return
        self._stored.extend(outbox)

    async def drain(self) -> None:
        """Flush, and return once everything queued so far was sent (or dropped)."""
        self.flush()
        await self._stored.drain()

    def _send(self, outbox: list[_Send], failed: Mapping[str, StoreError]) -> None:
        if failed:
            self._metrics.error("store")
            log.error(
                "store failure", extra={"fields": {"error": str(next(iter(failed.values())))}}
            )
            # Not stored: not sent. Those clients resend what we lack when they reconnect.
            kept = []
            for send in outbox:
                members = send[0]
                if "" in failed or any(yc.room in failed for yc in members):
                    for yc in members:
                        yc.drop()
                else:
                    kept.append(send)
            outbox = kept
        t = now()
        metrics = self._metrics
        for members, message, t0, catch_up in outbox:
            live = [yc for yc in members if yc.writable]
            if live:
                size = fanout([yc.ws for yc in live], message)
                metrics.count_out("y", len(message), len(live))
                for yc in live:
                    if catch_up:
                        yc.catch_up_start = yc.sent
                    yc.sent += size
                    if catch_up:
                        yc.catch_up_end = yc.sent
                    self._check_queue(yc)
            if t0 is not None:
                metrics.latency.observe(t - t0)

    def _check_queue(self, yc: YConnection) -> None:
        queued = buffered(yc.ws)
        # What is left of its latest sync step 2 does not count: one answer,
        # however large, is not a reader falling behind. The buffer holds the
        # last ``queued`` bytes sent; the exempt part is its overlap with that answer.
        catch_up_left = max(0, yc.catch_up_end - max(yc.catch_up_start, yc.sent - queued))
        if queued - catch_up_left > self._config.max_send_queue and not yc.closed:
            # Its close frame would wait behind what it is not reading: drop it.
            self._metrics.error("slow_consumer")
            log.warning("slow consumer", extra={"fields": {"remote": yc.address, "queued": queued}})
            yc.drop()

    def queue_depths(self) -> list[int]:
        """Bytes in each y-protocols client's socket buffer."""
        return [buffered(yc.ws) for yc in self.connections()]

    # -- memory of loaded rooms ---------------------------------------------------------

    def loaded_bytes(self) -> int:
        """What the loaded rooms cost: their sizes plus their cached answers."""
        backend, answers = self._backend, self.answers
        return sum(backend.doc_size(n) + answers.cached_bytes(n) for n in backend.docs())

    async def make_room(self, name: str) -> None:
        """Make memory for loading room ``name``, waiting for the idle rooms it unloads.

        Raises:
            RelayFullError: the loaded rooms fill ``max_loaded_bytes`` and are all in use.
        """
        tasks = self.shed(name)
        if tasks:
            await asyncio.wait(tasks)

    def shed(self, name: str | None = None) -> list[asyncio.Task[None]]:
        """Unload idle rooms, least recently used first, until the loaded ones fit.

        ``name``: a room about to be loaded (nothing to do if it is loaded
        already): it is refused when the rooms in use alone fill the budget.

        Returns:
            The unloads started (and those already under way that were counted on).

        Raises:
            RelayFullError: ``name`` cannot be loaded now.
        """
        cap = self._config.max_loaded_bytes
        backend, answers = self._backend, self.answers
        loaded = backend.docs()
        if name is not None and name in loaded:
            return []
        sizes = {n: backend.doc_size(n) + answers.cached_bytes(n) for n in loaded}
        # Rooms already leaving do not count: their memory is on its way back.
        total = sum(size for n, size in sizes.items() if n not in self._shedding)
        tasks = list(self._shedding.values())
        if total < cap:
            return tasks
        t = now()
        idle = sorted(
            (self._idle_since.get(n, t), n)
            for n in loaded
            if n not in self._shedding and n != name and not backend.users(n)
        )
        victims = []
        for _, n in idle:
            if total < cap:
                break
            victims.append(n)
            total -= sizes[n]
        if total >= cap and name is not None:
            self._metrics.error("loaded_full")
            raise RelayFullError("every room the relay holds in memory is in use: try again later")
        for n in victims:
            task = asyncio.get_running_loop().create_task(self._unload(n))
            self._shedding[n] = task
            task.add_done_callback(partial(self._shed_done, n))
            tasks.append(task)
        if victims:
            log.info(
                "rooms unloaded for memory",
                extra={"fields": {"rooms": len(victims), "loaded_bytes": total}},
            )
        return tasks

    def _shed_done(self, name: str, _task: asyncio.Task[None]) -> None:
        self._shedding.pop(name, None)

    # -- idle rooms ----------------------------------------------------------------------

    async def sweep(self) -> None:
        """Unload rooms nobody has used for ``idle_unload`` seconds, forever."""
        period = max(0.05, min(5.0, self._config.idle_unload / 2))
        while True:
            await asyncio.sleep(period)
            self.shed()  # rooms grow while loaded: back under max_loaded_bytes
            t = now()
            for name in list(self._backend.docs()):
                if name in self._shedding:
                    continue
                since = self._idle_since.get(name)
                if self._backend.users(name):
                    self._idle_since.pop(name, None)
                elif since is None:
                    self._idle_since[name] = t
                elif t - since >= self._config.idle_unload:
                    await self._unload(name)

    async def _unload(self, name: str) -> None:
        backend = self._backend
        if backend.users(name):
            return

        def in_use() -> bool:
            # A client may have joined while the compaction ran: then the room stays.
            return backend.users(name) > 0

        try:
            unloaded = await backend.close_doc(name, compact=True, keep=in_use)
        except StoreError as exc:
            self._metrics.error("store")
            log.error("compaction failed", extra={"fields": {"room": name, "error": str(exc)}})
            unloaded = name not in backend.docs()
        self._idle_since.pop(name, None)
        if unloaded:
            self.answers.changed(name)
            self._metrics.unloaded.inc()
            log.debug("room unloaded", extra={"fields": {"room": name}})

    def close(self) -> None:
        """Stop watching the backend (and sending: what was not stored is not sent)."""
        self._unwatch()
        self._unopen()
        self._stored.close()
