"""Crafted updates of issue 18 shared by the model's and the relay's byzantine tests."""

from __future__ import annotations

from typing import Any

import pycrdt

#: Client 9 inserts "X" into text "t" with origin = c (1:2) and right origin = b (1:1).
TWELVE = bytes.fromhex("01 01 09 00 c4 01 02 01 01 01 58 00")


def abc_and_v() -> tuple[bytes, bytes]:
    """Peer 1 types "abc" as one item; honest peer 2 inserts "V" between b and c."""
    a: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
    a.get("t", type=pycrdt.Text).insert(0, "abc")
    base = a.get_update()
    b: pycrdt.Doc[Any] = pycrdt.Doc(client_id=2)
    b.apply_update(base)
    b.get("t", type=pycrdt.Text).insert(2, "V")
    return base, b.get_update(a.get_state())
