#!/usr/bin/env python3
"""Differential fuzzer of lazy loads (hydration) against eager ones.

Theory of operation
-------------------
``Doc.load`` of a save that carries tree shapes, with the Rust checker,
defers pycrdt's apply of the history until something needs the engine
(``docs/TREE.md``, "Hydration"); until then it answers from the Rust index
and the load's parse. Saves are untrusted: whatever a save holds, the lazy
load must show exactly what the eager load (``doc._LAZY_LOADS = False``)
shows, and raise nothing but the library's errors.

Each input is generated from ``(seed, index)``: a few writers (``Doc``)
edit trees ("t", sometimes "u", sometimes a tree nested in a map),
creating, moving and deleting nodes and writing data maps, edit a text, a
map and a list, sometimes write Yjs-style roots with no registry entry
(a raw pycrdt writer imported), and sync now and then (so concurrent
edits are merged). One of them reads its trees and saves. Then the save is:

``honest``  kept as is;
``shapes``  re-packed with its tree-shapes blob (envelope field 5) decoded
            and changed: versions, writers, sizes, clocks, the newest
            operation, ids, parents, keys, entry keys, shapes from another
            writer (the version set to the update's, mostly, so that the
            checks behind the version are reached), bodies of other types;
``update``  the saving writer's *engine* forged before the save (the
            registry's entry for a tree changed to a non-string, another
            kind, deleted, or written concurrently by two writers; entries
            in the tree's map that are not writers' containers; writers'
            containers deleted or overwritten; keys in a container
            overwritten or deleted), or its v1 update structure-mutated
            (``fuzz_updates.mutate_struct``), packed with the honest shapes
            claiming the forged version;
``bytes``   byte-mutated as a whole (``fuzz_updates.mutate_bytes``).

For each input both loads run, each in its own ``try``: the same error
class, or both succeed. Then, on both, in one random order per phase:

1. before hydration: every tree read (``children`` of the top level and of
   each node, ``parent``, ``len``, iteration, ``in``) of each root tree
   named in the shapes or the generation;
2. after forcing hydration: ``to_py()``, ``roots()``, ``version``,
   ``export_update()`` imported into a fresh document, each root tree's
   whole shape;
3. the same random follow-ups on both (a move, a data edit, an import of
   another writer's update), then phase 2 again.

A difference, an exception that is not a ``CrdtSyncError``, a Rust panic,
or an ERROR logged by crdtsync ("(a bug)": the hydration checks) is a
*finding*. Inputs run in a worker subprocess that reports each one; one
silent for ``--input-timeout`` seconds is a hang (a finding) and the worker
restarts after it. Findings are written to ``--out``
(``lazy-<seed>-<index>.save`` and a ``.txt`` saying how); the exit status is
1 if there are any.

Usage::

    scripts/fuzz_lazy_load.py --count 20000 --seed 20261213

``run_range`` is what the tests call in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import selectors
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "scripts")):
    if p not in sys.path:
        sys.path.insert(0, p)

import fuzz_updates as fu  # noqa: E402
import pycrdt  # noqa: E402

from crdtsync import Doc, Tree  # noqa: E402
from crdtsync.errors import CrdtSyncError  # noqa: E402
from crdtsync.format import envelope, zstd  # noqa: E402
from crdtsync.model import doc as doc_mod  # noqa: E402
from crdtsync.model import tree as tree_mod  # noqa: E402
from crdtsync.model.doc import DEFAULT_LIMITS  # noqa: E402

KINDS = ("honest", "shapes", "update", "bytes")
_KIND_WEIGHTS = (10, 40, 35, 15)
#: Loads use a fixed clock (nothing here waits) and one peer id on both sides.
PEER = 9


def _clock() -> float:
    return 1000.0


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


@dataclass
class Input:
    """One generated save and the updates of other replicas (for follow-ups)."""

    kind: str
    data: bytes
    how: str
    others: list[bytes]
    names: list[str]  # root names to read as trees


def _tree_ops(t: Tree, rng: random.Random, n: int) -> None:
    for _ in range(n):
        nodes = list(t)
        r = rng.random()
        if not nodes or r < 0.35:
            parent = rng.choice(nodes) if nodes and rng.random() < 0.7 else None
            data = {"n": rng.randrange(100)} if rng.random() < 0.5 else None
            t.create(parent, data=data)
        elif r < 0.8:
            node = rng.choice(nodes)
            with contextlib.suppress(CrdtSyncError):  # a cycle or itself
                t.move(node, rng.choice([None, *nodes]), rng.choice([None, 0]))
        elif r < 0.9:
            t.delete(rng.choice(nodes))
        else:
            with contextlib.suppress(CrdtSyncError):  # (a node without a data map)
                t.data(rng.choice(nodes))["k"] = rng.randrange(1000)


def _sync(rng: random.Random, docs: list[Doc]) -> None:
    for a in docs:
        for b in docs:
            if a is not b and rng.random() < 0.8:
                b.import_update(a.export_update(since=b.version))


def _writers(rng: random.Random) -> list[Doc]:
    n = rng.randint(1, 3)
    ids = rng.sample(range(1, 60), n) if rng.random() < 0.8 else [rng.randrange(1, 2**40)] * 0
    if len(ids) < n:
        ids = [rng.randrange(1, 2**40) for _ in range(n)]
    docs = [Doc(peer_id=i, clock=_clock) for i in ids]
    nested = rng.random() < 0.2
    yjs = rng.random() < 0.35
    for step in range(rng.randint(1, 5)):
        for d in docs:
            _tree_ops(d.tree("t"), rng, rng.randrange(1, 10))
            if rng.random() < 0.3:
                _tree_ops(d.tree("u"), rng, rng.randrange(1, 4))
            if nested and rng.random() < 0.5:
                m = d.map("nest")
                sub = m.get("sub")
                if sub is None and d is docs[0]:
                    # One writer makes it: a nested tree overwritten by a
                    # concurrent write leaves its binding on a freed branch
                    # (Doc.save then crashes in pycrdt: see the report of
                    # 2026-12-07 in docs/LONG_RUNS.md), not what this fuzzes.
                    m["sub"] = Tree()
                    sub = m["sub"]
                if isinstance(sub, Tree):
                    _tree_ops(sub, rng, 2)
            if rng.random() < 0.5:
                d.map("m")[f"k{rng.randrange(4)}"] = rng.randrange(100)
            if rng.random() < 0.4:
                d.text("x").insert(0, rng.choice(["ab", "é", "xyz", "🙂"]))
            if rng.random() < 0.3:
                d.list("l").append(step)
        if yjs and rng.random() < 0.5:
            raw = pycrdt.Doc(client_id=rng.randrange(100, 200))
            kind = rng.choice(["map", "text", "array"])
            if kind == "map":
                raw.get("ym", type=pycrdt.Map)["a"] = rng.randrange(9)
            elif kind == "text":
                raw.get("yt", type=pycrdt.Text).insert(0, "yo")
            else:
                raw.get("ya", type=pycrdt.Array).append(1)
            with contextlib.suppress(CrdtSyncError):
                rng.choice(docs).import_yjs_update(bytes(raw.get_update()))
        if len(docs) > 1 and rng.random() < 0.6:
            _sync(rng, docs)
    return docs


def _shapes(saved: bytes) -> tuple[bytes, Any] | None:
    env = envelope.unpack(saved, DEFAULT_LIMITS)
    if not env.cache:
        return None
    magic = tree_mod._CACHE_MAGIC
    raw = zstd.decompress(
        env.cache[len(magic) :], 1 << 24, what="x", malformed=ValueError, too_large=ValueError
    )
    return env.update, json.loads(raw)


def _pack(update: bytes, body: Any, *, raw_json: bytes | None = None) -> bytes:
    text = json.dumps(body).encode() if raw_json is None else raw_json
    blob = tree_mod._CACHE_MAGIC + zstd.compress(text)
    return _envelope(update, blob)


def _envelope(update: bytes, blob: bytes) -> bytes:
    """A save's envelope (compact as Doc.save writes it, unless the update cannot be)."""
    try:
        return envelope.pack(update, compact=True, snapshot=True, cache=blob)
    except CrdtSyncError:  # a mutated update the columnar codec refuses: carried as is
        return envelope.pack(update, snapshot=True, cache=blob)


