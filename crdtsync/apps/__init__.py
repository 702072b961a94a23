"""Applications built on crdtsync: the collaborative-editing demo and the terminal editor.

* :mod:`crdtsync.apps.demo`: ``crdtsync demo`` (a relay that also serves an editor page);
* :mod:`crdtsync.apps.editor`: ``crdtsync edit`` (a Textual editor on a relay room).

Nothing here is imported by the library itself; the terminal editor needs the ``apps``
extra (``pip install 'crdtsync[apps]'``).
"""
