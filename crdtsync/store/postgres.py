"""A store in PostgreSQL (psycopg 3, the ``crdtsync[postgres]`` extra).

Layout, in a PostgreSQL schema of its own (``crdtsync`` unless told)::

    meta(key text PRIMARY KEY, value text)                     -- schema version
    docs(name bytea PRIMARY KEY, epoch bytea, snapshot bytea)  -- one row per document
    log(seq bigint IDENTITY PRIMARY KEY, name bytea REFERENCES docs ON DELETE CASCADE,
        data bytea)                                            -- the append-only log

Names are stored as their UTF-8 bytes: any Python text a Peer accepts is stored
exactly (PostgreSQL's ``text`` refuses NUL) and sorts by code point, as
:meth:`~crdtsync.store.base.Store.names` promises, whatever the database's collation.

Durability: every write is one transaction, committed with
``synchronous_commit = on`` (set on each connection, whatever the server,
database or role says), so a write that returned is in PostgreSQL's fsynced WAL.
The store warns once when the server runs with ``fsync = off``, which no
setting of ours can undo. Log sequence numbers come from an identity column,
so they increase and are never reused. :meth:`~PostgresStore.append_many` is
one ``INSERT ... SELECT FROM unnest(...)``: one round trip, one commit.

A write reported failed may still have committed (the connection broke after
``COMMIT`` left and before its answer came back). The Peer then appends the
same updates again: a Yjs update applied twice is applied once, so the
duplicate log entry costs bytes, never correctness.

Readers see one consistent snapshot: :meth:`~PostgresStore.load` reads the
document row and its log in one ``REPEATABLE READ`` transaction, so a
compaction committing in between cannot hide a log entry from it.

Who may write (``StoreLockedError``):

* Without a ``fence`` the store is the only writer of its schema, as an
  :class:`~crdtsync.store.sqlite.SQLiteStore` is of its file: it holds an
  exclusive session-level advisory lock for as long as it is open, and a second
  store on the same schema (any process, any machine) gets
  :class:`~crdtsync.errors.StoreLockedError` at once. The lock lives on the
  connection that does every write, so a write can never happen without it:
  if the connection breaks, the next write reconnects and takes the lock again
  (or fails with ``StoreLockedError`` if another writer got it meanwhile).
* With a :class:`WriteFence` many stores share the schema (the nodes of a relay
  cluster), each holding the lock in shared mode (an exclusive store is refused
  while any of them is open, and the other way round). Exclusivity moves from
  the store to the document: every write transaction asks the fence first, in
  the same transaction, and the fence raises ``StoreLockedError`` for a
  document this writer does not hold (``crdtsync.relay.cluster`` fences by
  room lease epoch). So ``StoreLockedError`` keeps one meaning for every store:
  someone else is the writer; stop writing and load again.

Blocking: the methods are synchronous, like the seam, and each waits for a
network round trip plus PostgreSQL's WAL flush (see ``docs/CLUSTER.md`` for
measurements and for the worker-thread commit path that keeps this off the
event loop). A stuck server or a silent network cannot hang a call for ever:
an operation that takes longer than ``timeout`` has its socket shut down by a
watchdog thread and fails with :class:`~crdtsync.errors.StoreError`; the next
call reconnects.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import IsolationLevel, sql
from psycopg.conninfo import conninfo_to_dict

from crdtsync.errors import StoreError, StoreLockedError
from crdtsync.store.base import StoredDoc

__all__ = [
    "OperationWatchdog",
    "PostgresStore",
    "WriteFence",
    "create_versioned_tables",
    "encode_name",
]

_log = logging.getLogger("crdtsync.store.postgres")

_T = TypeVar("_T")

_SCHEMA_VERSION = "1"
# Advisory lock keys: (class, key). The class is ours ("crdt"); the key is the schema's hash.
_LOCK_CLASS = 0x63726474
_DDL_LOCK_CLASS = _LOCK_CLASS + 1  # serializes schema creation
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")

_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.docs (
    name bytea PRIMARY KEY,
    epoch bytea NOT NULL,
    snapshot bytea
);
CREATE TABLE IF NOT EXISTS {s}.log (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name bytea NOT NULL REFERENCES {s}.docs (name) ON DELETE CASCADE,
    data bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_name ON {s}.log (name, seq);
"""


