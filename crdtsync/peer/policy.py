"""The write policy: who may write what into a Peer's documents. One implementation.

Every update that arrives from outside (a crdtsync session, a relay's
y-protocols connection) passes :func:`admit` before it is imported:

1. **Read-only grants, full documents.** A peer granted read access only, or
   any peer writing to a document at its size limit (``Peer(max_doc_bytes=)``),
   may send updates that write nothing (a catch-up repeating what we have);
   any other is refused (``READ_ONLY``, ``FULL``) and never imported, so
   nothing a read-only connection sends is ever stored. The check costs what
   the update costs, never what the document costs, whenever it can: an update
   with a struct (a Skip included) or a deletion past the clocks the document
   has can only be a write, and is refused on its parse alone. Only an update
   whose deletions all lie within known clocks needs the document
   (``Doc.contains``).
2. **Writer ids.** An update's *new* structs (beyond what the document has:
   ``new_writes``) must be under client ids the sending connection may write
   under; the sending session asks the shared
   :class:`~crdtsync.protocol.session.WriterRegistry` (``check_writers``), and
   closes itself when another live connection owns one (``FORBIDDEN``). Known
   structs passing through again (a resync, a forwarded edit) claim nothing.
3. **Budgets of one connection** (a :class:`Sender`). Refusals cost the sender
   one each; so does every update a read-only or full-room sender sends
   besides its catch-up (and an empty one), harmless or not: it has nothing
   to send, and each costs a parse, maybe the document's delete set. Past
   ``max_refusals`` the verdict is ``TOO_MANY_REFUSALS`` and the caller closes
   the connection: refusing forever would let a client make the relay do
   document work for nothing at the full message rate. And a
   sender may have at most :data:`MAX_HELD_PER_SENDER` updates waiting in
   documents for changes they depend on (``HELD_LIMIT`` beyond): an update
   nobody completes is held, and stored, until its sender's connection ends.

The rules are the protocol's (``docs/PROTOCOL.md``, "Writers"; ``docs/RELAY.md``,
"Authentication"; ``docs/SECURITY.md``, "Budgets"): this module only puts them
in one place, so that a crdtsync session on a :class:`~crdtsync.peer.peer.Peer`
and a y-protocols connection on the relay cannot drift apart.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from crdtsync.errors import InvalidUpdateError
from crdtsync.format import accel
from crdtsync.format.version import Version
from crdtsync.format.yupdate import STRUCT_SKIP, ParsedUpdate
from crdtsync.model.doc import Doc
from crdtsync.protocol.session import new_writes

__all__ = [
    "MAX_HELD_PER_SENDER",
    "Admission",
    "Sender",
    "WriterCheck",
    "admit",
    "reaches_past",
]

#: Updates of one connection that documents may hold at once, waiting for
#: changes they depend on. Honest peers send in order: a held update is rare
#: and short-lived (a forwarded edit overtaking its predecessor).
MAX_HELD_PER_SENDER = 32

# An update with no struct and no deletion: what a client with nothing new sends.
_EMPTY = b"\x00\x00"


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
    #: Refused: the document is at its size limit. The session stays; refuse the write.
    FULL = "full"
    #: Refused: the sender already has MAX_HELD_PER_SENDER updates waiting for
    #: changes they depend on, and this one would wait too.
    HELD_LIMIT = "held-limit"
    #: Refused: a client id belongs to another live connection. The session closed itself.
    FORBIDDEN = "forbidden"
    #: Refused, and the sender's refusal budget is spent: close its connection.
    TOO_MANY_REFUSALS = "too-many-refusals"


@dataclass(eq=False)
class Sender:
    """What the write policy keeps of one connection (a session's link, a guest).

    Attributes:
        max_refusals: refusals the connection may get before :func:`admit`
            answers ``TOO_MANY_REFUSALS`` (None: no limit).
        refusals: refusals so far (and read-only updates accepted as
            harmless, their catch-up aside).
        held: its updates that documents hold for missing predecessors now
            (kept by whoever imports them: the Peer).
        gone: its connection ended (what it left held is dropped at the next
            compaction: nobody is there to complete it).
        caught_up: whether it sent its catch-up (a guest's first sync step 2
            is its catch-up, the later ones are not).
    """

    max_refusals: int | None = None
    refusals: int = 0
    held: int = 0
    gone: bool = False
    caught_up: bool = False

    def charge(self) -> bool:
        """Spend one refusal; False when the budget was already spent."""
        if self.max_refusals is not None and self.refusals >= self.max_refusals:
            return False
        self.refusals += 1
        return True


def admit(
    doc: Doc,
    update: bytes,
    writes: Mapping[int, int],
    *,
    read_only: bool,
    session: WriterCheck,
    sender: Sender | None = None,
    full: bool = False,
    catch_up: bool = False,
) -> Admission:
    """Decide whether ``update`` from ``session`` may be imported into ``doc``.

    Args:
        doc: the document it is for.
        update: the raw Yjs update.
        writes: client id -> clock after the update's last struct under it, as
            the session parsed it (empty when the session does not verify writers).
        read_only: the sender has a read-only grant.
        session: the sender's session, which binds client ids.
        sender: the sender's budgets (None: none).
        full: the document is at its size limit (nothing new may be added).
        catch_up: the update is the sender's catch-up for this document (a
            read-only peer's catch-up may need the document checked for free).

    Returns:
        The decision. ``WRITE`` may still fail to import (``InvalidUpdateError``).
    """
    if read_only or full:
        harmless = _harmless(doc, update, sender, catch_up)
        if harmless is None:
            return Admission.TOO_MANY_REFUSALS
        if harmless:
            return Admission.NOTHING_NEW
        if catch_up and sender is not None and not sender.charge():
            return Admission.TOO_MANY_REFUSALS  # (a refused catch-up costs one too)
        return Admission.READ_ONLY if read_only else Admission.FULL
    if writes and not session.check_writers(new_writes(writes, doc.version)):
        return Admission.FORBIDDEN
    if sender is not None and sender.held >= MAX_HELD_PER_SENDER:
        try:
            waits = reaches_past(accel.parse_update(update), doc.version, gaps=True)
        except InvalidUpdateError:
            waits = False  # the import refuses it, with the validator's reason
        if waits:
            return Admission.TOO_MANY_REFUSALS if not sender.charge() else Admission.HELD_LIMIT
    return Admission.WRITE


def _harmless(doc: Doc, update: bytes, sender: Sender | None, catch_up: bool) -> bool | None:
    """Whether ``update`` carries nothing ``doc`` lacks; None: the sender's budget is spent.

    Charges the sender once for any update but its catch-up and an empty one:
    a reader has nothing to send after its catch-up, and each such update
    costs a parse (of up to an update's size, a compressed one included), and
    maybe the document's delete set. A refusal is that same charge.
    """
    if update == _EMPTY:
        return True
    if not catch_up and sender is not None and not sender.charge():
        return None
    try:
        parsed = accel.parse_update(update)
    except InvalidUpdateError:
        return False
    version = doc.version
    if reaches_past(parsed, version):
        return False  # a write whatever the document holds: no document work
    if not parsed.delete_set:
        return True  # only structs we have
    # Deletions within known clocks: whether they are all deleted here is the
    # document's to say (an honest client's step 2 carries its whole delete
    # set). Doc.contains answers from the validator's index, which the document
    # keeps up to date with each change: in proportion to the update, not to
    # the document (issue 18, item 7).
    try:
        return doc.contains(update)
    except InvalidUpdateError:
        return False


def reaches_past(parsed: ParsedUpdate, version: Version, *, gaps: bool = False) -> bool:
    """Whether an update reaches past the clocks of ``version``.

    Args:
        parsed: the update.
        version: what the document has.
        gaps: ask instead whether the update would wait for missing changes:
            a client block starting past the known clock, or a Skip struct.
            (An item whose origin is missing waits too; that needs the
            document, and the importer sees it.)

    Returns:
        Without ``gaps``: whether any struct (a Skip included) ends, or any
        deleted range ends, past what ``version`` has for its client. Such an
        update writes something whatever the document holds.
    """
    for client, structs in parsed.clients.items():
        known = version.get(client) or 0
        if gaps:
            if structs[0].clock > known or any(s.kind == STRUCT_SKIP for s in structs):
                return True
        elif structs[-1].end > known:
            return True
    if gaps:
        return False
    for client, ranges in parsed.delete_set.items():
        known = version.get(client) or 0
        if any(clock + length > known for clock, length in ranges):
            return True
    return False
