"""A real browser edits a relay room beside a Python Peer.

Debian's chromium (driven by Playwright, with ``executable_path``: no browser is
downloaded) opens ``tests/interop/browser/index.html``: a ``<textarea>`` bound to
``ydoc.getText("body")`` through the stock y-websocket ``WebsocketProvider``,
bundled with esbuild from the pinned npm packages of ``tests/interop``. Keys are
typed with Playwright's keyboard, so the text goes through the browser's own
input events, WebSocket stack and event loop, as a user's would.

Every wait is for a condition (``page.wait_for_function`` in the browser,
``eventually`` in Python), bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from helpers.demo_browser import chromium
from helpers.nodeenv import ensure_node_modules
from helpers.relay import running_relay, ws_peer
from helpers.waiting import eventually
from playwright.async_api import Browser, Page

from crdtsync.relay import mint_token

pytestmark = pytest.mark.anyio

SECRET = b"browser-test-secret-0123456789abcdef"
#: Milliseconds any single wait in the browser may take.
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The editor page, bundled, served over HTTP on 127.0.0.1; yields its base URL."""
    interop = ensure_node_modules()
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            str(interop / "node_modules" / ".bin" / "esbuild"),
            str(interop / "browser" / "editor.mjs"),
            "--bundle",
            "--format=esm",
            f"--outfile={out / 'editor.js'}",
            "--log-level=warning",
        ],
        cwd=interop,
        check=True,
        timeout=120,
    )
    shutil.copy(interop / "browser" / "index.html", out / "index.html")
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


