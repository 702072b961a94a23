"""The movable tree: API, errors, the documented concurrency cases, hostile input."""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Callable
from typing import Any

import pycrdt
import pytest

from crdtsync import Doc, InvalidOperationError, InvalidValueError, Map, Tree
from crdtsync.errors import TreeCycleError
from crdtsync.model.doc import DEFAULT_LIMITS
from crdtsync.model.tree import MAX_KEY, _TreeState, key_between, parse_op, valid_key

# Every test runs on the Rust tree state and on the pure-Python reference.
pytestmark = pytest.mark.usefixtures("tree_path")


def sync(*docs: Doc) -> None:
    """Exchange everything between all pairs."""
    for a in docs:
        for b in docs:
            if a is not b:
                b.import_update(a.export_update(since=b.version))


def state(t: Tree) -> _TreeState:
    b = t._binding()
    assert b is not None
    return b.state


def check(t: Tree, deep: bool = True) -> None:
    """The tree's invariants, against every operation in its document."""
    b = t._binding()
    assert b is not None
    b.check(deep)


def shape(t: Tree) -> Any:
    """The structure without data: nested [(id, children)]."""

    def walk(items: list[dict[str, Any]]) -> list[Any]:
        return [(i["id"], walk(i["children"])) for i in items]

    return walk(t.to_py())


def foreign(doc: Doc, name: str, client: int, edit: Callable[[Any], None]) -> None:
    """A plain Yjs writer edits the tree's Y.Map directly; ``doc`` imports its update."""
    y = pycrdt.Doc(client_id=client)
    y.apply_update(doc.export_yjs_update())
    m = y.get(name, type=pycrdt.Map)
    before = y.get_state()
    with y.transaction():
        edit(m)
    doc.import_yjs_update(y.get_update(before))


# -- the issue's walkthrough and the API ---------------------------------------------------


def test_issue_walkthrough() -> None:
    doc = Doc()
    outline = doc.tree("outline")
    ch1 = outline.create(data={"title": "Chapter 1"})
    s1 = outline.create(parent=ch1, index=0, data={"title": "Intro"})
    assert outline.parent(s1) == ch1
    assert outline.children(ch1) == [s1]
    outline.move(s1, parent=None, index=0)
    assert outline.children(None) == [s1, ch1]
    outline.delete(ch1)
    assert outline.parent(s1) is None
    assert outline.children(None) == [s1]
    outline.data(s1)["title"] = "Prologue"
    assert s1 in outline
    assert ch1 not in outline
    assert len(outline) == 1
    assert outline.to_py() == [{"id": s1, "data": {"title": "Prologue"}, "children": []}]
    assert doc.to_py() == {"outline": outline.to_py()}
    assert doc["outline"].to_py() == outline.to_py()
    assert doc.roots() == {"outline": "tree"}


def test_node_ids_are_peer_and_clock() -> None:
    doc = Doc(peer_id=42)
    t = doc.tree("t")
    a = t.create()
    b = t.create()
    assert (a, b) == ("42:1", "42:2")


def test_index_semantics() -> None:
    t = Doc().tree("t")
    a = t.create()
    b = t.create()
    c = t.create(index=0)
    d = t.create(index=2)
    assert t.children() == [c, a, d, b]
    t.move(b, None, 0)  # index counts the siblings without the moved node
    assert t.children() == [b, c, a, d]
    t.move(b, None, 3)
    assert t.children() == [c, a, d, b]
    t.move(c, None)  # None appends
    assert t.children() == [a, d, b, c]
    t.move(a, None, 3)
    assert t.children() == [d, b, c, a]
    p = t.create()
    for _ in range(10):
        t.move(a, p, 0)  # a no-op move writes nothing
        assert t.children(p) == [a]
    x = t.create(p, 0)
    t.move(a, p, 0)
    assert t.children(p) == [a, x]


