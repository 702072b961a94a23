"""Smoke test of the real ``crdtsync edit`` in a terminal (tmux), on a ``crdtsync demo`` relay.

tmux gives the editor a real pseudo-terminal: keys go in with ``send-keys``, the
screen comes out with ``capture-pane``. A Python peer in the same room checks what
reached the relay. The tmux server runs on a socket of its own and is ended by
name at the end.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.demo_process import demo_process
from helpers.relay import ws_peer
from helpers.waiting import eventually

pytestmark = pytest.mark.anyio


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "edit")

    def alive(self) -> bool:
        try:
            self("has-session", "-t", "edit")
        except RuntimeError:
            return False
        return True


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is required (scripts/check installs it)")
    t = Tmux(f"crdtsync-test-{os.getpid()}")
    try:
        yield t
    finally:
        subprocess.run(
            ["tmux", "-L", t.socket, "kill-server"], capture_output=True, timeout=20, check=False
        )


async def test_crdtsync_edit_in_a_real_terminal(tmp_path: Path, tmux: Tmux) -> None:
    async with demo_process(tmp_path / "data") as demo:
        await demo.ready()
        args = shlex.split(demo.edit)
        assert args[:2] == ["crdtsync", "edit"]
        command = shlex.join([sys.executable, "-m", "crdtsync", *args[1:]])
        tmux(
            "new-session",
            "-d",
            "-s",
            "edit",
            "-x",
            "100",
            "-y",
            "24",
            "-e",
            "TERM=xterm-256color",
            command,
        )
        await eventually(
            lambda: "synced" in tmux.screen() and "carol" in tmux.screen(),
            timeout=30,
            what="the editor to start and sync",
        )
        token = demo.token("ana")
        async with ws_peer() as peer:
            doc = await peer.open("notes")
            await peer.connect(demo.relay, token=token)
            body = doc.text("body")

            tmux("send-keys", "-t", "edit", "-l", "typed in tmux")
            await eventually(lambda: str(body) == "typed in tmux", what="the typing at the peer")

            body.insert(0, "python> ")
            await eventually(
                lambda: "python> typed in tmux" in tmux.screen(), what="the peer's text on screen"
            )
            # The editor's presence: its name, and a caret the peer can place.
            carol = [
                s for s in peer.presence("notes").states.values() if s["user"]["name"] == "carol"
            ]
            assert carol
            assert "cursor" in carol[0]
            # Typing continues where the caret was, after the peer's insert before it.
            tmux("send-keys", "-t", "edit", "-l", "!")
            await eventually(lambda: str(body) == "python> typed in tmux!")

            # Undo in the terminal undoes the terminal's typing only (more undos than
            # steps: the extra ones do nothing).
            for _ in range(3):
                tmux("send-keys", "-t", "edit", "C-z")
            await eventually(lambda: str(body) == "python> ", what="the undo at the peer")
            await eventually(lambda: "typed in tmux" not in tmux.screen())
            screen = tmux.screen()

            assert "python> " in screen
            tmux("send-keys", "-t", "edit", "C-q")
            await eventually(lambda: not tmux.alive(), what="the editor to quit")
        assert await demo.stop() == 0


async def test_crdtsync_demo_tui_opens_the_editor_and_stops_with_it(
    tmp_path: Path, tmux: Tmux
) -> None:
    from crdtsync.relay import mint_token
    from crdtsync.relay.tokens import load_secret

    data = tmp_path / "data"
    demo = ["demo", "--tui", "--port", "0", "--data", str(data), "--name", "dora"]
    command = shlex.join([sys.executable, "-m", "crdtsync", *demo])
    tmux("new-session", "-d", "-s", "edit", "-x", "100", "-y", "24", "-e", "TERM=xterm-256color")
    # Run through the shell of the session, so its last words stay on screen after it ends.
    tmux("send-keys", "-t", "edit", "-l", command + "; echo demo-exit=$?")
    tmux("send-keys", "-t", "edit", "Enter")
    await eventually(
        lambda: "synced" in tmux.screen() and "dora" in tmux.screen(),
        timeout=30,
        what="the demo's editor",
    )
    url = next(word for word in tmux.screen().split() if word.startswith("ws://127.0.0.1:"))
    token = mint_token(load_secret(data / "relay.key"), "notes", write=True, ttl=60)
    async with ws_peer() as peer:
        doc = await peer.open("notes")
        await peer.connect(url, token=token)
        tmux("send-keys", "-t", "edit", "-l", "from the demo's own editor")
        await eventually(lambda: str(doc.text("body")) == "from the demo's own editor")
    # Quitting the editor stops the demo, cleanly.
    tmux("send-keys", "-t", "edit", "C-q")
    await eventually(lambda: "demo-exit=0" in tmux.screen(), timeout=30, what="a clean exit")
    assert "crdtsync demo: stopped" in tmux.screen()
