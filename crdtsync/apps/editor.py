r"""The terminal editor: ``crdtsync edit ROOM --relay ws://HOST:PORT [--token TOKEN]``.

A Textual ``TextArea`` bound to ``doc.text("body")`` of a relay room, which browsers
(the demo page, any y-websocket client) and Python peers edit at the same time.
It needs the ``apps`` extra: ``pip install 'crdtsync[apps]'``. With ``--lan
--key-file team.key`` (instead of, or as well as, ``--relay``) it edits the
document with the devices of a LAN group directly (:meth:`Peer.start_lan
<crdtsync.peer.peer.Peer.start_lan>`), no relay needed.

Theory of operation
-------------------
The document is the truth; the widget shows it. A :class:`~crdtsync.peer.peer.Peer`
keeps the room in sync with the relay (crdtsync protocol, acknowledged edits,
presence); the widget and the document are kept equal by :class:`TextBinding`:

* **Local edits.** Every change the ``TextArea`` makes goes through its ``edit()``
  (typing, paste, delete, cut). :class:`EditorArea` turns its locations into
  offsets of the document text *before* the widget applies it, then the same
  change goes into ``doc.text("body")`` in one transaction whose origin is the
  binding (with the per-person edit counter the page shows).
* **Remote edits.** Every other transaction that changes the text (imports, and
  undo/redo, which are local but not typed) arrives as a code-point delta; each
  insert or delete is applied to the widget at the matching location, and the
  selection is moved by the delta itself, so a remote insert before the caret
  keeps the caret on the same character (an insert exactly at the caret stays
  after it: two people typing at one spot do not interleave).
* **Undo and redo** act on the document through a
  :class:`~crdtsync.model.undo.UndoManager` that records only this editor's own
  transactions (its origin). Textual's own undo history is never used: it would
  revert the widget and leave the document as it was, so the two would diverge.
* **Line breaks.** Textual splits the text with ``str.splitlines`` (``\r\n``,
  ``\r``, ``\n``, but also ``\u2028``, ``\x0c``...) and joins lines with one
  newline, so ``"a\u2028b\r\nc"`` would come back as ``"a\r\nb\r\nc"``. The
  widget's text is therefore never read back: :class:`LineMap` maps document
  offsets to (row, column) through the document's own line breaks, exactly, and
  after every change the widget's lines are compared with the document's; if they
  differ (an edit that joined or split a ``\r\n``, say) the widget is reloaded
  from the document.
* **Presence.** Name, colour (the same palette and hash as the page) and the
  caret and selection as Yjs relative positions (:mod:`crdtsync.model.positions`), so
  the page draws this caret where it belongs while others type. Others' carets
  are shown as line:column in the status line.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import getpass
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static, TextArea
from textual.widgets.text_area import Edit, EditResult, Selection

from crdtsync.errors import AuthError, CrdtSyncError
from crdtsync.model.containers import Text
from crdtsync.model.doc import ChangeEvent, Doc
from crdtsync.model.positions import absolute_position, relative_position
from crdtsync.model.undo import UndoManager
from crdtsync.peer.peer import Peer, Status
from crdtsync.protocol.awareness import AwarenessChange

if TYPE_CHECKING:
    from crdtsync.peer.lan import GroupKeyLike

__all__ = ["PALETTE", "EditorApp", "EditorArea", "LineMap", "TextBinding", "color_for"]

log = logging.getLogger("crdtsync.apps.editor")

#: The colours of people, as in the page (apps/demo/web/src/colors.js).
PALETTE = (
    "#e8590c",
    "#1c7ed6",
    "#2b8a3e",
    "#ae3ec9",
    "#e03131",
    "#0c8599",
    "#f08c00",
    "#5f3dc4",
)
#: The text the editor edits, and the roots of the page's counters.
TEXT_ROOT = "body"
EDITS_ROOT = "edits"
NAMES_ROOT = "names"
# A delta with more operations than this is applied by reloading the widget.
_MAX_DELTA_OPS = 64
# Line breaks Textual adds an empty last line after (see LineMap).
_TEXTUAL_NEWLINES = ("\r\n", "\n", "\r")


def color_for(name: str) -> str:
    """The colour of a person: ``h = h * 31 + code point`` over the name, modulo 2**32."""
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    return PALETTE[h % len(PALETTE)]


class LineMap:
    r"""Code-point offsets of a text <-> (row, column) locations of a Textual ``TextArea``.

    The rows are the text split as Textual splits it (``str.splitlines``, plus an
    empty last row after a final ``\r\n``, ``\n`` or ``\r``); each line break
    keeps its real length (2 for ``\r\n``), so offsets are exact whatever the
    breaks are.

    Args:
        text: the document's text.
    """

    def __init__(self, text: str) -> None:
        # The rows, without their line breaks.
        self.lines: list[str] = []
        # The offset where each row starts.
        self.starts: list[int] = []
        pos = 0
        for part in text.splitlines(keepends=True):
            line = part.splitlines()[0] if part.splitlines() else ""
            self.lines.append(line)
            self.starts.append(pos)
            pos += len(part)
        if not text or text.endswith(_TEXTUAL_NEWLINES):
            self.lines.append("")
            self.starts.append(len(text))
        # The text's length.
        self.length = len(text)

    def location(self, index: int) -> tuple[int, int]:
        """The (row, column) of offset ``index`` (inside a line break: the end of its row)."""
        index = max(0, min(index, self.length))
        row = max(0, bisect.bisect_right(self.starts, index) - 1)
        return row, min(index - self.starts[row], len(self.lines[row]))

    def index(self, location: tuple[int, int]) -> int:
        """The offset of a (row, column) location (clamped to the text)."""
        row, col = location
        row = max(0, min(row, len(self.lines) - 1))
        return self.starts[row] + max(0, min(col, len(self.lines[row])))


class TextBinding:
    """Keeps a :class:`EditorArea` and ``doc.text("body")`` equal (see the module docs).

    Args:
        area: the widget.
        name: the person's name (presence, edit counter).
        on_changed: called after anything the status line shows may have changed.
        capture_timeout: seconds of typing that one undo step groups.
    """

    def __init__(
        self,
        area: EditorArea,
        name: str,
        on_changed: Callable[[], None] = lambda: None,
        capture_timeout: float = 0.5,
    ) -> None:
        self.area = area
        self.name = name
        self.color = color_for(name)
        self._on_changed = on_changed
        self._capture_timeout = capture_timeout
        # The document and its text (None until attach).
        self.doc: Doc | None = None
        self.body: Text | None = None
        self.undo_manager: UndoManager | None = None
        # The document text the widget shows, and its line map.
        self.shown = ""
        self.map = LineMap("")
        # True while we change the widget ourselves (its edits are not the user's).
        self.applying = False
        self._unobserve: Callable[[], None] | None = None
        # Where presence goes: set by the app (peer.set_presence for the room).
        self.publish: Callable[[Any], None] | None = None
        # Reloads of the widget from the document (the line-break fallback), for tests.
        self.reloads = 0
        # The presence state last sent.
        self._published: dict[str, Any] | None = None
        # The caret offset the last local edit left (None: the caret moved since).
        self._typed_to: int | None = None

    # -- the document ------------------------------------------------------------------

    def attach(self, doc: Doc) -> None:
        """Edit ``doc`` (again, when the Peer replaced the room's document)."""
        if self._unobserve is not None:
            self._unobserve()
        self.doc = doc
        self.body = doc.text(TEXT_ROOT)
        self.undo_manager = UndoManager(
            doc, [self.body], origins=[self], capture_timeout=self._capture_timeout
        )
        self._unobserve = doc.observe(self._on_doc_change)
        self.reload()

    def _on_doc_change(self, event: ChangeEvent) -> None:
        if event.local and event.origin is self:
            return
        for change in event.changes:
            if change.path == (TEXT_ROOT,):
                if change.delta is None or change.created or len(change.delta) > _MAX_DELTA_OPS:
                    self.reload()
                else:
                    self._apply_delta(change.delta)
        self._on_changed()

    def reload(self) -> None:
        """Show the document's text again, keeping the selection on the same offsets."""
        assert self.body is not None
        anchor, head = self.selection_offsets()
        self.shown = str(self.body)
        self.map = LineMap(self.shown)
        self.reloads += 1
        self.applying = True
        try:
            self.area.load_text(self.shown)
        finally:
            self.applying = False
        self._select(anchor, head)
        self.publish_presence()

    def _apply_delta(self, delta: list[dict[str, Any]]) -> None:
        assert self.body is not None
        anchor, head = self.selection_offsets()
        pos = 0
        self.applying = True
        try:
            for op in delta:
                if "retain" in op:
                    pos += int(op["retain"])
                elif "insert" in op:
                    text = str(op["insert"])
                    where = self.map.location(pos)
                    self.area.replace(text, where, where)
                    self.shown = self.shown[:pos] + text + self.shown[pos:]
                    self.map = LineMap(self.shown)
                    anchor = anchor + len(text) if pos < anchor else anchor
                    head = head + len(text) if pos < head else head
                    pos += len(text)
                elif "delete" in op:
                    n = int(op["delete"])
                    self.area.replace("", self.map.location(pos), self.map.location(pos + n))
                    self.shown = self.shown[:pos] + self.shown[pos + n :]
                    self.map = LineMap(self.shown)
                    anchor = _after_delete(anchor, pos, n)
                    head = _after_delete(head, pos, n)
        finally:
            self.applying = False
        if not self._agrees():
            self.reload()
        self._select(anchor, head)
        self.publish_presence()

    def _agrees(self) -> bool:
        assert self.body is not None
        return self.shown == str(self.body) and self.map.lines == list(self.area.document.lines)

    # -- the widget --------------------------------------------------------------------

    def selection_offsets(self) -> tuple[int, int]:
        """The widget's selection as (anchor, head) document offsets."""
        sel = self.area.selection
        return self.map.index(sel.start), self.map.index(sel.end)

    def _select(self, anchor: int, head: int) -> None:
        self.applying = True
        try:
            self.area.selection = Selection(self.map.location(anchor), self.map.location(head))
        finally:
            self.applying = False

    def before_edit(self, edit: Edit) -> tuple[int, int]:
        """The document offsets an edit of the widget replaces (asked before it is applied)."""
        return self.map.index(edit.top), self.map.index(edit.bottom)

    def local_edit(self, start: int, end: int, text: str) -> None:
        """The widget replaced ``[start, end)`` with ``text``: do the same to the document."""
        doc, body = self.doc, self.body
        if doc is None or body is None:
            return
        try:
            with doc.transaction(origin=self):
                if end > start:
                    body.delete(start, end - start)
                if text:
                    body.insert(start, text)
                doc.counter(EDITS_ROOT).increment()
                names = doc.map(NAMES_ROOT)
                key = str(doc.peer_id)
                if names.get(key) != self.name:
                    names[key] = self.name
        except CrdtSyncError as exc:
            # Text the document cannot hold (a lone surrogate pasted from a broken
            # terminal): the widget goes back to what the document holds.
            log.warning("edit refused: %s", exc)
            self.reload()
            return
        if "\n" in text or "\r" in text:
            assert self.undo_manager is not None
            self.undo_manager.stop_capturing()
        # Where typing leaves the caret: a selection change elsewhere is a jump.
        self._typed_to = start + len(text)
        self.shown = self.shown[:start] + text + self.shown[end:]
        self.map = LineMap(self.shown)
        if not self._agrees():
            self.reload()
        self.publish_presence()
        self._on_changed()

    def selection_moved(self) -> None:
        """The user moved the caret: a jump (not typing) ends the current undo step."""
        anchor, head = self.selection_offsets()
        if self.undo_manager is not None and (anchor, head) != (self._typed_to, self._typed_to):
            self.undo_manager.stop_capturing()
            self._typed_to = None
        self.publish_presence()

    def undo(self) -> None:
        """Undo this editor's last step (in the document; the widget follows)."""
        if self.undo_manager is not None:
            self.undo_manager.undo()

    def redo(self) -> None:
        """Redo the last undone step."""
        if self.undo_manager is not None:
            self.undo_manager.redo()

    # -- presence ----------------------------------------------------------------------

    def presence_state(self) -> dict[str, Any]:
        """This editor's presence: who, and where the caret and selection are."""
        state: dict[str, Any] = {
            "user": {"name": self.name, "color": self.color, "colorLight": self.color + "33"}
        }
        if self.body is not None:
            anchor, head = self.selection_offsets()
            rel_anchor = relative_position(self.body, min(anchor, len(self.shown)))
            rel_head = relative_position(self.body, min(head, len(self.shown)))
            if rel_anchor is not None and rel_head is not None:
                state["cursor"] = {"anchor": rel_anchor, "head": rel_head}
        return state

    def publish_presence(self) -> None:
        """Send the presence state, if it changed."""
        if self.publish is None:
            return
        state = self.presence_state()
        if state != self._published:
            self._published = state
            self.publish(state)

    def others(self, states: Mapping[int, Any]) -> list[tuple[str, str, str]]:
        """The other people in ``states`` (presence by client id): ``(name, colour, where)``.

        ``where`` is the caret's ``line:column`` when its relative position resolves
        in this text, else empty. Presence is another client's data: anything
        malformed is skipped.
        """
        out = []
        own = self.doc.peer_id if self.doc is not None else None
        for client, state in states.items():
            if client == own or not isinstance(state, dict):
                continue
            user = state.get("user")
            name = user.get("name") if isinstance(user, dict) else None
            if not isinstance(name, str) or not name.strip():
                continue
            name = name.strip()[:40]
            where = ""
            cursor = state.get("cursor")
            if self.body is not None and isinstance(cursor, dict):
                index = absolute_position(self.body, cursor.get("head"))
                if index is not None:
                    row, col = self.map.location(index)
                    where = f"{row + 1}:{col + 1}"
            out.append((name, color_for(name), where))
        out.sort()
        return out


def _after_delete(offset: int, pos: int, n: int) -> int:
    if offset <= pos:
        return offset
    return pos if offset < pos + n else offset - n


class EditorArea(TextArea):
    """A ``TextArea`` whose edits go to a :class:`TextBinding`, and whose undo is the CRDT's."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+z", "undo", "Undo", show=True),
        Binding("ctrl+y", "redo", "Redo", show=True),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Set by the app once the binding exists.
        self.binding: TextBinding | None = None

    def edit(self, edit: Edit) -> EditResult:
        """Apply an edit to the widget and, unless the binding makes it, to the document."""
        binding = self.binding
        if binding is None or binding.applying:
            return super().edit(edit)
        start, end = binding.before_edit(edit)
        result = super().edit(edit)
        # Textual's history would undo the widget alone: it is never used.
        self.history.clear()
        binding.local_edit(start, end, edit.text)
        return result

    def action_undo(self) -> None:
        """Undo this editor's last step, in the document."""
        if self.binding is not None:
            self.binding.undo()

    def action_redo(self) -> None:
        """Redo, in the document."""
        if self.binding is not None:
            self.binding.redo()


class EditorApp(App[None]):
    """The terminal editor on one room of a relay, or of a LAN group (or both).

    Args:
        room: the room.
        relay: the relay's WebSocket URL (``ws://host:port``), or None (LAN only).
        token: an access token for the room (``crdtsync token``), if the relay wants one.
        name: the name others see (default: the login name).
        peer: the Peer to sync with (default: a new one in memory on the WebSocket
            transport; tests pass their own).
        capture_timeout: seconds of typing one undo step groups (a jump of the
            caret or a new line always starts a new step).
        lan_key: a LAN group key (or its file): edit with the group's devices
            directly (``Peer.start_lan``); None: no LAN.
        lan_interfaces: the interfaces' IPv4 addresses for the LAN (None: all).
        store: where the room is kept (None: in memory); with ``lan_key``, the
            device identity is kept beside it (else a new one each run).
    """

    TITLE = "crdtsync edit"
    CSS = """
    Screen { layout: vertical; }
    #status { height: 1; padding: 0 1; background: $panel; }
    #people { height: 1; padding: 0 1; color: $text-muted; }
    EditorArea { height: 1fr; }
    #help { height: 1; padding: 0 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(
        self,
        room: str,
        relay: str,
        *,
        token: str | None = None,
        name: str | None = None,
        peer: Peer | None = None,
        capture_timeout: float = 0.5,
        lan_key: GroupKeyLike | None = None,
        lan_interfaces: list[str] | None = None,
        store: str | None = None,
    ) -> None:
        super().__init__()
        self.room = room
        self.relay = relay
        self.lan_key = lan_key
        self.lan_interfaces = lan_interfaces
        self.store = store
        self.token = token
        self.person = (name or _login_name()).strip()[:40] or "terminal"
        self._peer_arg = peer
        self.peer: Peer | None = None
        self.state = "connecting"
        self.area = EditorArea(
            soft_wrap=True, tab_behavior="indent", show_line_numbers=True, id="editor"
        )
        self.binding = TextBinding(
            self.area, self.person, on_changed=self.refresh_status, capture_timeout=capture_timeout
        )
        self.area.binding = self.binding
        self._connecting: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        # Whether the widgets exist (the status lines can be drawn).
        self._mounted = False

    def compose(self) -> ComposeResult:
        """The status line, who is here, the editor and the key help."""
        yield Static(id="status")
        yield Static(id="people")
        yield self.area
        yield Static("ctrl+z undo · ctrl+y redo · ctrl+q quit", id="help")

    async def on_mount(self) -> None:
        """Open the room, bind the editor to it, start the LAN and connect to the relay."""
        self._mounted = True
        # ws:// and wss:// pick their transport by scheme; lan:// is start_lan's.
        peer = self._peer_arg or Peer(store=self.store)
        await peer.start()
        self.peer = peer
        self._unsubscribe += [
            peer.on_open(self._on_open),
            peer.on_status(self._on_status),
            peer.on_presence(self._on_presence),
        ]
        doc = await peer.open(self.room)
        self.binding.publish = lambda state: peer.set_presence(self.room, state)
        self.binding.attach(doc)
        self.area.focus()
        if self.lan_key is not None:
            try:
                await peer.start_lan(self.lan_key, interfaces=self.lan_interfaces)
            except (CrdtSyncError, OSError) as exc:
                self.state = f"error: {exc}"
        if self.relay is not None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect(peer))
        self.refresh_status()

    async def _connect(self, peer: Peer) -> None:
        assert self.relay is not None
        try:
            await peer.connect(self.relay, token=self.token, timeout=None)
        except AuthError as exc:
            self.state = f"refused: {exc}"
        except (CrdtSyncError, OSError) as exc:
            self.state = f"error: {exc}"
        self.refresh_status()

    async def on_unmount(self) -> None:
        """Leave the room: presence removed, connection closed (edits are acknowledged)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self.peer is not None and self._peer_arg is None:
            await self.peer.close()

    def _on_open(self, name: str, doc: Doc) -> None:
        # The Peer replaced the room's document (it joined the relay's incarnation
        # of the room while ours was still empty): edit the new one.
        if name == self.room and doc is not self.binding.doc:
            self.binding.attach(doc)

    def _on_status(self, status: Status) -> None:
        if status.kind == "error" and status.doc == self.room:
            # The relay refused the room (the token does not name it, say).
            self.state = f"refused: {status.reason}"
        elif status.kind == "stopped":
            # The relay refused the connection for good (an expired token, say).
            self.state = f"refused: {status.reason}"
        self.refresh_status()

    def _on_presence(self, name: str, change: AwarenessChange) -> None:
        if name == self.room:
            self.refresh_status()

    def on_text_area_selection_changed(self, message: TextArea.SelectionChanged) -> None:
        """The caret moved: tell the others."""
        if not self.binding.applying:
            self.binding.selection_moved()

    def refresh_status(self) -> None:
        """Redraw the status lines."""
        if not self._mounted:
            return
        peer = self.peer
        if peer is not None and not self.state.startswith(("refused", "error")):
            connected = any(is_open for _, _, is_open in peer.connections())
            if peer.is_synced(self.room):
                self.state = "synced"
            elif connected:
                self.state = "syncing"
            else:
                self.state = "connecting"
        doc = self.binding.doc
        mine = 0
        if doc is not None:
            mine = doc.counter(EDITS_ROOT).contributions().get(doc.peer_id, 0)
        via = [self.relay] if self.relay is not None else []
        if peer is not None and peer.lan is not None:
            via.append(f"LAN: {len(peer.lan.linked())} linked")
        self.query_one("#status", Static).update(
            f"[b]{_markup(self.room)}[/b] · [{self.binding.color}]●[/] {_markup(self.person)}"
            f" · {self.state} · {mine} edits · {_markup(' · '.join(via))}"
        )
        others = []
        if peer is not None and self.room in peer.docs():
            for who, color, where in self.binding.others(peer.presence(self.room).states):
                others.append(f"[{color}]●[/] {_markup(who)}" + (f" {where}" if where else ""))
        self.query_one("#people", Static).update(
            "here: " + ("  ".join(others) if others else "nobody else yet")
        )


def _markup(text: str) -> str:
    """Text shown literally in Textual markup."""
    return text.replace("[", r"\[")


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "terminal"