def test_a_move_that_changes_nothing_writes_nothing() -> None:
    doc = Doc()
    t = doc.tree("t")
    a = t.create()
    t.create()
    v = doc.version
    t.move(a, None, 0)
    assert doc.version == v


@pytest.mark.parametrize("bad", [-1, 3, 1.0, "0", True])
def test_bad_index_raises_and_writes_nothing(bad: Any) -> None:
    doc = Doc()
    t = doc.tree("t")
    a, b = t.create(), t.create()
    v = doc.version
    if bad is True:  # bool is an int subclass: refused like the other non-ints
        with pytest.raises(InvalidOperationError):
            t.move(a, None, bad)
        return
    with pytest.raises(InvalidOperationError, match="index"):
        t.move(a, None, bad)
    with pytest.raises(InvalidOperationError, match="index"):
        t.create(None, bad)
    assert doc.version == v
    assert t.children() == [a, b]


def test_cycles_unknown_and_deleted_nodes_raise_and_change_nothing() -> None:
    doc = Doc()
    t = doc.tree("t")
    a = t.create()
    b = t.create(a)
    c = t.create(b)
    gone = t.create()
    t.delete(gone)
    before, v = t.to_py(), doc.version
    with pytest.raises(TreeCycleError, match="under itself"):
        t.move(a, a)
    with pytest.raises(TreeCycleError, match="descendant"):
        t.move(a, c)
    with pytest.raises(InvalidOperationError, match="unknown node"):
        t.move("9:9", a)
    with pytest.raises(InvalidOperationError, match="unknown parent"):
        t.move(c, "9:9")
    with pytest.raises(InvalidOperationError, match="deleted"):
        t.move(gone, a)
    with pytest.raises(InvalidOperationError, match="deleted"):
        t.move(c, gone)
    with pytest.raises(InvalidOperationError, match="deleted"):
        t.create(gone)
    with pytest.raises(InvalidOperationError, match="deleted"):
        t.delete(gone)
    with pytest.raises(InvalidOperationError, match="str"):
        t.move(1, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidOperationError, match="str"):
        t.move(c, 1)  # type: ignore[arg-type]
    for read in (t.parent, t.children, t.data):
        with pytest.raises(InvalidOperationError):
            read(gone)
        with pytest.raises(InvalidOperationError):
            read("nope")
    assert t.to_py() == before
    assert doc.version == v
    assert issubclass(TreeCycleError, InvalidOperationError)


def test_delete_removes_the_subtree() -> None:
    t = Doc().tree("t")
    a = t.create()
    b = t.create(a)
    c = t.create(b)
    d = t.create()
    t.delete(a)
    assert [x in t for x in (a, b, c, d)] == [False, False, False, True]
    assert len(t) == 1
    assert list(t) == [d]
    with pytest.raises(InvalidOperationError):
        t.move(c, d)  # inside a deleted subtree: deleted too


def test_node_data_holds_nested_exact_values() -> None:
    a, b = Doc(), Doc()
    t = a.tree("t")
    n = t.create(data={"big": 2**70, "f": 1.0, "nested": {"l": [1, {"x": b"\x00"}]}})
    sync(a, b)
    data = b.tree("t").data(n)
    assert isinstance(data, Map)
    assert data.to_py() == {"big": 2**70, "f": 1.0, "nested": {"l": [1, {"x": b"\x00"}]}}
    assert type(data["f"]) is float
    data["nested"]["l"].append(3)
    sync(a, b)
    assert t.data(n)["nested"]["l"].to_py() == [1, {"x": b"\x00"}, 3]


def test_bad_data_writes_nothing() -> None:
    doc = Doc()
    t = doc.tree("t")
    t.create()
    v = doc.version
    with pytest.raises(InvalidValueError):
        t.create(data={"x": {1, 2}})
    with pytest.raises(InvalidValueError):
        t.create(data=[1])  # type: ignore[arg-type]
    assert doc.version == v
    assert len(t) == 1


