"""Golden vectors: bytes written by format versions 1 and 2 must load, forever.

Every test here runs on the Rust core and on the pure-Python reference
(``checker_path``): both must read the same bytes to the same document.
"""

from __future__ import annotations

import math
from pathlib import Path

import cbor2
import pytest

from crdtsync import Doc
from crdtsync.format.envelope import FLAG_COMPACT, FLAG_SNAPSHOT, FORMAT_VERSION, unpack
from crdtsync.model.doc import DEFAULT_LIMITS

pytestmark = pytest.mark.usefixtures("checker_path")

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
NAMES = sorted({p.name.split(".")[0] for p in GOLDEN.glob("*.expected.cbor")})


def test_vectors_exist() -> None:
    assert NAMES == ["v1-all-types", "v1-concurrent", "v1-value-tags", "v2-per-column"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", ["save", "update", "yjs"])
def test_golden_vector_loads(name: str, form: str) -> None:
    expected = cbor2.loads((GOLDEN / f"{name}.expected.cbor").read_bytes())
    data = (GOLDEN / f"{name}.{form}.bin").read_bytes()
    if form == "yjs":
        doc = Doc()
        doc.import_yjs_update(data)
    else:
        doc = Doc.load(data)
    got = doc.to_py()
    assert got == expected["to_py"]
    assert _same_types(got, expected["to_py"])
    assert doc.register("status").conflicts == expected["conflicts"]


def _same_types(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        assert isinstance(b, float)
        return math.copysign(1, a) == math.copysign(1, b)
    return True


@pytest.mark.parametrize("name", NAMES)
def test_golden_envelope_header(name: str) -> None:
    raw = cbor2.loads((GOLDEN / f"{name}.save.bin").read_bytes())
    assert raw[0] == "crdtsync"
    # "v1-*" saves were written before compact layout 2 (and a small document's
    # save is still version 1); "v2-*" holds a layout 2 payload.
    version = int(name[1])
    assert raw[1] == version <= FORMAT_VERSION == 2
    assert raw[3][0] == version  # the compact payload's own layout byte
    assert raw[2] == FLAG_COMPACT | FLAG_SNAPSHOT
    env = unpack((GOLDEN / f"{name}.save.bin").read_bytes(), DEFAULT_LIMITS)
    assert env.snapshot


def test_loaded_golden_doc_keeps_working() -> None:
    doc = Doc.load((GOLDEN / "v1-all-types.save.bin").read_bytes())
    doc.counter("likes").increment()
    doc.text("body").insert(0, "¡")
    other = Doc.load(doc.save())
    assert other.to_py() == doc.to_py()
    assert other.counter("likes").value == 4
