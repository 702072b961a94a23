"""Exhaustive small-scope model check of the movable tree (see proofs/TREE.md).

Part A -- the engine (``crdtsync.model.tree._TreeState``) against the specification,
under every arrival schedule.

    A *history* is a sequence of ``n`` operations in timestamp order. In scope
    ``moves(N, K)`` the first ``N`` operations create nodes ``1..N`` at the top
    level and the ``K`` others are moves ``(node, parent)`` with ``parent`` any
    of: the top level, the trash (a delete), or any node -- the node itself
    and its descendants included, so cycle-making moves are in. In scope
    ``general(C, n)`` every position may be a creation (under the top level,
    the trash or any node created anywhere in the history, later ones
    included) or a move, with ``C`` creations in all; moves may name nodes
    created later (operations arriving before what they depend on, or
    forged). Position keys alternate between two values, so that siblings also
    tie and are ordered by node id. Every history of the scope is enumerated;
    since timestamps order the history, that is every interleaving of the
    operations of any number of replicas.

    For every subset ``S`` of a history's operations:

    1. ``spec(S)`` -- an independent, direct transcription of the semantics
       (replay in timestamp order, skipping cycle-making moves and moves of
       or under nodes not created yet) -- is a forest: one parent per node,
       no cycle;
    2. ``E(S)``, the engine's state after receiving ``S`` in one batch from
       nothing, equals ``spec(S)``: parents, positions and child order, and
       passes the engine's own invariant check;
    3. for every non-empty ``B`` disjoint from ``S``:
       ``integrate(E(S), B) == E(S | B)``, whole internal state compared
       (parents, positions, children, undo log, clock);
    4. for every ``o`` in ``S``: ``integrate(E(S), {o}) == E(S)`` (duplicates).

    By induction on the schedule, 3 and 4 make every arrival schedule -- any
    order, any batching, any duplication -- end in ``E(all) == spec(all)``:
    each step leads from a canonical state to a canonical state. The
    schedules covered per history are the ordered set partitions of its
    operations (the Fubini number of ``n``), before duplicates.

Part C -- log truncation. For every history, every subset ``S`` and every
floor ``f`` (between any two operations, below all, above all): truncate the
log of ``E(S)`` below ``f`` (any floor: correctness may not depend on the
policy that picks it), then for every non-empty ``B`` disjoint from ``S``:

    5. if every operation of ``B`` is at or above ``f``,
       ``integrate(trunc_f(E(S)), B) == trunc_f(E(S | B))`` (whole state);
    6. otherwise ``integrate`` refuses the batch (``_Stale``) and changes
       nothing observable -- the binding then rebuilds ``E(S | B)`` from the
       document, which is exact by 2;
    7. a duplicate at or above ``f`` changes nothing; one below ``f`` is refused
       like 6 (a rebuild, never a wrong state).

Part B -- end to end with real documents: ``R`` replicas share ``N`` nodes
created by replica 1; each replica then makes ``M`` moves concurrently, every
possible choice of each (any live node, to the top level, to the trash or
under any other live node; moves its replica refuses -- cycles -- are not
operations). Each replica then receives the others' updates in every
interleaving (each writer's updates stay in order: the update validator
refuses a writer's clock gap), and so does a fresh observer. Every execution
must end in the same tree, and every state passes the deep invariant check;
the fresh observer's document, saved and loaded again (from its saved shape),
holds the same tree. Each scope runs twice: with the shipped truncation
policy, and with the log truncated after every operation (``WINDOW`` and
``HORIZON`` 0), where every late operation forces a rebuild.

Which state. The engine state exists twice: the pure-Python reference
``_TreeState`` and its Rust port (``crdtsync._native.TreeCore`` behind
``_NativeState``, what the library uses when the extension is built). Every
part runs on a chosen state (``--state python|native|both``; both by default
when the extension is built). The native states are made the way the library
makes them (``_NativeState``'s ``empty()``, ``integrate``, ``truncate_at``,
read back through ``mirror()`` and the core's reads); the Rust state cannot
be copied, so where the Python run copies ``E(S)`` to integrate ``B`` into it,
the native run builds ``E(S)`` again from nothing (one batch: the same calls,
the same state). On top of 1-7, the native run compares every ``E(S)`` (and
every truncated ``E(S)`` of Part C) with the Python state for the same
operations -- parents, children and keys, undo log, clocks, floor -- so a
disagreement is caught even where both satisfy the specification; every
other state it reaches is compared with such an ``E(S)``. Part B runs the
real stack with the tree bound on the chosen state, and with both, each move
combination's tree must be the same on the two.

Usage::

    python proofs/tree_model_check.py            # the bound reported in TREE.md, both states
    python proofs/tree_model_check.py --small    # the bound tests/proofs/test_tree_model.py runs
    python proofs/tree_model_check.py --scope moves 4 3   # one Part A scope
    python proofs/tree_model_check.py --truncation moves 3 2   # one Part C scope
    python proofs/tree_model_check.py --state native   # the Rust state only
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crdtsync import Doc, InvalidOperationError
from crdtsync.model import tree as tree_mod
from crdtsync.model.tree import ROOT, TRASH, _NativeState, _Stale, _TreeState

Op = tuple[int, str, str, str]
KEYS = ("a1", "a2")  # positions alternate: siblings also tie (ordered by node id)


def ts(i: int) -> int:
    """Timestamp of history position ``i`` (1-based): lamport i, writer 1."""
    return i << 64 | 1


def node(i: int) -> str:
    """Id of the node created at history position ``i``."""
    return f"1:{i}"


# -- the specification ----------------------------------------------------------------------


def spec(ops: Sequence[Op]) -> tuple[dict[str, str], dict[str, str]]:
    """The tree a set of operations defines: (parent of each node, position of each node).

    A direct transcription of the semantics, sharing no code with the engine:
    apply in timestamp order; skip an operation if its node does not exist yet
    and it is not the node's creation, if its parent is a node that does not
    exist yet, or if the parent is the node or one of its descendants.
    """
    parent: dict[str, str] = {}
    pos: dict[str, str] = {}
    for t, n, p, k in sorted(ops):
        if n not in parent:
            client, _, lamport = n.partition(":")
            if (int(lamport) << 64 | int(client)) != t:
                continue  # a move of a node not created yet
        if p not in (ROOT, TRASH):
            if p not in parent:
                continue  # under a node not created yet
            a, cycle = p, False
            while a not in (ROOT, TRASH):
                cycle = cycle or a == n
                a = parent[a]
            if cycle:
                continue
        parent[n] = p
        if p == TRASH:
            pos.pop(n, None)
        else:
            pos[n] = k
    return parent, pos


def assert_forest(parent: dict[str, str]) -> None:
    """One parent per node (a dict), every chain ends at the top level or the trash."""
    for n in parent:
        a, steps = n, 0
        while a not in (ROOT, TRASH):
            a = parent[a]
            steps += 1
            assert steps <= len(parent), f"cycle through {n}"


# -- engine helpers -------------------------------------------------------------------------

#: The states the check can run on: the pure-Python reference and the Rust port.
STATES = ("python", "native")
State = _TreeState | _NativeState
#: What :func:`state_of` returns: the whole internal state, as plain values.
Fingerprint = tuple[Any, ...]


class NativeMissing(Exception):
    """``--state native`` was asked for, but the Rust core is not in use."""


def native_class() -> Any:
    """``crdtsync._native.TreeCore``, as the library finds it.

    Raises:
        NativeMissing: the extension is not built (or ``CRDTSYNC_PURE_PYTHON`` is set).
    """
    cls = tree_mod._tree_core_class()
    if cls is None:
        raise NativeMissing(
            "the native state needs crdtsync._native, which is not in use here (not built, "
            "or CRDTSYNC_PURE_PYTHON is set): build it (pip install -e .) or use --state python"
        )
    return cls


def maker(kind: str) -> Callable[[], State]:
    """What makes a new empty state of ``kind``, as the library makes one (``_new_state``)."""
    if kind == "python":
        return _TreeState
    # The library's own path: a _NativeState around a TreeCore with the
    # current truncation policy; its empty() makes more of the same kind.
    return _NativeState(native_class()(tree_mod.WINDOW, tree_mod.HORIZON)).empty


def engine(ops: Sequence[Op], new: Callable[[], State] = _TreeState) -> State:
    """``E(S)``: the state after receiving ``ops`` in one batch from nothing."""
    st = new()
    st.integrate(list(ops))
    return st


def clone(st: State, ops: Sequence[Op], new: Callable[[], State] = _TreeState) -> State:
    """A copy of ``st``, which is ``E(ops)`` (not truncated), made by ``new``.

    A Python state is copied; the Rust state has no copy, so ``E(ops)`` is
    built again by the same calls (deterministic: the same state).
    """
    if isinstance(st, _NativeState):
        return engine(ops, new)
    c = _TreeState()
    c.parent = dict(st.parent)
    c.kids = {k: dict(v) for k, v in st.kids.items()}
    c.order = {k: list(v) for k, v in st.order.items()}
    c.log = list(st.log)
    c.floor = st.floor
    c.last = dict(st.last)
    c.clock = st.clock
    c.trashed = st.trashed
    return c


def state_of(st: State) -> Fingerprint:
    """The whole state the checks compare: parents, log (with undo records), floor,
    writers' clocks, clock, trash count, children with their keys (parents with
    none left out). Not the caches (sorted children, ``recent``), nor the Rust
    state's own indexes, which only these reads show."""
    if isinstance(st, _NativeState):
        # Read as mirror() reads it, without building a _TreeState (this runs
        # once per transition). kids_dict() leaves out parents with no children.
        core = st.core
        return (
            dict(core.parent_items()),
            core.log_list(),
            core.floor,
            core.last,
            core.clock,
            core.trashed,
            core.kids_dict(),
        )
    return (
        st.parent,
        st.log,
        st.floor,
        st.last,
        st.clock,
        st.trashed,
        {k: v for k, v in st.kids.items() if v},
    )


