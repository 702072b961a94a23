"""Inputs after which reading the document hung in the engine are refused.

Found by ``scripts/fuzz_updates.py --target doc`` (seed 20261207, 2026-12-07;
tests/fixtures/crashers/``hang-unknown-root-*``): after the prior state
``NAME.prior``, the update ``NAME.bin`` was accepted by a ``crdtsync.Doc``
declaring no roots, and yrs never returned from reading a root (``len()``
answers, ``to_py()`` and iteration loop forever): the root held a multi-byte
String, and the model read it as a list because its first item was an
Array/Map/Text type (or the other way round).  Rule S11 refuses them.  Each
``hang-*`` crasher fixture runs in a child process with a time limit, on both
paths: refused, or read back in time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "crashers"
HANGS = sorted(FIXTURES.glob("hang-*.bin"))

# The child inherits CRDTSYNC_PURE_PYTHON from checker_path and says which path it ran.
pytestmark = pytest.mark.usefixtures("checker_path")

_CHILD = """
import sys
from pathlib import Path
from crdtsync import Doc
from crdtsync.errors import InvalidUpdateError
from crdtsync.format import accel
print(accel.PATH, flush=True)
base = Path(sys.argv[1])
doc = Doc()
try:
    if base.with_suffix(".prior").exists():
        doc.import_yjs_update(base.with_suffix(".prior").read_bytes())
    doc.import_yjs_update(base.with_suffix(".bin").read_bytes())
except InvalidUpdateError:
    sys.exit(0)  # refused
doc.to_py()
doc.export_yjs_update()
"""


def test_there_are_fixtures() -> None:
    assert any("-unknown-root-" in p.name for p in HANGS)


@pytest.mark.parametrize("path", HANGS, ids=lambda p: p.name)
def test_an_accepted_update_never_makes_reading_hang(path: Path, checker_path: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)],
            check=False,
            timeout=20,
            capture_output=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path.name}: reading the document did not end within 20 s")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    ran = done.stdout.decode().splitlines()[0]
    assert ran.startswith("native" if checker_path == "native" else "pure Python"), ran
