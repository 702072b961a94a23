"""The ``crdtsync`` command: run a relay, mint access tokens, make a secret, edit together.

::

    crdtsync relay --host 127.0.0.1 --port 8765 --data relay.db --secret-file relay.key
    crdtsync token --secret-file relay.key --room notes --write --ttl 3600
    crdtsync secret --out relay.key
    crdtsync cat notes.db                # the documents a store holds
    crdtsync cat notes.db shopping       # one of them, as JSON
    crdtsync lan-key --out team.key
    crdtsync lan-invite --key-file team.key [--code --listen 0.0.0.0:0]
    crdtsync lan-join --out team.key (--invite STRING | --code 4081-7723 --address HOST:PORT)
    crdtsync peer notes --store notes.db --lan --key-file team.key [--relay URL --token T]
    crdtsync demo [--tui]                  # relay + demo page + links (crdtsync.apps.demo)
    crdtsync edit notes --relay ws://127.0.0.1:8765 --token TOKEN   # terminal editor
    crdtsync --version

Every option of ``crdtsync relay`` is generated from the fields of
:class:`~crdtsync.relay.config.RelayConfig` (name, type, default and help text), so
the command line cannot drift from the configuration. Each is also read from an
environment variable ``CRDTSYNC_<FIELD>`` (``CRDTSYNC_MAX_FRAME``); the command
line wins over the environment, which wins over the default. Two fields are
spelled differently because of what they hold:

- ``secret`` is read from a file: ``--secret-file`` / ``CRDTSYNC_SECRET_FILE``
  (a secret on a command line shows in ``ps``);
- ``data`` is ``--data PATH`` / ``CRDTSYNC_DATA``, or ``--memory`` /
  ``CRDTSYNC_MEMORY=1`` for a relay that keeps nothing.

Byte sizes take ``k``, ``M`` and ``G`` suffixes (binary: ``64k`` is 65,536) and
whole numbers may use underscores (``1_000_000``). A bad value exits with status 2
and a message naming the option or variable; a relay that cannot start (port in
use, store locked by another process) exits with status 1 and one line on stderr.

:func:`main` takes ``argv`` and returns the exit status, and :func:`build_config`
turns arguments and an environment into a :class:`RelayConfig`, so both are
testable without a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import errno
import inspect
import json
import math
import os
import re
import socket
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crdtsync.errors import CrdtSyncError, InvalidOperationError, InvalidRoomError
from crdtsync.relay.config import RelayConfig

__all__ = ["build_config", "main"]

ENV_PREFIX = "CRDTSYNC_"

_BYTE_SIZES = frozenset(
    {
        "max_frame",
        "max_update",
        "max_unauth_bytes",
        "max_send_queue",
        "max_room_bytes",
        "max_loaded_bytes",
        "max_bytes_per_sec",
        "max_answer_bytes_per_sec",
    }
)
_LOG_LEVELS = ("debug", "info", "warning", "error")
_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_INT = re.compile(r"([0-9](?:_?[0-9])*)([kKmMgG]?)")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


# -- value parsers (argparse ``type=`` functions, also applied to env values) -------


def _whole(text: str, *, sizes: bool) -> int:
    match = _INT.fullmatch(text.strip())
    if match is None or (match.group(2) and not sizes):
        hint = " (a byte size such as 65536, 64k, 8M)" if sizes else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number{hint}")
    return int(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def _count(*, sizes: bool = False) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _whole(text, sizes=sizes)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
        return value

    return parse


def _port(text: str) -> int:
    value = _whole(text, sizes=False)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return value


def _number(*, zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            bound = "at least 0" if zero else "greater than 0"
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number {bound}")
        return value

    return parse


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _file(text: str) -> str:
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return text


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(_LOG_LEVELS)}")
    return level


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (1/0, true/false, yes/no)")


# -- options generated from RelayConfig ----------------------------------------------


@dataclass(frozen=True)
class _Option:
    """One ``crdtsync relay`` option and the RelayConfig field it sets."""

    field: str  # RelayConfig field name
    flag: str  # command-line flag
    env: str  # environment variable
    parse: Callable[[str], Any]  # text -> value; raises ArgumentTypeError
    metavar: str
    help: str


def _field_docs() -> dict[str, str]:
    """Each field's description, from the ``Attributes:`` section of RelayConfig's docstring."""
    doc = inspect.cleandoc(RelayConfig.__doc__ or "")
    docs: dict[str, str] = {}
    current: str | None = None
    in_attributes = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_attributes = True
            continue
        if not in_attributes:
            continue
        if line and not line.startswith(" "):
            break  # the next section
        entry = re.fullmatch(r" {4}(\w+): (.*)", line)
        if entry:
            current = entry.group(1)
            docs[current] = entry.group(2)
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return {name: _plain(text) for name, text in docs.items()}


def _plain(text: str) -> str:
    """Docstring text for a terminal: no reST markup, '%' escaped for argparse.

    A setting named in the text (``tls_key``) becomes its option (``--tls-key``):
    a command-line user knows the options, not the Python field names.
    """
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", text)
    fields = {f.name for f in dataclasses.fields(RelayConfig)}
    text = re.sub(
        r"``(\w+)``",
        lambda m: "--" + m.group(1).replace("_", "-") if m.group(1) in fields else m.group(1),
        text,
    )
    return text.replace("``", "").replace("%", "%%")


def _parser_for(field: dataclasses.Field[Any]) -> tuple[Callable[[str], Any], str]:
    """The value parser and metavar of a RelayConfig field, by name and then by type."""
    name, kind = field.name, str(field.type)
    if name == "port":
        return _port, "PORT"
    if name == "log_level":
        return _log_level, "LEVEL"
    if name == "secret":
        return _file, "FILE"
    if name in ("tls_cert", "tls_key"):
        return _file, "FILE"
    if kind == "bool":
        return _flag, "BOOL"
    if name == "idle_unload":
        return _number(zero=True), "SECONDS"
    if kind == "int":
        return _count(sizes=name in _BYTE_SIZES), "BYTES" if name in _BYTE_SIZES else "N"
    if kind == "float":
        return _number(zero=False), "RATE" if name.endswith("per_sec") else "SECONDS"
    if kind in ("str", "str | None"):
        return _text, "PATH" if kind == "str | None" else "TEXT"
    # A new RelayConfig field of a type this module does not know: fail at import,
    # which the CLI tests do, rather than ship an option that parses nothing.
    raise TypeError(f"no command-line parser for RelayConfig.{name}: {kind}")


def _options() -> list[_Option]:
    docs = _field_docs()
    options = []
    for field in dataclasses.fields(RelayConfig):
        parse, metavar = _parser_for(field)
        # The secret itself never goes on a command line: it is read from a file.
        name = "secret_file" if field.name == "secret" else field.name
        options.append(
            _Option(
                field=field.name,
                flag="--" + name.replace("_", "-"),
                env=ENV_PREFIX + name.upper(),
                parse=parse,
                metavar=metavar,
                help=docs.get(field.name, ""),
            )
        )
    return options


OPTIONS = _options()
_MEMORY_ENV = ENV_PREFIX + "MEMORY"
_SECRET_FILE_ENV = ENV_PREFIX + "SECRET_FILE"


def _add_relay_options(parser: argparse.ArgumentParser) -> None:
    defaults = RelayConfig()
    for option in OPTIONS:
        default = getattr(defaults, option.field)
        shown = "none" if default is None else default
        help_text = f"{option.help} (default: {shown}; env {option.env})".strip()
        target: Any = parser
        if option.field == "data":
            # --data and --memory exclude each other.
            target = parser.add_mutually_exclusive_group()
            target.add_argument(
                "--memory",
                action="store_true",
                default=None,
                help=f"keep rooms in memory only, lost at exit (env {_MEMORY_ENV}=1)",
            )
        target.add_argument(
            option.flag,
            dest=option.field,
            type=option.parse,
            default=None,  # None: not given, fall back to the environment
            metavar=option.metavar,
            help=help_text,
        )


def _from_env(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str],
    env: str,
    parse: Callable[[str], Any],
) -> Any:
    text = environ.get(env)
    if text is None:
        return None
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"environment variable {env}: {exc}")


def _config_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, environ: Mapping[str, str]
) -> RelayConfig:
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = getattr(args, option.field)
        if value is None:
            value = _from_env(parser, environ, option.env, option.parse)
        if value is not None:
            values[option.field] = value

    # data: --data/--memory on the command line beat both variables.
    memory = args.memory
    if args.data is None and memory is None:
        env_memory = bool(_from_env(parser, environ, _MEMORY_ENV, _flag))
        if env_memory and ENV_PREFIX + "DATA" in environ:
            parser.error(f"both {ENV_PREFIX}DATA and {_MEMORY_ENV} are set; choose one")
        memory = env_memory
    if memory:
        values["data"] = None

    if "secret" in values:
        values["secret"] = _read_secret(parser, values["secret"])
    if ("tls_cert" in values) != ("tls_key" in values):
        parser.error("--tls-cert and --tls-key go together: give both or neither")
    return RelayConfig(**values)


def _read_secret(parser: argparse.ArgumentParser, path: str) -> bytes:
    from crdtsync.relay.tokens import load_secret

    try:
        secret = load_secret(path)
    except InvalidOperationError as exc:
        parser.error(_one_line(exc))  # it names the file already
    except OSError as exc:
        parser.error(f"cannot read secret file {path!r}: {exc.strerror or _one_line(exc)}")
    mode = os.stat(path).st_mode
    if mode & 0o077:
        print(
            f"crdtsync: warning: secret file {path!r} can be read by other users "
            f"(mode {mode & 0o777:04o}); anyone who reads it can mint tokens. "
            f"Fix with: chmod 600 {path}",
            file=sys.stderr,
        )
    return secret


def _relay_parser(prog: str = "crdtsync relay") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the relay: y-protocols and crdtsync peers meet in rooms.",
    )
    _add_relay_options(parser)
    return parser


def build_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> RelayConfig:
    """The relay configuration from ``crdtsync relay`` arguments and the environment.

    Args:
        argv: the arguments after ``relay``, e.g. ``["--port", "0", "--memory"]``.
        environ: the environment (``os.environ`` if None); ``CRDTSYNC_<FIELD>``
            variables fill in what ``argv`` does not give.

    Returns:
        The configuration, with the secret file already read.

    Raises:
        SystemExit: with status 2 and a message on stderr, for a bad value.
    """
    parser = _relay_parser()
    args = parser.parse_args(list(argv))
    return _config_from_args(parser, args, os.environ if environ is None else environ)


# -- commands ------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _run_relay(config: RelayConfig) -> int:
    # Imported here so that `crdtsync token` and `crdtsync secret` work without the
    # server's dependencies loaded (and start fast).
    from crdtsync.relay import server

    if config.secret is None:
        print(
            "crdtsync relay: warning: no --secret-file, so there is no authentication: "
            "every room is open to anyone who can connect, to read and to write. "
            "Make a secret with `crdtsync secret --out relay.key` and pass "
            "--secret-file relay.key.",
            file=sys.stderr,
        )
    try:
        asyncio.run(server.serve(config))
    except KeyboardInterrupt:
        # serve() handles SIGINT itself; this is a ^C before it installed its handler.
        return 130
    except (CrdtSyncError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in (
            errno.EADDRINUSE,
            errno.EADDRNOTAVAIL,
            errno.EACCES,
        ):
            # asyncio's message repeats the address; the errno's own text is enough.
            where = f"{config.host}:{config.port}"
            reason = os.strerror(exc.errno)
            print(f"crdtsync relay: cannot listen on {where}: {reason}", file=sys.stderr)
        elif isinstance(exc, socket.gaierror):
            print(
                f"crdtsync relay: cannot listen on {config.host}:{config.port}: "
                f"the host {config.host!r} does not resolve ({exc.strerror})",
                file=sys.stderr,
            )
        elif isinstance(exc, ssl.SSLError):
            # OpenSSL's "[SSL] PEM lib" alone does not say which setting is wrong.
            detail = _one_line(exc)
            print(f"crdtsync relay: cannot load --tls-cert/--tls-key: {detail}", file=sys.stderr)
        else:
            print(f"crdtsync relay: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _token(
    parser: argparse.ArgumentParser, args: argparse.Namespace, env: Mapping[str, str]
) -> int:
    from crdtsync.relay.tokens import mint_token

    path = args.secret_file
    if path is None:
        path = env.get(_SECRET_FILE_ENV)
    if not path:
        parser.error(f"--secret-file (or {_SECRET_FILE_ENV}) is required")
    secret = _read_secret(parser, path)
    try:
        token = mint_token(secret, args.room, write=args.write, ttl=args.ttl, subject=args.subject)
    except (InvalidRoomError, InvalidOperationError) as exc:
        parser.error(_one_line(exc))
    print(token)
    return 0


def _secret(args: argparse.Namespace) -> int:
    from crdtsync.relay.tokens import generate_secret

    secret = generate_secret()
    if args.out is None:
        sys.stdout.write(secret.decode("ascii") + "\n")
        return 0
    try:
        # O_EXCL: never replace a secret that tokens in circulation were signed with.
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"crdtsync secret: {args.out} exists; not overwriting it", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"crdtsync secret: {_one_line(exc)}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # exactly 0600, whatever the umask
        f.write(secret + b"\n")
    return 0


def _jsonable(value: object) -> object:
    """``value`` with what JSON has no type for shown as text: bytes, inf, -inf."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # inf, -inf (NaN is never stored)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _cat(args: argparse.Namespace) -> int:
    """Print a stored document as JSON (or list the documents), without the writer's lock."""
    from crdtsync.errors import StoreError
    from crdtsync.model.doc import Doc
    from crdtsync.store.sqlite import SQLiteStore

    try:
        store = SQLiteStore(args.store, readonly=True)
    except StoreError as exc:
        print(f"crdtsync cat: {exc}", file=sys.stderr)
        return 1
    with store:
        try:
            if args.doc is None:
                for name in store.names():
                    stored = store.load(name)
                    assert stored is not None
                    size = len(stored.snapshot or b"") + sum(len(u) for _, u in stored.updates)
                    print(f"{name}\t{size} bytes\t{len(stored.updates)} log entries")
                return 0
            stored = store.load(args.doc)
            if stored is None:
                names = ", ".join(map(repr, store.names())) or "none"
                print(
                    f"crdtsync cat: no document {args.doc!r} in {args.store} (it holds: {names})",
                    file=sys.stderr,
                )
                return 1
            doc = Doc.load(stored.snapshot) if stored.snapshot is not None else Doc()
            for _, update in stored.updates:
                doc.import_yjs_update(update)
        except CrdtSyncError as exc:
            print(f"crdtsync cat: {args.store}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(_jsonable(doc.to_py()), indent=2, ensure_ascii=False, allow_nan=False))
    return 0


# -- LAN group keys and pairing (the `lan` extra) --------------------------------------


def _lan(name: str) -> Any:
    """A module of crdtsync.transports.lan, or exit 1 saying which extra to install."""
    import importlib

    try:
        return importlib.import_module(f"crdtsync.transports.lan.{name}")
    except ImportError as exc:
        print(
            f"crdtsync: the LAN commands need the lan extra (pip install 'crdtsync[lan]'): {exc}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def _lan_key(args: argparse.Namespace) -> int:
    group = _lan("identity").GroupKey.generate()
    if args.out is None:
        sys.stdout.write(group.encode())
        return 0
    try:
        group.save(args.out)  # mode 0600; never replaces a key devices already hold
    except CrdtSyncError as exc:
        print(f"crdtsync lan-key: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _lan_invite(args: argparse.Namespace) -> int:
    try:
        group = _lan("identity").GroupKey.load(args.key_file)
    except CrdtSyncError as exc:
        print(f"crdtsync lan-invite: {_one_line(exc)}", file=sys.stderr)
        return 1
    pairing = _lan("pairing")
    if not args.code:
        print(pairing.make_invite(group))
        print(
            "Give this invite only to the new device, over a channel you trust; "
            "accept it there with: crdtsync lan-join --out team.key --invite INVITE",
            file=sys.stderr,
        )
        return 0
    host, _, port = args.listen.rpartition(":")

    async def invite() -> str:
        server = await pairing.serve_pairing(group, host.strip("[]") or "0.0.0.0", int(port))
        print(f"code: {server.code}", flush=True)
        print(f"address: {server.address}", flush=True)
        print(
            f"On the new device: crdtsync lan-join --out team.key --code {server.code} "
            f"--address HOST:{server.address.rpartition(':')[2]}  "
            f"(HOST: this device's LAN address; one attempt, then the code is spent)",
            file=sys.stderr,
            flush=True,
        )
        return str(await server.wait(args.timeout))

    try:
        who = asyncio.run(invite())
    except CrdtSyncError as exc:
        print(f"crdtsync lan-invite: {_one_line(exc)}", file=sys.stderr)
        return 1
    print(f"joined: {who}")
    return 0


def _lan_join(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if (args.invite is None) == (args.code is None):
        parser.error("give --invite, or --code with --address")
    if args.code is not None and args.address is None:
        parser.error("--code needs --address (printed by crdtsync lan-invite --code)")
    pairing = _lan("pairing")
    try:
        if args.invite is not None:
            group = pairing.read_invite(args.invite)
        else:
            group = asyncio.run(pairing.join_pairing(args.address, args.code))
        group.save(args.out)
    except CrdtSyncError as exc:
        print(f"crdtsync lan-join: {_one_line(exc)}", file=sys.stderr)
        return 1
    print(f"joined the group: key written to {args.out}")
    return 0


def _listen_address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port")
    return text


def _add_lan_commands(
    commands: Any,  # argparse's _SubParsersAction (a private type)
) -> dict[str, argparse.ArgumentParser]:
    lan_key = commands.add_parser(
        "lan-key",
        help="make a new LAN group key",
        description="Write a new random LAN group key (mode 0600; never overwrites), or print it.",
    )
    lan_key.add_argument("--out", metavar="FILE", help="file to create (default: print it)")

    invite = commands.add_parser(
        "lan-invite",
        help="invite a device into a LAN group",
        description=(
            "Print an invite string carrying the group key, or with --code listen "
            "and show a short code that one new device can use once (SPAKE2)."
        ),
    )
    invite.add_argument("--key-file", type=_file, required=True, metavar="FILE")
    invite.add_argument("--code", action="store_true", help="pair with a short code instead")
    invite.add_argument(
        "--listen",
        type=_listen_address,
        default="0.0.0.0:0",
        metavar="HOST:PORT",
        help="where to wait for the new device (with --code; default: 0.0.0.0:0)",
    )
    invite.add_argument(
        "--timeout",
        type=_number(zero=False),
        default=600.0,
        metavar="SECONDS",
        help="how long the code stays valid (default: 600)",
    )

    join = commands.add_parser(
        "lan-join",
        help="join a LAN group with an invite or a code",
        description="Accept an invite string, or a code shown by lan-invite --code.",
    )
    join.add_argument("--out", required=True, metavar="FILE", help="group key file to create")
    join.add_argument("--invite", metavar="INVITE", help="the invite string")
    join.add_argument("--code", metavar="CODE", help="the code shown on the inviting device")
    join.add_argument("--address", metavar="HOST:PORT", help="the inviting device's address")
    return {"lan-key": lan_key, "lan-invite": invite, "lan-join": join}


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from crdtsync import __version__
    from crdtsync.format.accel import PATH

    parser = argparse.ArgumentParser(
        prog="crdtsync",
        description="Local-first documents that sync: relay and tools.",
        # (keeps the line break of --version)
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"crdtsync {__version__}\nformats: {PATH}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    relay = commands.add_parser(
        "relay",
        help="run the relay server",
        description="Run the relay: y-protocols and crdtsync peers meet in rooms.",
    )
    _add_relay_options(relay)

    token = commands.add_parser(
        "token",
        help="mint an access token (printed on stdout)",
        description="Mint a signed access token for a room or room pattern.",
    )
    token.add_argument(
        "--secret-file",
        type=_file,
        metavar="FILE",
        help=f"the relay's secret (env {_SECRET_FILE_ENV})",
    )
    token.add_argument(
        "--room",
        required=True,
        metavar="PATTERN",
        help="room name, or pattern where * matches anything (team-a/*, *)",
    )
    token.add_argument("--write", action="store_true", help="grant write access (else read-only)")
    token.add_argument(
        "--ttl",
        type=_number(zero=False),
        default=3600.0,
        metavar="SECONDS",
        help="seconds until the token expires (default: 3600)",
    )
    token.add_argument("--subject", metavar="TEXT", help="who the token is for, shown in logs")

    secret = commands.add_parser(
        "secret",
        help="make a new random secret",
        description="Write a new random secret (mode 0600; never overwrites), or print it.",
    )
    secret.add_argument("--out", metavar="FILE", help="file to create (default: print it)")

    cat = commands.add_parser(
        "cat",
        help="print a stored document as JSON (read-only)",
        description=(
            "Print a document of a SQLite store as JSON, or list the store's documents. "
            "Read-only: works while a peer or relay has the store open."
        ),
    )
    cat.add_argument("store", metavar="STORE", help="the store file (a peer's or relay's .db)")
    cat.add_argument("doc", nargs="?", metavar="DOC", help="the document (default: list them)")
    lan = _add_lan_commands(commands)
    from crdtsync.apps.demo import command as apps

    demo = commands.add_parser(
        "demo",
        help="edit together: a relay with a demo page, links for two browsers and a terminal",
        description="Start a relay that serves the collaborative-editing demo page; print "
        "two links and the terminal editor's command. Ctrl-C stops it.",
    )
    apps.add_demo_arguments(demo)
    edit = commands.add_parser(
        "edit",
        help="edit a room's text in the terminal",
        description="The terminal editor on doc.text('body') of a relay room "
        "(needs pip install 'crdtsync[apps]').",
    )
    apps.add_edit_arguments(edit)
    from crdtsync.apps import peer as peer_app

    peer = commands.add_parser(
        "peer",
        help="sync a document over the LAN and/or a relay, printing its changes",
        description="Run a peer that syncs one document directly with the devices of a LAN "
        "group (--lan) and/or through a relay (--relay), and prints each change as a JSON "
        "line. Ctrl-C stops it.",
    )
    peer_app.add_peer_arguments(peer)
    return parser, {
        "relay": relay, "token": token, "secret": secret, "cat": cat, "demo": demo, "edit": edit,
        "peer": peer, **lan,
    }  # fmt: skip


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the ``crdtsync`` command.

    Args:
        argv: the arguments without the program name (``sys.argv[1:]`` if None).
        environ: the environment (``os.environ`` if None).

    Returns:
        The exit status: 0 on success, 1 when the relay cannot start or a file
        cannot be written, 2 for bad arguments (argparse exits with 2 itself).
    """
    env = os.environ if environ is None else environ
    parser, commands = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command == "relay":
        return _run_relay(_config_from_args(commands["relay"], args, env))
    if args.command == "token":
        return _token(commands["token"], args, env)
    if args.command == "secret":
        return _secret(args)
    if args.command == "cat":
        return _cat(args)
    if args.command == "lan-key":
        return _lan_key(args)
    if args.command == "lan-invite":
        return _lan_invite(args)
    if args.command == "lan-join":
        return _lan_join(commands["lan-join"], args)
    if args.command == "peer":
        from crdtsync.apps import peer as peer_app

        return peer_app.run_peer(args, dict(env))
    if args.command in ("demo", "edit"):
        from crdtsync.apps.demo import command as apps

        return apps.run_demo(args) if args.command == "demo" else apps.run_edit(args, dict(env))
    parser.print_help(sys.stderr)
    return 2
