"""AfterStored: the one "pass on once stored" wait of the relay's outbox and a cluster node."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import pytest

from crdtsync.errors import StoreError
from crdtsync.relay.stored import AfterStored


class FakeStore:
    """A store whose commits finish when the test says so."""

    def __init__(self) -> None:
        self.waits: list[tuple[int, asyncio.Future[dict[str, StoreError]]]] = []
        self.commits = 0
        self.mark = 0
        self.waiting = asyncio.Event()

    def commit(self) -> None:
        self.commits += 1

    async def durable(self, since: int) -> tuple[int, dict[str, StoreError]]:
        fut: asyncio.Future[dict[str, StoreError]] = asyncio.get_running_loop().create_future()
        self.waits.append((since, fut))
        self.waiting.set()
        failed = await fut
        self.mark += 1
        return self.mark, failed

    async def next_wait(self) -> asyncio.Future[dict[str, StoreError]]:
        await asyncio.wait_for(self.waiting.wait(), 5)
        self.waiting.clear()
        return self.waits[-1][1]


@pytest.mark.anyio
async def test_items_wait_for_the_store_and_go_on_in_order() -> None:
    store = FakeStore()
    got: list[tuple[list[int], dict[str, StoreError]]] = []

    def deliver(batch: list[int], failed: Mapping[str, StoreError]) -> None:
        got.append((batch, dict(failed)))

    stored: AfterStored[int] = AfterStored(
        store.durable, deliver, commit=store.commit, what="numbers"
    )
    stored.push(1)
    stored.extend([2, 3])
    first = await store.next_wait()
    # Queued while the first wait is pending: covered by the next wait, not this one.
    stored.push(4)
    assert got == []
    first.set_result({})
    second = await store.next_wait()
    assert got == [([1, 2, 3], {})]
    assert store.waits[1][0] == 1  # the second wait asks for failures after the first mark
    error = StoreError("disk full")
    second.set_result({"room": error})
    await asyncio.wait_for(stored.drain(), 5)
    assert got[1] == ([4], {"room": error})
    assert store.commits == 2


@pytest.mark.anyio
async def test_a_failing_wait_counts_as_every_room_failing() -> None:
    error = StoreError("the database is down")

    async def durable(since: int) -> tuple[int, dict[str, StoreError]]:
        raise error

    got: list[dict[str, StoreError]] = []
    stored: AfterStored[str] = AfterStored(
        durable, lambda batch, failed: got.append(dict(failed)), what="strings"
    )
    stored.push("x")
    await asyncio.wait_for(stored.drain(), 5)
    assert got == [{"": error}]


@pytest.mark.anyio
async def test_close_drops_what_was_not_known_stored() -> None:
    store = FakeStore()
    got: list[list[int]] = []
    stored: AfterStored[int] = AfterStored(
        store.durable, lambda batch, failed: got.append(batch), what="numbers"
    )
    stored.push(1)
    await store.next_wait()
    stored.push(2)
    stored.close()
    await asyncio.wait_for(stored.drain(), 5)
    stored.push(3)  # after close: ignored
    await asyncio.wait_for(stored.drain(), 5)
    assert got == []
    assert len(store.waits) == 1


@pytest.mark.anyio
async def test_a_bug_in_deliver_is_logged_and_later_items_still_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    got: list[list[int]] = []

    def deliver(batch: list[int], failed: Mapping[str, StoreError]) -> None:
        got.append(batch)
        if batch == [1]:
            raise RuntimeError("bug")

    stored: AfterStored[int] = AfterStored(store.durable, deliver, what="numbers")
    with caplog.at_level(logging.ERROR, logger="crdtsync.relay"):
        stored.push(1)
        first = await store.next_wait()
        stored.push(2)  # queued behind the batch whose delivery will fail
        first.set_result({})
        (await store.next_wait()).set_result({})
        await asyncio.wait_for(stored.drain(), 5)
    assert got == [[1], [2]]
    assert "passing on numbers once stored failed" in caplog.text
