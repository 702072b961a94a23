"""The default store: one SQLite file (stdlib ``sqlite3``), WAL, ``synchronous=FULL``.

Layout::

    docs(name TEXT PRIMARY KEY, epoch BLOB, snapshot BLOB)      -- one row per document
    log(seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, data BLOB)
    meta(key TEXT PRIMARY KEY, value)                           -- schema version

Durability: every method that writes is one SQLite transaction in WAL mode
with ``synchronous=FULL``, so the WAL is fsynced before ``COMMIT`` returns and
a committed append survives a process kill or power loss. (``NORMAL`` would
survive a process kill but may lose the last commits on power loss: not what
"durable before it is sent" promises.) ``AUTOINCREMENT`` keeps log sequence
numbers from ever being reused, so a compaction's ``upto`` can never cover a
later append.

Compaction is one transaction (write the snapshot, delete the folded log
entries): a crash before its commit leaves the old snapshot and the whole log,
after it the new snapshot and the rest of the log. There is no window in which
an update exists in neither.

Exclusivity: the store takes an exclusive ``flock`` on ``<path>.lock`` for as
long as it is open. A second store on the same file, in this process or
another, gets :class:`~crdtsync.errors.StoreLockedError` at once instead of
interleaving writes with the first. (SQLite's own ``locking_mode=EXCLUSIVE``
would also exclude the other process, but only once the first transaction ran,
and with a busy error rather than a clear one.)

Readers: ``SQLiteStore(path, readonly=True)`` takes no lock and opens the file
read-only, so it works while a Peer or relay holds the store (``crdtsync cat``).
WAL gives it a consistent snapshot per call; every writing method raises
:class:`~crdtsync.errors.StoreError`.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from crdtsync.errors import StoreError, StoreLockedError
from crdtsync.store.base import StoredDoc

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS docs (name TEXT PRIMARY KEY, epoch BLOB NOT NULL, snapshot BLOB);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL REFERENCES docs(name) ON DELETE CASCADE,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_name ON log (name, seq);
"""


