"""Room leases in PostgreSQL: who owns a room, since which epoch, and fencing by that epoch.

Theory of operation (the argument in full is in ``docs/CLUSTER.md``).

Two tables live beside the store's, in the same schema::

    nodes(id bigint PRIMARY KEY, url text, expires_at timestamptz,
          backend_pid int, backend_start timestamptz, started_at timestamptz)
    leases(room bytea PRIMARY KEY, owner bigint NULL, epoch bigint, acquired_at timestamptz)

* A **node** is one relay process: a random 63-bit id drawn at start (a restarted
  process is a new node), the URL other nodes reach it at, and ``expires_at``,
  renewed by its heartbeat. A node is *alive* while ``expires_at > now()`` on
  the database's clock and the database session it registered from still
  exists (so a node killed with SIGKILL is seen dead as soon as PostgreSQL
  notices its connection closed, not a TTL later; a paused node keeps its
  connection, and its lease runs out on time).
* A room's **lease** is its ``leases`` row: the owner node and the *epoch*,
  which grows by one at every change of owner and is never reused (a released
  lease keeps its row and epoch). A lease is held while its owner is alive:
  one heartbeat renews every room of a node (one ``UPDATE``, however many rooms).
* **Acquiring** takes the row ``FOR UPDATE`` and changes the owner only if the
  current one is dead or gone (or is the caller), in one transaction.
* **Fencing**: every write of a room (append, compaction, create, delete) first
  runs ``SELECT ... FOR SHARE`` on the room's lease row, joined with the writer's
  node row, in the write's own transaction, and checks the epoch the writer
  holds (:class:`LeaseFence`, the store's :class:`~crdtsync.store.postgres.WriteFence`).
  The share lock conflicts with the acquirer's ``FOR UPDATE``, so a takeover
  and a write of the same room are serialized: either the write commits
  first and the new owner, which loads the room after its takeover committed,
  sees it; or the takeover commits first and the write, re-checking the row,
  finds another owner or epoch and stores nothing.

Nothing here reads a node's clock: expiry is ``now()`` of PostgreSQL against a
time PostgreSQL wrote. Nodes send durations (the TTL), never timestamps. The
node's own view of how long its lease lasts (to stop serving before it ends)
is the sans-I/O :class:`~crdtsync.relay.cluster.heartbeat.NodeLease`.

Every method is synchronous and does one transaction on the object's own
connection (serialized by a lock): run them in a worker thread from asyncio.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from crdtsync.errors import StoreError, StoreLockedError
from crdtsync.store.postgres import OperationWatchdog, create_versioned_tables, encode_name

__all__ = ["Lease", "LeaseFence", "Leases", "Owner", "decode_event", "notify_channel"]

_log = logging.getLogger("crdtsync.relay.cluster")

_T = TypeVar("_T")

_SCHEMA_VERSION = "1"
_DDL_LOCK = 1  # the key of the lease tables' creation lock (the store's tables: 0)

_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.nodes (
    id bigint PRIMARY KEY,
    url text NOT NULL,
    expires_at timestamptz NOT NULL,
    backend_pid int NOT NULL,
    backend_start timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.leases (
    room bytea PRIMARY KEY,
    owner bigint,
    epoch bigint NOT NULL,
    acquired_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_owner ON {s}.leases (owner);
"""

# A node is alive while its heartbeat is fresh and its registering session exists.
_ALIVE = """(
    n.expires_at > now() AND EXISTS (
        SELECT 1 FROM pg_stat_activity a
        WHERE a.pid = n.backend_pid AND a.backend_start = n.backend_start))"""

