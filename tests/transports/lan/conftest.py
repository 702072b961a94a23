"""Fixtures of the LAN tests: an asyncio backend, keys, and a garbage check per test.

Their helpers live in ``tests/helpers`` (``netns``, ``lan_proxy``, ``lab_nodes``,
and ``lan_node.py``, the process run in each lab host).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from crdtsync.transports.lan import DeviceIdentity, GroupKey


@pytest.fixture
def group() -> GroupKey:
    return GroupKey.generate()


@pytest.fixture
def alice() -> DeviceIdentity:
    return DeviceIdentity.generate()


@pytest.fixture
def bob() -> DeviceIdentity:
    return DeviceIdentity.generate()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so that an unclosed socket fails the test that leaked it."""
    yield
    gc.collect()
