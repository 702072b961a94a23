"""The tagged-value encoding is unambiguous, and 0.1's "$" tags still read (golden files)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cbor2
import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync import Doc
from crdtsync.model import values

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _raw(name: str) -> dict[str, Any]:
    """What a plain Yjs reader sees in a golden vector's Yjs update."""
    y = pycrdt.Doc()
    y.apply_update((GOLDEN / f"{name}.yjs.bin").read_bytes())
    return {
        "status": dict(y.get("status", type=pycrdt.Map)),
        "m": dict(y.get("m", type=pycrdt.Map)),
    }


def test_golden_value_tags_use_reserved_keys_and_read_back_exactly() -> None:
    raw = _raw("v1-value-tags")
    (entry,) = raw["status"].values()
    stored = entry["v"]
    assert stored["big"] == {"\x00i": str(2**70)}
    assert stored["one"] == {"\x00f": "1.0"}
    assert stored["looks_tagged"] == {"$": "i", "v": "5"}  # user data, stored bare
    assert stored["legacy_shape"] == {"\x00d": {"$": "i", "v": str(2**70)}}
    assert stored["nul_key"] == {"\x00d": {"\x00i": "x"}}
    assert raw["m"]["big"] == {"\x00i": str(2**70)}

    expected = cbor2.loads((GOLDEN / "v1-value-tags.expected.cbor").read_bytes())
    for form in ("save", "update"):
        doc = Doc.load((GOLDEN / f"v1-value-tags.{form}.bin").read_bytes())
        value = doc.register("status").value
        assert value == expected["conflicts"][0]
        assert value["looks_tagged"] == {"$": "i", "v": "5"}
        assert value["legacy_shape"] == {"$": "i", "v": str(2**70)}
        assert value["nul_key"] == {"\x00i": "x"}
        assert type(value["one"]) is float
        assert math.copysign(1.0, value["negzero"]) == -1.0
        assert doc.counter("likes").value == 2**60
        assert doc.map("m").to_py() == {"big": 2**70, "one": 1.0, "list": [2**64, -0.0]}


def test_legacy_dollar_tags_of_version_0_1_still_read() -> None:
    # v1-all-types was written by 0.1: its big int and integral floats are "$" tags.
    y = pycrdt.Doc()
    y.apply_update((GOLDEN / "v1-all-types.yjs.bin").read_bytes())
    nested = y.get("nested", type=pycrdt.Map)
    register = nested["all"][2]
    (entry,) = (v for k, v in register.items() if not k.startswith("\x00"))
    assert entry["v"] == [1.0, {"k": b"v"}]
    likes = y.get("likes", type=pycrdt.Map)
    assert all(type(v) is float for k, v in likes.items() if not k.startswith("\x00"))
    doc = Doc.load((GOLDEN / "v1-all-types.save.bin").read_bytes())
    assert doc.map("settings")["size"] == 2**70
    assert type(doc.map("settings")["one"]) is float


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        ({"$": "i", "v": str(2**70)}, 2**70),
        ({"$": "i", "v": str(-(2**60))}, -(2**60)),
        ({"$": "f", "v": "1.0"}, 1.0),
        ({"$": "f", "v": "-inf"}, -math.inf),
        ({"$": "d", "v": {"$": 1.0}}, {"$": 1}),
        # Not what 0.1 wrote: user data.
        ({"$": "i", "v": "5"}, {"$": "i", "v": "5"}),
        ({"$": "i", "v": "0" + str(2**70)}, {"$": "i", "v": "0" + str(2**70)}),
        ({"$": "i", "v": " " + str(2**70)}, {"$": "i", "v": " " + str(2**70)}),
        ({"$": "f", "v": "1.5"}, {"$": "f", "v": "1.5"}),
        ({"$": "f", "v": "nan"}, {"$": "f", "v": "nan"}),
        ({"$": "d", "v": {"a": 1.0}}, {"$": "d", "v": {"a": 1}}),
        ({"$": "x", "v": "1"}, {"$": "x", "v": "1"}),
        ({"\x00i": "1_0"}, {"\x00i": "1_0"}),
        ({"\x00f": 1.0}, {"\x00f": 1}),
    ],
)
def test_which_dollar_maps_are_legacy_tags(stored: dict[str, Any], read: Any) -> None:
    got = values.decode(stored)
    assert got == read
    assert type(got) is type(read)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from(["$", "i", "f", "d", "v", "\x00i", "\x00d"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["$", "v", "\x00i", "\x00f", "\x00d", "a"]) | st.text(),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@given(_json)
def test_every_value_crdtsync_writes_reads_back_as_itself(value: Any) -> None:
    doc = Doc()
    doc.register("r").set(value)
    other = Doc()
    other.import_yjs_update(doc.export_yjs_update())
    got = other.register("r").to_py()
    assert got == value
    assert _typed(got) == _typed(value)  # same types, -0.0 included


def _typed(value: Any) -> Any:
    """``value`` with every leaf's type and repr spelled out, dict keys sorted."""
    if type(value) is dict:
        return ("dict", sorted((k, _typed(v)) for k, v in value.items()))
    if type(value) is list:
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, repr(value))