def _mutate_entry(rng: random.Random, e: dict[str, Any], versions: list[str]) -> str:
    """One semantic change to a tree's shape; returns what it did."""
    what = rng.choice(
        ["writers", "sizes", "last", "top", "ids", "parents", "pos", "key", "drop-field"]
    )
    ids = e.get("ids", "").split(" ") if isinstance(e.get("ids"), str) else []
    if what == "writers":
        w = e.get("writers")
        if isinstance(w, dict) and w and rng.random() < 0.5:
            w.pop(rng.choice(list(w)))
        elif isinstance(w, dict):
            w[str(rng.choice([1, 2, 3, 7, 200, 2**40]))] = rng.randrange(5)
        else:
            e["writers"] = {}
    elif what == "sizes":
        w = e.get("writers")
        if isinstance(w, dict) and w:
            k = rng.choice(list(w))
            w[k] = rng.choice([w[k] + 1, w[k] - 1, 0, -1, str(w[k]), None, 1.0 * w[k]])
    elif what == "last":
        last = e.get("last")
        if isinstance(last, dict) and last:
            k = rng.choice(list(last))
            last[k] = rng.choice([last[k] + 1, last[k] - 1, 0, -5, 2**70, str(last[k])])
            if rng.random() < 0.5:  # keep "top" consistent: the checks behind it
                e["top"] = [last[k], int(k)] if isinstance(last[k], int) else e.get("top")
        else:
            e["last"] = rng.choice([[], {"1": 1}, None])
    elif what == "top":
        top = e.get("top")
        e["top"] = rng.choice(
            [[0, 0], [1], None, "x", [top[0] + 1, top[1]] if isinstance(top, list) else 5]
        )
    elif what == "ids" and ids:
        i = rng.randrange(len(ids))
        r = rng.random()
        if r < 0.25 and len(ids) > 1:
            j = rng.randrange(len(ids))
            ids[i], ids[j] = ids[j], ids[i]
        elif r < 0.5:
            ids[i] = ids[rng.randrange(len(ids))]
        elif r < 0.75:
            c, _, k = ids[i].partition(":")
            ids[i] = rng.choice([f"{c}:{int(k) + 1}" if k.isdigit() else "1:1", "999:1", "0:0"])
        else:
            ids[i] = rng.choice(["x", "", "1:01", "-1:2"])
        e["ids"] = " ".join(ids)
    elif what == "parents":
        ps = e.get("parents")
        if isinstance(ps, list) and ps:
            i = rng.randrange(len(ps))
            ps[i] = rng.choice([-1, -2, -3, i, len(ps), rng.randrange(len(ps)), "0", None])
            if rng.random() < 0.3 and len(ps) > 1:  # a cycle of two
                j = rng.randrange(len(ps))
                ps[i], ps[j] = j, i
    elif what == "pos":
        pos = e.get("pos")
        if isinstance(pos, str):
            keys = pos.split(" ")
            i = rng.randrange(len(keys))
            r = rng.random()
            if r < 0.4 and len(keys) > 1:
                j = rng.randrange(len(keys))
                keys[i], keys[j] = keys[j], keys[i]
            else:
                keys[i] = rng.choice(["", "a", "zz", "~", keys[i] + "0", "!"])
            e["pos"] = " ".join(keys)
    elif what == "key":
        e["key"] = rng.choice(
            ["r:u", "r:m", "r:x", "r:l", "r:ym", "r:zz", "r:", "n:1:1", "t", 5, "r:t"]
        )
    else:
        e.pop(rng.choice(["writers", "last", "top", "ids", "parents", "pos", "key"]), None)
    return what


