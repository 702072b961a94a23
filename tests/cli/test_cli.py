"""The crdtsync command line: relay options from RelayConfig, token, secret, --version."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import queue
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import crdtsync
import crdtsync.relay
from crdtsync.cli import OPTIONS, build_config, main
from crdtsync.errors import StoreLockedError, TokenExpiredError
from crdtsync.relay.config import RelayConfig
from crdtsync.relay.tokens import generate_secret, load_secret, verify_token

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "relay.key"
    path.write_bytes(generate_secret() + b"\n")
    path.chmod(0o600)  # as `crdtsync secret` writes it
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CRDTSYNC_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "crdtsync", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        cwd=REPO,
        check=False,
    )


# -- crdtsync token --------------------------------------------------------------------


def test_token_subprocess_verifies(secret_file: Path) -> None:
    before = time.time()
    proc = run_cli(
        "token", "--secret-file", str(secret_file), "--room", "team-a/*", "--write",
        "--ttl", "120", "--subject", "alice",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert proc.stdout == token + "\n"
    claims = verify_token(load_secret(secret_file), token)
    assert claims.room == "team-a/*"
    assert claims.write is True
    assert claims.subject == "alice"
    assert before - 1 <= claims.issued <= time.time()
    assert claims.expires - claims.issued in (119, 120)
    assert claims.allows("team-a/notes")
    assert not claims.allows("team-b/notes")


def test_token_secret_file_from_env_and_read_only_default(
    secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"CRDTSYNC_SECRET_FILE": str(secret_file)}
    assert main(["token", "--room", "notes"], environ=env) == 0
    token = capsys.readouterr().out.strip()
    claims = verify_token(load_secret(secret_file), token)
    assert claims.write is False
    assert claims.subject is None
    assert claims.expires - claims.issued in (3599, 3600)  # default ttl
    with pytest.raises(TokenExpiredError):
        verify_token(load_secret(secret_file), token, now=claims.expires + 31)


def test_token_flag_beats_env(
    secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(generate_secret())
    env = {"CRDTSYNC_SECRET_FILE": str(other)}
    assert main(["token", "--secret-file", str(secret_file), "--room", "x"], environ=env) == 0
    assert verify_token(load_secret(secret_file), capsys.readouterr().out.strip()).room == "x"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--room", "notes"], "--secret-file"),
        (["--secret-file", "{missing}", "--room", "notes"], "is not a file"),
        (["--secret-file", "{short}", "--room", "notes"], "fewer than 16 bytes"),
        (["--secret-file", "{key}", "--room", "../x"], "'..'"),
        (["--secret-file", "{key}", "--room", "a?"], "characters"),
        (["--secret-file", "{key}", "--room", "notes", "--ttl", "0"], "greater than 0"),
        (["--secret-file", "{key}", "--room", "notes", "--ttl", "0.5"], "ttl"),
        (["--secret-file", "{key}", "--room", "notes", "--ttl", "soon"], "not a number"),
        (["--secret-file", "{key}", "--room", "notes", "--subject", "a\tb"], "subject"),
        (["--secret-file", "{key}"], "--room"),
    ],
)
def test_token_bad_arguments_exit_2(
    args: list[str],
    message: str,
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"tooshort\n")
    paths = {"key": secret_file, "short": short, "missing": tmp_path / "missing"}
    argv = ["token", *(a.format(**paths) for a in args)]
    with pytest.raises(SystemExit) as info:
        main(argv, environ={})
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err
    assert load_secret(secret_file).decode() not in err


# -- crdtsync secret -------------------------------------------------------------------


def test_secret_file_is_0600_and_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "relay.key"
    old_umask = os.umask(0)  # the file must be 0600 even with a permissive umask
    try:
        assert main(["secret", "--out", str(out)], environ={}) == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    content = out.read_bytes()
    assert len(load_secret(out)) == 64
    assert capsys.readouterr().out == ""  # the secret is not echoed

    assert main(["secret", "--out", str(out)], environ={}) == 1
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == content

    second = tmp_path / "second.key"
    assert main(["secret", "--out", str(second)], environ={}) == 0
    assert load_secret(second) != load_secret(out)


def test_secret_subprocess_and_stdout(tmp_path: Path) -> None:
    out = tmp_path / "k"
    proc = run_cli("secret", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    proc = run_cli("secret", "--out", str(out))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    printed = run_cli("secret")
    assert printed.returncode == 0
    assert len(printed.stdout.strip()) == 64
    int(printed.stdout, 16)
    proc = run_cli("secret", "--out", str(tmp_path / "no" / "such" / "dir"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


def test_version_and_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    from crdtsync.format.accel import PATH

    version, formats = capsys.readouterr().out.strip().splitlines()
    assert version == f"crdtsync {crdtsync.__version__}"
    assert formats == f"formats: {PATH}"
    assert main([], environ={}) == 2
    assert "relay" in capsys.readouterr().err
    proc = run_cli("--version")
    assert proc.stdout.splitlines()[0] == f"crdtsync {crdtsync.__version__}"


# -- crdtsync relay: configuration --------------------------------------------------------


def test_defaults_come_from_relay_config() -> None:
    assert build_config([], {}) == RelayConfig()


def test_every_config_field_has_an_option_and_a_description() -> None:
    fields = [f.name for f in dataclasses.fields(RelayConfig)]
    assert [o.field for o in OPTIONS] == fields
    for option in OPTIONS:
        assert option.help, option.field
        assert option.env == "CRDTSYNC_" + option.flag[2:].replace("-", "_").upper()


def sample_values(tmp_path: Path) -> dict[str, tuple[str, Any]]:
    """A non-default value for every RelayConfig field: (text, expected config value)."""
    key = tmp_path / "relay.key"
    if not key.exists():
        key.write_bytes(b"k" * 40 + b"\n")
    cert, pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    pem.write_text("key")
    return {
        "host": ("0.0.0.0", "0.0.0.0"),
        "port": ("9_001", 9001),
        "data": (str(tmp_path / "x.db"), str(tmp_path / "x.db")),
        "secret": (str(key), b"k" * 40),
        "tls_cert": (str(cert), str(cert)),
        "tls_key": (str(pem), str(pem)),
        "max_frame": ("64k", 65536),
        "max_update": ("2M", 2 << 20),
        "max_docs_per_conn": ("7", 7),
        "max_msgs_per_sec": ("12.5", 12.5),
        "max_msgs_burst": ("1_000_000", 1_000_000),
        "max_bytes_per_sec": ("4M", 4 << 20),
        "max_unauth_bytes": ("1G", 1 << 30),
        "max_send_queue": ("12345", 12345),
        "max_connections": ("3", 3),
        "max_unauth_connections": ("9", 9),
        "max_unauth_per_address": ("2", 2),
        "max_new_conns_per_sec": ("2.5", 2.5),
        "handshake_timeout": ("0.25", 0.25),
        "idle_unload": ("0", 0.0),
        "compact_every": ("5", 5),
        "max_room_bytes": ("1M", 1 << 20),
        "max_loaded_bytes": ("512M", 512 << 20),
        "max_answer_bytes_per_sec": ("8M", 8 << 20),
        "max_rooms": ("10_000", 10_000),
        "max_new_rooms_per_min": ("5", 5),
        "max_refused_updates": ("4", 4),
        "log_level": ("DEBUG", "debug"),
        "store": ("postgresql://db/app", "postgresql://db/app"),
        "node_url": ("ws://10.0.0.5:8765", "ws://10.0.0.5:8765"),
        "lease_ttl": ("2.5", 2.5),
        "demo": ("yes", True),
    }


def test_every_field_set_by_flag_and_by_env(tmp_path: Path) -> None:
    samples = sample_values(tmp_path)
    # A new RelayConfig field fails here until it has a sample (and so a tested option).
    assert set(samples) == {f.name for f in dataclasses.fields(RelayConfig)}
    default = RelayConfig()
    argv: list[str] = []
    env: dict[str, str] = {}
    for option in OPTIONS:
        text, expected = samples[option.field]
        assert getattr(default, option.field) != expected, option.field
        argv += [option.flag, text]
        env[option.env] = text
    by_flag = build_config(argv, {})
    by_env = build_config([], env)
    for option in OPTIONS:
        expected = samples[option.field][1]
        assert getattr(by_flag, option.field) == expected, option.field
        assert getattr(by_env, option.field) == expected, option.field


def test_command_line_wins_over_env(tmp_path: Path) -> None:
    env = {
        "CRDTSYNC_PORT": "1111",
        "CRDTSYNC_MAX_FRAME": "1k",
        "CRDTSYNC_LOG_LEVEL": "error",
        "CRDTSYNC_DATA": str(tmp_path / "env.db"),
    }
    config = build_config(["--port", "2222", "--data", str(tmp_path / "flag.db")], env)
    assert config.port == 2222
    assert config.data == str(tmp_path / "flag.db")
    assert config.max_frame == 1024  # from env: no flag given
    assert config.log_level == "error"
    assert config.host == RelayConfig().host  # neither: default


def test_memory_store_by_flag_or_env(tmp_path: Path) -> None:
    assert build_config(["--memory"], {}).data is None
    assert build_config([], {"CRDTSYNC_MEMORY": "1"}).data is None
    assert build_config([], {"CRDTSYNC_MEMORY": "no"}).data == RelayConfig().data
    # The command line beats both variables, either way round.
    db = str(tmp_path / "r.db")
    assert build_config(["--data", db], {"CRDTSYNC_MEMORY": "true"}).data == db
    assert build_config(["--memory"], {"CRDTSYNC_DATA": db}).data is None


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "70000"], {}, "--port"),
        (["--port", "-1"], {}, "--port"),
        (["--port", "http"], {}, "not a whole number"),
        (["--max-frame", "0"], {}, "at least 1"),
        (["--max-frame", "12q"], {}, "byte size"),
        (["--max-frame", "1.5k"], {}, "--max-frame"),
        (["--max-docs-per-conn", "4k"], {}, "not a whole number"),
        (["--max-msgs-per-sec", "nan"], {}, "finite"),
        (["--max-msgs-per-sec", "0"], {}, "greater than 0"),
        (["--handshake-timeout", "-1"], {}, "--handshake-timeout"),
        (["--idle-unload", "inf"], {}, "finite"),
        (["--log-level", "loud"], {}, "debug, info, warning, error"),
        (["--host", ""], {}, "empty"),
        (["--tls-cert", "{cert}"], {}, "--tls-key"),
        (["--tls-key", "{cert}", "--tls-cert", "{missing}"], {}, "is not a file"),
        (["--secret-file", "{missing}"], {}, "is not a file"),
        (["--secret-file", "{short}"], {}, "fewer than 16 bytes"),
        (["--memory", "--data", "x.db"], {}, "not allowed with"),
        (["--no-such-option"], {}, "unrecognized"),
        ([], {"CRDTSYNC_PORT": "abc"}, "CRDTSYNC_PORT"),
        ([], {"CRDTSYNC_MAX_UPDATE": "-5"}, "CRDTSYNC_MAX_UPDATE"),
        ([], {"CRDTSYNC_MEMORY": "maybe"}, "CRDTSYNC_MEMORY"),
        ([], {"CRDTSYNC_MEMORY": "1", "CRDTSYNC_DATA": "x.db"}, "choose one"),
        ([], {"CRDTSYNC_SECRET_FILE": "{short}"}, "fewer than 16 bytes"),
    ],
)
def test_bad_values_exit_2(
    argv: list[str],
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"0123456789\n")
    cert = tmp_path / "cert.pem"
    cert.write_text("cert")
    paths = {"short": short, "cert": cert, "missing": tmp_path / "missing"}
    argv = [a.format(**paths) for a in argv]
    env = {k: v.format(**paths) for k, v in env.items()}
    with pytest.raises(SystemExit) as info:
        build_config(argv, env)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_bad_value_exits_2_from_the_real_command() -> None:
    proc = run_cli("relay", "--port", "99999")
    assert proc.returncode == 2
    assert "--port" in proc.stderr
    assert proc.stdout == ""


# -- crdtsync relay: running (with a stand-in server) -------------------------------------


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace crdtsync.relay.server with a module whose serve() records or raises."""
    state: dict[str, Any] = {"configs": [], "raise": None}

    async def serve(config: RelayConfig) -> None:
        state["configs"].append(config)
        if state["raise"] is not None:
            raise state["raise"]

    module = types.ModuleType("crdtsync.relay.server")
    module.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "crdtsync.relay.server", module)
    monkeypatch.setattr(crdtsync.relay, "server", module, raising=False)
    return state


