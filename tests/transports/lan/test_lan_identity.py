"""Device identities and group keys: files, modes, fingerprints, rotating tags."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crdtsync.errors import KeyFileError
from crdtsync.transports.lan import DeviceIdentity, GroupKey, fingerprint, identity_path

UTC = dt.UTC


def test_identity_is_made_once_beside_the_store(tmp_path: Path) -> None:
    store = tmp_path / "notes.db"
    first = DeviceIdentity.for_store(store)
    path = identity_path(store)
    assert path == tmp_path / "notes.db.lan-identity"
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = DeviceIdentity.for_store(store)
    assert again.public_key == first.public_key
    text = path.read_text()
    assert first.fingerprint in text  # for people; the key itself is base64
    assert first.private_bytes().hex() not in repr(first)


def test_concurrent_first_starts_agree(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    code = (
        "import sys; from crdtsync.transports.lan import DeviceIdentity; "
        "print(DeviceIdentity.for_store(sys.argv[1]).fingerprint)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(outs) == 1, outs


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_files_readable_by_others_are_refused(
    tmp_path: Path, mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "id"
    DeviceIdentity.generate().save(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        DeviceIdentity.load(path)
    assert any(r.name == "crdtsync.lan" and "mode" in r.getMessage() for r in caplog.records)
    key = tmp_path / "team.key"
    GroupKey.generate().save(key)
    os.chmod(key, mode)
    with caplog.at_level(logging.WARNING), pytest.raises(KeyFileError, match="other users"):
        GroupKey.load(key)


def test_key_files_are_never_overwritten(tmp_path: Path) -> None:
    key = tmp_path / "team.key"
    GroupKey.generate().save(key)
    with pytest.raises(KeyFileError, match="exists"):
        GroupKey.generate().save(key)


def test_symlinks_and_garbage_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    GroupKey.generate().save(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(KeyFileError):
        GroupKey.load(link)
    for text in ["", "hello", "crdtsync-lan-key-v1", "crdtsync-lan-key-v1 AAAA", "\xff" * 3]:
        bad = tmp_path / f"bad{len(text)}"
        fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, text.encode("latin-1"))
        os.close(fd)
        with pytest.raises(KeyFileError):
            GroupKey.load(bad)
        with pytest.raises(KeyFileError):
            DeviceIdentity.load(bad)
    with pytest.raises(KeyFileError, match="does not exist"):
        GroupKey.load(tmp_path / "missing")


def test_group_key_round_trip(tmp_path: Path) -> None:
    key = GroupKey.generate()
    key.save(tmp_path / "k")
    assert GroupKey.load(tmp_path / "k") == key
    assert GroupKey.decode(key.encode()) == key
    assert key != GroupKey.generate()
    assert "crdtsync-lan-key-v1" in key.encode()
    assert key.secret_bytes().hex() not in repr(key)


def test_fingerprint_is_32_base32_characters_and_documented() -> None:
    ident = DeviceIdentity(bytes(32))
    fp = ident.fingerprint
    assert len(fp) == 32
    assert set(fp) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert fp == fingerprint(ident.public_key)
    # Pinned: the documented construction (BLAKE2s-160, person "crdtfp01", base32).
    import base64
    import hashlib

    digest = hashlib.blake2s(ident.public_key, digest_size=20, person=b"crdtfp01").digest()
    assert fp == base64.b32encode(digest).decode().lower()


def test_group_tags_rotate_daily_and_tolerate_skew() -> None:
    key = GroupKey(b"k" * 32)
    noon = dt.datetime(2026, 12, 6, 12, tzinfo=UTC)
    today = key.current_tag(noon)
    assert len(today) == 13
    assert key.tag(dt.date(2026, 12, 6)) == today
    tomorrow = key.current_tag(noon + dt.timedelta(days=1))
    assert tomorrow != today
    accepted = key.accepted_tags(noon)
    assert today in accepted
    assert tomorrow in accepted
    assert key.current_tag(noon - dt.timedelta(days=1)) in accepted
    assert key.current_tag(noon + dt.timedelta(days=2)) not in accepted
    # Another group's tag never matches.
    assert GroupKey(b"j" * 32).current_tag(noon) not in accepted
    # A time in another zone names the UTC day.
    east = dt.timezone(dt.timedelta(hours=10))
    assert key.current_tag(dt.datetime(2026, 12, 7, 5, tzinfo=east)) == today


def test_the_core_never_imports_the_lan_extra() -> None:
    code = (
        "import sys, crdtsync, crdtsync.transports, crdtsync.peer.peer, crdtsync.cli\n"
        "bad = [m for m in ('cryptography', 'zeroconf', 'spake2', 'crdtsync.transports.lan')"
        " if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
