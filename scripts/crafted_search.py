#!/usr/bin/env python3
"""Search for crafted Yjs items that make replicas diverge (issue 18, "Byzantine writers").

Usage::

    python scripts/crafted_search.py --sessions N --seed S [--workers W] [--raw] [--json PATH]

Each session:

1. two or three honest writers (raw pycrdt documents, as a Yjs or pycrdt peer
   would be) edit a Text ``t`` and an Array ``a`` concurrently, syncing with each
   other now and then; every transaction's update is kept;
2. an attacker (a client id of its own) reads one writer's state, orders its
   items with a :class:`crdtsync.format.yupdate.DocIndex` (the reference of YATA
   order), and crafts one or two items of one *shape* (below) against it;
3. the honest updates and the crafted ones are delivered, each replica in its
   own random order, to several ``crdtsync.Doc`` replicas through
   ``import_yjs_update`` (updates that arrive early are held, as a relay
   would hold them);
4. replicas that ended up accepting the same updates must hold the same
   content, and a newcomer loading any replica's export must hold that
   replica's content too; otherwise the session *diverged*.

Honest updates must never be refused: the script counts it as an error (and a
session that refuses one exits non-zero). With ``--raw`` the same sessions
are also delivered to raw pycrdt documents (no validation at all), which
shows what each shape does to an unprotected replica.

Shapes (the origin O and right origin R the crafted item names, in the order
the attacker saw):

``adjacent``        R = O.right: what honest writers do (control).
``ro-left-same``    R lies left of O, both of one client.
``ro-left-cross``   R lies left of O, of different clients.
``ro-left-boundary`` R lies left of O and starts a block on every replica (its
                    origin is not the clock before it): the sub-shape S8 lets
                    through, since yrs splits nothing to place it.
``skip-tombstone``  R lies right of O, and only deleted items the attacker
                    read lie between them.
``skip-live``       R lies right of O with live items the attacker read between.
``start-known``     no origin, R is not the first item.
``end-known``       O is not the last item, no right origin.
``ro-equal``        R = O (refused by S6 since the fuzzer found it).
``random-pair``     O and R any two elements (or none), in any order.
``chain``           two crafted items in one update, the second next to the first
                    (each pair picked as in ``random-pair``).
``map-stale``       a map entry whose origin is an older entry of its key, not
                    the key's value the attacker read (honest writers take the value).
``map-ro``          a map entry with a right origin in its key's list (honest
                    writers never give map entries one).

The figures ``docs/SECURITY.md`` reports come from this script (see there for
the command lines).  A sample of it runs in the tests
(``tests/model/test_byzantine.py``) and fails on any divergence.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pycrdt  # noqa: E402

import crdtsync  # noqa: E402
from crdtsync.errors import InvalidUpdateError  # noqa: E402
from crdtsync.format import yupdate as y  # noqa: E402

SHAPES = (
    "adjacent",
    "ro-left-same",
    "ro-left-cross",
    "ro-left-boundary",
    "skip-tombstone",
    "skip-live",
    "start-known",
    "end-known",
    "ro-equal",
    "random-pair",
    "chain",
    "map-stale",
    "map-ro",
)
ROOTS = {"t": y.TYPE_TEXT, "a": y.TYPE_ARRAY, "m": y.TYPE_MAP}
KEYS = ("k1", "k2")
ATTACKER = 9


@dataclass
class SessionResult:
    """What one session showed."""

    shape: str
    crafted: int = 0  # crafted updates made
    crafted_refused: int = (
        0  # crafted updates not taken (refused, or held and dropped), all replicas
    )
    honest_refused: int = 0  # refusals of honest updates (a bug)
    diverged: bool = False  # replicas with the same accepted updates differ
    newcomer_diverged: bool = False  # an export does not load as what it came from
    split_acceptance: bool = False  # replicas disagree on accepting a crafted update
    raw_diverged: bool | None = None  # the same with raw pycrdt (--raw)
    raw_newcomer_diverged: bool = False  # a raw newcomer differs from a raw replica
    detail: str = ""
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------
# Honest writers
# --------------------------------------------------------------------------


class _Writer:
    def __init__(self, client: int) -> None:
        self.doc = pycrdt.Doc(client_id=client)
        self.text = self.doc.get("t", type=pycrdt.Text)
        self.array = self.doc.get("a", type=pycrdt.Array)
        self.map = self.doc.get("m", type=pycrdt.Map)
        self.log: list[bytes] = []
        self._quiet = False
        self.doc.observe(self._on)

    def _on(self, event: Any) -> None:
        if not self._quiet:
            self.log.append(bytes(event.update))

    def edit(self, rng: random.Random) -> None:
        with self.doc.transaction():
            for _ in range(rng.randint(1, 2)):
                r = rng.random()
                if r < 0.15:
                    self.map[rng.choice(KEYS)] = rng.randrange(100)
                elif r < 0.7:
                    n = len(self.text)  # ASCII only: bytes are characters
                    if n and rng.random() < 0.35:
                        i = rng.randrange(n)
                        del self.text[i : i + rng.randint(1, min(3, n - i))]
                    else:
                        s = "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 4)))
                        self.text.insert(rng.randint(0, n), s)
                else:
                    n = len(self.array)
                    if n and rng.random() < 0.35:
                        del self.array[rng.randrange(n)]
                    else:
                        self.array.insert(rng.randint(0, n), rng.randrange(100))

    def pull(self, other: _Writer) -> None:
        """Takes everything ``other`` has (a state-vector sync); not logged as an edit."""
        self._quiet = True
        try:
            self.doc.apply_update(other.doc.get_update(self.doc.get_state()))
        finally:
            self._quiet = False


# --------------------------------------------------------------------------
# The attacker
# --------------------------------------------------------------------------


def _elements(index: y.DocIndex, root: str, key: str | None = None) -> list[tuple[int, int, bool]]:
    """(client, clock, deleted) of every element of a list, in document order."""
    deleted = index.delete_set()
    out = []
    for client, clock, end in index.order(root, key):
        ranges = deleted.get(client, [])
        for k in range(clock, end):
            dead = any(a <= k < a + n for a, n in ranges)
            out.append((client, k, dead))
    return out


def _boundary(index: y.DocIndex, ref: tuple[int, int]) -> bool:
    """Whether no replica can hold ``ref`` in one block with the clock before it."""
    hit = index.lookup(*ref)
    if hit is None or ref[1] == 0:
        return True
    node = hit[1]
    own = node.origin if ref[1] == node.clock else (ref[0], ref[1] - 1)
    if own != (ref[0], ref[1] - 1):
        return True
    prev = index.lookup(ref[0], ref[1] - 1)
    return prev is not None and prev[1].right_origin != node.right_origin


def _pick(
    rng: random.Random,
    shape: str,
    elems: list[tuple[int, int, bool]],
    index: y.DocIndex | None = None,
) -> tuple[tuple[int, int] | None, tuple[int, int] | None] | None:
    """(origin, right origin) of the shape, among a sequence's elements, or None."""
    n = len(elems)
    ids = [(c, k) for c, k, _ in elems]
    cands: list[tuple[tuple[int, int] | None, tuple[int, int] | None]] = []
    if shape == "ro-left-boundary":
        assert index is not None
        for i in range(n):
            for j in range(max(0, i - 8), i):
                if _boundary(index, ids[j]):
                    cands.append((ids[i], ids[j]))
    elif shape == "adjacent":
        cands = [(None, ids[0])] if n else []
        cands += [(ids[i], ids[i + 1] if i + 1 < n else None) for i in range(n)]
    elif shape in ("ro-left-same", "ro-left-cross"):
        same = shape == "ro-left-same"
        for i in range(n):
            for j in range(max(0, i - 6), i):
                if (ids[i][0] == ids[j][0]) == same:
                    cands.append((ids[i], ids[j]))
    elif shape in ("skip-tombstone", "skip-live"):
        for i in range(n):
            for k in range(i + 2, min(n, i + 8)):
                between = [elems[m][2] for m in range(i + 1, k)]
                if shape == "skip-tombstone" and all(between):
                    cands.append((ids[i], ids[k]))
                if shape == "skip-live" and not all(between):
                    cands.append((ids[i], ids[k]))
    elif shape == "start-known":
        cands = [(None, ids[k]) for k in range(1, n)]
    elif shape == "end-known":
        cands = [(ids[i], None) for i in range(n - 1)]
    elif shape == "ro-equal":
        cands = [(ids[i], ids[i]) for i in range(n)]
    elif shape == "map-stale":
        cands = [(ids[i], None) for i in range(n - 1)]
    elif shape == "map-ro":
        pool_m: list[tuple[int, int] | None] = [None, *ids]
        cands = [(rng.choice(pool_m), ids[i]) for i in range(n) for _ in range(2)]
    elif shape in ("random-pair", "chain"):
        pool: list[tuple[int, int] | None] = [None, *ids]
        cands = [(rng.choice(pool), rng.choice(pool)) for _ in range(8)]
    if not cands:
        return None
    return rng.choice(cands)


