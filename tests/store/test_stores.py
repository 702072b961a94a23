"""Stores: the shared acceptance suite, SQLite specifics, and the Peer's use of them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crdtsync import MemoryStore, Peer, SQLiteStore, Store, StoreError, StoreLockedError
from crdtsync.testing import check_store


@pytest.mark.anyio
async def test_memory_store_passes_the_suite() -> None:
    await check_store(MemoryStore)


@pytest.mark.anyio
async def test_sqlite_store_passes_the_suite(tmp_path: Path) -> None:
    path = tmp_path / "suite.db"

    def reopen(store: Store) -> Store:
        store.close()
        return SQLiteStore(path)

    await check_store(lambda: SQLiteStore(path), reopen=reopen)


def test_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryStore(), Store)
    with SQLiteStore(tmp_path / "p.db") as s:
        assert isinstance(s, Store)


def test_sqlite_is_wal_and_full_sync(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "w.db") as s:
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with SQLiteStore(path) as s:
        s.create("d", b"")
        with pytest.raises(StoreLockedError, match="open in another process"):
            SQLiteStore(path)
        code = textwrap.dedent(
            f"""
            from crdtsync.store.sqlite import SQLiteStore
            from crdtsync.errors import StoreLockedError
            try:
                SQLiteStore({str(path)!r})
            except StoreLockedError as exc:
                print("locked:", exc)
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
        )
        assert out.stdout.startswith("locked:"), out.stdout + out.stderr
    with SQLiteStore(path) as s:  # released on close
        assert s.names() == ["d"]


def test_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        SQLiteStore(path)
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value)")
    db.execute("INSERT INTO meta VALUES ('schema', 99)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema 99"):
        SQLiteStore(other)
    SQLiteStore(other.with_name("fine.db")).close()  # the lock was released after the error


@pytest.mark.anyio
async def test_peer_persists_every_edit_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    async with Peer(store=path) as peer:
        doc = await peer.open("shopping")
        doc.list("items").append("milk")
        doc.text("note").insert(0, "hi")
        await peer.flush()
    async with Peer(store=path) as peer:
        doc = await peer.open("shopping")
        assert doc.to_py() == {"items": ["milk"], "note": "hi"}


@pytest.mark.anyio
async def test_compaction_folds_the_log_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with Peer(store=path, compact_every=20) as peer:
        doc = await peer.open("d")
        for i in range(105):
            doc.text("t").insert(0, str(i % 10))
        await peer.flush()
        stored = peer._store.load("d")
        assert stored is not None
        assert stored.snapshot is not None
        assert len(stored.updates) < 20, "the log was folded into the snapshot"
        expected = doc.to_py()
    async with Peer(store=path) as peer:
        assert (await peer.open("d")).to_py() == expected


@pytest.mark.anyio
async def test_edits_during_compaction_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with Peer(store=path, compact_every=5) as peer:
        doc = await peer.open("d")
        for i in range(200):
            doc.list("l").append(i)  # compactions start and run while we keep editing
            if i % 7 == 0:
                await peer.flush()
        expected = doc.to_py()
    async with Peer(store=path) as peer:
        assert (await peer.open("d")).to_py() == expected
    assert expected == {"l": list(range(200))}


@pytest.mark.anyio
async def test_delete_gives_a_new_epoch(tmp_path: Path) -> None:
    async with Peer(store=tmp_path / "e.db") as peer:
        doc = await peer.open("nb")
        doc.list("cells").append("a")
        assert peer.epoch("nb") == b""
        await peer.delete("nb")
        new_epoch = peer.epoch("nb")
        assert len(new_epoch) == 16
        doc = await peer.open("nb")
        assert doc.to_py() == {}
    async with Peer(store=tmp_path / "e.db") as peer:
        await peer.open("nb")
        assert peer.epoch("nb") == new_epoch


def test_store_file_mode_and_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with SQLiteStore(path):
        assert os.path.exists(f"{path}.lock")
