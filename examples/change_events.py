"""Change events as an editor binding uses them: apply each change, never re-read.

A local replica and a remote one (reached by exchanging updates) each keep an
"editor view" of the document's texts, built only from change events: text
deltas in code points, list deltas and map key changes, and per-node tree
changes. After every step the views are checked against the documents.

Run: python examples/change_events.py
"""

from __future__ import annotations

from typing import Any

from crdtsync import Change, ChangeEvent, Doc, Text, Tree


def apply_text_delta(text: str, delta: list[dict[str, Any]]) -> str:
    """Apply a Quill-style delta, in code points, to ``text``."""
    out, pos = [], 0
    for op in delta:
        if "retain" in op:
            out.append(text[pos : pos + op["retain"]])
            pos += op["retain"]
        elif "delete" in op:
            pos += op["delete"]
        else:
            out.append(op["insert"])
    return "".join(out) + text[pos:]


def describe(change: Change) -> str:
    """One line per change, as an editor's log would show it."""
    where = "/".join(str(p) for p in change.path)
    if change.created and change.kind != "text":
        return f"{change.kind} {where}: appeared (read it whole: {change.kind} root)"
    if change.kind == "text":
        return f"text {where}: {change.delta}"
    if change.kind == "list":
        return f"list {where}: {change.delta}"
    if change.kind == "map":
        return f"map  {where}: {change.keys}"
    if change.kind == "tree" and change.tree is not None:
        steps = []
        for t in change.tree:
            if t.action == "create":
                steps.append(f"create {t.node} under {t.new_parent} at {t.new_index}")
            elif t.action == "move":
                steps.append(
                    f"move {t.node} from {t.old_parent}[{t.old_index}] "
                    f"to {t.new_parent}[{t.new_index}]"
                )
            elif t.action == "delete":
                steps.append(f"delete {t.node}")
            else:
                steps.append(f"data of {t.node}: {t.keys}")
        return f"tree {where}: " + "; ".join(steps)
    if change.kind == "tree":
        return f"tree {where}: changed (a tree this replica had not read: read it whole)"
    return f"{change.kind} {where}"


class EditorView:
    """What an editor shows of every text, kept from change events alone."""

    def __init__(self, name: str, doc: Doc) -> None:
        self.name = name
        self.texts: dict[tuple[str | int, ...], str] = {}
        doc.observe(self.on_change)

    def on_change(self, event: ChangeEvent) -> None:
        side = "local " if event.local else "remote"
        for change in event.changes:
            print(f"  [{self.name} {side}] {describe(change)}")
            if change.kind == "text":
                # Every text change carries its delta: no need to read the text.
                assert change.delta is not None
                old = self.texts.get(change.path, "")
                self.texts[change.path] = apply_text_delta(old, change.delta)
            elif change.kind == "list" and change.delta is not None:
                self._shift(change.path, change.delta)

    def _shift(self, path: tuple[str | int, ...], delta: list[dict[str, Any]]) -> None:
        """Renumber the texts inside a list whose items moved."""
        n = len(path)
        inside = {p: t for p, t in self.texts.items() if len(p) > n and p[:n] == path}
        for p in inside:
            del self.texts[p]
        old = new = 0
        moved: dict[int, int] = {}
        for op in delta:
            if "retain" in op:
                moved.update({old + i: new + i for i in range(op["retain"])})
                old += op["retain"]
                new += op["retain"]
            elif "delete" in op:
                old += op["delete"]
            else:
                new += len(op["insert"])
        for p, text in inside.items():
            i = p[n]
            assert isinstance(i, int)
            if i >= old:
                self.texts[(*path, i - old + new, *p[n + 1 :])] = text
            elif i in moved:
                self.texts[(*path, moved[i], *p[n + 1 :])] = text


def all_texts(doc: Doc) -> dict[tuple[str | int, ...], str]:
    out: dict[tuple[str | int, ...], str] = {("body",): str(doc.text("body"))}
    for i, card in enumerate(doc.list("cards")):
        out[("cards", i, "title")] = str(card["title"])
    out[("meta", "note")] = str(doc.map("meta")["note"])
    return {p: t for p, t in out.items() if t}


def main() -> None:
    local, remote = Doc(peer_id=1), Doc(peer_id=2)
    views = [EditorView("local", local), EditorView("remote", remote)]

    def sync(step: str) -> None:
        remote.import_update(local.export_update(since=remote.version))
        print(f"{step}: synced")
        for view, doc in zip(views, (local, remote), strict=True):
            shown = {p: t for p, t in view.texts.items() if t}
            assert shown == all_texts(doc), f"{view.name} view is out of step"

    print("1. a root text, typed and edited")
    body = local.text("body")
    body.insert(0, "héllo wörld 😀")
    local.map("meta")["note"] = Text("draft")
    sync("1")
    body.delete(0, 1)
    body.insert(0, "H")
    local.map("meta")["note"] += " v2"  # nested text: += edits it in place
    sync("1b")

    print("2. texts inside list items that move")
    cards = local.list("cards")
    cards.append({"title": Text("first"), "done": False})
    with local.transaction(origin="bulk"):
        cards.insert(0, {"title": Text("zeroth"), "done": False})
        cards[1]["title"].insert(5, " card")
        cards[1]["done"] = True
    sync("2")
    del cards[0]
    cards[0]["title"].delete(0, 6)
    sync("2b")

    print("3. a tree: create, rename, move, delete")
    tree = local.map("meta")["outline"] = Tree()
    assert isinstance(tree, Tree)
    ch1 = tree.create(data={"title": "Chapter 1"})
    ch2 = tree.create(data={"title": "Chapter 2"})
    sec = tree.create(ch1, data={"title": "Section"})
    sync("3")
    tree.data(sec)["title"] = "Section 1.1"
    tree.move(sec, ch2, 0)
    tree.delete(ch1)
    sync("3b")
    print("final local texts:", views[0].texts)
    assert local.to_py() == remote.to_py()


if __name__ == "__main__":
    main()
