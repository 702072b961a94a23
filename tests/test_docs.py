"""Every Python and shell code block in the README and docs/ runs, as a reader would run it.

Each Markdown file is one scenario: its ``python`` and ``bash`` blocks run in
order, in one scratch directory, in a shell whose PATH has this environment's
``crdtsync`` command. A block must exit 0. An HTML comment right before a
block changes how it runs:

- ``<!-- test: skip (why) -->``: not run (the README's install commands, which
  this test suite is itself run by);
- ``<!-- test: background "REGEX" -->``: a long-running program (a relay) that a
  reader starts in another terminal: it runs in the background until a line of
  its output matches REGEX, and is stopped when the file's blocks are done.

Fixed ports in the text (``8765``) are replaced by free ones, so the scenario
never collides with anything else on the machine.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PORTS = ("8765", "8766", "1234")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_DIRECTIVE = re.compile(r"<!--\s*test:\s*(.*?)\s*-->\s*$", re.S)
_TIMEOUT = 120.0


@dataclass
class Block:
    lang: str
    code: str
    directive: str
    line: int


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    out = []
    for match in _FENCE.finditer(text):
        lang = match.group(1)
        if lang not in ("python", "bash"):
            continue
        before = text[: match.start()].rstrip()
        directive = _DIRECTIVE.search(before[-300:])
        out.append(
            Block(
                lang,
                match.group(2),
                directive.group(1) if directive else "",
                text.count("\n", 0, match.start()) + 1,
            )
        )
    return out


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Background:
    """A program started by a block, running until the scenario ends."""

    def __init__(self, code: str, cwd: Path, pattern: str) -> None:
        self.lines: list[str] = []
        self.seen = threading.Event()
        self.proc = subprocess.Popen(
            ["bash", "-c", f"exec {code.strip()}"],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        regex = re.compile(pattern)

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if regex.search(line):
                    self.seen.set()
            self.seen.set()  # ended: stop waiting either way

        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.pump.join(timeout=15)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _has_blocks(path: Path) -> bool:
    return bool(blocks(path))


@pytest.mark.parametrize("path", [p for p in FILES if _has_blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run(path: Path, tmp_path: Path) -> None:
    ports = {p: _free_port() for p in PORTS}
    background: list[_Background] = []
    try:
        for block in blocks(path):
            where = f"{path.name}:{block.line}"
            if block.directive.startswith("skip"):
                continue
            code = block.code
            for fixed, free in ports.items():
                code = re.sub(rf"(?<=[:\s]){fixed}\b", free, code)
            if block.directive.startswith("background"):
                pattern = re.search(r'"(.*)"', block.directive)
                assert pattern, f"{where}: background needs a pattern"
                bg = _Background(code, tmp_path, pattern.group(1))
                background.append(bg)
                assert bg.seen.wait(_TIMEOUT), f"{where}: no {pattern.group(1)!r} in time"
                assert bg.proc.poll() is None, f"{where}: ended early:\n{''.join(bg.lines)}"
                continue
            assert not block.directive, f"{where}: unknown directive {block.directive!r}"
            cmd = [sys.executable, "-c", code] if block.lang == "python" else ["bash", "-ec", code]
            proc = subprocess.run(
                cmd,
                cwd=tmp_path,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
            )
            assert proc.returncode == 0, (
                f"{where} ({block.lang}) failed with {proc.returncode}:\n{code}\n"
                f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
            )
    finally:
        for bg in background:
            bg.stop()


def test_every_runnable_block_is_seen() -> None:
    # The README must keep at least its example, sync and relay programs runnable.
    readme = [b for b in blocks(REPO / "README.md") if not b.directive.startswith("skip")]
    assert sum(b.lang == "python" for b in readme) >= 3


# Paths the docs name: a relative link's target, or a code span that is a repository
# path (``crdtsync/model/undo.py``). Files move; a reader following a stale one is lost.
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
_PATH_SPAN = re.compile(
    r"`((?:crdtsync|transports|apps|tests|examples|scripts|benchmarks|docs|proofs|native|tools)"
    r"/[\w./-]*)`"
)


def named_paths(path: Path) -> list[tuple[int, str]]:
    """Relative link targets and repository-path code spans in ``path``, with line numbers."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for match in _LINK.finditer(line):
            target = match.group(1)
            if "://" in target or target.startswith("mailto:"):
                continue
            out.append((number, str((path.parent / target).resolve().relative_to(REPO))))
        for match in _PATH_SPAN.finditer(line):
            out.append((number, match.group(1).rstrip("/.")))
    return out


@pytest.mark.parametrize(
    "path",
    [
        *FILES,
        REPO / "CHANGELOG.md",
        REPO / "benchmarks" / "README.md",
        REPO / "proofs" / "README.md",
    ],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_named_paths_exist(path: Path) -> None:
    missing = [
        f"line {n}: {p}"
        for n, p in named_paths(path)
        # node_modules is made by the npm install the text describes.
        if not (REPO / p).exists() and "node_modules" not in p
    ]
    assert not missing, f"{path.relative_to(REPO)} names paths that do not exist: {missing}"
