"""pytest-benchmark versions of compare.py, small enough to run in a minute.

Run with ``pytest benchmarks/ --benchmark-only`` (the default ``pytest`` run
only collects ``tests/``). Each group holds crdtsync and raw pycrdt doing the
same work, so the report shows the ratio within a group; nothing here asserts a
timing. The work is defined once, in ``traces.py`` and ``compare.py``, so these
measure exactly what the comparison table measures, at a smaller size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import compare
import pytest
import traces

ENGINES = ("crdtsync", "pycrdt")
REPLAY_OPS = 20_000
OPS = 2_000

REPLAYS: dict[str, type[traces.Replay]] = {
    "crdtsync": traces.CrdtsyncReplay,
    "pycrdt": traces.PycrdtReplay,
}


@pytest.fixture(scope="module")
def paper_head() -> traces.Trace:
    """The first 20,000 patches of automerge-paper."""
    if not traces.trace_path("automerge-paper").exists():
        pytest.skip(f"traces not found in {traces.TRACES_DIR}")
    return traces.load_trace("automerge-paper").head(REPLAY_OPS)


@pytest.mark.benchmark(group=f"text replay: automerge-paper, first {REPLAY_OPS:,} patches")
@pytest.mark.parametrize("engine", ENGINES)
def test_replay(benchmark: Any, paper_head: traces.Trace, engine: str) -> None:
    cls = REPLAYS[engine]

    def setup() -> tuple[tuple[traces.Replay], dict[str, Any]]:
        return (cls(paper_head),), {}

    def run(replay: traces.Replay) -> traces.Replay:
        replay.run()
        return replay

    replay = benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    assert replay.text() == paper_head.end


_OPS = compare.op_benchmarks(OPS)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("op", list(_OPS))
def test_op(benchmark: Any, op: str, engine: str) -> None:
    benchmark.group = f"{op} x{OPS:,}"
    setup_loop: Callable[[], Callable[[], None]] = _OPS[op][engine]

    def setup() -> tuple[tuple[Callable[[], None]], dict[str, Any]]:
        return (setup_loop(),), {}

    def run(loop: Callable[[], None]) -> None:
        loop()

    benchmark.pedantic(run, setup=setup, rounds=10, iterations=1)
