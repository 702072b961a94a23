"""Fixtures of the LAN tests: an asyncio backend, keys, and the shared helpers' folder."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ (waiting.py, ...) importable when tests/lan runs on its own.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from crdtsync.transports.lan import DeviceIdentity, GroupKey  # noqa: E402


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
