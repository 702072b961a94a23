"""Discovery sources in one process: zeroconf bound to 127.0.0.1 only, and static addresses.

zeroconf here is always given ``interfaces=["127.0.0.1"]``: its multicast goes
out of the loopback interface only, never the machine's real one. (Between
namespaces: ``test_lan_lab.py``.)
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from crdtsync.errors import TransportError
from crdtsync.testing import check_discovery
from crdtsync.transports.lan import DeviceIdentity, GroupKey
from crdtsync.transports.lan.discovery import (
    MAX_TXT,
    SERVICE_TYPE,
    Discovery,
    Hint,
    StaticDiscovery,
    ZeroconfDiscovery,
)

pytestmark = pytest.mark.anyio
LOOPBACK = ["127.0.0.1"]


def _zc(ident: DeviceIdentity, group: GroupKey, port: int, **kw: object) -> ZeroconfDiscovery:
    return ZeroconfDiscovery(ident, group, port, interfaces=LOOPBACK, request_timeout=2.0, **kw)  # type: ignore[arg-type]


async def test_static_discovery_passes_the_suite() -> None:
    fp = DeviceIdentity.generate().fingerprint
    addresses = ["lan://127.0.0.1:4000", f"lan://{fp}@127.0.0.1:4001"]
    hints = await check_discovery(lambda: StaticDiscovery(addresses), expect=addresses)
    assert {h.fingerprint for h in hints} == {None, fp}
    with pytest.raises(TransportError):
        StaticDiscovery(["http://x"])


async def test_announcement_is_small_and_names_no_host(group: GroupKey) -> None:
    me = DeviceIdentity.generate()
    info = _zc(me, group, 4242).service_info()
    assert info.name == f"{me.fingerprint}.{SERVICE_TYPE}"
    assert info.server == f"{me.fingerprint}.local."
    assert len(info.text) < MAX_TXT
    assert info.properties == {
        b"v": b"1",
        b"fp": me.fingerprint.encode(),
        b"g": group.current_tag().encode(),
    }
    assert isinstance(_zc(me, group, 4242), Discovery)


async def test_members_find_each_other_and_others_are_ignored(group: GroupKey) -> None:
    a, b = DeviceIdentity.generate(), DeviceIdentity.generate()
    stranger = DeviceIdentity.generate()
    # b and a stranger (another group) announce; a browses.
    b_disc = _zc(b, group, 4100)
    s_disc = _zc(stranger, GroupKey.generate(), 4200)
    await b_disc.start()
    await s_disc.start()
    try:
        hints = await check_discovery(
            lambda: _zc(a, group, 4300),
            expect=[f"lan://{b.fingerprint}@127.0.0.1:4100"],
            own=a.fingerprint,
        )
    finally:
        await s_disc.close()
    assert all(h.fingerprint != stranger.fingerprint for h in hints), "another group was hinted"

    # A goodbye (b closes) becomes a `gone` hint for a browser that saw b.
    watcher = _zc(DeviceIdentity.generate(), group, 4400)
    await watcher.start()
    got: list[Hint] = []
    seen, gone = asyncio.Event(), asyncio.Event()

    async def follow() -> None:
        async for hint in watcher.hints():
            got.append(hint)
            if hint.fingerprint == b.fingerprint:
                (gone if hint.gone else seen).set()

    task = asyncio.ensure_future(follow())
    try:
        await asyncio.wait_for(seen.wait(), 10)
        await b_disc.close()
        await asyncio.wait_for(gone.wait(), 10)
    finally:
        await watcher.close()
        await asyncio.wait_for(task, 10)


async def test_yesterdays_tag_is_recognised_and_last_weeks_is_not(group: GroupKey) -> None:
    now = dt.datetime.now(dt.UTC)
    old, older = DeviceIdentity.generate(), DeviceIdentity.generate()
    skewed = _zc(old, group, 4501, clock=lambda: now - dt.timedelta(days=1))
    stale = _zc(older, group, 4502, clock=lambda: now - dt.timedelta(days=7))
    await skewed.start()
    await stale.start()
    try:
        hints = await check_discovery(
            lambda: _zc(DeviceIdentity.generate(), group, 4503),
            expect=[f"lan://{old.fingerprint}@127.0.0.1:4501"],
        )
    finally:
        await skewed.close()
        await stale.close()
    assert older.fingerprint not in {h.fingerprint for h in hints}
