"""PostgresStore: the shared acceptance suite on a real PostgreSQL, and its own rules."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from helpers.postgres import PgServer
from helpers.waiting import eventually

from crdtsync import Peer, Store, StoreError, StoreLockedError
from crdtsync.store.postgres import PostgresStore
from crdtsync.testing import check_store


@pytest.mark.anyio
async def test_postgres_store_passes_the_suite(pg_dsn: str) -> None:
    def reopen(store: Store) -> Store:
        store.close()
        return PostgresStore(pg_dsn)

    await check_store(lambda: PostgresStore(pg_dsn), reopen=reopen)


@pytest.mark.anyio
async def test_the_suite_in_two_schemas_of_one_database(pg_dsn: str) -> None:
    # Two exclusive stores coexist in one database when their schemas differ.
    with PostgresStore(pg_dsn, schema="other") as other:
        other.create("mine", b"")
        await check_store(lambda: PostgresStore(pg_dsn, schema="suite"))
        assert other.names() == ["mine"]


def test_it_is_a_store(pg_dsn: str) -> None:
    with PostgresStore(pg_dsn) as s:
        assert isinstance(s, Store)


def test_commits_are_synchronous_whatever_the_database_says(
    pg_server: PgServer, pg_dsn: str
) -> None:
    dbname = pg_dsn.rsplit("/", 1)[1]
    pg_server.psql(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SHOW synchronous_commit").fetchone() == ("off",)
    with PostgresStore(pg_dsn) as s:
        s.create("d", b"")
        s.append("d", b"u")
        for conn in (s._writer, s._reader):
            if conn is not None:
                assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_a_second_store_on_the_same_schema_is_refused(pg_dsn: str) -> None:
    with PostgresStore(pg_dsn) as s:
        s.create("d", b"")
        with pytest.raises(StoreLockedError, match="open by another store"):
            PostgresStore(pg_dsn)
        code = textwrap.dedent(
            f"""
            from crdtsync.store.postgres import PostgresStore
            from crdtsync.errors import StoreLockedError
            try:
                PostgresStore({pg_dsn!r})
            except StoreLockedError as exc:
                print("locked:", exc)
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
        )
        assert out.stdout.startswith("locked:"), out.stdout + out.stderr
    with PostgresStore(pg_dsn) as s:  # released on close
        assert s.names() == ["d"]


def test_close_releases_the_lock_before_it_returns(pg_dsn: str) -> None:
    # Found by the full run: closing only the connection frees the lock when the
    # server ends the session, a moment later; a reopen right away was refused.
    for i in range(20):
        with PostgresStore(pg_dsn) as s:
            s.create(f"d{i}", b"")
    with PostgresStore(pg_dsn, fence=_Refuse("x")) as shared:
        shared.create("shared", b"")
    with PostgresStore(pg_dsn) as s:
        assert len(s.names()) == 21


def test_the_lock_of_a_killed_process_is_released(pg_dsn: str) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        from crdtsync.store.postgres import PostgresStore
        s = PostgresStore({pg_dsn!r})
        s.create("d", b"")
        s.append("d", b"acked")
        print("ready", flush=True)
        sys.stdin.readline()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            with pytest.raises(StoreLockedError):
                PostgresStore(pg_dsn)
        finally:
            proc.kill()
            proc.wait(60)
    # The server notices the dead connection and its session lock goes with it.
    deadline = 60.0
    store: PostgresStore | None = None
    import time

    start = time.monotonic()
    while store is None:
        try:
            store = PostgresStore(pg_dsn)
        except StoreLockedError:
            if time.monotonic() - start > deadline:
                raise
            time.sleep(0.05)  # (noqa: sleep) polls another process's exit for its lock, bounded
    with store:
        doc = store.load("d")
        assert doc is not None
        assert [u for _, u in doc.updates] == [b"acked"]


