"""The Rust extension ships in wheels and editable installs; without Rust, installs still work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def _build_wheel(src: Path, out: Path, env: dict[str, str] | None = None) -> Path:
    proc = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
        str(src),
        cwd=out,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("crdtsync-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / "bin" / "python"
    proc = _run(
        str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    return py


def _site() -> str:
    return str(next(Path(p) for p in sys.path if p.endswith("site-packages")))


_PROBE = (
    "import sys; sys.path = [p for p in sys.path if 'crdtsync' not in p]\n"
    "import warnings; warnings.simplefilter('always')\n"
    "import crdtsync, crdtsync.format.accel as a\n"
    "from crdtsync.format.yupdate import DEFAULT_LIMITS\n"
    "print(crdtsync.__file__); print(a.NATIVE); print(a.PATH)\n"
    "v1 = bytes.fromhex('010107000401017402686900')\n"
    "assert a.compact_decode(a.compact_encode(v1)) == v1\n"
    "assert a.parse_update(v1).struct_count() == 1\n"
)


@pytest.mark.slow
def test_wheel_carries_the_abi3_extension(tmp_path: Path) -> None:
    if not shutil.which("cargo"):
        pytest.skip("no Rust toolchain")
    wheel = _build_wheel(REPO, tmp_path)
    assert wheel.name.endswith("-cp311-abi3-linux_x86_64.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.startswith("crdtsync/_native")] == ["crdtsync/_native.abi3.so"]
    py = _fresh_venv(tmp_path, wheel)
    out = _run(
        str(py), "-c", _PROBE, cwd=tmp_path, env={"PYTHONPATH": _site(), "PATH": "/usr/bin:/bin"}
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert str(tmp_path / "venv") in lines[0]
    assert lines[1] == "True"
    assert lines[2].startswith("native Rust core (crdtsync-native ")


def test_editable_install_has_the_extension() -> None:
    if not shutil.which("cargo"):
        pytest.skip("no Rust toolchain")
    code = "import crdtsync._native as n; print(n.__file__); print(n.BUILD)"
    out = _run(sys.executable, "-c", code, cwd=Path("/"))
    assert out.returncode == 0, out.stderr
    path, build = out.stdout.splitlines()
    assert Path(path).resolve().parent == REPO / "crdtsync"  # (through the strict link tree)
    assert build.endswith("release build"), build  # never the slow debug build


@pytest.mark.slow
def test_install_without_rust_uses_the_python_path(tmp_path: Path) -> None:
    """A source install on a machine without cargo succeeds, and crdtsync works (slower)."""
    src = tmp_path / "src"
    files = _run("git", "ls-files", "-z", cwd=REPO).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    out_dir = tmp_path / "wheel"
    out_dir.mkdir()
    # PATH without cargo (rustup's proxies live in ~/.cargo/bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO", "RUSTUP"))}
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    env["HOME"] = str(tmp_path)
    assert _run("sh", "-c", "command -v cargo", cwd=tmp_path, env=env).returncode != 0
    wheel = _build_wheel(src, out_dir, env=env)
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if "_native" in n], names
    assert "crdtsync/format/accel.py" in names
    py = _fresh_venv(tmp_path, wheel)
    out = _run(
        str(py), "-c", _PROBE, cwd=tmp_path, env={"PYTHONPATH": _site(), "PATH": "/usr/bin:/bin"}
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert str(tmp_path / "venv") in lines[0]
    assert lines[1:3] == ["False", "pure Python (crdtsync._native is not built)"]
    assert "RuntimeWarning: crdtsync._native is not available" in out.stderr
    version = _run(
        str(py), "-m", "crdtsync", "--version", cwd=tmp_path, env={"PYTHONPATH": _site()}
    )
    assert version.returncode == 0, version.stderr
    assert "formats: pure Python (crdtsync._native is not built)" in version.stdout
