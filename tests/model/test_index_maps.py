"""The Rust index's map queries against the engine, on random concurrent map edits.

A lazily loaded document (``Doc.load``, "Hydration" in ``docs/TREE.md``)
answers from ``NativeChecker.map_entries`` / ``map_size`` (and the parse's
``any_string`` for the root registry's strings) what the engine's maps would
hold once it applies the loaded history. Here several raw pycrdt replicas (as
Yjs clients) set, overwrite and delete keys of root maps, the root registry
and nested maps, delete nested maps that others still write into (yrs then
garbage-collects what lands there), and sync at random points; each local
transaction's update is then delivered to a fresh ``Doc`` in a random order
(two of them sometimes merged, some twice), so updates arrive before their
predecessors (held), deletions before the items they delete, and writes after
their parent map was deleted. After every import
the index must list exactly the engine's live keys, of every root map and of
every nested map reached through them. ``scripts/fuzz_updates.py --target
doc`` runs the same comparison on mutated and crafted updates.
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from helpers.native import require_native
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crdtsync import Doc
from crdtsync.format.checker import NativeChecker
from crdtsync.format.yupdate import CONTENT_ANY, CONTENT_TYPE, TYPE_MAP
from crdtsync.model.doc import REGISTRY

#: The replicas' root maps (the registry is a map root like the others).
ROOTS = ("m", "n", REGISTRY)
#: Few keys, so that replicas write the same ones concurrently.
KEYS = ("a", "b", "c")


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native()


def maps_of(doc: pycrdt.Doc) -> list[pycrdt.Map[Any]]:
    """The replica's root maps and the nested maps reachable from them, in a fixed order."""
    out: list[pycrdt.Map[Any]] = []
    todo: list[pycrdt.Map[Any]] = [doc.get(name, type=pycrdt.Map) for name in ROOTS]
    while todo:
        m = todo.pop(0)
        out.append(m)
        todo.extend(v for k in sorted(m.keys()) if isinstance(v := m[k], pycrdt.Map))
    return out


def index_differences(doc: Doc, seen: dict[str, int]) -> list[str]:
    """Where the index's map queries disagree with the engine of ``doc`` (empty: nowhere).

    ``seen`` counts the non-empty root and nested maps compared.
    """
    checker = doc.index()
    assert isinstance(checker, NativeChecker)
    return differences(checker, doc._y, checker.parse(bytes(doc._y.get_update()), doc._whole), seen)


def differences(
    checker: NativeChecker, ydoc: pycrdt.Doc, parsed: Any, seen: dict[str, int]
) -> list[str]:
    """Where ``checker``'s map queries disagree with the maps of ``ydoc``.

    ``parsed`` is ``ydoc``'s state parsed by the checker (``any_string`` is
    asked of it), or ``None``.
    """
    todo: list[tuple[str | tuple[int, int], pycrdt.Map[Any]]] = [
        (name, ydoc.get(name, type=pycrdt.Map)) for name in sorted({*ROOTS, *ydoc.keys()})
    ]
    out: list[str] = []
    while todo:
        container, ymap = todo.pop(0)
        entries = checker.map_entries(container) or {}
        engine = {k: ymap[k] for k in ymap}
        if engine:
            seen["root" if isinstance(container, str) else "nested"] += 1
        if set(entries) != set(engine):
            out.append(f"{container}: index keys {sorted(entries)}, engine {sorted(engine)}")
        if (checker.map_size(container) or 0) != len(engine):
            out.append(f"{container}: map_size {checker.map_size(container)}, len {len(engine)}")
        for key in sorted(set(entries) & set(engine)):
            client, clock, kind, type_ref = entries[key]
            value = engine[key]
            if (kind == CONTENT_TYPE and type_ref == TYPE_MAP) != isinstance(value, pycrdt.Map):
                out.append(f"{container}[{key!r}]: kind {kind}/{type_ref}, engine {value!r}")
            elif isinstance(value, pycrdt.Map):
                todo.append(((client, clock), value))
            elif kind == CONTENT_ANY and parsed is not None:
                string = parsed.any_string(client, clock)
                # Each entry is an item of its own here: a string value is found.
                if string != (value if isinstance(value, str) else None):
                    out.append(f"{container}[{key!r}]: any_string {string!r}, engine {value!r}")
    return out