def _mutate_shapes(
    rng: random.Random, update: bytes, body: Any, other_bodies: list[Any], version: str
) -> tuple[bytes, str]:
    """A save of ``update`` with ``body`` (the shapes) changed."""
    hows = []
    r = rng.random()
    if r < 0.08:
        raw = rng.choice([b"[]", b"{}", b"null", b'{"version": 5, "trees": {}}', b"\xff"])
        return _pack(update, None, raw_json=raw), "shapes:garbage"
    if r < 0.25 and other_bodies:
        body = json.loads(json.dumps(rng.choice(other_bodies)))
        hows.append("other-writer's")
    versions = [version, *(b.get("version", "") for b in other_bodies)]
    for _ in range(rng.choice([1, 1, 2, 3])):
        trees = body.get("trees")
        if not isinstance(trees, list) or not trees:
            break
        s = rng.random()
        if s < 0.08:
            trees.append(json.loads(json.dumps(rng.choice(trees))))  # a duplicate entry
            hows.append("dup-entry")
        elif s < 0.12:
            trees.pop(rng.randrange(len(trees)))
            hows.append("drop-entry")
        else:
            e = rng.choice(trees)
            if isinstance(e, dict):
                try:
                    hows.append(_mutate_entry(rng, e, versions))
                except (TypeError, IndexError, ValueError, AttributeError):
                    hows.append("none")  # (a field an earlier change left of another type)
    if rng.random() < 0.12:
        body["version"] = rng.choice([*versions, version[:-2], version + "00", "zz", 5, None, ""])
        hows.append("version")
    else:
        body["version"] = version  # claims the update's: the deeper checks run
    return _pack(update, body), "shapes:" + ",".join(hows)