class _Refuse:
    """A fence that refuses one document and records what it was asked."""

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.asked: list[list[str]] = []

    def check(self, conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
        self.asked.append(list(names))
        if self.refused in names:
            raise StoreLockedError(f"{self.refused!r} is held by another writer")


def test_a_fence_sees_every_write_and_refuses_atomically(pg_dsn: str) -> None:
    fence = _Refuse("theirs")
    with PostgresStore(pg_dsn, fence=fence) as s, PostgresStore(pg_dsn, fence=_Refuse("x")) as t:
        # Shared mode: several fenced stores on one schema.
        s.create("mine", b"")
        t.create("theirs", b"")
        with pytest.raises(StoreLockedError):
            s.create("theirs", b"")
        s.append("mine", b"1")
        with pytest.raises(StoreLockedError):
            s.append_many([("mine", b"2"), ("theirs", b"x")])
        with pytest.raises(StoreLockedError):
            s.compact("theirs", b"snap", 10)
        with pytest.raises(StoreLockedError):
            s.delete("theirs")
        s.append_many([("mine", b"3"), ("mine", b"4")])
        doc = s.load("mine")
        assert doc is not None
        assert [u for _, u in doc.updates] == [b"1", b"3", b"4"], "a refused batch wrote"
        theirs = t.load("theirs")
        assert theirs is not None
        assert theirs.updates == []
        assert ["mine", "theirs"] in fence.asked
        assert ["mine"] in fence.asked  # a batch names each document once
        # An exclusive store cannot open while fenced ones share the schema.
        with pytest.raises(StoreLockedError, match="open by another store"):
            PostgresStore(pg_dsn)
    with PostgresStore(pg_dsn) as exclusive:
        with pytest.raises(StoreLockedError, match="exclusive"):
            PostgresStore(pg_dsn, fence=_Refuse("x"))
        assert exclusive.names() == ["mine", "theirs"]


def test_names_are_stored_exactly(pg_dsn: str) -> None:
    names = ["b", "a\x00nul", "é", "z", "文档", "A", "\U0001f600"]
    with PostgresStore(pg_dsn) as s:
        for n in names:
            s.create(n, b"")
            s.append(n, n.encode())
        assert s.names() == sorted(names)
        for n in names:
            doc = s.load(n)
            assert doc is not None
            assert doc.updates[0][1] == n.encode()
        with pytest.raises(StoreError, match="not valid Unicode"):
            s.create("\ud800", b"")


def test_a_load_never_misses_entries_a_compaction_folds_meanwhile(pg_dsn: str) -> None:
    # load() reads the snapshot and the log in one snapshot: with two separate
    # reads, a compaction between them would hide the folded entries from it.
    with PostgresStore(pg_dsn) as s:
        s.create("d", b"")
        stop = threading.Event()
        errors: list[str] = []
        folded = 0

        def loads() -> None:
            while not stop.is_set():
                n = folded  # appended and committed before this load starts
                doc = s.load("d")
                assert doc is not None
                got = {u for _, u in doc.updates}
                snap = set((doc.snapshot or b"").split(b",")) - {b""}
                missing = {b"%d" % i for i in range(n)} - got - snap
                if missing:
                    errors.append(f"load missed {sorted(missing)[:3]}")
                    return

        t = threading.Thread(target=loads)
        t.start()
        try:
            seen: list[bytes] = []
            for i in range(60):
                seq = s.append("d", b"%d" % i)
                seen.append(b"%d" % i)
                if i % 5 == 4:
                    s.compact("d", b",".join(seen), seq)
                folded = i + 1
        finally:
            stop.set()
            t.join(60)
        assert not errors, errors


def test_an_unreachable_database_is_a_clear_store_error(pg_server: PgServer) -> None:
    from helpers.postgres import free_port

    with pytest.raises(StoreError, match=r"cannot reach PostgreSQL at 127\.0\.0\.1"):
        PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout=2)
    with pytest.raises(StoreError, match="invalid PostgreSQL DSN"):
        PostgresStore("postgresql://[bad")
    with pytest.raises(StoreError, match="schema name"):
        PostgresStore(pg_server.dsn(), schema="Robert'); DROP TABLE")


def test_another_release_schema_is_refused(pg_dsn: str) -> None:
    with PostgresStore(pg_dsn):
        pass
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("UPDATE crdtsync.meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="store schema 99"):
        PostgresStore(pg_dsn)


def test_the_store_recovers_after_the_server_restarts(pg_own_server: PgServer) -> None:
    dsn = pg_own_server.create_database("r")
    with PostgresStore(dsn, timeout=10) as s:
        s.create("d", b"")
        s.append("d", b"before")
        pg_own_server.restart(mode="immediate")
        # The first calls may find the broken connections; they fail cleanly...
        results = []
        failures = []
        for i in range(3):
            try:
                results.append(s.append("d", b"after%d" % i))
            except StoreError as exc:
                failures.append(str(exc))
        assert all("lost PostgreSQL" in f or "cannot reach" in f for f in failures), failures
        # ...and the store reconnects (and takes its lock again) by itself.
        assert results, "the store did not reconnect"
        doc = s.load("d")
        assert doc is not None
        assert doc.updates[0][1] == b"before"
        assert len(doc.updates) == 1 + len(results)


@pytest.mark.anyio
async def test_a_peer_keeps_its_documents_in_postgres(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    async with Peer(store=store) as peer:
        doc = await peer.open("shopping")
        doc.list("items").append("milk")
        doc.list("items").append("bread")
    store.close()
    store = PostgresStore(pg_dsn)
    try:
        async with Peer(store=store) as peer:
            doc = await peer.open("shopping")
            assert list(doc.list("items")) == ["milk", "bread"]
    finally:
        store.close()


@pytest.mark.anyio
async def test_two_peers_sync_through_postgres_backed_stores(pg_dsn: str) -> None:
    from crdtsync.transports.memory import MemoryNetwork

    net = MemoryNetwork()
    a_store = PostgresStore(pg_dsn, schema="a")
    b_store = PostgresStore(pg_dsn, schema="b")
    try:
        async with (
            Peer(store=a_store, transport=net.transport("a")) as a,
            Peer(store=b_store, transport=net.transport("b")) as b,
        ):
            addr = await a.listen("mem://a")
            doc = await b.open("notes")
            doc.text("t").insert(0, "hello")
            await b.connect(addr)
            assert await b.wait_synced("notes", timeout=30)
            remote = await a.open("notes")
            await eventually(lambda: str(remote.text("t")) == "hello", 30, "the remote edit")
    finally:
        a_store.close()
        b_store.close()
    with PostgresStore(pg_dsn, schema="a") as again:
        stored = again.load("notes")
        assert stored is not None
        assert stored.updates or stored.snapshot


def test_tables_of_another_schema_version_are_refused(pg_dsn: str) -> None:
    with PostgresStore(pg_dsn, schema="versioned") as s:
        s.create("d", b"")
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("UPDATE versioned.meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match=r"has store schema 99, this release reads 1"):
        PostgresStore(pg_dsn, schema="versioned")
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        # Nothing was written over the newer tables.
        assert c.execute("SELECT value FROM versioned.meta WHERE key = 'schema'").fetchone() == (
            "99",
        )
