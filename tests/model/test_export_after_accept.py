"""An update the validator accepts must leave a document whose export it accepts too.

``scripts/fuzz_updates.py --target doc`` (seed 20261207, 2026-12-07) found
updates that a ``crdtsync.Doc`` declaring no roots accepted, after which the
document's own export was refused ("Any content in the sequence of a
Map/XmlHook", "a Map/XmlHook has no sequence to hold it"): a root of unknown
type took map entries and sequence items in separate updates, and the model
then read it (and declared it) as the kind its first item showed.  Rule S11
refuses them (tests/fixtures/crashers/``*-unknown-root-*``).  Every crasher
fixture runs here through a ``Doc`` with no declared roots, on both paths:
refused, or accepted with an export that a fresh replica reading the roots
with the kinds this one shows, and a newcomer declaring nothing, accept and
read the same.

``corrupt-gc-origin-live-right-origin`` (same run, input 298,360) is refused
by rule S12.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtsync import Doc
from crdtsync.errors import InvalidUpdateError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# hang-* fixtures loop the engine when accepted: test_known_hangs runs them in a child.
CRASHERS = sorted(
    p for p in (FIXTURES / "crashers").glob("*.bin") if not p.name.startswith("hang-")
)

pytestmark = pytest.mark.usefixtures("checker_path")


def _replay(path: Path) -> None:
    doc = Doc()
    prior = path.with_suffix(".prior")
    if prior.exists():
        doc.import_yjs_update(prior.read_bytes())  # a state the document accepts
    try:
        doc.import_yjs_update(path.read_bytes())
    except InvalidUpdateError:
        return  # refused: the outcome these fixtures are kept for
    if doc.pending:
        return  # held until clocks that never come: nothing was applied
    export = doc.export_yjs_update()
    fresh = Doc()
    for root, kind in doc.roots().items():
        fresh.root(root, kind)  # read with the kinds the replica shows
    fresh.import_yjs_update(export)
    assert fresh.to_py() == doc.to_py()
    newcomer = Doc()  # and a replica that tells the roots' kinds from the state
    newcomer.import_yjs_update(export)
    assert newcomer.to_py() == doc.to_py()


def test_there_are_fixtures() -> None:
    assert any("-unknown-root-" in p.name for p in CRASHERS)


@pytest.mark.parametrize("path", CRASHERS, ids=lambda p: p.name)
def test_an_accepted_update_leaves_an_export_the_validator_accepts(path: Path) -> None:
    _replay(path)
