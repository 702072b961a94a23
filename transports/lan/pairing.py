"""Bringing a new device into a LAN group: an invite string, or a short code with SPAKE2.

Two ways to hand the group key to a new device, both behind ``crdtsync
lan-invite`` and ``crdtsync lan-join``:

* **An invite string** (:func:`make_invite`, :func:`read_invite`): the group
  key itself, base32-encoded with a 4-byte check value so that a mistyped
  invite is caught (``crdtsync-invite-1:`` + 58 characters). High entropy, so it
  is as secret as the key file: send it over a channel you trust.
* **A short code** (:func:`serve_pairing`, :func:`join_pairing`): the inviting
  device listens on TCP and shows a code such as ``4081-7723`` (8 digits); the
  new device connects and types it in. The code never becomes a key: both sides
  run SPAKE2 (the ``spake2`` package) with it, a password-authenticated key
  exchange in which someone who does not know the code learns nothing from the
  exchange and gets exactly one guess per attempt, and **the inviter accepts one
  attempt only**: a wrong code ends the invitation (a new code is needed). Both
  sides confirm the SPAKE2 key before the group key is sent, encrypted under it.

The code exchange over TCP (each message: u16 length, then the bytes)::

    joiner  -> inviter   b"CRDTPAIR" + version 1 (9 bytes), then SPAKE2 message A (33 bytes)
    inviter -> joiner    SPAKE2 message B (33 bytes)
    inviter -> joiner    HMAC-BLAKE2s(K, "crdtsync/pair/inviter")          (32 bytes)
    joiner  -> inviter   HMAC-BLAKE2s(K, "crdtsync/pair/joiner")           (32 bytes)
    inviter -> joiner    ChaCha20-Poly1305(HMAC-BLAKE2s(K, "crdtsync/pair/seal"),
                                           nonce 0, the 32-byte group key)  (48 bytes)

``K`` is the SPAKE2 key; the SPAKE2 identities are ``crdtsync-pair-joiner`` (A)
and ``crdtsync-pair-inviter`` (B). Each side checks the other's confirmation,
so both report a wrong code as such; a confirmation lets its receiver test one
code, which is the one guess SPAKE2 allows per attempt anyway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.spake2 import SPAKEError

from crdtsync.errors import PairingError

from .identity import GroupKey

__all__ = [
    "INVITE_PREFIX",
    "PairingServer",
    "join_pairing",
    "make_code",
    "make_invite",
    "read_invite",
    "serve_pairing",
]

logger = logging.getLogger("crdtsync.lan")

#: The start of every invite string.
INVITE_PREFIX = "crdtsync-invite-1:"
_CHECK = 4
_MAGIC = b"CRDTPAIR\x01"
_ID_A = b"crdtsync-pair-joiner"
_ID_B = b"crdtsync-pair-inviter"
_LEN = struct.Struct(">H")
# Every pairing message is small; anything larger is not one.
_MAX_MESSAGE = 256
_CODE = re.compile(r"\d{4}-?\d{4}")


# -- invite strings ----------------------------------------------------------------------


def make_invite(group: GroupKey) -> str:
    """An invite string carrying ``group`` (as secret as the key itself)."""
    key = group.secret_bytes()
    check = hashlib.blake2s(key, digest_size=_CHECK, person=b"crdtinv1").digest()
    return INVITE_PREFIX + base64.b32encode(key + check).decode("ascii").rstrip("=").lower()


def read_invite(text: str) -> GroupKey:
    """The group key of an invite string (spaces and line breaks are ignored).

    Raises:
        PairingError: not an invite, or one with a typo (its check value differs).
    """
    text = "".join(text.split())
    if not text.lower().startswith(INVITE_PREFIX):
        raise PairingError(f"not a crdtsync invite (it starts with {INVITE_PREFIX})")
    body = text[len(INVITE_PREFIX) :].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise PairingError("the invite is damaged (not base32); copy it again") from None
    if len(raw) != 32 + _CHECK:
        raise PairingError("the invite is damaged (wrong length); copy it again")
    key, check = raw[:32], raw[32:]
    want = hashlib.blake2s(key, digest_size=_CHECK, person=b"crdtinv1").digest()
    if not hmac.compare_digest(check, want):
        raise PairingError("the invite is damaged (check value differs); copy it again")
    return GroupKey(key)


# -- short codes with SPAKE2 -------------------------------------------------------------


def make_code() -> str:
    """A fresh random 8-digit code, shown as ``1234-5678``."""
    digits = f"{secrets.randbelow(10**8):08d}"
    return f"{digits[:4]}-{digits[4:]}"


def _password(code: str) -> bytes:
    code = "".join(code.split())
    if not _CODE.fullmatch(code):
        raise PairingError("a pairing code is 8 digits, e.g. 4081-7723")
    return code.replace("-", "").encode("ascii")


def _mac(key: bytes, label: bytes) -> bytes:
    return hmac.digest(key, label, "blake2s")


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(_LEN.pack(len(data)) + data)
    await writer.drain()


async def _recv(reader: asyncio.StreamReader) -> bytes:
    try:
        (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
        if size > _MAX_MESSAGE:
            raise PairingError(f"a pairing message of {size} bytes is not one")
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise PairingError("the other device hung up during pairing") from None
    except OSError as exc:
        raise PairingError(f"pairing connection failed: {exc}") from None


class PairingServer:
    """An invitation waiting for one new device (see :func:`serve_pairing`).

    Attributes:
        code: the code to show to the person at the new device.
        address: ``host:port`` the new device connects to.
    """

    def __init__(
        self, server: asyncio.Server, code: str, address: str, done: asyncio.Future[str]
    ) -> None:
        self._server = server
        self.code = code
        self.address = address
        self._done = done

    async def wait(self, timeout: float | None = None) -> str:
        """Wait until a device joined; returns its address.

        Raises:
            PairingError: the one attempt failed (wrong code, broken connection),
                or nobody came within ``timeout`` seconds. The invitation is over.
        """
        try:
            return await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except TimeoutError:
            raise PairingError(f"no device joined within {timeout} s") from None
        finally:
            await self.close()

    async def close(self) -> None:
        """Withdraw the invitation (idempotent)."""
        self._server.close()
        if not self._done.done():
            self._done.set_exception(PairingError("the invitation was withdrawn"))
            self._done.exception()  # retrieved: nobody has to wait on it


async def serve_pairing(
    group: GroupKey,
    host: str = "0.0.0.0",
    port: int = 0,
    *,
    code: str | None = None,
    step_timeout: float = 30.0,
) -> PairingServer:
    """Invite one device: listen, and hand it ``group`` if it knows the code.

    Args:
        group: the group key to hand over.
        host: the address to listen on.
        port: the port (0: any free port).
        code: the code (default: a fresh :func:`make_code`).
        step_timeout: seconds the joining device may take per message.

    Returns:
        The invitation: show its ``code`` and ``address``, then ``await wait()``.

    Raises:
        PairingError: the port cannot be bound, or ``code`` is not 8 digits.
    """
    code = code if code is not None else make_code()
    password = _password(code)
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    busy = asyncio.Lock()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        if done.done() or busy.locked():
            writer.transport.abort()  # one attempt at a time, and none after the first
            return
        attempt = _Attempt()
        async with busy:
            try:
                async with asyncio.timeout(step_timeout * 3):
                    await _invite_one(reader, writer, password, group, attempt)
            except (PairingError, TimeoutError, OSError) as exc:
                error = exc if isinstance(exc, PairingError) else PairingError(str(exc))
                if isinstance(exc, TimeoutError):
                    error = PairingError("the joining device took too long")
                if not attempt.guessed:
                    # No code was tried (a port scan, a stray connection): keep waiting.
                    logger.info("pairing: ignored a connection from %s: %s", who, error)
                    return
                logger.warning("pairing with %s failed: %s; the invitation is over", who, error)
                if not done.done():
                    done.set_exception(error)
            else:
                logger.info("pairing: %s joined the group", who)
                if not done.done():
                    done.set_result(who)
            finally:
                writer.close()
                if done.done():
                    server.close()

    try:
        server = await asyncio.start_server(accept, host, port)
    except OSError as exc:
        raise PairingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sockname = server.sockets[0].getsockname()
    return PairingServer(server, code, f"{sockname[0]}:{sockname[1]}", done)


class _Attempt:
    """Whether a connection got as far as trying a code (then the invitation is spent)."""

    guessed = False


async def _invite_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    password: bytes,
    group: GroupKey,
    attempt: _Attempt,
) -> None:
    hello = await _recv(reader)
    if not hello.startswith(_MAGIC):
        raise PairingError("not a crdtsync pairing request")
    spake = SPAKE2_B(password, idA=_ID_A, idB=_ID_B)
    mine = spake.start()
    try:
        key = spake.finish(hello[len(_MAGIC) :])
    except (SPAKEError, ValueError) as exc:
        raise PairingError(f"malformed pairing message: {exc}") from None
    # From here on the other side can test one code against our answer.
    attempt.guessed = True
    await _send(writer, mine)
    await _send(writer, _mac(key, b"crdtsync/pair/inviter"))
    theirs = await _recv(reader)
    if not hmac.compare_digest(theirs, _mac(key, b"crdtsync/pair/joiner")):
        raise PairingError("the joining device entered a wrong code")
    sealed = ChaCha20Poly1305(_mac(key, b"crdtsync/pair/seal")).encrypt(
        b"\x00" * 12, group.secret_bytes(), _MAGIC
    )
    await _send(writer, sealed)


async def join_pairing(address: str, code: str, *, timeout: float = 30.0) -> GroupKey:
    """Join a group with a pairing code shown on the inviting device.

    Args:
        address: ``host:port`` that ``crdtsync lan-invite --code`` printed.
        code: the 8-digit code it showed.
        timeout: seconds for the whole exchange.

    Returns:
        The group key.

    Raises:
        PairingError: a wrong code (the invitation is then over: ask for a new
            one), nobody listening, or the exchange failed or took too long.
    """
    password = _password(code)
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit():
        raise PairingError(f"the inviting device's address is host:port, not {address!r}")
    host = host.strip("[]")
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(host, int(port_text))
            except OSError as exc:
                raise PairingError(f"cannot reach {address}: {exc.strerror or exc}") from None
            try:
                return await _join_one(reader, writer, password)
            finally:
                writer.close()
    except TimeoutError:
        raise PairingError(f"pairing with {address} took more than {timeout} s") from None


async def _join_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: bytes
) -> GroupKey:
    spake = SPAKE2_A(password, idA=_ID_A, idB=_ID_B)
    await _send(writer, _MAGIC + spake.start())
    theirs = await _recv(reader)
    try:
        key = spake.finish(theirs)
    except (SPAKEError, ValueError) as exc:
        raise PairingError(f"malformed pairing message: {exc}") from None
    confirm = await _recv(reader)
    # Ours goes out whatever theirs says, so that the inviter learns of a wrong code too.
    await _send(writer, _mac(key, b"crdtsync/pair/joiner"))
    if not hmac.compare_digest(confirm, _mac(key, b"crdtsync/pair/inviter")):
        raise PairingError("wrong code (the invitation is now over: ask for a new code)")
    sealed = await _recv(reader)
    try:
        raw = ChaCha20Poly1305(_mac(key, b"crdtsync/pair/seal")).decrypt(
            b"\x00" * 12, sealed, _MAGIC
        )
    except InvalidTag:
        raise PairingError("the group key arrived damaged") from None
    if len(raw) != 32:
        raise PairingError("the group key arrived damaged")
    return GroupKey(raw)
