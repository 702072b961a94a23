"""The demo page over HTTP: routes, content types, the security policy, and the relay's hook.

``DemoPage.answer`` is tested directly (it does no I/O), and then through a real relay
on 127.0.0.1 with raw HTTP requests, beside a WebSocket client that still joins a room
named ``demo``.
"""

from __future__ import annotations

import asyncio
import http.client
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.relay import YClient, http_get, running_relay
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.errors import InvalidOperationError
from crdtsync.relay.demo import PREFIX, DemoPage, content_security_policy, demo_page

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "crdtsync" / "relay" / "demo_static"
FILES = {
    "/demo/": ("index.html", "text/html; charset=utf-8"),
    "/demo/index.html": ("index.html", "text/html; charset=utf-8"),
    "/demo/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/demo/app.css": ("app.css", "text/css; charset=utf-8"),
    "/demo/editor.css": ("editor.css", "text/css; charset=utf-8"),
    "/demo/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/demo/licenses.txt": ("licenses.txt", "text/plain; charset=utf-8"),
}


def headers(answer: object) -> dict[str, str]:
    return dict(answer.headers)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", sorted(FILES))
def test_every_file_with_its_type_and_the_policy(path: str) -> None:
    name, ctype = FILES[path]
    answer = demo_page().answer("GET", path, host="127.0.0.1:8765")
    assert answer is not None
    assert answer.status == 200
    h = headers(answer)
    assert h["Content-Type"] == ctype
    assert answer.body == (STATIC / name).read_bytes()
    assert h["Content-Length"] == str(len(answer.body))
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    policy = h["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    assert "style-src 'self';" in policy
    assert "connect-src ws://127.0.0.1:8765;" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe" not in policy


def test_head_has_the_headers_and_no_body() -> None:
    get = demo_page().answer("GET", "/demo/app.js")
    head = demo_page().answer("HEAD", "/demo/app.js")
    assert get is not None
    assert head is not None
    assert head.status == 200
    assert head.body == b""
    assert headers(head) == headers(get)


def test_redirect_404_405_and_paths_that_are_not_the_demos() -> None:
    page = demo_page()
    redirect = page.answer("GET", "/demo?x=1")
    assert redirect is not None
    assert redirect.status == 308
    assert headers(redirect)["Location"] == "/demo/?x=1"
    post = page.answer("POST", "/demo/")
    assert post is not None
    assert post.status == 405
    assert headers(post)["Allow"] == "GET, HEAD"
    for other in ("/", "/healthz", "/demos", "/demo.js", "/notes", "/x/demo/"):
        assert page.answer("GET", other) is None, other
    # The query is not part of the path.
    answer = page.answer("GET", "/demo/app.js?v=2")
    assert answer is not None
    assert answer.status == 200


TRAVERSALS = [
    "/demo/../pyproject.toml",
    "/demo/..%2f..%2fpyproject.toml",
    "/demo/%2e%2e/%2e%2e/crdtsync/__init__.py",
    "/demo/static/app.js",
    "/demo//app.js",
    "/demo/./app.js",
    "/demo/app.js/",
    "/demo/APP.JS",
    "/demo/app.js%00.html",
    "/demo/http.py",
    "/demo/__init__.py",
    "/demo/%61pp.js",
    "/demo/\\app.js",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_nothing_outside_the_table_is_served(target: str) -> None:
    answer = demo_page().answer("GET", target)
    assert answer is not None
    assert answer.status == 404
    assert answer.body == b"404 Not Found\n"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40))
def test_any_other_path_under_demo_is_a_404(rest: str) -> None:
    target = f"{PREFIX}/{rest}"
    answer = demo_page().answer("GET", target)
    assert answer is not None
    path = target.partition("?")[0]
    if path in FILES:
        assert answer.status == 200
    else:
        assert answer.status == 404
        assert answer.body == b"404 Not Found\n"


@pytest.mark.parametrize(
    ("host", "tls", "connect"),
    [
        ("127.0.0.1:8765", False, "ws://127.0.0.1:8765"),
        ("example.org", True, "wss://example.org"),
        ("[::1]:9000", False, "ws://[::1]:9000"),
        (None, False, "'self'"),
        ("evil.example; script-src *", False, "'self'"),
        ("a b", False, "'self'"),
        ("x:1:2", False, "'self'"),
        ("", False, "'self'"),
    ],
)
def test_connect_src_is_the_pages_own_host(host: str | None, tls: bool, connect: str) -> None:
    policy = content_security_policy(host, tls=tls)
    assert f"connect-src {connect};" in policy
    assert policy.count(";") == 7


def test_an_incomplete_install_is_refused() -> None:
    with pytest.raises(InvalidOperationError, match=r"app\.js"):
        DemoPage({"index.html": b"", "app.css": b""})


# -- through the relay ---------------------------------------------------------------------------


def raw_request(
    port: int, method: str, path: str, host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, dict(resp.getheaders()), body
    finally:
        conn.close()


@pytest.mark.anyio
async def test_the_relay_serves_the_page_only_when_asked(tmp_path: Path) -> None:
    async with running_relay(tmp_path, data=None) as relay:
        status, _ = await http_get(relay, "/demo/")
        assert status == 404
    async with running_relay(tmp_path, data=None, demo=True) as relay:
        port = relay.port
        status, hdrs, body = await asyncio.to_thread(raw_request, port, "GET", "/demo/")
        assert status == 200
        assert body == (STATIC / "index.html").read_bytes()
        assert hdrs["Content-Type"] == "text/html; charset=utf-8"
        assert f"connect-src ws://127.0.0.1:{port};" in hdrs["Content-Security-Policy"]
        assert hdrs["Connection"] == "close"
        status, hdrs, body = await asyncio.to_thread(raw_request, port, "HEAD", "/demo/app.js")
        assert status == 200
        assert body == b""
        assert int(hdrs["Content-Length"]) == (STATIC / "app.js").stat().st_size
        status, _, _ = await asyncio.to_thread(raw_request, port, "GET", "/demo/../relay.db")
        assert status == 404
        status, _, _ = await asyncio.to_thread(raw_request, port, "DELETE", "/demo/app.js")
        assert status == 405
        status, hdrs, _ = await asyncio.to_thread(
            raw_request, port, "GET", "/demo/", "evil; script-src *"
        )
        assert "connect-src 'self';" in hdrs["Content-Security-Policy"]
        # The operations endpoints and unknown paths are as before.
        assert await http_get(relay, "/healthz") == (200, "ok\n")
        assert (await http_get(relay, "/nothing"))[0] == 404

        # A room named "demo" still works: WebSocket upgrades never reach the page.
        client = await YClient.open(relay.url, "demo")
        try:
            await client.sync()
            await client.edit(lambda d: d.text("body").insert(0, "room demo"))
        finally:
            await client.ws.close()
        doc = await relay.peer.open("demo")
        assert str(doc.text("body")) == "room demo"


def test_the_wheel_ships_the_page(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("crdtsync-*.whl")
    archive = zipfile.ZipFile(wheel)
    for name in {f for f, _ in FILES.values()}:
        member = f"crdtsync/relay/demo_static/{name}"
        assert archive.read(member) == (STATIC / name).read_bytes(), member
    assert "crdtsync/relay/demo.py" in archive.namelist()
