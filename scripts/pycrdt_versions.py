"""Which pycrdt versions pass the model and format suites (the crasher corpus included).

Usage: python scripts/pycrdt_versions.py 0.14.8 0.14.9 0.14.10 0.14.13

Creates a scratch virtualenv in a temporary folder, installs this checkout in it
(with the ``test`` extra, and loro for the tree's differential tests), then for
each version installs ``pycrdt==VERSION`` and runs ``pytest tests/model
tests/format``: the document model, the tree, the private-API checks
(``tests/model/test_engine_private.py``), the golden files and the hostile-input
corpus (``tests/model/test_import_safety.py``). It prints one line per version.
The pycrdt range in ``pyproject.toml`` holds only versions this passed on; run
it again before widening the range.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("versions", nargs="+", help="pycrdt versions to try, e.g. 0.14.13")
    args = parser.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="pycrdt-versions-") as tmp:
        venv.create(tmp, with_pip=True)
        py = str(Path(tmp) / "bin" / "python")
        pip = [py, "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-e", f"{ROOT}[test]", "loro>=1.5,<2"], check=True)
        for version in args.versions:
            install = subprocess.run(
                [*pip, "--no-deps", f"pycrdt=={version}"],
                check=False,
                capture_output=True,
                text=True,
            )
            if install.returncode:
                print(f"{version}: could not install ({install.stderr.strip()[-200:]})")
                failed += 1
                continue
            run = subprocess.run(
                [py, "-m", "pytest", "tests/model", "tests/format", "-q", "-p", "no:cacheprovider"],
                cwd=ROOT,
                check=False,
                capture_output=True,
                text=True,
            )
            summary = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
            print(f"{version}: {'ok' if run.returncode == 0 else 'FAILED'}: {summary}", flush=True)
            failed += run.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