def craft(rng: random.Random, shape: str, snapshot: bytes, clock: int) -> tuple[bytes, int] | None:
    """One crafted update of ``shape`` against a writer's state: (update, next clock)."""
    index = y.DocIndex(ROOTS)
    index.record(y.parse_update(snapshot))
    if shape.startswith("map-"):
        key = rng.choice(KEYS)
        picked_m = _pick(rng, shape, _elements(index, "m", key))
        if picked_m is None:
            return None
        origin, right = picked_m
        info = (
            y.CONTENT_ANY | (y.HAS_ORIGIN if origin else 0) | (y.HAS_RIGHT_ORIGIN if right else 0)
        )
        st = y.Struct(
            ATTACKER,
            clock,
            1,
            y.CONTENT_ANY,
            info,
            origin,
            right,
            None,
            None,
            y.AnyContent(1, b"\x7d\x63"),
        )
        return y.encode_update(y.ParsedUpdate({ATTACKER: [st]}, {})), clock + 1
    root = "t" if rng.random() < 0.75 else "a"
    picked = _pick(rng, shape, _elements(index, root), index)
    if picked is None:
        return None
    structs = []
    for _ in range(2 if shape == "chain" else 1):
        origin, right = picked
        if root == "t":
            text = rng.choice(["X", "XY", "Z"])
            kind, content, length = y.CONTENT_STRING, text, len(text)
        else:
            kind, content, length = y.CONTENT_ANY, y.AnyContent(1, b"\x7d\x63"), 1  # 99
        info = kind
        parent = None
        if origin is not None:
            info |= y.HAS_ORIGIN
        if right is not None:
            info |= y.HAS_RIGHT_ORIGIN
        if origin is None and right is None:
            parent = root
        st = y.Struct(ATTACKER, clock, length, kind, info, origin, right, parent, None, content)
        structs.append(st)
        # The next one of a chain: next to this one, on either side.
        mine = (ATTACKER, clock + rng.randrange(length))
        other = _pick(rng, "random-pair", _elements(index, root))
        picked = (
            (mine, other[1])
            if other and rng.random() < 0.5
            else (other[0] if other else None, mine)
        )
        clock += length
    return y.encode_update(y.ParsedUpdate({ATTACKER: structs}, {})), clock


