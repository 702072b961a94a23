"""A document nobody refers to any more is freed, with its engine.

The engine keeps the callbacks it is given (transaction and deep observers,
the undo manager's clock) in Rust, where Python's cycle collector cannot see
them: a callback that held the document kept it, its engine and all its
content alive for the life of the process (found by the tree model check,
whose documents piled up to 10 GB). A relay or an app that opens and closes
many documents needs them freed.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import pytest

from crdtsync import Doc
from crdtsync.model.undo import UndoManager


def _source() -> Doc:
    src = Doc(peer_id=7)
    src.map("m")["a"] = 1
    src.text("t").insert(0, "hi")
    src.tree("tr").create()
    return src


def _imported() -> Doc:
    d = Doc(peer_id=9)
    d.import_update(_source().export_update())
    return d


def _observed() -> Doc:
    d = Doc(peer_id=9)
    d.observe(lambda ev: None)
    d.map("m")["x"] = 1
    d.import_update(_source().export_update())
    d.text("t").insert(0, "x")
    return d


def _observed_updates() -> Doc:
    d = Doc(peer_id=9)
    d.observe_updates(lambda update, origin, local: None)
    d.map("m")["x"] = 1
    d.import_update(_source().export_update())
    return d


def _tree() -> Doc:
    d = _imported()
    t = d.tree("tr")
    t.move(t.children(None)[0], parent=None, index=0)
    return d


def _undo() -> Doc:
    d = _imported()
    um = UndoManager(d, [d.map("m")])
    d.map("m")["b"] = 2
    assert um.undo()
    return d


def _loaded_then_hydrated() -> Doc:
    d = Doc.load(_source().save())
    d.tree("tr").children(None)
    d.map("m")["b"] = 2  # hydrates a lazily loaded document
    return d


SCENARIOS: dict[str, Callable[[], Doc]] = {
    "imported": _imported,
    "observed": _observed,
    "update observers": _observed_updates,
    "tree": _tree,
    "undo manager": _undo,
    "loaded": _loaded_then_hydrated,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_an_unreferenced_document_is_freed(name: str) -> None:
    doc = SCENARIOS[name]()
    ref = weakref.ref(doc)
    del doc
    gc.collect()
    assert ref() is None, f"{name}: the document outlived its last reference"


def test_callbacks_still_run_while_the_document_lives() -> None:
    d = Doc(peer_id=9)
    seen: list[bool] = []
    d.observe(lambda ev: seen.append(ev.local))
    d.import_update(_source().export_update())
    d.map("m")["x"] = 1
    gc.collect()
    d.map("m")["y"] = 2
    assert seen == [False, True, True]
