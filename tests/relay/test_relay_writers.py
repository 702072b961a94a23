"""Who may write under which client id, over real sockets (the relay's writer registry).

Regressions for the review of 2026-12-05 (bugs A, H, M, N): each test is the
attack or the honest scenario that went wrong, against an in-process relay on
127.0.0.1.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import NO_PINGS, RawSync, YClient, errors, room_state, running_relay, ws_peer
from helpers.waiting import eventually
from websockets.asyncio.client import connect

from crdtsync import Doc, ErrorCode
from crdtsync.protocol import messages as m
from crdtsync.protocol import session as p
from crdtsync.protocol import yprotocol as y
from crdtsync.relay import mint_token

SECRET = b"writers-test-secret-0123456789abcdef"



def tok(write: bool = True) -> str:
    return mint_token(SECRET, "notes", write=write, ttl=600)


@pytest.mark.anyio
async def test_declaring_a_live_peers_id_does_not_take_it_over(tmp_path: Path) -> None:
    """Bug A: HELLO's peer id is public; a second connection declaring it is refused.

    Before the fix the newcomer took the victim's client id over, planted an
    update under it after a clock gap, and the relay then dropped (yet
    acknowledged) the victim's next edits.
    """
    async with running_relay(tmp_path, secret=SECRET) as relay, ws_peer() as victim:
        vdoc = await victim.open("notes")
        vdoc.text("body").insert(0, "victim:")
        await victim.connect(relay.url, token=tok())
        assert await victim.wait_synced("notes", 10)
        atk = await RawSync.open(
            relay.url, peer_id=victim.peer_id, docs=[("notes", Doc())], token=tok()
        )
        code = await atk.closed()
        assert code == 1000  # the crdtsync CLOSE frame carries the reason, the socket closes
        assert any(
            isinstance(msg, m.Close) and msg.code == ErrorCode.FORBIDDEN_WRITER
            for msg in atk.messages
        ), atk.messages
        # The victim keeps typing, keystroke by keystroke; all of it arrives.
        for ch in "abcdefghij":
            vdoc.text("body").insert(len(str(vdoc.text("body"))), ch)
        assert await victim.wait_synced("notes", 10)
        assert (await room_state(relay, "notes"))["body"] == "victim:abcdefghij"
        assert victim.connections()[0][2], "the victim stayed connected"


@pytest.mark.anyio
async def test_a_peer_reconnecting_while_its_old_connection_lingers_gets_back_in(
    tmp_path: Path,
) -> None:
    """The other side of bug A's fix: a refused reconnect retries until the old one is gone."""
    async with running_relay(tmp_path) as relay, ws_peer() as peer:
        doc = await peer.open("notes")
        doc.text("body").insert(0, "one")
        # A stale connection under the peer's id (as if the relay had not yet
        # noticed its old socket die).
        stale = await RawSync.open(relay.url, peer_id=peer.peer_id, docs=[("notes", Doc())])
        await stale.until(lambda: stale.session.is_synced("notes"))
        statuses: list[Any] = []
        peer.on_status(statuses.append)
        with pytest.raises(TimeoutError):
            await peer.connect(relay.url, timeout=0.5)
        await eventually(
            lambda: any(
                s.error is not None and s.error.code == ErrorCode.FORBIDDEN_WRITER for s in statuses
            ),
            what="the reconnect is refused while the old connection lives",
        )
        await stale.aclose()
        assert await peer.wait_synced("notes", 10), "it got in once the old one went"
        assert (await room_state(relay, "notes"))["body"] == "one"


