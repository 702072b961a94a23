"""Relay benchmark: our relay against @y/websocket-server and pycrdt-websocket (issue 5).

Usage::

    python benchmarks/relay/bench_relay.py [--quick] [--servers crdtsync,node,pycrdt-websocket]
        [--clients 200] [--edits 1000] [--rate 50] [--burst 1000] [--phases abcde]
        [--no-pin] [--json PATH]

Each server runs as a subprocess on 127.0.0.1 (a free port), and ``load.mjs``
(one node process holding every client, see its header) runs against it:

a. ``--clients`` y-protocols clients in one room; one writer makes ``--edits``
   small edits at ``--rate`` per second: end-to-end latency p50/p99 over every
   (client, edit) pair, from the writer's edit to that client having it;
b. then a burst of ``--burst`` edits as fast as the writer sends them: messages
   delivered per second = clients x edits / (first burst send to last delivery);
c. ``--join-clients`` clients opening at the same moment, first into a room
   nobody has opened yet, then into an open room with content: how many
   receive sync step 2 (with the content) within ``--join-deadline``;
e. on a fresh server: one client, and a burst of ``--ingest`` edits: updates
   per second and server CPU per update, the cost that fan-out hides in b;
d. on a fresh server: ``--idle-conns`` idle connections across ``--idle-rooms``
   rooms: the server's RSS.

Between phases ``load.mjs`` waits while this runner samples the server's
``/proc/<pid>``: CPU time (user + system) per phase, RSS after it, and peak RSS
(``VmHWM``). It prints a markdown table with ratios (ours / node, ours /
pycrdt-websocket: above 1 means ours is higher, which is better only for
messages/s) and writes every number to ``benchmarks/relay/results.json``. The
server runs on one CPU and ``load.mjs`` on another (``taskset``), so that they
do not compete for a core, unless ``--no-pin``.

Servers (``--servers``, comma-separated):

* ``crdtsync``: ``crdtsync relay --data <tmp>/bench.db`` (SQLite, the default);
  ``crdtsync-memory``: the same with ``--memory``;
* ``node``: ``node_server.mjs``, @y/websocket-server's ``setupWSConnection``;
* ``pycrdt-websocket``: ``pycrdt_ws_server.py`` with the ``websockets`` library;
  ``pycrdt-websocket-hypercorn``: the same under Hypercorn (its documented setup).
  Both run in ``benchmarks/relay/.venv-pycrdt-websocket``, made on first use
  (pycrdt-websocket pins pycrdt < 0.15 and must not touch crdtsync's venv).

Node packages come from ``benchmarks/node`` (``npm ci`` there on first use).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE_DIR = ROOT / "benchmarks" / "node"
LOAD = HERE / "load.mjs"
PYCRDT_VENV = HERE / ".venv-pycrdt-websocket"
PYCRDT_PINS = ["pycrdt-websocket==0.16.5", "pycrdt==0.14.13", "hypercorn==0.18.0"]
NODE_PACKAGES = ["yjs", "ws", "@y/websocket-server", "y-websocket"]

ALL_SERVERS = [
    "crdtsync",
    "crdtsync-memory",
    "node",
    "pycrdt-websocket",
    "pycrdt-websocket-hypercorn",
]
DEFAULT_SERVERS = "crdtsync,node,pycrdt-websocket"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- setup -------------------------------------------------------------------------------


def ensure_node() -> str:
    """The node binary, after ``npm ci`` in benchmarks/node if its packages are missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SystemExit("node and npm are needed on PATH (the load generator runs in node)")
    modules = NODE_DIR / "node_modules"
    if not all((modules / name / "package.json").exists() for name in NODE_PACKAGES):
        log(f"npm ci in {NODE_DIR} ...")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600
        )
    return node


def ensure_pycrdt_venv() -> Path:
    """The Python of the pycrdt-websocket venv, created and filled on first use."""
    python = PYCRDT_VENV / "bin" / "python"
    pins = list(PYCRDT_PINS)
    # The same websockets as crdtsync's relay, so that only the room logic differs.
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        pins.append(f"websockets=={importlib.metadata.version('websockets')}")
    stamp = PYCRDT_VENV / "installed.txt"
    if python.exists() and stamp.exists() and stamp.read_text().split() == pins:
        return python
    log(f"creating {PYCRDT_VENV.relative_to(ROOT)} ({' '.join(pins)}) ...")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(PYCRDT_VENV)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
        check=True,
        timeout=900,
    )
    stamp.write_text("\n".join(pins) + "\n")
    return python