_Q = {
    "get_version": "SELECT value FROM {s}.meta WHERE key = 'cluster'",
    "set_version": "INSERT INTO {s}.meta VALUES ('cluster', %s)",
    "register": (
        "INSERT INTO {s}.nodes (id, url, expires_at, backend_pid, backend_start) "
        "SELECT %(id)s, %(url)s, now() + make_interval(secs => %(ttl)s), pid, backend_start "
        "FROM pg_stat_activity WHERE pid = pg_backend_pid() "
        "ON CONFLICT (id) DO UPDATE SET url = excluded.url, expires_at = excluded.expires_at, "
        "backend_pid = excluded.backend_pid, backend_start = excluded.backend_start "
        "RETURNING 1"
    ),
    # Renewal keeps the session the node registered from current, too: after a
    # reconnect the new session is the one whose death means the node's.
    "heartbeat": (
        "UPDATE {s}.nodes AS n SET expires_at = now() + make_interval(secs => %(ttl)s), "
        "backend_pid = a.pid, backend_start = a.backend_start "
        "FROM pg_stat_activity a WHERE n.id = %(id)s AND a.pid = pg_backend_pid() "
        "RETURNING 1"
    ),
    "held": "SELECT room, epoch FROM {s}.leases WHERE owner = %s",
    "insert_lease": (
        "INSERT INTO {s}.leases (room, owner, epoch, acquired_at) VALUES (%s, %s, 1, now()) "
        "ON CONFLICT (room) DO NOTHING RETURNING epoch"
    ),
    # The row lock alone: a join in a locking query is re-evaluated, after waiting
    # for a concurrent takeover, with the joined rows of its first snapshot (the
    # previous owner's), so the owner is looked up by the next statement instead.
    "lock_lease": "SELECT owner, epoch FROM {s}.leases WHERE room = %s FOR UPDATE",
    "node_alive": "SELECT n.url, " + _ALIVE + " FROM {s}.nodes n WHERE n.id = %s",
    "me_alive": "SELECT " + _ALIVE + " FROM {s}.nodes n WHERE n.id = %s",
    "take_lease": (
        "UPDATE {s}.leases SET owner = %s, epoch = epoch + 1, acquired_at = now() "
        "WHERE room = %s RETURNING epoch"
    ),
    "owner": (
        "SELECT l.owner, l.epoch, n.url, COALESCE(" + _ALIVE + ", false) "
        "FROM {s}.leases l LEFT JOIN {s}.nodes n ON n.id = l.owner WHERE l.room = %s"
    ),
    "release": (
        "UPDATE {s}.leases SET owner = NULL "
        "WHERE room = %s AND owner = %s AND epoch = %s RETURNING epoch"
    ),
    "release_all": "UPDATE {s}.leases SET owner = NULL WHERE owner = %s RETURNING room, epoch",
    "unregister": "DELETE FROM {s}.nodes WHERE id = %s",
    "fence": (
        "SELECT l.room, l.epoch FROM {s}.leases l JOIN {s}.nodes n ON n.id = l.owner "
        "WHERE l.room = ANY(%s) AND l.owner = %s AND n.expires_at > now() "
        "FOR SHARE OF l"
    ),
    "node_urls": "SELECT n.url FROM {s}.nodes n WHERE " + _ALIVE,
    # The cluster's own key for hop headers when there is no token secret: made
    # once by whichever node asks first, read by every other.
    "make_key": ("INSERT INTO {s}.meta VALUES ('hop_key', %s) ON CONFLICT (key) DO NOTHING"),
    "get_key": "SELECT value FROM {s}.meta WHERE key = 'hop_key'",
    "forget_nodes": (
        "DELETE FROM {s}.nodes n WHERE n.expires_at < now() - make_interval(secs => %s) "
        "AND NOT EXISTS (SELECT 1 FROM {s}.leases l WHERE l.owner = n.id)"
    ),
}


@dataclass(frozen=True)
class Lease:
    """A room this node owns.

    Attributes:
        room: the room (document) name.
        epoch: the lease epoch (grows at every change of owner; fences writes).
        fresh: True when this acquisition changed the owner: load the room from
            the store now, after this returned, and discard any copy in memory
            (another node may have written it since). False when the node
            already held it without a break (its copy is current).
    """

    room: str
    epoch: int
    fresh: bool = True


@dataclass(frozen=True)
class Owner:
    """A room another node owns (serve its clients through that node).

    Attributes:
        room: the room name.
        node: the owner's node id.
        url: the owner's URL (``--node-url``).
        epoch: the lease epoch.
    """

    room: str
    node: int
    url: str
    epoch: int


def notify_channel(schema: str) -> str:
    """The ``LISTEN`` channel on which lease changes of ``schema`` are announced."""
    return f"{schema}_leases"


