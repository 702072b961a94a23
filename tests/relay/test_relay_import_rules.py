"""The import path's rules and budgets, held at the relay (issue 18: the critical item, item 10).

``tests/model/test_byzantine.py`` and ``tests/model/test_import_budgets.py``
check them on a ``Doc``; here a y-protocols writer sends the same bytes to a
real relay over 127.0.0.1, and the tests check that nothing refused is stored
or forwarded to the room's other clients.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from helpers.byzantine import TWELVE, abc_and_v
from helpers.relay import YClient, running_relay
from helpers.waiting import eventually
from websockets.exceptions import ConnectionClosed

from crdtsync import Doc
from crdtsync.format import yupdate as yu
from crdtsync.protocol import yprotocol as y
from crdtsync.relay import Relay

pytestmark = pytest.mark.anyio


def _log(relay: Relay, room: str) -> list[bytes]:
    found = relay.peer._store.load(room)  # the store itself: nothing else tells what is on disk
    assert found is not None
    return [u for _, u in found.updates]


def _deletes_for_strangers(n_ranges: int, first_client: int) -> bytes:
    """An update of deleted ranges only, naming clocks of clients nobody has seen."""
    per = 1000
    ds = {
        first_client + c: [(2 * k, 1) for k in range(min(per, n_ranges - c * per))]
        for c in range((n_ranges + per - 1) // per)
    }
    return yu.encode_update(yu.ParsedUpdate({}, ds))


@pytest.mark.parametrize("v_first", [False, True], ids=["base-X", "base-V-X"])
async def test_the_twelve_byte_update_is_refused_at_the_relay(
    tmp_path: Path, v_first: bool
) -> None:
    """The critical item: an item whose right origin lies left of its origin.

    Before the import path's rule S8 the relay stored it and sent it on, and
    replicas that got it before or after V diverged for good.
    """
    base, v = abc_and_v()
    async with running_relay(tmp_path) as relay:
        room = await relay.peer.open("notes")
        relay.peer.import_update("notes", base)
        if v_first:
            relay.peer.import_update("notes", v)
        await relay.peer.flush()
        log_before = _log(relay, "notes")
        watcher = await YClient.open(relay.url, "notes")
        await watcher.sync()
        attacker = await YClient.open(relay.url, "notes", client_id=9)
        await attacker.sync()
        with contextlib.suppress(ConnectionClosed):
            await attacker.ws.send(y.encode_update(TWELVE))
        code, reason, _ = await attacker.closed()
        assert code == 1007, reason  # an update that fails validation
        assert "does not lie after its origin" in reason
        assert room.pending == 0
        assert _log(relay, "notes") == log_before  # nothing stored
        if not v_first:
            relay.peer.import_update("notes", v)
        await watcher.pump_until(lambda: "V" in watcher.text("t"))
        assert str(room.text("t")) == watcher.text("t") == "abVc"
        assert 9 not in watcher.doc.version  # nothing of client 9 reached the room


async def test_pending_deletions_are_bounded_at_the_relay_and_not_kept(tmp_path: Path) -> None:
    """Item 10: delete sets naming never-seen clients, held for good, re-read by every import.

    A room holds at most ``max_pending_deletes`` (100,000) such ranges: beyond,
    the update is refused (1007) and not stored; what was held counts against its
    writer's held updates and leaves the store at the compaction after it left.
    """
    async with running_relay(tmp_path) as relay:
        room = await relay.peer.open("notes")
        room.text("body").insert(0, "hello")
        await relay.peer.flush()
        writer = await YClient.open(relay.url, "notes")
        await writer.sync()
        first = _deletes_for_strangers(60_000, 500)
        await writer.ws.send(y.encode_update(first))
        await eventually(lambda: room.pending == 1, what="the first delete set held")
        with contextlib.suppress(ConnectionClosed):
            await writer.ws.send(y.encode_update(_deletes_for_strangers(60_000, 900)))
        code, reason, _ = await writer.closed()
        assert code == 1007, reason
        assert "60000 are waiting already" in reason  # the close reason is cut short
        assert room.pending == 1
        await relay.peer.flush()
        assert first in _log(relay, "notes")
        assert len(_log(relay, "notes")) == 2  # the room's text and the first delete set
        # An honest edit after it is imported as usual; the writer left, so the
        # compaction keeps none of what it left waiting.
        editor = await YClient.open(relay.url, "notes")
        await editor.sync()
        await editor.edit(lambda d: d.text("body").insert(5, "!"))
        await eventually(lambda: str(room.text("body")) == "hello!", what="the edit imported")
        await editor.aclose()
        await eventually(lambda: relay.peer.users("notes") == 0, what="everyone left")
        await relay.peer.close_doc("notes", compact=True)
        found = relay.peer._store.load("notes")
        assert found is not None
        assert found.snapshot is not None
        assert [u for _, u in found.updates] == []
        reloaded = Doc.load(found.snapshot)
        assert reloaded.pending == 0
        assert str(reloaded.text("body")) == "hello!"
