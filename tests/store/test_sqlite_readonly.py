"""SQLiteStore(readonly=True): reading a store another process is writing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crdtsync import SQLiteStore, StoreError, StoreLockedError


def test_a_reader_sees_committed_writes_while_the_writer_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    with SQLiteStore(path) as writer:
        writer.create("d", b"e1")
        writer.append("d", b"u1")
        with pytest.raises(StoreLockedError):
            SQLiteStore(path)
        with SQLiteStore(path, readonly=True) as reader:
            stored = reader.load("d")
            assert stored is not None
            assert stored.epoch == b"e1"
            assert [u for _, u in stored.updates] == [b"u1"]
            writer.append("d", b"u2")
            again = reader.load("d")
            assert again is not None
            assert [u for _, u in again.updates] == [b"u1", b"u2"]
            assert reader.names() == ["d"]
            for write in (
                lambda: reader.create("x", b""),
                lambda: reader.append("d", b"no"),
                lambda: reader.append_many([("d", b"no")]),
                lambda: reader.compact("d", b"snap", 1),
                lambda: reader.delete("d"),
            ):
                with pytest.raises(StoreError, match="read-only"):
                    write()
        # the writer is unaffected and still alone
        assert writer.load("d") is not None


def test_a_reader_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    with SQLiteStore(path) as writer:
        writer.create("d", b"")
        writer.append("d", b"hello")
        code = (
            "import sys\n"
            "from crdtsync import SQLiteStore\n"
            "with SQLiteStore(sys.argv[1], readonly=True) as s:\n"
            "    print(s.load('d').updates)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "b'hello'" in out.stdout


def test_clear_errors_for_missing_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"cannot open store at .*missing\.db: no such file"):
        SQLiteStore(tmp_path / "missing.db", readonly=True)
    with pytest.raises(StoreError, match=r"cannot open store at .*nodir"):
        SQLiteStore(tmp_path / "nodir" / "x.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open store at"):
        SQLiteStore(junk, readonly=True)
