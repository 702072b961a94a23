"""``crdtsync demo`` and ``crdtsync edit``: edit one text together, in browsers and a terminal.

``crdtsync demo`` starts a relay on 127.0.0.1 that also serves the demo page
(:mod:`crdtsync.relay.demo`), with its rooms in an SQLite file in a data folder
(printed; kept between runs, with the relay's secret, so earlier links keep
working, and the relay's warnings in ``relay.log``), mints access tokens, and
prints two links (``ana`` and ``bob``) and the command that opens the terminal
editor on the same room. ``--tui`` opens the terminal editor right there, in the
same process. Ctrl-C (or quitting the editor) stops everything: connections are
closed, the store is flushed.

``crdtsync edit ROOM --relay ws://HOST:PORT [--token TOKEN] [--name NAME]`` opens
the terminal editor (:mod:`crdtsync.apps.editor`) on a room of any crdtsync relay;
``crdtsync edit ROOM --lan --key-file team.key`` on a document shared directly
with the devices of a LAN group (both options together: both ways at once).

Both are wired into :mod:`crdtsync.cli` through :func:`add_demo_arguments`,
:func:`add_edit_arguments`, :func:`run_demo` and :func:`run_edit`, which take the
parsed arguments and return the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TextIO
from urllib.parse import urlencode

from crdtsync.errors import CrdtSyncError, InvalidRoomError

__all__ = [
    "add_demo_arguments",
    "add_edit_arguments",
    "demo_links",
    "run_demo",
    "run_edit",
]

#: Seconds the printed tokens stay valid.
TOKEN_TTL = 7 * 24 * 3600
_TOKEN_ENV = "CRDTSYNC_TOKEN"


def default_data_folder() -> Path:
    """Where ``crdtsync demo`` keeps its rooms: ``$XDG_DATA_HOME/crdtsync/demo``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "crdtsync" / "demo"


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crdtsync demo``."""
    parser.add_argument(
        "--data",
        metavar="DIR",
        help=f"folder of the rooms and the relay's secret (default: {default_data_folder()})",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8765, help="TCP port, 0 for any free one (default: 8765)"
    )
    parser.add_argument("--room", default="notes", help="the room to edit (default: notes)")
    parser.add_argument(
        "--tui", action="store_true", help="also open the terminal editor, here, in this terminal"
    )
    parser.add_argument(
        "--name", default="carol", help="your name in the terminal editor (default: carol)"
    )


def add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crdtsync edit``."""
    parser.add_argument("room", metavar="ROOM", help="the room (document) to edit")
    parser.add_argument("--relay", metavar="URL", help="the relay, e.g. ws://127.0.0.1:8765")
    parser.add_argument(
        "--lan", action="store_true", help="edit with the LAN group's devices directly"
    )
    parser.add_argument("--key-file", metavar="FILE", help="the LAN group key (crdtsync lan-key)")
    parser.add_argument(
        "--interface",
        action="append",
        default=[],
        metavar="IP",
        help="an IPv4 address for the LAN (repeat; default: every interface)",
    )
    parser.add_argument(
        "--store",
        metavar="PATH",
        help="keep the room in this SQLite file (and the LAN device identity beside it)",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"an access token for the room (crdtsync token; env {_TOKEN_ENV})",
    )
    parser.add_argument("--name", metavar="NAME", help="the name others see (default: login name)")


def demo_links(base: str, room: str, tokens: dict[str, str]) -> dict[str, str]:
    """The page's link for each person: ``{name: http://HOST:PORT/demo/#room=...}``.

    The room, name and token go in the fragment, which browsers never send to a
    server (so the token stays out of logs).
    """
    return {
        name: f"{base}/demo/#" + urlencode({"room": room, "name": name, "token": token})
        for name, token in tokens.items()
    }


def _load_or_make_secret(folder: Path) -> bytes:
    from crdtsync.relay.tokens import generate_secret, load_secret

    path = folder / "relay.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_secret(path)
    with os.fdopen(fd, "wb") as f:
        f.write(generate_secret() + b"\n")
    return load_secret(path)


