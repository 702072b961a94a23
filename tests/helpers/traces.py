"""Shared helpers for tests that replay the editing traces of ``../shared/traces``.

Replaying a trace through pycrdt is slow (several seconds for automerge-paper),
so each trace is replayed at most once per test session (``lru_cache``) and the
resulting full-history v1 update is also cached on disk under the system temp
directory, keyed by trace name and pycrdt version (a cache entry is only a
speed-up: it is checked to decode to the trace's final text).

Also home of :func:`fuzz_module`, which loads ``scripts/fuzz_updates.py`` (the
random document generator and mutators shared by the fuzzer and the tests).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pycrdt

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
TRACES = SHARED / "traces"
CORPUS = SHARED / "corpus"
CRASHERS = REPO / "tests" / "fixtures" / "crashers"
TRACE_CLIENT_ID = 2**53 - 12345


def replay_trace(path: Path) -> tuple[bytes, str]:
    """Replays a sequential trace through ``pycrdt.Text``.

    pycrdt indexes text by UTF-8 bytes while the traces count code points, so
    positions are converted while the text holds non-ASCII characters.

    Returns:
        (full-history v1 update, final text).
    """
    with gzip.open(path) as fh:
        trace = json.load(fh)
    # A fixed client id as large as pycrdt's random ones (53 bits, 8 varuint
    # bytes), so sizes are realistic and reproducible.
    doc = pycrdt.Doc(client_id=TRACE_CLIENT_ID)
    text = doc.get("text", type=pycrdt.Text)
    mirror: str = trace["startContent"]
    if mirror:
        text.insert(0, mirror)
    for txn in trace["txns"]:
        with doc.transaction():
            for pos, ndel, ins in txn["patches"]:
                if mirror.isascii():
                    bpos, bdel = pos, ndel
                else:
                    bpos = len(mirror[:pos].encode())
                    bdel = len(mirror[pos : pos + ndel].encode())
                if ndel:
                    del text[bpos : bpos + bdel]
                if ins:
                    text.insert(bpos, ins)
                mirror = mirror[:pos] + ins + mirror[pos + ndel :]
    final = str(text)
    assert final == trace["endContent"]
    return doc.get_update(), final


@functools.cache
def trace_update(name: str) -> tuple[bytes, str]:
    """(v1 update, final text) of a trace, replayed once per session and cached on disk."""
    path = TRACES / f"{name}.json.gz"
    assert path.exists(), f"trace {path} not found (CI checks out ../shared beside the repo)"
    version = getattr(pycrdt, "__version__", "unknown")
    cache = Path(tempfile.gettempdir()) / f"crdtsync-trace-{name}-{version}.v1"
    if cache.exists():
        update = cache.read_bytes()
        doc = pycrdt.Doc()
        doc.apply_update(update)
        final = str(doc.get("text", type=pycrdt.Text))
        with gzip.open(path) as fh:
            if json.load(fh)["endContent"] == final:
                return update, final
    update, final = replay_trace(path)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(update)
    tmp.replace(cache)
    return update, final


@functools.cache
def script_module(name: str) -> ModuleType:
    """``scripts/<name>.py`` loaded as the module ``name`` (once)."""
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def fuzz_module() -> ModuleType:
    """``scripts/fuzz_updates.py`` loaded as a module."""
    return script_module("fuzz_updates")
