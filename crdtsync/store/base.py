"""The storage seam: what a document store must do, in eight methods.

A store keeps, for each document name, an *epoch* (the incarnation, see
``docs/PROTOCOL.md``), an optional *snapshot* (``Doc.save()`` bytes) and an
append-only *log* of Yjs v1 updates written after it. The Peer appends every
transaction's update before it reports or sends it, and now and then folds the
log into a new snapshot with :meth:`Store.compact`.

Rules every implementation follows (``crdtsync.testing.check_store`` checks them):

* :meth:`~Store.append` is durable when it returns: after a crash, a reopened
  store holds the update. Log sequence numbers increase and are never reused.
  :meth:`~Store.append_many` is the same for a batch, atomically.
* :meth:`~Store.compact` is atomic: a crash leaves either the old snapshot and
  log, or the new snapshot and the log entries after ``upto``; never less.
* :meth:`~Store.compact` may run in a worker thread while other methods run in
  the event loop's thread: implementations serialize internally.
* Idempotent where it makes sense: ``delete`` of a missing document and a
  second ``close`` do nothing; ``compact`` with an ``upto`` already folded only
  replaces the snapshot.
* Bytes are opaque: a store never interprets snapshots or updates.
* One writer per document: the Peer assumes nobody else appends to or compacts
  a document it holds (``compact``'s ``upto`` covers the log it knows). A store
  enforces it one of two ways, and says so with
  :class:`~crdtsync.errors.StoreLockedError` either way: a single-writer store
  (SQLite, or PostgreSQL without a fence) refuses to *open* while another
  store writes the same file or schema; a shared store (the nodes of a relay
  cluster on one PostgreSQL schema) opens alongside the others and refuses a
  *write* to a document whose ownership (the room lease) this writer lost,
  storing nothing. Either way the caller must stop writing that document and
  load it again before it writes more.
* A write that raised may still have been stored (a connection lost after the
  commit left): callers may write the same update again, and duplicates of a
  Yjs update are harmless. A write that returned is never lost.
* Synchronous, and each write waits for durability: see
  :class:`~crdtsync.store.worker.StoreWorker` for running them off the event
  loop with group commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Store", "StoredDoc"]


@dataclass(frozen=True)
class StoredDoc:
    """What a store holds for one document.

    Attributes:
        epoch: the document's incarnation (``b""`` for the original one).
        snapshot: ``Doc.save()`` bytes, or None before the first compaction.
        updates: ``(log sequence number, Yjs v1 update)`` appended after the
            snapshot, oldest first.
    """

    epoch: bytes
    snapshot: bytes | None = None
    updates: list[tuple[int, bytes]] = field(default_factory=list)


@runtime_checkable
class Store(Protocol):
    """A durable home for documents (SQLite by default; in memory for tests)."""

    def load(self, name: str) -> StoredDoc | None:
        """The stored document ``name``, or None if there is none."""
        ...

    def create(self, name: str, epoch: bytes) -> None:
        """Store an empty document ``name`` of incarnation ``epoch``, replacing any other.

        Durable when it returns.
        """
        ...

    def append(self, name: str, update: bytes) -> int:
        """Append an update to the log of ``name``; durable when it returns.

        Returns:
            The update's log sequence number (increasing, never reused).

        Raises:
            StoreLockedError: another writer holds ``name`` (a shared store); nothing stored.
            StoreError: there is no document ``name``, or the write failed.
        """
        ...

    def append_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        """Append several ``(name, update)`` pairs in one durable transaction (group commit).

        All or nothing: on failure none is appended. The Peer batches the updates
        it imports between two sends, so one fsync covers many of them.

        Returns:
            Their log sequence numbers, in order.

        Raises:
            StoreLockedError: another writer holds one of the documents; nothing stored.
            StoreError: a document is missing, or the write failed.
        """
        ...

    def compact(self, name: str, snapshot: bytes, upto: int) -> None:
        """Atomically make ``snapshot`` the document's snapshot and drop log entries <= ``upto``.

        ``snapshot`` must contain every update of the log up to ``upto``.

        Raises:
            StoreError: there is no document ``name``, or the write failed.
        """
        ...

    def delete(self, name: str) -> None:
        """Remove document ``name`` (nothing if there is none)."""
        ...

    def names(self) -> list[str]:
        """Names of the stored documents, sorted."""
        ...

    def close(self) -> None:
        """Release the store (its file lock); idempotent."""
        ...
