"""Differential checks against Loro's LoroTree.

One replica, the same local operations; and below, the documented concurrent
cases, made on two replicas of each engine, must resolve the same way.

After every operation both trees must have the same live nodes, the same
children in the same order, and agree on which operations are refused (cycles,
deleted or unknown nodes, indexes out of range). Deliberate differences:
Loro accepts a move or creation *under a deleted node* (the node becomes
deleted), and a move or delete of a node whose *ancestor* is deleted;
crdtsync refuses both, as the issue asks of local operations that name a
deleted node (a node in a deleted subtree is deleted). Such operations are
checked to be refused here and not sent to Loro.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync import Doc, InvalidOperationError

# Every test runs on the Rust tree state and on the pure-Python reference.
pytestmark = pytest.mark.usefixtures("tree_path")

loro = pytest.importorskip("loro")

# (kind, node index, parent index or None, position index or None)
ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["create", "create", "move", "move", "move", "delete"]),
        st.integers(0, 12),
        st.one_of(st.none(), st.integers(0, 12)),
        st.one_of(st.none(), st.integers(0, 5)),
    ),
    max_size=60,
)


class Pair:
    """The same tree in crdtsync and in Loro, nodes matched by creation order."""

    def __init__(self) -> None:
        self.ours = Doc(peer_id=1).tree("t")
        ldoc = loro.LoroDoc()
        self.theirs = ldoc.get_tree("t")
        self.theirs.enable_fractional_index(0)
        self.ids: list[str] = []  # ours, by creation order
        self.lids: list[Any] = []  # Loro's TreeIDs, same order

    def _their_key(self, tid: Any) -> int:
        key = (tid.peer, tid.counter)
        return next(i for i, x in enumerate(self.lids) if (x.peer, x.counter) == key)

    def _loro(self, call: Any) -> bool:
        try:
            call()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # Loro raises bare BaseException for every error
            return False
        return True

    def _names_deleted(self, *nodes: int | None) -> bool:
        """Whether one of the nodes is not live (deleted itself or by an ancestor)."""
        return any(i is not None and self.ids[i] not in self.ours for i in nodes)

    def apply(self, kind: str, n: int, parent: int | None, index: int | None) -> None:
        if parent is not None and parent >= len(self.ids):
            parent = None
        if kind != "create" and not self.ids:
            return
        n %= max(1, len(self.ids))
        p_ours = None if parent is None else self.ids[parent]
        p_theirs = None if parent is None else self.lids[parent]
        if kind == "create":
            try:
                self.ids.append(self.ours.create(p_ours, index))
                ok = True
            except InvalidOperationError:
                ok = False
            if not ok and self._names_deleted(parent):
                return  # crdtsync refuses what Loro allows (see module docstring)
            if index is None:
                call = lambda: self.lids.append(self.theirs.create(p_theirs))  # noqa: E731
            else:
                call = lambda: self.lids.append(self.theirs.create_at(index, p_theirs))  # noqa: E731
            assert self._loro(call) == ok, ("create", parent, index)
        elif kind == "move":
            try:
                self.ours.move(self.ids[n], p_ours, index)
                ok = True
            except InvalidOperationError:
                ok = False
            if not ok and self._names_deleted(n, parent):
                return
            if index is None:
                call = lambda: self.theirs.mov(self.lids[n], p_theirs)  # noqa: E731
            else:
                call = lambda: self.theirs.mov_to(self.lids[n], index, p_theirs)  # noqa: E731
            assert self._loro(call) == ok, ("move", n, parent, index)
        else:
            try:
                self.ours.delete(self.ids[n])
                ok = True
            except InvalidOperationError:
                ok = False
            if not ok and self._names_deleted(n):
                return
            assert self._loro(lambda: self.theirs.delete(self.lids[n])) == ok, ("delete", n)
        self.compare()

    def compare(self) -> None:
        ours, theirs = self.ours, self.theirs
        live = [i for i, x in enumerate(self.ids) if x in ours]
        loro_live = [i for i, x in enumerate(self.lids) if not theirs.is_node_deleted(x)]
        assert live == loro_live
        assert [self.ids.index(x) for x in ours.children(None)] == [
            self._their_key(x) for x in (theirs.children(None) or [])
        ]
        for i in live:
            assert [self.ids.index(x) for x in ours.children(self.ids[i])] == [
                self._their_key(x) for x in (theirs.children(self.lids[i]) or [])
            ], i


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy)
def test_same_operations_same_tree(ops: list[tuple[str, int, int | None, int | None]]) -> None:
    pair = Pair()
    for op in ops:
        pair.apply(*op)


def test_long_random_session_matches_loro() -> None:
    pair = Pair()
    rng = random.Random(11)
    for _ in range(100):
        pair.apply("create", 0, rng.choice([None, *range(len(pair.ids))]), None)
    for _ in range(1500):
        kind = rng.choice(["create", "move", "move", "move", "move", "delete"])
        k = len(pair.ids)
        pair.apply(
            kind,
            rng.randrange(k),
            rng.choice([None, rng.randrange(k)]),
            rng.choice([None, 0, 1, 2, rng.randrange(8)]),
        )
    assert len(pair.ours) > 10  # the session kept a tree to compare


# -- the documented concurrent cases, resolved as Loro resolves them ------------------------


def _loro_pair() -> tuple[Any, Any]:
    a, b = loro.LoroDoc(), loro.LoroDoc()
    a.peer_id, b.peer_id = 1, 2
    for d in (a, b):
        d.get_tree("t").enable_fractional_index(0)
    return a, b


def _loro_sync(a: Any, b: Any) -> None:
    a.commit()
    b.commit()
    a.import_(b.export(loro.ExportMode.Snapshot()))
    b.import_(a.export(loro.ExportMode.Snapshot()))


def _ours_pair() -> tuple[Doc, Doc]:
    return Doc(peer_id=1), Doc(peer_id=2)


def _ours_sync(a: Doc, b: Doc) -> None:
    b.import_update(a.export_update(since=b.version))
    a.import_update(b.export_update(since=a.version))


def test_concurrent_cycle_like_loro() -> None:
    la, lb = _loro_pair()
    lx, ly = la.get_tree("t").create(), la.get_tree("t").create()
    _loro_sync(la, lb)
    la.get_tree("t").mov(lx, ly)  # peer 1
    lb.get_tree("t").mov(ly, lx)  # peer 2, same Lamport clock: later
    _loro_sync(la, lb)
    oa, ob = _ours_pair()
    ox, oy = oa.tree("t").create(), oa.tree("t").create()
    _ours_sync(oa, ob)
    oa.tree("t").move(ox, oy)
    ob.tree("t").move(oy, ox)
    _ours_sync(oa, ob)
    lt = la.get_tree("t")
    assert [r.counter for r in lt.roots] == [1]  # y stays at the top, x under it
    assert oa.tree("t").children(None) == [oy]
    assert oa.tree("t").parent(ox) == oy


@pytest.mark.parametrize("first", ["delete", "move"])
def test_move_and_delete_of_one_node_like_loro(first: str) -> None:
    la, lb = _loro_pair()
    lx, lp = la.get_tree("t").create(), la.get_tree("t").create()
    _loro_sync(la, lb)
    oa, ob = _ours_pair()
    ox, op = oa.tree("t").create(), oa.tree("t").create()
    _ours_sync(oa, ob)
    # Peer 1 does `first`, peer 2 the other, concurrently: peer 2's is later.
    if first == "delete":
        la.get_tree("t").delete(lx)
        lb.get_tree("t").mov(lx, lp)
        oa.tree("t").delete(ox)
        ob.tree("t").move(ox, op)
    else:
        la.get_tree("t").mov(lx, lp)
        lb.get_tree("t").delete(lx)
        oa.tree("t").move(ox, op)
        ob.tree("t").delete(ox)
    _loro_sync(la, lb)
    _ours_sync(oa, ob)
    assert la.get_tree("t").is_node_deleted(lx) == (ox not in oa.tree("t")) == (first == "move")


def test_ancestor_deleted_while_node_moved_out_like_loro() -> None:
    la, lb = _loro_pair()
    lt = la.get_tree("t")
    anc = lt.create()
    out = lt.create(lt.create(anc))
    keep = lt.create()
    _loro_sync(la, lb)
    lt.delete(anc)
    lb.get_tree("t").mov(out, keep)
    _loro_sync(la, lb)
    oa, ob = _ours_pair()
    ot = oa.tree("t")
    oanc = ot.create()
    oout = ot.create(ot.create(oanc))
    okeep = ot.create()
    _ours_sync(oa, ob)
    ot.delete(oanc)
    ob.tree("t").move(oout, okeep)
    _ours_sync(oa, ob)
    assert not lt.is_node_deleted(out)
    assert oout in ot
    assert ot.parent(oout) == okeep


def test_child_created_under_a_node_deleted_concurrently_like_loro() -> None:
    la, lb = _loro_pair()
    lp = la.get_tree("t").create()
    _loro_sync(la, lb)
    la.get_tree("t").delete(lp)
    lc = lb.get_tree("t").create(lp)
    _loro_sync(la, lb)
    oa, ob = _ours_pair()
    op = oa.tree("t").create()
    _ours_sync(oa, ob)
    oa.tree("t").delete(op)
    oc = ob.tree("t").create(op)
    _ours_sync(oa, ob)
    assert la.get_tree("t").is_node_deleted(lc)
    assert oc not in oa.tree("t")
    assert oc not in ob.tree("t")
