"""The demo page in a real browser: Debian's chromium (Playwright) on the relay that serves it.

Two people (two browser windows) and Python in one room: concurrent typing in one
paragraph converges; a page taken offline merges when it comes back; each page
draws the others' carets with their names (the terminal editor's too); the relay
killed with SIGKILL and restarted under open pages loses nothing; the edit counters
and the history are real; and no page breaks its Content-Security-Policy.

Keys are typed with Playwright's keyboard, so text goes through the browser's input
events, CodeMirror, y-codemirror.next and the stock y-websocket provider, as a
person's would. Every wait is for a condition, bounded by a timeout. Screenshots
of the final states are written to build/test-artifacts/demo/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers.demo_browser import DemoPage, chromium, keep_screenshot, open_page
from helpers.relay import YClient, running_relay, ws_peer
from helpers.waiting import eventually

from crdtsync.apps.editor import EditorApp, color_for
from crdtsync.model.positions import relative_position
from crdtsync.relay import Relay, mint_token
from crdtsync.relay.tokens import generate_secret

pytestmark = pytest.mark.anyio

SECRET = b"demo-browser-secret-0123456789abcdef"


def token(name: str, secret: bytes = SECRET) -> str:
    return mint_token(secret, "*", write=True, ttl=3600, subject=name)


def http(relay: Relay) -> str:
    return relay.url.replace("ws://", "http://", 1)


async def clean(*pages: DemoPage) -> None:
    for p in pages:
        assert p.errors == [], (p.name, p.errors)
        assert await p.violations() == [], (p.name, await p.violations())


async def test_two_pages_and_a_peer_type_concurrently_into_one_paragraph(tmp_path: Path) -> None:
    async with (
        running_relay(tmp_path, secret=SECRET, demo=True) as relay,
        ws_peer() as peer,
        chromium() as browser,
    ):
        doc = await peer.open("notes")
        body = doc.text("body")
        body.insert(0, "# Shopping list\n\nWe need milk and eggs.")
        await peer.connect(relay.url, token=token("carol"))
        assert await peer.wait_synced("notes", 10)

        ana = await open_page(browser, http(relay), "ana", token("ana"))
        bob = await open_page(browser, http(relay), "bob", token("bob"))
        for p in (ana, bob):
            await p.wait_text(str(body))

        # Everyone in the same paragraph: ana before "milk", bob at its end, Python
        # after "need" -- all at once, nobody waiting for anybody.
        await ana.page.locator(".cm-content").click()
        await ana.page.keyboard.press("Control+End")
        for _ in range(len("milk and eggs.")):
            await ana.page.keyboard.press("ArrowLeft")
        await bob.focus_end()
        typing = [
            asyncio.ensure_future(ana.page.keyboard.type("fresh ", delay=20)),
            asyncio.ensure_future(bob.page.keyboard.type(" And bread!", delay=20)),
        ]
        at = len("# Shopping list\n\nWe need")
        for ch in " some":
            # As the terminal editor writes: the edit, its count and the writer's name.
            with doc.transaction(origin="carol"):
                body.insert(at, ch)
                doc.counter("edits").increment()
                doc.map("names")[str(doc.peer_id)] = "carol"
            at += 1
            await asyncio.wait(typing, timeout=0.03)
        await asyncio.gather(*typing)

        want = "# Shopping list\n\nWe need some fresh milk and eggs. And bread!"
        await eventually(lambda: str(body) == want, timeout=20, what="the peer to converge")
        for p in (ana, bob):
            await p.wait_text(want)
        assert str((await relay.peer.open("notes")).text("body")) == want

        # Python shows its caret like the terminal editor does; both pages draw it.
        caret = relative_position(body, len("# Shopping list\n\nWe need some"))
        peer.set_presence(
            "notes",
            {
                "user": {"name": "carol", "color": color_for("carol")},
                "cursor": {"anchor": caret, "head": caret},
            },
        )
        for p, other in ((ana, "bob"), (bob, "ana")):
            await p.wait("p.carets().includes(arg)", other)
            await p.wait(
                "p.caretPositions().some(c => c.name === 'carol' && c.pos === arg)",
                len("# Shopping list\n\nWe need some"),
            )
            assert set(await p.pane("p.people()")) >= {f"{p.name} (you)", other, "carol"}

        # Counters: one edit per key, by name, the same for Python and the pages.
        counts = {c["name"]: c["count"] for c in await ana.page.evaluate("window.demo.counts()")}
        assert counts == {"ana": len("fresh "), "bob": len(" And bread!"), "carol": len(" some")}
        contributions = doc.counter("edits").contributions()
        names = doc.map("names")
        by_name: dict[str, int] = {}
        for client, n in contributions.items():
            by_name[names[str(client)]] = by_name.get(names[str(client)], 0) + n
        assert by_name == counts
        await ana.page.wait_for_selector("#counter-list li[data-name='bob']")

        path = await ana.screenshot("two-pages-ana")
        await bob.screenshot("two-pages-bob")
        keep_screenshot(path)
        await clean(ana, bob)


async def test_a_page_taken_offline_merges_when_it_comes_back(tmp_path: Path) -> None:
    async with (
        running_relay(tmp_path, secret=SECRET, demo=True) as relay,
        chromium() as browser,
    ):
        ana = await open_page(browser, http(relay), "ana", token("ana"), split=True)
        bob = await open_page(browser, http(relay), "bob", token("bob"))
        await ana.wait("p.state === 'synced'", i=1)
        await ana.focus_end()
        await ana.page.keyboard.type("Shared line.")
        await bob.wait_text("Shared line.")
        await ana.wait_text("Shared line.", i=1)

        # Bob goes offline with the switch, and both sides write.
        await bob.page.locator(".pane .online").first.click()
        await bob.wait("p.state === 'offline'")
        assert await bob.page.locator(".pane .state").first.text_content() == "offline"
        await bob.focus_end()
        await bob.page.keyboard.type(" Bob offline.")
        await ana.page.keyboard.press("Control+Home")
        await ana.page.keyboard.type("Ana online. ")
        await ana.wait_text("Ana online. Shared line.", i=1)
        assert await bob.text() == "Shared line. Bob offline."

        # The second editor of ana's window goes offline too, and edits.
        await ana.page.locator(".pane .online").nth(1).click()
        await ana.wait("p.state === 'offline'", i=1)
        await ana.page.locator(".pane .cm-content").nth(1).click()
        await ana.page.keyboard.press("Control+End")
        await ana.page.keyboard.type(" Right pane.")

        # Back online: everything merges everywhere.
        await bob.page.locator(".pane .online").first.click()
        await ana.page.locator(".pane .online").nth(1).click()
        for p, i in ((ana, 0), (ana, 1), (bob, 0)):
            await p.wait("p.state === 'synced'", i=i)
        # The two offline additions at the same spot come in the order of their
        # writers' client ids; everyone agrees on it.
        tail = [" Bob offline. Right pane.", " Right pane. Bob offline."]
        await ana.wait("arg.map(t => 'Ana online. Shared line.' + t).includes(p.text())", tail)
        want = await ana.text()
        for p, i in ((ana, 0), (ana, 1), (bob, 0)):
            await p.wait_text(want, i=i)
        assert str((await relay.peer.open("notes")).text("body")) == want
        await ana.screenshot("offline-merge-split")
        await clean(ana, bob)


async def test_history_restores_a_version_and_undo_takes_it_back(tmp_path: Path) -> None:
    async with (
        running_relay(tmp_path, secret=SECRET, demo=True) as relay,
        chromium() as browser,
    ):
        ana = await open_page(browser, http(relay), "ana", token("ana"))
        bob = await open_page(browser, http(relay), "bob", token("bob"))
        await ana.focus_end()
        await ana.page.keyboard.type("First draft.")
        await bob.wait_text("First draft.")
        # Someone else writing starts a new version.
        n = await ana.page.evaluate("window.demo.history.length")
        await bob.focus_end()
        await bob.page.keyboard.type(" Bob rewrites it.")
        await ana.wait_text("First draft. Bob rewrites it.")
        await ana.page.wait_for_function(
            "n => window.demo.history.length > n", arg=n, timeout=20_000
        )
        # Look back at the version that ended with "First draft.".
        versions = await ana.page.evaluate("window.demo.history.length")
        texts = [
            await ana.page.evaluate("i => window.demo.history.text(i)", i) for i in range(versions)
        ]
        target = texts.index("First draft.")
        slider = ana.page.locator("#history-slider")
        await slider.fill(str(target))
        await ana.page.wait_for_selector("#history-preview:not([hidden])")
        assert await ana.page.locator("#history-preview").text_content() == "First draft."
        label = await ana.page.locator("#history-label").text_content()
        assert label is not None
        assert "ana" in label
        await ana.screenshot("history-preview")
        await ana.page.locator("#history-restore").click()
        for p in (ana, bob):
            await p.wait_text("First draft.")
        assert str((await relay.peer.open("notes")).text("body")) == "First draft."
        # Restoring is an edit like typing: ana's undo takes it back, for everyone.
        await ana.page.locator(".pane .undo").first.click()
        for p in (ana, bob):
            await p.wait_text("First draft. Bob rewrites it.")
        await clean(ana, bob)


async def test_the_terminal_editor_and_a_page_edit_together(tmp_path: Path) -> None:
    async with (
        running_relay(tmp_path, secret=SECRET, demo=True) as relay,
        chromium() as browser,
    ):
        # Undo steps end only at caret jumps (not after a time): the test knows them.
        app = EditorApp("notes", relay.url, token=token("tom"), name="tom", capture_timeout=600)
        async with app.run_test(size=(100, 30)) as pilot:
            await eventually(lambda: app.state == "synced", what="the editor to sync")
            ana = await open_page(browser, http(relay), "ana", token("ana"))
            await pilot.press(*"from the terminal")
            await ana.wait_text("from the terminal")
            # Put the terminal's caret before "terminal"; ana types at the start.
            app.area.move_cursor((0, len("from the ")))
            await ana.wait("p.caretPositions().some(c => c.name === 'tom' && c.pos === arg)", 9)
            await ana.page.locator(".cm-content").click()
            await ana.page.keyboard.press("Control+Home")
            await ana.page.keyboard.type("Ana: ")
            assert app.binding.body is not None
            await eventually(lambda: app.area.text == "Ana: from the terminal")
            row, col = app.area.cursor_location
            assert app.area.get_text_range((row, col), (row, col + 8)) == "terminal"
            # The page draws the terminal's caret where it now is.
            await ana.wait("p.caretPositions().some(c => c.name === 'tom' && c.pos === arg)", 14)
            await pilot.press(*"whole ")
            want = "Ana: from the whole terminal"
            await ana.wait_text(want)
            assert app.area.text == want
            # Undo in the terminal removes the terminal's own words, never ana's.
            await pilot.press("ctrl+z")
            await ana.wait_text("Ana: from the terminal")
            await pilot.press("ctrl+z")
            await ana.wait_text("Ana: ")
            assert app.area.text == "Ana: "
            await ana.screenshot("terminal-and-page")
            await clean(ana)


async def test_refusals_show_on_the_page(tmp_path: Path) -> None:
    async with (
        running_relay(tmp_path, secret=SECRET, demo=True) as relay,
        chromium() as browser,
    ):
        (await relay.peer.open("notes")).text("body").insert(0, "secret text")
        forged = mint_token(b"not-the-relay-secret-0123456789ab", "notes", write=True, ttl=60)
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{http(relay)}/demo/#room=notes&name=eve&token={forged}")
        await page.wait_for_function(
            "window.demo && window.demo.panes()[0].state === 'refused'", timeout=20_000
        )
        state = await page.locator(".pane .state").first.text_content()
        assert state is not None
        assert state.startswith("refused (4401")
        assert await page.evaluate("window.demo.panes()[0].text()") == ""
        # A room name the relay would refuse is refused by the page itself (a new
        # fragment reloads the page). A locator waits through that reload; a
        # wait_for_function polling across it can land in the reloading page, where
        # its string predicate is an eval the page's CSP refuses.
        await page.goto(f"{http(relay)}/demo/#room=../x&name=eve")
        await page.locator("#panes", has_text="not valid").wait_for(timeout=20_000)


# -- the relay killed under open pages ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def relay_process(
    data: Path, key: Path, port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``crdtsync relay --demo yes`` as a subprocess; yields once it listens."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "crdtsync", "relay", "--port", str(port)),
        *("--data", str(data), "--secret-file", str(key), "--demo", "yes"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stdout.readline()
                assert line, "the relay exited before listening"
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("event") == "listening":
                        break
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_relay_killed_and_restarted_under_open_pages_loses_nothing(tmp_path: Path) -> None:
    key = tmp_path / "relay.key"
    key.write_bytes(generate_secret() + b"\n")
    secret = key.read_bytes().strip()
    data = tmp_path / "relay.db"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with chromium() as browser:
        async with relay_process(data, key, port) as first:
            ana = await open_page(browser, base, "ana", token("ana", secret))
            bob = await open_page(browser, base, "bob", token("bob", secret))
            await ana.focus_end()
            await ana.page.keyboard.type("Before the crash.")
            await bob.wait_text("Before the crash.")
            await bob.focus_end()
            await bob.page.keyboard.type(" Bob too.")
            await ana.wait_text("Before the crash. Bob too.")
            first.send_signal(signal.SIGKILL)
            await first.wait()
        for p in (ana, bob):
            await p.wait("p.state === 'connecting'")
        # Typed while the relay is down: kept by the pages.
        await ana.page.keyboard.type(" Ana, during.")
        await bob.page.keyboard.type(" Bob, during.")
        async with relay_process(data, key, port):
            for p in (ana, bob):
                await p.wait("p.state === 'synced'")
            await ana.wait("p.text() === arg", await bob.text())
            final = await ana.text()
            for part in ("Before the crash.", " Bob too.", " Ana, during.", " Bob, during."):
                assert part in final, (part, final)
            assert len(final) == len("Before the crash. Bob too. Ana, during. Bob, during.")
            await bob.wait_text(final)
            # A newcomer reads it all from the restarted relay.
            reader = await YClient.open(f"ws://127.0.0.1:{port}", "notes", token=token("x", secret))
            try:
                await reader.sync()
                assert str(reader.doc.text("body")) == final
            finally:
                await reader.ws.close()
            await ana.screenshot("after-relay-restart")
        # Console errors here are the browser reporting the refused reconnections.
        for p in (ana, bob):
            assert await p.violations() == []
            assert not [e for e in p.errors if "WebSocket" not in e], p.errors
