"""``crdtsync demo`` for real: it prints its links, serves the page, syncs, stops on Ctrl-C.

Every wait is for a line of output or a condition, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import signal
import stat
import urllib.request
from pathlib import Path

import pytest
from helpers.demo_process import demo_process
from helpers.relay import YClient, ws_peer
from helpers.waiting import eventually

from crdtsync.apps.demo.command import demo_links
from crdtsync.relay import verify_token

pytestmark = pytest.mark.anyio


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return int(resp.status), resp.headers["Content-Type"], resp.read()


async def test_demo_prints_links_serves_the_page_syncs_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    data = tmp_path / "demo-data"
    async with demo_process(data) as demo:
        await demo.ready()
        assert set(demo.links) == {"ana", "bob"}
        assert str(data) in demo.lines[0]
        assert demo.edit.startswith(f"crdtsync edit notes --relay {demo.relay} --token ")
        assert demo.edit.endswith("--name carol")
        for name, link in demo.links.items():
            assert link.startswith(demo.relay.replace("ws://", "http://") + "/demo/#room=notes")
            assert f"name={name}" in link
            claims = verify_token((data / "relay.key").read_bytes().strip(), demo.token(name))
            assert claims.allows("notes")
            assert claims.write
            assert claims.subject == name
        page = demo.links["ana"].partition("#")[0]
        status, ctype, body = await asyncio.to_thread(fetch, page)
        assert status == 200
        assert ctype == "text/html; charset=utf-8"
        assert b'src="app.js"' in body

        # The printed token works for a Python peer and a y-websocket client alike.
        token = demo.edit.split("--token ")[1].split()[0]
        async with ws_peer() as peer:
            doc = await peer.open("notes")
            await peer.connect(demo.relay, token=token)
            doc.text("body").insert(0, "kept across restarts")
            assert await peer.wait_synced("notes", 10)
        client = await YClient.open(demo.relay, "notes", token=demo.token("bob"))
        try:
            await client.sync()
            assert str(client.doc.text("body")) == "kept across restarts"
        finally:
            await client.ws.close()

        assert await demo.stop(signal.SIGINT) == 0
        assert demo.proc.stderr is not None
        assert (await demo.proc.stderr.read()) == b""

    # The data folder: the rooms and the secret (owner-only), reused by the next run,
    # so the links printed before still work.
    assert stat.S_IMODE((data / "relay.key").stat().st_mode) == 0o600
    assert (data / "relay.db").is_file()
    async with demo_process(data) as demo:
        await demo.ready()
        client = await YClient.open(demo.relay, "notes", token=demo.token("ana"))
        try:
            await client.sync()
            assert str(client.doc.text("body")) == "kept across restarts"
        finally:
            await client.ws.close()
        assert await demo.stop(signal.SIGTERM) == 0


async def test_demo_refuses_a_bad_room_and_a_taken_port(tmp_path: Path) -> None:
    async with demo_process(tmp_path / "d1", "--room", "../etc") as demo:
        assert await asyncio.wait_for(demo.proc.wait(), 30) == 2
        assert demo.proc.stderr is not None
        assert b"room name" in await demo.proc.stderr.read()
    async with demo_process(tmp_path / "d2") as first:
        await first.ready()
        port = first.relay.rsplit(":", 1)[1]
        proc = await asyncio.create_subprocess_exec(
            *(__import__("sys").executable, "-m", "crdtsync", "demo"),
            *("--port", port, "--data", str(tmp_path / "d3")),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        assert b"cannot listen" in err
        assert await first.stop() == 0


def test_links_keep_the_token_out_of_the_request() -> None:
    links = demo_links("http://127.0.0.1:1", "team/notes", {"ana": "v1.a.b"})
    assert links == {"ana": "http://127.0.0.1:1/demo/#room=team%2Fnotes&name=ana&token=v1.a.b"}


async def test_the_page_of_a_demo_relay_reaches_a_room_named_demo(tmp_path: Path) -> None:
    async with demo_process(tmp_path / "d") as demo:
        await demo.ready()
        client = await YClient.open(demo.relay, "demo", token=demo.token("ana"))
        try:
            await client.sync()
            await client.edit(lambda d: d.text("body").insert(0, "a room called demo"))
        finally:
            await client.ws.close()
        other = await YClient.open(demo.relay, "demo", token=demo.token("bob"))
        try:
            await other.sync()
            await eventually(lambda: str(other.doc.text("body")) == "a room called demo")
        finally:
            await other.ws.close()
        assert await demo.stop() == 0


def test_edit_refuses_a_bad_room_or_relay(capsys: pytest.CaptureFixture[str]) -> None:
    from crdtsync.cli import main

    assert main(["edit", "../x", "--relay", "ws://127.0.0.1:1"]) == 2
    assert "room name" in capsys.readouterr().err
    assert main(["edit", "notes", "--relay", "http://127.0.0.1:1"]) == 2
    assert "ws://" in capsys.readouterr().err
    assert main(["edit", "notes"]) == 2
    assert "--lan" in capsys.readouterr().err
    assert main(["edit", "notes", "--lan"]) == 2
    assert "--key-file" in capsys.readouterr().err
