"""A throwaway PostgreSQL server for tests: Debian's server programs, in a temp dir.

:class:`PgServer` runs ``initdb`` and ``pg_ctl`` from ``pg_config --bindir``
(else ``/usr/lib/postgresql/*/bin``) in a fresh directory, listening on a free
port of 127.0.0.1 with its unix socket inside that directory. PostgreSQL refuses
to run as root, so as root every server program runs as the ``postgres`` user
(the directory is handed to it); as anyone else, as that user. The server is
stopped and its directory removed on :meth:`PgServer.stop`, whatever happened.

The fixtures (registered in ``tests/conftest.py``):

* ``pg_server``: one server for the whole session, started on first use;
* ``pg_dsn``: a fresh database on it for one test (dropped afterwards);
* ``pg_own_server``: a server of the test's own, which it may stop, restart or
  cut off (the database-restart and partition tests).

A test needing PostgreSQL is skipped, saying why, only when it cannot run: not
root and no server programs installed. As root (CI) a missing server is a
failure: ``scripts/check`` installs Debian's ``postgresql``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_USER = "postgres"
_STEP_TIMEOUT = 120.0  # seconds for initdb, start and stop: the machine is shared


class PgUnavailable(RuntimeError):
    """No PostgreSQL server programs here (and we may not install them)."""


def find_bindir() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``.

    Raises:
        PgUnavailable: no server programs are installed.
    """
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            )
            candidates.append(out.stdout.strip())
    # pg_config may come from libpq-dev alone; the server's own directory is versioned.
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for cand in candidates:
        if cand and (Path(cand) / "initdb").is_file() and (Path(cand) / "pg_ctl").is_file():
            return Path(cand)
    raise PgUnavailable(
        "PostgreSQL server programs not found (pg_config --bindir, /usr/lib/postgresql/*/bin): "
        "install Debian's postgresql package"
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL server in a directory of its own.

    Args:
        root: the directory to use (created; removed by :meth:`stop` when the
            server made it, i.e. when ``root`` is None).
        settings: extra ``postgresql.conf`` settings (``-c name=value``).
    """

    def __init__(self, root: Path | None = None, *, settings: dict[str, str] | None = None):
        self.bindir = find_bindir()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                self._pw: pwd.struct_passwd | None = pwd.getpwnam(_USER)
            except KeyError:
                raise PgUnavailable(f"no {_USER!r} user to run PostgreSQL as") from None
        else:
            self._pw = None
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="crdtsync-pg-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        # The data directory and the unix socket directory, both inside root.
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.log = self.root / "server.log"
        self.port = 0
        self.settings = dict(settings or {})
        self.running = False

    # -- lifecycle --------------------------------------------------------------------

    def init(self) -> None:
        """Create the cluster (``initdb``) if the directory has none yet."""
        if self._as_root:
            assert self._pw is not None
            os.chown(self.root, self._pw.pw_uid, self._pw.pw_gid)
        self.sockets.mkdir(exist_ok=True)
        self._give(self.sockets)
        if (self.data / "PG_VERSION").is_file():
            return
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                _USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ]
        )

    def start(self, port: int | None = None) -> str:
        """Start the server (``initdb`` first if needed); returns the DSN of ``postgres``.

        Args:
            port: the port to listen on (default: the last one, else a free one).
        """
        self.init()
        for attempt in itertools.count():
            self.port = port or self.port or free_port()
            opts = [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.sockets}",
                "-c max_connections=300",
                "-c shared_buffers=32MB",
                # Durability as in production: the tests check what survives.
                "-c fsync=on",
                "-c synchronous_commit=on",
                "-c log_min_messages=warning",
            ] + [f"-c {k}={v}" for k, v in self.settings.items()]
            try:
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "start",
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.log),
                        "-w",
                        "-t",
                        str(int(_STEP_TIMEOUT)),
                        "-o",
                        " ".join(opts),
                    ]
                )
            except RuntimeError:
                # Most likely the port was taken between free_port() and the bind.
                if port is not None or attempt >= 3:
                    raise
                self.port = 0
                continue
            break
        self.running = True
        return self.dsn()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode``); idempotent.

        Args:
            mode: ``fast`` (clients are disconnected, a clean shutdown) or
                ``immediate`` (like a crash: recovery runs on the next start).
        """
        if not self.running:
            return
        self.running = False
        try:
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "stop",
                    "-D",
                    str(self.data),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    str(int(_STEP_TIMEOUT)),
                ]
            )
        except RuntimeError:
            self._kill_postmaster()
            raise

    def restart(self, mode: str = "fast") -> str:
        """Stop and start again on the same port; returns the DSN."""
        self.stop(mode)
        return self.start(self.port)

    def destroy(self) -> None:
        """Stop the server if it runs and remove its directory (if this object made it)."""
        try:
            self.stop("immediate")
        finally:
            if self._owns_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """Last resort when ``pg_ctl stop`` failed: SIGKILL the postmaster we started."""
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().split("\n", 1)[0])
            os.kill(pid, signal.SIGKILL)

    # -- databases ----------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URI for ``dbname`` over TCP on 127.0.0.1."""
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` (through the unix socket); returns its output."""
        out = self._run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.sockets),
                "-p",
                str(self.port),
                "-U",
                _USER,
                "-d",
                dbname,
                "-c",
                sql,
            ]
        )
        return out.strip()

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its DSN."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting whoever is still on it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- helpers ----------------------------------------------------------------------

    def _give(self, path: Path) -> None:
        if self._as_root:
            assert self._pw is not None
            os.chown(path, self._pw.pw_uid, self._pw.pw_gid)

    def _run(self, argv: list[str]) -> str:
        kwargs: dict[str, Any] = {}
        if self._as_root:
            assert self._pw is not None
            kwargs = {"user": self._pw.pw_uid, "group": self._pw.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        if self._pw is not None:
            env["HOME"] = self._pw.pw_dir
        try:
            out = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=_STEP_TIMEOUT,
                check=False,
                cwd=self.root,
                env=env,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{Path(argv[0]).name} timed out after {_STEP_TIMEOUT} s") from exc
        if out.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = self.log.read_text()[-2000:]
            raise RuntimeError(
                f"{Path(argv[0]).name} failed ({out.returncode}): {out.stderr.strip()}\n{log}"
            )
        return out.stdout

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _skip_or_fail(exc: PgUnavailable) -> None:
    if os.geteuid() == 0:
        # CI runs as root and must run these tests: scripts/check installs the package.
        pytest.fail(f"{exc} (scripts/check installs it)")
    pytest.skip(f"PostgreSQL unavailable: {exc}")


def start_server(**settings: str) -> PgServer:
    """A started :class:`PgServer` (skips or fails the test when there is none)."""
    try:
        server = PgServer(settings=settings)
    except PgUnavailable as exc:
        _skip_or_fail(exc)
        raise
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the session (started on first use)."""
    server = start_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """A DSN of a fresh, empty database for this test."""
    name = f"t{os.getpid()}_{next(_counter)}_{int(time.time() * 1000) % 100000}"
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg_own_server() -> Iterator[PgServer]:
    """A server of this test's own (it may stop, restart or cut it)."""
    server = start_server()
    try:
        yield server
    finally:
        server.destroy()