def run_demo(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``crdtsync demo`` until Ctrl-C (or until the terminal editor quits).

    Returns:
        0 after a clean stop; 1 if the relay cannot start; 2 for a bad room name.
    """
    stdout = out or sys.stdout
    from crdtsync.relay.names import validate_room

    try:
        validate_room(args.room)
    except InvalidRoomError as exc:
        print(f"crdtsync demo: {exc}", file=sys.stderr)
        return 2
    if args.tui:
        try:
            import textual  # noqa: F401
        except ImportError:
            print(_NO_TEXTUAL.format(cmd="crdtsync demo --tui"), file=sys.stderr)
            return 1
    folder = Path(args.data) if args.data else default_data_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        secret = _load_or_make_secret(folder)
        # Fail now, not at the first request, if the page is not installed.
        from crdtsync.relay.demo import demo_page

        demo_page()
    except (OSError, CrdtSyncError) as exc:
        print(f"crdtsync demo: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_demo(args, folder, secret, stdout))
    except KeyboardInterrupt:
        return 130


_NO_TEXTUAL = "{cmd}: the terminal editor needs Textual: pip install 'crdtsync[apps]'"


async def _demo(args: argparse.Namespace, folder: Path, secret: bytes, out: TextIO) -> int:
    # The relay's warnings go to a file in the data folder: the terminal is for the
    # links (and, with --tui, for the editor, which a log line would garble).
    handler = logging.FileHandler(folder / "relay.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("crdtsync")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    try:
        return await _serve_demo(args, folder, secret, out)
    finally:
        root.removeHandler(handler)
        handler.close()


async def _serve_demo(args: argparse.Namespace, folder: Path, secret: bytes, out: TextIO) -> int:
    from crdtsync.relay import Relay, RelayConfig, mint_token

    config = RelayConfig(
        host=args.host,
        port=args.port,
        data=str(folder / "relay.db"),
        secret=secret,
        demo=True,
        log_level="warning",
    )
    relay = Relay(config)
    try:
        await relay.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno in (errno.EADDRINUSE, errno.EACCES) else exc
        print(f"crdtsync demo: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    except CrdtSyncError as exc:
        print(f"crdtsync demo: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        # One token per person, for every room of this relay (a demo on 127.0.0.1:
        # a link's room can be changed in the address bar).
        tokens = {
            name: mint_token(secret, "*", write=True, ttl=TOKEN_TTL, subject=name)
            for name in ("ana", "bob", args.name)
        }
        base = relay.url.replace("ws", "http", 1)
        links = demo_links(base, args.room, {n: tokens[n] for n in ("ana", "bob")})
        edit = shlex.join(
            ["crdtsync", "edit", args.room, "--relay", relay.url, "--token", tokens[args.name]]
        )
        edit += " --name " + shlex.quote(args.name)
        _say(out, _banner(relay.url, folder, links, edit, tui=args.tui))
        if args.tui:
            await _run_editor(args.room, relay.url, tokens[args.name], args.name, stop)
        else:
            await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await relay.close()
    _say(out, "crdtsync demo: stopped (the rooms are kept in the data folder)")
    return 0


def _banner(url: str, folder: Path, links: dict[str, str], edit: str, *, tui: bool) -> str:
    lines = [
        f"crdtsync demo: relay on {url}, rooms stored in {folder}",
        "",
        "Open each link in its own browser window:",
        *(f"  {name}: {link}" for name, link in links.items()),
        "",
        "Edit the same text from a terminal:",
        f"  {edit}",
        "",
    ]
    if not tui:
        lines.append("Ctrl-C stops the relay.")
    return "\n".join(lines)


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


async def _run_editor(room: str, url: str, token: str, name: str, stop: asyncio.Event) -> None:
    from crdtsync.apps.editor import EditorApp

    app = EditorApp(room, url, token=token, name=name)
    editor = asyncio.ensure_future(app.run_async())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([editor, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not editor.done():
            app.exit()
        with contextlib.suppress(asyncio.CancelledError):
            await editor


def run_edit(args: argparse.Namespace, environ: dict[str, str] | None = None) -> int:
    """Run ``crdtsync edit`` until the editor quits.

    Returns:
        0 when the editor quits; 1 without Textual; 2 for a bad room name.
    """
    from crdtsync.relay.names import validate_room

    env = os.environ if environ is None else environ
    try:
        validate_room(args.room)
    except InvalidRoomError as exc:
        print(f"crdtsync edit: {exc}", file=sys.stderr)
        return 2
    if args.relay is None and not args.lan:
        print("crdtsync edit: give --relay URL, --lan --key-file FILE, or both", file=sys.stderr)
        return 2
    if args.relay is not None and not args.relay.startswith(("ws://", "wss://")):
        print("crdtsync edit: --relay is a ws:// or wss:// URL", file=sys.stderr)
        return 2
    if args.lan and not args.key_file:
        print("crdtsync edit: --lan needs --key-file (crdtsync lan-key)", file=sys.stderr)
        return 2
    try:
        from crdtsync.apps.editor import EditorApp
    except ImportError:
        print(_NO_TEXTUAL.format(cmd="crdtsync edit"), file=sys.stderr)
        return 1
    token = args.token or env.get(_TOKEN_ENV) or None
    app = EditorApp(
        args.room,
        args.relay,
        token=token,
        name=args.name,
        lan_key=args.key_file if args.lan else None,
        lan_interfaces=args.interface or None,
        store=args.store,
    )
    app.run()
    return 0