def matches_spec(st: State, ops: Sequence[Op]) -> None:
    parent, pos = spec(ops)
    assert_forest(parent)
    m = st.mirror() if isinstance(st, _NativeState) else st
    assert m.parent == parent, (ops, m.parent, parent)
    assert {n: k for n, k in m.positions.items() if k} == pos, (ops, m.positions, pos)
    for p in {ROOT, *parent}:
        if p != TRASH:
            want = [n for _, n in sorted((pos[n], n) for n, q in parent.items() if q == p)]
            assert st.children(p) == want, (ops, p)  # sorted by the state itself
    m.check(deep=False)  # (a native state's check() checks its mirror too)


def agrees(st: State, ref: State | Fingerprint, what: object, stats: Stats) -> None:
    """A native state equals the Python reference's (a state, or its :func:`state_of`)
    for the same operations."""
    got, want = state_of(st), ref if isinstance(ref, tuple) else state_of(ref)
    assert got == want, (
        f"the native state differs from the Python reference: {what}: {got} != {want}"
    )
    stats.compared += 1


# -- Part A ---------------------------------------------------------------------------------


def fubini(n: int) -> int:
    """Ordered set partitions of n elements (arrival schedules, without duplicates)."""
    a = [1]
    for m in range(1, n + 1):
        a.append(sum(_binom(m, k) * a[m - k] for k in range(1, m + 1)))
    return a[n]


