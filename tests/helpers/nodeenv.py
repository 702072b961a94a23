"""The node packages the interop tests run (tests/interop/package.json), installed on demand."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

INTEROP = Path(__file__).resolve().parents[1] / "interop"
_lock = threading.Lock()


def ensure_node_modules() -> Path:
    """Run ``npm ci`` in tests/interop unless every dependency is installed; return the folder.

    CI starts from a clean checkout, so the first test that needs node installs the
    pinned packages from the lock file (npm registry only).
    """
    node = shutil.which("node")
    npm = shutil.which("npm")
    assert node, "node is required (CI installs it)"
    assert npm, "npm is required (CI installs it)"
    deps = json.loads((INTEROP / "package.json").read_text())["dependencies"]
    with _lock:
        if not all((INTEROP / "node_modules" / name / "package.json").is_file() for name in deps):
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=INTEROP, check=True, timeout=600
            )
    return INTEROP