def test_deep_chains_do_not_recurse() -> None:
    t = Doc().tree("t")
    p = None
    for _ in range(3000):
        p = t.create(p)
    out = t.to_py()
    depth = 0
    while out:
        out = out[0]["children"]
        depth += 1
    assert depth == 3000
    assert len(t) == 3000


def test_nested_trees() -> None:
    a, b = Doc(), Doc()
    m = a.map("m")
    t = Tree()
    assert not t.attached
    assert t.to_py() == []
    with pytest.raises(InvalidOperationError):
        t.create()
    m["tree"] = t
    n = t.create(data={"x": 1})  # the user's object now edits the stored tree
    m["tree"].create(parent=n)
    a.list("l").append(Tree())
    a.list("l")[0].create()
    sync(a, b)
    nested = b.map("m")["tree"]
    assert isinstance(nested, Tree)
    assert nested.to_py() == m["tree"].to_py()
    assert len(nested.to_py()[0]["children"]) == 1
    assert len(b.list("l")[0]) == 1
    # Wrappers are recreated on each access, the state is not.
    assert b.map("m")["tree"]._binding() is nested._binding()
    assert b.to_py() == a.to_py()


def _saved_with_moves() -> tuple[Doc, Tree]:
    doc = Doc(peer_id=7)
    t = doc.tree("t")
    ids = [t.create(data={"i": i}) for i in range(50)]
    rng = random.Random(3)
    for _ in range(200):
        with contextlib.suppress(InvalidOperationError):
            t.move(rng.choice(ids), rng.choice([None, *ids]), None)
    t.delete(ids[0])
    return doc, t


def _count_rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from crdtsync.model import tree as tree_mod

    rebuilds: list[int] = []
    real = tree_mod._Binding._rebuild

    def counting(self: Any, old: Any = None) -> None:
        rebuilds.append(1)
        real(self, old)

    monkeypatch.setattr(tree_mod._Binding, "_rebuild", counting)
    return rebuilds


def test_load_starts_from_the_saved_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    doc, t = _saved_with_moves()
    saved = doc.save()
    rebuilds = _count_rebuilds(monkeypatch)
    loaded = Doc.load(saved)
    lt = loaded.tree("t")
    assert lt.to_py() == t.to_py()
    assert lt.children(None) == t.children(None)
    assert rebuilds == []  # no operation was read: the shape came with the save
    check(lt)  # and it is the fold of the document's operations
    assert state(lt).log == []  # no undo log until an older operation arrives
    lt.move(lt.children(None)[0], None)  # local edits need none
    assert rebuilds == []
    check(lt)


def test_a_save_without_shapes_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Saves written before shapes were saved (and saves whose shapes are refused)."""
    from crdtsync.format import envelope

    doc, t = _saved_with_moves()
    env = envelope.unpack(doc.save(), DEFAULT_LIMITS)
    assert env.cache  # this release saves shapes...
    bare = envelope.pack(env.update, compact=True, snapshot=True)  # ...older ones did not
    rebuilds = _count_rebuilds(monkeypatch)
    lt = Doc.load(bare).tree("t")
    assert lt.to_py() == t.to_py()
    assert lt.children(None) == t.children(None)
    assert len(rebuilds) == 1
    check(lt)


def test_lamport_clock_exceeds_everything_seen() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    ta = a.tree("t")
    for _ in range(5):
        ta.create()
    sync(a, b)
    n = b.tree("t").create()
    assert n == "2:6"


def test_edits_in_one_transaction() -> None:
    a, b = Doc(), Doc()
    t = a.tree("t")
    updates: list[bytes] = []
    a.observe_updates(lambda u, origin, local: updates.append(u))
    with a.transaction():
        x = t.create(data={"k": 1})
        y = t.create(x)
        t.move(y, None, 0)
        t.delete(x)
    assert len(updates) == 1
    assert t.children() == [y]
    check(t)
    b.import_yjs_update(updates[0])
    assert b.to_py() == a.to_py()


def test_edits_on_an_observed_document() -> None:
    """With observers, every edit goes through the document's transaction wrapper."""
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    updates: list[bytes] = []
    events: list[Any] = []
    a.observe_updates(lambda u, origin, local: updates.append(u))
    a.observe(events.append)
    t = a.tree("t")
    x = t.create()
    y = t.create(x, data={"k": [1]})
    t.move(y, None, 0)
    t.delete(x)
    assert len(updates) == 4
    assert all(e.local for e in events)
    for u in updates:
        b.import_yjs_update(u)
    assert b.to_py() == a.to_py() == {"t": [{"id": y, "data": {"k": [1]}, "children": []}]}
    check(t)
    check(b.tree("t"))


