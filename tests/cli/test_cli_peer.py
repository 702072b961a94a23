"""``crdtsync peer``: a real process that syncs a document over the LAN and/or a relay.

zeroconf is bound to 127.0.0.1 (``--interface 127.0.0.1``). The other peers
are Peers in the test's own process; the command's stdout is read line by
line: one JSON object per change of the document (who, where, what).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import running_relay
from helpers.waiting import eventually

from crdtsync import Peer
from crdtsync.peer.lan import LanOptions
from crdtsync.relay.tokens import generate_secret, mint_token
from crdtsync.transports.lan import GroupKey

pytestmark = pytest.mark.anyio
LOOPBACK = ["127.0.0.1"]
WAIT = 30.0


class Command:
    """A ``crdtsync peer`` process: its stdout lines (JSON) and stderr lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.changes: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._new = asyncio.Event()
        self._tasks = [
            asyncio.ensure_future(self._read(proc.stdout, self._change)),
            asyncio.ensure_future(self._read(proc.stderr, self.errors.append)),
        ]

    async def _read(self, stream: asyncio.StreamReader | None, take: Any) -> None:
        assert stream is not None
        while line := await stream.readline():
            take(line.decode().rstrip("\n"))
            self._new.set()

    def _change(self, text: str) -> None:
        self.changes.append(json.loads(text))

    async def until(self, predicate: Any, what: str) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while not predicate():
                    if self.proc.returncode is not None:
                        raise AssertionError(f"it exited {self.proc.returncode}: {self.errors}")
                    self._new.clear()
                    await self._new.wait()
        except TimeoutError:
            raise AssertionError(f"no {what}: {self.changes} {self.errors}") from None

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        async with asyncio.timeout(WAIT):
            code = await self.proc.wait()
        await asyncio.gather(*self._tasks)
        return code


@asynccontextmanager
async def command(*args: str) -> AsyncIterator[Command]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDTSYNC_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crdtsync",
        "peer",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    cmd = Command(proc)
    try:
        yield cmd
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.gather(*cmd._tasks, return_exceptions=True)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "team.key"
    GroupKey.generate().save(path)
    return path


async def test_peer_syncs_over_the_lan_and_prints_each_change(
    tmp_path: Path, key_file: Path
) -> None:
    args = ("notes", "--store", str(tmp_path / "cli.db"), "--lan", "--key-file", str(key_file))
    async with (
        command(*args, "--interface", "127.0.0.1") as cli,
        Peer(store=tmp_path / "me.db") as me,
    ):
        await cli.until(lambda: any("syncing 'notes'" in e for e in cli.errors), "start")
        lan = await me.start_lan(key_file, interfaces=LOOPBACK, options=LanOptions(dial_grace=0.2))
        doc = await me.open("notes")
        doc.list("items").append("milk")
        await cli.until(lambda: bool(cli.changes), "a change line")
        line = cli.changes[-1]
        assert line["doc"] == "notes"
        assert line["device"] == lan.fingerprint
        assert line["where"].startswith("lan://127.0.0.1:")
        assert line["who"] == [{"client": me.peer_id, "device": lan.fingerprint}]
        # The list was created by this transaction: read it whole.
        assert line["what"] == [{"path": ["items"], "kind": "list", "created": True}]
        doc.list("items").append("eggs")
        await cli.until(lambda: len(cli.changes) >= 2, "a second change line")
        assert cli.changes[-1]["what"] == [
            {"path": ["items"], "kind": "list", "delta": [{"retain": 1}, {"insert": ["eggs"]}]}
        ]
        assert any("linked" in e and lan.fingerprint in e for e in cli.errors)
        assert await cli.stop() == 0  # Ctrl-C: a clean stop
    # What it stored is there for the next run.
    async with Peer(store=tmp_path / "cli.db") as again:
        assert list((await again.open("notes")).list("items")) == ["milk", "eggs"]


async def test_peer_uses_the_lan_and_a_relay_together(tmp_path: Path, key_file: Path) -> None:
    secret = generate_secret()
    token = mint_token(secret, "*", write=True, ttl=600)
    async with running_relay(tmp_path, secret=secret) as relay:
        args = ("notes", "--store", str(tmp_path / "cli.db"), "--lan", "--key-file", str(key_file))
        async with (
            command(
                *args, "--interface", "127.0.0.1", "--relay", relay.url, "--token", token
            ) as cli,
            Peer(store=tmp_path / "lan.db") as on_lan,
            Peer(store=tmp_path / "web.db") as on_relay,
        ):
            lan = await on_lan.start_lan(key_file, interfaces=LOOPBACK)
            await on_relay.connect(relay.url, token=token)
            (await on_lan.open("notes")).list("items").append("from the LAN")
            (await on_relay.open("notes")).list("items").append("from the relay")

            def seen(where: str) -> bool:
                return any(c["where"].startswith(where) for c in cli.changes)

            await cli.until(lambda: seen("lan://") and seen("ws://"), "both origins")
            assert any(c["device"] == lan.fingerprint for c in cli.changes)
            # The command forwards each side's edit to the other.
            for peer in (on_lan, on_relay):
                want = ["from the LAN", "from the relay"]

                async def has(p: Peer = peer, w: list[str] = want) -> bool:
                    return sorted((await p.open("notes")).list("items")) == w

                await eventually(has, WAIT, "the edit forwarded by the command", interval=0.05)
            assert await cli.stop() == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["notes", "--store", "x.db"], 2, "give --lan"),
        (["notes", "--store", "x.db", "--lan"], 2, "--key-file"),
        (["notes", "--store", "x.db", "--relay", "http://x"], 2, "ws://"),
        (["notes", "--store", "x.db", "--lan", "--key-file", "missing.key"], 1, "missing.key"),
    ],
)
async def test_peer_refuses_bad_arguments(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crdtsync",
        "peer",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    async with asyncio.timeout(WAIT):
        out, err = await proc.communicate()
    assert proc.returncode == code, err
    assert message in err.decode()
    assert out == b""
