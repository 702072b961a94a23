"""What the import path costs next to raw pycrdt: loads, imports, keystrokes, replays.

Usage::

    python benchmarks/bench_import.py [--runs N] [--json PATH] [--only SECTION ...]

Sections (all timings are process CPU time, best of ``--runs``, 3 by default):

``load``
    ``Doc.load(doc.save())`` and ``Doc().import_yjs_update(v1)`` of the full
    history of each sequential trace, next to ``pycrdt.Doc().apply_update(v1)``.
``keystroke``
    one remote keystroke imported into a replica holding 25/50/75/100% of
    automerge-paper: a second writer types 200 characters one transaction at a
    time at random places; each update is imported by ``import_yjs_update``
    (crdtsync) or ``apply_update`` (pycrdt). Mean per keystroke.
``concurrent``
    friendsforever.json.gz (a DAG of transactions by two agents) replayed with
    one replica per agent, each merging the other's updates at multi-parent
    transactions, through crdtsync (``import_yjs_update``) and raw pycrdt.
``memory``
    Python heap held by one loaded document (``tracemalloc``: crdtsync's own
    structures; pycrdt keeps its state in Rust, which tracemalloc does not see)
    and the growth of the process's resident set (both engines), per document
    over 8 held at once, measured after a small document was loaded the same
    way (so that neither counts the code a first load imports). Also, to say
    where the bytes are: the growth of what malloc has handed out and not
    taken back (glibc's ``mallinfo2``: both engines' Rust heaps), and the
    Rust index's own tables (``heap_bytes``).

The traces live in ``../shared/traces`` (see ``traces.py``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import gzip
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt
import traces  # first party: also puts the checkout on sys.path if crdtsync is not installed
from traces import SEQUENTIAL, TRACES_DIR, crdtsync, load_trace

Clock = Callable[[], float]


def best(fn: Callable[[], Any], runs: int, clock: Clock = time.process_time) -> float:
    out = []
    for _ in range(runs):
        gc.collect()
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return min(out)


def full_history(name: str) -> tuple[bytes, bytes, str]:
    """(crdtsync save, pycrdt v1 of the same document, final text) of a sequential trace."""
    trace = load_trace(name)
    replay = traces.CrdtsyncReplay(trace)
    replay.run()
    doc = replay.doc
    assert str(doc.text(traces.TEXT)) == trace.end
    return doc.save(), doc.export_yjs_update(), trace.end


def load_section(runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SEQUENTIAL:
        saved, v1, end = full_history(name)

        def cs_load(saved: bytes = saved, end: str = end) -> None:
            assert str(crdtsync.Doc.load(saved).text(traces.TEXT)) == end

        def cs_import(v1: bytes = v1) -> None:
            crdtsync.Doc().import_yjs_update(v1)

        def py_apply(v1: bytes = v1) -> None:
            d = pycrdt.Doc()
            d.apply_update(v1)

        out[name] = {
            "Doc.load(save) ms": 1000 * best(cs_load, runs),
            "import_yjs_update(v1) ms": 1000 * best(cs_import, runs),
            "pycrdt apply_update(v1) ms": 1000 * best(py_apply, runs),
            "v1 bytes": len(v1),
        }
    return out


def keystroke_section(runs: int, count: int = 200, seed: int = 7) -> dict[str, Any]:
    trace = load_trace("automerge-paper")
    full = trace.ops
    out: dict[str, Any] = {}
    for pct in (25, 50, 75, 100):
        head = trace.head(full * pct // 100)
        rep = traces.CrdtsyncReplay(head, crdtsync.Doc(peer_id=1))
        rep.run()
        base = rep.doc.export_yjs_update()
        # The remote writer: its own keystrokes, one transaction each.
        writer = crdtsync.Doc(peer_id=2)
        writer.import_yjs_update(base)
        ups: list[bytes] = []
        writer.observe_updates(lambda u, _o, local, ups=ups: ups.append(u) if local else None)
        rng = random.Random(seed)
        text = writer.text(traces.TEXT)
        for _ in range(count):
            n = len(text)
            if n and rng.random() < 0.3:
                text.delete(rng.randrange(n), 1)
            else:
                text.insert(rng.randrange(n + 1), rng.choice("abcdefgh "))
        assert len(ups) == count

        def fresh_cs(base: bytes = base) -> crdtsync.Doc:
            d = crdtsync.Doc(peer_id=3)
            d.import_yjs_update(base)
            d.text(traces.TEXT).insert(0, "x")  # a local edit too: the index must see it
            return d

        def fresh_py(base: bytes = base) -> pycrdt.Doc:
            d = pycrdt.Doc(client_id=3)
            d.apply_update(base)
            d.get(traces.TEXT, type=pycrdt.Text).insert(0, "x")
            return d

        cs_times, py_times = [], []
        for _ in range(runs):
            d = fresh_cs()
            gc.collect()
            t0 = time.process_time()
            for u in ups:
                d.import_yjs_update(u)
            cs_times.append(time.process_time() - t0)
            p = fresh_py()
            gc.collect()
            t0 = time.process_time()
            for u in ups:
                p.apply_update(u)
            py_times.append(time.process_time() - t0)
        out[f"{pct}%"] = {
            "crdtsync us": 1e6 * min(cs_times) / count,
            "pycrdt us": 1e6 * min(py_times) / count,
        }
    return out


def _concurrent_trace() -> dict[str, Any]:
    with gzip.open(TRACES_DIR / "friendsforever.json.gz", "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


class _Agent:
    """One replica of the concurrent replay and the updates it made."""

    def __init__(self, engine: str, agent: int) -> None:
        self.engine = engine
        self.log: list[bytes] = []  # its own updates, in order
        self.seen: dict[int, int] = {}  # other agent -> how many of its updates imported
        self.txns: dict[int, int] = {}  # trace txn index -> len(log) after it
        if engine == "crdtsync":
            self.doc: Any = crdtsync.Doc(peer_id=100 + agent)
            self.text: Any = self.doc.text(traces.TEXT)
            self.doc.observe_updates(lambda u, _o, local: self.log.append(u) if local else None)
        else:
            self.doc = pycrdt.Doc(client_id=100 + agent)
            self.text = self.doc.get(traces.TEXT, type=pycrdt.Text)
            self._remote = False

            def on(ev: Any) -> None:
                if not self._remote:
                    self.log.append(ev.update)

            self.doc.observe(on)

    def merge(self, other: _Agent, upto: int) -> None:
        start = self.seen.get(id(other), 0)
        for u in other.log[start:upto]:
            if self.engine == "crdtsync":
                self.doc.import_yjs_update(u)
            else:
                self._remote = True
                try:
                    self.doc.apply_update(u)
                finally:
                    self._remote = False
        self.seen[id(other)] = max(start, upto)

    def edit(self, patches: list[list[Any]]) -> None:
        # ASCII trace: code points are bytes for pycrdt too.
        if self.engine == "crdtsync":
            with self.doc.transaction():
                for pos, nd, ins in patches:
                    if nd:
                        self.text.delete(pos, nd)
                    if ins:
                        self.text.insert(pos, ins)
        else:
            with self.doc.transaction():
                for pos, nd, ins in patches:
                    if nd:
                        del self.text[pos : pos + nd]
                    if ins:
                        self.text.insert(pos, ins)


def replay_concurrent(engine: str, data: dict[str, Any]) -> str:
    """Replays the DAG; returns the merged final text."""
    agents = [_Agent(engine, a) for a in range(data["numAgents"])]
    owner: list[int] = []
    for i, txn in enumerate(data["txns"]):
        me = agents[txn["agent"]]
        for p in txn["parents"]:
            other = agents[owner[p]]
            if other is not me:
                me.merge(other, other.txns[p])
        me.edit(txn["patches"])
        owner.append(txn["agent"])
        me.txns[i] = len(me.log)
    for a in agents:
        for b in agents:
            if a is not b:
                a.merge(b, len(b.log))
    texts = {str(a.text) for a in agents}
    assert len(texts) == 1, "replicas diverged"
    return texts.pop()


def concurrent_section(runs: int) -> dict[str, Any]:
    data = _concurrent_trace()
    out: dict[str, Any] = {}
    for engine in ("crdtsync", "pycrdt"):
        final: list[str] = []
        t = best(lambda e=engine, f=final: f.append(replay_concurrent(e, data)), runs)
        assert final[-1] == data["endContent"], f"{engine} replay does not reach endContent"
        out[engine + " s"] = t
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            [
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            ]
        )
    ]


def _malloc_in_use() -> int | None:
    """Bytes malloc has handed out (glibc only: None elsewhere)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