def test_observers_see_tree_changes() -> None:
    a, b = Doc(), Doc()
    events: list[Any] = []
    b.observe(events.append)
    ta = a.tree("t")
    ta.create()
    sync(a, b)
    assert events
    assert not events[-1].local
    assert b.tree("t").children() == ta.children()


# -- the documented concurrency cases ------------------------------------------------------


def three() -> tuple[Doc, Doc, Doc]:
    return Doc(peer_id=1), Doc(peer_id=2), Doc(peer_id=3)


def test_concurrent_moves_of_one_node_the_later_wins() -> None:
    a, b, c = three()
    t = a.tree("t")
    x, p, q = t.create(), t.create(), t.create()
    sync(a, b, c)
    b.tree("t").move(x, p)  # lamport 4 at peer 2
    c.tree("t").move(x, q)  # lamport 4 at peer 3: the later timestamp
    sync(a, b, c)
    for d in (a, b, c):
        tr = d.tree("t")
        assert tr.parent(x) == q
        assert tr.children(p) == []
        assert tr.children(q) == [x]
        assert len(tr) == 3  # nothing duplicated
    assert a.to_py() == b.to_py() == c.to_py()


def test_concurrent_moves_forming_a_cycle_the_earlier_wins() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    t = a.tree("t")
    x, y = t.create(), t.create()
    sync(a, b)
    a.tree("t").move(x, y)  # (3, 1): earlier
    b.tree("t").move(y, x)  # (3, 2): would close a cycle after it: skipped
    sync(a, b)
    for d in (a, b):
        tr = d.tree("t")
        assert tr.children(None) == [y]
        assert tr.children(y) == [x]
        check(tr)
    assert a.to_py() == b.to_py()


def test_concurrent_move_and_delete_of_an_ancestor() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    t = a.tree("t")
    anc = t.create()
    mid = t.create(anc)
    out = t.create(mid)
    inside = t.create(mid)
    keep = t.create()
    sync(a, b)
    a.tree("t").delete(anc)
    tb = b.tree("t")
    tb.move(out, keep)  # moved out of the deleted subtree: survives
    tb.move(inside, mid, 0)  # moved within it: deleted with it
    sync(a, b)
    for d in (a, b):
        tr = d.tree("t")
        assert tr.children(None) == [keep]
        assert tr.children(keep) == [out]
        assert inside not in tr
        assert anc not in tr
    assert a.to_py() == b.to_py()


def test_concurrent_move_into_a_deleted_subtree_deletes_the_node() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    t = a.tree("t")
    anc, x = t.create(), t.create()
    sync(a, b)
    a.tree("t").delete(anc)
    b.tree("t").move(x, anc)
    sync(a, b)
    assert a.tree("t").children() == b.tree("t").children() == []