# An operation: (what, replica, container choice, key, value); choices are taken
# modulo what exists when the operation runs, so that shrinking keeps them valid.
OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "set", "set", "map", "del", "del_map", "sync"]),
        st.integers(0, 2),
        st.integers(0, 15),
        st.sampled_from(KEYS),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=40,
)


def run_replicas(ops: list[tuple[str, int, int, str, int]]) -> list[bytes]:
    """Runs ``ops`` on three replicas; returns the update of each local transaction."""
    docs = [pycrdt.Doc(client_id=i + 1) for i in range(3)]
    updates: list[bytes] = []
    remote = [False]

    def keep(event: Any) -> None:
        if not remote[0]:
            updates.append(bytes(event.update))

    subs = [d.observe(keep) for d in docs]
    for what, r, choice, key, value in ops:
        d = docs[r]
        if what == "sync":
            other = docs[(r + 1 + choice % 2) % 3]
            remote[0] = True
            other.apply_update(d.get_update(other.get_state()))
            remote[0] = False
            continue
        maps = maps_of(d)
        target = maps[choice % len(maps)]
        if what in ("del", "del_map"):
            keys = sorted(target.keys())
            nested = [
                (m, k) for m in maps for k in sorted(m.keys()) if isinstance(m[k], pycrdt.Map)
            ]
            if what == "del_map" and nested:  # (what others write into it is GC'd here)
                m, k = nested[choice % len(nested)]
                del m[k]
            elif keys:
                del target[keys[choice % len(keys)]]
            continue
        if what == "map":
            target[key] = pycrdt.Map({KEYS[value % 3]: value} if value else {})
        else:
            target[key] = ["map", "text", "list", "tree", value, value * 1.5][value]
    for d, sub in zip(docs, subs, strict=True):
        d.unobserve(sub)
    return updates


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, order=st.randoms(use_true_random=False))
def test_map_queries_agree_with_the_engine_in_any_delivery_order(
    ops: list[tuple[str, int, int, str, int]], order: Any
) -> None:
    updates = run_replicas(ops)
    shuffled = list(updates)
    if len(shuffled) > 2 and order.random() < 0.3:
        # Two consecutive updates merged into one. (Not any two: a merge with
        # a gap, a Skip, is held whole, and stays held for good when the
        # update for the gap needs the merge's own first part.)
        i = order.randrange(len(shuffled) - 1)
        shuffled[i : i + 2] = [pycrdt.merge_updates(shuffled[i], shuffled[i + 1])]
    order.shuffle(shuffled)
    shuffled += order.sample(updates, min(2, len(updates)))  # (some arrive twice)
    doc = Doc(peer_id=99, native=True)
    seen = {"root": 0, "nested": 0, "held": 0}
    for update in shuffled:
        doc.import_yjs_update(update)
        seen["held"] += doc.pending
        assert index_differences(doc, seen) == []
    for what, n in seen.items():
        event(f"{what} {'> 0' if n else '= 0'}")  # (--hypothesis-show-statistics)
    assert doc.pending == 0  # (everything arrived: nothing is held any more)
    reference = pycrdt.Doc()  # (in causal order: yrs' own pending updates lose some)
    for update in updates:
        reference.apply_update(update)
    for name in ROOTS:
        assert (
            doc._y.get(name, type=pycrdt.Map).to_py()
            == reference.get(name, type=pycrdt.Map).to_py()
        )
    # The index a load builds, which a lazy load answers from (a tree makes
    # the save carry shapes: the load defers the engine): before hydration.
    doc.tree("shapes").create()
    loaded = Doc.load(doc.save(), peer_id=98)
    event(f"lazy load: {loaded._lazy is not None}")
    checker = loaded._checker
    assert isinstance(checker, NativeChecker)
    assert differences(checker, doc._y, None, seen) == []
