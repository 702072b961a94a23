"""Guests: connections of another protocol taking part in the documents of a Peer.

A Peer drives crdtsync sessions itself. A front end speaking another protocol
to its own clients (the relay's y-protocols endpoint, ``crdtsync.relay.yconn``)
lets each client take part in one document through a :class:`Guest`, made by
:meth:`Peer.join <crdtsync.peer.peer.Peer.join>`:

* ``guest.catch_up(since)`` answers the client's sync step 1;
* ``guest.write(update, writes, session)`` admits (the write policy of
  :mod:`crdtsync.peer.policy`, shared with crdtsync sessions) and imports what
  the client wrote, durably, and sends it to every session;
* ``guest.apply_presence(...)`` shares its presence (capped per connection);
* ``guest.leave()`` removes its presence when its connection ends.

And :meth:`Peer.watch <crdtsync.peer.peer.Peer.watch>` tells a
:class:`DocWatcher` of every transaction and presence update with its
:data:`Origin`, for the front end to send on to its clients (all but the one it
came from). Nothing here is relay-specific: any protocol's server can be a
front end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from crdtsync.errors import DocNotOpenError
from crdtsync.format.version import Version
from crdtsync.model.doc import Doc
from crdtsync.net import Connection
from crdtsync.peer.policy import Admission, Sender, WriterCheck, admit
from crdtsync.protocol.awareness import Awareness, AwarenessChange

if TYPE_CHECKING:
    from crdtsync.peer.peer import Grant

__all__ = ["DocWatcher", "Entries", "Guest", "GuestPort", "Origin"]

#: Where an update or a presence update came from, as a :class:`DocWatcher` hears
#: it: a :class:`Guest`, the :class:`~crdtsync.net.Connection` of a crdtsync
#: session (what the transport made, or what ``serve`` was given), or None (a
#: local edit, a presence expiry).
Origin: TypeAlias = "Guest | Connection | None"


class DocWatcher(Protocol):
    """What :meth:`Peer.watch` tells a front end for guests (the relay's y-protocols side).

    Both calls come synchronously from inside the transaction or presence
    change, after the sessions were given it. An update from a session or a
    guest may not be stored yet (imports are group-committed, see the module
    docs): a watcher sends it on only after :meth:`Peer.commit`.
    """

    def updated(self, name: str, update: bytes, origin: Origin) -> None:
        """A transaction of ``name``: its own update (a local edit, a session's, a guest's)."""
        ...

    def presence(self, name: str, data: bytes, origin: Origin) -> None:
        """A presence (awareness) update of ``name`` being sent on (not back to ``origin``)."""
        ...


#: Decoded awareness entries: ``(client id, clock, JSON state or None)``.
Entries = tuple[tuple[int, int, Any], ...]


@dataclass(frozen=True)
class GuestPort:
    """What a :class:`Guest` may do to the Peer that made it: the Peer's own methods.

    Each takes the document's name and raises ``DocNotOpenError`` when it is
    not open. The Peer hands one over at ``join``; nothing else makes one.
    """

    doc: Callable[[str], Doc]
    full: Callable[[str], bool]
    awareness: Callable[[str], Awareness]
    import_update: Callable[[str, bytes, Guest], None]
    take_presence: Callable[[str, set[int], bytes, Entries, Guest], AwarenessChange]
    leave: Callable[[Guest], None]


class Guest:
    """A connection of another protocol taking part in one document of a :class:`Peer`.

    The relay makes one for each y-protocols client (``crdtsync.relay.yconn``).
    Made by :meth:`Peer.join`; the document stays loaded while a guest is in it
    (:meth:`Peer.users` counts guests). What a guest writes passes the same write
    policy as a session's updates (:func:`~crdtsync.peer.policy.admit`), is
    stored, sent to every session carrying the document, and told to watchers
    (:meth:`Peer.watch`) with the guest as its origin. The document is looked up
    by name at every call: a re-opened incarnation (an adopted epoch) is the one
    a guest writes to.

    Attributes:
        name: the document.
        grant: what the guest may do (``read_only``; ``check`` and ``docs`` are
            the caller's to apply before joining).
        address: who it is, for logs.
        clients: presence client ids this guest added or changed (its own); they
            are removed when it leaves.
        sender: its budgets under the write policy (refusals, held updates).
    """

    def __init__(self, port: GuestPort, name: str, grant: Grant, address: str) -> None:
        self._port = port
        self.name = name
        self.grant = grant
        self.address = address
        self.clients: set[int] = set()
        self.sender = Sender(max_refusals=grant.max_refused_updates)
        # Whether leave() was called.
        self._left = False

    @property
    def left(self) -> bool:
        """Whether the guest left (nothing it does reaches the document any more)."""
        return self._left

    @property
    def version(self) -> Version:
        """The document's current version (state vector).

        Raises:
            DocNotOpenError: the document was unloaded, or the guest left.
        """
        return self._doc().version

    def catch_up(self, since: Version) -> bytes:
        """What a replica at version ``since`` lacks: the answer to its sync step 1.

        Raises:
            DocNotOpenError: the document was unloaded, or the guest left.
        """
        return self._doc().export_yjs_update(since=since)

    def write(
        self,
        update: bytes,
        writes: Mapping[int, int],
        session: WriterCheck,
        *,
        catch_up: bool = False,
    ) -> Admission:
        """Admit and import an update the guest sent.

        Args:
            update: a raw Yjs update.
            writes: its client ids and end clocks, as ``session`` parsed them.
            session: the guest's protocol session (binds client ids).
            catch_up: it is a sync step 2 (the first one is the guest's catch-up).

        Returns:
            ``WRITE`` (imported: stored, or queued for the group commit, and sent
            on), ``NOTHING_NEW`` (nothing to import), ``READ_ONLY`` or ``FULL``
            or ``HELD_LIMIT`` (refused: tell the guest), ``FORBIDDEN`` (refused:
            the session closed itself) or ``TOO_MANY_REFUSALS`` (refused: close
            the guest's connection).

        Raises:
            InvalidUpdateError: the update was refused (the document is unchanged).
            StoreError: it could not be stored.
            DocNotOpenError: the document was unloaded, or the guest left.
        """
        doc = self._doc()
        first = catch_up and not self.sender.caught_up
        if catch_up:
            self.sender.caught_up = True
        verdict = admit(
            doc,
            update,
            writes,
            read_only=self.grant.read_only,
            session=session,
            sender=self.sender,
            full=self._port.full(self.name),
            catch_up=first,
        )
        if verdict is Admission.WRITE:
            self._port.import_update(self.name, update, self)
        return verdict

    def apply_presence(self, data: bytes, entries: Entries) -> AwarenessChange:
        """Apply a presence update the guest sent, and send it on.

        Args:
            data: the awareness update's bytes (sent on unchanged).
            entries: the same, decoded (``decode_awareness``).

        Raises:
            LimitExceededError: it would give this guest more than
                ``MAX_PRESENCE_PER_CONNECTION`` states (nothing applied).
            DocNotOpenError: the document was unloaded, or the guest left.
        """
        self._check()
        return self._port.take_presence(self.name, self.clients, data, entries, self)

    @property
    def present(self) -> int:
        """How many presence states the document holds (everyone's)."""
        self._check()
        return len(self._port.awareness(self.name).states)

    def presence_update(self) -> bytes:
        """Everyone's presence states in the document, as one awareness update."""
        self._check()
        return self._port.awareness(self.name).full_update()

    def leave(self) -> None:
        """The guest's connection ended: its presence states are removed. Idempotent."""
        if not self._left:
            self._left = True
            self.sender.gone = True
            self._port.leave(self)

    def _check(self) -> None:
        if self._left:
            raise DocNotOpenError(f"the guest left {self.name!r}")

    def _doc(self) -> Doc:
        self._check()
        return self._port.doc(self.name)

    def __repr__(self) -> str:
        return f"<Guest {self.address} in {self.name!r}{' (left)' if self._left else ''}>"