def test_concurrent_move_and_delete_of_one_node_the_later_wins() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    t = a.tree("t")
    x, p = t.create(), t.create()
    sync(a, b)
    a.tree("t").delete(x)  # (3, 1)
    b.tree("t").move(x, p)  # (3, 2): later, so x is moved, not deleted
    sync(a, b)
    assert a.tree("t").children(p) == b.tree("t").children(p) == [x]
    # And the other way round: the delete is later.
    a2, b2 = Doc(peer_id=2), Doc(peer_id=1)
    t2 = a2.tree("t")
    x2, p2 = t2.create(), t2.create()
    sync(a2, b2)
    a2.tree("t").delete(x2)  # (3, 2): later
    b2.tree("t").move(x2, p2)  # (3, 1)
    sync(a2, b2)
    assert x2 not in a2.tree("t")
    assert x2 not in b2.tree("t")


def test_concurrent_inserts_at_one_index_are_ordered_the_same_everywhere() -> None:
    a, b, c = three()
    t = a.tree("t")
    first, last = t.create(), t.create()
    sync(a, b, c)
    new = [d.tree("t").create(None, 1) for d in (a, b, c)]
    sync(a, b, c)
    order = a.tree("t").children()
    assert order[0] == first
    assert order[-1] == last
    assert sorted(order[1:-1]) == sorted(new)
    assert b.tree("t").children() == c.tree("t").children() == order
    keys = [state(a.tree("t")).key_of(n) for n in order]
    assert len(set(keys)) == len(keys)  # the jitter kept the keys apart


def test_creating_a_child_under_a_node_deleted_concurrently() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    t = a.tree("t")
    p = t.create()
    sync(a, b)
    a.tree("t").delete(p)
    child = b.tree("t").create(p, data={"x": 1})
    assert child in b.tree("t")
    sync(a, b)
    for d in (a, b):
        tr = d.tree("t")
        assert child not in tr  # created, but inside the deleted subtree
        assert tr.to_py() == []
        with pytest.raises(InvalidOperationError, match="deleted"):
            tr.move(child, None)


def test_operations_arriving_before_what_they_depend_on() -> None:
    """c receives b's moves of a's nodes before a's creations: nothing lost."""
    a, b, c = three()
    t = a.tree("t")
    x, y = t.create(), t.create()
    sync(a, b)
    tb = b.tree("t")
    z = tb.create(x)
    tb.move(y, z)
    c.import_update(b.export_update(since=a.version))  # only b's part
    assert c.tree("t").to_py() == []  # depends on nodes c has not seen
    check(c.tree("t"))
    c.import_update(a.export_update())
    assert c.to_py() == b.to_py()
    assert shape(c.tree("t")) == [(x, [(z, [(y, [])])])]


def test_every_delivery_order_converges() -> None:
    """Every interleaving of three writers' updates (each writer's own stay in order:
    the update validator refuses a writer's clock gap) gives one tree."""
    a, b, c = three()
    t = a.tree("t")
    nodes = [t.create() for _ in range(4)]
    sync(a, b, c)
    updates: list[tuple[int, bytes]] = []
    for d, moves in (
        (a, [(0, 1), (2, 3)]),
        (b, [(1, 0), (3, 2)]),
        (c, [(3, 0), (1, None)]),
    ):
        tr = d.tree("t")
        for n, p in moves:
            v = d.version
            with contextlib.suppress(InvalidOperationError):
                tr.move(nodes[n], None if p is None else nodes[p])
            updates.append((d.peer_id, d.export_update(since=v)))

    results = set()
    base = a.export_update(since=None)
    orders = 0
    for perm in itertools.permutations(range(len(updates))):
        if any(perm.index(i) > perm.index(i + 1) for i in (0, 2, 4)):
            continue  # a writer's second update before its first
        orders += 1
        d = Doc(peer_id=9)
        d.import_update(base)
        tr = d.tree("t")
        tr.children()  # a binding exists before the updates arrive
        for i in perm:
            d.import_update(updates[i][1])
            check(tr, deep=False)
        check(tr)
        results.add(repr(shape(tr)))
    assert orders == 90
    assert len(results) == 1


# -- position keys -------------------------------------------------------------------------


