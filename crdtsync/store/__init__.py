"""Document stores: the :class:`Store` protocol, SQLite (default) and memory."""

from .base import Store, StoredDoc
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store", "StoredDoc"]
