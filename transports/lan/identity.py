r"""Who a LAN peer is (its device key) and which group it belongs to (the group key).

Two secrets, two files, both mode 0600 and refused when others can read them:

* **The device identity**: a static X25519 key pair, made on first use and kept
  beside the peer's store (``notes.db`` -> ``notes.db.lan-identity``). Its public
  half is what the Noise handshake authenticates; people and logs see it as a
  **fingerprint**: the first 20 bytes of ``BLAKE2s-256(public key)`` personalised
  with ``b"crdtfp01"``, in lower-case RFC 4648 base32 without padding (32
  characters, 160 bits: finding a second key with a victim's fingerprint costs
  about 2**160 work). A fingerprint is a name, never a proof: only the handshake
  proves that a peer holds the key.
* **The group key**: 32 random bytes shared by every device of a group
  (``crdtsync lan-key --out team.key``). It is never used directly: each use
  takes its own key from it with HMAC-BLAKE2s and a distinct label, so a leak of
  one derived value says nothing of the others:

  ====================================================  ==========================
  derived value                                         use
  ====================================================  ==========================
  ``HMAC(group key, "crdtsync/lan/psk/v1")``            the Noise psk (32 bytes)
  ``HMAC(group key, "crdtsync/lan/mdns/v1\0" + day)``   the announced group tag
  ====================================================  ==========================

  The **group tag** rotates every UTC day (``day`` is ``YYYY-MM-DD``) and is
  truncated to 8 bytes (13 base32 characters): members recognise each other's
  announcements without the group being named, and a listener cannot link one
  day's announcements of a device to another's by the tag. Yesterday's and
  tomorrow's tags are accepted too, for clocks that disagree around midnight.

File formats (text, one value per file)::

    crdtsync-lan-identity-v1
    # fingerprint: 3q2x...        (a comment, for people; ignored when read)
    <base64 of the 32-byte X25519 private key>

    crdtsync-lan-key-v1 <base64url of the 32-byte group key, no padding>
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as _dt
import hashlib
import hmac
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from crdtsync.errors import InvalidOperationError, KeyFileError

__all__ = [
    "IDENTITY_SUFFIX",
    "DeviceIdentity",
    "GroupKey",
    "RemoteIdentity",
    "fingerprint",
    "identity_path",
]

logger = logging.getLogger("crdtsync.lan")

#: Appended to a store's path to name the device identity file beside it.
IDENTITY_SUFFIX = ".lan-identity"
_IDENTITY_MAGIC = "crdtsync-lan-identity-v1"
_GROUP_MAGIC = "crdtsync-lan-key-v1"
_KEY_LEN = 32
_FINGERPRINT_BYTES = 20
_TAG_BYTES = 8
# Key files are a few lines; anything much longer is not one.
_MAX_KEY_FILE = 4096


def fingerprint(public_key: bytes) -> str:
    """The fingerprint of a device's public key (32 lower-case base32 characters).

    Raises:
        InvalidOperationError: ``public_key`` is not 32 bytes.
    """
    if len(public_key) != _KEY_LEN:
        raise InvalidOperationError(f"an X25519 public key is 32 bytes, not {len(public_key)}")
    digest = hashlib.blake2s(public_key, digest_size=_FINGERPRINT_BYTES, person=b"crdtfp01")
    return base64.b32encode(digest.digest()).decode("ascii").lower()


def identity_path(store: str | os.PathLike[str]) -> Path:
    """Where the device identity of the peer whose store is at ``store`` lives."""
    return Path(os.fspath(store) + IDENTITY_SUFFIX)


@dataclass(frozen=True)
class RemoteIdentity:
    """The device key a peer proved in the handshake (what ``remote_identity`` holds).

    Attributes:
        public_key: the peer's static X25519 public key (32 bytes).
    """

    public_key: bytes

    @property
    def fingerprint(self) -> str:
        """The key's fingerprint (see :func:`fingerprint`)."""
        return fingerprint(self.public_key)

    def __str__(self) -> str:
        return self.fingerprint


# -- files -------------------------------------------------------------------------------


