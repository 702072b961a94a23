"""Fixtures of the LAN tests: an asyncio backend, keys, and a garbage check per test.

The helpers beside these tests (``netns.py``, ``proxy.py``, ``lab_nodes.py``)
import by their bare names: pytest puts this folder on ``sys.path``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from crdtsync.transports.lan import DeviceIdentity, GroupKey


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