class SQLiteStore:
    r"""A :class:`~crdtsync.store.base.Store` in one SQLite file.

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "notes.db")
        >>> with SQLiteStore(path) as store:
        ...     store.create("shopping", b"")
        ...     store.append("shopping", b"\\x00\\x00")
        1

    Args:
        path: the database file (created if missing, unless ``readonly``).
        readonly: open an existing store for reading only, without taking the
            writer's lock (it may be in use by a Peer or a relay).

    Raises:
        StoreLockedError: another store has the file open (not for ``readonly``).
        StoreError: the file is not a crdtsync store, or cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        # Whether writes are refused (and no lock is held).
        self.readonly = readonly
        self._mutex = threading.Lock()
        if readonly:
            self._lock_fd = -1
            self._open_readonly()
            self._closed = False
            return
        # The lock file descriptor: held (flock) for the store's lifetime.
        try:
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open store at {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreLockedError(
                f"{self.path} is open in another process (or another store object)"
            ) from None
        # One connection, used from the event loop and from compaction threads,
        # serialized by the mutex.
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._txn():
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(stmt)
                row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
                elif row[0] != _SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: store schema {row[0]}, this release reads {_SCHEMA_VERSION}"
                    )
        except sqlite3.Error as exc:
            self._release()
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc
        except StoreError:
            self._release()
            raise
        self._closed = False

    def _open_readonly(self) -> None:
        if not self.path.is_file():
            raise StoreError(f"cannot open store at {self.path}: no such file")
        try:
            self._db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
            )
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.Error as exc:
            self._release()
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc
        if row is None or row[0] != _SCHEMA_VERSION:
            self._release()
            found = "no schema" if row is None else f"schema {row[0]}"
            raise StoreError(
                f"{self.path}: not a crdtsync store this release reads ({found}, "
                f"expected {_SCHEMA_VERSION})"
            )

    def _release(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)

    def _check_writable(self, what: str) -> None:
        if self.readonly:
            raise StoreError(f"{what} on {self.path}: the store was opened read-only")

    def _txn(self) -> _Transaction:
        return _Transaction(self._db)

    def _run(self, what: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._mutex:
            if self._closed:
                raise StoreError("the store is closed")
            try:
                if self.readonly:
                    # One read transaction: a consistent snapshot under WAL.
                    with _ReadTransaction(self._db):
                        return fn(self._db)
                with self._txn():
                    return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreError(f"{what} failed on {self.path}: {exc}") from exc

    def load(self, name: str) -> StoredDoc | None:
        """See :meth:`Store.load`."""

        def op(db: sqlite3.Connection) -> StoredDoc | None:
            row = db.execute("SELECT epoch, snapshot FROM docs WHERE name=?", (name,)).fetchone()
            if row is None:
                return None
            log = db.execute(
                "SELECT seq, data FROM log WHERE name=? ORDER BY seq", (name,)
            ).fetchall()
            return StoredDoc(
                bytes(row[0]),
                None if row[1] is None else bytes(row[1]),
                [(s, bytes(d)) for s, d in log],
            )

        return self._run("load", op)

    def create(self, name: str, epoch: bytes) -> None:
        """See :meth:`Store.create`."""
        self._check_writable("create")

        def op(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM log WHERE name=?", (name,))
            db.execute("INSERT OR REPLACE INTO docs VALUES (?, ?, NULL)", (name, bytes(epoch)))

        self._run("create", op)

    def append(self, name: str, update: bytes) -> int:
        """See :meth:`Store.append`."""
        self._check_writable("append")

        def op(db: sqlite3.Connection) -> int:
            try:
                cur = db.execute(
                    "INSERT INTO log (name, data) VALUES (?, ?)", (name, bytes(update))
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"no document {name!r} in the store") from None
            seq = cur.lastrowid
            assert seq is not None
            return seq

        return self._run("append", op)

    def append_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        """See :meth:`Store.append_many`: one transaction, one fsync."""
        self._check_writable("append")

        def op(db: sqlite3.Connection) -> list[int]:
            seqs = []
            for name, update in items:
                try:
                    cur = db.execute(
                        "INSERT INTO log (name, data) VALUES (?, ?)", (name, bytes(update))
                    )
                except sqlite3.IntegrityError:
                    raise StoreError(f"no document {name!r} in the store") from None
                assert cur.lastrowid is not None
                seqs.append(cur.lastrowid)
            return seqs

        return self._run("append", op) if items else []

    def compact(self, name: str, snapshot: bytes, upto: int) -> None:
        """See :meth:`Store.compact`."""
        self._check_writable("compact")

        def op(db: sqlite3.Connection) -> None:
            cur = db.execute("UPDATE docs SET snapshot=? WHERE name=?", (bytes(snapshot), name))
            if cur.rowcount != 1:
                raise StoreError(f"no document {name!r} in the store")
            db.execute("DELETE FROM log WHERE name=? AND seq<=?", (name, upto))

        self._run("compact", op)

    def delete(self, name: str) -> None:
        """See :meth:`Store.delete`."""
        self._check_writable("delete")

        def op(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM log WHERE name=?", (name,))
            db.execute("DELETE FROM docs WHERE name=?", (name,))

        self._run("delete", op)

    def names(self) -> list[str]:
        """See :meth:`Store.names`."""

        def op(db: sqlite3.Connection) -> list[str]:
            return [r[0] for r in db.execute("SELECT name FROM docs ORDER BY name")]

        return self._run("names", op)

    def close(self) -> None:
        """See :meth:`Store.close`."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._release()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ReadTransaction:
    """``BEGIN`` ... ``COMMIT``: a deferred (read) transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, *exc: object) -> None:
        self._db.execute("COMMIT")


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
