"""The relay over real sockets on 127.0.0.1: sync, auth, limits, hostile input, operations.

Each test starts an in-process :class:`Relay` on a free port with its SQLite file in
``tmp_path`` and talks to it with real clients: Python Peers over the WebSocket
transport, and raw y-protocols / crdtsync clients (tests/helpers/relay.py) that
do exactly what the test says and record everything they receive. The node
y-websocket interop and the kill -9 durability runs live in their own files.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import os
import re
import ssl
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.relay import (
    CORPUS,
    NO_PINGS,
    QUICK,
    WAIT,
    PausableTransport,
    RawSync,
    RelayThread,
    ServerModel,
    YClient,
    doc_state,
    errors,
    http_get,
    http_get_sync,
    http_url,
    model_registry,
    mutate,
    parse_metrics,
    room_state,
    running_relay,
    scrape,
    split_frame,
    stalled_y_client,
    ws_peer,
    y_model,
    y_refusal,
)
from helpers.stores import GatedStore
from helpers.tlsutil import self_signed_cert
from helpers.waiting import eventually, until
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets import State
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync import client as sync_client

from crdtsync import AuthError, Doc, ErrorCode, InvalidRoomError, Peer, RoomNotAllowedError
from crdtsync.format.version import Version
from crdtsync.format.yupdate import ParsedUpdate, UpdateLimits, encode_update
from crdtsync.peer.peer import Status
from crdtsync.protocol import messages as m
from crdtsync.protocol import session as p
from crdtsync.protocol import yprotocol as y
from crdtsync.protocol.awareness import Awareness
from crdtsync.protocol.session import SessionOptions
from crdtsync.relay import Relay, RelayConfig, mint_token

SECRET = b"relay-test-secret-0123456789abcdef"


def token(room: str = "notes", *, write: bool = True, **kw: Any) -> str:
    kw.setdefault("ttl", 600)
    return mint_token(SECRET, room, write=write, **kw)


def collect(peer: Peer) -> list[Status]:
    events: list[Status] = []
    peer.on_status(events.append)
    return events


def doc_errors(events: list[Status], doc: str) -> list[Status]:
    return [e for e in events if e.kind == "error" and e.doc == doc]


# -- 1. basic sync -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_peers_sync_through_the_relay(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, ws_peer() as a, ws_peer() as b:
        da = await a.open("notes")
        da.text("body").insert(0, "hello")
        await a.connect(relay.url)
        db = await b.open("notes")
        await b.connect(relay.url)
        assert await a.wait_synced("notes", 10)
        await eventually(lambda: str(db.text("body")) == "hello", what="b has a's text")
        db.text("body").insert(5, " world")
        await eventually(lambda: str(da.text("body")) == "hello world", what="a has b's edit")
        assert (await room_state(relay, "notes")) == {"body": "hello world"}


@pytest.mark.anyio
async def test_peer_and_y_client_converge_and_share_presence(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, ws_peer() as peer:
        doc = await peer.open("notes")
        doc.text("body").insert(0, "from peer")
        await peer.connect(relay.url)
        assert await peer.wait_synced("notes", 10)

        yc = await YClient.open(relay.url, "notes")
        first = await yc.recv()
        assert isinstance(first, y.SyncStep1), first  # what y-websocket's server sends first
        await yc.sync()
        assert yc.text() == "from peer"

        # y -> peer
        await yc.edit(lambda d: d.text("body").insert(0, "[y] "))
        await eventually(lambda: str(doc.text("body")) == "[y] from peer", what="peer sees y edit")
        # peer -> y
        doc.text("body").insert(len(str(doc.text("body"))), " [peer]")
        await yc.pump_until(lambda: yc.text() == "[y] from peer [peer]")

        # Presence: y awareness -> peer.presence; peer.set_presence -> y awareness messages.
        await yc.set_presence({"user": "ylva"})
        await eventually(
            lambda: peer.presence("notes").states.get(yc.doc.peer_id) == {"user": "ylva"},
            what="the peer sees the y client's presence",
        )
        peer.set_presence("notes", {"user": "pete"})
        await yc.pump_until(lambda: yc.awareness.states.get(peer.peer_id) == {"user": "pete"})
        await yc.aclose()
        # The y client left: its presence is removed at the peer.
        await eventually(
            lambda: yc.doc.peer_id not in peer.presence("notes").states,
            what="the y client's presence is removed when it disconnects",
        )


# -- 2. auth -----------------------------------------------------------------------------------


def _bad_tokens() -> dict[str, str | None]:
    return {
        "none": None,
        "garbage": "not-a-token",
        "wrong-secret": mint_token(
            b"another-secret-0123456789abcdef", "notes", write=True, ttl=600
        ),
        "expired": token(now=time.time() - 7200, ttl=60),
    }


async def _seed(relay: Relay, room: str, text: str) -> None:
    doc = await relay.peer.open(room)
    doc.text("body").insert(0, text)


@pytest.mark.anyio
async def test_crdtsync_refuses_bad_tokens_before_any_document_byte(tmp_path: Path) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay:
        await _seed(relay, "notes", "secret text")
        for case, tok in _bad_tokens().items():
            before = await errors(relay, "auth")
            async with ws_peer() as peer:
                doc = await peer.open("notes")
                with pytest.raises(AuthError):
                    await peer.connect(relay.url, token=tok, timeout=10)
                assert doc.to_py() == {}, case
            # Counted once: the Peer read the refusal on its first attempt and
            # gave up (it retries only what looks like a dropped connection).
            assert await errors(relay, "auth") == before + 1, case
            # The same refusal seen frame by frame: only a CLOSE, with AUTH_FAILED.
            raw = await RawSync.open(relay.url, docs=[("notes", Doc())], token=tok)
            assert await raw.closed() is not None
            kinds = [type(msg).__name__ for msg in raw.messages]
            assert kinds == ["Close"], (case, kinds)
            assert raw.messages[0].code == ErrorCode.AUTH_FAILED, case  # type: ignore[union-attr]

        # A valid token gets the document.
        async with ws_peer() as peer:
            doc = await peer.open("notes")
            await peer.connect(relay.url, token=token())
            await eventually(lambda: str(doc.text("body")) == "secret text")


@pytest.mark.anyio
async def test_a_refusal_made_while_a_commit_is_in_flight_still_sends_its_close() -> None:
    # The relay's session writer waits for the store before each batch (group
    # commit). A HELLO refused during that wait queued its CLOSE after the batch
    # was taken; the writer then saw the session closed and returned without
    # sending it: the client saw the connection end with no reason, and a Peer
    # retried (the refusal counted twice). Deterministic: the commit is held.
    store = GatedStore()
    async with Relay(RelayConfig(port=0, host="127.0.0.1", secret=SECRET), store=store) as relay:
        doc = await relay.peer.open("notes")
        store.gate.clear()
        doc.text("body").insert(0, "held")  # its commit waits on the worker thread
        ws = await connect(relay.url, compression=None, ping_interval=None, proxy=None)
        # The session runs: its writer waits for that commit before anything goes out.
        await eventually(lambda: len(relay.peer.connections()) == 1)
        session = p.Session.client(
            4242,
            docs=[("notes", b"", Doc().version)],
            auth={"token": "not-a-token"},
            writers=[4242],
            options=NO_PINGS,
        )
        raw = RawSync(ws, session, {})
        await raw.flush()

        async def refused() -> bool:  # counted as the HELLO is refused, its CLOSE queued
            return await errors(relay, "auth") == 1

        await eventually(refused)
        store.gate.set()
        assert await raw.closed() is not None
        kinds = [type(msg).__name__ for msg in raw.messages]
        assert kinds == ["Close"], kinds
        assert raw.messages[0].code == ErrorCode.AUTH_FAILED  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_y_refuses_bad_tokens_with_4401_and_no_sync_message(tmp_path: Path) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay:
        await _seed(relay, "notes", "secret text")
        for case, tok in _bad_tokens().items():
            before = await errors(relay, "auth")
            path = "/notes" + ("" if tok is None else f"?token={tok}")
            code, _reason, received = await y_refusal(relay.url, path)
            assert code == 4401, case
            assert all(isinstance(msg, y.AuthDenied) for msg in received), (case, received)
            assert len(received) == 1, (case, received)
            assert await errors(relay, "auth") == before + 1, case
        yc = await YClient.open(relay.url, "notes", token=token())
        await yc.sync()
        assert yc.text() == "secret text"
        await yc.aclose()


@pytest.mark.anyio
async def test_tokens_for_other_rooms_and_patterns(tmp_path: Path) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay:
        await _seed(relay, "other", "not yours")
        await _seed(relay, "team/a", "team text")
        # crdtsync: the session opens, the document it may not see is refused, and
        # connect() raises that refusal (the room was refused in the handshake).
        async with ws_peer() as peer:
            events = collect(peer)
            other = await peer.open("other")
            with pytest.raises(RoomNotAllowedError, match="'other'"):
                await peer.connect(relay.url, token=token("notes"))
            err = doc_errors(events, "other")[0].error
            assert isinstance(err, RoomNotAllowedError)
            assert err.code == ErrorCode.ROOM_NOT_ALLOWED, err
            assert other.to_py() == {}
        # A pattern: team/* opens team/a but not other, on one connection.
        async with ws_peer() as peer:
            events = collect(peer)
            team = await peer.open("team/a")
            other = await peer.open("other")
            with pytest.raises(RoomNotAllowedError):
                await peer.connect(relay.url, token=token("team/*"))
            await eventually(lambda: str(team.text("body")) == "team text")
            await eventually(lambda: doc_errors(events, "other"), what="'other' refused")
            assert doc_errors(events, "team/a") == []
            assert other.to_py() == {}
        # y-protocols: 4403 for a room outside the token, before any document byte.
        for path in (f"/other?token={token('notes')}", f"/other?token={token('team/*')}"):
            code, _, received = await y_refusal(relay.url, path)
            assert code == 4403, path
            assert all(isinstance(msg, y.AuthDenied) for msg in received), received
        yc = await YClient.open(relay.url, "team/a", token=token("team/*"))
        await yc.sync()
        assert yc.text() == "team text"
        await yc.aclose()


# -- 3. read-only tokens -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_read_only_crdtsync_peer_reads_but_cannot_write(tmp_path: Path) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay:
        async with ws_peer() as writer, ws_peer() as reader:
            wdoc = await writer.open("notes")
            wdoc.text("body").insert(0, "abcdef")
            del wdoc.text("body")[1:3]  # a deletion: catch-ups then repeat a delete set
            await writer.connect(relay.url, token=token())
            assert await writer.wait_synced("notes", 10)

            events = collect(reader)
            rdoc = await reader.open("notes")
            await reader.connect(relay.url, token=token(write=False))
            await eventually(lambda: str(rdoc.text("body")) == "adef", what="reader gets doc")
            assert await reader.wait_synced("notes", 10)
            assert doc_errors(events, "notes") == []

            rdoc.text("body").insert(0, "EVIL ")
            await eventually(lambda: doc_errors(events, "notes"), what="the write is refused")
            err = doc_errors(events, "notes")[0].error
            assert err is not None
            assert err.code == ErrorCode.READ_ONLY, err
            # Never reached the relay (hence its store) nor the other client.
            wdoc.text("body").insert(0, ">")
            assert await writer.wait_synced("notes", 10)
            assert (await room_state(relay, "notes")) == {"body": ">adef"}
            assert str(wdoc.text("body")) == ">adef"
        assert await errors(relay, "crdtsync_ReadOnlyError") >= 1

    # The store agrees: a new relay on the same file has no trace of the write.
    async with running_relay(tmp_path, secret=SECRET) as relay:
        assert (await room_state(relay, "notes")) == {"body": ">adef"}


@pytest.mark.anyio
async def test_read_only_catch_up_of_known_content_is_not_refused(tmp_path: Path) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay:
        async with ws_peer() as writer:
            wdoc = await writer.open("notes")
            wdoc.text("body").insert(0, "abcdef")
            del wdoc.text("body")[0:2]
            await writer.connect(relay.url, token=token())
            assert await writer.wait_synced("notes", 10)
            full = wdoc.export_yjs_update()
        # A read-only peer that already holds everything (items and deletions):
        # its catch-up repeats known content and must not be refused.
        async with ws_peer() as reader:
            events = collect(reader)
            rdoc = await reader.open("notes")
            rdoc.import_yjs_update(full)
            await reader.connect(relay.url, token=token(write=False))
            assert await reader.wait_synced("notes", 10)
            assert doc_errors(events, "notes") == []
            assert [e for e in events if e.kind == "error"] == []
        # The same over y-protocols: a step 2 with the whole (known) document.
        yc = await YClient.open(relay.url, "notes", token=token(write=False))
        yc.doc.import_yjs_update(full)
        await yc.ws.send(y.encode_sync_step2(full))
        await yc.sync()
        assert not any(isinstance(msg, y.AuthDenied) for msg in yc.received), yc.received
        await yc.aclose()
        assert await errors(relay, "read_only") == 0
        assert (await room_state(relay, "notes")) == {"body": "cdef"}


@pytest.mark.anyio
async def test_read_only_y_client_reads_and_its_update_is_denied(tmp_path: Path) -> None:
    async with running_relay(tmp_path, secret=SECRET) as relay:
        await _seed(relay, "notes", "shared")
        watcher = await YClient.open(relay.url, "notes", token=token())
        await watcher.sync()
        reader = await YClient.open(relay.url, "notes", token=token(write=False))
        await reader.sync()
        assert reader.text() == "shared"

        await reader.edit(lambda d: d.text("body").insert(0, "EVIL "))
        await reader.pump_until(lambda: any(isinstance(x, y.AuthDenied) for x in reader.received))
        # The connection stays open (a y-websocket client just logs the denial)...
        await reader.sync()
        assert (await room_state(relay, "notes")) == {"body": "shared"}
        assert await errors(relay, "read_only") == 1
        # ...and it still receives the room's updates; the watcher never saw the write.
        await watcher.edit(lambda d: d.text("body").insert(6, "!"))
        await reader.pump_until(lambda: reader.text().endswith("shared!"))
        await watcher.sync()
        assert watcher.text() == "shared!"
        for c in (reader, watcher):
            await c.aclose()


# -- 4. room names ---------------------------------------------------------------------------------

BAD_PATHS = [
    "/../x",
    "/a/../b",
    "/%2e%2e",
    "/a/%2E%2E/b",
    "/%252e%252e",  # double-encoded: keeps a '%' after one decoding
    "/" + "r" * 129,
    "/" + "%72" * 129,  # 129 characters once decoded
    "/a//b",
    "/a/",
    "/%00",
    "/a%00b",
    "/%zz",
    "/%ff%fe",
    "/caf%C3%A9",
    "/a%20b",
    "/.",
]
BAD_NAMES = ["../x", "a/../b", "..", "r" * 129, "a//b", "/a", "a\x00b", "%2e%2e", "a b"]


@pytest.mark.anyio
async def test_bad_room_names_are_refused_on_both_protocols(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        for path in BAD_PATHS:
            before = await errors(relay, "invalid_room")
            code, _, received = await y_refusal(relay.url, path)
            assert code == 4400, path
            assert received == [], (path, received)
            assert await errors(relay, "invalid_room") == before + 1, path
        async with ws_peer() as peer:
            events = collect(peer)
            good = await peer.open("a/b")
            good.text("body").insert(0, "fine")
            for name in BAD_NAMES:
                (await peer.open(name)).text("body").insert(0, "x")
            # Refused in the handshake: connect() raises the first (by name) of them.
            with pytest.raises(InvalidRoomError, match=re.escape(repr(sorted(BAD_NAMES)[0]))):
                await peer.connect(relay.url)
            for name in BAD_NAMES:
                await eventually(lambda n=name: doc_errors(events, n), what=f"{name!r} refused")
                err = doc_errors(events, name)[0].error
                assert err is not None
                assert err.code == ErrorCode.INVALID_ROOM, (name, err)
            # One bad name refuses that document only.
            assert await peer.wait_synced("a/b", 10)
        assert relay.peer.docs() == ["a/b"]
        assert (await room_state(relay, "a/b")) == {"body": "fine"}


# -- 5. forged client ids --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_y_client_cannot_write_under_a_peers_client_id(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, ws_peer() as victim:
        vdoc = await victim.open("notes")
        vdoc.text("body").insert(0, "victim")
        await victim.connect(relay.url)
        assert await victim.wait_synced("notes", 10)

        watcher = await YClient.open(relay.url, "notes")
        await watcher.sync()
        forger = await YClient.open(relay.url, "notes", client_id=victim.peer_id)
        await forger.sync()
        # Written under the victim's id with a high clock: what would block the victim.
        forged = Doc(peer_id=victim.peer_id)
        forged.import_yjs_update(vdoc.export_yjs_update())
        forged.text("body").insert(0, "X" * 50)
        await forger.ws.send(y.encode_update(forged.export_yjs_update(since=vdoc.version)))
        code, _, _ = await forger.closed()
        assert code == 1008
        assert await errors(relay, "ForbiddenWriterError") == 1

        vdoc.text("body").insert(6, " still writes")
        await watcher.pump_until(lambda: watcher.text() == "victim still writes")
        assert (await room_state(relay, "notes")) == {"body": "victim still writes"}
        await watcher.aclose()


@pytest.mark.anyio
async def test_crdtsync_peer_cannot_write_under_another_connections_client_id(
    tmp_path: Path,
) -> None:
    async with running_relay(tmp_path) as relay:
        # The victim is a y client: its id is bound to its connection by its first write.
        victim = await YClient.open(relay.url, "notes")
        await victim.sync()
        await victim.edit(lambda d: d.text("body").insert(0, "victim"))
        await eventually(
            lambda: _has(relay, "notes", "victim"), what="the relay has the victim's edit"
        )
        async with ws_peer() as forger, ws_peer() as watcher:
            events = collect(forger)
            fdoc = await forger.open("notes")
            forged = Doc(peer_id=victim.doc.peer_id)
            forged.import_yjs_update(victim.doc.export_yjs_update())
            forged.text("body").insert(0, "FORGED ")
            fdoc.import_yjs_update(forged.export_yjs_update())
            await forger.connect(relay.url)
            await eventually(
                lambda: any(
                    e.error is not None and e.error.code == ErrorCode.FORBIDDEN_WRITER
                    for e in events
                ),
                what="the forged write is refused with FORBIDDEN_WRITER",
            )
            await forger.disconnect(relay.url)
            wdoc = await watcher.open("notes")
            await watcher.connect(relay.url)
            await eventually(lambda: str(wdoc.text("body")) == "victim")
            # The victim's later edits still propagate.
            await victim.edit(lambda d: d.text("body").insert(6, " again"))
            await eventually(lambda: str(wdoc.text("body")) == "victim again")
            assert (await room_state(relay, "notes")) == {"body": "victim again"}
        await victim.aclose()


async def _has(relay: Relay, room: str, text: str) -> bool:
    return str((await relay.peer.open(room)).text("body")) == text


# -- rooms are private to the tokens that name them ------------------------------------------------


@pytest.mark.anyio
async def test_a_session_is_not_told_of_rooms_it_did_not_ask_for(tmp_path: Path) -> None:
    """A token for ``notes`` must not learn which other rooms exist (names, versions)."""
    async with running_relay(tmp_path, secret=SECRET) as relay:
        await _seed(relay, "team-secret/plans", "hidden")
        raw = await RawSync.open(relay.url, docs=[("notes", Doc())], token=token("notes"))
        await raw.until(lambda: raw.session.is_synced("notes"))
        # A room opened while the session is up is not announced either.
        await _seed(relay, "team-secret/later", "hidden too")
        yc = await YClient.open(relay.url, "notes", token=token("notes"))
        await yc.sync()
        await yc.edit(lambda d: d.text("body").insert(0, "x"))
        await raw.until(lambda: str(raw.docs["notes"].text("body")) == "x")
        names = {msg.name for msg in raw.messages if isinstance(msg, m.Sync)}
        assert names == {"notes"}, names
        await raw.aclose()
        await yc.aclose()


@pytest.mark.anyio
async def test_more_loaded_rooms_than_max_docs_per_conn_break_nobody(tmp_path: Path) -> None:
    """``max_docs_per_conn`` limits what one connection opens, not how many rooms the relay has."""
    async with running_relay(tmp_path, max_docs_per_conn=2) as relay:
        async with ws_peer() as early:
            events = collect(early)
            edoc = await early.open("notes")
            await early.connect(relay.url)
            assert await early.wait_synced("notes", 10)
            clients = []
            for i in range(4):  # rooms opened by y clients while a session is up
                yc = await YClient.open(relay.url, f"room{i}")
                await yc.sync()
                await yc.edit(lambda d, i=i: d.text("body").insert(0, f"room {i}"))
                clients.append(yc)
            async with ws_peer() as late:
                ldoc = await late.open("notes")
                await late.connect(relay.url)
                assert await late.wait_synced("notes", 10)
                ldoc.text("body").insert(0, "late")
                await eventually(lambda: str(edoc.text("body")) == "late")
            assert [e for e in events if e.kind == "error"] == []
        for yc in clients:
            await yc.aclose()
        assert await errors(relay, "internal") == 0


# -- 7. limits -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_message_rate_limit_closes_with_4529(tmp_path: Path) -> None:
    async with running_relay(tmp_path, max_msgs_per_sec=1.0, max_msgs_burst=5) as relay:
        yc = await YClient.open(relay.url, "notes")
        for _ in range(20):
            await yc.ws.send(y.encode_query_awareness())
        code, _, _ = await yc.closed()
        assert code == 4529
        assert await errors(relay, "rate_limited") == 1
        # The crdtsync endpoint has the same bucket (counted before the handshake too).
        raw = await RawSync.open(relay.url)
        await raw.ws.send(b"\xe8\x07")  # a frame of 1000 bytes that never completes...
        for _ in range(20):
            await raw.ws.send(b"\x00")  # ...in tiny messages: only the bucket can stop them
        assert await raw.closed() == 4529
        assert await errors(relay, "rate_limited") == 2
        # Others are unaffected.
        ok = await YClient.open(relay.url, "notes")
        await ok.sync()
        await ok.aclose()


@pytest.mark.anyio
async def test_unauthenticated_data_is_bounded(tmp_path: Path) -> None:
    async with running_relay(tmp_path, secret=SECRET, max_unauth_bytes=4096) as relay:
        async with connect(relay.url, proxy=None, compression=None) as ws:
            # A first frame announcing 60 kB, dribbled in small messages: it never
            # completes a HELLO, so the relay cannot even check a token.
            await ws.send(bytes([0xE0, 0xD4, 0x03]))  # varuint 60_000
            code = None
            try:
                for _ in range(20):
                    await ws.send(b"\x00" * 500)
                await asyncio.wait_for(ws.recv(), WAIT)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
            assert code == 1008
        assert await errors(relay, "unauthenticated_data") == 1
        # A real handshake fits in the allowance.
        async with ws_peer() as peer:
            await peer.open("notes")
            await peer.connect(relay.url, token=token())
            assert await peer.wait_synced("notes", 10)


@pytest.mark.anyio
async def test_documents_per_connection_limit(tmp_path: Path) -> None:
    async with running_relay(tmp_path, max_docs_per_conn=2) as relay:
        async with ws_peer() as peer:
            events = collect(peer)
            for name in ("a", "b", "c"):
                (await peer.open(name)).text("body").insert(0, name)
            await peer.connect(relay.url)
            await eventually(
                lambda: any(
                    e.kind == "error"
                    and e.error is not None
                    and e.error.code == ErrorCode.LIMIT_EXCEEDED
                    for e in events
                ),
                what="LIMIT_EXCEEDED",
            )
        # A client over the limit is a client error, not a relay failure.
        assert await errors(relay, "internal") == 0
        # Within the limit all is well.
        async with ws_peer() as ok:
            (await ok.open("a")).text("body").insert(0, "ok ")
            (await ok.open("b")).text("body").insert(0, "ok ")
            await ok.connect(relay.url)
            assert await ok.wait_synced("a", 10)
            assert await ok.wait_synced("b", 10)


@pytest.mark.anyio
async def test_disconnect_returns_while_the_relay_keeps_refusing_the_session(
    tmp_path: Path,
) -> None:
    """A peer stuck in refuse-reconnect churn must still stop when told to."""
    async with running_relay(tmp_path, max_docs_per_conn=2) as relay, ws_peer() as peer:
        events = collect(peer)
        for name in ("a", "b", "c"):
            (await peer.open(name)).text("body").insert(0, name)
        for _ in range(5):  # the cancel lands at a different moment of the churn each time
            events.clear()
            await peer.connect(relay.url)
            await eventually(lambda: any(e.kind == "error" for e in events), what="a refusal")
            # Timed by hand: disconnect() swallows the cancel wait_for would use.
            t0 = time.monotonic()
            await asyncio.wait_for(peer.disconnect(relay.url), 3)
            assert time.monotonic() - t0 < 2, "disconnect() did not stop the reconnecting"
            assert peer.connections() == []


@pytest.mark.anyio
async def test_connection_limit_closes_with_1013(tmp_path: Path) -> None:
    async with running_relay(tmp_path, max_connections=2) as relay:
        first = await YClient.open(relay.url, "notes")
        await first.sync()
        async with ws_peer() as peer:
            await peer.open("notes")
            await peer.connect(relay.url)
            assert await peer.wait_synced("notes", 10)
            code, _, received = await y_refusal(relay.url, "/notes")
            assert code == 1013
            assert received == []
            assert await errors(relay, "too_many_connections") == 1
        await first.aclose()
        await eventually(lambda: relay.connections == 0)
        again = await YClient.open(relay.url, "notes")
        await again.sync()
        await again.aclose()


# -- 6. malformed and oversized input (fixed cases; the fuzzing is further down) -------------------


@pytest.mark.anyio
async def test_oversized_messages_and_updates_are_refused(tmp_path: Path) -> None:
    async with running_relay(tmp_path, max_frame=64 << 10, max_update=8 << 10) as relay:
        healthy = await YClient.open(relay.url, "notes")
        await healthy.sync()
        # A WebSocket message over max_frame: 1009 from the WebSocket layer.
        big = await YClient.open(relay.url, "notes")
        await big.ws.send(y.encode_update(b"\x00" * (100 << 10)))
        code, _, _ = await big.closed()
        assert code == 1009
        # An update over max_update inside an acceptable message: refused (1009 too).
        editor = Doc()
        editor.text("body").insert(0, "x" * (20 << 10))
        update = editor.export_yjs_update()
        assert (8 << 10) < len(update) < (64 << 10)
        over = await YClient.open(relay.url, "notes")
        await over.ws.send(y.encode_update(update))
        code, _, _ = await over.closed()
        assert code == 1009
        assert await errors(relay, "too_big") == 1
        # The same update from a crdtsync peer: its session is refused (FRAME_TOO_LARGE).
        async with ws_peer() as peer:
            events = collect(peer)
            doc = await peer.open("notes")
            doc.text("body").insert(0, "x" * (20 << 10))
            with contextlib.suppress(TimeoutError):
                await peer.connect(relay.url, timeout=2)
            await eventually(
                lambda: any(
                    e.error is not None and e.error.code == ErrorCode.FRAME_TOO_LARGE
                    for e in events
                ),
                what="FRAME_TOO_LARGE",
            )
        # Nobody else noticed; nothing was stored.
        await healthy.edit(lambda d: d.text("body").insert(0, "still fine"))
        await healthy.sync()
        assert (await room_state(relay, "notes")) == {"body": "still fine"}
        assert relay.connections == 1
        await healthy.aclose()


@pytest.mark.anyio
async def test_text_messages_close_with_1003(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        yc = await YClient.open(relay.url, "notes")
        await yc.ws.send("hello")
        code, _, _ = await yc.closed()
        assert code == 1003
        async with connect(relay.url, proxy=None, compression=None) as ws:
            await ws.send("hello")
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), WAIT)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1003
        assert await errors(relay, "text_message") == 1


def corpus_files() -> list[Path]:
    files = sorted(CORPUS.glob("*.bin"))
    assert files, f"shared corpus not found at {CORPUS}"
    return files


@pytest.mark.anyio
async def test_hostile_corpus_as_y_updates_closes_only_that_connection(tmp_path: Path) -> None:
    files = corpus_files()
    async with running_relay(tmp_path) as relay, ws_peer() as peer:
        doc = await peer.open("notes")
        doc.text("body").insert(0, "keep me")
        await peer.connect(relay.url)
        assert await peer.wait_synced("notes", 10)
        watcher = await YClient.open(relay.url, "notes")
        await watcher.sync()
        before = await room_state(relay, "notes")
        for path in files:
            for encode in (y.encode_update, y.encode_sync_step2):
                attacker = await YClient.open(relay.url, "notes")
                await attacker.ws.send(encode(path.read_bytes()))
                code, _, _ = await attacker.closed()
                assert code in (1007, 1002), (path.name, code)
                assert (await room_state(relay, "notes")) == before, path.name
        status, _ = await http_get(relay, "/healthz")
        assert status == 200
        # Both healthy clients are still connected and still in sync.
        doc.text("body").insert(0, "> ")
        await watcher.pump_until(lambda: watcher.text() == "> keep me")
        await watcher.edit(lambda d: d.text("body").insert(9, "!"))
        await eventually(lambda: str(doc.text("body")) == "> keep me!")
        await watcher.aclose()


@pytest.mark.anyio
async def test_half_of_an_emoji_cannot_be_deleted_and_the_room_stays_joinable(
    tmp_path: Path,
) -> None:
    # Found by the long socket fuzz run: a deletion of one UTF-16 unit of a
    # character outside the BMP made yrs delete another character, and the
    # room's own export was then refused by every newcomer (validator rule S7).
    async with running_relay(tmp_path) as relay:
        room = await relay.peer.open("notes")
        room.text("body").insert(0, "😀Åb")
        before = await room_state(relay, "notes")
        writer = relay.peer.peer_id
        # The roots map entry is clock 0; then 😀 takes clocks 1-2, Å 3, b 4.
        for start, length in ((1, 1), (2, 1), (2, 2)):
            attacker = await YClient.open(relay.url, "notes")
            await attacker.sync()
            bad = y.encode_update(encode_update(ParsedUpdate({}, {writer: [(start, length)]})))
            await attacker.ws.send(bad)
            code, _, _ = await attacker.closed()
            assert code == 1007, (start, length, code)
            assert await room_state(relay, "notes") == before
        newcomer = await YClient.open(relay.url, "notes")
        await newcomer.sync()
        assert newcomer.text() == "😀Åb"
        await newcomer.edit(lambda d: d.text("body").__delitem__(0))
        await eventually(lambda: str(room.text("body")) == "Åb", what="a whole emoji deleted")
        await newcomer.aclose()


# -- 6b. fuzzing the relay's input over a real socket ----------------------------------------------
#
# The relay runs on its own thread (hypothesis examples are synchronous); each
# example opens a fresh attacking connection, sends its bytes, closes, and waits
# until the relay has finished with that connection. Then the room must be
# exactly what a model of the relay says (the same validation and sans-I/O
# session, fed the same bytes): unchanged unless the input carried valid updates,
# and then changed by exactly those. Healthy clients connected throughout must
# still follow the room, /healthz must answer, and nothing may have failed inside.

# CI runs 60 examples per fuzz test; a long run sets CRDTSYNC_RELAY_FUZZ_EXAMPLES
# (and CRDTSYNC_RELAY_FUZZ_RANDOM=1 for fresh examples each run), see README.
FUZZ = settings(
    max_examples=int(os.environ.get("CRDTSYNC_RELAY_FUZZ_EXAMPLES", "60")),
    deadline=None,
    # The relay's room evolves from example to example: replaying or shrinking an
    # example against a different room would not reproduce it. The failing
    # example is printed as generated.
    database=None,
    phases=[Phase.generate],
    # Fixed generation: runs are reproducible (and the datatree never sees one
    # prefix lead to two different draws across runs of a changing room).
    derandomize=os.environ.get("CRDTSYNC_RELAY_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "extend"]),
        st.integers(0, 1 << 16),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)
PRESENCE = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8)), max_size=3),
)


# The relay under test runs on another thread, and websockets draws ping payloads
# from the global `random` module there: hypothesis sees the global state move
# during a draw and warns, though no strategy uses it.
RELAY_THREAD_RANDOM = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


class FuzzRig:
    """A relay on a thread, a seeded room, and healthy clients that must not notice."""

    def __init__(self, tmp_path: Path, room: str) -> None:
        self.room = room
        self.config = RelayConfig(
            port=0, data=str(tmp_path / "r.db"), idle_unload=3600.0, max_msgs_burst=100_000
        )
        self.limits = UpdateLimits(max_update_bytes=self.config.max_update)
        self.thread = RelayThread(self.config)
        self.mirror = Doc(limits=self.limits)
        self.peer: Peer | None = None
        self.peer_doc: Doc | None = None
        self.watcher: YClient | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def relay(self) -> Relay:
        return self.thread.relay

    def __enter__(self) -> FuzzRig:
        self.thread.__enter__()
        self.thread.call(self._setup())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.thread.call(self._teardown(), timeout=30)
        finally:
            self.thread.__exit__(*exc)

    async def _setup(self) -> None:
        doc = await self.relay.peer.open(self.room)
        doc.text("body").insert(0, "seed text")
        doc.map("m")["k"] = [1, "two"]
        del doc.text("body")[0:2]
        self.mirror.import_yjs_update(doc.export_yjs_update())
        self.peer = ws_peer(options=NO_PINGS)
        await self.peer.start()
        self.peer_doc = await self.peer.open(self.room)
        await self.peer.connect(self.relay.url)
        assert await self.peer.wait_synced(self.room, WAIT)
        self.watcher = await YClient.open(self.relay.url, self.room)
        await self.watcher.sync()
        self._pump = asyncio.get_running_loop().create_task(self._read_forever(self.watcher))

    @staticmethod
    async def _read_forever(client: YClient) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await client.recv(timeout=3600)

    async def _teardown(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.watcher is not None:
            await self.watcher.aclose()
        if self.peer is not None:
            await self.peer.close()

    @property
    def baseline(self) -> int:
        return 2  # the healthy peer and the healthy y client

    def foreign(self) -> dict[int, int]:
        """Client ids the relay binds to the healthy connections."""
        assert self.peer is not None
        return {self.peer.peer_id: self.peer.peer_id}

    def wait_idle(self) -> None:
        """Until the relay has finished with every connection but the healthy ones."""
        until(
            lambda: self.thread.call(self._connections()) == self.baseline,
            WAIT,
            "the relay to finish the connection",
            interval=0.005,
        )

    async def _connections(self) -> int:
        return self.relay.connections

    async def _room(self) -> tuple[Any, ...]:
        return doc_state(await self.relay.peer.open(self.room))

    def check(self) -> None:
        self.wait_idle()
        assert self.thread.call(self._room()) == doc_state(self.mirror)
        status, body = http_get_sync(http_url(self.relay, "/healthz"), None)
        assert status == 200, body
        self.thread.call(self._healthy_follow(self.mirror.to_py()))
        self.newcomer_joins()
        # Rendered on the relay's own loop, as its /metrics handler does: from
        # this thread it would race with connections coming and going.
        metrics = parse_metrics(self.thread.call(self._render()))
        assert metrics.get("crdtsync_relay_errors_total", kind="internal") == 0

    async def _render(self) -> str:
        return self.relay.metrics.render()

    async def _healthy_follow(self, expected: dict[str, Any]) -> None:
        assert self.peer_doc is not None
        assert self.watcher is not None
        peer_doc, watcher = self.peer_doc, self.watcher
        await eventually(
            lambda: peer_doc.to_py() == expected and watcher.doc.to_py() == expected,
            what="the healthy clients to follow the room",
        )
        assert self.peer is not None
        assert [lk for lk in self.peer.connections() if lk[2]], "the healthy peer was dropped"
        assert watcher.ws.state is State.OPEN, "the healthy y client was dropped"

    def newcomer_joins(self) -> None:
        """A client joining now gets the whole room in its sync step 2, and can read it."""
        with self.connect("/" + self.room) as ws:
            ws.send(y.encode_sync_step1(Version()))
            deadline = time.monotonic() + WAIT
            while True:
                assert time.monotonic() < deadline, "no sync step 2 for a newcomer"
                data = ws.recv(timeout=WAIT)
                assert isinstance(data, bytes)
                msg = y.decode(data)
                if isinstance(msg, y.SyncStep2):
                    break
        newcomer = Doc(limits=self.limits)
        newcomer.import_yjs_update(msg.update)
        assert newcomer.to_py() == self.mirror.to_py()

    def connect(self, path: str) -> sync_client.ClientConnection:
        return sync_client.connect(
            self.relay.url + path, compression=None, proxy=None, ping_interval=None
        )


def _valid_update(data: st.DataObject, base: Doc) -> bytes:
    """A valid update on top of ``base``, by a fresh client.

    Every draw is made whatever the state of ``base`` (positions are reduced
    modulo the text's length afterwards), so that hypothesis sees the same draws
    however the room evolved.
    """
    client = data.draw(st.integers(1, 2**32))
    kind = data.draw(st.sampled_from(["insert", "delete", "map"]))
    pos, count = data.draw(st.integers(0, 1 << 16)), data.draw(st.integers(1, 3))
    chars = data.draw(st.text(min_size=1, max_size=8))
    # NUL: reserved; lone surrogates: not text (refused by the model).
    key = data.draw(st.text(st.characters(min_codepoint=1, exclude_categories=("Cs",)), max_size=4))
    value = data.draw(st.one_of(st.integers(), st.text(max_size=6), st.booleans()))
    editor = Doc(peer_id=client)
    editor.import_yjs_update(base.export_yjs_update())
    text = editor.text("body")
    length = len(str(text))
    if kind == "delete" and length:
        start = pos % length
        del text[start : start + count]
    elif kind == "map":
        editor.map("m")[key] = value
    else:
        text.insert(pos % (length + 1), chars)
    return editor.export_yjs_update(since=base.version)


def _y_message(data: st.DataObject, base: Doc) -> bytes:
    kind = data.draw(st.sampled_from(["step1", "step2", "update", "awareness", "query", "auth"]))
    update = _valid_update(data, base)
    presence = data.draw(PRESENCE)
    client = data.draw(st.integers(1, 2**32))
    reason = data.draw(st.text(max_size=10))
    if kind == "step1":
        return y.encode_sync_step1(base.version)
    if kind == "step2":
        return y.encode_sync_step2(update)
    if kind == "update":
        return y.encode_update(update)
    if kind == "awareness":
        return y.encode_awareness(Awareness(client).set_local_state(presence, now=0.0))
    if kind == "query":
        return y.encode_query_awareness()
    return y.encode_auth_denied(reason)


@RELAY_THREAD_RANDOM
def test_fuzz_y_protocols_input(tmp_path: Path) -> None:
    with FuzzRig(tmp_path, "yfuzz") as rig:

        @FUZZ
        @given(data=st.data())
        def attack(data: st.DataObject) -> None:
            how = data.draw(st.sampled_from(["random", "mutated", "payload", "valid"]))
            messages: list[bytes] = []
            for _ in range(data.draw(st.integers(1, 3))):
                raw = data.draw(st.binary(max_size=200))
                message = _y_message(data, rig.mirror)
                mutations = data.draw(MUTATIONS)
                if how == "random":
                    message = raw
                elif how == "mutated":
                    message = mutate(message, mutations)
                elif how == "payload":
                    # A well-formed update message carrying a mutated update.
                    message = y.encode_update(mutate(_valid_update(data, rig.mirror), mutations))
                messages.append(message)
            with rig.connect("/" + rig.room) as ws:
                try:
                    for message in messages:
                        ws.send(message)
                except ConnectionClosed:
                    pass  # refused early: the model stops at the same message
            y_model(rig.mirror, messages, rig.limits, set(rig.foreign()))
            rig.check()

        attack()


def _crdtsync_handshake(
    rig: FuzzRig, ws: sync_client.ClientConnection, send: Callable[[bytes], None], pid: int
) -> p.Session:
    session = p.Session.client(
        pid, docs=[(rig.room, b"", Version())], writers=[pid], options=NO_PINGS
    )
    doc = Doc(peer_id=pid)
    deadline = time.monotonic() + WAIT
    while True:
        for frame in session.data_to_send():
            send(frame)
        if session.is_synced(rig.room):
            return session
        assert time.monotonic() < deadline, "no crdtsync handshake with the relay"
        session.receive_data(ws.recv(timeout=WAIT))
        for ev in session.events_received():
            if isinstance(ev, p.CatchUpNeeded):
                session.send_catch_up(ev.name, doc.export_yjs_update(since=ev.since))
            elif isinstance(ev, p.UpdateReceived) and ev.name == rig.room:
                doc.import_yjs_update(ev.update)
                session.ack(ev.name, ev.seq)


def _crdtsync_attack(
    rig: FuzzRig,
    data: st.DataObject,
    ws: sync_client.ClientConnection,
    send: Callable[..., None],
    index: Callable[[], int],
) -> None:
    if data.draw(st.integers(0, 3)) == 0:
        send(data.draw(st.binary(min_size=1, max_size=200)))
        return
    pid = data.draw(st.integers(1, 2**40))
    # The whole plan is drawn before anything is sent: how far the relay lets the
    # connection get must not change what hypothesis draws.
    plan = []
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["update", "awareness", "sync"]))
        update = _valid_update(data, rig.mirror)
        presence = data.draw(PRESENCE)
        name = data.draw(st.sampled_from(["other", "../x", rig.room]))
        how = data.draw(st.sampled_from(["raw", "body", "payload", "none", "joined"]))
        target, mutations = data.draw(st.integers(0, 7)), data.draw(MUTATIONS)
        if how == "payload":  # a well-formed frame carrying a mutated update
            update = mutate(update, mutations)
        plan.append((kind, update, presence, name, how, target, mutations))
    session = _crdtsync_handshake(rig, ws, send, pid)
    for kind, update, presence, name, how, target, mutations in plan:
        if kind == "update":
            session.send_update(rig.room, update)
        elif kind == "awareness":
            session.send_awareness(rig.room, Awareness(pid).set_local_state(presence, now=0.0))
        elif session.doc_state(name) in (p.DocState.NONE, p.DocState.CLOSED):
            session.open_doc(name, b"", Version())
        frames = session.data_to_send()
        if how == "joined":  # frames need not align with WebSocket messages
            send(b"".join(frames), len(frames))
            continue
        for i, frame in enumerate(frames):
            out = frame
            if how == "raw" and i == target % len(frames):
                out = mutate(frame, mutations)
            elif how == "body" and i == target % len(frames):
                # A well-formed frame around a mutated body: reaches the decoder.
                _, body = split_frame(frame)
                writer = m.FrameWriter()
                writer.index = index()
                out = writer.frame_body(mutate(body, mutations))
            send(out)


@RELAY_THREAD_RANDOM
def test_fuzz_crdtsync_input(tmp_path: Path) -> None:
    with FuzzRig(tmp_path, "cfuzz") as rig:
        model_docs = {rig.room: rig.mirror}
        options = SessionOptions(
            max_frame=rig.config.max_frame,
            limits=rig.limits,
            handshake_timeout=rig.config.handshake_timeout,
            max_docs=rig.config.max_docs_per_conn,
        )

        @FUZZ
        @given(data=st.data())
        def attack(data: st.DataObject) -> None:
            model = ServerModel(model_docs, options, model_registry(rig.foreign()))
            with rig.connect("/") as ws:
                index = 0  # frames sent so far: the check value of the next one uses it

                def send(chunk: bytes, frames: int = 1) -> None:
                    nonlocal index
                    index += frames
                    model.feed(chunk)
                    ws.send(chunk)

                with contextlib.suppress(ConnectionClosed):  # closed: nothing after counts
                    _crdtsync_attack(rig, data, ws, send, lambda: index)
            rig.check()

        attack()


# -- 8. slow consumers -----------------------------------------------------------------------------

SLOW_LIMIT = 256 << 10
CHUNK = 32 << 10


def _chunk() -> str:
    # Incompressible: crdtsync sessions zstd-compress updates, "xxxx..." would vanish.
    return base64.b64encode(os.urandom(CHUNK * 3 // 4)).decode()


async def _flood_until_dropped(
    relay: Relay, writer: YClient, healthy_has: Callable[[], int]
) -> tuple[int, float]:
    """Send 32 kB edits until the relay drops a slow consumer; (edits, largest queue seen).

    The healthy reader runs on this same event loop, so the writer waits for it to
    be at most a few edits behind: otherwise the loop's turn order alone would
    make it a slow consumer too.
    """
    largest = 0.0
    for n in range(1, 2000):  # at most ~64 MB
        chunk = _chunk()
        await writer.edit(lambda d, c=chunk: d.text("body").insert(0, c))
        await eventually(lambda n=n: healthy_has() >= (n - 4) * CHUNK, what="healthy keeps up")
        metrics = parse_metrics(relay.metrics.render())
        largest = max(largest, metrics.get("crdtsync_relay_send_queue_bytes", stat="max"))
        if metrics.get("crdtsync_relay_errors_total", kind="slow_consumer"):
            return n, largest
    raise AssertionError("the slow consumer was never dropped")


@pytest.mark.anyio
async def test_a_room_larger_than_the_send_queue_limit_still_syncs(tmp_path: Path) -> None:
    """A catch-up bigger than ``max_send_queue`` is not a slow consumer: it is one answer.

    Otherwise a room that grew past the limit could never be joined again: every
    new connection would be dropped before its first byte was written.
    """
    async with running_relay(tmp_path, max_send_queue=SLOW_LIMIT) as relay:
        doc = await relay.peer.open("big")
        for _ in range((6 << 20) // CHUNK):  # 6 MB, incompressible: beyond socket buffers
            doc.text("body").insert(0, _chunk())
        expected = str(doc.text("body"))
        yc = await YClient.open(relay.url, "big")
        await yc.sync(timeout=30)
        assert yc.text() == expected
        await yc.aclose()
        async with ws_peer() as peer:
            events = collect(peer)
            pdoc = await peer.open("big")
            await peer.connect(relay.url)
            assert await peer.wait_synced("big", 30), [e.reason for e in events]
            assert str(pdoc.text("body")) == expected
        assert await errors(relay, "slow_consumer") == 0


@pytest.mark.anyio
async def test_slow_y_consumer_is_dropped_and_resyncs(tmp_path: Path) -> None:
    async with running_relay(
        tmp_path, max_send_queue=SLOW_LIMIT, max_msgs_per_sec=1e6, max_msgs_burst=10**6
    ) as relay:
        healthy = await YClient.open(relay.url, "notes")
        await healthy.sync()
        healthy.follow()  # reads as fast as the relay sends
        stalled = await stalled_y_client(relay, "notes")
        try:
            await eventually(lambda: relay.connections == 2)
            writer = await YClient.open(relay.url, "notes")
            await writer.sync()
            edits, largest = await _flood_until_dropped(relay, writer, lambda: len(healthy.text()))
            # Bounded: never more than the limit plus the message that crossed it.
            assert largest <= SLOW_LIMIT + CHUNK + 1024, largest
            await eventually(lambda: relay.connections == 2, what="the stalled client dropped")
            # Flooding on afterwards costs nothing: nobody is stalled any more.
            for _ in range(20):
                chunk = _chunk()
                await writer.edit(lambda d, c=chunk: d.text("body").insert(0, c))
            total = (edits + 20) * CHUNK
            await eventually(lambda: len(healthy.text()) == total, 30, "healthy has it all")
            metrics = await scrape(relay)
            assert metrics.get("crdtsync_relay_send_queue_bytes", stat="max") < SLOW_LIMIT
        finally:
            stalled.close()
        # The dropped client comes back and gets the whole document.
        back = await YClient.open(relay.url, "notes")
        await back.sync(timeout=30)
        assert back.text() == writer.text() == healthy.text()
        for c in (back, writer, healthy):
            await c.aclose()
        await healthy.unfollow()


@pytest.mark.anyio
async def test_slow_crdtsync_consumer_is_dropped_and_resyncs(tmp_path: Path) -> None:
    async with running_relay(
        tmp_path, max_send_queue=SLOW_LIMIT, max_msgs_per_sec=1e6, max_msgs_burst=10**6
    ) as relay:
        transport = PausableTransport()
        async with Peer(transport=transport, backoff=QUICK) as slow, ws_peer() as healthy:
            events = collect(slow)
            sdoc = await slow.open("notes")
            await slow.connect(relay.url)
            hdoc = await healthy.open("notes")
            await healthy.connect(relay.url)
            assert await slow.wait_synced("notes", 10)
            assert await healthy.wait_synced("notes", 10)
            transport.pause()
            writer = await YClient.open(relay.url, "notes")
            await writer.sync()
            edits, largest = await _flood_until_dropped(
                relay, writer, lambda: len(str(hdoc.text("body")))
            )
            assert largest <= SLOW_LIMIT + 2 * CHUNK + 4096, largest
            await eventually(
                lambda: relay.connections == 2, what="the stalled peer's connection dropped"
            )
            await eventually(lambda: len(str(hdoc.text("body"))) == edits * CHUNK, 30)
            # Reading again, the slow peer finds its connection gone, reconnects on its
            # own and catches up on everything it missed.
            transport.resume()
            await eventually(lambda: str(sdoc.text("body")) == writer.text(), 30)
            assert await slow.wait_synced("notes", 10)
            assert [e for e in events if e.kind == "connected"][1:], "it reconnected"
        await writer.aclose()


# -- 9. operations ---------------------------------------------------------------------------------

DOCUMENTED_SERIES = {
    "crdtsync_relay_connections": "gauge",
    "crdtsync_relay_connections_total": "counter",
    "crdtsync_relay_rooms": "gauge",
    "crdtsync_relay_messages_received_total": "counter",
    "crdtsync_relay_bytes_received_total": "counter",
    "crdtsync_relay_messages_sent_total": "counter",
    "crdtsync_relay_bytes_sent_total": "counter",
    "crdtsync_relay_updates_total": "counter",
    "crdtsync_relay_errors_total": "counter",
    "crdtsync_relay_rooms_unloaded_total": "counter",
    "crdtsync_relay_send_queue_bytes": "gauge",
    "crdtsync_relay_propagation_seconds": "histogram",
}


@pytest.mark.anyio
async def test_health_readiness_and_metrics_that_move(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        assert await http_get(relay, "/healthz") == (200, "ok\n")
        assert (await http_get(relay, "/readyz"))[0] == 200
        assert (await http_get(relay, "/nope"))[0] == 404
        before = await scrape(relay)
        for name, kind in DOCUMENTED_SERIES.items():
            assert before.types.get(name) == kind, name
        assert before.get("crdtsync_relay_rooms") == 0

        async with ws_peer() as peer:
            doc = await peer.open("notes")
            await peer.connect(relay.url)
            yc = await YClient.open(relay.url, "notes")
            await yc.sync()
            during = await scrape(relay)
            assert during.get("crdtsync_relay_connections", protocol="crdtsync") == 1
            assert during.get("crdtsync_relay_connections", protocol="y") == 1
            assert during.get("crdtsync_relay_rooms") == 1
            for i in range(5):
                doc.text("body").insert(0, f"p{i}")
                await yc.edit(lambda d, i=i: d.text("body").insert(0, f"y{i}"))
            await eventually(lambda: len(str(doc.text("body"))) == 20)
            await yc.pump_until(lambda: len(yc.text()) == 20)
            after = await scrape(relay)
            await yc.aclose()
        for proto in ("crdtsync", "y"):
            for series in (
                "crdtsync_relay_messages_received_total",
                "crdtsync_relay_bytes_received_total",
                "crdtsync_relay_messages_sent_total",
                "crdtsync_relay_bytes_sent_total",
                "crdtsync_relay_connections_total",
            ):
                assert after.get(series, protocol=proto) > before.get(series, protocol=proto), (
                    series,
                    proto,
                )
            assert after.get("crdtsync_relay_updates_total", protocol=proto) >= 5, proto
        count = after.get("crdtsync_relay_propagation_seconds_count")
        assert count >= 10
        assert after.get("crdtsync_relay_propagation_seconds_bucket", le="+Inf") == count
        assert after.get("crdtsync_relay_propagation_seconds_sum") > 0
        assert after.get("crdtsync_relay_send_queue_bytes", stat="max") >= 0
        await eventually(lambda: relay.connections == 0)
        gone = await scrape(relay)
        assert gone.get("crdtsync_relay_connections", protocol="y") == 0
        assert gone.get("crdtsync_relay_connections", protocol="crdtsync") == 0


@pytest.mark.anyio
async def test_graceful_shutdown_and_restart_from_the_store(tmp_path: Path) -> None:
    relay = Relay(RelayConfig(port=0, data=str(tmp_path / "r.db")))
    await relay.start()
    port = relay.port
    async with ws_peer() as a, ws_peer() as b:
        da, db = await a.open("notes"), await b.open("notes")
        da.text("body").insert(0, "before")
        await a.connect(relay.url)
        await b.connect(relay.url)
        await eventually(lambda: str(db.text("body")) == "before")
        yc = await YClient.open(relay.url, "notes")
        await yc.sync()
        raw = await RawSync.open(relay.url, docs=[("notes", Doc())])
        await raw.until(lambda: raw.session.is_synced("notes"))

        closing = asyncio.get_running_loop().create_task(relay.close())
        code, _, _ = await yc.closed()
        assert code == 1001
        assert await raw.closed() == 1001
        closes = [msg for msg in raw.messages if isinstance(msg, m.Close)]
        assert [c.code for c in closes] == [ErrorCode.GOING_AWAY]
        # Not ready any more: /readyz is 503 or (listener closed) unreachable.
        with contextlib.suppress(OSError):
            assert (await http_get(relay, "/readyz"))[0] == 503
        await closing

        # While it is down, both peers edit.
        da.text("body").insert(0, "A ")
        db.text("body").insert(len(str(db.text("body"))), " B")
        relay = Relay(RelayConfig(port=port, data=str(tmp_path / "r.db")))
        await relay.start()
        try:
            # Served from the store before any client is back...
            assert str((await relay.peer.open("notes")).text("body")) == "before"
            # ...and both peers reconnect on their own and exchange their offline edits.
            await eventually(lambda: str(da.text("body")) == "A before B", what="a has b's edit")
            await eventually(lambda: str(db.text("body")) == "A before B", what="b has a's edit")
            assert await a.wait_synced("notes", 10)
            again = await YClient.open(relay.url, "notes")
            await again.sync()
            assert again.text() == "A before B"
            await again.aclose()
        finally:
            await relay.close()


@pytest.mark.anyio
async def test_idle_rooms_are_unloaded_and_served_again_from_the_store(tmp_path: Path) -> None:
    async with running_relay(tmp_path, idle_unload=0.2) as relay, ws_peer() as peer:
        # Weakly: an unloaded room's document must be freed (the engine's
        # callbacks once kept every document alive: test_doc_lifetime.py).
        opened: list[tuple[str, weakref.ref[Doc]]] = []
        relay.peer.on_open(lambda name, doc: opened.append((name, weakref.ref(doc))))
        busy = await peer.open("busy")
        busy.text("body").insert(0, "in use")
        await peer.connect(relay.url)
        assert await peer.wait_synced("busy", 10)
        yc = await YClient.open(relay.url, "idle")
        await yc.sync()
        await yc.edit(lambda d: d.text("body").insert(0, "stored"))
        await yc.sync()
        assert sorted(relay.peer.docs()) == ["busy", "idle"]
        await yc.aclose()
        await eventually(lambda: "idle" not in relay.peer.docs(), what="idle room unloaded")
        # The room a peer still uses stayed.
        assert relay.peer.docs() == ["busy"]
        idle_docs = [ref for name, ref in opened if name == "idle"]
        assert idle_docs

        def freed() -> bool:
            gc.collect()
            return all(ref() is None for ref in idle_docs)

        await eventually(freed, what="the unloaded room's document freed")
        metrics = await scrape(relay)
        assert metrics.get("crdtsync_relay_rooms_unloaded_total") == 1
        assert metrics.get("crdtsync_relay_rooms") == 1
        back = await YClient.open(relay.url, "idle")
        await back.sync()
        assert back.text() == "stored"
        await back.aclose()
        # The busy room still works after all that.
        busy.text("body").insert(0, "still ")
        assert await peer.wait_synced("busy", 10)
        assert (await room_state(relay, "busy")) == {"body": "still in use"}


# -- 10. TLS ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_tls_relay_serves_wss_and_https(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with running_relay(tmp_path, tls_cert=str(cert), tls_key=str(key)) as relay:
        assert relay.url.startswith("wss://127.0.0.1:")
        async with ws_peer(ssl=client_ctx) as a, ws_peer(ssl=client_ctx) as b:
            da, db = await a.open("notes"), await b.open("notes")
            da.text("body").insert(0, "over tls")
            await a.connect(relay.url)
            await b.connect(relay.url)
            await eventually(lambda: str(db.text("body")) == "over tls")
            yc = await YClient.open(relay.url, "notes", ssl=client_ctx)
            await yc.sync()
            assert yc.text() == "over tls"
            await yc.aclose()
        assert await http_get(relay, "/healthz", client_ctx) == (200, "ok\n")
        # A client that does not trust the certificate gets nothing.
        async with ws_peer() as stranger:
            events = collect(stranger)
            await stranger.open("notes")
            with pytest.raises(TimeoutError):
                await stranger.connect(relay.url, timeout=1)
            assert any("TLS" in e.reason or "certificate" in e.reason for e in events), events
