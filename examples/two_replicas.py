"""Two replicas edit the same document offline, then merge without conflicts.

Run: python examples/two_replicas.py
"""

from __future__ import annotations

from crdtsync import Counter, Doc


def main() -> None:
    # Alice creates the shopping list and shares it with Bob.
    alice = Doc()
    items = alice.list("items")
    items.append({"title": "milk", "done": False, "qty": 2})
    alice.text("notes").insert(0, "Shop on Friday")
    alice.map("meta")["likes"] = Counter()
    bob = Doc()
    bob.import_update(alice.export_update())

    # Both go offline and edit concurrently.
    items.append({"title": "bread", "done": False, "qty": 1})
    alice.text("notes").insert(len(alice.text("notes")), " after work")
    alice.map("meta")["likes"].increment()
    alice.register("status").set("planning")

    bob.list("items")[0]["done"] = True
    bob.list("items").append({"title": "café ☕", "done": False, "qty": 2**70})
    bob.text("notes").insert(0, "Reminder: ")
    bob.map("meta")["likes"].increment(2)
    bob.register("status").set("shopping")

    # Back online: each sends only what the other lacks.
    bob_needs = alice.export_update(since=bob.version)
    alice_needs = bob.export_update(since=alice.version)
    bob.import_update(bob_needs)
    alice.import_update(alice_needs)

    assert alice.to_py() == bob.to_py(), "replicas diverged"
    merged = alice.to_py()
    print("merged document:")
    for name, value in merged.items():
        print(f"  {name}: {value!r}")
    print(f"bytes exchanged: {len(bob_needs)} + {len(alice_needs)}")
    print(f"concurrent status values: {alice.register('status').conflicts}")

    # Save the full history compactly and load it back.
    saved = alice.save()
    assert Doc.load(saved).to_py() == merged
    print(f"saved full history in {len(saved)} bytes; reloaded: OK")


if __name__ == "__main__":
    main()