async def open_editor(
    browser: Browser, site: str, relay_url: str, console: list[str] | None = None, **params: str
) -> Page:
    """A new tab with the editor on ``relay_url``; its console messages go to ``console``."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if console is not None:
        page.on("console", lambda msg: console.append(msg.text))
    query = urlencode({"relay": relay_url, "room": "notes", **params})
    await page.goto(f"{site}/index.html?{query}")
    await page.wait_for_function("window.editor !== undefined", timeout=WAIT_MS)
    assert not errors, errors
    return page


async def browser_text(page: Page) -> str:
    text: str = await page.evaluate("window.editor.text()")
    return text


async def test_browser_and_python_peer_edit_one_text_and_see_each_other(
    tmp_path: Path, site: str
) -> None:
    token = mint_token(SECRET, "notes", write=True, ttl=600)
    async with (
        running_relay(tmp_path, secret=SECRET) as relay,
        ws_peer() as peer,
        chromium() as browser,
    ):
        doc = await peer.open("notes")
        body = doc.text("body")
        body.insert(0, "Python wrote this. ")
        await peer.connect(relay.url, token=token)
        assert await peer.wait_synced("notes", 10)

        page = await open_editor(browser, site, relay.url, token=token, name="browser-ana")
        await page.wait_for_function("window.editor.synced", timeout=WAIT_MS)
        assert await page.input_value("#body") == "Python wrote this. "

        # Typed in the browser -> the Python peer's doc.text("body").
        await page.click("#body")
        await page.keyboard.press("Control+End")
        await page.keyboard.type("Typed in the browser, é😀.")
        expected = "Python wrote this. Typed in the browser, é😀."
        await eventually(lambda: str(body) == expected, what="the peer to see the typing")

        # Python -> the browser's textarea; the caret stays where the user was typing.
        body.insert(0, ">> ")
        expected = ">> " + expected
        await page.wait_for_function(
            "expected => document.getElementById('body').value === expected",
            arg=expected,
            timeout=WAIT_MS,
        )
        await page.keyboard.type("!")
        expected += "!"
        await eventually(lambda: str(body) == expected, what="the caret to follow remote edits")

        # Concurrent edits from both sides: the browser types while Python inserts
        # at the front, neither waiting for the other; both end with the same text.
        typing = asyncio.get_running_loop().create_task(page.keyboard.type(" 0123456789", delay=15))
        inserted = 0
        while not typing.done() and inserted < 200:
            body.insert(0, "P")
            inserted += 1
            # Wait for the typing task (the event), at most 10 ms: lets keys arrive in between.
            await asyncio.wait([typing], timeout=0.01)
        await typing
        await eventually(
            lambda: str(body).endswith("! 0123456789"), what="the peer to get every key"
        )
        final = str(body)
        assert final == "P" * inserted + expected + " 0123456789"
        await page.wait_for_function(
            "expected => window.editor.text() === expected"
            " && document.getElementById('body').value === expected",
            arg=final,
            timeout=WAIT_MS,
        )
        # The relay holds the same text (and stored it).
        assert str((await relay.peer.open("notes")).text("body")) == final

        # Presence both ways.
        peer.set_presence("notes", {"user": {"name": "python-pete"}})
        await page.wait_for_function(
            "document.getElementById('people').textContent.includes('python-pete')",
            timeout=WAIT_MS,
        )
        browser_id = await page.evaluate("window.editor.clientID")
        await eventually(
            lambda: (
                peer.presence("notes").states.get(browser_id) == {"user": {"name": "browser-ana"}}
            ),
            what="the peer to see the browser's presence",
        )
        await page.evaluate("window.editor.setPresence('cursor', 7)")
        await eventually(
            lambda: (peer.presence("notes").states.get(browser_id) or {}).get("cursor") == 7,
            what="the peer to see the browser's presence change",
        )
        # The tab closes: its presence is gone at the peer.
        await page.close()
        await eventually(
            lambda: browser_id not in peer.presence("notes").states,
            what="the browser's presence to be removed when the tab closes",
        )


async def test_browser_with_a_bad_token_gets_nothing(tmp_path: Path, site: str) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay, chromium() as browser:
        (await relay.peer.open("notes")).text("body").insert(0, "secret text")
        cases = {
            "missing": {},
            "forged": {
                "token": mint_token(
                    b"not-the-relay-secret-0123456789ab", "notes", write=True, ttl=60
                )
            },
            "expired": {
                "token": mint_token(SECRET, "notes", write=True, ttl=60, now=time.time() - 3600)
            },
            "other room": {"token": mint_token(SECRET, "other", write=True, ttl=60)},
        }
        for case, params in cases.items():
            page = await open_editor(browser, site, relay.url, **params)
            code = 4403 if case == "other room" else 4401
            await page.wait_for_function(
                "code => window.editor.closes.some(c => c.code === code)",
                arg=code,
                timeout=WAIT_MS,
            )
            assert await browser_text(page) == "", case
            assert not await page.evaluate("window.editor.synced"), case
            await page.close()


async def test_read_only_browser_sees_edits_and_its_typing_is_refused(
    tmp_path: Path, site: str
) -> None:
    writer_token = mint_token(SECRET, "notes", write=True, ttl=600)
    reader_token = mint_token(SECRET, "notes", write=False, ttl=600)
    async with (
        running_relay(tmp_path, secret=SECRET) as relay,
        ws_peer() as peer,
        chromium() as browser,
    ):
        doc = await peer.open("notes")
        doc.text("body").insert(0, "read me")
        await peer.connect(relay.url, token=writer_token)
        assert await peer.wait_synced("notes", 10)
        console: list[str] = []
        page = await open_editor(browser, site, relay.url, console, token=reader_token)
        await page.wait_for_function("window.editor.synced", timeout=WAIT_MS)
        assert await page.input_value("#body") == "read me"
        await page.click("#body")
        await page.keyboard.press("Control+End")
        await page.keyboard.type("!")
        # The relay answers the update with y-protocols' "permission denied", which
        # y-websocket reports on the console: by then the relay has refused it.
        await eventually(
            lambda: any("read-only" in line for line in console),
            timeout=WAIT_MS / 1000,
            what="the relay's permission-denied answer",
        )
        assert str(doc.text("body")) == "read me"
        assert str((await relay.peer.open("notes")).text("body")) == "read me"
        # The reader still follows the room.
        doc.text("body").insert(0, "please ")
        await page.wait_for_function(
            "window.editor.text().startsWith('please read me')", timeout=WAIT_MS
        )
        assert str((await relay.peer.open("notes")).text("body")) == "please read me"