def _binom(n: int, k: int) -> int:
    out = 1
    for i in range(k):
        out = out * (n - i) // (i + 1)
    return out


@dataclass
class Stats:
    histories: int = 0
    states: int = 0
    transitions: int = 0
    duplicates: int = 0
    schedules: int = 0
    truncated: int = 0
    refused: int = 0
    executions: int = 0
    compared: int = 0  # native states compared with the Python reference's
    seconds: float = 0.0
    part_seconds: dict[str, float] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=list)


def histories_moves(n_nodes: int, k_moves: int) -> Iterator[list[Op]]:
    """Scope moves(N, K): N creations at the top level, then K arbitrary moves."""
    genesis = [(ts(i), node(i), ROOT, KEYS[i % 2]) for i in range(1, n_nodes + 1)]
    nodes = [node(i) for i in range(1, n_nodes + 1)]
    targets = [ROOT, TRASH, *nodes]
    alphabet = [(n, p) for n in nodes for p in targets]
    for moves in itertools.product(alphabet, repeat=k_moves):
        ops = list(genesis)
        for j, (n, p) in enumerate(moves):
            i = n_nodes + 1 + j
            ops.append((ts(i), n, p, "" if p == TRASH else KEYS[i % 2]))
        yield ops


def histories_general(creations: int, length: int) -> Iterator[list[Op]]:
    """Scope general(C, n): any positions are creations, any others moves."""
    for where in itertools.combinations(range(1, length + 1), creations):
        nodes = [node(i) for i in where]
        targets = [ROOT, TRASH, *nodes]
        per_position: list[list[Op]] = []
        for i in range(1, length + 1):
            key = KEYS[i % 2]
            if i in where:
                per_position.append(
                    [(ts(i), node(i), p, "" if p == TRASH else key) for p in targets]
                )
            else:
                per_position.append(
                    [(ts(i), n, p, "" if p == TRASH else key) for n in nodes for p in targets]
                )
        for ops in itertools.product(*per_position):
            yield list(ops)