def _engine_forgery(rng: random.Random, d: Doc, docs: list[Doc]) -> str:
    """Writes into ``d``'s engine what no wrapper writes; returns what."""
    reg = d._registry
    t = d.tree("t")
    y = t._y
    what = rng.choice(
        [
            "registry-nonstring",
            "registry-kind",
            "registry-deleted",
            "registry-concurrent",
            "foreign-entry",
            "foreign-map",
            "noncanonical-map",
            "container-deleted",
            "container-overwritten",
            "container-key-deleted",
            "container-key-overwritten",
        ]
    )
    name = rng.choice(["t", "t", "u"])
    if what == "registry-nonstring":
        reg[name] = rng.choice([5, None, True, ["tree"], {"k": "tree"}, 1.5, b"tree"])
    elif what == "registry-kind":
        reg[name] = rng.choice(["map", "text", "list", "counter", "register", "bogus", ""])
    elif what == "registry-deleted":
        if name in reg:
            del reg[name]
    elif what == "registry-concurrent":
        other = Doc.load(d.save(), peer_id=rng.randrange(300, 400), clock=_clock)
        other._registry[name] = rng.choice(["tree", "map", 7])
        reg[name] = rng.choice(["tree", "text", None])
        with contextlib.suppress(CrdtSyncError):
            d.import_update(other.export_update(since=d.version))
    elif what == "foreign-entry":
        y[rng.choice(["x", "5", "0", "01"])] = rng.choice([1, "s", None])
    elif what == "foreign-map":
        y[rng.choice(["x", "kind", "id"])] = pycrdt.Map({"a": 1})
    elif what == "noncanonical-map":
        y[rng.choice(["007", "+1", "1e3", " 4"])] = pycrdt.Map()
    elif what in ("container-deleted", "container-overwritten"):
        keys = list(y.keys())
        if keys:
            k = rng.choice(keys)
            if what == "container-deleted":
                del y[k]
            else:
                y[k] = rng.choice([3, pycrdt.Map(), "x"])
    else:
        keys = [k for k in y if isinstance(y.get(k), pycrdt.Map)]
        if keys:
            cont = y[rng.choice(keys)]
            inner = list(cont.keys())
            if inner:
                k = rng.choice(inner)
                if what == "container-key-deleted":
                    del cont[k]
                else:
                    cont[k] = rng.choice([1, "x", None])
                    cont[k] = rng.choice([2, "y"])  # twice: one live entry
    return "update:" + what