def test_key_between_is_strictly_between_and_valid() -> None:
    rng = random.Random(7)
    keys = [key_between(None, None, 0)]
    for i in range(3000):
        j = rng.randrange(len(keys) + 1)
        lo = keys[j - 1] if j > 0 else None
        hi = keys[j] if j < len(keys) else None
        k = key_between(lo, hi, rng.randrange(10**6))
        assert valid_key(k)
        assert lo is None or lo < k
        assert hi is None or k < hi
        keys.insert(j, k)
        assert i % 500 or keys == sorted(keys)
    assert sum(map(len, keys)) / len(keys) < 5.5
    assert max(len(k) for k in keys) <= 8


def test_appends_and_prepends_stay_short() -> None:
    t = Doc().tree("t")
    for _ in range(2000):
        t.create()
    for _ in range(2000):
        t.create(index=0)
    st = state(t)
    assert max(len(k) for k in st.positions.values()) <= 6
    assert t.children() == [n for _, n in sorted((st.key_of(n), n) for n in t.children())]


def test_runs_of_inserts_into_one_gap_stay_short() -> None:
    """Typing forward (after the previous insert) or backward (before it) in the
    middle of a list: keys are taken near the previous one, not in the middle."""
    t = Doc().tree("t")
    first = t.create()
    t.create()
    last = first
    for _ in range(500):
        last = t.create(None, t.children().index(last) + 1)
    for _ in range(500):
        t.create(None, 1)
    st = state(t)
    assert max(len(st.key_of(n)) for n in t.children()) <= 16
    assert t.children()[0] == first


def test_between_handles_edge_keys() -> None:
    smallest_int = "A" + "0" * 26
    for b in (smallest_int + "1", "A" + "0" * 25 + "1"):
        for j in range(40):
            k = key_between(None, b, j)
            assert valid_key(k)
            assert k < b
    big = "z" + "z" * 26
    for j in range(40):
        k2 = key_between(big, None, j)
        assert valid_key(k2)
        assert k2 > big
        k3 = key_between("a0", "a0" + "1", j)  # no one-digit fraction fits below "1"
        assert valid_key(k3)
        assert "a0" < k3 < "a01"
    assert not valid_key(smallest_int)
    assert not valid_key("a0" + "0")  # trailing zero
    assert not valid_key("a")  # integer part cut short
    assert not valid_key("a0 ")
    assert not valid_key("a" + "1" * MAX_KEY)


def test_integer_parts_step_exactly_across_lengths() -> None:
    from crdtsync.model.tree import (
        _SMALLEST_INT,
        _decrement_int,
        _increment_int,
        _int_part,
        _int_value,
    )

    for step in (_increment_int, _decrement_int):
        x = "a0"
        for _ in range(5000):  # crosses "a" -> "b", "a" -> "Z" -> "Y"
            y = step(x)
            assert y is not None
            assert _int_value(y) - _int_value(x) == (1 if step is _increment_int else -1)
            assert (y > x) == (step is _increment_int)
            assert _int_part(_int_value(y)) == y
            x = y
    top = "z" * 27
    assert _int_part(_int_value(top) + 1) is None
    bottom = "A" + "0" * 25 + "1"
    assert _int_part(_int_value(bottom) - 1) is None  # that would be the invalid _SMALLEST_INT
    assert _int_part(_int_value(bottom)) == bottom != _SMALLEST_INT


def test_tied_keys_order_by_node_and_inserts_land_after_the_tie() -> None:
    st = _TreeState()
    ops = [
        ((1 << 64) | 1, "1:1", "", "a0"),
        ((1 << 64) | 2, "2:1", "", "a0"),  # the same key: a forged or unlucky tie
    ]
    st.integrate(ops)
    assert st.children("") == ["1:1", "2:1"]
    # Between the tied pair: fits only if the id sorts between them.
    k = st.key_for("", None, 1, (5 << 64) | 1, "1:5")
    assert k == "a0"
    k2 = st.key_for("", None, 1, (5 << 64) | 3, "3:5")
    assert k2 is not None
    assert k2 > "a0"  # lands after the tied run


