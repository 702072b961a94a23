"""StoreWorker: commits off the event loop, group commit, failures kept to their documents."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from helpers.waiting import started

from crdtsync import MemoryStore, SQLiteStore, StoreError, StoreLockedError
from crdtsync.store.worker import StoreWorker


class Gated(MemoryStore):
    """A store whose commits wait for a gate (and that refuses one document)."""

    def __init__(self, refuse: str | None = None) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.refuse = refuse
        self.batches: list[int] = []

    def append_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        self.entered.set()
        assert self.gate.wait(30)
        if self.refuse is not None and any(n == self.refuse for n, _ in items):
            raise StoreLockedError(f"{self.refuse!r} is held by another writer")
        self.batches.append(len(items))
        return super().append_many(items)

    def append(self, name: str, update: bytes) -> int:
        if name == self.refuse:
            raise StoreLockedError(f"{name!r} is held by another writer")
        return super().append(name, update)


@pytest.mark.anyio
async def test_updates_queued_during_a_commit_share_the_next_one() -> None:
    store = Gated()
    store.create("d", b"")
    worker = StoreWorker(store)
    store.gate.clear()
    store.entered.clear()
    first = worker.submit("d", b"0")
    assert await asyncio.to_thread(store.entered.wait, 30)
    # The loop runs on while the commit waits (nothing here blocks it).
    seqs: dict[int, int] = {}
    tickets = [
        worker.submit("d", b"%d" % i, on_stored=lambda s, i=i: seqs.__setitem__(i, s))
        for i in range(1, 100)
    ]
    assert worker.ticket == tickets[-1]
    alive = asyncio.sleep(0, "loop alive")  # (noqa: sleep) the loop answers
    assert await asyncio.wait_for(alive, 1) == "loop alive"
    store.gate.set()
    assert await worker.durable(tickets[-1]) == []
    assert store.batches == [1, 99], "group commit: one transaction for what queued meanwhile"
    doc = store.load("d")
    assert doc is not None
    assert [u for _, u in doc.updates] == [b"%d" % i for i in range(100)]
    assert sorted(seqs) == list(range(1, 100))
    assert [seqs[i] for i in range(1, 100)] == sorted(seqs.values())
    assert first < tickets[0]
    assert (worker.commits, worker.updates) == (2, 100)
    await worker.close()


@pytest.mark.anyio
async def test_a_failure_belongs_only_to_its_document() -> None:
    store = Gated(refuse="fenced")
    for name in ("a", "fenced", "b"):
        store.create(name, b"")
    worker = StoreWorker(store)
    store.gate.clear()
    store.entered.clear()
    t0 = worker.submit("a", b"a0")
    assert await asyncio.to_thread(store.entered.wait, 30)
    t1 = worker.submit("a", b"a1")
    t2 = worker.submit("fenced", b"f1")
    t3 = worker.submit("b", b"b1")
    store.gate.set()
    failures = await worker.durable(t3)
    assert [(f.ticket, f.name) for f in failures] == [(t2, "fenced")]
    assert isinstance(failures[0].error, StoreLockedError)
    assert await worker.durable(t1, since=t0) == []
    assert await worker.durable(t3, since=t2) == []
    for name, want in (("a", [b"a0", b"a1"]), ("b", [b"b1"]), ("fenced", [])):
        doc = store.load(name)
        assert doc is not None
        assert [u for _, u in doc.updates] == want
    await worker.close()


@pytest.mark.anyio
async def test_other_calls_keep_their_place_among_the_appends(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "w.db") as store:
        worker = StoreWorker(store)
        create = await started(worker.call(store.create, "d", b"e"))  # queued first
        tickets = [worker.submit("d", b"%d" % i) for i in range(50)]
        loaded = await worker.call(store.load, "d")
        await create
        assert loaded is not None
        assert [u for _, u in loaded.updates] == [b"%d" % i for i in range(50)]
        assert await worker.durable(tickets[-1]) == []
        with pytest.raises(StoreError, match="no document"):
            await worker.call(store.append, "missing", b"x")
        await worker.close()
        with pytest.raises(StoreError, match="closed"):
            worker.submit("d", b"late")
        doc = store.load("d")
        assert doc is not None
        assert len(doc.updates) == 50
