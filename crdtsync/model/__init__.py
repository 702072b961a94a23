"""The document model: the only part of crdtsync that imports pycrdt.

* :mod:`~crdtsync.model.doc`: :class:`~crdtsync.model.doc.Doc`, its
  transactions, events and the safe import path;
* :mod:`~crdtsync.model.containers`: maps, lists, texts, counters, registers;
* :mod:`~crdtsync.model.kinds`: every container kind, by name (no import-order
  dependence);
* :mod:`~crdtsync.model.tree`: the movable tree; :mod:`~crdtsync.model.tree_events`:
  its per-node change events;
* :mod:`~crdtsync.model._engine_private`: the only use of pycrdt's private API
  (two hot-path functions, tested against the installed pycrdt);
* :mod:`~crdtsync.model.values`: how Python values are stored;
* :mod:`~crdtsync.model.text_index`: code-point offsets over UTF-8 text;
  :mod:`~crdtsync.model.text_mirrors`: the observed texts' last content, so
  that every text change event carries its delta in code points.

Outside this package the library sees update bytes and versions only.
"""
