"""``crdtsync cat``: print a stored document while its Peer runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from crdtsync import Peer
from crdtsync.cli import main


def test_cat_prints_a_document_held_open_by_a_running_peer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.db"

    async def scenario() -> None:
        async with Peer(store=str(path)) as peer:
            doc = await peer.open("shopping")
            doc.list("items").append({"title": "milk", "qty": 2})
            doc.map("meta")["blob"] = b"\x00\xff"
            doc.map("meta")["big"] = 2**70
            doc.map("meta")["far"] = float("inf")
            doc.text("note").insert(0, "héllo 😀")
            peer.commit()
            # While the peer holds the store (and its lock):
            assert main(["cat", str(path), "shopping"]) == 0
            assert main(["cat", str(path)]) == 0

    asyncio.run(scenario())
    out = capsys.readouterr().out
    first, listing = out.rsplit("}\n", 1)
    shown = json.loads(first + "}")
    assert shown["items"] == [{"title": "milk", "qty": 2}]
    assert shown["meta"] == {"blob": {"$bytes": "AP8="}, "big": 2**70, "far": "inf"}
    assert shown["note"] == "héllo 😀"
    assert listing.startswith("shopping\t")


def test_cat_errors_name_what_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cat", str(tmp_path / "nope.db"), "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("nope.db") == 1, err
    assert "cannot open store at" in err
    path = tmp_path / "s.db"

    async def make() -> None:
        async with Peer(store=str(path)) as peer:
            await peer.open("a")

    asyncio.run(make())
    assert main(["cat", str(path), "b"]) == 1
    err = capsys.readouterr().err
    assert "no document 'b'" in err
    assert "'a'" in err
