"""transports/ installs as crdtsync.transports, never as a top-level `transports`."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, check=False, cwd=cwd, capture_output=True, text=True, timeout=240, env=env
    )


def test_wheel_maps_transports_under_the_package(tmp_path: Path) -> None:
    out = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(REPO),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("crdtsync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "crdtsync/transports/__init__.py" in names
    assert "crdtsync/transports/memory.py" in names
    assert not [n for n in names if n.startswith("transports/")], "no top-level transports package"
    assert "crdtsync/protocol/session.py" in names
    assert "crdtsync/net.py" in names
    assert "crdtsync/store/sqlite.py" in names

    # A fresh venv (reusing this one's site-packages for the dependencies).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / "bin" / "python"
    out = _run(
        str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    # Deps come from the dev venv's site-packages, but crdtsync itself from the wheel.
    site = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    code = (
        "import sys; sys.path = [p for p in sys.path if 'crdtsync' not in p]; "
        "import crdtsync.transports.memory as m, crdtsync; "
        "print(m.__file__); print(crdtsync.__file__)\n"
        "try:\n    import transports\n"
        "except ModuleNotFoundError:\n    print('no top-level transports')"
    )
    out = _run(
        str(py), "-c", code, cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert str(env_dir) in lines[0], lines
    assert lines[0].endswith("crdtsync/transports/memory.py"), lines
    assert lines[-1] == "no top-level transports"


def test_editable_install_has_crdtsync_transports_only(tmp_path: Path) -> None:
    code = (
        "import crdtsync.transports, crdtsync.transports.memory\n"
        "print(crdtsync.transports.__file__)\n"
        "try:\n    import transports\n"
        "except ModuleNotFoundError:\n    print('no top-level transports')"
    )
    out = _run(sys.executable, "-c", code, cwd=tmp_path)  # not the repo root: no cwd import
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # Through the symlink crdtsync/transports -> ../transports: the files are the repository's.
    assert Path(lines[0]).resolve() == REPO / "transports" / "__init__.py"
    assert lines[1] == "no top-level transports"