def check_history(
    ops: list[Op],
    stats: Stats,
    kind: str = "python",
    refs: dict[tuple[Op, ...], Fingerprint] | None = None,
) -> None:
    """Checks 1-4 for one history on state ``kind``.

    ``refs``: the Python reference's states of the previous history's
    subsets, by subset (on the native run: consecutive histories share half
    of their subsets); replaced by this history's.
    """
    n = len(ops)
    full = (1 << n) - 1
    subsets = [[ops[i] for i in range(n) if mask >> i & 1] for mask in range(full + 1)]
    new = maker(kind)
    states = []
    known = {} if refs is None else refs
    seen: dict[tuple[Op, ...], Fingerprint] = {}
    for mask in range(full + 1):
        st = engine(subsets[mask], new)
        matches_spec(st, subsets[mask])
        if kind == "native":
            key = tuple(subsets[mask])
            ref = known.get(key)
            seen[key] = ref = state_of(engine(subsets[mask])) if ref is None else ref
            agrees(st, ref, subsets[mask], stats)
        states.append(st)
    if refs is not None:
        refs.clear()
        refs.update(seen)
    stats.states += full + 1
    want = [state_of(st) for st in states]  # what `same` reads of each E(S)
    for mask in range(full + 1):
        rest = full & ~mask
        b = rest
        while b:  # every non-empty subset of the operations not yet received
            st = clone(states[mask], subsets[mask], new)
            st.integrate(subsets[b])
            assert state_of(st) == want[mask | b], (subsets[mask], subsets[b])
            stats.transitions += 1
            b = (b - 1) & rest
        if mask:
            # Each operation of S again, one after the other, to a copy of E(S)
            # (each must leave it E(S), so the next one finds E(S) too).
            st = clone(states[mask], subsets[mask], new)
            for i in range(n):
                if mask >> i & 1:
                    assert not st.integrate([ops[i]])
                    assert state_of(st) == want[mask]
                    stats.duplicates += 1
    stats.histories += 1
    stats.schedules += fubini(n)


def part_a(scope: str, a: int, b: int, stats: Stats, kind: str = "python") -> None:
    t0 = time.perf_counter()
    hs = histories_moves(a, b) if scope == "moves" else histories_general(a, b)
    before = stats.histories
    refs: dict[tuple[Op, ...], Fingerprint] = {}
    for ops in hs:
        check_history(ops, stats, kind, refs)
    stats.seconds += time.perf_counter() - t0
    stats.scopes.append(f"A {scope}({a}, {b}): {stats.histories - before} histories")


# -- Part C ---------------------------------------------------------------------------------


def truncated(st: State, ops: Sequence[Op], f: int, new: Callable[[], State] = _TreeState) -> State:
    """``L_f(st)``, ``st`` being ``E(ops)``: a copy with its log truncated below ``f``."""
    c = clone(st, ops, new)
    c.truncate_at(f)
    return c


