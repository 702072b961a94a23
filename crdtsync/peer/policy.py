"""The write policy: who may write what into a Peer's documents. One implementation.

Every update that arrives from outside (a crdtsync session, a relay's
y-protocols connection) passes :func:`admit` before it is imported:

1. **Read-only grants.** A peer granted read access only may send updates that
   write nothing (a catch-up repeating what we have: ``Doc.contains``); any
   other is refused (``READ_ONLY``) and not imported.
2. **Writer ids.** An update's *new* structs (beyond what the document has:
   ``new_writes``) must be under client ids the sending connection may write
   under; the sending session asks the shared
   :class:`~crdtsync.protocol.session.WriterRegistry` (``check_writers``), and
   closes itself when another live connection owns one (``FORBIDDEN``). Known
   structs passing through again (a resync, a forwarded edit) claim nothing.

The rules are the protocol's (``docs/PROTOCOL.md``, "Writers"; ``docs/RELAY.md``,
"Authentication"): this module only puts them in one place, so that a crdtsync
session on a :class:`~crdtsync.peer.peer.Peer` and a y-protocols connection on
the relay cannot drift apart.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Protocol

from crdtsync.errors import InvalidUpdateError
from crdtsync.model.doc import Doc
from crdtsync.protocol.session import new_writes

__all__ = ["Admission", "WriterCheck", "admit"]


class WriterCheck(Protocol):
    """A session that binds client ids with the writer registry.

    :class:`~crdtsync.protocol.session.Session` and
    :class:`~crdtsync.protocol.ysession.YSession` both are.
    """

    def check_writers(self, client_ids: Iterable[int]) -> bool:
        """Whether new structs under ``client_ids`` may be written (False: the session closed)."""
        ...


class Admission(enum.Enum):
    """What :func:`admit` decided about an update."""

    #: Import it.
    WRITE = "write"
    #: It writes nothing new (a read-only peer's catch-up): accept it, nothing to import.
    NOTHING_NEW = "nothing-new"
    #: Refused: it writes over a read-only grant. The session stays; refuse the write.
    READ_ONLY = "read-only"
    #: Refused: a client id belongs to another live connection. The session closed itself.
    FORBIDDEN = "forbidden"


def admit(
    doc: Doc,
    update: bytes,
    writes: Mapping[int, int],
    *,
    read_only: bool,
    session: WriterCheck,
) -> Admission:
    """Decide whether ``update`` from ``session`` may be imported into ``doc``.

    Args:
        doc: the document it is for.
        update: the raw Yjs update.
        writes: client id -> clock after the update's last struct under it, as
            the session parsed it (empty when the session does not verify writers).
        read_only: the sender has a read-only grant.
        session: the sender's session, which binds client ids.

    Returns:
        The decision. ``WRITE`` may still fail to import (``InvalidUpdateError``).
    """
    if read_only:
        try:
            harmless = doc.contains(update)
        except InvalidUpdateError:
            harmless = False
        return Admission.NOTHING_NEW if harmless else Admission.READ_ONLY
    if writes and not session.check_writers(new_writes(writes, doc.version)):
        return Admission.FORBIDDEN
    return Admission.WRITE
