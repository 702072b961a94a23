"""Hostile bytes into import_update / import_yjs_update / Doc.load.

Every refusal must be one of our errors, and the document must be unchanged and
still usable afterwards (Loro's import fuzzer asserts the same).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import zlib
from pathlib import Path

import cbor2
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync import (
    Counter,
    CrdtSyncError,
    Doc,
    InvalidUpdateError,
    MalformedUpdateError,
    Text,
    UnsupportedVersionError,
    UpdateLimitError,
    UpdateLimits,
)
from crdtsync.format.envelope import FLAG_ZSTD, pack

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
CRASHERS = ROOT / "tests" / "fixtures" / "crashers"


def hostile_files() -> list[Path]:
    files = sorted(CORPUS.glob("*.bin")) + sorted(CRASHERS.glob("*.bin"))
    assert any(f.parent == CORPUS for f in files), f"shared corpus not found at {CORPUS}"
    return files


def sample_doc() -> Doc:
    doc = Doc(peer_id=7)
    doc.map("m")["k"] = {"nested": [1, 2.5, "x", b"\x01"]}
    doc.text("t").insert(0, "héllo 😀")
    doc.counter("c").increment(3)
    doc.register("r").set("v")
    doc.list("l").extend([Text("t"), Counter(2)])
    return doc


def snapshot(doc: Doc) -> tuple[object, object]:
    return doc.to_py(), doc.version


def assert_still_usable(doc: Doc) -> None:
    doc.map("after")["ok"] = True
    other = Doc()
    other.import_update(doc.export_update())
    assert other.to_py() == doc.to_py()


# Each corpus file is tried in a child process: if our validation ever let one
# through, pycrdt could kill the interpreter, and the test must see that as a
# failure rather than take pytest down with it.
_CHILD = r"""
import sys
from pathlib import Path
from crdtsync import Doc, CrdtSyncError, InvalidUpdateError
from crdtsync.format.envelope import pack
sys.path.insert(0, sys.argv[2])
from test_import_safety import sample_doc, snapshot, assert_still_usable
data = Path(sys.argv[1]).read_bytes()
for how in ("yjs", "envelope", "load"):
    doc = sample_doc()
    before = snapshot(doc)
    try:
        if how == "yjs":
            doc.import_yjs_update(data)
        elif how == "envelope":
            doc.import_update(pack(data))
        else:
            Doc.load(pack(data, snapshot=True))
    except InvalidUpdateError as exc:
        assert str(exc), "error message must say what is wrong"
    else:
        # An update with a clock gap may just be early: it is held, unapplied,
        # until its predecessors arrive (they never will for these).
        if how == "load" or doc.pending != 1:
            raise SystemExit(f"{how}: accepted a hostile update")
    assert snapshot(doc) == before, how
    assert_still_usable(doc)
