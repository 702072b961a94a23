"""The native tests skip only where the Rust core cannot be there (helpers.native)."""

from __future__ import annotations

import shutil

import pytest
from helpers import native


def test_a_missing_extension_fails_where_cargo_could_have_built_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(native, "PURE_AT_START", False)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(pytest.fail.Exception, match="cargo is on PATH"):
        native.require_native(False)


def test_it_skips_without_cargo_or_when_the_pure_path_was_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(native, "PURE_AT_START", False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="no Rust toolchain"):
        native.require_native(False)
    monkeypatch.setattr(native, "PURE_AT_START", True)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(pytest.skip.Exception, match="CRDTSYNC_PURE_PYTHON"):
        native.require_native(False)
    # A caller that imports the module directly: the variable explains nothing.
    with pytest.raises(pytest.fail.Exception):
        native.require_native(False, pure_counts=False)


def test_a_loaded_extension_runs() -> None:
    native.require_native(True)
