"""Document stores: the :class:`~crdtsync.store.base.Store` seam, SQLite (default) and memory.

* :mod:`~crdtsync.store.base`: the seam and its rules (checked by
  ``crdtsync.testing.check_store``);
* :mod:`~crdtsync.store.memory`: :class:`~crdtsync.store.memory.MemoryStore`, for tests;
* :mod:`~crdtsync.store.sqlite`: :class:`~crdtsync.store.sqlite.SQLiteStore`, the default.
"""
