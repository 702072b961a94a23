"""crdtsync: local-first JSON-like documents that merge without conflicts.

Example:
    >>> from crdtsync import Doc
    >>> a, b = Doc(), Doc()
    >>> a.text("body").insert(0, "hello")
    >>> b.import_update(a.export_update())
    >>> str(b.text("body"))
    'hello'
"""

from ._yupdate import UpdateLimits
from .doc import DEFAULT_LIMITS, Change, ChangeEvent, Doc
from .errors import (
    CrdtSyncError,
    EngineError,
    InvalidOperationError,
    InvalidUpdateError,
    InvalidValueError,
    MalformedUpdateError,
    RootTypeError,
    TreeCycleError,
    UnsupportedVersionError,
    UpdateLimitError,
)
from .model import Container, Counter, List, Map, Register, Text
from .tree import Tree
from .version import Version

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "Change",
    "ChangeEvent",
    "Container",
    "Counter",
    "CrdtSyncError",
    "Doc",
    "EngineError",
    "InvalidOperationError",
    "InvalidUpdateError",
    "InvalidValueError",
    "List",
    "MalformedUpdateError",
    "Map",
    "Register",
    "RootTypeError",
    "Text",
    "Tree",
    "TreeCycleError",
    "UnsupportedVersionError",
    "UpdateLimitError",
    "UpdateLimits",
    "Version",
    "__version__",
]
