"""The Rust core (crdtsync._native) agrees with the Python reference, and the facade.

The native module is imported directly here (whatever CRDTSYNC_PURE_PYTHON
says: the comparisons need both paths); tests of ``crdtsync.format.accel`` run on the
path the environment selects, so running this file with and without
``CRDTSYNC_PURE_PYTHON=1`` covers both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import cbor2
import pytest
from helpers.compact import (
    duplicate_client_payload,
    hostile_per_column_payloads,
    key_reference_payloads,
)
from helpers.native import require_native
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.errors import (
    CrdtSyncError,
    InvalidUpdateError,
    MalformedUpdateError,
    UpdateLimitError,
)
from crdtsync.format import accel
from crdtsync.format import columnar as _columnar
from crdtsync.format import yupdate as _yupdate
from crdtsync.format.envelope import _unzstd, unpack

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
CRASHERS = REPO / "tests" / "fixtures" / "crashers"
SHARED_CORPUS = REPO.parent / "shared" / "corpus"
LIMITS = _yupdate.DEFAULT_LIMITS

try:
    from crdtsync import _native as _native_module  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only without a Rust toolchain
    _native_module = None


@pytest.fixture(scope="module")
def native() -> Any:
    """The extension; its absence fails the run wherever cargo could have built it."""
    require_native(_native_module is not None, pure_counts=False)
    return _native_module


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except InvalidUpdateError as exc:
        return type(exc).__name__, None


def _fixture_inputs() -> list[bytes]:
    paths = sorted(CRASHERS.glob("*.bin")) + sorted(CRASHERS.glob("*.prior"))
    paths += sorted(SHARED_CORPUS.glob("*.bin"))
    return [p.read_bytes() for p in paths]


# -- the boundary ------------------------------------------------------------------


def test_a_panic_becomes_a_crdtsync_error(native: Any) -> None:
    with pytest.raises(MalformedUpdateError, match=r"panic: boom \(test\)"):
        native._panic_for_tests("boom (test)")
    # an ordinary Exception, not pyo3's PanicException (a BaseException)
    assert issubclass(MalformedUpdateError, Exception)
    # the module still works afterwards
    assert native.parse_update(b"\x00\x00", LIMITS).struct_count() == 0


def test_errors_are_the_library_classes(native: Any) -> None:
    with pytest.raises(MalformedUpdateError, match="trailing"):
        native.parse_update(b"\x00\x00\x00", LIMITS)
    with pytest.raises(UpdateLimitError):
        native.parse_update(b"\x00" * 10, _yupdate.UpdateLimits(max_update_bytes=4))
    with pytest.raises(MalformedUpdateError):
        native.compact_decode(b"\x02\x00\x00", LIMITS)
    with pytest.raises(TypeError):
        native.parse_update("text", LIMITS)
    for cls in (MalformedUpdateError, UpdateLimitError):
        assert issubclass(cls, CrdtSyncError)


def test_huge_limits_mean_unlimited(native: Any) -> None:
    class Limits:
        def __getattr__(self, name: str) -> int:
            return 2**70

    assert native.parse_update(b"\x00\x00", Limits()).encode() == b"\x00\x00"


def test_large_inputs_parse_in_threads(native: Any) -> None:
    # Large inputs are parsed without the GIL: several threads at once agree.
    import pycrdt

    doc = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    for i in range(3000):
        text.insert(0, f"{i} ")
    update = doc.get_update()
    assert len(update) > 16 * 1024
    results: list[bytes] = []

    def work() -> None:
        for _ in range(5):
            results.append(native.parse_update(update, LIMITS).encode())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [update] * 15


# -- primitives --------------------------------------------------------------------


@settings(max_examples=400)
@given(st.binary(max_size=14), st.sampled_from([32, 64]))
def test_varuint_reading_agrees(native: Any, data: bytes, bits: int) -> None:
    py = _outcome(lambda: _yupdate._read_varuint(data, 0, bits, "x"))
    nat = _outcome(lambda: native.read_varuint(data, 0, bits))
    assert py == nat


@settings(max_examples=400)
@given(st.binary(max_size=12))
def test_varint_reading_agrees(native: Any, data: bytes) -> None:
    assert _outcome(lambda: _yupdate._read_varint(data, 0)) == _outcome(
        lambda: native.read_varint(data, 0)
    )


@settings(max_examples=300)
@given(st.integers(0, 2**64 - 1))
def test_varuint_writing_agrees(native: Any, value: int) -> None:
    assert native.write_varuint(value) == _yupdate._varuint_bytes(value)


def _reject(name: str) -> object:
    raise ValueError(name)


def _python_accepts(text: str) -> bool:
    try:
        json.loads(text, parse_constant=_reject)
    except ValueError:
        return False
    return True


_JSONISH = st.text(alphabet='[]{}",:0123456789.eE+-tnfrulsaINy \t\n\r\\/bu\x01\x7fé😀', max_size=24)


@settings(max_examples=800)
@given(
    st.one_of(
        _JSONISH, st.text(max_size=12), st.from_regex(r'\A[\[{"]?-?\d{0,3}(\.\d)?', fullmatch=True)
    )
)
def test_json_acceptance_agrees(native: Any, text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return  # update strings are strict UTF-8
    assert native.json_valid(raw) == _python_accepts(text), text
    assert native.json_depth(raw) == _yupdate.json_depth(text)


@settings(max_examples=200)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=5),
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_json_of_values_is_valid(native: Any, value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, indent=1, ensure_ascii=False)):
        assert native.json_valid(text.encode())


def test_json_integer_digit_limit(native: Any) -> None:
    limit = sys.get_int_max_str_digits()
    assert native.json_valid(b"1" * limit) is _python_accepts("1" * limit)
    assert native.json_valid(b"1" * (limit + 1)) is _python_accepts("1" * (limit + 1))


# -- the parser ----------------------------------------------------------------------


def _same_parse(native: Any, data: bytes, limits: _yupdate.UpdateLimits = LIMITS) -> str:
    py = _outcome(lambda: _yupdate.parse_update(data, limits))
    nat = _outcome(lambda: native.parse_update(data, limits))
    assert py[0] == nat[0], data[:80]
    if py[0] == "ok":
        got = accel.to_parsed_update(nat[1])
        assert list(got.clients.items()) == list(py[1].clients.items())
        assert list(got.delete_set.items()) == list(py[1].delete_set.items())
        assert nat[1].encode() == data
        assert nat[1].struct_count() == py[1].struct_count()
    return py[0]


def test_fixtures_parse_the_same(native: Any) -> None:
    outcomes = [_same_parse(native, data) for data in _fixture_inputs()]
    assert "ok" in outcomes
    assert "UpdateLimitError" in outcomes  # the deep Any values of the shared corpus
    tight = _yupdate.UpdateLimits(max_any_depth=3, max_key_bytes=2, max_string_bytes=4)
    for data in _fixture_inputs():
        _same_parse(native, data, tight)


def test_golden_updates_parse_the_same(native: Any) -> None:
    for name in ("v1-all-types", "v1-concurrent"):
        for form in ("save", "update"):
            env = unpack((GOLDEN / f"{name}.{form}.bin").read_bytes(), LIMITS)
            assert _same_parse(native, env.update) == "ok"
        assert _same_parse(native, (GOLDEN / f"{name}.yjs.bin").read_bytes()) == "ok"


# -- the columnar codec and zstd -------------------------------------------------------


@pytest.mark.parametrize("name", ["v1-all-types", "v1-concurrent", "v2-per-column"])
def test_golden_saves_byte_identical(native: Any, name: str) -> None:
    """Documents saved by main load unchanged, and re-encode to the same bytes."""
    raw = (GOLDEN / f"{name}.save.bin").read_bytes()
    payload = cbor2.loads(raw)[3]
    env = unpack(raw, LIMITS)
    assert native.compact_decode(payload, LIMITS) == env.update
    assert native.compact_decode(payload, LIMITS) == _columnar.compact_decode(payload, LIMITS)
    # compact_encode of the update gives back the stored payload on both paths
    assert native.compact_encode(env.update, LIMITS) == payload
    assert _columnar.compact_encode(env.update) == payload
    assert accel.compact_encode(env.update) == payload
    assert accel.compact_decode(payload) == env.update


@pytest.mark.parametrize("name", ["v1-all-types", "v1-concurrent"])
def test_golden_zstd_payloads_agree(native: Any, name: str) -> None:
    payload = cbor2.loads((GOLDEN / f"{name}.update.bin").read_bytes())[3]
    expected = _unzstd(payload, LIMITS.max_update_bytes)
    assert native.zstd_unframe(payload, LIMITS.max_update_bytes) == expected
    assert accel.unzstd(payload, LIMITS.max_update_bytes) == expected
    for limit in (len(expected) - 1, 0):
        with pytest.raises(UpdateLimitError):
            native.zstd_unframe(payload, limit)
    with pytest.raises(MalformedUpdateError):
        native.zstd_unframe(payload[:-3], LIMITS.max_update_bytes)


def _varuint(v: int) -> bytes:
    return _yupdate._varuint_bytes(v)


def _key_bomb(key_bytes: int, structs: int) -> bytes:
    """A compact payload: ``structs`` items whose parent is one long root key."""
    import lzma

    key = b"k" * key_bytes
    cols = [b""] * 11
    cols[0] = _varuint(1)
    cols[1] = _varuint(1) + _varuint(0) + _varuint(structs) + _varuint(0)
    cols[2] = b"\x01" * structs  # Deleted items
    cols[5] = b"\x01\x00" * structs  # parent: root key 0
    cols[6] = _varuint(len(key)) + key
    cols[7] = b"\x01" * structs
    cols[10] = _varuint(0)
    block = _varuint(11) + b"".join(_varuint(len(c)) + c for c in cols)
    payload = lzma.compress(block, format=lzma.FORMAT_RAW, filters=_columnar._lzma_filters(26))
    return bytes((1, 1 | 26 << 2)) + _varuint(len(block)) + payload


def test_key_bomb_refused_without_allocating(native: Any, tmp_path: Path) -> None:
    """A few hundred bytes naming a 64 KiB key 16,000 times (a 1 GiB update)."""
    bomb = _key_bomb(65536, 16384)
    assert len(bomb) < 1000
    script = tmp_path / "bomb.py"
    script.write_text(
        "import resource, sys\n"
        "from crdtsync import _native\n"
        "from crdtsync.format.yupdate import DEFAULT_LIMITS\n"
        "from crdtsync.errors import UpdateLimitError\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    _native.compact_decode(data, DEFAULT_LIMITS)\n"
        "except UpdateLimitError as exc:\n"
        "    print('refused', exc)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print('grew_kib', after - before)\n"
    )
    (tmp_path / "bomb.bin").write_bytes(bomb)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "bomb.bin")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith("refused compact update: the v1 update would exceed max_update_bytes")
    grew_kib = int(out[1].split()[1])
    # the column block and the LZMA dictionary: the refusal comes before the
    # update is written (never the 1 GiB)
    assert grew_kib < 200 * 1024, out


def test_small_key_bomb_agrees_with_python(native: Any) -> None:
    limits = _yupdate.UpdateLimits(max_update_bytes=50_000)
    for structs in (10, 1000):
        bomb = _key_bomb(1000, structs)
        py = _outcome(lambda: _columnar.compact_decode(bomb, limits))  # noqa: B023
        nat = _outcome(lambda: native.compact_decode(bomb, limits))  # noqa: B023
        assert py == nat
    assert nat[0] == "UpdateLimitError"


def test_layout_2_hostile_payloads_agree(native: Any) -> None:
    limits = _yupdate.UpdateLimits(max_update_bytes=1 << 20)
    outcomes = []
    for data in hostile_per_column_payloads():
        py = _outcome(lambda: _columnar.compact_decode(data, limits))  # noqa: B023
        nat = _outcome(lambda: native.compact_decode(data, limits))  # noqa: B023
        assert py == nat, data[:40]
        outcomes.append(py[0])
    assert outcomes == ["MalformedUpdateError"] * 7 + ["UpdateLimitError"]
    v1, good, bad = key_reference_payloads()
    assert native.compact_decode(good, limits) == v1
    with pytest.raises(MalformedUpdateError, match="key reference 9 beyond the table"):
        native.compact_decode(bad, limits)


def test_a_client_named_twice_shares_its_last_clock(native: Any) -> None:
    """The Rust decoder keeps last clocks per client id, as the reference does."""
    data = duplicate_client_payload()
    py = _columnar.compact_decode(data, LIMITS)
    assert native.compact_decode(data, LIMITS) == py
    assert [s.origin for s in _yupdate.parse_update(py).clients[2]] == [(2, 100), (2, 200)]


# -- the differential fuzzer's sample ---------------------------------------------------


def _fuzz_module() -> Any:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import fuzz_differential
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return fuzz_differential


@pytest.mark.slow
def test_differential_sample(native: Any) -> None:
    fd = _fuzz_module()
    res = fd.run_range(seed=20261206, start=0, stop=3000)
    assert res.count == 3000
    assert res.problems == []
    # the sample covers acceptance and both refusal classes of every kind of input
    for kind in ("update", "compact"):
        for got in ("ok", "MalformedUpdateError", "UpdateLimitError"):
            assert res.outcomes[f"{kind}:{got}"] > 0, (kind, got, res.outcomes)
    assert res.outcomes["zstd:ok"] > 0


def test_differential_comparison_catches_disagreements(native: Any) -> None:
    """The comparison is not vacuous: a native side that differs is reported."""
    fd = _fuzz_module()

    class Skewed:
        def __getattr__(self, name: str) -> Any:
            return getattr(native, name)

        def parse_update(self, data: bytes, limits: Any) -> Any:
            raise UpdateLimitError("skewed")

        def compact_decode(self, data: bytes, limits: Any) -> bytes:
            return bytes(native.compact_decode(data, limits)) + b"!"

    valid = (GOLDEN / "v1-all-types.yjs.bin").read_bytes()
    assert fd.check_update(native, valid, LIMITS) == ("ok", None)
    _, problem = fd.check_update(Skewed(), valid, LIMITS)
    assert problem is not None
    assert "python ok" in problem
    payload = cbor2.loads((GOLDEN / "v1-all-types.save.bin").read_bytes())[3]
    assert fd.check_compact(native, payload, LIMITS) == ("ok", None)
    assert fd.check_compact(Skewed(), payload, LIMITS)[1] == "compact_decode: different bytes"


# -- the facade -----------------------------------------------------------------------


def test_facade_follows_the_environment() -> None:
    forced = os.environ.get(accel.PURE_PYTHON_ENV, "") not in ("", "0")
    if forced or _native_module is None:
        assert not accel.NATIVE
        assert accel.native_module() is None
        assert accel.PATH.startswith("pure Python")
    else:
        assert accel.NATIVE
        assert accel.native_module() is _native_module
        assert accel.PATH.startswith("native Rust core")


def test_facade_functions_agree_with_the_reference() -> None:
    for data in [*_fixture_inputs(), (GOLDEN / "v1-concurrent.yjs.bin").read_bytes()]:
        py = _outcome(lambda: _yupdate.parse_update(data, LIMITS))  # noqa: B023
        got = _outcome(lambda: accel.parse_update(data, LIMITS))  # noqa: B023
        assert got == py
        assert _outcome(lambda: accel.check_update(data, LIMITS))[0] == py[0]  # noqa: B023
        if py[0] == "ok":
            packed = accel.compact_encode(data)
            assert packed == _columnar.compact_encode(data)
            assert accel.compact_decode(packed) == data
    with pytest.raises(TypeError):
        accel.parse_update("not bytes")  # type: ignore[arg-type]
    assert accel.parse_update(bytearray(b"\x00\x00")).is_empty()


@pytest.mark.parametrize("pure", [False, True])
def test_version_names_the_path(pure: bool) -> None:
    env = {**os.environ, accel.PURE_PYTHON_ENV: "1" if pure else ""}
    out = subprocess.run(
        [sys.executable, "-m", "crdtsync", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith("crdtsync ")
    if pure:
        assert out[1] == f"formats: pure Python ({accel.PURE_PYTHON_ENV} is set)"
    elif _native_module is not None:
        assert out[1].startswith("formats: native Rust core (crdtsync-native ")


@pytest.mark.parametrize("pure", [False, True])
def test_facade_on_each_path(pure: bool) -> None:
    """Whatever path this process uses, each path is exercised in a fresh one."""
    code = (
        "import sys\n"
        "from crdtsync.format import accel, columnar as _columnar, yupdate as _yupdate\n"
        "v1 = open(sys.argv[1], 'rb').read()\n"
        "assert accel.parse_update(v1) == _yupdate.parse_update(v1)\n"
        "packed = accel.compact_encode(v1)\n"
        "assert packed == _columnar.compact_encode(v1)\n"
        "assert accel.compact_decode(packed) == v1\n"
        "print(accel.NATIVE)\n"
    )
    env = {**os.environ, accel.PURE_PYTHON_ENV: "1" if pure else "0"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(GOLDEN / "v1-all-types.yjs.bin")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    assert out.stdout.strip() == str(not pure and _native_module is not None)
