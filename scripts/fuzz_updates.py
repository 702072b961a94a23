#!/usr/bin/env python3
"""Differential fuzzer: does every update our validator accepts stay safe in pycrdt?

Theory of operation
-------------------
Inputs are generated deterministically from ``(seed, index)``: random bytes,
truncations, byte-level mutations (bit flips, interesting bytes, insertions,
deletions, duplicated or spliced chunks, overwritten varuints) and
structure-aware mutations (a valid update is parsed, one field of one struct
or of the delete set is changed, and the result re-encoded) of valid updates
produced by pycrdt from random editing sessions (maps, arrays, text with
formatting, embeds, non-ASCII and emoji, nested types, XML, subdocuments,
several clients that sync at random points).  Each input is paired with a
"prior" document state (empty, or a snapshot of one of the replicas).

Inputs run in worker subprocesses (``--workers``, each taking batches of
``--batch`` indexes).  A worker prints ``S <index>`` before it hands an input
to pycrdt, so when a worker dies (SIGSEGV, abort) the parent knows the input
that killed it; it regenerates it from ``(seed, index)``, records it and
starts a new worker after it.  A worker silent for ``--hang-timeout``
seconds is killed and its input recorded as a hang.

For each input the *target* runs:

``yupdate``
    ``crdtsync.format.yupdate.validate_update(data, known_state=...)``; if it
    accepts, the update is applied to a ``pycrdt.Doc`` holding the prior
    state, then the document is read back (``get_update``, ``get_state``, the
    known roots' ``to_py``).  A ``PanicException`` there is a failure of OUR
    validator (``panics-after-accept``), and so is a dead worker.
``doc``
    ``crdtsync.Doc().import_update(data)`` when the model layer provides it
    (it is expected to validate itself and raise ``InvalidUpdateError``).

Both targets also check that an accepted update leaves a document whose own
export is still a valid update (``corrupt-after-accept`` otherwise): yrs can
integrate an update without any error and still corrupt the document (a
deletion between the two UTF-16 units of an emoji made it delete another
character, and every later replica refused the room's export; rule S7).

With the Rust checker, the ``doc`` target then compares the index's map
queries, which a lazily loaded document answers from before the engine has
the history (``NativeChecker.map_entries`` / ``map_size``, the parse's
``any_string``; "Hydration" in ``docs/TREE.md``), with the engine: the live
keys of every root map (the registry, the roots the document lists, the roots
the engine and the update name) and of the nested Y.Maps reached from them,
a bounded number per input (``index-mismatch-after-accept`` otherwise); one
input in four also saves the document with a tree and compares the index of
its (lazy) ``Doc.load``, before hydration, with the engine.

``--scenario gc`` (either target) deletes 1-3 nested types of the prior
document in local transactions before the input arrives (yrs garbage-collects
their contents; the state vector does not move), and half of the inputs are
crafted items whose origins, right origins and parents are random items of the
prior (often GC'd ones), with every content class.  The ``yupdate`` target
then records the local diff with ``DocIndex.record_diff`` as crdtsync.Doc is
meant to; the ``doc`` target also reads the raw roots back.

``--apply-rejected`` also feeds rejected inputs to pycrdt (discovery mode):
the report then tells, for each rejection reason, how many of those inputs
would have panicked pycrdt, i.e. which rule prevents which panic class.

Failing inputs are saved to ``--out`` (default ``tests/fixtures/crashers/``) as
``fuzz-<kind>-<seed>-<index>.bin`` (plus ``.prior`` when the prior state
is not empty).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pickle
import random
import re
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CRASHERS = REPO / "tests" / "fixtures" / "crashers"

# --------------------------------------------------------------------------
# Valid documents
# --------------------------------------------------------------------------

_ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz  ",
    "àéîõüçñßøå",
    "日本語中文한국어",
    "😀🎉👍🏽🚀🧪",
    "e\u0301a\u0308",  # combining marks
    '"\\{}[]<>\n\t',
]


def random_text(rng: random.Random, max_len: int = 8) -> str:
    """A short string mixing ASCII, Latin-1, CJK, emoji and combining marks."""
    alphabet = rng.choice(_ALPHABETS) if rng.random() < 0.5 else "".join(_ALPHABETS)
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_len)))


def random_any(rng: random.Random, depth: int = 0) -> Any:
    """A random Any-compatible value (None, bool, number, str, bytes, list, dict)."""
    r = rng.random()
    if depth < 3 and r < 0.12:
        return [random_any(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and r < 0.24:
        return {random_text(rng, 4): random_any(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    choice = rng.randrange(9)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.randint(-(2**31), 2**31)
    if choice == 3:
        return rng.randint(-(2**53), 2**53)
    if choice == 4:
        return rng.uniform(-1e9, 1e9)
    if choice == 5:
        return rng.choice(
            [0.5, -0.0, 1e300, float("inf"), 3.4028234663852886e38, 1.401298464324817e-45]
        )
    if choice == 6:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 6)))
    return random_text(rng)


def _containers(doc: Any, pycrdt: Any) -> list[Any]:
    """Every shared type of the document reachable from the known roots."""
    roots = [
        doc.get("m", type=pycrdt.Map),
        doc.get("a", type=pycrdt.Array),
        doc.get("t", type=pycrdt.Text),
        doc.get("x", type=pycrdt.XmlFragment),
    ]
    out: list[Any] = []
    todo = list(roots)
    while todo and len(out) < 64:
        c = todo.pop()
        out.append(c)
        try:
            if isinstance(c, pycrdt.Map):
                # Map iteration order is a Rust HashMap's: sort for determinism.
                todo.extend(
                    c[k]
                    for k in sorted(c.keys())
                    if isinstance(c[k], (pycrdt.Map, pycrdt.Array, pycrdt.Text))
                )
            elif isinstance(c, pycrdt.Array):
                todo.extend(v for v in c if isinstance(v, (pycrdt.Map, pycrdt.Array, pycrdt.Text)))
            elif isinstance(c, (pycrdt.XmlFragment, pycrdt.XmlElement)):
                todo.extend(c.children)
        except Exception:
            pass
    return out


def random_edit(rng: random.Random, doc: Any, pycrdt: Any) -> None:
    """Performs one random local edit on ``doc``."""
    c = rng.choice(_containers(doc, pycrdt))
    r = rng.random()
    if isinstance(c, pycrdt.Map):
        keys = sorted(c.keys())
        if keys and r < 0.2:
            del c[rng.choice(keys)]
            return
        key = rng.choice(keys) if keys and r < 0.4 else random_text(rng, 3)
        r2 = rng.random()
        if r2 < 0.1:
            c[key] = pycrdt.Map({random_text(rng, 3): random_any(rng)})
        elif r2 < 0.18:
            c[key] = pycrdt.Array([random_any(rng) for _ in range(rng.randint(0, 3))])
        elif r2 < 0.26:
            c[key] = pycrdt.Text(random_text(rng))
        elif r2 < 0.28:
            c[key] = pycrdt.Doc(guid=f"sub-{rng.randrange(10**9)}")
        else:
            c[key] = random_any(rng)
    elif isinstance(c, pycrdt.Array):
        n = len(c)
        if n and r < 0.25:
            i = rng.randrange(n)
            del c[i : min(n, i + rng.randint(1, 3))]
            return
        i = rng.randint(0, n)
        r2 = rng.random()
        if r2 < 0.08:
            c.insert(i, pycrdt.Map({"k": random_any(rng)}))
        elif r2 < 0.14:
            c.insert(i, pycrdt.Text(random_text(rng)))
        elif r2 < 0.2:
            c.insert(i, pycrdt.Array([random_any(rng)]))
        else:
            c[i:i] = [random_any(rng) for _ in range(rng.randint(1, 4))]
    elif isinstance(c, (pycrdt.Text, pycrdt.XmlText)):
        offs = _unit_offsets(c)
        n = len(offs) - 1
        if n and r < 0.3:
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 5))
            del c[offs[i] : offs[j]]
            return
        i = offs[rng.randint(0, n)]
        if isinstance(c, pycrdt.Text) and r < 0.4 and n:
            a = rng.randrange(n)
            b = min(n, a + rng.randint(1, 4))
            c.format(
                offs[a],
                offs[b],
                {rng.choice(["bold", "i", "href"]): rng.choice([True, None, "x", 3])},
            )
        elif isinstance(c, pycrdt.Text) and r < 0.45:
            c.insert_embed(i, {"img": random_text(rng, 3)})
        elif r < 0.6:
            c.insert(i, random_text(rng), {"bold": True})
        else:
            c.insert(i, random_text(rng))
    else:  # XmlFragment / XmlElement
        kids = list(c.children)
        if kids and r < 0.2:
            del c.children[rng.randrange(len(kids))]
        elif isinstance(c, pycrdt.XmlElement) and r < 0.4:
            c.attributes[random_text(rng, 3)] = random_text(rng, 4)
        elif r < 0.7:
            c.children.insert(
                rng.randint(0, len(kids)),
                pycrdt.XmlElement(
                    rng.choice(["p", "div", "span"]),
                    {"a": random_text(rng, 2)},
                    [pycrdt.XmlText(random_text(rng))],
                ),
            )
        else:
            c.children.insert(rng.randint(0, len(kids)), pycrdt.XmlText(random_text(rng)))


def _unit_offsets(c: Any) -> list[int]:
    """pycrdt index (UTF-8 bytes, 1 per embed) at each character/embed boundary."""
    offs = [0]
    for chunk, _attrs in c.diff():
        if isinstance(chunk, str):
            for ch in chunk:
                offs.append(offs[-1] + len(ch.encode()))
        else:
            offs.append(offs[-1] + 1)
    return offs


@dataclass
class Sample:
    """A valid update and a document state it can be applied to."""

    prior: bytes
    update: bytes


def random_session(rng: random.Random, n_ops: int | None = None) -> list[Sample]:
    """Runs a random multi-client editing session; returns valid (prior, update) pairs."""
    import pycrdt

    n_clients = rng.randint(1, 3)
    docs = [
        pycrdt.Doc(
            client_id=rng.randrange(1, 2**32) if rng.random() < 0.8 else rng.randrange(1, 2**53)
        )
        for _ in range(n_clients)
    ]
    # Per doc: (state before the transaction, update of the transaction).
    incremental: list[list[tuple[bytes, bytes]]] = [[] for _ in docs]
    before: list[bytes] = [b"" for _ in docs]
    subs = []
    for i, d in enumerate(docs):
        subs.append(d.observe(lambda e, i=i: incremental[i].append((before[i], e.update))))
    snapshots: list[bytes] = [b""]
    n_ops = rng.randint(1, 40) if n_ops is None else n_ops
    for _ in range(n_ops):
        i = rng.randrange(len(docs))
        d = docs[i]
        before[i] = d.get_update()
        with d.transaction():
            for _k in range(rng.randint(1, 3)):
                random_edit(rng, d, pycrdt)
        if rng.random() < 0.25 and n_clients > 1:
            a, b = rng.sample(range(len(docs)), 2)
            before[b] = docs[b].get_update()
            docs[b].apply_update(docs[a].get_update(docs[b].get_state()))
        if rng.random() < 0.2:
            snapshots.append(rng.choice(docs).get_update())
    samples: list[Sample] = []
    for d, inc in zip(docs, incremental, strict=False):
        full = d.get_update()
        prior = rng.choice(snapshots)
        samples.append(Sample(b"", full))
        samples.append(Sample(prior, full))
        if prior:
            tmp = pycrdt.Doc()
            tmp.apply_update(prior)
            samples.append(Sample(prior, d.get_update(tmp.get_state())))
        for pre, u in rng.sample(inc, min(4, len(inc))):
            samples.append(Sample(pre, u))
        if len(inc) >= 2:
            samples.append(Sample(b"", pycrdt.merge_updates(*(u for _, u in rng.sample(inc, 2)))))
    return samples


def build_corpus(seed: int, n_sessions: int = 60) -> list[Sample]:
    """Deterministic corpus of valid samples for a seed."""
    rng = random.Random(f"corpus:{seed}")
    out: list[Sample] = []
    for _ in range(n_sessions):
        out.extend(random_session(rng))
    return out


# --------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------

_INTERESTING = [
    0,
    1,
    2,
    3,
    7,
    10,
    0x3F,
    0x7F,
    0x80,
    0xFF,
    0x100,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53 - 1,
    2**53,
    2**63,
    2**64 - 1,
]


def _varuint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def mutate_bytes(rng: random.Random, data: bytes, other: bytes) -> bytes:
    """One to three byte-level mutations."""
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(9)
        n = len(buf)
        if n == 0:
            buf.extend(rng.randbytes(rng.randint(1, 8)))
            continue
        i = rng.randrange(n)
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i] = rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 2:
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            del buf[i : i + rng.randint(1, 8)]
        elif op == 4:
            j = min(n, i + rng.randint(1, 32))
            k = rng.randint(0, n)
            buf[k:k] = buf[i:j]
        elif op == 5 and other:
            a = rng.randrange(len(other))
            b = min(len(other), a + rng.randint(1, 64))
            buf[i : i + rng.randint(0, 64)] = other[a:b]
        elif op == 6:
            del buf[i:]
        elif op == 7:
            # Overwrite what may be a varuint with an interesting value.
            j = i
            while j < n and buf[j] & 0x80:
                j += 1
            buf[i : j + 1] = _varuint(rng.choice(_INTERESTING))
        else:
            buf[i] = (buf[i] + rng.choice([-1, 1])) & 0xFF
    return bytes(buf)


def mutate_struct(rng: random.Random, data: bytes, prior: bytes) -> bytes | None:
    """A structure-aware mutation: parse, change one field, re-encode."""
    from crdtsync.format import yupdate as y

    try:
        p = y.parse_update(data)
    except Exception:
        return None
    structs = list(p.structs())
    ids: list[tuple[int, int]] = [(s.client, s.clock + rng.randrange(s.length)) for s in structs]
    if prior:
        try:
            pp = y.parse_update(prior)
            ids.extend((s.client, s.clock) for s in pp.structs())
        except Exception:
            pass

    def some_id() -> tuple[int, int]:
        if ids and rng.random() < 0.85:
            c, k = rng.choice(ids)
            return c, max(0, k + rng.choice([0, 0, 0, -1, 1, 2, 100]))
        return rng.choice([1, 2, 3, 2**32 - 1]), rng.choice(_INTERESTING[:12])

    op = rng.randrange(16)
    if not structs:
        op = 15
    s = rng.choice(structs) if structs else None
    if op == 0 and s is not None:  # shift the first clock of a client block
        blk = p.clients[s.client]
        blk[0].clock = max(0, blk[0].clock + rng.choice([-3, -1, 1, 2, 5, 1000]))
    elif op == 1 and s is not None and s.is_item:
        s.origin = some_id() if rng.random() < 0.9 else None
        s.info = (s.info | 0x80) if s.origin else (s.info & ~0x80)
    elif op == 2 and s is not None and s.is_item:
        s.right_origin = some_id() if rng.random() < 0.9 else None
        s.info = (s.info | 0x40) if s.right_origin else (s.info & ~0x40)
    elif op == 3 and s is not None and s.is_item:  # force explicit parent info
        s.info &= ~0xC0
        s.origin = s.right_origin = None
        s.parent = some_id() if rng.random() < 0.6 else rng.choice(["m", "a", "t", "x", "zz"])
        if rng.random() < 0.4:
            s.info |= 0x20
            s.parent_sub = s.parent_sub or random_text(rng, 3)
        elif not s.info & 0x20:
            s.parent_sub = None
        elif s.parent_sub is None:
            s.parent_sub = "k"
    elif op == 4 and s is not None:  # change a length
        if s.kind in (0, 1, 10):
            s.length = max(1, s.length + rng.choice([-1, 1, 5, 2**20]))
        else:
            return None
    elif op == 5 and s is not None and s.is_item:  # change the content kind
        new = rng.choice([1, 3, 4, 5, 6, 7, 8])
        s.kind = new
        s.info = (s.info & 0xE0) | new
        s.length = 1
        s.content = {
            1: None,
            3: b"\x00",
            4: "z",
            5: "{}",
            6: y.FormatContent("bold", "true"),
            7: y.TypeContent(rng.randrange(7), None),
            8: y.AnyContent(1, b"\x7e"),
        }[new]
        if new == 7 and s.content.type_ref in (3, 5):  # type: ignore[union-attr]
            s.content = y.TypeContent(s.content.type_ref, "p")  # type: ignore[union-attr]
    elif op == 6 and s is not None:  # GC <-> Skip <-> Deleted
        new = rng.choice([0, 1, 10])
        s.kind = new
        s.info = new if new != 1 else ((s.info & 0xE0) | 1 if s.is_item else 1)
        if new == 1 and s.info == 1:
            s.parent = "m"
        s.content = None
    elif op == 7 and s is not None:  # drop a struct (later clocks shift)
        blk = p.clients[s.client]
        if len(blk) > 1:
            idx = blk.index(s)
            first_clock = blk[0].clock
            del blk[idx]
            blk[0].clock = first_clock
    elif op == 8 and s is not None:  # swap two structs of a block
        blk = p.clients[s.client]
        if len(blk) > 1:
            i, j = rng.sample(range(len(blk)), 2)
            first_clock = blk[0].clock
            blk[i], blk[j] = blk[j], blk[i]
            blk[0].clock = first_clock
    elif op == 9 and s is not None:  # move a block to another client id
        blk = p.clients.pop(s.client)
        new_client = some_id()[0] if rng.random() < 0.7 else rng.randrange(1, 10)
        if new_client in p.clients:
            return None
        p.clients[new_client] = blk
    elif op == 10 and s is not None:  # duplicate a block under another client
        new_client = rng.randrange(1, 2**32)
        blk = p.clients[s.client]
        import copy

        p.clients[new_client] = [copy.copy(x) for x in blk]
    elif op == 11 and s is not None and s.kind == 7:  # change the type ref
        s.content = y.TypeContent(rng.randrange(7), rng.choice([None, "p"]))
        tr = s.content.type_ref
        if tr in (3, 5) and s.content.name is None:
            s.content = y.TypeContent(tr, "p")
        if tr not in (3, 5):
            s.content = y.TypeContent(tr, None)
    elif op == 12 and s is not None and s.kind == 4:  # change string content (length changes)
        assert isinstance(s.content, str)
        s.content = rng.choice(["", "x", "😀", s.content + "ab", s.content[:1], "é😀"])
    elif op == 13 and s is not None and s.kind == 8:  # change Any count
        assert isinstance(s.content, y.AnyContent)
        if rng.random() < 0.7:  # one more value, still consistent
            s.content = y.AnyContent(s.content.n + 1, s.content.raw + b"\x7e")
            s.length += 1
        else:  # a count that disagrees with the values
            s.content = y.AnyContent(s.content.n + rng.choice([-1, 1]), s.content.raw)
    else:  # delete set
        client, clock = some_id()
        ranges = p.delete_set.setdefault(client, [])
        r = rng.random()
        if r < 0.4 or not ranges:
            ranges.append(
                (
                    clock,
                    rng.choice([1, 1, 2, 5, 1000, 2**31 - 1 - clock if clock < 2**31 - 1 else 1]),
                )
            )
            if rng.random() < 0.7:
                ranges.sort()
        elif r < 0.7:
            i = rng.randrange(len(ranges))
            c0, l0 = ranges[i]
            ranges[i] = (max(0, c0 + rng.choice([-1, 1, 3])), max(1, l0 + rng.choice([-1, 1, 3])))
        else:
            rng.shuffle(ranges)
    try:
        return y.encode_update(p)
    except Exception:
        return None


# --------------------------------------------------------------------------
# Scenario "gc": nested types deleted (and garbage-collected) before the input
# --------------------------------------------------------------------------

#: ``--scenario``: "" (plain) or "gc" (the target deletes nested types of the
#: prior document locally before the input arrives, and half of the inputs are
#: crafted to reference the items yrs has garbage-collected).
SCENARIO: list[str] = [""]
#: (seed, index) of the input being run, for the deterministic deletions.
_CURRENT: list[tuple[int, int]] = [(0, 0)]


def _nested_slots(doc: Any, pycrdt: Any) -> list[tuple[Any, Any]]:
    """(parent, key or index) of every nested shared type under the known roots."""
    shared = (pycrdt.Map, pycrdt.Array, pycrdt.Text)
    slots: list[tuple[Any, Any]] = []
    for c in _containers(doc, pycrdt):
        try:
            if isinstance(c, pycrdt.Map):
                slots.extend((c, k) for k in sorted(c.keys()) if isinstance(c[k], shared))
            elif isinstance(c, pycrdt.Array):
                slots.extend((c, i) for i, v in enumerate(c) if isinstance(v, shared))
        except Exception:  # XML nodes and the like: not ours to delete here
            continue
    return slots


def delete_nested(rng: random.Random, doc: Any, pycrdt: Any) -> int:
    """Deletes 1-3 nested types (sometimes with text around them) in local transactions.

    Local deletions do not move the state vector: this is what makes the
    receiver's index miss them unless it records delete sets.
    """
    done = 0
    for _ in range(rng.randint(1, 3)):
        slots = _nested_slots(doc, pycrdt)
        if not slots:
            break
        parent, key = rng.choice(slots)
        with doc.transaction():
            del parent[key]
            if rng.random() < 0.3:
                text = doc.get("t", type=pycrdt.Text)
                if len(text):
                    # On a character boundary: an offset inside one corrupts the
                    # text in yrs 0.28 or panics it (tests/model/test_engine_panic.py).
                    offs = _unit_offsets(text)
                    del text[0 : offs[rng.randint(1, len(offs) - 1)]]
        done += 1
    return done


def craft_gc_input(rng: random.Random, prior: bytes) -> bytes | None:
    """1-4 items of a new client whose neighbours/parents are random items of ``prior``.

    Origins, right origins and explicit parents are drawn from the items of the
    prior (many of which the target deletes, so yrs has GC'd them), from type
    items and from the crafted items themselves; contents cover every class.
    """
    from crdtsync.format import yupdate as y

    try:
        pp = y.parse_update(prior)
    except Exception:
        return None
    items = [s for s in pp.structs() if s.kind != y.STRUCT_SKIP]
    if not items:
        return None
    ids = [(s.client, s.clock + rng.randrange(s.length)) for s in items]
    types = [(s.client, s.clock) for s in items if s.kind == y.CONTENT_TYPE]
    # Items inside nested types (the ones the target's deletions GC) and the rest.
    index = y.DocIndex(ROOT_TYPES)
    try:
        index.record(pp)
    except Exception:
        return None
    nested: list[tuple[int, int]] = []
    for c, k in ids:
        hit = index.lookup(c, k)
        if hit is not None and hit[1].where is not None and isinstance(hit[1].where.key, tuple):
            nested.append((c, k))
    client = rng.randrange(1, 2**32)
    ds: dict[int, list[tuple[int, int]]] = {}
    if types and rng.random() < 0.3:
        t = rng.choice(types)
        ds[t[0]] = [(t[1], 1)]
    structs: list[Any] = []
    clock = 0
    for _ in range(rng.randint(1, 4)):
        pool = ids + [(client, k) for k in range(clock)]
        kind = rng.choice([4, 4, 4, 8, 8, 3, 5, 6, 7, 1])
        content: Any
        length = 1
        if kind == 4:
            content = rng.choice(["ééé", "😀", "ab", "日本"])
            length = len(content.encode("utf-16-le")) // 2
        elif kind == 8:
            content = y.AnyContent(1, b"\x7d\x05")
        elif kind == 3:
            content = b"\x01\x02"
        elif kind == 5:
            content = '{"e":1}'
        elif kind == 6:
            content = y.FormatContent("bold", "true")
        elif kind == 7:
            content = y.TypeContent(rng.choice([0, 1, 2]), None)
        else:
            content, length = None, rng.randint(1, 3)
        st = y.Struct(client, clock, length, kind, kind, content=content)
        parents = types + [(client, x.clock) for x in structs if x.kind == 7]
        r = rng.random()
        if r < 0.25 and parents:
            st.parent = rng.choice(parents)
        elif r < 0.3:
            st.parent = rng.choice(["m", "a", "t"])
        else:
            if rng.random() < 0.85:
                st.origin = rng.choice(nested if nested and rng.random() < 0.7 else pool)
                st.info |= y.HAS_ORIGIN
            if rng.random() < 0.7 or st.origin is None:
                st.right_origin = rng.choice(nested if nested and rng.random() < 0.3 else pool)
                st.info |= y.HAS_RIGHT_ORIGIN
        if st.parent is not None and rng.random() < 0.3:
            st.parent_sub = rng.choice(["k", "x"])
            st.info |= y.HAS_PARENT_SUB
        structs.append(st)
        clock += length
    try:
        return y.encode_update(y.ParsedUpdate({client: structs}, ds))
    except Exception:
        return None


def make_input(seed: int, index: int, corpus: Sequence[Sample]) -> tuple[bytes, bytes, str]:
    """Deterministic input number ``index``: returns (prior, data, how)."""
    rng = random.Random(f"{seed}:{index}")
    sample = rng.choice(corpus)
    if SCENARIO[0] == "gc" and sample.prior and rng.random() < 0.5:
        crafted = craft_gc_input(rng, sample.prior)
        if crafted is not None:
            return sample.prior, crafted, "gc-crafted"
    other = rng.choice(corpus).update
    r = rng.random()
    if r < 0.04:
        return sample.prior, rng.randbytes(rng.randint(0, 64)), "random"
    if r < 0.08:
        return sample.prior, sample.update[: rng.randrange(max(1, len(sample.update)))], "truncate"
    if r < 0.10:
        return sample.prior, sample.update, "valid"
    if r < 0.5:
        return sample.prior, mutate_bytes(rng, sample.update, other), "bytes"
    for _ in range(3):
        out = mutate_struct(rng, sample.update, sample.prior)
        if out is not None:
            if rng.random() < 0.15:
                out = mutate_bytes(rng, out, other)
            return sample.prior, out, "struct"
    return sample.prior, mutate_bytes(rng, sample.update, other), "bytes"


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------

_LEAKED: list[Any] = []
_KNOWN_ROOTS = {"m": "Map", "a": "Array", "t": "Text", "x": "XmlFragment"}
#: The fuzzed documents declare these roots (read back with these types).
ROOT_TYPES = {"m": 1, "a": 0, "t": 2, "x": 4}


def _read_back(doc: Any, pycrdt: Any) -> None:
    """Exercises the document after an update: encode it and read the known roots."""
    doc.get_update()
    doc.get_state()
    for name, tname in _KNOWN_ROOTS.items():
        root = doc.get(name, type=getattr(pycrdt, tname))
        if tname in ("Map", "Array"):
            try:
                root.to_py()
            except ValueError as exc:
                # pycrdt cannot convert XML nodes nested in maps/arrays (by
                # design, also for its own documents): read them as strings.
                if "has no Python equivalent" not in str(exc):
                    raise
                for value in root.values() if tname == "Map" else root:
                    str(value)
        else:
            str(root)


def _export_problem(export: bytes, root_types: dict[str, int] | None = None) -> str | None:
    """Why a document's own full export is not a valid update (None: it is).

    ``root_types`` are the roots the receiving document declared (the check
    must know no more and no less than it: an undeclared root takes the class
    of the first content it gets); the export is checked again as a newcomer
    declaring no roots would.
    """
    from crdtsync.errors import InvalidUpdateError
    from crdtsync.format import yupdate as y

    declared = ROOT_TYPES if root_types is None else root_types
    # The replica itself (its declared roots), and a newcomer that declares
    # none and tells the roots' kinds from the state (rule S11 keeps both alike).
    for who, roots in (("", declared), (" by a newcomer", {})):
        try:
            y.validate_update(export, index=y.DocIndex(roots))
        except InvalidUpdateError as exc:
            return f"export refused{who}: " + _reason(str(exc))
    return None


def _make_doc(prior: bytes) -> Any:
    import pycrdt

    doc = pycrdt.Doc(client_id=987654321)
    if prior:
        doc.apply_update(prior)
    return doc


def _state_of(doc: Any) -> dict[int, int]:
    from crdtsync.format import yupdate as y

    sv = doc.get_state()
    # State vector: varuint n, n x (varuint client, varuint clock).
    pos = 0
    n, pos = y._read_varuint(sv, pos, 32, "sv")
    out = {}
    for _ in range(n):
        c, pos = y._read_varuint(sv, pos, 64, "sv")
        k, pos = y._read_varuint(sv, pos, 32, "sv")
        out[c] = k
    return out


def target_yupdate(
    prior: bytes, data: bytes, apply_rejected: bool, announce: Callable[[bool], None]
) -> tuple[str, str]:
    """Runs validate_update, then pycrdt.  Returns (verdict, reason)."""
    import pycrdt

    from crdtsync.errors import InvalidUpdateError
    from crdtsync.format import yupdate as y

    doc = _make_doc(prior)
    index = y.DocIndex(ROOT_TYPES)
    if prior:
        index.record(y.validate_update(prior, index=index))
    if SCENARIO[0] == "gc":
        delete_nested(random.Random(f"del:{_CURRENT[0]}"), doc, pycrdt)
        # What crdtsync.Doc does before validating: record the local diff,
        # which carries the whole delete set (the state vector has not moved).
        sv = y._varuint_bytes(len(index.state)) + b"".join(
            y._varuint_bytes(c) + y._varuint_bytes(k) for c, k in index.state.items()
        )
        index.record_diff(doc.get_update(sv))
    try:
        y.validate_update(data, index=index)
        accepted = True
        reason = ""
    except InvalidUpdateError as exc:
        accepted = False
        reason = _reason(str(exc))
    if not accepted and not apply_rejected:
        return "rejected", reason
    announce(accepted)
    try:
        doc.apply_update(data)
        _read_back(doc, pycrdt)
        outcome = "ok"
    except Exception as exc:  # pycrdt refusing cleanly: no panic, but see below
        outcome = "error: " + _reason(f"{type(exc).__name__}: {exc}")
    except BaseException as exc:  # PanicException derives from BaseException
        if type(exc).__name__ != "PanicException":
            raise
        outcome = "panic:" + _reason(str(exc))
        # A document left by a panic may loop forever when dropped: keep it.
        _LEAKED.append(doc)
    if accepted:
        if outcome.startswith("panic"):
            return "panic-after-accept", outcome
        if outcome.startswith("error"):
            # pycrdt refused what we accepted: harmless in itself, but it means
            # yrs read the bytes differently from us (or a rule is missing).
            return "engine-error-after-accept", outcome
        problem = _export_problem(doc.get_update())
        if problem is not None:
            return "corrupt-after-accept", problem
        return "accepted", outcome
    return "rejected", reason + (" => " + outcome if outcome.startswith("panic") else "")


#: Bounds of the index-vs-engine map check per input (maps walked, keys compared).
_MAP_CHECK_MAPS = 64
_MAP_CHECK_KEYS = 2048
#: One input in this many also checks the index of a lazy load of the document's save.
_MAP_CHECK_LOAD_EVERY = 4
#: What the map check compared (reported as ``map_check`` in the summary, so a
#: run shows the check ran on non-empty maps).
_MAP_STATS: collections.Counter[str] = collections.Counter()


def _update_root_names(data: bytes) -> set[str]:
    """Root names the structs of a v1 update name as their parent (none if it does not parse)."""
    from crdtsync.format import yupdate as y

    try:
        return {s.parent for s in y.parse_update(data).structs() if isinstance(s.parent, str)}
    except Exception:
        return set()


def _index_map_problem(doc: Any, data: bytes) -> str | None:
    """Where the Rust index's map queries disagree with the engine (None: nowhere).

    A lazily loaded document (``Doc.load``, "Hydration" in ``docs/TREE.md``)
    answers from ``NativeChecker.map_entries`` / ``map_size`` and the parse's
    ``any_string`` what the engine would once it applies the history: after an
    accepted import the index and the engine must agree on every root map
    (the registry, the roots the document lists, the roots the engine and the
    update name) and every nested Y.Map reached through map entries (at most
    ``_MAP_CHECK_MAPS`` maps and ``_MAP_CHECK_KEYS`` keys, in sorted order:
    deterministic). One input in ``_MAP_CHECK_LOAD_EVERY`` also saves the
    document with a tree (so that the save carries shapes) and compares the
    index of a lazy ``Doc.load`` of it, before hydration, with the engine.
    Only the native checker has these queries.
    """
    import pycrdt

    from crdtsync.format.checker import NativeChecker
    from crdtsync.model.doc import REGISTRY

    if not isinstance(getattr(doc, "_checker", None), NativeChecker):
        return None
    checker = doc.index()  # (records the local transactions of the gc scenario first)
    ydoc = doc._y
    names = {REGISTRY, *ydoc.keys(), *_update_root_names(data)}
    with contextlib.suppress(Exception):  # a refusal here is the other checks' business
        names.update(doc.roots())
    try:
        parsed = checker.parse(bytes(ydoc.get_update()), doc._whole)
    except Exception as exc:
        return f"the document's export does not parse: {type(exc).__name__}"
    roots = [(name, ydoc.get(name, type=pycrdt.Map)) for name in sorted(names)]
    problem = _map_walk(checker, roots, parsed, "")
    if problem is not None or _CURRENT[0][1] % _MAP_CHECK_LOAD_EVERY:
        return problem
    # The index a load builds (from the save's whole state, not import by import).
    try:
        doc.tree("__fuzz_shapes").create()
        saved = doc.save()
    except Exception:  # (a forged registry may refuse the tree: no load check then)
        _MAP_STATS["loads skipped"] += 1
        return None
    try:
        loaded = type(doc).load(saved, peer_id=98)
    except Exception as exc:
        return f"the document's save does not load: {type(exc).__name__}: {_reason(str(exc))}"
    _MAP_STATS["lazy loads" if loaded._lazy is not None else "eager loads"] += 1
    names.add("__fuzz_shapes")
    roots = [(name, ydoc.get(name, type=pycrdt.Map)) for name in sorted(names)]
    return _map_walk(loaded._checker, roots, None, " after a load")


def _map_walk(checker: Any, roots: list[tuple[str, Any]], parsed: Any, when: str) -> str | None:
    """Compares ``checker``'s map queries with the engine maps ``roots`` and their nested maps."""
    import pycrdt

    from crdtsync.format.yupdate import CONTENT_ANY, CONTENT_TYPE, TYPE_MAP

    todo: list[tuple[str | tuple[int, int], Any]] = list(roots)
    maps = keys = 0
    while todo and maps < _MAP_CHECK_MAPS and keys < _MAP_CHECK_KEYS:
        container, ymap = todo.pop(0)
        maps += 1
        where = ("root" if isinstance(container, str) else "nested map") + when
        entries = checker.map_entries(container) or {}
        live = set(ymap.keys())
        if set(entries) != live:
            side = "keys the engine lacks" if set(entries) - live else "keys missing"
            if set(entries) - live and live - set(entries):
                side = "different keys"
            return f"map_entries of a {where}: {side}"
        size = checker.map_size(container) or 0
        if size != len(ymap):
            return f"map_size of a {where} differs from the engine's len"
        _MAP_STATS[f"{'root' if isinstance(container, str) else 'nested'} maps{when}"] += 1
        _MAP_STATS[f"non-empty {'roots' if isinstance(container, str) else 'nested'}{when}"] += (
            bool(live)
        )
        for key in sorted(entries):
            keys += 1
            client, clock, kind, type_ref = entries[key]
            try:
                value = ymap[key]
            except Exception as exc:  # the index lists a key the engine cannot read
                return f"the engine cannot read an entry of a {where}: {type(exc).__name__}"
            if (kind == CONTENT_TYPE and type_ref == TYPE_MAP) != isinstance(value, pycrdt.Map):
                return f"map_entries of a {where}: an entry's kind differs from the engine's value"
            if isinstance(value, pycrdt.Map):
                todo.append(((client, clock), value))
            elif kind == CONTENT_ANY and parsed is not None:
                string = parsed.any_string(client, clock)
                if string is not None and string != value:
                    return f"any_string of an entry of a {where} differs from the engine's value"
                _MAP_STATS["any_string strings"] += string is not None
        _MAP_STATS["keys" + when] += len(entries)
    return None


def target_doc(
    prior: bytes, data: bytes, apply_rejected: bool, announce: Callable[[bool], None]
) -> tuple[str, str]:
    """Feeds the model layer: ``crdtsync.Doc`` must refuse or apply safely.

    Raw v1 bytes go to ``Doc.import_yjs_update`` when the model has it (its
    ``import_update`` takes crdtsync's own envelope), else to ``import_update``.
    Any exception other than ``InvalidUpdateError`` counts as a failure.
    """
    import crdtsync
    from crdtsync.errors import InvalidUpdateError

    doc_cls = getattr(crdtsync, "Doc", None)
    if doc_cls is None or not hasattr(doc_cls, "import_update"):
        raise SystemExit("crdtsync.Doc.import_update does not exist yet")
    doc = doc_cls()
    importer = getattr(doc, "import_yjs_update", None) or doc.import_update
    ydoc = getattr(doc, "_y", None)
    checker = getattr(doc, "_checker", None)
    if SCENARIO[0] == "gc" and checker is not None:
        # The raw roots are read back below with these types: declare them,
        # as an application reading them so would.
        for name, type_ref in ROOT_TYPES.items():
            checker.set_root_type(name, type_ref)
    if prior:
        # A prior the model refuses: fuzz against an empty document then.
        with contextlib.suppress(InvalidUpdateError):
            importer(prior)
    if SCENARIO[0] == "gc" and ydoc is not None:
        import pycrdt

        delete_nested(random.Random(f"del:{_CURRENT[0]}"), ydoc, pycrdt)
    announce(True)
    try:
        importer(data)
        if hasattr(doc, "to_py"):
            doc.to_py()
        if SCENARIO[0] == "gc" and ydoc is not None:
            import pycrdt

            _read_back(ydoc, pycrdt)  # the raw roots, where a misplaced item shows
        roots = dict(checker.snapshot()["root_types"]) if checker is not None else None
        problem = _export_problem(doc.export_yjs_update(), roots)
        if problem is not None:
            return "corrupt-after-accept", problem
        problem = _index_map_problem(doc, data)
        if problem is not None:
            return "index-mismatch-after-accept", problem
        return "accepted", ""
    except InvalidUpdateError as exc:
        return "rejected", _reason(str(exc))
    except Exception as exc:  # anything else leaks from the model layer
        return "panic-after-accept", f"{type(exc).__name__}: {_reason(str(exc))}"
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        _LEAKED.append(doc)
        return "panic-after-accept", "panic:" + _reason(str(exc))


TARGETS = {"yupdate": target_yupdate, "doc": target_doc}

_NUM = re.compile(r"\d+")


def _reason(msg: str) -> str:
    """Message without numbers, to group similar failures."""
    msg = msg.split("\n", maxsplit=1)[0]
    msg = re.sub(
        r"^malformed update at byte N: |^update exceeds a limit at byte N: ", "", _NUM.sub("N", msg)
    )
    return msg[:120]


# --------------------------------------------------------------------------
# Worker and parent
# --------------------------------------------------------------------------


def save_crasher(
    kind: str, seed: int, index: int, prior: bytes, data: bytes, out: Path = CRASHERS
) -> Path:
    """Writes a failing input (and its prior state) to ``out`` (``--out``)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fuzz-{kind}-{seed}-{index}.bin"
    path.write_bytes(data)
    if prior:
        (out / f"fuzz-{kind}-{seed}-{index}.prior").write_bytes(prior)
    return path


def _load_corpus(path: str) -> list[Sample]:
    with open(path, "rb") as fh:
        return [Sample(p, u) for p, u in pickle.load(fh)]


def worker_main(args: argparse.Namespace) -> None:
    """Runs indexes [start, stop) and prints one line per event to stdout."""
    corpus = _load_corpus(args.corpus_file)
    target = TARGETS[args.target]
    out = sys.stdout
    counts: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    inside = [False]
    saved: collections.Counter[str] = collections.Counter()

    def flush_counts() -> None:
        counts.update({"mapcheck:" + k: v for k, v in _MAP_STATS.items()})
        _MAP_STATS.clear()
        out.write("R " + json.dumps({"counts": counts, "reasons": reasons}) + "\n")
        counts.clear()
        reasons.clear()

    for index in range(args.start, args.stop):
        _CURRENT[0] = (args.seed, index)
        prior, data, how = make_input(args.seed, index, corpus)
        counts["how:" + how] += 1

        def announce(acc: bool, index: int = index) -> None:
            # Flush the counts first: if pycrdt kills us, nothing is lost.
            flush_counts()
            out.write(f"S {index} {int(acc)}\n")
            out.flush()
            inside[0] = True

        verdict, reason = target(prior, data, args.apply_rejected, announce)
        if inside[0]:  # tell the parent pycrdt is done with this input
            out.write("D\n")
            inside[0] = False
        counts[verdict] += 1
        if verdict != "accepted":
            reasons[f"{verdict}: {reason}"] += 1
            # (reasons is emptied at each flush: the first inputs of each kind
            # and reason are saved from this worker's own count)
            saved[f"{verdict}: {reason}"] += 1
        if verdict == "panic-after-accept":
            save_crasher("panic", args.seed, index, prior, data, args.out)
            out.write(f"P {index} {reason}\n")
        elif verdict == "engine-error-after-accept" and saved[f"{verdict}: {reason}"] <= 2:
            save_crasher("engine-error", args.seed, index, prior, data, args.out)
        elif verdict == "corrupt-after-accept" and saved[f"{verdict}: {reason}"] <= 2:
            save_crasher("corrupt", args.seed, index, prior, data, args.out)
        elif verdict == "index-mismatch-after-accept" and saved[f"{verdict}: {reason}"] <= 2:
            save_crasher("index-mismatch", args.seed, index, prior, data, args.out)
        elif args.apply_rejected and "=> panic" in reason and saved[f"{verdict}: {reason}"] <= 2:
            save_crasher("rejected-panic", args.seed, index, prior, data, args.out)
        if index % 200 == 0:  # heartbeat for the parent's stall detector
            out.write(f"H {index}\n")
            flush_counts()
        out.flush()
    flush_counts()


def _spawn(args: argparse.Namespace, start: int, stop: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--seed",
        str(args.seed),
        "--start",
        str(start),
        "--stop",
        str(stop),
        "--target",
        args.target,
        "--corpus-file",
        args.corpus_file,
        "--scenario",
        args.scenario,
        "--out",
        str(args.out),
    ]
    if args.apply_rejected:
        cmd.append("--apply-rejected")
    env = dict(os.environ, PYTHONFAULTHANDLER="")
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO
    )


def parent_main(args: argparse.Namespace) -> int:
    """Distributes batches to workers, restarts dead ones, aggregates counts."""
    t0 = time.time()
    # pycrdt encodes Any maps and delete sets in Rust HashMap order, which
    # changes from process to process: the corpus is built once here and
    # shared, so that the parent can regenerate any input of a dead worker.
    corpus = build_corpus(args.seed, args.sessions)
    fd, args.corpus_file = tempfile.mkstemp(prefix=f"fuzz_corpus_{args.seed}_", suffix=".pkl")
    with os.fdopen(fd, "wb") as fh:
        pickle.dump([(x.prior, x.update) for x in corpus], fh)
    try:
        return _parent_loop(args, corpus, t0)
    finally:
        os.unlink(args.corpus_file)


def _parent_loop(args: argparse.Namespace, corpus: list[Sample], t0: float) -> int:
    todo = collections.deque(
        (s, min(s + args.batch, args.count)) for s in range(args.start, args.count, args.batch)
    )
    running: dict[int, tuple[subprocess.Popen[bytes], int, int, list[int], float]] = {}
    counts: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    crashes: list[str] = []
    last_report = t0
    last_accepted: dict[int, bool] = {}
    inside: dict[int, bool] = {}  # fd -> the worker is inside pycrdt
    pending: dict[int, bytes] = {}  # fd -> incomplete line

    def record_death(start: int, stop: int, last: int, kind: str) -> None:
        prior, data, _ = make_input(args.seed, last, corpus)
        path = save_crasher(kind, args.seed, last, prior, data, args.out)
        crashes.append(f"{kind} at index {last}: {path.name}")
        print(f"[fuzz] worker died ({kind}) on input {last} -> {path}", flush=True)
        counts[kind] += 1
        if kind.startswith("rejected-"):
            counts["rejected"] += 1
        if last + 1 < stop:
            todo.appendleft((last + 1, stop))

    while todo or running:
        while todo and len(running) < args.workers:
            start, stop = todo.popleft()
            proc = _spawn(args, start, stop)
            assert proc.stdout is not None
            running[proc.stdout.fileno()] = (proc, start, stop, [start - 1], time.time())
            inside[proc.stdout.fileno()] = False
        ready, _, _ = select.select(list(running), [], [], 5.0)
        now = time.time()
        for fd in ready:
            proc, start, stop, last, _seen = running[fd]
            # Raw reads: a buffered readline() would leave lines in Python's
            # buffer where select() cannot see them (and the worker would
            # eventually block on a full pipe).
            chunk = os.read(fd, 1 << 16)
            if chunk:
                running[fd] = (proc, start, stop, last, now)
                pending[fd] = pending.get(fd, b"") + chunk
                *lines, pending[fd] = pending[fd].split(b"\n")
                for raw in lines:
                    line = raw.decode()
                    if line.startswith("S "):
                        idx, acc = line[2:].split()
                        last[0] = int(idx)
                        last_accepted[fd] = acc == "1"
                        inside[fd] = True
                    elif line.startswith("D"):
                        inside[fd] = False
                    elif line.startswith("H "):
                        last[0] = int(line[2:])
                    elif line.startswith("P "):
                        print(f"[fuzz] panic after accept: {line[2:].strip()}", flush=True)
                    elif line.startswith("R "):
                        rep = json.loads(line[2:])
                        counts.update(rep["counts"])
                        reasons.update(rep["reasons"])
                continue
            pending.pop(fd, None)
            proc.wait()
            del running[fd]
            if proc.returncode != 0 and not inside.get(fd):
                print(
                    f"[fuzz] worker for {start}..{stop} died outside pycrdt (rc={proc.returncode})",
                    flush=True,
                )
                return 2
            if proc.returncode != 0:
                kind = "crash" if proc.returncode < 0 else f"exit{proc.returncode}"
                if not last_accepted.get(fd, True):
                    kind = "rejected-" + kind  # discovery mode: a rejected input killed pycrdt
                if last[0] < start:
                    print(
                        f"[fuzz] worker for {start}..{stop} failed before any input "
                        f"(rc={proc.returncode})",
                        flush=True,
                    )
                    return 2
                record_death(start, stop, last[0], kind)
        for fd, (proc, start, stop, last, seen) in list(running.items()):
            if inside.get(fd) and now - seen > args.hang_timeout:
                kind = "hang" if last_accepted.pop(fd, True) else "rejected-hang"
                proc.kill()
                proc.wait()
                del running[fd]
                record_death(start, stop, max(last[0], start), kind)
            elif not inside.get(fd) and now - seen > max(300.0, 10 * args.hang_timeout):
                # Silent outside pycrdt: our own code is stuck (the input is
                # at or shortly after the last heartbeat).
                proc.kill()
                proc.wait()
                del running[fd]
                record_death(start, stop, max(last[0] + 1, start), "stall")
        if now - last_report > 60:
            last_report = now
            done = sum(v for k, v in counts.items() if k.startswith("how:"))
            print(f"[fuzz] {done}/{args.count} inputs in {now - t0:.0f}s", flush=True)
    inputs = sum(v for k, v in counts.items() if k.startswith("how:"))
    summary = {
        "inputs": inputs,
        "rejected": counts["rejected"],
        "accepted": counts["accepted"],
        "panics_after_accept": counts["panic-after-accept"],
        "engine_errors_after_accept": counts["engine-error-after-accept"],
        "corrupt_after_accept": counts["corrupt-after-accept"],
        "index_mismatches_after_accept": counts["index-mismatch-after-accept"],
        "crashes": counts["crash"]
        + counts["hang"]
        + sum(v for k, v in counts.items() if k.startswith("exit")),
        "rejected_inputs_that_crash_pycrdt": sum(
            v for k, v in counts.items() if k.startswith("rejected-")
        ),
        "seconds": round(time.time() - t0, 1),
        "by_generator": {k[4:]: v for k, v in counts.items() if k.startswith("how:")},
        "map_check": {k[9:]: v for k, v in counts.items() if k.startswith("mapcheck:")},
    }
    print(json.dumps(summary, indent=2))
    print("top reasons:")
    for reason, n in reasons.most_common(args.top):
        print(f"  {n:8d}  {reason}")
    for c in crashes:
        print("  " + c)
    bad = (
        summary["panics_after_accept"]
        + summary["crashes"]
        + summary["engine_errors_after_accept"]
        + summary["corrupt_after_accept"]
        + summary["index_mismatches_after_accept"]
    )
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=10_000, help="inputs per worker process")
    ap.add_argument("--target", choices=sorted(TARGETS), default="yupdate")
    ap.add_argument(
        "--sessions", type=int, default=60, help="random editing sessions in the corpus"
    )
    ap.add_argument(
        "--apply-rejected",
        action="store_true",
        help="discovery: also give rejected inputs to pycrdt",
    )
    ap.add_argument(
        "--scenario",
        choices=["", "gc"],
        default="",
        help="gc: delete nested types of the prior locally first, craft inputs into them",
    )
    ap.add_argument("--hang-timeout", type=float, default=120.0)
    ap.add_argument(
        "--out",
        type=Path,
        default=CRASHERS,
        help="where failing inputs go (point it outside the repository for long runs: "
        "an untracked file in tests/fixtures/crashers fails the fixture tests)",
    )
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--start", type=int, default=0, help="first input index (inputs --start..--count)"
    )
    ap.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--corpus-file", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    SCENARIO[0] = args.scenario
    if args.worker:
        worker_main(args)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
