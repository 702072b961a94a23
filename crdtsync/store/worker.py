"""Commits off the event loop: any :class:`~crdtsync.store.base.Store` on a worker thread.

The seam is synchronous (simple to implement, simple to check), and today the
Peer calls it on the event loop: every commit stalls every connection of the
process for a WAL fsync, plus a network round trip with PostgreSQL.
:class:`StoreWorker` keeps the seam and moves the waiting to one thread:

* :meth:`StoreWorker.submit` queues an update and returns a *ticket* at once
  (it never blocks, so it can run inside a document's update callback);
* the worker thread takes everything queued when it is free and commits it with
  one :meth:`~crdtsync.store.base.Store.append_many`: **group commit** grows by
  itself with the load (one transaction in flight; whatever arrives meanwhile
  is the next one);
* :meth:`StoreWorker.durable` waits until every update up to a ticket is
  committed: a connection's writer awaits it before sending frames that
  acknowledge or forward those updates;
* a failed batch is retried update by update, so a failure belongs only to the
  documents that failed (one fenced room of a relay node must not stall the
  others: the y-redis "one bad stream blocked every room" failure);
* every other call (:meth:`StoreWorker.call`: ``load``, ``create``, ...) runs on
  the same thread in submission order, so a ``create`` is never overtaken by the
  appends that follow it.

Compaction does not go through the worker: the seam allows it on another
thread, and a large snapshot must not hold the appends back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from crdtsync.errors import StoreError
from crdtsync.store.base import Store

__all__ = ["Failure", "StoreWorker"]

_log = logging.getLogger("crdtsync.store")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Failure:
    """An update that could not be stored.

    Attributes:
        ticket: its ticket.
        name: its document.
        error: why.
    """

    ticket: int
    name: str
    error: StoreError


@dataclass
class _Append:
    ticket: int
    name: str
    update: bytes
    on_stored: Callable[[int], None] | None


@dataclass
class _Call:
    ticket: int
    fn: Callable[[], Any]
    future: asyncio.Future[Any] = field(repr=False)


_STOP = object()


class StoreWorker:
    """An asyncio face of a :class:`~crdtsync.store.base.Store`: one worker thread, group commit.

    Args:
        store: the store (it stays the caller's: :meth:`close` does not close it).
        max_batch: the most updates one transaction carries.
        keep_failures: how many recent failures :meth:`durable` can report.
    """

    def __init__(self, store: Store, *, max_batch: int = 4096, keep_failures: int = 10000) -> None:
        self.store = store
        self._max_batch = max_batch
        self._keep = keep_failures
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: queue.SimpleQueue[_Append | _Call | object] = queue.SimpleQueue()
        self._next_ticket = 0
        # Every ticket <= done is finished (stored or failed); read on the loop thread.
        self._done = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failures: list[Failure] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        # Commits and updates committed, for metrics and benchmarks.
        self.commits = 0
        self.updates = 0

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="crdtsync-store", daemon=True)
            self._thread.start()
        return self._loop

    # -- the loop's side ------------------------------------------------------------

    def submit(
        self, name: str, update: bytes, on_stored: Callable[[int], None] | None = None
    ) -> int:
        """Queue ``update`` of document ``name`` for the next group commit; never blocks.

        Args:
            name: the document.
            update: the update bytes.
            on_stored: called on the loop with the log sequence number once stored.

        Returns:
            The update's ticket, for :meth:`durable`.

        Raises:
            StoreError: the worker is closed.
        """
        if self._closed:
            raise StoreError("the store worker is closed")
        self._start()
        self._next_ticket += 1
        self._jobs.put(_Append(self._next_ticket, name, bytes(update), on_stored))
        return self._next_ticket

    @property
    def ticket(self) -> int:
        """The last ticket given out (await :meth:`durable` on it to wait for everything)."""
        return self._next_ticket

    async def durable(self, ticket: int, *, since: int = 0) -> list[Failure]:
        """Wait until every update up to ``ticket`` is stored or has failed.

        Args:
            ticket: the last ticket to wait for.
            since: report only failures of tickets after this one (the caller's
                previous ``ticket``).

        Returns:
            The failures among tickets ``since < t <= ticket``: frames that
            acknowledge or forward those updates must not be sent.
        """
        if ticket > self._done:
            fut = self._start().create_future()
            self._waiters.append((ticket, fut))
            await fut
        oldest = self._failures[0].ticket if self._failures else None
        if oldest is not None and len(self._failures) >= self._keep and since < oldest:
            # Forgotten failures may be among them: report the caller's whole range as failed.
            err = StoreError("too many store failures to tell which updates were stored")
            return [Failure(since + 1, "", err)]
        return [f for f in self._failures if since < f.ticket <= ticket]

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` (a store method) on the worker thread, after everything queued."""
        if self._closed:
            raise StoreError("the store worker is closed")
        loop = self._start()
        fut: asyncio.Future[_T] = loop.create_future()
        self._next_ticket += 1
        self._jobs.put(_Call(self._next_ticket, lambda: fn(*args), fut))
        return await fut

    async def close(self) -> None:
        """Finish what is queued, then stop the thread (the store stays open)."""
        if self._closed:
            return
        if self._thread is not None:
            await self.durable(self._next_ticket)
        self._closed = True
        if self._thread is not None:
            self._jobs.put(_STOP)
            await asyncio.to_thread(self._thread.join)

    def _finished(
        self, upto: int, stored: list[tuple[_Append, int]], failed: list[Failure]
    ) -> None:
        """On the loop: a batch ended (one wake-up of the loop per batch)."""
        for job, seq in stored:
            if job.on_stored is not None:
                try:
                    job.on_stored(seq)
                except Exception:
                    _log.exception("on_stored callback failed")
        if failed:
            self._failures.extend(failed)
            del self._failures[: max(0, len(self._failures) - self._keep)]
        self._done = max(self._done, upto)
        still = []
        for ticket, fut in self._waiters:
            if ticket <= self._done:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((ticket, fut))
        self._waiters = still

    # -- the worker thread --------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        carry: _Append | _Call | object | None = None
        while True:
            job = carry if carry is not None else self._jobs.get()
            carry = None
            if job is _STOP:
                return
            if isinstance(job, _Call):
                self._do_call(loop, job)
                del job  # (see below)
                continue
            assert isinstance(job, _Append)
            batch = [job]
            more: object = None
            while len(batch) < self._max_batch:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(more, _Append):
                    carry = more  # keeps its place: after this batch
                    break
                batch.append(more)
            stored, failed = self._commit(batch)
            try:
                loop.call_soon_threadsafe(self._finished, batch[-1].ticket, stored, failed)
            except RuntimeError:
                return  # the loop is closed: nobody is waiting any more
            # Drop this batch before waiting for the next job: its callbacks
            # hold their documents, which an idle relay would otherwise keep
            # alive after unloading their rooms, until the next write.
            del job, batch, stored, failed, more

    def _commit(self, batch: list[_Append]) -> tuple[list[tuple[_Append, int]], list[Failure]]:
        try:
            seqs = self.store.append_many([(j.name, j.update) for j in batch])
        except StoreError as exc:
            if len(batch) == 1:
                return [], [Failure(batch[0].ticket, batch[0].name, exc)]
        else:
            self.commits += 1
            self.updates += len(batch)
            return list(zip(batch, seqs, strict=True)), []
        # The batch failed as a whole: find out which updates fail by themselves.
        stored: list[tuple[_Append, int]] = []
        failed: list[Failure] = []
        for job in batch:
            try:
                seq = self.store.append(job.name, job.update)
            except StoreError as exc:
                failed.append(Failure(job.ticket, job.name, exc))
            else:
                self.commits += 1
                self.updates += 1
                stored.append((job, seq))
        return stored, failed

    def _do_call(self, loop: asyncio.AbstractEventLoop, job: _Call) -> None:
        try:
            result = job.fn()
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)

        def deliver() -> None:
            if not job.future.done():
                if outcome[0]:
                    job.future.set_result(outcome[1])
                else:
                    job.future.set_exception(outcome[1])
            self._finished(job.ticket, [], [])

        # A closed loop: nobody is waiting for the answer any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver)
