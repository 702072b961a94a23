"""Tests wait on events with timeouts, never on sleeps (the house rule, enforced here).

A ``sleep(`` in tests/ is allowed only where it is deliberate, not a wait: a
fault proxy's injected delay, the poll interval of a bounded wait on another
process, time let pass to show that something does NOT happen. Each such line
carries the marker ``# (noqa: sleep) <why>`` on the line itself; any other
``sleep(`` fails this test, which names the file and line. (``noqa: sleep`` is
the project's marker for a deliberate sleep; in parentheses, ruff does not
read it as a malformed ``# noqa`` directive.)
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUFFIXES = {".py", ".mjs", ".js", ".ts"}
# The call, whoever makes it: time.sleep, asyncio.sleep, anyio.sleep, a JS helper.
SLEEP = re.compile(r"\bsleep\s*\(")
MARKER = re.compile(r"(#|//) \(noqa: sleep\) \S")


def untagged_sleeps(text: str) -> list[int]:
    """Line numbers (from 1) of ``sleep(`` calls without the marker on their line."""
    return [
        n
        for n, line in enumerate(text.splitlines(), 1)
        if SLEEP.search(line) and not MARKER.search(line)
    ]


def test_the_scan_tells_a_tagged_sleep_from_an_untagged_one() -> None:
    sample = (
        "await asyncio.sleep(delay)\n"
        "time.sleep(pause)  # (noqa: sleep) an injected delay\n"
        "await anyio.sleep (two)  # waits for the server\n"
        "time.sleep(pause)  # (noqa: sleep)\n"  # a marker without a reason
        "await sleep(five); // (noqa: sleep) the JS side's pace\n"
        "no_sleeping_here(3)\n"
    )
    assert untagged_sleeps(sample) == [1, 3, 4]


def test_every_sleep_in_tests_is_tagged_deliberate() -> None:
    found: list[str] = []
    scanned = 0
    for path in sorted(TESTS.rglob("*")):
        rel = path.relative_to(TESTS)
        if path.suffix not in SUFFIXES or "node_modules" in rel.parts or not path.is_file():
            continue
        if path == Path(__file__).resolve():
            continue  # this file's own samples
        scanned += 1
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"tests/{rel}:{n}" for n in untagged_sleeps(text)]
    assert scanned > 100  # the scan saw the test tree
    assert found == [], "sleep( used as a wait (or not tagged '# (noqa: sleep) why'):\n" + (
        "\n".join(found)
    )
