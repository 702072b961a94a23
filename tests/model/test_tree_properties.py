"""Stateful property test of the movable tree: several replicas, random edits, random syncs.

Actions (Loro's fuzzer style): ``create``, ``move`` (cycle-making, unknown and
deleted targets included), ``delete``, ``edit`` (node data), ``deliver(a, b)``
(a's own updates, a prefix of them in order and some again: duplicates),
``catch_up(a, b)`` (everything a has that b lacks), ``reload`` (a replica
restarts from its save) and ``sync_all``. After every step each replica's tree
must hold the invariants (single parent, no cycle, every live node reachable
from the top level, the incremental state equal to a rebuild from its
operations); after ``sync_all`` every replica must hold the same tree and
data, equal to a fresh load of the saved document.

``test_the_machine_catches_*`` run the same machine against broken engines to
show the checks are not vacuous.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from crdtsync import Doc, InvalidOperationError, InvalidUpdateError, Tree
from crdtsync.errors import TreeCycleError
from crdtsync.model.tree import ROOT, TRASH, _Stale, _TreeState, node_ts

# Every test runs on the Rust tree state and on the pure-Python reference.
pytestmark = pytest.mark.usefixtures("tree_path")

N_SITES = 3
NAME = "outline"

site_ids = st.integers(min_value=0, max_value=N_SITES - 1)
indexes = st.one_of(st.none(), st.integers(min_value=-1, max_value=4))
values = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none())


def tree_of(doc: Doc) -> Tree:
    return doc.tree(NAME)


def state_of(doc: Doc) -> _TreeState:
    b = tree_of(doc)._binding()
    assert b is not None
    return b.state


class TreeReplicas(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sites = [Doc(peer_id=i + 1) for i in range(N_SITES)]
        # The updates each site made itself, in order (each its own transaction).
        self.made: list[list[bytes]] = [[] for _ in range(N_SITES)]
        # Every node id ever created anywhere, plus ids no one created.
        self.ids: list[str] = ["99:1"]

    # -- helpers ---------------------------------------------------------------------

    def _local(self, i: int, edit: Any) -> Any:
        """Run a local edit; on refusal, check nothing changed."""
        doc = self.sites[i]
        before_v, before = doc.version, tree_of(doc).to_py()
        try:
            result = edit(tree_of(doc))
        except InvalidOperationError:
            assert doc.version == before_v
            assert tree_of(doc).to_py() == before
            return None
        if doc.version != before_v:
            self.made[i].append(doc.export_update(since=before_v))
        return result

    def _pick(self, data: st.DataObject, *, none: bool) -> str | None:
        choices: list[str | None] = sorted(self.ids)
        if none:
            choices.append(None)
        return data.draw(st.sampled_from(choices))

    # -- local edits ----------------------------------------------------------------

    @rule(i=site_ids, data=st.data(), index=indexes, value=values)
    def create(self, i: int, data: st.DataObject, index: int | None, value: Any) -> None:
        parent = self._pick(data, none=True)
        node = self._local(i, lambda t: t.create(parent, index, {"v": value}))
        if node is not None:
            self.ids.append(node)
            t = tree_of(self.sites[i])
            assert t.parent(node) == parent
            assert node in t

    @rule(i=site_ids, data=st.data(), index=indexes)
    def move(self, i: int, data: st.DataObject, index: int | None) -> None:
        node = self._pick(data, none=False)
        parent = self._pick(data, none=True)
        t = tree_of(self.sites[i])
        st_ = state_of(self.sites[i])
        if node in t and parent is not None and parent in t:
            a: str = parent
            under = False
            while a not in (ROOT, TRASH):
                under = under or a == node
                a = st_.parent[a]
            if under:
                with pytest.raises(TreeCycleError):
                    t.move(node, parent, index)
                return
        self._local(i, lambda t: t.move(node, parent, index))
        if node in t and (parent is None or parent in t) and t.parent(node) == parent:
            kids = t.children(parent)
            keys = [st_.key_of(k) for k in kids]
            if index is not None and 0 <= index < len(kids) and len(set(keys)) == len(keys):
                assert kids[index] == node  # the index is honoured (no tied keys)

    @rule(i=site_ids, data=st.data())
    def delete(self, i: int, data: st.DataObject) -> None:
        node = self._pick(data, none=False)
        self._local(i, lambda t: t.delete(node))
        assert node not in tree_of(self.sites[i])

    @rule(i=site_ids, data=st.data(), value=values)
    def edit(self, i: int, data: st.DataObject, value: Any) -> None:
        node = self._pick(data, none=False)

        def set_value(t: Tree) -> None:
            t.data(node)["v"] = value

        self._local(i, set_value)

    def _shared(self, i: int, j: int) -> list[str]:
        """Nodes live on both sites."""
        ti, tj = tree_of(self.sites[i]), tree_of(self.sites[j])
        return sorted(n for n in ti if n in tj)

    @rule(i=site_ids, j=site_ids, data=st.data())
    def concurrent_cycle(self, i: int, j: int, data: st.DataObject) -> None:
        """Two sites move two nodes under each other without syncing."""
        shared = self._shared(i, j)
        if i == j or len(shared) < 2:
            return
        x, y = data.draw(st.permutations(shared))[:2]
        self._local(i, lambda t: t.move(x, y))
        self._local(j, lambda t: t.move(y, x))
        if data.draw(st.booleans()):  # and merge them at once
            self.catch_up(i, j)
            self.catch_up(j, i)

    @rule(i=site_ids, j=site_ids, data=st.data())
    def concurrent_move_and_delete(self, i: int, j: int, data: st.DataObject) -> None:
        """One site deletes a node while another moves it or something near it."""
        shared = self._shared(i, j)
        if i == j or len(shared) < 2:
            return
        x, y = data.draw(st.permutations(shared))[:2]
        self._local(i, lambda t: t.delete(x))
        target = data.draw(st.sampled_from([None, x]))
        self._local(j, lambda t: t.move(y, target))
        if data.draw(st.booleans()):
            self.catch_up(i, j)
            self.catch_up(j, i)

    # -- delivery -------------------------------------------------------------------

    def _import(self, dst: int, update: bytes) -> None:
        doc = self.sites[dst]
        before_v = doc.version
        try:
            doc.import_update(update)
        except InvalidUpdateError:
            # Refused (it depends on updates dst lacks): dst must be unchanged.
            assert doc.version == before_v

    @rule(src=site_ids, dst=site_ids, data=st.data())
    def deliver(self, src: int, dst: int, data: st.DataObject) -> None:
        """A prefix of src's own updates, in order; some may be duplicates."""
        if src == dst or not self.made[src]:
            return
        n = data.draw(st.integers(1, len(self.made[src])))
        start = data.draw(st.integers(0, n - 1))
        for u in self.made[src][start:n]:
            self._import(dst, u)

    @rule(src=site_ids, dst=site_ids)
    def catch_up(self, src: int, dst: int) -> None:
        if src != dst:
            self._import(dst, self.sites[src].export_update(since=self.sites[dst].version))

    @rule(i=site_ids)
    def reload(self, i: int) -> None:
        old = self.sites[i]
        self.sites[i] = Doc.load(old.save(), peer_id=old.peer_id)
        assert tree_of(self.sites[i]).to_py() == tree_of(old).to_py()

    @precondition(lambda self: any(self.made))
    @rule()
    def sync_all(self) -> None:
        for _ in range(2):
            for a in range(N_SITES):
                for b in range(N_SITES):
                    if a != b:
                        self.catch_up(a, b)
        first = self.sites[0]
        for doc in self.sites[1:]:
            assert doc.version == first.version, "replicas saw different updates"
            assert tree_of(doc).to_py() == tree_of(first).to_py(), "replicas' trees differ"
            assert state_of(doc).parent == state_of(first).parent, "replicas' trees differ"
            assert state_of(doc).positions == state_of(first).positions, "positions differ"
        fresh = Doc.load(first.save())
        assert tree_of(fresh).to_py() == tree_of(first).to_py()
        assert fresh.to_py() == first.to_py()

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def trees_are_trees(self) -> None:
        for doc in self.sites:
            st_ = state_of(doc)
            # Single parent (a dict), no cycle, children lists consistent, and
            # the incremental state equal to the fold of its operations.
            b = tree_of(doc)._binding()
            assert b is not None
            b.check(deep=True)
            t = tree_of(doc)
            live = [n for n in st_.parent if st_.top(n) == ROOT]
            walked = list(t)
            assert sorted(walked) == sorted(live)  # every live node reachable
            assert len(walked) == len(set(walked)) == len(t)  # nothing twice
            for n in walked:
                p = t.parent(n)
                assert n in t.children(p)
            flat: list[str] = []
            stack = list(t.to_py())
            while stack:
                item = stack.pop()
                flat.append(item["id"])
                stack.extend(item["children"])
            assert sorted(flat) == sorted(live)