def check_truncation(ops: list[Op], stats: Stats, kind: str = "python") -> None:
    n = len(ops)
    full = (1 << n) - 1
    subsets = [[ops[i] for i in range(n) if mask >> i & 1] for mask in range(full + 1)]
    new = maker(kind)
    states = [engine(sub, new) for sub in subsets]
    refs = [engine(sub) for sub in subsets] if kind == "native" else []
    for cut in range(1, n + 2):  # the floor: ts(cut); positions below cut are below it
        f = ts(cut)
        # L_f(E(S)) for every S: what each transition must end in.
        bases = [truncated(states[m], subsets[m], f, new) for m in range(full + 1)]
        want = [state_of(st) for st in bases]
        if kind == "native":
            for m in range(full + 1):
                agrees(bases[m], truncated(refs[m], subsets[m], f), (subsets[m], f), stats)
        for mask in range(full + 1):
            rest = full & ~mask
            b = rest
            while b:
                st = truncated(states[mask], subsets[mask], f, new)
                if any(b >> i & 1 and i + 1 < cut for i in range(n)):
                    try:
                        st.integrate(subsets[b])
                    except _Stale:
                        stats.refused += 1
                    else:
                        raise AssertionError(("accepted below the floor", subsets[mask], f))
                    # Nothing changed: the tree, the log, the clocks.
                    assert state_of(st) == want[mask], ("refused but changed", subsets[mask], f)
                else:
                    st.integrate(subsets[b], trim=False)
                    assert state_of(st) == want[mask | b], (subsets[mask], subsets[b], f)
                    stats.truncated += 1
                b = (b - 1) & rest
            for i in range(n):
                if mask >> i & 1:
                    st = truncated(states[mask], subsets[mask], f, new)
                    if i + 1 < cut:
                        with contextlib.suppress(_Stale):
                            st.integrate([ops[i]])
                            raise AssertionError("a duplicate below the floor was accepted")
                        stats.refused += 1
                    else:
                        assert not st.integrate([ops[i]])
                        assert state_of(st) == want[mask]
                        stats.truncated += 1


def part_c(scope: str, a: int, b: int, stats: Stats, kind: str = "python") -> None:
    t0 = time.perf_counter()
    hs = histories_moves(a, b) if scope == "moves" else histories_general(a, b)
    count = 0
    for ops in hs:
        check_truncation(ops, stats, kind)
        count += 1
    stats.seconds += time.perf_counter() - t0
    stats.scopes.append(f"C {scope}({a}, {b}): {count} histories")


@contextlib.contextmanager
def policy(window: int, horizon: int) -> Iterator[None]:
    """Run with another truncation policy (0, 0: truncate after every operation)."""
    saved = tree_mod.WINDOW, tree_mod.HORIZON
    tree_mod.WINDOW, tree_mod.HORIZON = window, horizon
    try:
        yield
    finally:
        tree_mod.WINDOW, tree_mod.HORIZON = saved


# -- Part B ---------------------------------------------------------------------------------


def local_moves(doc: Doc) -> list[tuple[str, str | None]]:
    """Every move a user of ``doc`` can make: (node, new parent or "-" for delete)."""
    t = doc.tree("t")
    live = list(t)
    out: list[tuple[str, str | None]] = []
    for n in live:
        out.append((n, "-"))
        for p in [None, *live]:
            if p == n:
                continue
            out.append((n, p))
    return out


def apply_move(doc: Doc, move: tuple[str, str | None]) -> bytes | None:
    """Make the move; its update, or None if refused or a no-op."""
    t = doc.tree("t")
    v = doc.version
    n, p = move
    try:
        if p == "-":
            t.delete(n)
        else:
            t.move(n, p)
    except InvalidOperationError:
        return None
    return doc.export_update(since=v) if doc.version != v else None


def interleavings(seqs: list[list[bytes]]) -> Iterator[list[bytes]]:
    """Every merge of the sequences that keeps each one's order."""
    if all(not s for s in seqs):
        yield []
        return
    for i, s in enumerate(seqs):
        if s:
            rest = [*seqs[:i], s[1:], *seqs[i + 1 :]]
            for tail in interleavings(rest):
                yield [s[0], *tail]


@contextlib.contextmanager
def bound_to(kind: str) -> Iterator[None]:
    """Trees bound inside keep their state in ``kind`` (as ``tests/model``'s ``tree_path``)."""
    if kind == "native":
        native_class()  # the library's own choice when the extension is built
        yield
        return
    saved = tree_mod._tree_core_class
    tree_mod._tree_core_class = lambda: None
    try:
        yield
    finally:
        tree_mod._tree_core_class = saved


