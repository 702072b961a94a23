"""The demo page's bundle: pinned sources, one copy of yjs, and a byte-for-byte rebuild.

The built page is committed as package data (crdtsync/relay/demo_static), so
``pip install crdtsync`` serves it without node. These tests keep it honest: the
lockfile pins every package, exactly one yjs is installed and bundled (two copies
break Yjs's constructor checks: ``instanceof`` fails between them), and ``npm ci``
plus ``build.mjs`` in a clean copy of apps/demo/web give the committed files, byte
for byte.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "apps" / "demo" / "web"
STATIC = ROOT / "crdtsync" / "relay" / "demo_static"
SHIPPED = {
    "index.html",
    "app.js",
    "app.css",
    "editor.css",
    "favicon.svg",
    "licenses.txt",
}


def test_dependencies_are_pinned_exactly() -> None:
    manifest = json.loads((WEB / "package.json").read_text())
    for name, spec in manifest["dependencies"].items():
        assert spec[0].isdigit(), f"{name} {spec}: pin an exact version"
    lock = json.loads((WEB / "package-lock.json").read_text())
    assert lock["lockfileVersion"] == 3
    for path, entry in lock["packages"].items():
        if not path:
            continue
        # An exact version and its hash: npm ci installs exactly these bytes (from the
        # default registry: no package names another source).
        assert entry["version"][0].isdigit(), path
        assert entry["integrity"].startswith("sha512-"), path
        assert entry.get("resolved", "https://registry.npmjs.org/").startswith(
            "https://registry.npmjs.org/"
        ), path


def test_one_yjs_in_the_lockfile_and_in_the_bundle() -> None:
    lock = json.loads((WEB / "package-lock.json").read_text())
    copies = [
        p for p in lock["packages"] if p == "node_modules/yjs" or p.endswith("/node_modules/yjs")
    ]
    assert copies == ["node_modules/yjs"]
    bundle = (STATIC / "app.js").read_text(encoding="utf-8")
    # Yjs marks the global object when it loads and warns when a second copy does;
    # the marker's name appears once per bundled copy.
    assert bundle.count("__ $YJS$ __") == 1
    assert bundle.count("Yjs was already imported") == 1


def test_shipped_files() -> None:
    assert {p.name for p in STATIC.iterdir()} == SHIPPED
    html = (STATIC / "index.html").read_text()
    # No inline script or style: the page's Content-Security-Policy refuses them.
    assert "<script" in html
    assert 'src="app.js"' in html
    assert "<style" not in html
    assert "style=" not in html
    assert html.count("<script") == 1
    licenses = (STATIC / "licenses.txt").read_text()
    for package in ("yjs", "y-websocket", "y-codemirror.next", "@codemirror/view", "lib0"):
        assert f"\n{package} " in licenses, package


def test_rebuild_from_the_lockfile_gives_the_same_bytes(tmp_path: Path) -> None:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip(
            "npm and node are needed to rebuild the bundle (the shipped one is checked above)"
        )
    work = tmp_path / "web"
    shutil.copytree(WEB, work, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=work,
        check=True,
        timeout=600,
    )
    out = tmp_path / "out"
    subprocess.run([node, "build.mjs", "--out", str(out)], cwd=work, check=True, timeout=300)
    built = {p.name for p in out.iterdir()}
    assert built == SHIPPED
    for name in sorted(SHIPPED):
        assert (out / name).read_bytes() == (STATIC / name).read_bytes(), (
            f"{name} differs from a fresh build: run `npm ci && npm run build` in apps/demo/web"
        )
