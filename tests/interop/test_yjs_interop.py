"""Raw Yjs v1 updates exchanged with a real Yjs replica (node, the npm `yjs` package)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.nodeenv import ensure_node_modules

from crdtsync import Doc

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def yjs() -> Path:
    return ensure_node_modules() / "yjs_peer.mjs"


def run_yjs(script: Path, updates: list[bytes], edit: bool) -> dict[str, Any]:
    payload = json.dumps({"updates": [base64.b64encode(u).decode() for u in updates], "edit": edit})
    proc = subprocess.run(
        ["node", str(script)], input=payload, capture_output=True, text=True, timeout=60, check=True
    )
    out: dict[str, Any] = json.loads(proc.stdout)
    out["update"] = base64.b64decode(out["update"])
    return out


def test_python_and_yjs_edit_one_document(yjs: Path) -> None:
    py = Doc()
    py.text("body").insert(0, "héllo 😀 wörld")
    py.list("todos").append({"title": "milk", "qty": 2})
    py.map("settings")["size"] = 7
    py.map("settings")["name"] = "crdtsync"

    seen = run_yjs(yjs, [py.export_yjs_update()], edit=False)
    assert seen["body"] == "héllo 😀 wörld"
    assert seen["todos"] == [{"title": "milk", "qty": 2}]
    assert seen["settings"] == {"size": 7, "name": "crdtsync"}

    # Concurrent edits on both sides, then exchange raw v1 updates both ways.
    before_js = py.version
    js = run_yjs(yjs, [py.export_yjs_update()], edit=True)
    py.text("body").insert(5, "!")
    py.import_yjs_update(js["update"])
    assert str(py.text("body")) == "from yjs ✓ héllo! 😀 wörld 🎉"
    assert py.list("todos").to_py() == [{"qty": 2, "title": "milk"}, "added in js"]
    settings = py.map("settings").to_py()
    assert settings["js"] == 42
    assert type(settings["js"]) is int
    assert settings["ratio"] == 0.25
    assert py.version > before_js

    back = run_yjs(yjs, [py.export_yjs_update()], edit=False)
    assert back["body"] == str(py.text("body"))
    assert back["todos"] == [{"title": "milk", "qty": 2}, "added in js"]

    # An incremental update computed against the JS replica's state applies too.
    other = Doc()
    other.import_yjs_update(js["update"])
    other.import_yjs_update(py.export_yjs_update(since=other.version))
    assert other.to_py() == py.to_py()


def test_counters_and_registers_are_plain_maps_to_yjs(yjs: Path) -> None:
    py = Doc(peer_id=77)
    py.counter("likes").increment(3)
    py.register("status").set("draft")
    py.map("m")["big"] = 2**70
    seen = run_yjs(yjs, [py.export_yjs_update()], edit=False)
    assert seen["body"] == ""
    raw = run_yjs(yjs, [py.export_yjs_update()], edit=True)["update"]
    again = Doc()
    again.import_yjs_update(raw)
    assert again.counter("likes").value == 3
    assert again.register("status").value == "draft"
    assert again.map("m")["big"] == 2**70
