"""The build backend: setuptools, with editable installs in its "strict" mode.

setuptools' default editable install maps ``crdtsync.transports`` onto the
top-level ``transports/`` folder with an import hook, which type checkers cannot
follow: a user's ``mypy --strict app.py`` would not find crdtsync at all. Strict
mode builds a tree of links under ``build/__editable__*`` that mirrors the
installed layout and puts that tree on ``sys.path``, so Python, mypy and IDEs
all see ``crdtsync`` (and nothing else: no top-level ``transports``). Edits to
existing files show at once; a new module needs ``pip install -e .`` again
(``scripts/check`` reinstalls on every run). Pass
``--config-settings editable_mode=lenient`` to choose otherwise.

setuptools-rust builds the optional Rust extension (``crdtsync._native``) in
place, next to the sources, in every editable mode; strict mode's link tree does
not pick it up, so :func:`build_editable` links it in (nothing to link when the
build was skipped for want of a Rust toolchain).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the rest of PEP 517/660, unchanged)
    build_sdist,
    build_wheel,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """PEP 660 editable wheel, in setuptools' strict mode unless told otherwise."""
    settings = dict(config_settings or {})
    settings.setdefault("editable_mode", "strict")
    name = _setuptools.build_editable(wheel_directory, settings, metadata_directory)
    if settings["editable_mode"] == "strict":
        _link_extensions(Path(wheel_directory) / name)
    return name


def _link_extensions(wheel: Path) -> None:
    """Link the in-place built extension modules into the strict link tree."""
    with zipfile.ZipFile(wheel) as zf:
        pth = [n for n in zf.namelist() if n.startswith("__editable__") and n.endswith(".pth")]
        if not pth:
            return
        tree = Path(zf.read(pth[0]).decode().strip().splitlines()[0])
    source = Path(__file__).resolve().parents[1] / "crdtsync"
    for ext in source.glob("_native*.so"):
        link = tree / "crdtsync" / ext.name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(ext, link)
