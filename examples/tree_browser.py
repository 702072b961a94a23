"""A folder browser on a movable tree: create folders, move, rename, print.

Two replicas of one folder tree are edited offline, one of them moving a
folder into another while the other renames and files something under it;
after they exchange updates both print the same tree. Moves never duplicate a
folder or make a cycle, whatever order the replicas hear of them in.

Run: python examples/tree_browser.py
"""

from __future__ import annotations

from crdtsync import Doc, Tree, TreeCycleError


class FolderBrowser:
    """Folders by name over a :class:`~crdtsync.Tree` whose node data holds the name."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree

    def mkdir(self, name: str, parent: str | None = None) -> str:
        """Create a folder (sorted by name among its siblings); returns its node id."""
        siblings = [self.name(n) for n in self.tree.children(parent)]
        index = sum(1 for s in siblings if s < name)
        return self.tree.create(parent, index, data={"name": name})

    def name(self, node: str) -> str:
        return str(self.tree.data(node)["name"])

    def find(self, path: str) -> str:
        """The node id of a folder by its path, like ``"docs/2026"``."""
        node: str | None = None
        for part in path.strip("/").split("/"):
            matches = [n for n in self.tree.children(node) if self.name(n) == part]
            if not matches:
                raise KeyError(path)
            node = matches[0]
        assert node is not None
        return node

    def rename(self, node: str, name: str) -> None:
        self.tree.data(node)["name"] = name

    def move(self, node: str, parent: str | None) -> None:
        """Move a folder (with everything in it) under ``parent``, in name order."""
        siblings = [self.name(n) for n in self.tree.children(parent) if n != node]
        index = sum(1 for s in siblings if s < self.name(node))
        self.tree.move(node, parent, index)

    def lines(self, parent: str | None = None, depth: int = 0) -> list[str]:
        """The tree as indented lines, children in their stored order."""
        out = []
        for node in self.tree.children(parent):
            out.append("    " * depth + self.name(node) + "/")
            out.extend(self.lines(node, depth + 1))
        return out

    def show(self, title: str) -> None:
        print(title)
        for line in self.lines():
            print("  " + line)


def main() -> None:
    laptop = Doc(peer_id=1)
    fs = FolderBrowser(laptop.tree("files"))
    docs = fs.mkdir("docs")
    fs.mkdir("photos")
    fs.mkdir("2025", docs)
    fs.mkdir("inbox")
    fs.show("laptop, first version:")

    phone = Doc(peer_id=2)
    phone.import_update(laptop.export_update())
    on_phone = FolderBrowser(phone.tree("files"))

    # Offline: the laptop files "inbox" under "docs" and renames 2025 -> archive;
    # the phone creates a folder inside "inbox" and moves "docs" under "photos".
    fs.move(fs.find("inbox"), docs)
    fs.rename(fs.find("docs/2025"), "archive")
    on_phone.mkdir("receipts", on_phone.find("inbox"))
    on_phone.move(on_phone.find("docs"), on_phone.find("photos"))

    # A move that would put a folder inside itself is refused and writes nothing.
    try:
        fs.move(docs, fs.find("docs/inbox"))
    except TreeCycleError as exc:
        print(f"refused: {exc}")

    laptop.import_update(phone.export_update(since=laptop.version))
    phone.import_update(laptop.export_update(since=phone.version))
    fs.show("laptop, after sync:")
    on_phone.show("phone, after sync:")
    assert fs.lines() == on_phone.lines(), "replicas disagree"
    assert fs.lines() == [
        "photos/",
        "    docs/",
        "        archive/",
        "        inbox/",
        "            receipts/",
    ]
    print(f"{len(fs.tree)} folders, the same on both replicas")


if __name__ == "__main__":
    main()