# -- hostile and foreign input -------------------------------------------------------------


def test_parse_op_refuses_malformed_entries() -> None:
    good = parse_op("5", "7", "1:2 3 a0xx")
    assert good == ((7 << 64) | 5, "1:2", "5:3", "a0xx")
    assert parse_op("5", "7", "  a0xx") == ((7 << 64) | 5, "5:7", "", "a0xx")
    assert parse_op("5", "7", "3 - junk") == ((7 << 64) | 5, "5:3", "-", "")
    for key, value in [
        ("07", " 1 a0"),
        ("0", " 1 a0"),
        ("x", " 1 a0"),
        ("7", 1.0),
        ("7", None),
        ("7", "1 2"),
        ("7", "1 2 a0 x"),
        ("7", "01 2 a0xx"),
        ("7", "1:02 2 a0xx"),
        ("7", "1:2:3 2 a0xx"),
        ("7", "1 2 a00"),  # position key with a trailing zero
        ("7", "1 2 "),
        ("7", "\u0661 2 a0xx"),  # ARABIC-INDIC DIGIT ONE: a digit, but not ASCII
        (str(2**53 + 1), " 1 a0xx"),
        ("7", "1 2 " + "a" + "1" * (MAX_KEY + 1)),
    ]:
        assert parse_op("5", key, value) is None, (key, value)


def test_foreign_garbage_is_ignored_deterministically() -> None:
    a, b = Doc(peer_id=1), Doc(peer_id=2)
    t = a.tree("t")
    x = t.create(data={"n": 1})
    y = t.create()
    sync(a, b)

    def junk(m: Any) -> None:
        m["77"] = pycrdt.Map(
            {
                "1": "1:1 1:2 a5xx",  # at lamport 1, y did not exist yet: skipped
                "7": "1:1 1:2 a5xx",  # a valid move of x under y, by writer 77
                "2": "garbage",
                "3": 3.0,
                "04": " 1:1 a0xx",
                "5": pycrdt.Map({"x": 1}),
                "8": "1:1 1:1 a1xx",  # x under itself: skipped
                "d9": "not a map",
            }
        )
        m["not-a-writer"] = "x"
        m["78"] = "a writer container that is not a map"
        m["79"] = pycrdt.Array(["1 2 a0"])

    foreign(a, "t", 77, junk)
    sync(a, b)
    for d in (a, b):
        tr = d.tree("t")
        assert tr.children() == [y]
        assert tr.children(y) == [x]
        check(tr)
    loaded = Doc.load(a.save())
    assert loaded.to_py() == a.to_py() == b.to_py()


def test_foreign_rewrites_of_operations_trigger_a_rebuild() -> None:
    a = Doc(peer_id=1)
    t = a.tree("t")
    x, y = t.create(), t.create()
    t.move(x, y)

    def rewrite(m: Any) -> None:
        m["1"]["3"] = "1 - "  # the move of x becomes a delete
        del m["1"]["2"]  # and y's creation disappears

    foreign(a, "t", 50, rewrite)
    assert t.to_py() == []  # x deleted; y never created
    check(t)
    fresh = Doc.load(a.save())
    assert fresh.to_py() == a.to_py()


def test_a_node_without_a_data_map_is_readable() -> None:
    a = Doc(peer_id=1)
    a.tree("t").create()

    def bare(m: Any) -> None:
        m["60"] = pycrdt.Map({"1": "  a5xx"})  # a creation with no "d1" data map

    foreign(a, "t", 60, bare)
    t = a.tree("t")
    assert "60:1" in t
    assert t.to_py()[1] == {"id": "60:1", "data": {}, "children": []}
    with pytest.raises(InvalidOperationError, match="no data map"):
        t.data("60:1")
    t.move("60:1", None, 0)  # still movable


