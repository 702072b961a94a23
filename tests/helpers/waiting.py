"""Waiting for a condition in tests: polled, and always bounded by a deadline.

Used where no event exists to wait on (a remote process's state, a document
converging over sockets); a timeout turns a hang into a failure that says what
was awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    what: str = "",
    interval: float = 0.005,
) -> None:
    """Poll ``predicate`` every ``interval`` s until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(interval)  # (noqa: sleep) the poll interval of a bounded wait


def until(
    predicate: Callable[[], bool], timeout: float = 60.0, what: str = "", interval: float = 0.02
) -> None:
    """:func:`eventually` for synchronous code: poll ``predicate``, blocking this thread."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)  # (noqa: sleep) the poll interval of a bounded wait


async def eventually_blocking(
    predicate: Callable[[], bool], timeout: float = 60.0, what: str = "", interval: float = 0.05
) -> None:
    """:func:`eventually` for a predicate that blocks (a database query): run in a thread."""
    await eventually(lambda: asyncio.to_thread(predicate), timeout, what, interval)


async def started(coro: Awaitable[T], timeout: float = 10.0) -> asyncio.Task[T]:
    """Run ``coro`` as a task; return it once it has run up to its first suspension.

    For a test that must act while a call is under way (a second ``recv`` while
    the first waits, a ``disconnect`` while ``connect`` tries): the event is set
    at the start of the task, which then runs on without yielding until ``coro``
    first suspends, so the waiter here resumes only after that point.
    """
    running = asyncio.Event()

    async def run() -> T:
        running.set()
        return await coro

    task = asyncio.ensure_future(run())
    await asyncio.wait_for(running.wait(), timeout)
    return task
