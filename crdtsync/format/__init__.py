"""Bytes only: the encodings crdtsync reads and writes, with no pycrdt and no I/O.

* :mod:`~crdtsync.format.varint`: lib0 variable-length integers;
* :mod:`~crdtsync.format.cbor`: the bounded CBOR decoder (and encoder) of frames
  and envelopes;
* :mod:`~crdtsync.format.zstd`: bounded zstd (output capped before allocation);
* :mod:`~crdtsync.format.yupdate`: the strict Yjs v1 update parser and validator;
* :mod:`~crdtsync.format.columnar`: the compact columnar encoding of ``save()``;
* :mod:`~crdtsync.format.envelope`: the versioned envelope around both;
* :mod:`~crdtsync.format.version`: :class:`~crdtsync.format.version.Version`,
  a state vector.

Everything here treats its input as hostile and is iterative (no recursion on
input depth); see ``docs/FORMAT.md``.
"""
