"""Per-node tree change events: applied in order to the old shape, they give the new one.

Every replica keeps a *view* of its tree, built only from the change events it
was given (starting from the shape it had when it started observing). After
every step -- local edits, remote imports in any order, concurrent moves that
re-order the log, cycles, deletions, restarts -- the view must equal the
tree's real shape: the live nodes, each one's parent, every node's children
in order. ``test_the_property_catches_*`` show the check can fail.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from crdtsync import Change, ChangeEvent, Doc, InvalidOperationError, InvalidUpdateError, Tree
from crdtsync.model import tree as tree_mod
from crdtsync.model import tree_events
from crdtsync.model.tree_events import TreeChange

# Every test runs on the Rust tree state and on the pure-Python reference.
pytestmark = pytest.mark.usefixtures("tree_path")

NAME = "t"
N_SITES = 3
Shape = dict[str | None, list[str]]


def shape_of(t: Tree) -> Shape:
    """Every live node's children in order (``None``: the top level)."""
    out: Shape = {None: t.children(None)}
    for n in t:
        out[n] = t.children(n)
    return out


def apply(view: Shape, changes: tuple[TreeChange, ...]) -> None:
    """Apply changes to a view the way an observer would, checking each one fits."""
    for c in changes:
        if c.action == "data":
            assert c.node in view, f"data change of a node not in the view: {c}"
            assert c.keys
            continue
        if c.action in ("move", "delete"):
            assert c.old_index is not None
            assert c.old_parent in view, f"{c}: its old parent is not in the view"
            siblings = view[c.old_parent]
            assert 0 <= c.old_index < len(siblings), f"{c}: the view has {siblings}"
            assert siblings[c.old_index] == c.node, f"{c}: the view has {siblings}"
            del siblings[c.old_index]
        if c.action == "delete":
            todo = [c.node]  # the node and its subtree leave the view
            while todo:
                todo.extend(view.pop(todo.pop()))
            continue
        assert c.action in ("create", "move"), c
        assert c.new_index is not None
        if c.action == "create":
            assert c.node not in view, f"{c}: already in the view"
            view[c.node] = []
        assert c.new_parent in view, f"{c}: its new parent is not in the view"
        siblings = view[c.new_parent]
        assert 0 <= c.new_index <= len(siblings), f"{c}: {siblings}"
        siblings.insert(c.new_index, c.node)
        # No cycle: walking up from the new parent never meets the node.
        up = {n: p for p, kids in view.items() for n in kids}
        a = c.new_parent
        while a is not None:
            assert a != c.node, f"{c} made a cycle in the view"
            a = up[a]