def encode_name(name: str) -> bytes:
    """A document name as stored: its UTF-8 bytes.

    Raises:
        StoreError: the name is not valid Unicode text (a lone surrogate).
    """
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"document name {name!r} is not valid Unicode text") from None


class WriteFence(Protocol):
    """Decides, inside each write transaction, whether this writer may still write.

    A store built with a fence shares its schema with other writers; before
    every write (``create``, ``append``, ``append_many``, ``compact``,
    ``delete``) it calls :meth:`check` in the write's own transaction, so the
    decision and the write commit together or not at all.
    """

    def check(self, conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
        """Allow the write to ``names``, or raise.

        Args:
            conn: the store's connection, inside the write transaction
                (``READ COMMITTED``): row locks taken here are held until it commits.
            names: the documents the transaction writes (distinct).

        Raises:
            StoreLockedError: another writer holds one of ``names``; nothing is written.
            StoreError: the check itself failed.
        """
        ...


class PostgresStore:
    """A :class:`~crdtsync.store.base.Store` in a PostgreSQL database.

    Examples:
        A Python application keeping its documents in PostgreSQL::

            store = PostgresStore("postgresql://app@db.example/notes")
            async with Peer(store=store) as peer:
                doc = await peer.open("shopping")
            store.close()

    Args:
        dsn: a libpq connection string or ``postgresql://`` URI.
        schema: the PostgreSQL schema holding the tables (created if missing).
        fence: share the schema with other writers, each write allowed by the
            fence (see the module docstring); None: be its only writer.
        timeout: seconds allowed to connect, and for any one operation before
            its connection is shut down and the call fails.

    Raises:
        StoreLockedError: another store writes this schema (no ``fence``), or an
            exclusive one does (with a ``fence``).
        StoreError: PostgreSQL is unreachable, or the schema belongs to another
            release.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "crdtsync",
        fence: WriteFence | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not _IDENT.match(schema):
            raise StoreError(f"schema name {schema!r}: use lowercase letters, digits and _")
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise StoreError(f"invalid PostgreSQL DSN: {exc}") from None
        # Where the store lives, for messages (never the password).
        self.where = "PostgreSQL at {}:{}/{}".format(
            params.get("host", "localhost"), params.get("port", 5432), params.get("dbname", "")
        )
        # The schema of the tables.
        self.schema = schema
        self._fence = fence
        self._timeout = timeout
        self._params = _connection_params(params, timeout)
        s = sql.Identifier(schema)
        self._sql = {k: sql.SQL(v).format(s=s) for k, v in _QUERIES.items()}
        self._lock_key = _schema_key(schema)
        self._closed = False
        self._fsync_checked = False
        # The writing connection (holds the advisory lock) and the reading one,
        # each used by one thread at a time.
        self._wmutex = threading.Lock()
        self._rmutex = threading.Lock()
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._watchdog = OperationWatchdog(timeout)
        try:
            with self._wmutex:
                self._writer_conn()
        except BaseException:
            self._watchdog.stop()
            raise

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(**self._params)
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach {self.where}: {_first_line(exc)}") from None
        token = self._watchdog.arm(conn)
        try:
            # Acknowledged means in the WAL on disk, whatever the server's default.
            conn.execute("SET synchronous_commit TO on")
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot set up a connection to {self.where}: {exc}") from None
        finally:
            self._watchdog.disarm(token)
        return conn

    def _writer_conn(self) -> psycopg.Connection[Any]:
        """The writing connection, (re)connected and holding the advisory lock."""
        if self._closed:
            raise StoreError("the store is closed")
        conn = self._writer
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._writer = None
        conn = self._connect()
        try:
            token = self._watchdog.arm(conn)
            try:
                self._take_lock(conn)
                self._create_schema(conn)
            finally:
                self._watchdog.disarm(token)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot open the store in {self.where}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._writer = conn
        return conn

    def _reader_conn(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreError("the store is closed")
        conn = self._reader
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._reader = None
        conn = self._connect()
        # One consistent snapshot per load (a compaction may commit between two reads).
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        self._reader = conn
        return conn

    def _take_lock(self, conn: psycopg.Connection[Any]) -> None:
        fn = "pg_try_advisory_lock_shared" if self._fence is not None else "pg_try_advisory_lock"
        row = conn.execute(f"SELECT {fn}(%s, %s)", (_LOCK_CLASS, self._lock_key)).fetchone()
        if row is None or not row[0]:
            conn.close()
            if self._fence is not None:
                raise StoreLockedError(
                    f"schema {self.schema!r} in {self.where} is open by an exclusive store "
                    "(a Peer's PostgresStore without a fence)"
                )
            raise StoreLockedError(
                f"schema {self.schema!r} in {self.where} is open by another store "
                "(another process, or a relay cluster)"
            )

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        create_versioned_tables(
            conn,
            _DDL,
            self.schema,
            lock=0,
            get_version=self._sql["get_version"],
            set_version=self._sql["set_version"],
            version=_SCHEMA_VERSION,
            found=lambda v: f"schema {self.schema!r} in {self.where} has store schema {v}",
        )
        if not self._fsync_checked:
            self._fsync_checked = True
            row = conn.execute("SHOW fsync").fetchone()
            if row is not None and row[0] != "on":
                _log.warning(
                    "%s runs with fsync=%s: acknowledged updates may be lost if its machine "
                    "crashes",
                    self.where,
                    row[0],
                )

    def _write(
        self, what: str, names: Sequence[str], fn: Callable[[psycopg.Connection[Any]], _T]
    ) -> _T:
        """Run ``fn`` in one write transaction, fenced, with errors translated."""
        with self._wmutex:
            conn = self._writer_conn()
            token = self._watchdog.arm(conn)
            try:
                with conn.transaction():
                    if self._fence is not None:
                        self._fence.check(conn, names)
                    return fn(conn)
            except psycopg.errors.ForeignKeyViolation:
                raise StoreError(self._missing(names)) from None
            except psycopg.Error as exc:
                raise self._failed(what, conn, exc) from None
            finally:
                self._watchdog.disarm(token)

    def _read(self, what: str, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        with self._rmutex:
            conn = self._reader_conn()
            token = self._watchdog.arm(conn)
            try:
                with conn.transaction():
                    return fn(conn)
            except psycopg.Error as exc:
                raise self._failed(what, conn, exc) from None
            finally:
                self._watchdog.disarm(token)

    def _failed(self, what: str, conn: psycopg.Connection[Any], exc: psycopg.Error) -> StoreError:
        if conn.broken or isinstance(exc, psycopg.OperationalError):
            conn.close()  # the next call reconnects
            return StoreError(f"{what} failed: lost {self.where}: {_first_line(exc)}")
        return StoreError(f"{what} failed in {self.where}: {_first_line(exc)}")

    def _missing(self, names: Sequence[str]) -> str:
        try:
            present = set(self._read("load", lambda c: _present(c, self._sql["present"], names)))
        except StoreError:
            present = set()
        missing = [n for n in names if encode_name(n) not in present] or list(names)
        return f"no document {missing[0]!r} in the store"

    # -- the seam ---------------------------------------------------------------------

    def load(self, name: str) -> StoredDoc | None:
        """See :meth:`Store.load`."""
        key = encode_name(name)

        def op(conn: psycopg.Connection[Any]) -> StoredDoc | None:
            row = conn.execute(self._sql["get_doc"], (key,), binary=True).fetchone()
            if row is None:
                return None
            log = conn.execute(self._sql["get_log"], (key,), binary=True).fetchall()
            return StoredDoc(
                bytes(row[0]),
                None if row[1] is None else bytes(row[1]),
                [(int(seq), bytes(data)) for seq, data in log],
            )

        return self._read("load", op)

    def create(self, name: str, epoch: bytes) -> None:
        """See :meth:`Store.create`."""
        key = encode_name(name)

        def op(conn: psycopg.Connection[Any]) -> None:
            conn.execute(self._sql["clear_log"], (key,))
            conn.execute(self._sql["put_doc"], (key, bytes(epoch)))

        self._write("create", [name], op)

    def append(self, name: str, update: bytes) -> int:
        """See :meth:`Store.append`."""
        key = encode_name(name)

        def op(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(self._sql["append"], (key, bytes(update))).fetchone()
            assert row is not None
            return int(row[0])

        return self._write("append", [name], op)

    def append_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        """See :meth:`Store.append_many`: one statement, one transaction, one WAL flush."""
        if not items:
            return []
        keys = [encode_name(n) for n, _ in items]
        data = [bytes(u) for _, u in items]
        names = list(dict.fromkeys(n for n, _ in items))

        def op(conn: psycopg.Connection[Any]) -> list[int]:
            rows = conn.execute(self._sql["append_many"], (keys, data)).fetchall()
            # Identity values are drawn in the SELECT's order (ORDER BY ordinality),
            # so the sorted numbers are the items' numbers, in order.
            return sorted(int(r[0]) for r in rows)

        seqs = self._write("append", names, op)
        if len(seqs) != len(items):
            raise StoreError(f"append stored {len(seqs)} of {len(items)} updates")
        return seqs

    def compact(self, name: str, snapshot: bytes, upto: int) -> None:
        """See :meth:`Store.compact`."""
        key = encode_name(name)

        def op(conn: psycopg.Connection[Any]) -> None:
            cur = conn.execute(self._sql["set_snapshot"], (bytes(snapshot), key))
            if cur.rowcount != 1:
                raise _NoDocument(name)
            conn.execute(self._sql["fold_log"], (key, upto))

        try:
            self._write("compact", [name], op)
        except _NoDocument:
            raise StoreError(f"no document {name!r} in the store") from None

    def delete(self, name: str) -> None:
        """See :meth:`Store.delete`."""
        key = encode_name(name)

        def op(conn: psycopg.Connection[Any]) -> None:
            conn.execute(self._sql["delete_doc"], (key,))

        self._write("delete", [name], op)

    def names(self) -> list[str]:
        """See :meth:`Store.names`."""

        def op(conn: psycopg.Connection[Any]) -> list[str]:
            return [bytes(r[0]).decode("utf-8") for r in conn.execute(self._sql["names"])]

        return sorted(self._read("names", op))

    def close(self) -> None:
        """See :meth:`Store.close`: closes the connections (releasing the advisory lock)."""
        with self._wmutex, self._rmutex:
            if self._closed:
                return
            self._closed = True
            writer = self._writer
            if writer is not None and not writer.closed and not writer.broken:
                # Released now, not when the server gets round to ending the
                # session: a store reopened right after close() must find it free.
                shared = self._fence is not None
                fn = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
                token = self._watchdog.arm(writer)
                try:
                    writer.execute(f"SELECT {fn}(%s, %s)", (_LOCK_CLASS, self._lock_key))
                except psycopg.Error as exc:
                    _log.warning("could not release the store lock in %s: %s", self.where, exc)
                finally:
                    self._watchdog.disarm(token)
            for conn in (self._writer, self._reader):
                if conn is not None:
                    conn.close()
            self._writer = self._reader = None
        self._watchdog.stop()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_QUERIES = {
    "get_version": "SELECT value FROM {s}.meta WHERE key = 'schema'",
    "set_version": "INSERT INTO {s}.meta VALUES ('schema', %s)",
    "get_doc": "SELECT epoch, snapshot FROM {s}.docs WHERE name = %s",
    "get_log": "SELECT seq, data FROM {s}.log WHERE name = %s ORDER BY seq",
    "present": "SELECT name FROM {s}.docs WHERE name = ANY(%s)",
    "clear_log": "DELETE FROM {s}.log WHERE name = %s",
    "put_doc": (
        "INSERT INTO {s}.docs (name, epoch, snapshot) VALUES (%s, %s, NULL) "
        "ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch, snapshot = NULL"
    ),
    "append": "INSERT INTO {s}.log (name, data) VALUES (%s, %s) RETURNING seq",
    "append_many": (
        "INSERT INTO {s}.log (name, data) "
        "SELECT n, d FROM unnest(%s::bytea[], %s::bytea[]) WITH ORDINALITY AS t(n, d, i) "
        "ORDER BY i RETURNING seq"
    ),
    "set_snapshot": "UPDATE {s}.docs SET snapshot = %s WHERE name = %s",
    "fold_log": "DELETE FROM {s}.log WHERE name = %s AND seq <= %s",
    "delete_doc": "DELETE FROM {s}.docs WHERE name = %s",
    "names": "SELECT name FROM {s}.docs",
}


def create_versioned_tables(
    conn: psycopg.Connection[Any],
    ddl: str,
    schema: str,
    *,
    lock: int,
    get_version: sql.Composed,
    set_version: sql.Composed,
    version: str,
    found: Callable[[str], str],
) -> None:
    """Create ``ddl``'s tables in ``schema`` if missing, then check their version.

    Shared by the store's tables and the relay cluster's lease tables.

    Args:
        conn: an open connection (not in a transaction).
        ddl: ``CREATE ... IF NOT EXISTS`` statements, ``{s}`` standing for the schema.
        schema: the schema's name.
        lock: which tables (the key of their creation lock, in our lock class).
        get_version: reads the tables' version (one row, or none yet).
        set_version: records ``version`` (one parameter).
        version: the version this release reads and writes.
        found: the start of the error message, given the version found.

    Raises:
        StoreError: the tables are of another version.
    """
    with conn.transaction():
        # Serializes concurrent creators: CREATE ... IF NOT EXISTS alone can race.
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_DDL_LOCK_CLASS, lock))
        conn.execute(sql.SQL(ddl).format(s=sql.Identifier(schema)))
        row = conn.execute(get_version).fetchone()
        if row is None:
            conn.execute(set_version, (version,))
        elif row[0] != version:
            raise StoreError(f"{found(row[0])}, this release reads {version}")


class _NoDocument(Exception):
    """compact() of a missing document: rolls the transaction back, then becomes a StoreError."""


def _present(
    conn: psycopg.Connection[Any], query: sql.Composed, names: Sequence[str]
) -> list[bytes]:
    rows = conn.execute(query, ([encode_name(n) for n in names],)).fetchall()
    return [bytes(r[0]) for r in rows]


def _schema_key(schema: str) -> int:
    """A stable signed 32-bit key for the schema's advisory lock."""
    h = 2166136261
    for b in schema.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _connection_params(params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The DSN's parameters, with our defaults where it says nothing."""
    out = dict(params)
    out.setdefault("connect_timeout", max(1, int(timeout)))
    out.setdefault("application_name", "crdtsync")
    # A dead peer on a TCP connection is noticed in seconds, not hours.
    out.setdefault("keepalives", 1)
    out.setdefault("keepalives_idle", 5)
    out.setdefault("keepalives_interval", 2)
    out.setdefault("keepalives_count", 3)
    out["autocommit"] = True
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.split("\n", 1)[0] if text else type(exc).__name__


class OperationWatchdog:
    """Shuts down the socket of a database operation that overran its time.

    A silent network (a partition that drops packets, a proxy that holds
    them) leaves a blocking libpq call waiting for ever: keepalives are
    answered by whatever holds the connection. One watchdog thread per owner;
    :meth:`arm` and :meth:`disarm` cost a lock each. The blocked call then fails
    inside libpq with a broken connection, which its owner discards (the next
    call reconnects).

    Args:
        timeout: seconds an operation may take.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._cond = threading.Condition()
        # fd -> deadline (monotonic seconds) of the operation running on it.
        self._armed: dict[int, float] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="crdtsync-pg-watchdog", daemon=True)
        self._thread.start()

    def arm(self, conn: psycopg.Connection[Any]) -> int:
        """Start the clock for an operation on ``conn``; returns the token for :meth:`disarm`."""
        fd = conn.fileno()
        with self._cond:
            self._armed[fd] = time.monotonic() + self._timeout
            self._cond.notify()
        return fd

    def disarm(self, token: int) -> None:
        """The operation of ``token`` ended."""
        with self._cond:
            self._armed.pop(token, None)

    def stop(self) -> None:
        """End the watchdog thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5.0)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._armed:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                fd, deadline = min(self._armed.items(), key=lambda kv: kv[1])
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                del self._armed[fd]
                _log.warning("a PostgreSQL operation overran %.1f s: dropping it", self._timeout)
                try:
                    # A duplicate of the descriptor: shutdown() acts on the socket itself.
                    sock = socket.socket(fileno=socket.dup(fd))
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    finally:
                        sock.close()
                except OSError:
                    pass  # already gone: the operation is failing by itself