def crdtsync_command() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "crdtsync"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("crdtsync")
    return [found] if found else [sys.executable, "-m", "crdtsync"]


# -- /proc sampling ------------------------------------------------------------------------


def sample(pid: int) -> dict[str, float]:
    """CPU seconds (user + system), RSS and peak RSS (MB) of a process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = stat[stat.rindex(")") + 2 :].split()  # fields 3.. (the name may hold spaces)
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14, 15
    mem = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0]) / 1024  # kB -> MB
    return {
        "t": time.monotonic(),
        "cpu_s": user + system,
        "user_s": user,
        "sys_s": system,
        "rss_mb": mem.get("VmRSS", 0.0),
        "hwm_mb": mem.get("VmHWM", 0.0),
    }


def pinned(cpus: set[int] | None, cmd: list[str]) -> list[str]:
    """``cmd`` run by ``taskset`` on ``cpus`` (unchanged if None)."""
    if cpus is None:
        return cmd
    return ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]


# -- servers -------------------------------------------------------------------------------


class Server:
    """One server process, its log file, and its URL once it listens."""

    def __init__(self, name: str, args: argparse.Namespace, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.command = self._command(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.cpus: set[int] | None = args.server_cpus

    def _command(self, args: argparse.Namespace) -> list[str]:
        host = ["--host", "127.0.0.1", "--port", "0"]
        if self.name.startswith("crdtsync"):
            store = ["--memory"] if self.name == "crdtsync-memory" else []
            if not store:
                store = ["--data", str(self.workdir / "bench.db")]
            limits = []
            # The relay's per-connection rate limit (200/s, bursts of 2,000 by
            # default) must not cut the benchmark's writer: lift it only if needed.
            if max(args.burst, args.ingest) > 1500:
                limits += ["--max-msgs-burst", str(max(args.burst, args.ingest) * 2)]
            if args.rate > 150:
                limits += ["--max-msgs-per-sec", str(args.rate * 2)]
            # Every client of this benchmark comes from 127.0.0.1: the per-address
            # budgets (meant for one client machine) would refuse phases c and d
            # (200 joiners at once, 2,000 idle connections) from one address.
            # Lift them, as a relay behind a proxy that limits per client would;
            # `--relay-arg` can set them back to measure the defaults.
            limits += [
                "--max-new-conns-per-sec=1000",
                f"--max-unauth-per-address={max(4096, args.idle_conns * 2)}",
                "--max-new-rooms-per-min=100000",
            ]
            return [*crdtsync_command(), "relay", *host, *store, *limits, *args.relay_arg]
        if self.name == "node":
            return [args.node, str(HERE / "node_server.mjs"), *host]
        transport = "hypercorn" if self.name.endswith("hypercorn") else "websockets"
        return [
            str(args.pycrdt_python),
            str(HERE / "pycrdt_ws_server.py"),
            *host,
            "--transport",
            transport,
        ]

    def start(self, deadline_s: float = 60.0) -> None:
        # One log per server process (phase d runs on a fresh one).
        self.log_path = self.workdir / f"{self.name}-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                pinned(self.cpus, self.command),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("event") == "listening":
                        self.url = str(event["url"])
                        return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen within {deadline_s} s: {self.tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


@contextlib.contextmanager
def running(name: str, args: argparse.Namespace, workdir: Path) -> Iterator[Server]:
    server = Server(name, args, workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- one load run -------------------------------------------------------------------------


def load_options(
    args: argparse.Namespace, phases: str, prefix: str, **override: float
) -> list[str]:
    values: dict[str, Any] = {
        "phases": phases,
        "clients": args.clients,
        "edits": args.edits,
        "rate": args.rate,
        "burst": args.burst,
        "join-clients": args.join_clients,
        "join-deadline": args.join_deadline,
        "seed": args.seed,
        "idle-conns": args.idle_conns,
        "idle-rooms": args.idle_rooms,
        "idle-settle": args.idle_settle,
        "drain": args.drain,
        "prefix": prefix,
    }
    values.update({k.replace("_", "-"): v for k, v in override.items()})
    out: list[str] = []
    for key, value in values.items():
        out += [f"--{key}", str(value)]
    return out


def _reader(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_load(
    args: argparse.Namespace, server: Server, phases: str, prefix: str, **override: float
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Run load.mjs against a server; return its result and the /proc samples per mark."""
    budget = (
        2 * 120  # connecting (load.mjs's own deadline per phase)
        + args.edits / args.rate
        + 2 * args.drain
        + args.join_deadline
        + args.idle_settle
        + 180
    )
    options = load_options(args, phases, prefix, **override)
    cmd = [args.node, str(LOAD), "--url", server.url, *options]
    samples: dict[str, dict[str, float]] = {"start": sample(server.pid)}
    result: dict[str, Any] | None = None
    proc = subprocess.Popen(
        pinned(args.load_cpus, cmd),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=sys.stderr.buffer,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    lines: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    end = time.monotonic() + budget
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"load.mjs ran over its {budget:.0f} s budget")
            try:
                raw = lines.get(timeout=left)
            except queue.Empty:
                continue
            if raw is None:
                break
            try:
                event = json.loads(raw)
            except ValueError:
                log(f"load.mjs: {raw.decode(errors='replace').rstrip()}")
                continue
            if event.get("event") == "mark":
                samples[event["name"]] = sample(server.pid)
                proc.stdin.write(b"ok\n")
                proc.stdin.flush()
            elif event.get("event") == "result":
                result = event
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    if result is None:
        raise RuntimeError(f"load.mjs gave no result (exit {proc.returncode})")
    return result, samples


