"""Inputs after which reading the document hangs in the engine (not fixed yet).

Found by ``scripts/fuzz_updates.py --target doc`` (seed 20261207, 2026-12-07):
after the prior state ``NAME.prior``, the update ``NAME.bin`` (112 bytes) is
accepted by the validator, and then yrs never returns from reading the root
list (``Array.to_py()`` and iteration loop forever; ``len()`` answers). The
validator must refuse such an update: until it does, each case runs in a child
process with a time limit and is a strict expected failure, so the test fails
(and the marker must go) once the fix lands.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "known_hangs"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.bin"))

_CHILD = """
import sys
from pathlib import Path
from crdtsync import Doc
from crdtsync.errors import InvalidUpdateError
base = Path(sys.argv[1])
doc = Doc()
try:
    if base.with_suffix(".prior").exists():
        doc.import_yjs_update(base.with_suffix(".prior").read_bytes())
    doc.import_yjs_update(base.with_suffix(".bin").read_bytes())
except InvalidUpdateError:
    sys.exit(0)  # refused: the outcome the fix should give
doc.to_py()
doc.export_yjs_update()
"""


def test_there_are_fixtures() -> None:
    assert NAMES


@pytest.mark.xfail(strict=True, reason="known bug: an accepted update makes the engine loop")
@pytest.mark.parametrize("name", NAMES)
def test_an_accepted_update_never_makes_reading_hang(name: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(FIXTURES / name)],
            check=False,
            timeout=20,
            capture_output=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: reading the document did not end within 20 s")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