class Leases:
    """One node's side of the lease tables: register, heartbeat, acquire, release.

    Args:
        dsn: the cluster's database (the same as the store's).
        url: this node's URL, where other nodes proxy its rooms' clients to.
        ttl: seconds a heartbeat keeps the node (and so its leases) alive.
        schema: the PostgreSQL schema shared with the store.
        timeout: seconds to connect, and for any one operation (a silent
            network fails it after that long instead of hanging).
        node_id: this node's id (default: a random one; a restarted process is
            a new node).

    Raises:
        StoreError: PostgreSQL is unreachable, or the tables belong to another release.
    """

    def __init__(
        self,
        dsn: str,
        url: str,
        *,
        ttl: float = 10.0,
        schema: str = "crdtsync",
        timeout: float = 10.0,
        node_id: int | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        # This node's id: random 63 bits, so two processes never share one.
        self.node_id = node_id if node_id is not None else secrets.randbits(63)
        # The URL other nodes reach this one at.
        self.url = url
        # Seconds a heartbeat keeps this node alive.
        self.ttl = ttl
        # The schema of the tables.
        self.schema = schema
        # The fence the store of this node asks before each write.
        self.fence = LeaseFence(self)
        params: dict[str, Any] = dict(conninfo_to_dict(dsn))
        self._where = "PostgreSQL at {}:{}".format(
            params.get("host", "localhost"), params.get("port", 5432)
        )
        params.setdefault("connect_timeout", max(1, int(timeout)))
        params.setdefault("application_name", f"crdtsync-node-{self.node_id:x}")
        params["autocommit"] = True
        self._params = params
        s = sql.Identifier(schema)
        self._sql = {k: sql.SQL(v).format(s=s) for k, v in _Q.items()}
        self._channel = notify_channel(schema)
        # One transaction at a time on the connection; re-entered so that a
        # method's transaction and its update of what the node holds happen
        # together (a heartbeat never judges an acquisition half done).
        self._mutex = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        # room -> epoch: what this node holds, as far as it knows (the fence's view).
        self._held: dict[str, int] = {}
        self._held_lock = threading.Lock()
        self._watchdog = OperationWatchdog(timeout)
        self._closed = False
        self._registered = False

    # -- connection -----------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreError("the lease manager is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._conn = None
        try:
            conn = psycopg.connect(**self._params)
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach {self._where}: {_first_line(exc)}") from None
        token = self._watchdog.arm(conn)
        try:
            conn.execute("SET synchronous_commit TO on")
            self._create_tables(conn)
            if self._registered:
                # A new session: the node's liveness now hangs on this one.
                params = {"id": self.node_id, "ttl": self.ttl}
                conn.execute(self._sql["heartbeat"], params)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot set up {self._where}: {_first_line(exc)}") from None
        except BaseException:
            conn.close()
            raise
        finally:
            self._watchdog.disarm(token)
        self._conn = conn
        return conn

    def _create_tables(self, conn: psycopg.Connection[Any]) -> None:
        create_versioned_tables(
            conn,
            _DDL,
            self.schema,
            lock=_DDL_LOCK,
            get_version=self._sql["get_version"],
            set_version=self._sql["set_version"],
            version=_SCHEMA_VERSION,
            found=lambda v: f"schema {self.schema!r} has cluster tables of version {v}",
        )

    def _txn(
        self, what: str, fn: Callable[[psycopg.Connection[Any]], _T], *, retry: bool = False
    ) -> _T:
        """Run ``fn`` in one transaction.

        With ``retry`` (idempotent work only) a kept connection found broken is
        replaced and ``fn`` runs once more.
        """
        with self._mutex:
            for attempt in (1, 2):
                reused = self._conn is not None and not self._conn.closed
                conn = self._connection()
                token = self._watchdog.arm(conn)
                try:
                    with conn.transaction():
                        return fn(conn)
                except psycopg.Error as exc:
                    if conn.broken or isinstance(exc, psycopg.OperationalError):
                        conn.close()
                        if retry and reused and attempt == 1:
                            continue
                        raise StoreError(
                            f"{what} failed: lost {self._where}: {_first_line(exc)}"
                        ) from None
                    raise StoreError(
                        f"{what} failed in {self._where}: {_first_line(exc)}"
                    ) from None
                finally:
                    self._watchdog.disarm(token)
            raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection (the node's session ends: other nodes see it dead)."""
        with self._mutex:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._watchdog.stop()

    # -- the node -------------------------------------------------------------------

    def register(self) -> None:
        """Announce this node (alive for ``ttl`` seconds); call before anything else."""

        def op(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                self._sql["register"], {"id": self.node_id, "url": self.url, "ttl": self.ttl}
            )

        self._txn("register", op, retry=True)
        self._registered = True

    def heartbeat(self) -> dict[str, int]:
        """Renew this node's lease (and so every room it holds) for ``ttl`` seconds.

        Returns:
            The rooms this node holds according to the database, with their epochs.
            Rooms the node believed it held and that are missing were taken by
            another node (they are dropped from the fence).

        Raises:
            StoreLockedError: the node row is gone (it was forgotten after a long
                absence): drop every room and :meth:`register` again.
            StoreError: the database is unreachable (the lease runs on until
                its expiry; keep trying).
        """

        def op(conn: psycopg.Connection[Any]) -> dict[str, int] | None:
            params = {"id": self.node_id, "ttl": self.ttl}
            if conn.execute(self._sql["heartbeat"], params).fetchone() is None:
                return None
            rows = conn.execute(self._sql["held"], (self.node_id,)).fetchall()
            return {bytes(r[0]).decode("utf-8"): int(r[1]) for r in rows}

        with self._mutex:
            held = self._txn("heartbeat", op, retry=True)
            with self._held_lock:
                if held is None:
                    self._held.clear()
                    raise StoreLockedError(f"node {self.node_id:x} is no longer registered")
                for room, epoch in list(self._held.items()):
                    if held.get(room) != epoch:
                        del self._held[room]
        return dict(held)

    def unregister(self) -> None:
        """Release every room and remove this node (a clean shutdown, after the drain)."""

        def op(conn: psycopg.Connection[Any]) -> None:
            rows = conn.execute(self._sql["release_all"], (self.node_id,)).fetchall()
            for room, epoch in rows:
                self._notify(conn, bytes(room), int(epoch), None)
            conn.execute(self._sql["unregister"], (self.node_id,))

        with self._mutex:
            with self._held_lock:
                self._held.clear()
            self._txn("unregister", op)

    def node_urls(self) -> list[str]:
        """The URLs (``--node-url``) of the nodes alive now, this one included."""

        def op(conn: psycopg.Connection[Any]) -> list[str]:
            return [str(r[0]) for r in conn.execute(self._sql["node_urls"]).fetchall()]

        return self._txn("node urls", op)

    def cluster_key(self) -> bytes:
        """The cluster's random 32-byte key, kept in the database (made by the first asker).

        Whoever can read the cluster's tables has it: the same people who could
        rewrite every room anyway.
        """

        def op(conn: psycopg.Connection[Any]) -> bytes:
            conn.execute(self._sql["make_key"], (secrets.token_hex(32),))
            row = conn.execute(self._sql["get_key"]).fetchone()
            if row is None:  # (inserted or already there in this very transaction)
                raise StoreError("the cluster key could not be read")
            return bytes.fromhex(str(row[0]))

        return self._txn("cluster key", op, retry=True)

    def forget_dead_nodes(self, older_than: float = 86400.0) -> int:
        """Delete node rows dead for ``older_than`` seconds that own no room."""

        def op(conn: psycopg.Connection[Any]) -> int:
            return int(conn.execute(self._sql["forget_nodes"], (older_than,)).rowcount)

        return self._txn("forget nodes", op)

    # -- rooms ---------------------------------------------------------------------

    def acquire(self, room: str) -> Lease | Owner:
        """Own ``room`` if nobody alive does.

        Waits (on the row lock) for writes of the previous owner that are in
        flight, so everything it stored is visible to a load made after this returns.

        Returns:
            :class:`Lease` when this node owns the room (``fresh``: it just took
            it, load the room now), or the :class:`Owner` that does.

        Raises:
            StoreLockedError: this node is not alive itself (its heartbeat lapsed).
            StoreError: the database failed.
        """
        key = encode_name(room)

        def op(conn: psycopg.Connection[Any]) -> Lease | Owner:
            me = conn.execute(self._sql["me_alive"], (self.node_id,)).fetchone()
            if me is None or not me[0]:
                raise StoreLockedError(f"node {self.node_id:x} is not alive: register again")
            row = conn.execute(self._sql["insert_lease"], (key, self.node_id)).fetchone()
            if row is not None:
                self._notify(conn, key, 1, self.node_id)
                return Lease(room, 1)
            locked = conn.execute(self._sql["lock_lease"], (key,)).fetchone()
            assert locked is not None  # the row exists: the insert conflicted on it
            owner, epoch = locked
            url, alive = None, False
            if owner is not None:
                # A new statement, so a new snapshot: taken after the row lock was
                # granted, it sees the owner a concurrent takeover committed.
                found = conn.execute(self._sql["node_alive"], (owner,)).fetchone()
                if found is not None:
                    url, alive = found
            if owner == self.node_id and alive:
                return Lease(room, int(epoch), fresh=False)
            if owner is not None and alive:
                return Owner(room, int(owner), str(url), int(epoch))
            taken = conn.execute(self._sql["take_lease"], (self.node_id, key)).fetchone()
            assert taken is not None
            self._notify(conn, key, int(taken[0]), self.node_id)
            return Lease(room, int(taken[0]))

        with self._mutex:
            result = self._txn("acquire", op)
            with self._held_lock:
                if isinstance(result, Lease):
                    # Only after the commit: never an epoch the database does not hold.
                    self._held[room] = result.epoch
                else:
                    self._held.pop(room, None)
        return result

    def owner(self, room: str) -> Owner | None:
        """Who owns ``room`` now (None: nobody alive; :meth:`acquire` it)."""
        key = encode_name(room)

        def op(conn: psycopg.Connection[Any]) -> Owner | None:
            row = conn.execute(self._sql["owner"], (key,)).fetchone()
            if row is None or row[0] is None or not row[3]:
                return None
            return Owner(room, int(row[0]), str(row[2]), int(row[1]))

        return self._txn("owner", op, retry=True)

    def release(self, room: str) -> bool:
        """Give ``room`` up (after its last write): another node may take it at once.

        Returns:
            False if this node did not hold it (any more).
        """
        key = encode_name(room)
        with self._mutex:
            with self._held_lock:
                epoch = self._held.pop(room, None)
            if epoch is None:
                return False

            def op(conn: psycopg.Connection[Any]) -> bool:
                row = conn.execute(self._sql["release"], (key, self.node_id, epoch)).fetchone()
                if row is not None:
                    self._notify(conn, key, epoch, None)
                return row is not None

            return self._txn("release", op)

    def held(self) -> dict[str, int]:
        """The rooms this node believes it holds, with their epochs."""
        with self._held_lock:
            return dict(self._held)

    def forget(self, rooms: Iterable[str]) -> None:
        """Stop writing ``rooms`` (the fence refuses them from now on) without a round trip."""
        with self._held_lock:
            for room in rooms:
                self._held.pop(room, None)

    def _notify(
        self, conn: psycopg.Connection[Any], room: bytes, epoch: int, owner: int | None
    ) -> None:
        payload = json.dumps(
            {
                "room": base64.b64encode(room).decode(),
                "epoch": epoch,
                "owner": owner,
                "url": self.url if owner == self.node_id else None,
            },
            separators=(",", ":"),
        )
        if len(payload) > 7900:
            # NOTIFY payloads stop at 8000 bytes: say "something changed" and let
            # listeners ask (room names are at most 1 KiB, so this never happens
            # for names the protocol accepts).
            payload = json.dumps({"room": None, "epoch": epoch, "owner": owner, "url": None})
        conn.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))