def make_input(seed: int, index: int) -> Input:
    """Input number ``index`` of ``seed``."""
    rng = random.Random(f"lazy:{seed}:{index}")
    kind = rng.choices(KINDS, _KIND_WEIGHTS)[0]
    docs = _writers(rng)
    d = rng.choice(docs)
    names = ["t", "u", "m", "x", "ym", "zz"]
    for w in docs:
        w.tree("t").children()
        if rng.random() < 0.5 and "u" in w.roots():
            with contextlib.suppress(CrdtSyncError):
                w.tree("u").children()
        if "nest" in w.roots():
            sub = w.map("nest").get("sub")
            if isinstance(sub, Tree):
                sub.children()
    honest = d.save()
    others = [w.export_update() for w in docs if w is not d]
    extra = Doc(peer_id=rng.randrange(400, 500), clock=_clock)
    _tree_ops(extra.tree("t"), rng, 3)
    others.append(extra.export_update())
    how = kind
    data = honest
    if kind == "shapes":
        got = _shapes(honest)
        if got is None:
            kind = how = "honest"
        else:
            update, body = got
            other_bodies = [b for w in docs if w is not d for b in [_shapes(w.save())] if b]
            data, how = _mutate_shapes(
                rng, update, body, [b[1] for b in other_bodies], body["version"]
            )
    elif kind == "update":
        got = _shapes(honest)
        if rng.random() < 0.7:
            try:
                how = _engine_forgery(rng, d, docs)
            except (CrdtSyncError, KeyError, TypeError, ValueError) as exc:
                how = f"update:forgery-refused:{type(exc).__name__}"
            update = d.export_yjs_update()
        else:
            upd = envelope.unpack(honest, DEFAULT_LIMITS).update
            mutated = None
            for _ in range(3):
                mutated = fu.mutate_struct(rng, upd, b"")
                if mutated is not None:
                    break
            update = mutated if mutated is not None else fu.mutate_bytes(rng, upd, b"")
            how = "update:mutate-struct" if mutated is not None else "update:mutate-bytes"
        if got is not None and rng.random() < 0.85:
            body = got[1]
            with contextlib.suppress(CrdtSyncError, ValueError):  # claims the forged version
                body["version"] = Doc.load(envelope.pack(update)).version.to_bytes().hex()
            data = _pack(update, body)
        else:
            data = _envelope(update, b"")
            with contextlib.suppress(CrdtSyncError):
                data = Doc.load(envelope.pack(update), clock=_clock).save()
    elif kind == "bytes":
        env = envelope.unpack(honest, DEFAULT_LIMITS)
        r = rng.random()
        if r < 0.3 or not env.cache:
            data, how = fu.mutate_bytes(rng, honest, rng.choice(others)), "bytes:save"
        elif r < 0.65:
            # the update uncompressed in the envelope: the mutations reach it
            plain = envelope.pack(env.update, snapshot=True, cache=env.cache)
            data, how = fu.mutate_bytes(rng, plain, rng.choice(others)), "bytes:plain-save"
        elif r < 0.8:
            blob = fu.mutate_bytes(rng, env.cache, b"")
            data = _envelope(env.update, blob)
            how = "bytes:blob"
        else:
            got = _shapes(honest)
            assert got is not None
            text = fu.mutate_bytes(rng, json.dumps(got[1]).encode(), b"")
            data, how = _pack(env.update, None, raw_json=text), "bytes:shapes-json"
    return Input(kind, data, how, others, names)


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------


class Finding(Exception):
    """A difference between the two loads (or a bug on the lazy side)."""


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", value), (error class, None) for the library's errors; else marked."""
    try:
        return "ok", fn()
    except CrdtSyncError as exc:
        return type(exc).__name__, None
    except Exception as exc:
        return f"unexpected {type(exc).__name__}", repr(exc)[:300]
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":
            return "panic", repr(exc)[:300]
        raise


def _bad(o: tuple[str, Any]) -> bool:
    return o[0].startswith(("unexpected", "panic"))


@contextlib.contextmanager
def eager_loads() -> Iterator[None]:
    old = doc_mod._LAZY_LOADS
    doc_mod._LAZY_LOADS = False
    try:
        yield
    finally:
        doc_mod._LAZY_LOADS = old