# --------------------------------------------------------------------------
# Replicas
# --------------------------------------------------------------------------


def _content(doc: crdtsync.Doc) -> tuple[str, list[Any]]:
    return str(doc.text("t")), [doc.list("a").to_py(), doc.map("m").to_py()]


def _raw_content(doc: pycrdt.Doc) -> tuple[str, list[Any]]:
    return str(doc.get("t", type=pycrdt.Text)), [
        list(doc.get("a", type=pycrdt.Array).to_py()),
        dict(doc.get("m", type=pycrdt.Map).to_py()),
    ]


def run_session(seed: int, index: int, shape: str, raw: bool = False) -> SessionResult:
    """One session (deterministic in ``seed`` and ``index``)."""
    rng = random.Random(f"{seed}:{index}")
    res = SessionResult(shape)
    writers = [_Writer(c) for c in rng.sample(range(1, 8), rng.randint(2, 3))]
    crafted: list[bytes] = []
    clock = 0
    steps = rng.randint(6, 30)
    craft_at = sorted(rng.sample(range(steps), min(steps, rng.randint(1, 2))))
    for step in range(steps):
        w = rng.choice(writers)
        w.edit(rng)
        if rng.random() < 0.35:
            a, b = rng.sample(writers, 2)
            b.pull(a)
        if step in craft_at:
            src = rng.choice(writers)
            made = craft(rng, shape, bytes(src.doc.get_update()), clock)
            if made is not None:
                crafted.append(made[0])
                clock = made[1]
    res.crafted = len(crafted)
    honest = [u for w in writers for u in w.log]
    updates = honest + crafted
    is_crafted = [False] * len(honest) + [True] * len(crafted)
    n_replicas = 3
    accepted: list[frozenset[int]] = []
    contents: list[tuple[str, list[Any]]] = []
    refused_by: list[set[int]] = []
    for r in range(n_replicas):
        doc = crdtsync.Doc(peer_id=1000 + r)
        order = list(range(len(updates)))
        rng.shuffle(order)
        refused: set[int] = set()
        for i in order:
            try:
                doc.import_yjs_update(updates[i])
            except InvalidUpdateError as exc:
                refused.add(i)
                if is_crafted[i]:
                    res.crafted_refused += 1
                else:
                    res.honest_refused += 1
                    res.notes.append(f"honest update {i} refused: {exc}")
        # What the replica holds: refused, still held and dropped (a held
        # update that no longer applies once its predecessors arrive) are out.
        ok = frozenset(i for i in range(len(updates)) if doc.contains(updates[i]))
        for i in range(len(updates)):
            if i not in ok and i not in refused and not is_crafted[i]:
                res.honest_refused += 1
                res.notes.append(f"honest update {i} was held and dropped")
        accepted.append(ok)
        refused_by.append({i for i in range(len(updates)) if i not in ok})
        content = _content(doc)
        contents.append(content)
        newcomer = crdtsync.Doc(peer_id=2000 + r)
        try:
            newcomer.import_yjs_update(doc.export_yjs_update())
        except InvalidUpdateError as exc:
            res.newcomer_diverged = True
            res.notes.append(f"export of replica {r} refused: {exc}")
        else:
            if _content(newcomer) != content:
                res.newcomer_diverged = True
                res.notes.append(f"newcomer of replica {r}: {_content(newcomer)} != {content}")
    crafted_ids = {i for i, c in enumerate(is_crafted) if c}
    res.crafted_refused = sum(len(r & crafted_ids) for r in refused_by)
    if len({frozenset(r & crafted_ids) for r in refused_by}) > 1:
        res.split_acceptance = True
    by_set: dict[frozenset[int], set[tuple[str, str]]] = {}
    for acc, content in zip(accepted, contents, strict=True):
        by_set.setdefault(acc, set()).add((content[0], json.dumps(content[1], sort_keys=True)))
    if any(len(v) > 1 for v in by_set.values()):
        res.diverged = True
        res.detail = repr(sorted(by_set.items(), key=lambda kv: len(kv[0]))[-1][1])
    if raw:
        raw_contents = set()
        parsed = [y.parse_update(u) for u in updates]
        for _r in range(n_replicas + 1):
            # Raw pycrdt with no validation at all, but fed in causal order
            # (pycrdt 0.14 diverges on honest updates delivered past a gap).
            d = pycrdt.Doc(client_id=3000 + _r)
            waiting = list(range(len(updates)))
            rng.shuffle(waiting)
            progress = True
            while waiting and progress:
                progress = False
                for i in list(waiting):
                    if _ready(parsed[i], _state(d)):
                        waiting.remove(i)
                        progress = True
                        # raw pycrdt refusing an update is a result here
                        with contextlib.suppress(Exception):
                            d.apply_update(updates[i])
            c = _raw_content(d)
            raw_contents.add((c[0], json.dumps(c[1], sort_keys=True)))
            # A newcomer loading this replica's state (what a relay sends).
            fresh = pycrdt.Doc(client_id=4000 + _r)
            with contextlib.suppress(Exception):
                fresh.apply_update(d.get_update())
            if _raw_content(fresh) != c:
                res.raw_newcomer_diverged = True
        res.raw_diverged = len(raw_contents) > 1
    return res


