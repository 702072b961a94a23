"""When a test that needs the Rust core (``crdtsync._native``) may skip, and when it must fail.

The extension is optional (an install without cargo falls back to pure Python,
and so does a failed build), so "not loaded" has three causes, told apart here:
``CRDTSYNC_PURE_PYTHON`` set when the run started (the pure path was asked
for: skip), no Rust toolchain (skip: nothing could have built it), or a build
that failed although cargo is on PATH (fail: CI has cargo, and a broken build
must not turn the native tests into skips).
"""

from __future__ import annotations

import os
import shutil

import pytest

from crdtsync.format import accel

# Read once, at import: fixtures switch the variable per test (conftest.checker_path).
PURE_AT_START = os.environ.get(accel.PURE_PYTHON_ENV, "") not in ("", "0")


def require_native(loaded: bool | None = None, *, pure_counts: bool = True) -> None:
    """Skip or fail the calling test unless the Rust core is loaded (``loaded``, or accel's).

    Args:
        loaded: whether the caller could load it (None: ``accel.NATIVE``).
        pure_counts: whether ``CRDTSYNC_PURE_PYTHON`` explains its absence (not
            for a caller that imports the module directly, whatever it says).

    Raises:
        pytest.skip.Exception: the pure path was asked for, or there is no cargo.
        pytest.fail.Exception: cargo is on PATH, yet the extension is not loaded.
    """
    if accel.NATIVE if loaded is None else loaded:
        return
    if PURE_AT_START and pure_counts:
        pytest.skip(f"{accel.PURE_PYTHON_ENV} is set: the pure-Python path was asked for")
    if shutil.which("cargo"):
        pytest.fail("crdtsync._native is not built (or failed to load) although cargo is on PATH")
    pytest.skip("no Rust toolchain: crdtsync._native is not built")


def checker_kinds() -> list[bool]:
    """The checkers a test runs on: ``[False, True]`` (Python, Rust) where the core is built.

    Fails the collection where cargo is on PATH and the extension is not loaded
    (as :func:`require_native` fails a test), so CI never drops the Rust twin.
    """
    if accel.NATIVE:
        return [False, True]
    if shutil.which("cargo"):
        pytest.fail("crdtsync._native is not built although cargo is on PATH")
    return [False]