class _Errors(logging.Handler):
    """ERROR records of the crdtsync loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@contextlib.contextmanager
def errors_logged() -> Iterator[_Errors]:
    h = _Errors()
    logger = logging.getLogger("crdtsync")
    logger.addHandler(h)
    try:
        yield h
    finally:
        logger.removeHandler(h)


def _tree_reads(doc: Doc, name: str, rng: random.Random) -> list[Callable[[], Any]]:
    """Probes of root tree ``name`` (each a tree read)."""

    def t() -> Tree:
        return doc.tree(name)

    def nodes() -> list[str]:
        return sorted(t())

    probes: list[Callable[[], Any]] = [
        lambda: t().children(None),
        lambda: len(t()),
        lambda: sorted(t()),
        lambda: [(n, t().parent(n)) for n in nodes()],
        lambda: [(n, t().children(n)) for n in nodes()],
        lambda: [n in t() for n in [*nodes(), "1:999999", "x"]],
    ]
    rng.shuffle(probes)
    return probes


def _shape(doc: Doc, name: str) -> Any:
    t = doc.tree(name)
    ns = sorted(t)
    return (
        t.children(None),
        [(n, t.parent(n), t.children(n)) for n in ns],
        t.to_py(),
    )


def _state_probes(doc: Doc, rng: random.Random) -> list[Callable[[], Any]]:
    def exported() -> Any:
        fresh = Doc(peer_id=55, clock=_clock)
        fresh.import_update(doc.export_update())
        return fresh.to_py(), fresh.version.to_bytes()

    def shapes() -> Any:
        return [
            (n, outcome(lambda n=n: _shape(doc, n)))
            for n, k in sorted(doc.roots().items())
            if k == "tree"
        ]

    probes: list[Callable[[], Any]] = [
        doc.to_py,
        lambda: sorted(doc.roots().items()),
        lambda: doc.version.to_bytes(),  # noqa: PLW0108 - read when probed, in order
        exported,
        shapes,
    ]
    rng.shuffle(probes)
    return probes


def _follow_ups(doc: Doc, others: list[bytes], rng: random.Random) -> list[Any]:
    """Random edits, chosen from the document's state (so equal states get equal edits)."""
    out: list[Any] = []
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        roots = outcome(doc.roots)
        trees = [n for n, k in sorted(roots[1].items()) if k == "tree"] if roots[0] == "ok" else []
        name = rng.choice(trees) if trees else "t"
        pick, v = rng.random(), rng.randrange(100)

        def move(name: str = name, pick: float = pick) -> Any:
            t = doc.tree(name)
            ns = sorted(t)
            if not ns:
                return t.create(None, data={"a": 1})
            n = ns[int(pick * len(ns))]
            p = [None, *ns][int(pick * 7919) % (len(ns) + 1)]
            return t.move(n, p, 0 if pick < 0.5 else None)

        def data_edit(name: str = name, pick: float = pick, v: int = v) -> Any:
            t = doc.tree(name)
            ns = sorted(t)
            if not ns:
                doc.map("m")["e"] = v
                return None
            t.data(ns[int(pick * len(ns))])["e"] = v
            return None

        if r < 0.35:
            out.append(("move", outcome(move)))
        elif r < 0.6:
            out.append(("data", outcome(data_edit)))
        elif r < 0.75:
            out.append(("map", outcome(lambda v=v: doc.map("m").__setitem__("f", v))))
        else:
            u = rng.choice(others)
            out.append(("import", outcome(lambda u=u: doc.import_update(u))))
    return out


def _phase(
    label: str, docs: tuple[Doc, Doc], make: Callable[[Doc, random.Random], list[Any]], seed: str
) -> None:
    """Runs the same probes (same order) on both; raises Finding on a difference."""
    probes = [make(d, random.Random(seed)) for d in docs]
    for i, (a, b) in enumerate(zip(*probes, strict=True)):
        oa, ob = outcome(a), outcome(b)
        if _bad(oa) or _bad(ob) or oa != ob:
            raise Finding(f"{label} probe {i}: lazy {oa!r:.400} vs eager {ob!r:.400}")