def test_relay_command_passes_the_config_to_serve(
    fake_server: dict[str, Any], secret_file: Path
) -> None:
    env = {"CRDTSYNC_MAX_FRAME": "4k"}
    argv = ["relay", "--port", "0", "--memory", "--secret-file", str(secret_file)]
    assert main(argv, environ=env) == 0
    (config,) = fake_server["configs"]
    assert config == RelayConfig(port=0, data=None, secret=load_secret(secret_file), max_frame=4096)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            OSError(errno.EADDRINUSE, "error while attempting to bind: address already in use"),
            f"crdtsync relay: cannot listen on 127.0.0.1:8765: {os.strerror(errno.EADDRINUSE)}",
        ),
        (ssl.SSLError(9, "[SSL] PEM lib (_ssl.c:3905)"), "crdtsync relay: cannot load --tls-cert"),
        (
            StoreLockedError("relay.db is open in another process"),
            "crdtsync relay: relay.db is open in another process",
        ),
        (OSError(errno.ENOENT, "No such file", "cert.pem"), "crdtsync relay: [Errno 2]"),
    ],
)
def test_relay_start_failures_exit_1_with_one_line(
    error: BaseException,
    message: str,
    fake_server: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_server["raise"] = error
    assert main(["relay", "--memory"], environ={}) == 1
    warning, err = capsys.readouterr().err.split("\n", 1)
    assert "no authentication" in warning  # no --secret-file given
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_a_host_that_does_not_resolve_is_named(
    fake_server: dict[str, Any], secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_server["raise"] = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    argv = [
        "relay",
        "--memory",
        "--host",
        "no-such-host.invalid",
        "--secret-file",
        str(secret_file),
    ]
    assert main(argv, environ={}) == 1
    err = capsys.readouterr().err
    assert err == (
        "crdtsync relay: cannot listen on no-such-host.invalid:8765: the host "
        "'no-such-host.invalid' does not resolve (Name or service not known)\n"
    )


def test_relay_without_a_secret_warns_that_every_room_is_open(
    fake_server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["relay", "--memory"], environ={}) == 0
    err = capsys.readouterr().err
    assert "no authentication" in err
    assert "every room is open to anyone" in err


def test_secret_file_problems_name_the_file_once(
    fake_server: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.key"
    short.write_text("abcd\n")
    short.chmod(0o600)
    with pytest.raises(SystemExit):
        main(["relay", "--memory", "--secret-file", str(short)], environ={})
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.count("short.key") == 1, err
    assert "secret file: secret file" not in err


def test_a_world_readable_secret_file_gets_a_warning(
    fake_server: dict[str, Any], secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_file.chmod(0o644)
    assert main(["relay", "--memory", "--secret-file", str(secret_file)], environ={}) == 0
    err = capsys.readouterr().err
    assert "can be read by other users (mode 0644)" in err
    assert f"chmod 600 {secret_file}" in err
    secret_file.chmod(0o600)
    assert main(["relay", "--memory", "--secret-file", str(secret_file)], environ={}) == 0
    assert capsys.readouterr().err == ""


def test_relay_help_uses_words_not_python_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["relay", "--help"])
    out = capsys.readouterr().out
    for python_name in ("None:", "Relay.port", "tls_key", "max_msgs_burst", "``"):
        assert python_name not in out, python_name
    assert "--tls-key" in out


# -- crdtsync relay: the real server (needs crdtsync.relay.server.serve) ---------------------


def _read_lines(stream: Any, into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _wait_for_event(lines: queue.Queue[str | None], event: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {event!r} log line within {timeout} s; got {seen}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"relay exited before {event!r}; stdout was {seen}")
        seen.append(line)
        record = json.loads(line)  # every stdout line is a JSON log record
        if record.get("event") == event:
            return dict(record)


def test_relay_subprocess_serves_healthz_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDTSYNC_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crdtsync",
            "relay",
            "--port",
            "0",
            "--data",
            str(tmp_path / "r.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        listening = _wait_for_event(lines, "listening", timeout=60)
        url = listening["url"]
        assert listening["auth"] == "none"  # no --secret-file: the listening line says so
        assert url.startswith("ws://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        assert port != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()
    assert (tmp_path / "r.db").exists()


def test_relay_subprocess_port_in_use_exits_1(tmp_path: Path, secret_file: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli(
            "relay", "--port", str(port), "--data", str(tmp_path / "r.db"),
            "--secret-file", str(secret_file),
        )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"crdtsync relay: cannot listen on 127.0.0.1:{port}")
    assert proc.stderr.count("\n") == 1