def _state(doc: pycrdt.Doc) -> dict[int, int]:
    sv = doc.get_state()
    n, pos = y._read_varuint(sv, 0, 32, "sv")
    out = {}
    for _ in range(n):
        c, pos = y._read_varuint(sv, pos, 64, "sv")
        k, pos = y._read_varuint(sv, pos, 32, "sv")
        out[c] = k
    return out


def _ready(parsed: y.ParsedUpdate, state: dict[int, int]) -> bool:
    """Whether everything an update depends on is in a document at ``state``."""
    ends = {c: ss[-1].end for c, ss in parsed.clients.items()}
    for c, ss in parsed.clients.items():
        if ss[0].clock > state.get(c, 0):
            return False
        for st in ss:
            for ref in (st.origin, st.right_origin, st.parent):
                if isinstance(ref, tuple):
                    rc, rk = ref
                    if rk >= state.get(rc, 0) and not (rc in parsed.clients and rk < ends[rc]):
                        return False
    return True


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def _work(args: tuple[int, int, int, bool, tuple[str, ...]]) -> list[dict[str, Any]]:
    seed, start, stop, raw, shapes = args
    out = []
    for i in range(start, stop):
        shape = shapes[i % len(shapes)]
        r = run_session(seed, i, shape, raw)
        out.append(
            {
                "i": i,
                "shape": r.shape,
                "crafted": r.crafted,
                "crafted_refused": r.crafted_refused,
                "honest_refused": r.honest_refused,
                "diverged": r.diverged,
                "newcomer_diverged": r.newcomer_diverged,
                "split_acceptance": r.split_acceptance,
                "raw_diverged": r.raw_diverged,
                "raw_newcomer_diverged": r.raw_newcomer_diverged,
                "notes": r.notes[:3],
                "detail": r.detail[:300],
            }
        )
    return out


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-shape counts and rates."""
    table: dict[str, dict[str, Any]] = {}
    for shape in SHAPES:
        rs = [r for r in rows if r["shape"] == shape and r["crafted"]]
        if not rs:
            continue
        n = len(rs)
        c: Counter[str] = Counter()
        for r in rs:
            for key in ("diverged", "newcomer_diverged", "split_acceptance"):
                c[key] += bool(r[key])
            c["raw_diverged"] += bool(r["raw_diverged"])
            c["raw_newcomer_diverged"] += bool(r.get("raw_newcomer_diverged"))
            c["refused_sessions"] += r["crafted_refused"] > 0
            c["honest_refused"] += r["honest_refused"] > 0
        table[shape] = {"sessions": n, **dict(c)}
        for key in ("diverged", "newcomer_diverged", "raw_diverged", "raw_newcomer_diverged"):
            table[shape][key + "_rate"] = c[key] / n if n else 0.0
    return table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--raw", action="store_true", help="also deliver to raw pycrdt replicas")
    ap.add_argument("--json", type=Path, help="write the per-shape table (and failures) here")
    ap.add_argument("--shapes", nargs="*", choices=SHAPES, help="only these shapes")
    args = ap.parse_args(argv)
    shapes = tuple(args.shapes or SHAPES)
    t0 = time.monotonic()
    chunk = 200
    jobs = [
        (args.seed, s, min(args.sessions, s + chunk), args.raw, shapes)
        for s in range(0, args.sessions, chunk)
    ]
    rows: list[dict[str, Any]] = []
    if args.workers > 1:
        with multiprocessing.Pool(args.workers) as pool:
            for part in pool.imap_unordered(_work, jobs):
                rows.extend(part)
    else:
        for job in jobs:
            rows.extend(_work(job))
    table = summarize(rows)
    bad = [r for r in rows if r["diverged"] or r["newcomer_diverged"] or r["honest_refused"]]
    print(f"{len(rows)} sessions, seed {args.seed}, {time.monotonic() - t0:.0f} s")
    cols = ["sessions", "refused_sessions", "diverged", "newcomer_diverged", "split_acceptance"]
    if args.raw:
        cols += ["raw_diverged", "raw_newcomer_diverged"]
    print("shape".ljust(16) + "".join(c.rjust(18) for c in cols))
    for shape, row in table.items():
        print(shape.ljust(16) + "".join(str(row.get(c, 0)).rjust(18) for c in cols))
    for r in bad[:10]:
        print("FAILURE", json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps({"table": table, "failures": bad[:200]}, indent=1))
    return 1 if any(r["honest_refused"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