def check_input(inp: Input, seed: int, index: int) -> str:
    """Loads ``inp`` lazily and eagerly and compares; returns the outcome's name.

    Raises:
        Finding: on any difference, non-library exception, panic or logged error.
    """
    with errors_logged() as logged:
        lazy = outcome(lambda: Doc.load(inp.data, peer_id=PEER, clock=_clock))
        lazy_errors = list(logged.records)
        logged.records.clear()
        with eager_loads():
            eager = outcome(lambda: Doc.load(inp.data, peer_id=PEER, clock=_clock))
        eager_errors = list(logged.records)
        logged.records.clear()
        if _bad(lazy) or _bad(eager) or lazy[0] != eager[0]:
            raise Finding(f"load: lazy {lazy!r:.400} vs eager {eager!r:.400}")
        if lazy[0] != "ok":
            return lazy[0]
        if lazy_errors != eager_errors:
            raise Finding(f"load logged: lazy {lazy_errors} vs eager {eager_errors}")
        docs: tuple[Doc, Doc] = (lazy[1], eager[1])
        was_lazy = docs[0]._lazy is not None
        names = list(inp.names)
        got = _shapes_names(inp.data)
        names += [n for n in got if n not in names]
        key = f"{seed}:{index}"

        trees = [n for n in names if n in got]
        rest = [n for n in names if n not in trees]

        def reads(group: list[str]) -> Callable[[Doc, random.Random], list[Any]]:
            def make(d: Doc, rng: random.Random) -> list[Any]:
                ps: list[Any] = []
                for n in rng.sample(group, len(group)):
                    ps += _tree_reads(d, n, rng)
                return ps

            return make

        # The trees that may be read from their shapes first, then other
        # names (which hydrate a lazy document), each in a random order.
        _phase("tree reads", docs, reads(trees), f"reads:{key}")
        read_lazily = docs[0]._lazy is not None
        _phase("other names' tree reads", docs, reads(rest), f"reads2:{key}")
        docs[0]._hydrate()
        _phase("hydrated", docs, _state_probes, f"state:{key}")
        fa = _follow_ups(docs[0], inp.others, random.Random(f"follow:{key}"))
        fb = _follow_ups(docs[1], inp.others, random.Random(f"follow:{key}"))
        if fa != fb or any(_bad(o) for _, o in fa + fb):
            raise Finding(f"follow-ups: lazy {fa!r:.400} vs eager {fb!r:.400}")
        _phase("after follow-ups", docs, _state_probes, f"state2:{key}")
        if logged.records:
            raise Finding(f"logged errors: {logged.records}")
    # ok-lazy-reads: every tree read was answered before hydration; ok-lazy:
    # loaded lazily, then a read needed the engine; ok-eager: hydrated at load
    # (a shape refused, or the index could not tell).
    return "ok-lazy-reads" if read_lazily else "ok-lazy" if was_lazy else "ok-eager"


def _shapes_names(data: bytes) -> list[str]:
    """Root names the save's shapes mention (they are read as trees too)."""
    try:
        got = _shapes(data)
    except Exception:
        return []
    if got is None or not isinstance(got[1], dict) or not isinstance(got[1].get("trees"), list):
        return []
    out = []
    for e in got[1]["trees"]:
        k = e.get("key") if isinstance(e, dict) else None
        if isinstance(k, str) and k.startswith("r:") and k[2:] not in out:
            out.append(k[2:])
    return out[:6]


@dataclass
class Result:
    """What a range of inputs gave."""

    count: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (index, what)


def run_one(seed: int, index: int, res: Result) -> None:
    """Generates and checks one input, adding to ``res``."""
    try:
        inp = make_input(seed, index)
    except BaseException as exc:  # PanicException derives from BaseException
        if type(exc).__name__ != "PanicException" and not isinstance(exc, CrdtSyncError):
            raise
        res.outcomes[f"skipped: generation raised {type(exc).__name__}"] += 1
        return
    res.count += 1
    try:
        got = check_input(inp, seed, index)
    except Finding as exc:
        res.outcomes[f"{inp.kind}:FINDING"] += 1
        res.problems.append((index, f"{inp.how}: {exc}"))
        return
    except Exception as exc:  # the comparison itself raised: reported, not lost
        res.outcomes[f"{inp.kind}:FINDING"] += 1
        tb = "".join(traceback.format_exception(exc)[-4:])
        res.problems.append((index, f"{inp.how}: the comparison raised {exc!r}\n{tb}"))
        return
    res.outcomes[f"{inp.kind}:{got}"] += 1


def run_range(seed: int, start: int, stop: int) -> Result:
    """Checks inputs ``[start, stop)`` of ``seed`` in this process."""
    res = Result()
    for index in range(start, stop):
        run_one(seed, index, res)
    return res


