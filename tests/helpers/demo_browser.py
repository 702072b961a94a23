"""Helpers of the demo page's browser tests: Debian's chromium (Playwright), pages, screenshots.

chromium is launched exactly as tests/test_relay_browser.py does (``executable_path``
of Debian's package: Playwright never downloads a browser). Each page gets its own
browser context (its own window, focus and storage, as two people have), and
records page errors and Content-Security-Policy violations so a test can assert
there were none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from playwright.async_api import Browser, Page, async_playwright

ROOT = Path(__file__).resolve().parents[2]
#: Where screenshots go (a test artifact; build/ is not committed).
ARTIFACTS = Path(os.environ.get("CRDTSYNC_ARTIFACTS", ROOT / "build" / "test-artifacts")) / "demo"
#: The README's screenshot, refreshed only when CRDTSYNC_UPDATE_DOCS_SCREENSHOT=1.
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "demo.png"
#: Milliseconds any single wait in the browser may take.
WAIT_MS = 20_000
#: What chromium needs here: root (no sandbox), no GPU, and no background
#: connections to Google's hosts (this machine's closed network refuses them).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Recorded in every page before its scripts run.
_WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
});
"""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is required (scripts/check installs it)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class DemoPage:
    """One person's tab on the demo page."""

    page: Page
    name: str
    errors: list[str] = field(default_factory=list)

    async def pane(self, expr: str, i: int = 0) -> Any:
        """Evaluate ``expr`` on ``window.demo.panes()[i]`` (bound as ``p``)."""
        return await self.page.evaluate(
            f"(i) => {{ const p = window.demo.panes()[i]; return {expr}; }}", i
        )

    async def text(self, i: int = 0) -> str:
        text: str = await self.pane("p.text()", i)
        return text

    async def wait(self, condition: str, arg: Any = None, i: int = 0) -> None:
        """Wait until ``condition`` (JS, with ``p`` the pane and ``arg``) holds."""
        await self.page.wait_for_function(
            "([i, arg]) => { const p = window.demo && window.demo.panes()[i];"
            f" return !!p && ({condition}); }}",
            arg=[i, arg],
            timeout=WAIT_MS,
        )

    async def wait_text(self, text: str, i: int = 0) -> None:
        await self.wait("p.text() === arg && p.editorText() === arg", text, i)

    async def focus_end(self, i: int = 0) -> None:
        await self.page.locator(".pane .cm-content").nth(i).click()
        await self.page.keyboard.press("Control+End")

    async def violations(self) -> list[str]:
        found: list[str] = await self.page.evaluate("window.__violations")
        return found

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path))
        return path


async def open_page(
    browser: Browser,
    base: str,
    name: str,
    token: str,
    room: str = "notes",
    *,
    split: bool = False,
    size: tuple[int, int] = (1280, 760),
) -> DemoPage:
    """A new window on ``base``/demo/ as ``name``; waits until its first editor is synced."""
    context = await browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = await context.new_page()
    demo = DemoPage(page, name)
    page.on("pageerror", lambda exc: demo.errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: demo.errors.append(msg.text) if msg.type == "error" else None,
    )
    await page.add_init_script(_WATCH)
    fragment = {"room": room, "name": name, "token": token}
    if split:
        fragment["split"] = "1"
    await page.goto(f"{base}/demo/#{urlencode(fragment)}")
    await demo.wait("p.state === 'synced'")
    return demo


def keep_screenshot(path: Path) -> None:
    """Copy a screenshot to docs/images/demo.png when asked (CRDTSYNC_UPDATE_DOCS_SCREENSHOT=1)."""
    if os.environ.get("CRDTSYNC_UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOT)