def _read_private(path: Path, what: str) -> str:
    """A key file's text, refused when it is not a regular file of ours that only we can read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{what} {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            logger.warning("refusing %s %s: mode %04o lets other users read it", what, path, mode)
            raise KeyFileError(
                f"{what} {path} is readable by other users (mode {mode:04o}); "
                f"anyone who reads it can impersonate this device or join the group. "
                f"Run: chmod 600 {path}"
            )
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise KeyFileError(f"{what} {path} belongs to another user (uid {st.st_uid})")
        data = f.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{what} {path} is too large to be a key file")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{what} {path} is not a crdtsync key file (not ASCII text)") from None


def _write_private(path: Path, text: str, what: str) -> None:
    """Create ``path`` with ``text``, mode 0600; never replaces an existing file.

    The file appears complete or not at all: it is written under a temporary
    name and then hard-linked into place (``link`` fails if the name exists), so
    a process that starts at the same moment never reads half a key.
    """
    if path.exists():
        raise KeyFileError(f"{what} {path} exists; not overwriting it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    except OSError as exc:
        raise KeyFileError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), 0o600)  # exactly 0600, whatever the umask
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        raise KeyFileError(f"{what} {path} exists; not overwriting it") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _b64decode(text: str, *, urlsafe: bool) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        if urlsafe:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ValueError("not base64") from None


# -- the device identity -------------------------------------------------------------------


class DeviceIdentity:
    """A device's static X25519 key pair: what the LAN handshake authenticates.

    Example::

        me = DeviceIdentity.for_store("notes.db")    # made on first use, 0600
        me.fingerprint                               # '3q2x...' (32 characters)

    The private key never appears in ``repr`` or logs.
    """

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != _KEY_LEN:
            raise InvalidOperationError(
                f"an X25519 private key is 32 bytes, not {len(private_key)}"
            )
        # The key object; raw bytes are kept for the Noise handshake (which takes bytes).
        self._private = X25519PrivateKey.from_private_bytes(private_key)
        self._private_bytes = self._private.private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        # The public half, 32 bytes.
        self.public_key: bytes = self._private.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> DeviceIdentity:
        """A new random identity (kept nowhere: see :meth:`save`, :meth:`for_store`)."""
        return cls(os.urandom(_KEY_LEN))

    @property
    def fingerprint(self) -> str:
        """The public key's fingerprint."""
        return fingerprint(self.public_key)

    def private_bytes(self) -> bytes:
        """The raw private key (32 bytes), for the handshake. Keep it out of logs."""
        return self._private_bytes

    def encode(self) -> str:
        """The identity file's text."""
        key = base64.b64encode(self._private_bytes).decode("ascii")
        return f"{_IDENTITY_MAGIC}\n# fingerprint: {self.fingerprint}\n{key}\n"

    @classmethod
    def decode(cls, text: str) -> DeviceIdentity:
        """Parse an identity file's text.

        Raises:
            KeyFileError: it is not an identity file, or the key is malformed.
        """
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if len(lines) != 2 or lines[0] != _IDENTITY_MAGIC:
            raise KeyFileError(f"not a crdtsync LAN identity (expected a {_IDENTITY_MAGIC} file)")
        try:
            raw = _b64decode(lines[1], urlsafe=False)
        except ValueError:
            raise KeyFileError("the identity's private key is not valid base64") from None
        if len(raw) != _KEY_LEN:
            raise KeyFileError(f"the identity's private key is {len(raw)} bytes, not 32")
        return cls(raw)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the identity to a new file (mode 0600).

        Raises:
            KeyFileError: the file exists or cannot be written.
        """
        _write_private(Path(path), self.encode(), "device identity")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeviceIdentity:
        """Read an identity file.

        Raises:
            KeyFileError: missing, malformed, not a regular file, or readable by
                other users (the message says how to fix the mode).
        """
        path = Path(path)
        try:
            return cls.decode(_read_private(path, "device identity"))
        except KeyFileError as exc:
            if str(path) in str(exc):
                raise
            raise KeyFileError(f"{path}: {exc}") from None

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> DeviceIdentity:
        """Read the identity at ``path``, making and saving a new one if there is none.

        Two processes starting at once agree: the file is created exclusively,
        and the one that loses the race reads the winner's.

        Raises:
            KeyFileError: as :meth:`load` and :meth:`save`.
        """
        path = Path(path)
        if not path.exists():
            identity = cls.generate()
            try:
                identity.save(path)
            except KeyFileError:
                if not path.exists():
                    raise
            else:
                logger.info("made device identity %s at %s", identity.fingerprint, path)
                return identity
        return cls.load(path)

    @classmethod
    def for_store(cls, store: str | os.PathLike[str]) -> DeviceIdentity:
        """The identity kept beside a store (``<store>.lan-identity``), made on first use."""
        return cls.load_or_create(identity_path(store))

    def __repr__(self) -> str:
        return f"<DeviceIdentity {self.fingerprint}>"


# -- the group key ---------------------------------------------------------------------------


class GroupKey:
    """The secret a LAN group shares: who holds it may link with any member.

    Args:
        key: 32 bytes (see :meth:`generate`).

    Raises:
        InvalidOperationError: ``key`` is not 32 bytes.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_LEN:
            raise InvalidOperationError(f"a group key is 32 bytes, not {len(key)}")
        # Never used directly: every use derives its own key (see the module docstring).
        self._key = bytes(key)
        # The Noise psk.
        self.psk: bytes = self._derive(b"crdtsync/lan/psk/v1")

    @classmethod
    def generate(cls) -> GroupKey:
        """A new random group key."""
        return cls(os.urandom(_KEY_LEN))

    def _derive(self, label: bytes) -> bytes:
        return hmac.digest(self._key, label, "blake2s")

    def secret_bytes(self) -> bytes:
        """The raw key, for pairing (which hands it to a new device). Keep it out of logs."""
        return self._key

    # -- the rotating tag ----------------------------------------------------------------

    def tag(self, day: _dt.date) -> str:
        """The group tag announced on ``day`` (UTC): 13 base32 characters."""
        mac = self._derive(b"crdtsync/lan/mdns/v1\x00" + day.isoformat().encode("ascii"))
        return base64.b32encode(mac[:_TAG_BYTES]).decode("ascii").rstrip("=").lower()

    def current_tag(self, now: _dt.datetime | None = None) -> str:
        """Today's tag (UTC), what a peer announces."""
        return self.tag(_utc_day(now))

    def accepted_tags(self, now: _dt.datetime | None = None) -> frozenset[str]:
        """Yesterday's, today's and tomorrow's tags: what a peer recognises as its group."""
        today = _utc_day(now)
        one = _dt.timedelta(days=1)
        return frozenset(self.tag(d) for d in (today - one, today, today + one))

    # -- files ------------------------------------------------------------------------------

    def encode(self) -> str:
        """The group key file's text (one line)."""
        key = base64.urlsafe_b64encode(self._key).decode("ascii").rstrip("=")
        return f"{_GROUP_MAGIC} {key}\n"

    @classmethod
    def decode(cls, text: str) -> GroupKey:
        """Parse a group key file's text.

        Raises:
            KeyFileError: not a group key, or a malformed one.
        """
        parts = text.split()
        if len(parts) != 2 or parts[0] != _GROUP_MAGIC:
            raise KeyFileError(f"not a crdtsync LAN group key (expected {_GROUP_MAGIC} ...)")
        try:
            raw = _b64decode(parts[1], urlsafe=True)
        except ValueError:
            raise KeyFileError("the group key is not valid base64url") from None
        if len(raw) != _KEY_LEN:
            raise KeyFileError(f"the group key is {len(raw)} bytes, not 32")
        return cls(raw)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to a new file (mode 0600; never overwrites one).

        Raises:
            KeyFileError: the file exists or cannot be written.
        """
        _write_private(Path(path), self.encode(), "group key")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GroupKey:
        """Read a group key file.

        Raises:
            KeyFileError: missing, malformed, or readable by other users.
        """
        path = Path(path)
        try:
            return cls.decode(_read_private(path, "group key"))
        except KeyFileError as exc:
            if str(path) in str(exc):
                raise
            raise KeyFileError(f"{path}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupKey) and hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.psk)

    def __repr__(self) -> str:
        return "<GroupKey>"


def _utc_day(now: _dt.datetime | None) -> _dt.date:
    if now is None:
        now = _dt.datetime.now(_dt.UTC)
    elif now.tzinfo is None:
        raise InvalidOperationError("a time without a timezone is ambiguous; pass an aware one")
    return now.astimezone(_dt.UTC).date()