def shape(doc: Doc, kind: str = "python") -> str:
    t = doc.tree("t")
    b = t._binding()
    assert b is not None
    assert isinstance(b.state, _NativeState) == (kind == "native"), "bound to the wrong state"
    b.check(deep=True)
    return repr([(n, t.parent(n), t.children(n)) for n in t]) + repr(t.children())


def part_b(
    replicas: int,
    nodes: int,
    moves: int,
    stats: Stats,
    kind: str = "python",
    trees: dict[Any, str] | None = None,
) -> None:
    """Part B on state ``kind``; ``trees`` holds each move combination's tree (and
    must agree with what another state's run put there)."""
    with bound_to(kind):
        _part_b(replicas, nodes, moves, stats, kind, {} if trees is None else trees)


def _part_b(
    replicas: int, nodes: int, moves: int, stats: Stats, kind: str, trees: dict[Any, str]
) -> None:
    t0 = time.perf_counter()
    base = Doc(peer_id=1)
    bt = base.tree("t")
    for _ in range(nodes):
        bt.create()
    genesis = base.export_update()
    combos = 0
    executions = 0

    def sessions(r: int) -> Iterator[tuple[list[bytes], list[tuple[str, str | None]]]]:
        """Every sequence of `moves` local moves replica r can make."""

        def rec(
            doc_updates: list[bytes], made: list[tuple[str, str | None]]
        ) -> Iterator[tuple[list[bytes], list[tuple[str, str | None]]]]:
            if len(made) == moves:
                yield doc_updates, made
                return
            d = Doc(peer_id=r + 1)
            d.import_update(genesis)
            for u in doc_updates:
                d.import_update(u)
            for mv in local_moves(d):
                d2 = Doc(peer_id=r + 1)
                d2.import_update(genesis)
                for u in doc_updates:
                    d2.import_update(u)
                u = apply_move(d2, mv)
                if u is not None:
                    yield from rec([*doc_updates, u], [*made, mv])

        yield from rec([], [])

    per_replica = [list(sessions(r)) for r in range(replicas)]
    for combo in itertools.product(*per_replica):
        combos += 1
        updates = [c[0] for c in combo]
        results = set()
        # A fresh observer receives everything in every interleaving.
        reloaded = False
        for order in interleavings(updates):
            d = Doc(peer_id=99)
            d.import_update(genesis)
            d.tree("t").children()  # bound before the updates arrive
            for u in order:
                d.import_update(u)
            results.add(shape(d, kind))
            executions += 1
            if not reloaded:  # and saved, then loaded from its saved shape
                results.add(shape(Doc.load(d.save(), peer_id=98), kind))
                reloaded = True
        # Each replica receives the others' in every interleaving.
        for r in range(replicas):
            others = [u for i, u in enumerate(updates) if i != r]
            for order in interleavings(others):
                d = Doc(peer_id=r + 1)
                d.import_update(genesis)
                for u in updates[r]:
                    d.import_update(u)
                d.tree("t").children()
                for u in order:
                    d.import_update(u)
                results.add(shape(d, kind))
                executions += 1
        assert len(results) == 1, (combo, results)
        # The same tree on the other state (when both run).
        key = (
            replicas,
            nodes,
            moves,
            tree_mod.WINDOW,
            tree_mod.HORIZON,
            tuple(tuple(c[1]) for c in combo),
        )
        tree = results.pop()
        assert trees.setdefault(key, tree) == tree, ("the states disagree", combo, trees[key], tree)
    stats.executions += executions
    stats.seconds += time.perf_counter() - t0
    stats.scopes.append(
        f"B replicas={replicas} nodes={nodes} moves={moves}: {combos} move combinations, "
        f"{executions} executions"
    )


# -- main -----------------------------------------------------------------------------------

