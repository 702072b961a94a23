"""Write the golden vectors in tests/golden/ (bytes written by this format version).

Run only when adding vectors for a new format version: existing files must keep
loading forever (tests/format/test_golden.py), so never regenerate old ones.

Usage: python scripts/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import cbor2

from crdtsync import Counter, Doc, Register, Text

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden"


def clock() -> float:
    return 1_700_000_000.0


def build() -> dict[str, Doc]:
    docs: dict[str, Doc] = {}

    a = Doc(peer_id=1, clock=clock)
    a.map("settings").update(
        {
            "size": 2**70,
            "neg": -1,
            "zero": 0,
            "half": 0.5,
            "one": 1.0,
            "inf": float("-inf"),
            "blob": b"\x00\x01",
            "none": None,
            "yes": True,
            "str": "héllo 😀",
            "dollar": {"$": 1},
        }
    )
    a.list("todos").append({"title": "milk", "done": False, "qty": 2})
    a.list("todos")[0]["done"] = True
    a.text("body").insert(0, "héllo 😀 wörld")
    a.text("body").delete(0, 1)
    a.counter("likes").increment(5)
    a.counter("likes").decrement(2)
    a.register("status").set("draft")
    a.map("nested")["all"] = [Counter(3), Text("t"), Register([1, {"k": b"v"}])]
    docs["v1-all-types"] = Doc.load(a.save(), peer_id=1, clock=clock)

    b = Doc(peer_id=2, clock=clock)
    b.import_update(a.export_update())
    b.register("status").set("review")
    a.register("status").set("final")
    b.counter("likes").increment(10)
    a.import_update(b.export_update(since=a.version))
    docs["v1-concurrent"] = a
    return docs


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, doc in build().items():
        (OUT / f"{name}.save.bin").write_bytes(doc.save())
        (OUT / f"{name}.update.bin").write_bytes(doc.export_update())
        (OUT / f"{name}.yjs.bin").write_bytes(doc.export_yjs_update())
        expected = {"to_py": doc.to_py(), "conflicts": doc.register("status").conflicts}
        (OUT / f"{name}.expected.cbor").write_bytes(cbor2.dumps(expected))
        print(name, len(doc.save()), len(doc.export_update()), len(doc.export_yjs_update()))


if __name__ == "__main__":
    main()
