"""Checker details the import path relies on: spent parses and plain ASCII updates.

``Checker.begin`` may free a large parse once begun (the Rust checker does, so
that a load's parse is not alive while the engine applies the update), and
``Checker.plain_ascii`` tells the model when an import keeps an ASCII text
ASCII. Both checkers must answer ``plain_ascii`` alike.
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from helpers.native import require_native
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.format.checker import _RELEASE_BYTES, NativeChecker, new_checker
from crdtsync.format.yupdate import DEFAULT_LIMITS


@pytest.fixture(scope="module")
def native() -> None:
    require_native()


def _text_update(chunks: list[str], client: int = 7) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
    text = doc.get("t", type=pycrdt.Text)
    for c in chunks:
        text += c
    return bytes(doc.get_update())


def test_a_large_parse_is_spent_once_begun(native: None) -> None:
    update = _text_update(["x" * 40] * 2000)
    assert len(update) >= _RELEASE_BYTES
    checker = new_checker(native=True)
    parsed = checker.parse(update, DEFAULT_LIMITS)
    assert checker.writes(parsed) == {7: 80_000}
    engine, *_ = checker.begin(update, parsed, DEFAULT_LIMITS)
    assert engine == update
    checker.commit()
    assert checker.state() == {7: 80_000}
    with pytest.raises(ValueError, match="released"):
        checker.writes(parsed)
    with pytest.raises(ValueError, match="released"):
        checker.plain_ascii(parsed)
    # begun again (a caller reusing a spent parse) is refused, not an empty update
    with pytest.raises(ValueError, match="released"):
        checker.begin(update, parsed, DEFAULT_LIMITS)


def test_a_small_parse_stays_usable(native: None) -> None:
    update = _text_update(["abc"])
    checker = new_checker(native=True)
    parsed = checker.parse(update, DEFAULT_LIMITS)
    checker.begin(update, parsed, DEFAULT_LIMITS)
    checker.commit()
    assert checker.writes(parsed) == {7: 3}


def _updates() -> list[tuple[str, bytes]]:
    """Named updates, each with the answer ``plain_ascii`` must give."""
    out: list[tuple[str, bytes]] = []
    out.append(("ascii text", _text_update(["hello ", "world"])))
    out.append(("non-ASCII text", _text_update(["héllo"])))
    out.append(("astral text", _text_update(["a\U0001f600"])))
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=3)
    text = doc.get("t", type=pycrdt.Text)
    text += "abcdef"
    sv = doc.get_state()
    del text[1:3]
    out.append(("deletions only", bytes(doc.get_update(sv))))
    out.append(("ascii text with a deletion", bytes(doc.get_update())))
    sv = doc.get_state()
    text.insert_embed(1, {"image": "x"})
    out.append(("embed", bytes(doc.get_update(sv))))
    sv = doc.get_state()
    text.format(0, 2, {"bold": True})
    out.append(("format", bytes(doc.get_update(sv))))
    m: pycrdt.Doc[Any] = pycrdt.Doc(client_id=4)
    m.get("m", type=pycrdt.Map)["k"] = "ascii value"
    out.append(("map entry", bytes(m.get_update())))
    return out


PLAIN = {"ascii text", "deletions only", "ascii text with a deletion"}


@pytest.mark.parametrize("native_path", [False, True], ids=["python", "rust"])
def test_plain_ascii(native_path: bool) -> None:
    if native_path:
        require_native()
    checker = new_checker(native=native_path)
    for name, update in _updates():
        parsed = checker.parse(update, DEFAULT_LIMITS)
        assert checker.plain_ascii(parsed) is (name in PLAIN), name


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=6), min_size=1, max_size=5))
def test_plain_ascii_agrees_on_text(chunks: list[str]) -> None:
    require_native()
    update = _text_update([c for c in chunks if c] or ["a"])
    py, rs = new_checker(native=False), new_checker(native=True)
    want = all(c.isascii() for c in chunks)
    assert py.plain_ascii(py.parse(update, DEFAULT_LIMITS)) is want
    assert rs.plain_ascii(rs.parse(update, DEFAULT_LIMITS)) is want


def _wrong_kind_update(n: int) -> bytes:
    """``n`` single-character items that refer to each other (a valid text), in a
    root the checker knows as a map: refused while integrating, after the
    checks that come before it."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=11)
    text = doc.get("m", type=pycrdt.Text)
    with doc.transaction():
        for i in range(n):
            text.insert(i // 2, "x")  # every other one in the middle: no squashing
    return bytes(doc.get_update())


def test_a_refused_large_update_gives_its_reservation_back(native: None) -> None:
    from crdtsync.errors import InvalidUpdateError
    from crdtsync.format.yupdate import TYPE_MAP

    update = _wrong_kind_update(6000)
    checker = NativeChecker({"m": TYPE_MAP})
    assert checker.heap_bytes() < 4096
    parsed = checker.parse(update, DEFAULT_LIMITS)
    with pytest.raises(InvalidUpdateError):
        checker.begin(update, parsed, DEFAULT_LIMITS)
    # nothing of the update stays, nor room reserved for its 6,000 structs
    assert checker.state() == {}
    assert checker.heap_bytes() < 6000 * 8