_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_tree_replicas() -> None:
    """The state machine, as a function so that it runs on both tree states."""
    run_state_machine_as_test(TreeReplicas, settings=_SETTINGS)


def test_tree_replicas_with_the_log_truncated_hard(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same machine with a log that keeps almost nothing: late operations
    keep arriving below the floor and force rebuilds; everything still holds."""
    from crdtsync.model import tree as tree_mod

    monkeypatch.setattr(tree_mod, "WINDOW", 2)
    monkeypatch.setattr(tree_mod, "HORIZON", 6)
    run_state_machine_as_test(
        TreeReplicas,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# -- the checks are not vacuous ------------------------------------------------------------

_BROKEN = settings(
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],  # finding a failure is the point; shrinking it is not
    suppress_health_check=list(HealthCheck),
)


def _cycle_blind_do(self: _TreeState, op: tuple[int, str, str, str]) -> None:
    """_do without the cycle check (remote moves are applied blindly)."""
    t, n, p, k = op
    old = self.parent.get(n)
    if old is None:
        if node_ts(n) != t or (p not in (ROOT, TRASH) and p not in self.parent):
            self.log.append((t, n, p, k, None, ""))
            return
        self._place(n, p, k)
        self.log.append((t, n, p, k, "\x00", ""))
        return
    if p not in (ROOT, TRASH) and p not in self.parent:
        self.log.append((t, n, p, k, None, ""))
        return
    oldk = self._unplace(n, old)
    self._place(n, p, k)
    self.log.append((t, n, p, k, old, oldk))


def _top_bounded(self: _TreeState, n: str) -> str:
    # With cycles possible, an unbounded walk would hang the broken runs.
    for _ in range(len(self.parent) + 1):
        if n in (ROOT, TRASH):
            return n
        n = self.parent[n]
    raise AssertionError("cycle")


@pytest.mark.usefixtures("pure_tree")
def test_the_machine_catches_a_missing_cycle_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_TreeState, "_do", _cycle_blind_do)
    monkeypatch.setattr(_TreeState, "top", _top_bounded)
    with pytest.raises(AssertionError, match="cycle"):
        run_state_machine_as_test(TreeReplicas, settings=_BROKEN)


@pytest.mark.usefixtures("pure_tree")
def test_the_machine_catches_arrival_order_dependence(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that applies late operations on top instead of undo/redo diverges."""

    def no_undo(self: _TreeState, new: list[Any], old: Any = None, trim: bool = True) -> bool:
        known = {e[0] for e in self.log}
        fresh = sorted(op for op in set(new) if op[0] not in known)
        if fresh and fresh[0][0] < self.floor:
            raise _Stale  # as the real engine: the binding reads everything again
        for op in fresh:
            self.clock = max(self.clock, op[0] >> 64)
            w = op[0] & ((1 << 64) - 1)
            self.last[w] = max(self.last.get(w, 0), op[0] >> 64)
            log = self.log
            self.log = []
            self._do(op)
            self.log = sorted(log + self.log)
        return bool(fresh)

    monkeypatch.setattr(_TreeState, "integrate", no_undo)
    with pytest.raises(AssertionError, match="differ"):
        run_state_machine_as_test(TreeReplicas, settings=_BROKEN)
