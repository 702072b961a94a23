"""An update the validator accepts must leave a document whose export it accepts too.

Found by ``scripts/fuzz_updates.py --target doc`` (seed 20261207, 2026-12-07):
updates accepted after a prior state (``NAME.prior`` then ``NAME.bin`` in
tests/fixtures/export_refused/) leave a document whose own export the
validator refuses ("Any content in the sequence of a Map/XmlHook"), on both
the Rust and the Python path, and on main before that day too. A replica that
accepted such an update could no longer sync its state to a newcomer. Not
fixed yet: the test is a strict expected failure, so it fails once the fix
lands and the marker must go.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtsync import Doc
from crdtsync.errors import InvalidUpdateError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "export_refused"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.bin"))


def test_there_are_fixtures() -> None:
    assert NAMES


@pytest.mark.xfail(strict=True, reason="known bug: accepted update, refused export (to fix)")
@pytest.mark.parametrize("name", NAMES)
def test_an_accepted_update_leaves_an_export_the_validator_accepts(name: str) -> None:
    doc = Doc()
    prior = FIXTURES / f"{name}.prior"
    if prior.exists():
        doc.import_yjs_update(prior.read_bytes())
    try:
        doc.import_yjs_update((FIXTURES / f"{name}.bin").read_bytes())
    except InvalidUpdateError:
        return  # refused: also a correct outcome
    fresh = Doc()
    for root, kind in doc.roots().items():
        fresh.root(root, kind)  # read with the kinds the replica shows
    fresh.import_yjs_update(doc.export_yjs_update())
    assert fresh.to_py() == doc.to_py()
