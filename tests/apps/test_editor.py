"""The terminal editor (crdtsync.apps.editor) driven headlessly with Textual's Pilot.

Each test runs a real relay on 127.0.0.1 and the editor app (``run_test``) in the
same event loop, with a Python Peer in the same room over a real WebSocket: what
is typed in the editor reaches the Peer, what the Peer writes appears in the editor,
the caret stays on its character, undo undoes only the editor's own edits, and
line breaks Textual would rewrite are kept as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import running_relay, ws_peer
from helpers.waiting import eventually

from crdtsync import Doc, Peer
from crdtsync.apps.editor import EditorApp, LineMap, color_for
from crdtsync.model.positions import absolute_position
from crdtsync.relay import Relay, mint_token
from crdtsync.transports.lan import GroupKey

pytestmark = pytest.mark.anyio

SECRET = b"editor-test-secret-0123456789abcdef"
ROOM = "notes"


@asynccontextmanager
async def room(tmp_path: Path) -> AsyncIterator[tuple[Relay, Peer, Doc, str]]:
    """A relay, and a Python Peer in the room (its Doc), and a token for the editor."""
    token = mint_token(SECRET, ROOM, write=True, ttl=600)
    async with running_relay(tmp_path, secret=SECRET) as relay, ws_peer() as peer:
        doc = await peer.open(ROOM)
        await peer.connect(relay.url, token=token)
        yield relay, peer, doc, token


def text_of(app: EditorApp) -> str:
    assert app.binding.body is not None
    return str(app.binding.body)


def caret(app: EditorApp) -> int:
    return app.binding.selection_offsets()[1]


async def synced(app: EditorApp) -> None:
    await eventually(lambda: app.state == "synced", what="the editor to sync")


async def test_typing_and_remote_edits_converge(tmp_path: Path) -> None:
    async with room(tmp_path) as (relay, _peer, doc, token):
        doc.text("body").insert(0, "from python\n")
        app = EditorApp(ROOM, relay.url, token=token, name="terminal-tom")
        async with app.run_test(size=(100, 30)) as pilot:
            await synced(app)
            await eventually(lambda: text_of(app) == "from python\n", what="the room's text")
            assert app.area.text == "from python\n"
            app.area.move_cursor((1, 0))
            await pilot.press(*"typed here", "enter", "é")
            app.area.insert("😀")  # as a paste does (Pilot has no key for it)
            want = "from python\ntyped here\né😀"
            await eventually(lambda: str(doc.text("body")) == want, what="the peer to get it")
            # Python writes while the cursor is at the end; both sides end equal.
            doc.text("body").insert(len(doc.text("body")), "!")
            await eventually(lambda: app.area.text == want + "!", what="the remote insert")
            await pilot.press(*"?")
            await eventually(
                lambda: str(doc.text("body")) == want + "?!", what="typing before the remote '!'"
            )
            assert text_of(app) == app.area.text == str(doc.text("body"))
            # The relay stored it, and counted the editor's edits.
            stored = await relay.peer.open(ROOM)
            assert str(stored.text("body")) == want + "?!"
            edits = stored.counter("edits").contributions()
            assert edits[app.binding.doc.peer_id] == len("typed here") + 1 + 2 + 1  # type: ignore[union-attr]
            assert stored.map("names")[str(app.binding.doc.peer_id)] == "terminal-tom"  # type: ignore[union-attr]


async def test_remote_inserts_before_the_caret_keep_it_on_its_character(tmp_path: Path) -> None:
    async with room(tmp_path) as (relay, _peer, doc, token):
        body = doc.text("body")
        body.insert(0, "first line\nhello world")
        app = EditorApp(ROOM, relay.url, token=token, name="tom")
        async with app.run_test(size=(100, 30)):
            await synced(app)
            await eventually(lambda: text_of(app) == str(body))
            app.area.move_cursor((1, 6))  # before "w"
            assert app.area.get_text_range((1, 6), (1, 7)) == "w"

            def on_w() -> bool:
                row, col = app.area.cursor_location
                return app.area.get_text_range((row, col), (row, col + 1)) == "w"

            # Same line, before the caret; then whole lines above it; then a deletion before it.
            body.insert(len("first line\n"), "😀é ")
            await eventually(lambda: text_of(app) == str(body))
            assert on_w()
            body.insert(0, "new\nlines\n")
            await eventually(lambda: text_of(app) == str(body))
            assert on_w()
            assert app.area.cursor_location[0] == 3
            body.delete(0, 4)
            await eventually(lambda: text_of(app) == str(body))
            assert on_w()
            # After the caret: it does not move.
            before = app.area.cursor_location
            body.insert(len(body), " and more")
            await eventually(lambda: text_of(app) == str(body))
            assert app.area.cursor_location == before
            # A deletion around the caret puts it where the deleted text was.
            index = caret(app)
            body.delete(index - 2, 4)
            await eventually(lambda: text_of(app) == str(body))
            assert caret(app) == index - 2
            assert app.area.text == str(body)


async def test_undo_and_redo_act_on_the_document_and_only_on_own_edits(tmp_path: Path) -> None:
    async with room(tmp_path) as (relay, _peer, doc, token):
        body = doc.text("body")
        # Undo steps end only at caret jumps (not after a time): the test knows them.
        app = EditorApp(ROOM, relay.url, token=token, name="tom", capture_timeout=600)
        async with app.run_test(size=(100, 30)) as pilot:
            await synced(app)
            await pilot.press(*"mine ")
            await eventually(lambda: str(body) == "mine ")
            body.insert(len(body), "theirs")
            await eventually(lambda: text_of(app) == "mine theirs")
            await pilot.press("ctrl+z")
            await eventually(lambda: str(body) == "theirs", what="the undo at the peer")
            assert app.area.text == "theirs"
            await pilot.press("ctrl+y")
            await eventually(lambda: str(body) == "mine theirs", what="the redo at the peer")
            assert app.area.text == "mine theirs"
            # Nothing of the peer's is ever undone.
            await pilot.press("ctrl+z", "ctrl+z", "ctrl+z")
            await eventually(lambda: str(body) == "theirs")
            assert text_of(app) == app.area.text == "theirs"


async def test_line_breaks_textual_would_rewrite_are_kept(tmp_path: Path) -> None:
    async with room(tmp_path) as (relay, _peer, doc, token):
        body = doc.text("body")
        body.insert(0, "a\u2028b\r\nc")
        app = EditorApp(ROOM, relay.url, token=token, name="tom")
        async with app.run_test(size=(100, 30)) as pilot:
            await synced(app)
            await eventually(lambda: text_of(app) == "a\u2028b\r\nc")
            # Textual shows three lines (and would join them with one newline).
            assert list(app.area.document.lines) == ["a", "b", "c"]
            assert app.area.text != "a\u2028b\r\nc"
            app.area.move_cursor((1, 1))  # after "b"
            await pilot.press("X")
            await eventually(lambda: str(body) == "a\u2028bX\r\nc", what="the exact line breaks")
            app.area.move_cursor((2, 1))  # after "c"
            await pilot.press("Y")
            await eventually(lambda: str(body) == "a\u2028bX\r\ncY")
            # The peer writes inside the \r\n: the widget cannot place that insert on
            # its rows, disagrees with the document, and is reloaded from it.
            reloads = app.binding.reloads
            body.insert(len("a\u2028bX\r"), "Z")  # splits the \r\n into \r Z \n: four rows
            await eventually(lambda: text_of(app) == "a\u2028bX\rZ\ncY")
            assert list(app.area.document.lines) == ["a", "bX", "Z", "cY"]
            assert app.binding.reloads == reloads + 1
            # Deleting a line break that is two characters joins the rows, and the
            # document loses exactly those two.
            body.delete(len("a\u2028bX\rZ"), 1)
            await eventually(lambda: text_of(app) == "a\u2028bX\rZcY")
            app.area.move_cursor((1, 2))
            await pilot.press("delete")  # deletes the "\r"
            await eventually(lambda: str(body) == "a\u2028bXZcY")
            assert list(app.area.document.lines) == ["a", "bXZcY"]


async def test_presence_name_colour_and_caret(tmp_path: Path) -> None:
    async with room(tmp_path) as (relay, peer, doc, token):
        body = doc.text("body")
        body.insert(0, "héllo 😀 world")
        app = EditorApp(ROOM, relay.url, token=token, name="tom")
        async with app.run_test(size=(100, 30)):
            await synced(app)
            await eventually(lambda: text_of(app) == str(body))
            app.area.move_cursor((0, 8))  # before " world"
            tom = app.binding.doc.peer_id  # type: ignore[union-attr]

            def state() -> Any:
                return peer.presence(ROOM).states.get(tom)

            await eventually(lambda: bool(state()) and "cursor" in state())
            assert state()["user"] == {
                "name": "tom",
                "color": color_for("tom"),
                "colorLight": color_for("tom") + "33",
            }
            await eventually(lambda: absolute_position(body, state()["cursor"]["head"]) == 8)
            # The caret follows its character at the peer too, as the page draws it.
            body.insert(0, ">> ")
            await eventually(lambda: absolute_position(body, state()["cursor"]["head"]) == 11)
            # And the editor lists the peer, with its caret.
            peer.set_presence(
                ROOM, {"user": {"name": "py"}, "cursor": {"head": {"tname": "body", "assoc": 0}}}
            )
            await eventually(
                lambda: (
                    app.binding.others(peer_states(app))
                    == [("py", color_for("py"), f"1:{len(str(body)) + 1}")]
                )
            )


def peer_states(app: EditorApp) -> dict[int, Any]:
    assert app.peer is not None
    return app.peer.presence(ROOM).states


def test_line_map_is_exact_for_every_line_break() -> None:
    text = "a\u2028b\r\nc\rd\ne\x0cf\u2029"
    m = LineMap(text)
    assert m.lines == ["a", "b", "c", "d", "e", "f"]
    for i in range(len(text) + 1):
        row, col = m.location(i)
        assert m.index((row, col)) <= i
    for row, line in enumerate(m.lines):
        for col in range(len(line) + 1):
            assert m.location(m.index((row, col))) == (row, col)
    assert LineMap("x\n").lines == ["x", ""]
    assert LineMap("").lines == [""]


async def test_refusals_show_in_the_status_line(tmp_path: Path) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay:
        forged = mint_token(b"not-the-relay-secret-0123456789ab", ROOM, write=True, ttl=60)
        app = EditorApp(ROOM, relay.url, token=forged, name="tom")
        async with app.run_test(size=(100, 30)):
            await eventually(lambda: app.state.startswith("refused"), what="the bad token")
            assert "refused" in str(app.query_one("#status").render())
        other_room = mint_token(SECRET, "elsewhere", write=True, ttl=60)
        app = EditorApp(ROOM, relay.url, token=other_room, name="tom")
        async with app.run_test(size=(100, 30)):
            await eventually(lambda: app.state.startswith("refused"), what="the room refusal")
            assert str((await relay.peer.open(ROOM)).text("body")) == ""


async def test_the_editor_edits_with_lan_peers_and_no_relay(tmp_path: Path) -> None:
    # crdtsync edit ROOM --lan --key-file ...: zeroconf on 127.0.0.1 only.
    key = GroupKey.generate()
    async with Peer(store=tmp_path / "py.db") as peer:
        await peer.start_lan(key, interfaces=["127.0.0.1"])
        doc = await peer.open(ROOM)
        doc.text("body").insert(0, "from python\n")
        app = EditorApp(
            ROOM,
            None,
            name="tom",
            lan_key=key,
            lan_interfaces=["127.0.0.1"],
            store=str(tmp_path / "editor.db"),
        )
        async with app.run_test(size=(100, 30)) as pilot:
            await eventually(lambda: text_of(app) == "from python\n", 20, "the LAN peer's text")
            await synced(app)
            await pilot.press(*"typed ")
            await eventually(
                lambda: str(doc.text("body")) == "typed from python\n", 20, "the typing"
            )
            assert app.peer is not None
            assert app.peer.lan is not None
            assert app.peer.lan.linked() == {peer.lan.fingerprint}  # type: ignore[union-attr]
        assert (tmp_path / "editor.db.lan-identity").exists()