#: Documents held at once by a memory child: growth is divided by it (one
#: document's growth is at the mercy of what the allocator had free).
COPIES = 8


def _memory_child(engine: str, path: str) -> dict[str, float]:
    """Runs in a fresh process: heap and RSS growth per loaded document.

    A small document is loaded first, the same way, so that the growth counts
    the documents, not the modules and engine code a first load brings in;
    then :data:`COPIES` copies are loaded and held, and the growth divided.
    """
    data = Path(path).read_bytes()
    warm = crdtsync.Doc()
    warm.text("t").insert(0, "warm")
    keep: list[Any] = []
    if engine == "crdtsync":
        keep.append(crdtsync.Doc.load(warm.save()))
    else:
        keep.append(pycrdt.Doc())
        keep[0].apply_update(warm.export_yjs_update())
    gc.collect()
    tracemalloc.start()
    r0 = _rss()
    m0 = _malloc_in_use()
    for _ in range(COPIES):
        if engine == "crdtsync":
            keep.append(crdtsync.Doc.load(data))
        else:
            ydoc = pycrdt.Doc()
            ydoc.apply_update(data)
            keep.append(ydoc)
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] / COPIES
    rss = (_rss() - r0) / COPIES
    m1 = _malloc_in_use()
    tracemalloc.stop()
    out = {"heap MB": heap / 2**20, "rss MB": rss / 2**20}
    if m0 is not None and m1 is not None:
        out["malloc MB"] = (m1 - m0) / COPIES / 2**20
    if engine == "crdtsync":
        out["index MB"] = keep[-1].index().heap_bytes() / 2**20
    del keep
    return out


def memory_section() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SEQUENTIAL:
        row: dict[str, float] = {}
        saved, v1, _ = full_history(name)
        for engine, data in (("crdtsync", saved), ("pycrdt", v1)):
            with tempfile.NamedTemporaryFile(suffix=".bin") as f:
                f.write(data)
                f.flush()
                proc = subprocess.run(
                    [sys.executable, __file__, "--memory-child", engine, f.name],
                    capture_output=True,
                    text=True,
                    check=True,
                )
            for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                row[f"{engine} {k}"] = v
        out[name] = row
    return out


SECTIONS: dict[str, Callable[[int], dict[str, Any]]] = {
    "load": load_section,
    "keystroke": keystroke_section,
    "concurrent": concurrent_section,
    "memory": lambda _runs: memory_section(),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", nargs="*", choices=sorted(SECTIONS))
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        print(json.dumps(_memory_child(*args.memory_child)))
        return
    results: dict[str, Any] = {}
    for name, fn in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        results[name] = fn(args.runs)
        print(name, json.dumps(results[name], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
