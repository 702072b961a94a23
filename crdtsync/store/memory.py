"""A store in memory: for tests, and for peers that keep nothing (relays, ``store=None``)."""

from __future__ import annotations

import threading

from crdtsync.errors import StoreError
from crdtsync.store.base import StoredDoc

__all__ = ["MemoryStore"]


class MemoryStore:
    r"""A :class:`~crdtsync.store.base.Store` in a dict. "Durable" means "in this process".

    Examples:
        >>> s = MemoryStore()
        >>> s.create("d", b"")
        >>> s.append("d", b"\\x00\\x00")
        1
        >>> s.load("d").updates
        [(1, b'\\x00\\x00')]
    """

    def __init__(self) -> None:
        # name -> [epoch, snapshot, log]; the lock makes compact() safe from a thread.
        self._docs: dict[str, tuple[bytes, bytes | None, list[tuple[int, bytes]]]] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def load(self, name: str) -> StoredDoc | None:
        """See :meth:`Store.load`."""
        with self._lock:
            self._check()
            entry = self._docs.get(name)
            if entry is None:
                return None
            epoch, snapshot, log = entry
            return StoredDoc(epoch, snapshot, list(log))

    def create(self, name: str, epoch: bytes) -> None:
        """See :meth:`Store.create`."""
        with self._lock:
            self._check()
            self._docs[name] = (bytes(epoch), None, [])

    def append(self, name: str, update: bytes) -> int:
        """See :meth:`Store.append`."""
        with self._lock:
            self._check()
            entry = self._docs.get(name)
            if entry is None:
                raise StoreError(f"no document {name!r} in the store")
            self._seq += 1
            entry[2].append((self._seq, bytes(update)))
            return self._seq

    def append_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        """See :meth:`Store.append_many`."""
        with self._lock:
            self._check()
            for name, _ in items:
                if name not in self._docs:
                    raise StoreError(f"no document {name!r} in the store")
            seqs = []
            for name, update in items:
                self._seq += 1
                self._docs[name][2].append((self._seq, bytes(update)))
                seqs.append(self._seq)
            return seqs

    def compact(self, name: str, snapshot: bytes, upto: int) -> None:
        """See :meth:`Store.compact`."""
        with self._lock:
            self._check()
            entry = self._docs.get(name)
            if entry is None:
                raise StoreError(f"no document {name!r} in the store")
            epoch, _, log = entry
            self._docs[name] = (epoch, bytes(snapshot), [e for e in log if e[0] > upto])

    def delete(self, name: str) -> None:
        """See :meth:`Store.delete`."""
        with self._lock:
            self._check()
            self._docs.pop(name, None)

    def names(self) -> list[str]:
        """See :meth:`Store.names`."""
        with self._lock:
            self._check()
            return sorted(self._docs)

    def close(self) -> None:
        """See :meth:`Store.close`."""
        self._closed = True
