"""The document model: the only part of crdtsync that imports pycrdt.

* :mod:`~crdtsync.model.doc`: :class:`~crdtsync.model.doc.Doc`, its
  transactions, events and the safe import path;
* :mod:`~crdtsync.model.containers`: maps, lists, texts, counters, registers;
* :mod:`~crdtsync.model.tree`: the movable tree;
* :mod:`~crdtsync.model.values`: how Python values are stored;
* :mod:`~crdtsync.model.text_index`: code-point offsets over UTF-8 text.

Outside this package the library sees update bytes and versions only.
"""