def ingest_options(args: argparse.Namespace) -> dict[str, float]:
    """Phase e: one receiver, a few paced edits, then ``--ingest`` edits at once."""
    return {"clients": 1, "edits": 10, "rate": 100, "burst": args.ingest}


def _delta(samples: dict[str, dict[str, float]], a: str, b: str, key: str) -> float | None:
    if a in samples and b in samples and key in samples[a] and key in samples[b]:
        return round(samples[b][key] - samples[a][key], 3)
    return None


def _at(samples: dict[str, dict[str, float]], mark: str, key: str) -> float | None:
    value = samples.get(mark, {}).get(key)
    return round(value, 1) if value is not None else None


def bench_server(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Phases a, b, c on one server process; e and d each on a fresh one."""
    out: dict[str, Any] = {"server": name}
    with tempfile.TemporaryDirectory(prefix=f"bench-relay-{name}-") as tmp:
        workdir = Path(tmp)
        try:
            if args.phases_abc:
                with running(name, args, workdir) as server:
                    out["command"] = server.command
                    result, s = run_load(args, server, "abc", f"r{os.getpid()}")
                    out["load"] = result
                    out["server_abc"] = {
                        "startup_rss_mb": _at(s, "start", "rss_mb"),
                        "a_cpu_s": _delta(s, "a_start", "a_end", "cpu_s"),
                        "b_cpu_s": _delta(s, "b_start", "b_end", "cpu_s"),
                        "c_cold_cpu_s": _delta(s, "c1_start", "c1_end", "cpu_s"),
                        "c_warm_cpu_s": _delta(s, "c2_start", "c2_end", "cpu_s"),
                        "peak_rss_after_b_mb": _at(s, "b_end", "hwm_mb"),
                        "rss_after_b_mb": _at(s, "b_end", "rss_mb"),
                        "peak_rss_after_c_mb": _at(s, "c2_end", "hwm_mb"),
                        "samples": s,
                    }
                    out["log_tail_abc"] = server.tail(5)
            if args.ingest:
                # e: the cost of one update where fan-out to many clients does not hide it.
                with running(name, args, workdir) as server:
                    result, s = run_load(
                        args, server, "ab", f"e{os.getpid()}", **ingest_options(args)
                    )
                    cpu = _delta(s, "b_start", "b_end", "cpu_s")
                    delivered = (result.get("b") or {}).get("delivered") or 0
                    out["load_e"] = result
                    out["server_e"] = {
                        "cpu_s": cpu,
                        "sys_s": _delta(s, "b_start", "b_end", "sys_s"),
                        "cpu_us_per_update": (
                            round(cpu * 1e6 / delivered) if cpu and delivered else None
                        ),
                        "samples": s,
                    }
            if args.phases_d:
                with running(name, args, workdir) as server:
                    result, s = run_load(args, server, "d", f"i{os.getpid()}")
                    out["load_d"] = result
                    base, idle = _at(s, "d_start", "rss_mb"), _at(s, "d_ready", "rss_mb")
                    conns = (result.get("d") or {}).get("synced") or 0
                    out["server_d"] = {
                        "rss_before_mb": base,
                        "rss_idle_mb": idle,
                        "kb_per_conn": (
                            round((idle - base) * 1024 / conns, 1)
                            if idle is not None and base is not None and conns
                            else None
                        ),
                        "d_connect_cpu_s": _delta(s, "d_start", "d_ready", "cpu_s"),
                        "peak_rss_mb": _at(s, "d_ready", "hwm_mb"),
                        "samples": s,
                    }
        except Exception as exc:  # one failing server does not stop the others
            out["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{name}: {out['error']}")
    return out


# -- the table ------------------------------------------------------------------------------


def _get(r: dict[str, Any], *path: str) -> Any:
    node: Any = r
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def rows(results: list[dict[str, Any]]) -> list[tuple[str, list[Any], bool]]:
    """(label, value per server, ratio makes sense) for every line of the table."""

    def each(*path: str) -> list[Any]:
        return [_get(r, *path) for r in results]

    def frac(done_path: tuple[str, ...], all_path: tuple[str, ...]) -> list[Any]:
        return [
            f"{_fmt(_get(r, *done_path))} / {_fmt(_get(r, *all_path))}"
            if _get(r, *all_path) is not None
            else None
            for r in results
        ]

    ld = ("load",)
    cold, warm, idle = ("load", "c_cold"), ("load", "c"), ("load_d", "d")
    return [
        ("a. steady: latency p50 (ms)", each(*ld, "a", "latency", "p50_ms"), True),
        ("a. steady: latency p99 (ms)", each(*ld, "a", "latency", "p99_ms"), True),
        ("a. steady: delivered", frac((*ld, "a", "delivered"), (*ld, "a", "expected")), False),
        ("a. server CPU (s)", each("server_abc", "a_cpu_s"), True),
        ("b. burst: messages/s delivered", each(*ld, "b", "msgs_per_s"), True),
        ("b. burst: first send to last delivery (s)", each(*ld, "b", "span_s"), True),
        ("b. burst: latency p50 (ms)", each(*ld, "b", "latency", "p50_ms"), True),
        ("b. burst: latency p99 (ms)", each(*ld, "b", "latency", "p99_ms"), True),
        ("b. burst: delivered", frac((*ld, "b", "delivered"), (*ld, "b", "expected")), False),
        ("b. server CPU (s)", each("server_abc", "b_cpu_s"), True),
        ("a+b. server peak RSS (MB)", each("server_abc", "peak_rss_after_b_mb"), True),
        ("a+b. server RSS after the burst (MB)", each("server_abc", "rss_after_b_mb"), True),
        ("c. join, new room: synced in time", frac((*cold, "synced"), (*cold, "clients")), False),
        ("c. join, new room: time for all (s)", each(*ld, "c_cold", "time_all_s"), True),
        ("c. join, new room: server CPU (s)", each("server_abc", "c_cold_cpu_s"), True),
        ("c. join, open room: synced in time", frac((*warm, "synced"), (*warm, "clients")), False),
        ("c. join, open room: synced with content", each(*ld, "c", "with_content"), False),
        ("c. join, open room: time for all (s)", each(*ld, "c", "time_all_s"), True),
        ("c. join, open room: sync time p50 (ms)", each(*ld, "c", "sync_time", "p50_ms"), True),
        ("c. join, open room: server CPU (s)", each("server_abc", "c_warm_cpu_s"), True),
        ("d. idle: connections open", frac((*idle, "still_open"), (*idle, "connections")), False),
        ("d. idle: server RSS, fresh (MB)", each("server_d", "rss_before_mb"), True),
        ("d. idle: server RSS with them (MB)", each("server_d", "rss_idle_mb"), True),
        ("d. idle: KB per connection", each("server_d", "kb_per_conn"), True),
        ("e. ingest, 1 client: updates/s", each("load_e", "b", "msgs_per_s"), True),
        ("e. ingest: server CPU per update (µs)", each("server_e", "cpu_us_per_update"), True),
        ("load generator CPU in b (s)", each(*ld, "loadgen_cpu_s", "b_end"), False),
    ]


def table(results: list[dict[str, Any]], ours: str | None) -> str:
    names = [r["server"] for r in results]
    mine = next((r for r in results if r["server"] == ours), None)
    others = [n for n in ("node", "pycrdt-websocket") if n in names and mine is not None]
    head = ["metric", *names, *(f"{ours} / {o}" for o in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    index = {n: i for i, n in enumerate(names)}
    for label, values, ratio in rows(results):
        cells = [label, *(_fmt(v, 3 if "(s)" in label else 1) for v in values)]
        for other in others:
            a, b = values[index[str(ours)]], values[index[other]]
            ok = ratio and isinstance(a, int | float) and isinstance(b, int | float) and b
            cells.append(f"{a / b:.2f}x" if ok else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    def package(name: str) -> str | None:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((NODE_DIR / "node_modules" / name / "package.json").read_text())
            return str(data["version"])
        return None

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "node": subprocess.run(
            [args.node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "node_packages": {n: package(n) for n in NODE_PACKAGES},
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "server_cpus": sorted(args.server_cpus) if args.server_cpus else None,
        "load_cpus": sorted(args.load_cpus) if args.load_cpus else None,
        "platform": platform.platform(),
    }
    if args.pycrdt_python is not None:
        stamp = PYCRDT_VENV / "installed.txt"
        env["pycrdt_websocket_venv"] = stamp.read_text().split() if stamp.exists() else None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        env["git"] = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
    return env


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default=DEFAULT_SERVERS, help=f"of {','.join(ALL_SERVERS)}")
    parser.add_argument("--clients", type=int, default=None, help="receivers in a and b (200)")
    parser.add_argument("--edits", type=int, default=None, help="steady edits (1000)")
    parser.add_argument("--rate", type=float, default=None, help="steady edits per second (50)")
    parser.add_argument("--burst", type=int, default=None, help="burst edits (1000)")
    parser.add_argument("--join-clients", type=int, default=None, help="join storm size (200)")
    parser.add_argument("--join-deadline", type=float, default=None, help="seconds (30)")
    parser.add_argument("--idle-conns", type=int, default=None, help="idle connections (2000)")
    parser.add_argument("--idle-rooms", type=int, default=None, help="rooms they use (200)")
    parser.add_argument("--ingest", type=int, default=None, help="e: burst to 1 client (1000)")
    parser.add_argument("--phases", default="abcde", help="abc, d, e (default: abcde)")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    parser.add_argument("--ours", default=None, help="the server the ratios are for")
    parser.add_argument(
        "--relay-arg", action="append", default=[], help="extra argument for crdtsync relay"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server and the load generator to one CPU each",
    )
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="output file")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "clients": 20 if quick else 200,
        "edits": 100 if quick else 1000,
        "rate": 100.0 if quick else 50.0,
        "burst": 200 if quick else 1000,
        "join_clients": 50 if quick else 200,
        "join_deadline": 15.0 if quick else 30.0,
        "idle_conns": 200 if quick else 2000,
        "idle_rooms": 20 if quick else 200,
        "ingest": 200 if quick else 1000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seed = 20 if quick else 100
    args.idle_settle = 1.0 if quick else 3.0
    args.drain = 10.0 if quick else 20.0
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in ALL_SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; known: {ALL_SERVERS}")
    if "e" not in args.phases:
        args.ingest = 0
    args.phases_abc = any(p in args.phases for p in "abc")
    args.phases_d = "d" in args.phases
    # Server on one CPU, load generator on another: they do not compete with each
    # other for a core (other work on the machine still can).
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2 and shutil.which("taskset") is not None
    args.server_cpus = {cpus[0]} if pin else None
    args.load_cpus = {cpus[1]} if pin else None
    if args.ours is None:
        args.ours = next((s for s in args.servers if s.startswith("crdtsync")), None)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.node = ensure_node()
    pycrdt = any(s.startswith("pycrdt") for s in args.servers)
    args.pycrdt_python = ensure_pycrdt_venv() if pycrdt else None
    env = environment(args)
    results = []
    for name in args.servers:
        log(f"== {name}")
        results.append(bench_server(name, args))
    options = {
        k: getattr(args, k)
        for k in [
            *("clients", "edits", "rate", "burst", "join_clients", "join_deadline"),
            *("idle_conns", "idle_rooms", "ingest", "seed", "phases", "quick", "relay_arg"),
        ]
    }
    report = {"options": options, "environment": env, "results": results}
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(
        f"\nRelay benchmark: {args.clients} clients, {args.edits} edits at {args.rate:g}/s, "
        f"burst of {args.burst}; join storm of {args.join_clients}; "
        f"{args.idle_conns} idle connections in {args.idle_rooms} rooms.\n"
    )
    print(table(results, args.ours))
    for r in results:
        if "error" in r:
            print(f"\n{r['server']}: {r['error']}")
        for key in ("load", "load_e", "load_d"):
            if _get(r, key, "error"):
                print(f"\n{r['server']} ({key}): {str(r[key]['error']).splitlines()[0]}")
            codes = _get(r, key, "close_codes")
            if codes:
                print(f"\n{r['server']} ({key}): connections closed by the server: {codes}")
    print(f"\n(JSON: {args.json})")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