print("ok")
"""


@pytest.mark.parametrize("path", hostile_files(), ids=lambda p: p.name)
def test_hostile_corpus_is_refused(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("ok")


def test_not_bytes() -> None:
    doc = sample_doc()
    for bad in ("text", None, 5, [1]):
        with pytest.raises(InvalidUpdateError):
            doc.import_update(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidUpdateError):
            doc.import_yjs_update(bad)  # type: ignore[arg-type]


def test_envelope_errors_say_what_is_wrong() -> None:
    doc = sample_doc()
    good = doc.export_update()
    before = snapshot(doc)
    cases: list[tuple[bytes, type[Exception], str]] = [
        (b"", MalformedUpdateError, "truncated"),
        (b"\x00" * 10, MalformedUpdateError, "trailing"),
        (cbor2.dumps([1, 2]), MalformedUpdateError, "magic"),
        (cbor2.dumps({0: "other"}), MalformedUpdateError, "magic"),
        (cbor2.dumps({0: "crdtsync", 1: 99, 2: 0, 3: b""}), UnsupportedVersionError, "newer"),
        (cbor2.dumps({0: "crdtsync", 1: 1, 2: 1 << 10, 3: b""}), UnsupportedVersionError, "flags"),
        (cbor2.dumps({0: "crdtsync", 1: 1, 2: 0}), MalformedUpdateError, "payload"),
        (
            cbor2.dumps({0: "crdtsync", 1: 1, 2: FLAG_ZSTD, 3: b"junk"}),
            MalformedUpdateError,
            "corrupt",
        ),
        (good[:-3], MalformedUpdateError, "overruns|truncated"),
        (good + b"\x00", MalformedUpdateError, "trailing"),
        (b"\x81" * 100_000, MalformedUpdateError, "nested"),
    ]
    for data, err, words in cases:
        with pytest.raises(err, match=words or None):
            doc.import_update(data)
        assert snapshot(doc) == before
    assert_still_usable(doc)


def test_unknown_extra_fields_are_ignored() -> None:
    doc = sample_doc()
    env = cbor2.loads(doc.export_update())
    env[99] = {"future": ["field", 1]}
    env[7] = b"whatever"
    other = Doc()
    other.import_update(cbor2.dumps(env))
    assert other.to_py() == doc.to_py()


def test_decompression_bomb_refused_before_inflating() -> None:
    bomb = zstandard.ZstdCompressor(level=1).compress(b"\x00" * (80 * 1024 * 1024))
    assert len(bomb) < 10_000
    data = cbor2.dumps({0: "crdtsync", 1: 1, 2: FLAG_ZSTD, 3: bomb})
    doc = sample_doc()
    before = snapshot(doc)
    with pytest.raises(UpdateLimitError, match="decompress"):
        doc.import_update(data)
    assert snapshot(doc) == before


def test_size_limits_are_configurable() -> None:
    small = UpdateLimits(max_update_bytes=100)
    doc = Doc(limits=small)
    src = Doc()
    src.text("t").insert(0, "x" * 500)
    with pytest.raises(UpdateLimitError):
        doc.import_update(src.export_update())
    with pytest.raises(UpdateLimitError):
        doc.import_yjs_update(src.export_yjs_update())
    # Stored state reads under the document limit (issue 18 item 1), not the
    # per-update one: a room that grew by small updates must reload.
    assert Doc.load(src.save(), limits=small).to_py() == src.to_py()
    with pytest.raises(UpdateLimitError):
        Doc.load(src.save(), limits=UpdateLimits(max_update_bytes=100, max_document_bytes=100))
    assert doc.to_py() == {}


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    n = len(data)
    flip = st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
        lambda t: data[: t[0]] + bytes([data[t[0]] ^ t[1]]) + data[t[0] + 1 :]
    )
    cut = st.integers(0, n - 1).map(lambda i: data[:i])
    insert = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=8)).map(
        lambda t: data[: t[0]] + t[1] + data[t[0] :]
    )
    delete = st.tuples(st.integers(0, n - 1), st.integers(1, 8)).map(
        lambda t: data[: t[0]] + data[t[0] + t[1] :]
    )
    splice = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.integers(1, 16)).map(
        lambda t: data[: t[0]] + data[t[1] : t[1] + t[2]] + data[t[0] :]
    )
    return st.one_of(flip, cut, insert, delete, splice)


def _source_update() -> bytes:
    a = Doc(peer_id=11)
    a.map("m")["x"] = {"deep": [1, {"y": 2.5}], "s": "str"}
    a.text("t").insert(0, "hello wörld")
    a.text("t").delete(2, 3)
    a.list("l").extend([1, "two", b"3", None, True])
    del a.list("l")[1]
    a.counter("c").increment(4)
    a.register("r").set({"k": [1]})
    b = Doc(peer_id=12)
    b.import_update(a.export_update())
    b.text("t").insert(1, "B")
    b.map("m")["x"]["deep"].append(3)
    return b.export_yjs_update()


_SOURCE = _source_update()


def _check_refusal_or_success(doc: Doc, apply: object) -> None:
    before = snapshot(doc)
    try:
        apply()  # type: ignore[operator]
    except CrdtSyncError:
        assert snapshot(doc) == before
    assert_still_usable(doc)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutations(_SOURCE))
def test_mutated_yjs_updates(data: bytes) -> None:
    doc = sample_doc()
    _check_refusal_or_success(doc, lambda: doc.import_yjs_update(data))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    doc = sample_doc()
    _check_refusal_or_success(doc, lambda: doc.import_yjs_update(data))
    _check_refusal_or_success(doc, lambda: doc.import_update(data))


_SAVE = sample_doc().save()
_ENV = sample_doc().export_update()


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(_mutations(_SAVE), _mutations(_ENV)))
def test_mutated_envelopes_and_saves(data: bytes) -> None:
    doc = sample_doc()
    _check_refusal_or_success(doc, lambda: doc.import_update(data))
    with contextlib.suppress(CrdtSyncError):
        Doc.load(data)


def test_zlib_is_not_mistaken_for_an_envelope() -> None:
    with pytest.raises(MalformedUpdateError):
        Doc().import_update(zlib.compress(_ENV))


def test_valid_update_still_accepted_after_refusals() -> None:
    doc = Doc()
    for junk in (b"\xff", _SOURCE[:10], b"\x01\x01\x01"):
        with pytest.raises(InvalidUpdateError):
            doc.import_yjs_update(junk)
    doc.import_yjs_update(_SOURCE)
    assert str(doc.text("t")) == "hBe wörld"
    assert doc.counter("c").value == 4
    assert pack(doc.export_yjs_update())  # round trip through the envelope
