"""Waiting for a condition in tests: polled, and always bounded by a deadline.

Used where no event exists to wait on (a remote process's state, a document
converging over sockets); a timeout turns a hang into a failure that says what
was awaited.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


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
        await asyncio.sleep(interval)  # deliberate sleep: the poll interval of a bounded wait


async def eventually_blocking(
    predicate: Callable[[], bool], timeout: float = 60.0, what: str = "", interval: float = 0.05
) -> None:
    """:func:`eventually` for a predicate that blocks (a database query): run in a thread."""
    await eventually(lambda: asyncio.to_thread(predicate), timeout, what, interval)

