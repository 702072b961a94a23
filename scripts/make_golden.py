"""Write the golden vectors in tests/golden/ (bytes written by this format version).

Run only when adding vectors: existing files must keep loading forever
(tests/format/test_golden.py), so this writes only the vectors whose files do
not exist yet; never regenerate old ones.

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

    # Values that Yjs's Any cannot hold exactly, tagged with the reserved "\x00"
    # keys (0.2), next to user dicts shaped like the 0.1 "$" tags.
    c = Doc(peer_id=3, clock=clock)
    c.register("status").set(
        {
            "big": 2**70,
            "neg": -(2**64),
            "one": 1.0,
            "inf": float("inf"),
            "negzero": -0.0,
            "looks_tagged": {"$": "i", "v": "5"},
            "looks_float": {"$": "f", "v": "1.5"},
            "legacy_shape": {"$": "i", "v": str(2**70)},
            "nul_key": {"\x00i": "x"},
        }
    )
    c.map("m").update({"big": 2**70, "one": 1.0, "list": [2**64, -0.0]})
    c.counter("likes").increment(2**60)
    docs["v1-value-tags"] = c

    # Large enough (a column block over 8 KiB) to be saved in compact layout 2,
    # each column compressed on its own (envelope format version 2).
    d = Doc(peer_id=4, clock=clock)
    body = d.text("body")
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "crdtsync",
        "saves",
        "columns",
    ]
    for i in range(1500):
        word = words[(i * 7) % len(words)]
        body.insert(len(body), word + (" " if i % 11 else ".\n"))
        if i % 13 == 0:
            body.delete(len(body) - 2, 1)
    tree = d.tree("outline")
    nodes = [tree.create(None) for _ in range(40)]
    for i, n in enumerate(nodes[1:], 1):
        tree.move(n, nodes[(i * 5) % i])
    d.map("meta").update({f"k{i}": i * i for i in range(300)})
    docs["v2-per-column"] = d
    return docs


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, doc in build().items():
        if (OUT / f"{name}.expected.cbor").exists():
            continue
        (OUT / f"{name}.save.bin").write_bytes(doc.save())
        (OUT / f"{name}.update.bin").write_bytes(doc.export_update())
        (OUT / f"{name}.yjs.bin").write_bytes(doc.export_yjs_update())
        expected = {"to_py": doc.to_py(), "conflicts": doc.register("status").conflicts}
        (OUT / f"{name}.expected.cbor").write_bytes(cbor2.dumps(expected))
        print(name, len(doc.save()), len(doc.export_update()), len(doc.export_yjs_update()))


if __name__ == "__main__":
    main()
