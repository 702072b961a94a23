r"""Per-node change events of the movable tree, and how they are computed.

A transaction that changes a tree's shape reports it as a list of
:class:`TreeChange`\ s. Applied in order to the tree as it was before (the
*view* of an observer), they give the tree as it is after: the live nodes, each
one's parent and the order of every node's children (``docs/TREE.md``,
"Change events"). Data changes are reported per node too, after the shape.

For a local edit the events are the edits themselves (each one is effective:
the tree refused anything else). For what remote operations did, the tree
compares the old and new place of every node a batch touched
(:func:`shape_changes`), because the effective change can differ from any
single operation: an earlier remote move re-orders the log and changes where a
local move took effect, a concurrent delete takes a whole subtree, a later move
out of the trash brings one back.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["TreeChange", "shape_changes"]

ROOT = ""  # the top level (as in crdtsync.model.tree)
TRASH = "-"  # parent of deleted nodes


@dataclass(frozen=True)
class TreeChange:
    """One node's change, within a tree's :class:`~crdtsync.Change`.

    ``None`` as a parent means the top level. Indexes count the parent's
    children at the moment the change applies (after the changes before it).

    Attributes:
        action: ``"create"`` (the node appears: created, or brought back with
            its subtree, each node of which is reported, parents first),
            ``"move"`` (with its subtree), ``"delete"`` (with its subtree; the
            nodes below it are not reported separately) or ``"data"``.
        node: the node id.
        old_parent: ``move``, ``delete``: where the node was.
        old_index: ``move``, ``delete``: its index there.
        new_parent: ``create``, ``move``: where it is now.
        new_index: ``create``, ``move``: its index there (the node already
            removed from its old place).
        keys: ``data``: ``{key: "add" | "update" | "delete"}`` of the node's
            data map (``"update"`` for a change inside a nested value).
    """

    action: str
    node: str
    old_parent: str | None = None
    old_index: int | None = None
    new_parent: str | None = None
    new_index: int | None = None
    keys: dict[str, str] | None = None


def _pub(p: str) -> str | None:
    return None if p == ROOT else p


def shape_changes(
    parent: Mapping[str, str],
    kids: Mapping[str, Mapping[str, str]],
    old: Mapping[str, tuple[str | None, str]],
) -> list[TreeChange]:
    """The changes that turn the old shape into the current one.

    Args:
        parent: node -> parent (``ROOT``, ``TRASH`` or a node), now.
        kids: parent -> {child: position key}, now.
        old: for every node whose place may have changed, its place before:
            ``(parent, pos)``, parent ``None`` if the node did not exist, pos
            ``""`` in the trash. Nodes not in ``old`` did not move.

    Returns:
        ``create``, ``move`` and ``delete`` changes, in an order in which they
        apply to the old shape: appearing and moving nodes top-down in the new
        tree (so that no intermediate step makes a cycle, and a parent exists
        before its children arrive), then the deletions of the topmost nodes
        of the parts that disappear.
    """

    def pos_of(n: str) -> str:
        p = parent.get(n)
        return "" if p is None or p == TRASH else kids[p][n]

    changed = {
        n for n, (p, k) in old.items() if parent.get(n) != p or (p != TRASH and k != pos_of(n))
    }
    if not changed:
        return []

    def old_parent(n: str) -> str | None:
        return old[n][0] if n in old else parent.get(n)

    live_new: dict[str | None, bool] = {ROOT: True, TRASH: False, None: False}
    live_old: dict[str | None, bool] = {ROOT: True, TRASH: False, None: False}

    def is_live(n: str, memo: dict[str | None, bool], up: bool) -> bool:
        path: list[str | None] = []
        x: str | None = n
        while x not in memo:
            path.append(x)
            assert x is not None
            x = old_parent(x) if up else parent.get(x)
            if len(path) > len(parent) + 1:  # a cycle: impossible in a valid state
                raise AssertionError(f"cycle through {n}")
        r = memo[x]
        for y in path:
            memo[y] = r
        return r

    depth: dict[str, int] = {ROOT: 0}

    def new_depth(n: str) -> int:
        path: list[str] = []
        x = n
        while x not in depth:
            path.append(x)
            x = parent[x]
        d = depth[x]
        for y in reversed(path):
            d += 1
            depth[y] = d
        return depth[n]

    moves: list[str] = []
    appear: list[str] = []
    doomed: list[str] = []
    for n in changed:
        lo = is_live(n, live_old, True)
        ln = is_live(n, live_new, False)
        if lo and ln:
            moves.append(n)
        elif ln:
            appear.append(n)
        elif lo:
            doomed.append(n)
    # Nodes that appear with an appearing ancestor (a subtree brought back).
    created = set(appear)
    todo = list(appear)
    while todo:
        r = todo.pop()
        for c in kids.get(r, ()):
            if c not in changed and c not in created:
                created.add(c)
                todo.append(c)

    # The observer's view of each parent's children, created from the old shape
    # on first use: [(key, node)] sorted, keys being the old ones for nodes not
    # processed yet and the new ones after. Sorting by (key, id) is the tree's
    # own order, so a bisect gives each index.
    by_old_parent: dict[str, list[str]] = {}
    for n in changed:
        p = old[n][0]
        if p is not None and p != TRASH:
            by_old_parent.setdefault(p, []).append(n)
    view: dict[str, list[tuple[str, str]]] = {}

    def children(p: str) -> list[tuple[str, str]]:
        lst = view.get(p)
        if lst is None:
            if is_live(p, live_old, True):
                lst = [(k, c) for c, k in kids.get(p, {}).items() if c not in changed]
                lst += [(old[n][1], n) for n in by_old_parent.get(p, ())]
                lst.sort()
            else:
                lst = []  # it appears in this batch: its old children were not visible
            view[p] = lst
        return lst

    out: list[TreeChange] = []
    for n in sorted([*moves, *created], key=lambda m: (new_depth(m), pos_of(m), m)):
        p, k = parent[n], pos_of(n)
        if n in created:
            dst = children(p)
            i = bisect_left(dst, (k, n))
            dst.insert(i, (k, n))
            out.append(TreeChange("create", n, new_parent=_pub(p), new_index=i))
            continue
        op, ok = old[n]
        assert op is not None
        src = children(op)
        j = bisect_left(src, (ok, n))
        assert src[j] == (ok, n), "the view lost a node"
        del src[j]
        dst = children(p)
        i = bisect_left(dst, (k, n))
        dst.insert(i, (k, n))
        out.append(
            TreeChange("move", n, old_parent=_pub(op), old_index=j, new_parent=_pub(p), new_index=i)
        )

    gone = set(doomed)

    def view_parent(y: str) -> str | None:
        if y in gone or y not in changed:
            return old_parent(y)
        return parent.get(y)

    for n in sorted(doomed, key=lambda m: (old[m][1], m)):
        x = view_parent(n)
        covered = False
        while x is not None and x not in (ROOT, TRASH):
            if x in gone:
                covered = True  # deleted with an ancestor that is deleted too
                break
            x = view_parent(x)
        if covered:
            continue
        op, ok = old[n]
        assert op is not None
        src = children(op)
        j = bisect_left(src, (ok, n))
        assert src[j] == (ok, n), "the view lost a node"
        del src[j]
        out.append(TreeChange("delete", n, old_parent=_pub(op), old_index=j))
    return out
