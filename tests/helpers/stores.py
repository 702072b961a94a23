"""Stores for tests that must hold a commit in flight, or make one fail."""

from __future__ import annotations

import threading

from crdtsync import MemoryStore, StoreError


class GatedStore(MemoryStore):
    """A memory store whose appends wait for a gate, or fail while ``failing`` is set.

    With ``Peer(async_commits=True)`` (the relay's backend), clearing ``gate``
    holds the commit on the worker thread: every writer then waits in
    ``durable()`` until the gate is set again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.failing = False
        self.threads: set[str] = set()

    def append_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.gate.wait(60)
        if self.failing:
            raise StoreError("the disk is gone")
        return super().append_many(items)

    def append(self, name: str, update: bytes) -> int:
        return self.append_many([(name, update)])[0]