@pytest.mark.anyio
async def test_read_only_connections_claim_no_client_id(tmp_path: Path) -> None:
    """Bug H: a read-only HELLO naming a writer's id used to lock that writer out."""
    async with running_relay(tmp_path, secret=SECRET) as relay:
        victim = await YClient.open(relay.url, "notes", token=tok())
        await victim.sync()
        await victim.set_presence({"user": "vic"})  # its client id is now public
        x = victim.doc.peer_id
        ws = await connect(relay.url, proxy=None, compression=None, ping_interval=None)
        s = p.Session.client(
            random.randrange(1, 2**31),
            auth={"token": tok(write=False)},
            writers=[x],
            options=NO_PINGS,
        )
        for f in s.data_to_send():
            await ws.send(f)
        s.receive_data(await ws.recv())
        assert s.state is p.State.OPEN, s.error
        assert relay.peer._registry.owner(x) is not None
        assert not isinstance(relay.peer._registry.owner(x), p.Session)
        await victim.edit(lambda d: d.text("body").insert(0, "my first edit"))
        await eventually(lambda: _text(relay) == "my first edit", what="the writer's edit arrives")
        # A read-only y client announcing the writer's id claims nothing either.
        ro = await YClient.open(relay.url, "notes", token=tok(write=False), client_id=x)
        await ro.sync()
        await ro.set_presence({"user": "impostor"})
        await victim.aclose()
        again = await YClient.open(relay.url, "notes", token=tok(), client_id=x)
        again.doc = victim.doc
        await again.set_presence({"user": "vic"})
        await again.sync()
        await again.edit(lambda d: d.text("body").insert(0, "back: "))
        await eventually(lambda: _text(relay) == "back: my first edit")
        assert await errors(relay, "ForbiddenWriterError") == 0
        await again.aclose()
        await ro.aclose()
        await ws.close()


def _text(relay: Any) -> str:
    entry = relay.peer._docs.get("notes")
    return "" if entry is None else str(entry.doc.text("body"))


@pytest.mark.anyio
async def test_a_tab_forwarding_another_tabs_edit_does_not_lock_its_author_out(
    tmp_path: Path,
) -> None:
    """Bug M: y-websocket tabs share edits over BroadcastChannel.

    Tab B's sync step 2 carries tab A's unsent edit; A reconnects (same client
    id) and types on. Both announce presence on connect, as stock y-websocket
    does: that is what tells the relay whose id is whose.
    """
    async with running_relay(tmp_path) as relay:
        a_id, b_id = 111111, 222222
        a = await YClient.open(relay.url, "notes", client_id=a_id)
        await a.set_presence({"tab": "A"})
        b = await YClient.open(relay.url, "notes", client_id=b_id)
        await b.set_presence({"tab": "B"})
        a.doc.text("body").insert(0, "typed in tab A")
        b.doc.import_yjs_update(a.doc.export_yjs_update())  # over BroadcastChannel
        b.doc.text("body").insert(0, "[B] ")
        await a.aclose()
        await b.sync()  # B's step 2 carries A's edit too
        await eventually(lambda: _text(relay) == "[B] typed in tab A")
        assert relay.peer._registry.owner(a_id) is None, "forwarding claims nothing"
        a2 = await YClient.open(relay.url, "notes", client_id=a_id)
        a2.doc = a.doc
        await a2.set_presence({"tab": "A"})
        await a2.sync()
        await a2.edit(lambda d: d.text("body").insert(len(str(d.text("body"))), " and more"))
        await eventually(lambda: _text(relay) == "[B] typed in tab A and more")
        # And B resending all it knows (its reconnect) is fine while A is live.
        await b.ws.send(y.encode_sync_step2(b.doc.export_yjs_update()))
        await b.edit(lambda d: d.text("body").insert(0, "!"))
        await eventually(lambda: _text(relay) == "![B] typed in tab A and more")
        assert await errors(relay, "ForbiddenWriterError") == 0
        # An impostor announcing A's id (echo or attack) gets no write under it.
        imp = await YClient.open(relay.url, "notes")
        await imp.set_presence({"tab": "A?"})
        forged = Doc(peer_id=a_id)
        forged.import_yjs_update(relay.peer._docs["notes"].doc.export_yjs_update())
        before = forged.version
        forged.text("body").insert(0, "EVIL")
        await imp.ws.send(y.encode_update(forged.export_yjs_update(since=before)))
        code, _, _ = await imp.closed()
        assert code == 1008
        await a2.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_hello_writers_are_bounded(tmp_path: Path) -> None:
    """Bug N: a HELLO may not declare more than MAX_WRITERS ids."""
    async with running_relay(tmp_path) as relay:
        ws = await connect(
            relay.url, proxy=None, compression=None, ping_interval=None, max_size=None
        )
        s = p.Session.client(
            7, writers=range(1 << 40, (1 << 40) + p.MAX_WRITERS + 1), options=NO_PINGS
        )
        for f in s.data_to_send():
            await ws.send(f)
        s.receive_data(await ws.recv())
        assert s.state is p.State.CLOSED
        assert s.close_code == ErrorCode.LIMIT_EXCEEDED
        assert len(relay.peer._registry) == 0
        await ws.close()
