r"""Every container kind, by name: the one registry, with no import-order dependence.

A kind name is what the root registry stores for a root (``doc.roots()``) and
what a nested Y.Map carries under ``"\x00k"``. The table below lists every kind
this release knows, with the module and class that implement it; a class is
imported the first time its kind is asked for, so ``wrap()`` recognises a nested
tree even if nothing imported :mod:`crdtsync.model.tree` before, and no module has
to register itself at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crdtsync.model.containers import Container

__all__ = ["KINDS", "kind_class"]

#: kind name -> (module, class). Adding a container kind means adding a row here.
KINDS: dict[str, tuple[str, str]] = {
    "map": ("crdtsync.model.containers", "Map"),
    "list": ("crdtsync.model.containers", "List"),
    "text": ("crdtsync.model.containers", "Text"),
    "counter": ("crdtsync.model.containers", "Counter"),
    "register": ("crdtsync.model.containers", "Register"),
    "tree": ("crdtsync.model.tree", "Tree"),
}

# Classes already imported, by kind: wrap() asks on every nested read.
_resolved: dict[str, type[Container]] = {}


def kind_class(kind: object) -> type[Container] | None:
    """The container class of kind ``kind``, or ``None`` for a name no release knows.

    Args:
        kind: a kind name, as stored in a document (so possibly anything).
    """
    cls = _resolved.get(kind) if type(kind) is str else None
    if cls is not None:
        return cls
    where = KINDS.get(kind) if type(kind) is str else None
    if where is None:
        return None
    assert isinstance(kind, str)
    found: type[Container] = getattr(importlib.import_module(where[0]), where[1])
    _resolved[kind] = found
    return found
