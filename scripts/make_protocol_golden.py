"""Write the missing tests/golden/protocol/*.bin from tests/protocol/test_golden_frames.py.

Existing vectors are never rewritten: they are what deployed peers speak. A new
message, field or code gets a new vector (a new name in ``EXPECTED``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "protocol"))

import test_golden_frames as test_sync_golden

if __name__ == "__main__":
    test_sync_golden.write_vectors()
    print(f"{len(test_sync_golden.EXPECTED)} vectors in {test_sync_golden.GOLDEN}")
