"""Pairing (invite strings, SPAKE2 codes) and the LAN commands of the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crdtsync.cli import main
from crdtsync.errors import PairingError
from crdtsync.transports.lan import GroupKey
from crdtsync.transports.lan.pairing import (
    INVITE_PREFIX,
    join_pairing,
    make_code,
    make_invite,
    read_invite,
    serve_pairing,
)

# -- invite strings -------------------------------------------------------------------


def test_invite_round_trip_and_typos() -> None:
    group = GroupKey.generate()
    invite = make_invite(group)
    assert invite.startswith(INVITE_PREFIX)
    assert read_invite(invite) == group
    assert read_invite(" " + invite[:20] + "\n" + invite[20:] + " ") == group  # wrapped
    typo = invite[:-3] + ("a" if invite[-3] != "a" else "b") + invite[-2:]
    with pytest.raises(PairingError, match="damaged"):
        read_invite(typo)
    with pytest.raises(PairingError, match="damaged"):
        read_invite(invite[:-4])
    with pytest.raises(PairingError, match="not a crdtsync invite"):
        read_invite("hello")


# -- codes ------------------------------------------------------------------------------


def test_codes_are_eight_digits() -> None:
    codes = {make_code() for _ in range(50)}
    assert len(codes) > 45
    assert all(len(c) == 9 and c[4] == "-" and c.replace("-", "").isdigit() for c in codes)


@pytest.mark.anyio
async def test_pairing_with_the_right_code() -> None:
    group = GroupKey.generate()
    server = await serve_pairing(group, "127.0.0.1", 0)
    joined = await join_pairing(server.address, server.code)
    assert joined == group
    assert (await server.wait(10)).startswith("127.0.0.1:")


@pytest.mark.anyio
async def test_a_wrong_code_ends_the_invitation() -> None:
    group = GroupKey.generate()
    server = await serve_pairing(group, "127.0.0.1", 0, code="1111-2222")
    with pytest.raises(PairingError, match="wrong code"):
        await join_pairing(server.address, "1111-2223")
    with pytest.raises(PairingError, match="wrong code"):
        await server.wait(10)
    # The right code is no use now: the one attempt is spent.
    with pytest.raises(PairingError):
        await join_pairing(server.address, "1111-2222", timeout=5)


@pytest.mark.anyio
async def test_a_stray_connection_does_not_spend_the_invitation() -> None:
    group = GroupKey.generate()
    server = await serve_pairing(group, "127.0.0.1", 0, step_timeout=0.5)
    host, port = server.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00\x05hello")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # dropped
    writer.close()
    assert await join_pairing(server.address, server.code) == group
    await server.wait(10)


@pytest.mark.anyio
@pytest.mark.parametrize("code", ["123", "abcd-efgh", "1234-56789", ""])
async def test_malformed_codes(code: str) -> None:
    with pytest.raises(PairingError, match="8 digits"):
        await join_pairing("127.0.0.1:1", code)


# -- the commands ----------------------------------------------------------------------


def test_lan_key_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "team.key"
    assert main(["lan-key", "--out", str(out)]) == 0
    assert os.stat(out).st_mode & 0o777 == 0o600
    GroupKey.load(out)
    assert main(["lan-key", "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["lan-key"]) == 0
    assert GroupKey.decode(capsys.readouterr().out)


def test_invite_and_join_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "team.key"
    assert main(["lan-key", "--out", str(key)]) == 0
    assert main(["lan-invite", "--key-file", str(key)]) == 0
    invite = capsys.readouterr().out.strip()
    joined = tmp_path / "joined.key"
    assert main(["lan-join", "--out", str(joined), "--invite", invite]) == 0
    assert GroupKey.load(joined) == GroupKey.load(key)
    assert main(["lan-join", "--out", str(tmp_path / "x"), "--invite", invite[:-2]]) == 1
    assert "damaged" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["lan-join", "--out", str(tmp_path / "y")])
    assert info.value.code == 2


@pytest.mark.parametrize("right", [True, False])
def test_code_pairing_commands(tmp_path: Path, right: bool) -> None:
    key = tmp_path / "team.key"
    assert main(["lan-key", "--out", str(key)]) == 0
    inviter = subprocess.Popen(
        [sys.executable, "-m", "crdtsync", "lan-invite", "--key-file", str(key), "--code",
         "--listen", "127.0.0.1:0", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert inviter.stdout is not None
        code = inviter.stdout.readline().split()[-1]
        address = inviter.stdout.readline().split()[-1]
        if not right:
            code = code[:-1] + str((int(code[-1]) + 1) % 10)
        joined = tmp_path / "joined.key"
        status = main(["lan-join", "--out", str(joined), "--code", code, "--address", address])
        out, err = inviter.communicate(timeout=60)
    finally:
        if inviter.poll() is None:
            inviter.kill()
            inviter.communicate()
    if right:
        assert status == 0
        assert inviter.returncode == 0, err
        assert "joined: 127.0.0.1:" in out
        assert GroupKey.load(joined) == GroupKey.load(key)
    else:
        assert status == 1
        assert inviter.returncode == 1
        assert "wrong code" in err
        assert not joined.exists()
