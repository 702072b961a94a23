"""``Checker.parse_begin``: an import's parse, plain-ASCII check and begin in one step.

``Doc`` imports through it (one call into Rust per keystroke on the native
path). It must do exactly what ``parse``, ``plain_ascii`` and ``begin`` do in
turn, on both checkers: the same errors in the same order, the same index
afterwards, and, when deletions of clocks the document lacks must be split
off, nothing begun and the parse handed back for the two-step path (which
checks the hold budget). ``scripts/fuzz_index.py`` compares the two paths on
fuzzed sessions; these are the cases by name.
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from helpers.native import checker_kinds

from crdtsync.errors import MalformedUpdateError, MissingUpdatesError, UpdateLimitError
from crdtsync.format.checker import (
    _RELEASE_BYTES,
    BEGAN_FORMATTING,
    BEGAN_PLAIN,
    Checker,
    new_checker,
)
from crdtsync.format.yupdate import DEFAULT_LIMITS, TYPE_TEXT, UpdateLimits


@pytest.fixture(params=checker_kinds(), ids=lambda n: "native" if n else "python")
def native(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _pair(native: bool) -> tuple[Checker, Checker]:
    """Two empty checkers of one kind: one for each path."""
    return new_checker({"t": TYPE_TEXT}, native=native), new_checker(
        {"t": TYPE_TEXT}, native=native
    )


def _two_steps(c: Checker, data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> int:
    parsed = c.parse(data, limits)
    plain = c.plain_ascii(parsed)
    engine, formatting, later, _, _ = c.begin(data, parsed, limits)
    assert engine == data
    assert later is None
    return (BEGAN_FORMATTING if formatting else 0) | (BEGAN_PLAIN if plain else 0)


def _writer(client: int = 7) -> tuple[pycrdt.Doc[Any], pycrdt.Text, list[bytes]]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
    text = doc.get("t", type=pycrdt.Text)
    ups: list[bytes] = []
    doc.observe(lambda ev: ups.append(ev.update))
    return doc, text, ups


def test_keystrokes_and_formats_give_the_flags_of_the_two_steps(native: bool) -> None:
    _doc, text, ups = _writer()
    text += "hello"
    text.insert(2, "é")  # not ASCII
    text.format(0, 2, {"bold": True})  # a Format item
    del text[1:3]
    text += "!"
    a, b = _pair(native)
    flags = []
    for u in ups:
        got = a.parse_begin(u, DEFAULT_LIMITS)
        assert got == _two_steps(b, u)
        flags.append(got)
        assert a.commit() == b.commit()
    assert a.snapshot() == b.snapshot()
    assert flags[0] == BEGAN_PLAIN  # plain ASCII, no formatting yet
    assert flags[1] == 0  # "é"
    assert flags[2] & BEGAN_FORMATTING
    assert flags[-1] == BEGAN_FORMATTING | BEGAN_PLAIN  # formatting stays "ever"


def test_deletions_to_split_off_hand_the_parse_back_with_nothing_begun(native: bool) -> None:
    _doc, text, ups = _writer()
    text += "abc"
    insert = ups[-1]
    del text[0:1]
    delete = ups[-1]
    a, b = _pair(native)
    before = a.snapshot()
    got = a.parse_begin(delete, DEFAULT_LIMITS)  # deletes a clock a does not have
    assert not isinstance(got, int)
    assert a.snapshot() == before  # nothing begun
    # the two-step path with the parse handed back, as Doc takes it
    budget: list[int] = []
    began = a.begin(delete, got, DEFAULT_LIMITS, lambda n, later: budget.append(n))
    expected = b.begin(delete, b.parse(delete, DEFAULT_LIMITS), DEFAULT_LIMITS)
    assert budget == [1]
    assert began == expected
    a.commit()
    b.commit()
    assert a.snapshot() == b.snapshot()
    # once the insert is there, the same delete begins in one step
    for c in (a, b):
        c.parse_begin(insert, DEFAULT_LIMITS)
        c.commit()
    assert a.parse_begin(delete, DEFAULT_LIMITS) == BEGAN_PLAIN


def test_errors_come_in_the_order_of_the_two_steps(native: bool) -> None:
    a, _ = _pair(native)
    with pytest.raises(MalformedUpdateError):
        a.parse_begin(b"\x01\x02", DEFAULT_LIMITS)
    _, text, ups = _writer()
    text += "x" * 100
    with pytest.raises(UpdateLimitError):
        a.parse_begin(ups[-1], UpdateLimits(max_update_bytes=10))
    text += "y"
    with pytest.raises(MissingUpdatesError) as missing:
        a.parse_begin(ups[-1], DEFAULT_LIMITS)
    with pytest.raises(MissingUpdatesError) as two_steps:
        _two_steps(new_checker({"t": TYPE_TEXT}, native=native), ups[-1])
    got, want = missing.value, two_steps.value
    assert (got.client, got.clock, got.needs) == (want.client, want.clock, want.needs)
    assert got.client == 7
    assert a.snapshot() == new_checker({"t": TYPE_TEXT}, native=native).snapshot()
    assert a.parse_begin(ups[0], DEFAULT_LIMITS) == BEGAN_PLAIN  # nothing was left open


def test_a_large_update_begins_in_one_step(native: bool) -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=9)
    text = doc.get("t", type=pycrdt.Text)
    for i in range(3000):
        text.insert(i // 2, "ab"[i % 2])
    data = bytes(doc.get_update())
    assert len(data) >= _RELEASE_BYTES
    a, b = _pair(native)
    assert a.parse_begin(data, DEFAULT_LIMITS) == _two_steps(b, data)
    a.commit()
    b.commit()
    assert a.snapshot() == b.snapshot()


def test_import_calls_are_parse_begin_and_commit(native: bool) -> None:
    _, text, ups = _writer()
    text += "ab"
    text += "c"
    a, b = _pair(native)
    begin, commit = a.import_calls(DEFAULT_LIMITS)
    for u in ups:
        assert begin(u) == b.parse_begin(u, DEFAULT_LIMITS)
        assert commit() == b.commit()
    assert a.snapshot() == b.snapshot()
