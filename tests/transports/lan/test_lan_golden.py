"""Golden bytes of a whole LAN link exchange (fixed keys): the wire format, pinned.

Regenerate after a deliberate format change (and bump the link version):
``python tests/lan/test_lan_golden.py --write``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from crdtsync.transports.lan import DeviceIdentity, GroupKey
from crdtsync.transports.lan.channel import LinkCore

GOLDEN = Path(__file__).parent / "golden" / "link_v1.json"


def transcript() -> dict[str, str]:
    group = GroupKey(bytes(range(32)))
    a = LinkCore(
        initiator=True,
        identity=DeviceIdentity(bytes([1]) * 32),
        group=group,
        ephemeral=bytes([2]) * 32,
    )
    b = LinkCore(
        initiator=False,
        identity=DeviceIdentity(bytes([3]) * 32),
        group=group,
        ephemeral=bytes([4]) * 32,
    )
    out: dict[str, str] = {}
    out["1 initiator: preamble, message 1"] = (m1 := a.data_to_send()).hex()
    b.receive_data(m1)
    out["2 responder: message 2"] = (m2 := b.data_to_send()).hex()
    a.receive_data(m2)
    out["3 initiator: message 3"] = (m3 := a.data_to_send()).hex()
    b.receive_data(m3)
    out["4 responder: READY"] = (ready := b.data_to_send()).hex()
    a.receive_data(ready)
    a.send(b"hello")
    out["5 initiator: DATA hello"] = (data := a.data_to_send()).hex()
    b.receive_data(data)
    b.close("bye")
    out["6 responder: CLOSE bye"] = b.data_to_send().hex()
    out["handshake hash"] = (a.handshake_hash or b"").hex()
    assert a.handshake_hash == b.handshake_hash
    return out


def test_link_bytes_are_pinned() -> None:
    assert transcript() == json.loads(GOLDEN.read_text())["transcript"]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(
        json.dumps(
            {
                "about": "crdtsync LAN link v1: identities 01..01 and 03..03, ephemerals "
                "02..02 and 04..04, group key 00 01 .. 1f (tests/lan/test_lan_golden.py)",
                "transcript": transcript(),
            },
            indent=1,
        )
        + "\n"
    )