class Observed:
    """One replica and the view its observer builds from events alone."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.view = shape_of(doc.tree(NAME))
        self.unknown = False
        doc.observe(self.on_change)

    def on_change(self, ev: ChangeEvent) -> None:
        for c in ev.changes:
            if c.path == (NAME,):
                assert c.kind == "tree"
                if c.tree is None:  # "read it whole": allowed, then re-read
                    self.unknown = True
                else:
                    apply(self.view, c.tree)

    def check(self) -> None:
        real = shape_of(self.doc.tree(NAME))
        if self.unknown:
            self.view, self.unknown = real, False
        assert self.view == real


class TreeEvents(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sites = [Observed(Doc(peer_id=i + 1)) for i in range(N_SITES)]
        self.ids: list[str] = ["99:1"]

    def _pick(self, data: st.DataObject, *, none: bool) -> str | None:
        choices: list[str | None] = sorted(self.ids)
        if none:
            choices.append(None)
        return data.draw(st.sampled_from(choices))

    def _edit(self, i: int, edit: Any) -> Any:
        with contextlib.suppress(InvalidOperationError):
            return edit(self.sites[i].doc.tree(NAME))
        return None

    @rule(i=st.integers(0, N_SITES - 1), data=st.data(), index=st.none() | st.integers(0, 3))
    def create(self, i: int, data: st.DataObject, index: int | None) -> None:
        parent = self._pick(data, none=True)
        node = self._edit(i, lambda t: t.create(parent, index, {"v": 1}))
        if node is not None:
            self.ids.append(node)

    @rule(i=st.integers(0, N_SITES - 1), data=st.data(), index=st.none() | st.integers(0, 3))
    def move(self, i: int, data: st.DataObject, index: int | None) -> None:
        node, parent = self._pick(data, none=False), self._pick(data, none=True)
        self._edit(i, lambda t: t.move(node, parent, index))

    @rule(i=st.integers(0, N_SITES - 1), data=st.data())
    def delete(self, i: int, data: st.DataObject) -> None:
        node = self._pick(data, none=False)
        self._edit(i, lambda t: t.delete(node))

    @rule(i=st.integers(0, N_SITES - 1), data=st.data(), value=st.integers(0, 3))
    def edit_data(self, i: int, data: st.DataObject, value: int) -> None:
        node = self._pick(data, none=False)

        def set_value(t: Tree) -> None:
            t.data(node)["v"] = value

        self._edit(i, set_value)

    @rule(i=st.integers(0, N_SITES - 1), data=st.data())
    def batch(self, i: int, data: st.DataObject) -> None:
        """Several local edits in one transaction: one event, changes in order."""
        doc = self.sites[i].doc
        with doc.transaction():
            for _ in range(data.draw(st.integers(1, 4))):
                node, parent = self._pick(data, none=False), self._pick(data, none=True)
                if data.draw(st.booleans()):
                    self._edit(i, lambda t, n=node, p=parent: t.move(n, p, None))
                else:
                    new = self._edit(i, lambda t, p=parent: t.create(p, 0))
                    if new is not None:
                        self.ids.append(new)

    @rule(i=st.integers(0, N_SITES - 1), j=st.integers(0, N_SITES - 1), data=st.data())
    def concurrent_cycle(self, i: int, j: int, data: st.DataObject) -> None:
        """Two sites move two nodes under each other, then merge: one move loses."""
        a, b = self.sites[i].doc, self.sites[j].doc
        shared = sorted(n for n in a.tree(NAME) if n in b.tree(NAME))
        if i == j or len(shared) < 2:
            return
        x, y = data.draw(st.permutations(shared))[:2]
        self._edit(i, lambda t: t.move(x, y))
        self._edit(j, lambda t: t.move(y, x))
        self.catch_up(i, j)
        self.catch_up(j, i)

    @rule(i=st.integers(0, N_SITES - 1), j=st.integers(0, N_SITES - 1), data=st.data())
    def concurrent_delete_and_move(self, i: int, j: int, data: st.DataObject) -> None:
        """X has a child on both sites; one deletes X while the other moves it
        twice, the last time with a greater timestamp: X comes back on the first
        site, with its subtree."""
        a, b = self.sites[i].doc, self.sites[j].doc
        shared = sorted(n for n in a.tree(NAME) if n in b.tree(NAME))
        if i == j or not shared:
            return
        x = data.draw(st.sampled_from(shared))
        child = self._edit(j, lambda t: t.create(x))
        if child is not None:
            self.ids.append(child)
        self.catch_up(j, i)
        self._edit(i, lambda t: t.delete(x))
        self._edit(j, lambda t: t.move(x, None, 0))
        self._edit(j, lambda t: t.move(x, None))
        self.catch_up(j, i)
        self.catch_up(i, j)

    @rule(src=st.integers(0, N_SITES - 1), dst=st.integers(0, N_SITES - 1))
    def catch_up(self, src: int, dst: int) -> None:
        if src == dst:
            return
        a, b = self.sites[src].doc, self.sites[dst].doc
        with contextlib.suppress(InvalidUpdateError):
            b.import_update(a.export_update(since=b.version))

    @rule(i=st.integers(0, N_SITES - 1))
    def reload(self, i: int) -> None:
        old = self.sites[i].doc
        self.sites[i] = Observed(Doc.load(old.save(), peer_id=old.peer_id))

    @invariant()
    def views_match(self) -> None:
        for s in self.sites:
            s.check()


_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_tree_events() -> None:
    """The state machine, as a function so that it runs on both tree states."""
    run_state_machine_as_test(TreeEvents, settings=_SETTINGS)


# -- the documented cases, one by one ------------------------------------------------------


def events_of(doc: Doc) -> list[tuple[TreeChange, ...]]:
    got: list[tuple[TreeChange, ...]] = []

    def on(ev: ChangeEvent) -> None:
        for c in ev.changes:
            if c.kind == "tree":
                assert c.tree is not None
                got.append(c.tree)

    doc.observe(on)
    return got


def test_local_edits_report_what_they_did() -> None:
    doc = Doc(peer_id=1)
    got = events_of(doc)
    t = doc.tree(NAME)
    x = t.create(data={"k": 1})
    y = t.create()
    t.move(y, x, 0)
    t.data(x)["k"] = 2
    t.delete(x)
    assert got == [
        (TreeChange("create", x, new_parent=None, new_index=0),),
        (TreeChange("create", y, new_parent=None, new_index=1),),
        (TreeChange("move", y, old_parent=None, old_index=1, new_parent=x, new_index=0),),
        (TreeChange("data", x, keys={"k": "update"}),),
        (TreeChange("delete", x, old_parent=None, old_index=0),),
    ]


def test_a_remote_move_earlier_in_the_log_changes_what_a_local_move_did() -> None:
    """a moves X under P; b concurrently moves P under X with a smaller timestamp.
    On a, b's move goes first in the log and a's own move becomes a cycle: the
    event says X went back to the top and P went under X."""
    a, b = Doc(peer_id=2), Doc(peer_id=1)
    ta = a.tree(NAME)
    x, p = ta.create(), ta.create()
    b.import_update(a.export_update())
    ta.move(x, p)  # (3, 2)
    b.tree(NAME).move(p, x)  # (3, 1): earlier
    got = events_of(a)
    a.import_update(b.export_update(since=a.version))
    assert got == [
        (
            TreeChange("move", x, old_parent=p, old_index=0, new_parent=None, new_index=0),
            TreeChange("move", p, old_parent=None, old_index=1, new_parent=x, new_index=0),
        )
    ]
    assert ta.children(None) == [x]
    assert ta.children(x) == [p]


def test_a_concurrent_delete_takes_the_subtree_and_a_later_move_brings_it_back() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    ta = a.tree(NAME)
    x = ta.create()
    c1, c2 = ta.create(x), ta.create(x)
    b.import_update(a.export_update())
    e = Doc.load(a.save(), peer_id=5)  # e saw the tree before the delete
    got = events_of(a)
    b.tree(NAME).delete(x)  # (4, 2)
    a.import_update(b.export_update(since=a.version))
    assert got == [(TreeChange("delete", x, old_parent=None, old_index=0),)]
    assert ta.to_py() == []
    # e moves X concurrently with a greater timestamp, (4, 5): the move wins
    # over the delete, and X comes back with its subtree. Every node of it is
    # reported, parents first.
    te = e.tree(NAME)
    other = te.create()  # (4, 5)
    te.move(x, other)  # (5, 5)
    got.clear()
    a.import_update(e.export_update(since=a.version))
    assert got == [
        (
            TreeChange("create", other, new_parent=None, new_index=0),
            TreeChange("create", x, new_parent=other, new_index=0),
            TreeChange("create", c1, new_parent=x, new_index=0),
            TreeChange("create", c2, new_parent=x, new_index=1),
        )
    ]
    assert ta.children(x) == [c1, c2]


def test_operations_waiting_for_their_creation_report_nothing_until_it_arrives() -> None:
    a, b, c = Doc(peer_id=1), Doc(peer_id=2), Doc(peer_id=3)
    x = a.tree(NAME).create()
    b.import_update(a.export_update())
    z = b.tree(NAME).create(x)
    c.tree(NAME).children()  # c reads the tree before anything arrives
    got = events_of(c)
    c.import_update(b.export_update(since=a.version))  # only b's part: z under unknown x
    assert got == [()]
    c.import_update(a.export_update())
    assert got[-1] == (
        TreeChange("create", x, new_parent=None, new_index=0),
        TreeChange("create", z, new_parent=x, new_index=0),
    )


def test_remote_data_changes_are_reported_per_node() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    x = a.tree(NAME).create(data={"k": 1, "nested": {"l": [1]}})
    b.import_update(a.export_update())
    b.tree(NAME).children()
    got = events_of(b)
    a.tree(NAME).data(x)["k"] = 2
    del a.tree(NAME).data(x)["k"]
    a.tree(NAME).data(x)["nested"]["l"].append(2)
    a.tree(NAME).data(x)["new"] = True
    b.import_update(a.export_update(since=b.version))
    assert got == [(TreeChange("data", x, keys={"k": "delete", "nested": "update", "new": "add"}),)]


def test_a_tree_never_read_here_is_reported_as_unknown() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    a.tree(NAME).create()
    b.import_update(a.export_update())
    changes: list[Change] = []
    b.observe(lambda ev: changes.extend(ev.changes))
    a.tree(NAME).create()
    b.import_update(a.export_update(since=b.version))  # b never read the tree
    assert [(c.path, c.kind, c.tree) for c in changes] == [((NAME,), "tree", None)]
    a.tree(NAME).create()
    b.import_update(a.export_update(since=b.version))  # now it has: exact from here on
    assert changes[-1].tree is not None
    assert changes[-1].tree[0].action == "create"


def test_nested_trees_report_their_changes_at_their_path() -> None:
    doc = Doc(peer_id=1)
    changes: list[Change] = []
    doc.observe(lambda ev: changes.extend(ev.changes))
    doc.map("m")["tree"] = Tree()
    nested = doc.map("m")["tree"]
    n = nested.create(data={"a": 1})
    nested.data(n)["a"] = 2
    assert [(c.path, c.kind) for c in changes] == [
        (("m",), "map"),
        (("m", "tree"), "tree"),
        (("m", "tree"), "tree"),
    ]
    assert changes[1].tree == (TreeChange("create", n, new_parent=None, new_index=0),)
    assert changes[2].tree == (TreeChange("data", n, keys={"a": "update"}),)


# -- the property test can fail ------------------------------------------------------------

_BROKEN = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def test_the_property_catches_unordered_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reporting a remote batch's changes bottom-up instead of top-down breaks views."""
    real = tree_events.shape_changes

    def reversed_changes(*args: Any) -> list[TreeChange]:
        return list(reversed(real(*args)))

    monkeypatch.setattr("crdtsync.model.tree.shape_changes", reversed_changes)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(TreeEvents, settings=_BROKEN)


def test_the_property_catches_a_forgotten_subtree(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node brought back from the trash comes with its subtree: leaving its
    descendants out of the changes leaves them out of the views."""
    real = tree_events.shape_changes

    def topmost_only(parent: Any, kids: Any, old: Any) -> list[TreeChange]:
        return [c for c in real(parent, kids, old) if c.action != "create" or c.node in old]

    monkeypatch.setattr("crdtsync.model.tree.shape_changes", topmost_only)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(TreeEvents, settings=_BROKEN)


@pytest.mark.usefixtures("pure_tree")
def test_the_property_catches_indexes_off_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local moves must report the index before the node left its old place."""
    real = tree_mod._TreeState.apply_local_reported

    def after_removal(self: Any, op: Any, create: bool, out: list[TreeChange]) -> None:
        real(self, op, create, out)
        c = out[-1]
        if c.action == "move" and c.old_parent == c.new_parent and c.old_index:
            out[-1] = TreeChange(
                "move", c.node, c.old_parent, c.old_index - 1, c.new_parent, c.new_index
            )

    monkeypatch.setattr(tree_mod._TreeState, "apply_local_reported", after_removal)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(TreeEvents, settings=_BROKEN)
