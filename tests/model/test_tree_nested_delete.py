"""Saving a document after a nested tree in it was deleted.

The engine frees a deleted type's branch (garbage collection) while a tree
binding may still point at it: `Doc.save` used to read every bound tree's map
for its saved shape, and crashed the process (a segfault, or a panic) after a
nested tree was deleted (found by scripts/fuzz_lazy_load.py, 2026-12-07).
Saves now carry the shapes of root trees only.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from crdtsync import Doc, Tree
from crdtsync.model import tree as tree_mod


def test_save_never_reads_a_nested_trees_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = Doc(peer_id=18)
    doc.map("nest")["sub"] = Tree()
    sub = doc.map("nest")["sub"]
    assert isinstance(sub, Tree)
    sub.create(None, data={"x": 1})
    sub.children(None)  # bound
    root = doc.tree("t")
    root.create()
    root.children(None)
    del doc.map("nest")["sub"]
    touched: list[str] = []
    real = tree_mod._Binding.container_sizes

    def watched(b: tree_mod._Binding) -> dict[str, int]:
        touched.append("root" if b is root._b else "nested")
        return real(b)

    monkeypatch.setattr(tree_mod._Binding, "container_sizes", watched)
    saved = doc.save()
    assert touched == ["root"]
    loaded = Doc.load(saved)
    assert loaded.tree("t").to_py() == root.to_py()
    assert "sub" not in loaded.map("nest")


def test_a_nested_tree_still_loads_from_its_operations() -> None:
    doc = Doc(peer_id=18)
    doc.map("nest")["sub"] = Tree()
    sub = doc.map("nest")["sub"]
    assert isinstance(sub, Tree)
    a = sub.create(None, data={"x": 1})
    sub.create(a)
    loaded = Doc.load(doc.save())
    again = loaded.map("nest")["sub"]
    assert isinstance(again, Tree)
    assert again.to_py() == sub.to_py()


def test_saving_after_deleting_a_bound_nested_tree_does_not_crash() -> None:
    # The fuzzer's reproduction: crashed three runs in three on the old code
    # (which allocation reuses the freed branch decides how). A subprocess, so
    # that a crash fails this test instead of killing the run.
    script = textwrap.dedent(
        """
        from crdtsync import Doc, Tree
        keep = []
        for i in range(300):
            a = Doc(peer_id=18)
            a.map("nest")["sub"] = Tree()
            for _ in range(3):
                a.map("nest")["sub"].create(None, data={"x": 1})
            a.map("nest")["sub"].children()
            del a.map("nest")["sub"]
            for _ in range(5):
                c = Doc(peer_id=99)
                c.tree("t").create(None, data={"n": 2})
                keep.append(c.save())
            a.save()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
