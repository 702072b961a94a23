"""Per-connection resource limits of the relay, attacked over real sockets.

Regressions for the review of 2026-12-05: each test is a client that tried to
make the relay hold more than its limits allow for one connection (bugs B, B2,
C, E, F, I, J, K, L), against an in-process relay on 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from relay_helpers import RawSync, running_relay
from waiting import eventually
from websockets.exceptions import ConnectionClosed

from crdtsync import Doc, ErrorCode
from crdtsync.relay import mint_token
from crdtsync.sync import messages as m
from crdtsync.version import Version

SECRET = b"limits-test-secret-0123456789abcdef"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _close_code(raw: RawSync) -> int | None:
    return next((msg.code for msg in raw.messages if isinstance(msg, m.Close)), None)


@pytest.mark.anyio
async def test_unfinished_updates_on_many_documents_share_one_budget(tmp_path: Path) -> None:
    """Bug I: PARTs just under max_update on each of many rooms, never finished."""
    max_update = 1 << 20
    names = [f"d{i}" for i in range(8)]
    async with running_relay(
        tmp_path, max_update=max_update, max_docs_per_conn=len(names), max_frame=256 << 10
    ) as relay:
        raw = await RawSync.open(relay.url, docs=[(n, Doc()) for n in names])
        await raw.until(lambda: all(raw.session.is_synced(n) for n in names))
        s = raw.session
        chunk = os.urandom(200 << 10)
        for n in names:
            ch = s._docs[n]
            for _ in range(4):  # 800 KiB on each: under max_update per document
                s._send(m.Part(ch.local_chan, ch.send_seq + 1, chunk))
            try:
                await raw.flush()
            except ConnectionClosed:
                break
        await raw.closed()
        assert _close_code(raw) == ErrorCode.FRAME_TOO_LARGE
        held = [
            sum(len(c.parts or b"") for c in lk.session._docs.values()) for lk in relay.peer._links
        ]
        assert sum(held) == 0


@pytest.mark.anyio
async def test_refused_rooms_are_not_remembered_without_bound(tmp_path: Path) -> None:
    """Bug J: asking again and again for rooms the token does not allow."""
    async with running_relay(
        tmp_path,
        secret=SECRET,
        max_docs_per_conn=4,
        max_msgs_per_sec=1e6,
        max_msgs_burst=10**6,
    ) as relay:
        raw = await RawSync.open(relay.url, token=mint_token(SECRET, "notes", write=True, ttl=600))
        await raw.until(lambda: raw.session.state.name == "OPEN")
        sizes: list[int] = []
        for i in range(3_000):
            raw.session.open_doc(f"not-allowed-{i:06d}-" + "x" * 900, b"", Version())
            if i % 100 == 99:
                await raw.flush()
                sizes.extend(len(lk.session._docs) for lk in relay.peer._links)
        await raw.flush()
        await raw.closed()
        assert _close_code(raw) == ErrorCode.LIMIT_EXCEEDED
        assert max(sizes, default=0) <= 1024
        await eventually(lambda: not relay.peer._links, what="the relay dropped the session")