# --------------------------------------------------------------------------
# Driver: a worker subprocess, restarted after a hang
# --------------------------------------------------------------------------


def _worker(seed: int, start: int, stop: int) -> None:
    logging.getLogger("crdtsync").setLevel(logging.INFO)
    for index in range(start, stop):
        print(json.dumps({"start": index}), flush=True)
        res = Result()
        run_one(seed, index, res)
        print(
            json.dumps({"done": index, "outcomes": dict(res.outcomes), "problems": res.problems}),
            flush=True,
        )


def save_finding(out: Path, seed: int, index: int, what: str) -> Path:
    """Writes a finding: ``<base>.txt`` says what, ``<base>.save`` is the input."""
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"lazy-{seed}-{index}"
    base.with_suffix(".txt").write_text(f"seed {seed} index {index}\n{what}\n")
    # Generated in a subprocess: generating may be what crashed.
    cmd = [sys.executable, __file__, "--dump", str(base.with_suffix(".save"))]
    cmd += ["--seed", str(seed), "--start", str(index)]
    with contextlib.suppress(subprocess.SubprocessError):
        subprocess.run(cmd, timeout=120, check=False)
    return base


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first input index")
    ap.add_argument("--out", type=Path, default=Path("fuzz-lazy-load-findings"))
    ap.add_argument("--input-timeout", type=float, default=60.0, help="seconds per input")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.dump is not None:
        args.dump.write_bytes(make_input(args.seed, args.start).data)
        return 0
    stop = args.start + args.count
    if args.worker:
        _worker(args.seed, args.start, stop)
        return 0

    t0 = time.monotonic()
    total = Result()
    try:
        hangs = _drive(args, stop, total, t0)
    except KeyboardInterrupt:  # (timeout -s INT): the summary of what ran
        print("interrupted", flush=True)
        hangs = total.outcomes["HANG"]
    elapsed = time.monotonic() - t0
    summary = {
        "seed": args.seed,
        "start": args.start,
        "inputs": total.count,
        "seconds": round(elapsed, 1),
        "findings": len(total.problems) + hangs + total.outcomes["CRASH"],
        "outcomes": dict(sorted(total.outcomes.items())),
    }
    print(json.dumps(summary, indent=2))
    return 1 if summary["findings"] else 0


def _drive(args: argparse.Namespace, stop: int, total: Result, t0: float) -> int:
    """Runs workers over ``[args.start, stop)``, restarting after hangs and crashes."""
    nxt = args.start
    hangs = 0
    last_report = t0
    while nxt < stop:
        cmd = [sys.executable, __file__, "--worker", "--seed", str(args.seed)]
        cmd += ["--start", str(nxt), "--count", str(stop - nxt)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        current: int | None = None
        while True:
            if not sel.select(timeout=args.input_timeout):
                proc.kill()
                proc.wait()
                if current is None:
                    current = nxt
                hangs += 1
                total.count += 1
                total.outcomes["HANG"] += 1
                path = save_finding(args.out, args.seed, current, "hang (no answer in time)")
                print(f"HANG input {current} -> {path}", flush=True)
                nxt = current + 1
                break
            line = proc.stdout.readline()
            if not line:
                rc = proc.wait()
                if current is not None and rc != 0:
                    total.count += 1
                    total.outcomes["CRASH"] += 1
                    path = save_finding(args.out, args.seed, current, f"worker exit {rc}")
                    print(f"CRASH input {current} -> {path}", flush=True)
                    nxt = current + 1
                else:
                    nxt = stop
                break
            msg = json.loads(line)
            if "start" in msg:
                current = msg["start"]
                continue
            current = None
            nxt = msg["done"] + 1
            total.count += 1
            total.outcomes.update(msg["outcomes"])
            for index, what in msg["problems"]:
                total.problems.append((index, what))
                path = save_finding(args.out, args.seed, index, what)
                print(f"FINDING input {index}: {what[:300]} -> {path}", flush=True)
            now = time.monotonic()
            if now - last_report > 60:
                last_report = now
                rate = total.count / (now - t0)
                found = len(total.problems)
                print(f"{total.count} inputs, {rate:.1f}/s, findings {found}", flush=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return hangs


if __name__ == "__main__":
    sys.exit(main())
