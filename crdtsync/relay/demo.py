"""The demo page over plain HTTP: what the relay answers to ``GET /demo/...``.

Sans-I/O: :meth:`DemoPage.answer` takes a request's method, raw target and ``Host``
header and returns an :class:`Answer` (status, headers, body), or None for a path
that is not the demo's; the relay's HTTP hook turns it into a response. The relay
only asks for requests that are not WebSocket upgrades, so a y-websocket client
still joins a room named ``demo`` at ``ws://host/demo``.

What is served, from the package data in ``crdtsync/relay/demo_static/`` (built from
``apps/demo/web/`` of the repository, see ``docs/DEMO.md``):

================  ===============================  ==================================
path              file                             Content-Type
================  ===============================  ==================================
``/demo``         308 redirect to ``/demo/``
``/demo/``        ``index.html``                   ``text/html; charset=utf-8``
``/demo/app.js``  the bundle (one ES module)       ``text/javascript; charset=utf-8``
``/demo/app.css`` styles of the page               ``text/css; charset=utf-8``
``/demo/editor.css``  styles of an editor           ``text/css; charset=utf-8``
``/demo/favicon.svg``                              ``image/svg+xml``
``/demo/licenses.txt``  licences of the bundled packages  ``text/plain; charset=utf-8``
================  ===============================  ==================================

Anything else under ``/demo/`` is a 404; methods other than GET and HEAD get 405.
The path is looked up in that fixed table as it arrived (no percent-decoding, no
file system path is ever built from it), so no request can reach another file.

Every answer carries a strict Content-Security-Policy: scripts, styles and images
from the page's own origin only (no inline script or style attribute), WebSocket
connections only to the origin's own host and port (``ws://`` or ``wss://`` as the
relay serves), no frames, forms, plugins or base URL; plus ``nosniff``,
``no-referrer`` and same-origin opener and resource policies.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from crdtsync.errors import InvalidOperationError

__all__ = ["PREFIX", "Answer", "DemoPage", "demo_page"]

#: Where the page lives on the relay.
PREFIX = "/demo"

#: Request path (after PREFIX + "/") -> file in static/.
_ROUTES: Mapping[str, str] = {
    "": "index.html",
    "index.html": "index.html",
    "app.js": "app.js",
    "app.css": "app.css",
    "editor.css": "editor.css",
    "favicon.svg": "favicon.svg",
    "licenses.txt": "licenses.txt",
}
_TYPES: Mapping[str, str] = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "txt": "text/plain; charset=utf-8",
}
# A Host header we are willing to copy into the policy: a DNS name or IPv4 address,
# or a bracketed IPv6 address, and an optional port. Anything else: 'self' alone.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)


@dataclass(frozen=True)
class Answer:
    """An HTTP response, without I/O.

    Attributes:
        status: the status code.
        headers: header fields in order (``Content-Length`` included).
        body: the body (empty for HEAD, whatever ``Content-Length`` says).
    """

    status: HTTPStatus
    headers: tuple[tuple[str, str], ...]
    body: bytes


def content_security_policy(host: str | None, *, tls: bool) -> str:
    """The page's Content-Security-Policy.

    Args:
        host: the request's ``Host`` header (the page's own host and port), if any.
        tls: whether the relay serves ``wss://``.

    Returns:
        The header value. WebSocket connections are allowed to the page's own host
        only; if ``host`` is missing or not a plain host[:port], to ``'self'``
        (which browsers following CSP 3 also read as the same host's ws/wss).
    """
    connect = "'self'"
    if host is not None and _HOST.fullmatch(host):
        connect = f"{'wss' if tls else 'ws'}://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


class DemoPage:
    """The page's files, read once, and the answers to requests for them.

    Args:
        files: file name -> bytes, for every file of the route table (default: read
            from the package data).

    Raises:
        InvalidOperationError: a file of the page is missing (a broken install).
    """

    def __init__(self, files: Mapping[str, bytes] | None = None) -> None:
        if files is None:
            files = _read_static()
        missing = sorted(set(_ROUTES.values()) - set(files))
        if missing:
            raise InvalidOperationError(f"the demo page is incomplete: {', '.join(missing)}")
        # File name -> its bytes.
        self._files = dict(files)

    def answer(
        self, method: str, target: str, *, host: str | None = None, tls: bool = False
    ) -> Answer | None:
        """The answer to a plain HTTP request, or None if ``target`` is not the demo's.

        Args:
            method: the request method (``GET``, ``HEAD``, ...).
            target: the raw request target, e.g. ``/demo/app.js?v=1``.
            host: the ``Host`` header, used for the policy's ``connect-src``.
            tls: whether the relay serves ``wss://``.

        Returns:
            The answer; None for a path outside ``/demo`` (the caller answers it).
        """
        path, sep, query = target.partition("?")
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return None
        policy = content_security_policy(host, tls=tls)
        if method not in ("GET", "HEAD"):
            return _plain(
                HTTPStatus.METHOD_NOT_ALLOWED, policy, method, extra=(("Allow", "GET, HEAD"),)
            )
        if path == PREFIX:
            location = PREFIX + "/" + (sep + query if query else "")
            return _plain(
                HTTPStatus.PERMANENT_REDIRECT, policy, method, extra=(("Location", location),)
            )
        name = _ROUTES.get(path[len(PREFIX) + 1 :])
        if name is None:
            return _plain(HTTPStatus.NOT_FOUND, policy, method)
        body = self._files[name]
        headers = (
            ("Content-Type", _TYPES[name.rpartition(".")[2]]),
            ("Content-Length", str(len(body))),
            *_security_headers(policy),
            ("Cache-Control", "no-cache"),
        )
        return Answer(HTTPStatus.OK, headers, b"" if method == "HEAD" else body)


def _security_headers(policy: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    )


def _plain(
    status: HTTPStatus, policy: str, method: str, extra: tuple[tuple[str, str], ...] = ()
) -> Answer:
    body = f"{status.value} {status.phrase}\n".encode()
    headers = (
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *extra,
        *_security_headers(policy),
        ("Cache-Control", "no-store"),
    )
    return Answer(status, headers, b"" if method == "HEAD" else body)


def _read_static() -> dict[str, bytes]:
    static = importlib.resources.files("crdtsync.relay").joinpath("demo_static")
    files = {}
    for name in set(_ROUTES.values()):
        entry = static.joinpath(name)
        if entry.is_file():
            files[name] = entry.read_bytes()
    return files


@functools.cache
def demo_page() -> DemoPage:
    """The installed page (read from the package data on first use).

    Raises:
        InvalidOperationError: the page's files are not installed.
    """
    return DemoPage()