SMALL: dict[str, list[tuple[Any, ...]]] = {
    "a": [("moves", 2, 2), ("general", 2, 4)],
    "c": [("moves", 2, 2)],
    "b": [(2, 2, 1)],
}
FULL: dict[str, list[tuple[Any, ...]]] = {
    "a": [("moves", 3, 3), ("moves", 4, 2), ("general", 2, 5)],
    "c": [("moves", 3, 2), ("moves", 2, 3), ("general", 2, 4)],
    "b": [(3, 3, 1), (2, 3, 2)],
}
#: Truncation policies Part B runs under: the shipped one, and the harshest.
POLICIES = [(tree_mod.WINDOW, tree_mod.HORIZON), (0, 0)]


def check(
    bound: dict[str, list[tuple[Any, ...]]],
    verbose: bool = False,
    kind: str = "python",
    trees: dict[Any, str] | None = None,
) -> Stats:
    """Run ``bound`` on state ``kind`` (``trees``: Part B's trees, shared between states)."""
    stats = Stats()

    def done(part: str, t0: float) -> None:
        stats.part_seconds[part] = stats.part_seconds.get(part, 0.0) + time.perf_counter() - t0
        if verbose:
            print(f"[{kind}] {stats.scopes[-1]} ({stats.seconds:.0f} s so far)", flush=True)

    for scope, a, b in bound.get("a", []):
        t0 = time.perf_counter()
        part_a(str(scope), int(a), int(b), stats, kind)
        done("A", t0)
    for scope, a, b in bound.get("c", []):
        t0 = time.perf_counter()
        part_c(str(scope), int(a), int(b), stats, kind)
        done("C", t0)
    for window, horizon in POLICIES:
        with policy(window, horizon):
            for r, n, m in bound.get("b", []):
                t0 = time.perf_counter()
                part_b(int(r), int(n), int(m), stats, kind, trees)
                stats.scopes[-1] += f" (WINDOW={window}, HORIZON={horizon})"
                done("B", t0)
    return stats


def report(kind: str, stats: Stats) -> None:
    secs = ", ".join(f"{p} {s:.0f} s" for p, s in sorted(stats.part_seconds.items()))
    print(f"== {kind} state ({secs})")
    print(
        f"Part A: {stats.histories} histories, {stats.states} states checked against the "
        f"specification, {stats.transitions} batch transitions and {stats.duplicates} "
        f"duplicate deliveries checked; {stats.schedules} arrival schedules covered"
    )
    print(
        f"Part C: {stats.truncated} truncated batch transitions exact, {stats.refused} "
        "batches below the floor refused (rebuilt)"
    )
    print(f"Part B: {stats.executions} end-to-end executions")
    if kind == "native":
        print(f"native states equal to the Python reference's: {stats.compared}")
    print(f"all checks passed in {stats.seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="the CI bound")
    parser.add_argument(
        "--scope",
        nargs=3,
        metavar=("KIND", "A", "B"),
        help="one Part A scope only, e.g. --scope moves 4 3",
    )
    parser.add_argument(
        "--truncation",
        nargs=3,
        metavar=("KIND", "A", "B"),
        help="one Part C scope only, e.g. --truncation moves 3 2",
    )
    parser.add_argument(
        "--parts", default="abc", help="which parts of the bound to run (default abc: all)"
    )
    built = tree_mod._tree_core_class() is not None
    parser.add_argument(
        "--state",
        choices=["python", "native", "both"],
        default="both" if built else "python",
        help="the state checked: the Python reference, the Rust port, or both "
        "(default: both when crdtsync._native is built, else python)",
    )
    args = parser.parse_args(argv)
    if args.state != "python" and not built:
        try:
            native_class()
        except NativeMissing as exc:
            parser.error(f"--state {args.state}: {exc}")
    bound = SMALL if args.small else FULL
    bound = {p: v for p, v in bound.items() if p in args.parts.lower()}
    if args.scope:
        bound = {"a": [(args.scope[0], int(args.scope[1]), int(args.scope[2]))]}
    if args.truncation:
        t = args.truncation
        bound = {"c": [(t[0], int(t[1]), int(t[2]))]}
    kinds = list(STATES) if args.state == "both" else [args.state]
    trees: dict[Any, str] = {}
    results = [(kind, check(bound, verbose=True, kind=kind, trees=trees)) for kind in kinds]
    for kind, stats in results:
        report(kind, stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