def test_yjs_clients_see_the_documented_layout() -> None:
    doc = Doc(peer_id=5)
    t = doc.tree("t")
    a = t.create(data={"title": "A"})
    t.create(a)
    t.delete(a)
    y = pycrdt.Doc()
    y.apply_update(doc.export_yjs_update())
    raw = y.get("t", type=pycrdt.Map).to_py()
    assert raw is not None
    assert set(raw) == {"5"}
    cont = raw["5"]
    assert cont["1"].startswith("  ")  # creation of 5:1 at the top level
    assert cont["2"].startswith(" 1 ")  # creation of 5:2 under 5:1
    assert cont["3"] == "1 - "  # delete of 5:1
    assert cont["d1"] == {"title": "A"}
    assert cont["d2"] == {}


@pytest.mark.usefixtures("pure_tree")
def test_state_check_catches_corruption() -> None:
    t = Doc().tree("t")
    a = t.create()
    b = t.create(a)
    st = state(t)
    st.check()
    st.parent[a] = b  # a cycle
    with pytest.raises(AssertionError, match=r"cycle|kids|fold"):
        st.check()
    st.parent[a] = ""
    st.kids[a][b] = "zz"
    with pytest.raises(AssertionError):
        st.check()


def test_tree_changes_reported_as_tree_events() -> None:
    from crdtsync import Doc

    doc = Doc()
    outline = doc.tree("outline")
    outline.create(data={"title": "x"})
    events = []
    doc.observe(events.append)
    with doc.transaction():
        n = outline.create()
        outline.move(n, parent=None, index=0)
    assert len(events) == 1
    assert [(c.path, c.kind) for c in events[0].changes] == [(("outline",), "tree")]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_moves_place_nodes_where_key_for_would(seed: int) -> None:
    """Tree.move inlines key_for's append, prepend and first-child cases: same keys, always.

    Few nodes and many moves: parents with no children (the first-child
    case), a few (their extreme key), more than ``_FEW`` (the sorted list),
    prepends that borrow, and moves that leave a node where it is (no write).
    """
    rng = random.Random(seed)
    t = Doc(peer_id=3).tree("t")
    nodes = [t.create() for _ in range(30)]
    for _ in range(3000):
        st = state(t)
        node = rng.choice(nodes)
        parent = rng.choice([None, None, *nodes])
        index = rng.choice([None, 0, 0, 1])
        p = "" if parent is None else parent
        lam = st.clock + 1
        try:
            expected = st.key_for(p, node, index, lam << 64 | 3, node)
        except InvalidOperationError:
            expected = None
        try:
            t.move(node, parent, index)
        except InvalidOperationError:
            continue
        if expected is None:
            assert st.clock == lam - 1  # already there: nothing written
        else:
            assert st.key_of(node) == expected
            assert st.clock == lam
    check(t)


def test_what_the_document_tells_its_containers() -> None:
    """The named methods the tree uses instead of Doc's private state."""
    doc = Doc()
    t = doc.tree("t")
    assert doc.root_name(t) == "t"
    assert doc.root_name(Tree()) is None
    assert not doc.in_transaction
    with doc.transaction():
        assert doc.in_transaction
        assert not doc.importing  # a local transaction
        with doc.edit(t):
            t.create()
    assert not doc.in_transaction
    assert doc.roots() == {"t": "tree"}  # edit() registered the root with its first edit
    assert not doc.observed
    doc.observe_updates(lambda *_: None)
    assert doc.observed
    # importing is what the tree's observers ask: remote operations are folded,
    # local ones (already applied) are not folded twice.
    other = Doc()
    other.import_update(doc.export_update())
    ot = other.tree("t")
    ot.children()
    n = t.create()
    other.import_update(doc.export_update(since=other.version))
    assert ot.children() == t.children()
    assert n in ot
    check(ot)
