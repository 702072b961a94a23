"""transports/ installs as crdtsync.transports, never as a top-level `transports`."""

from __future__ import annotations

import shutil
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


def _clean_copy(tmp_path: Path) -> Path:
    """The source tree as a fresh clone would have it: no build/, venvs or caches.

    setuptools reuses a ``build/lib`` it finds, so building from the working tree
    could ship modules that no longer exist.
    """
    junk = shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "node_modules", "__pycache__",
        ".*_cache", ".hypothesis", ".benchmarks", "target",
    )  # fmt: skip
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=junk)
    return src


def test_wheel_maps_transports_under_the_package(tmp_path: Path) -> None:
    src = _clean_copy(tmp_path)
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
        str(src),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("crdtsync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "crdtsync/transports/__init__.py" in names
    assert "crdtsync/transports/memory.py" in names
    assert "crdtsync/transports/websocket.py" in names
    stale = [n for n in names if n.startswith("crdtsync/_") and n.endswith(".py")]
    assert stale == ["crdtsync/__init__.py", "crdtsync/__main__.py"], stale
    for module in ("__init__", "identity", "noise", "channel", "link", "discovery", "pairing"):
        assert f"crdtsync/transports/lan/{module}.py" in names, module
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
        "import crdtsync.transports.memory as m, crdtsync, crdtsync.transports.lan.link; "
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
        "import crdtsync.transports, crdtsync.transports.memory, crdtsync.transports.lan\n"
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


def test_editable_install_is_visible_to_mypy(tmp_path: Path) -> None:
    # A user's program in their own folder, type-checked against the installed crdtsync.
    app = tmp_path / "app.py"
    app.write_text(
        "from crdtsync import Doc, Peer\n"
        "from crdtsync.transports.memory import MemoryNetwork\n"
        "doc: Doc = Doc()\n"
        "doc.text('body').insert(0, 'hi')\n"
        "reveal_type(doc.text('body'))\n"
        "reveal_type(Peer)\n"
        "reveal_type(MemoryNetwork().transport('a'))\n"
    )
    out = _run(sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(app), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'Revealed type is "crdtsync.model.containers.Text"' in out.stdout
    assert "crdtsync.transports.memory.MemoryTransport" in out.stdout


def test_sdist_and_wheel_build_install_and_work(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    out = _run(
        sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist),
        str(_clean_copy(tmp_path)),
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (sdist,) = dist.glob("crdtsync-*.tar.gz")
    (wheel,) = dist.glob("crdtsync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "crdtsync/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names), names
    assert not [n for n in names if n.split("/")[0] in {"transports", "tests", "tools"}]
    smoke = (
        "import crdtsync\n"
        "from crdtsync import Doc\n"
        "a, b = Doc(), Doc()\n"
        "a.list('items').append({'title': 'milk', 'qty': 2})\n"
        "b.import_update(a.export_update())\n"
        "assert b.to_py() == {'items': [{'title': 'milk', 'qty': 2}]}, b.to_py()\n"
        "assert Doc.load(b.save()).to_py() == b.to_py()\n"
        "import crdtsync.transports.memory\n"
        "print(crdtsync.__file__)\n"
    )
    site = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    for artifact in (wheel, sdist):
        env_dir = tmp_path / f"venv-{artifact.suffix}"
        venv.create(env_dir, system_site_packages=False, with_pip=True)
        py = env_dir / "bin" / "python"
        out = _run(
            str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
            str(artifact), cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)},
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        # Dependencies come from the test venv's site-packages; crdtsync from the artifact.
        out = _run(str(py), "-c", smoke, cwd=tmp_path, env={"PYTHONPATH": str(site)})
        assert out.returncode == 0, out.stderr
        assert str(env_dir) in out.stdout, out.stdout