class LeaseFence:
    """The store's :class:`~crdtsync.store.postgres.WriteFence` for one node.

    A write of rooms this node does not believe it holds is refused without a
    query; otherwise each room's lease row is read ``FOR SHARE`` in the write's
    transaction and must name this node, alive, at the epoch it holds.
    """

    def __init__(self, leases: Leases) -> None:
        self._leases = leases
        self._sql = sql.SQL(_Q["fence"]).format(s=sql.Identifier(leases.schema))
        # Writes refused, for the node's metrics.
        self.refused = 0

    def check(self, conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
        """See :meth:`crdtsync.store.postgres.WriteFence.check`."""
        held = self._leases.held()
        want = {n: held.get(n) for n in names}
        missing = [n for n, e in want.items() if e is None]
        if missing:
            self.refused += 1
            raise StoreLockedError(
                f"room {missing[0]!r} is not owned by node {self._leases.node_id:x}"
            )
        keys = [encode_name(n) for n in names]
        rows = conn.execute(self._sql, (keys, self._leases.node_id)).fetchall()
        got = {bytes(r[0]).decode("utf-8"): int(r[1]) for r in rows}
        stale = [n for n, e in want.items() if got.get(n) != e]
        if stale:
            self.refused += 1
            self._leases.forget(stale)
            raise StoreLockedError(
                f"room {stale[0]!r}: the lease of node {self._leases.node_id:x} at epoch "
                f"{want[stale[0]]} is lost (fenced)"
            )


def decode_event(payload: str) -> tuple[str | None, int, int | None, str | None]:
    """A lease notification: ``(room or None, epoch, owner node or None, owner url or None)``.

    Raises:
        ValueError: the payload is not one of ours.
    """
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("not a lease event")
    room = data.get("room")
    name = None if room is None else base64.b64decode(room).decode("utf-8")
    owner = data.get("owner")
    url = data.get("url")
    return name, int(data["epoch"]), None if owner is None else int(owner), url


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.split("\n", 1)[0] if text else type(exc).__name__
