"""The acceptance suite of the discovery seam: ``check_discovery``.

Like :func:`crdtsync.testing.check_transport` for transports, every
:class:`~crdtsync.transports.lan.discovery.Discovery` implementation runs it::

    await check_discovery(lambda: StaticDiscovery(["lan://127.0.0.1:4000"]),
                          expect={"lan://127.0.0.1:4000"})

(To move into ``crdtsync.testing`` with the package restructure.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from .discovery import Discovery, Hint

__all__ = ["check_discovery"]

_STEP = 10.0


async def check_discovery(
    factory: Callable[[], Discovery],
    *,
    expect: Collection[str],
    own: str | None = None,
    timeout: float = _STEP,
) -> list[Hint]:
    """Check that a discovery source keeps the contract of ``Discovery``.

    Args:
        factory: makes the source (not started).
        expect: addresses that must be hinted (each in some hint's ``addresses``).
        own: this device's fingerprint: no hint may name it.
        timeout: seconds allowed for the expected hints to arrive.

    Returns:
        The hints seen (for further checks by the caller).

    Raises:
        AssertionError: with what went wrong.
    """
    source = factory()
    assert isinstance(source, Discovery), "not a Discovery (start, hints, close)"
    seen: list[Hint] = []
    missing = set(expect)

    async def collect() -> None:
        async for hint in source.hints():
            assert isinstance(hint, Hint), f"hints() yielded {hint!r}"
            assert own is None or hint.fingerprint != own, "a hint about this device itself"
            assert hint.gone or hint.addresses, "a hint with no address"
            for address in hint.addresses:
                assert address.startswith("lan://"), f"not a lan:// address: {address}"
            seen.append(hint)
            missing.difference_update(hint.addresses)

    await asyncio.wait_for(source.start(), _STEP)
    task = asyncio.ensure_future(collect())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while missing and not task.done() and loop.time() < deadline:
            await asyncio.wait({task}, timeout=0.05)
        if task.done():
            task.result()  # an assertion inside collect
            raise AssertionError("hints() ended before close()")
        assert not missing, f"no hint for {sorted(missing)} within {timeout} s"
    finally:
        await asyncio.wait_for(source.close(), _STEP)
        await asyncio.wait_for(source.close(), _STEP)  # idempotent
    # Iteration ends once closed.
    await asyncio.wait_for(task, _STEP)
    return seen
