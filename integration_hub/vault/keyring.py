"""The vault's key ring: numbered 32-byte AES keys, the highest version primary.

Keys come from ``INTEGRATIONS_VAULT_KEYS`` (``"1:<base64>,2:<base64>"``) when it is set, else from
the key file (``var/vault.key`` by default), a small JSON document::

    {"keys": {"1": "<urlsafe base64>", "2": "..."}, "primary": 2}

Only the primary key encrypts; older versions stay so that rows not yet rotated still decrypt.
Parse errors never echo the offending text: a misplaced key would otherwise end up in a log.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from integration_hub.private_files import PRIVATE_DIR_MODE
from integration_hub.vault.errors import (
    VaultKeyExists,
    VaultKeyInvalid,
    VaultKeyMissing,
    VaultKeysInUse,
    display_path,
)

if TYPE_CHECKING:
    from integration_hub.settings import Settings

KEY_BYTES = 32
"""AES-256."""
ENV_VAR = "INTEGRATIONS_VAULT_KEYS"
_FILE_COMMENT = (
    "Integration Hub credential vault keys. Keep this file secret and backed up: losing it makes "
    "every stored credential unreadable. Rotate with `integrations vault rotate`."
)


def generate_key() -> bytes:
    """A fresh random AES-256 key from the OS CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """The text form used in the key file and ``INTEGRATIONS_VAULT_KEYS`` (urlsafe base64)."""
    return base64.urlsafe_b64encode(key).decode("ascii")


def _decode_key(text: str, where: str) -> bytes:
    """Accept urlsafe or standard base64, padded or not; anything else is refused, not guessed."""
    cleaned = text.strip()
    cleaned += "=" * (-len(cleaned) % 4)
    key = None
    with contextlib.suppress(binascii.Error, ValueError):
        key = base64.b64decode(cleaned, altchars=b"-_", validate=True)
    if key is None:
        raise VaultKeyInvalid(f"{where}: the key is not valid base64.")
    if len(key) != KEY_BYTES:
        raise VaultKeyInvalid(
            f"{where}: the key must be {KEY_BYTES} bytes (AES-256), it is {len(key)} bytes."
        )
    return key


def _parse_version(text: Any, where: str) -> int:
    """A positive whole number; the rejected text is not repeated (it might be a key)."""
    if isinstance(text, bool):
        raise VaultKeyInvalid(f"{where}: a key version is not a positive whole number.")
    if isinstance(text, int):
        version = text
    elif isinstance(text, str) and re.fullmatch(r"[0-9]{1,9}", text.strip()):
        version = int(text.strip())
    else:
        raise VaultKeyInvalid(f"{where}: a key version is not a positive whole number.")
    if version < 1:
        raise VaultKeyInvalid(f"{where}: key versions start at 1.")
    return version


class KeyRing:
    """Key versions -> keys. Its repr shows versions only, and it refuses to be pickled, so a
    ring cannot leak through logs, Prefect parameters or results."""

    __slots__ = ("_keys", "source")

    def __init__(self, keys: Mapping[int, bytes], *, source: str = "memory") -> None:
        if not keys:
            raise VaultKeyInvalid(f"{source}: the key ring holds no keys.")
        checked: dict[int, bytes] = {}
        for version, key in keys.items():
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise VaultKeyInvalid(f"{source}: key versions must be whole numbers from 1.")
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise VaultKeyInvalid(f"{source}: key version {version} is not {KEY_BYTES} bytes.")
            checked[version] = key
        self._keys = checked
        self.source = source
        """Where the keys came from (a path or the variable name), for messages."""

    @classmethod
    def generate(cls, *, source: str = "memory") -> KeyRing:
        """A ring with one fresh key, version 1 (tests, and the start of a new key file)."""
        return cls({1: generate_key()}, source=source)

    @classmethod
    def from_env_value(cls, value: str, *, source: str = ENV_VAR) -> KeyRing:
        """Parse ``"1:<base64>,2:<base64>"``; entries are named by position in errors."""
        keys: dict[int, bytes] = {}
        entries = [entry.strip() for entry in value.split(",")]
        for position, entry in enumerate(entries, start=1):
            if not entry:
                continue
            where = f"{source} entry {position}"
            version_text, sep, key_text = entry.partition(":")
            if not sep or not key_text.strip():
                raise VaultKeyInvalid(f"{where} must look like '<version>:<base64 key>'.")
            version = _parse_version(version_text, where)
            if version in keys:
                raise VaultKeyInvalid(f"{where}: key version {version} appears twice.")
            keys[version] = _decode_key(key_text, where)
        if not keys:
            raise VaultKeyInvalid(f"{source} is set but holds no keys.")
        return cls(keys, source=source)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        """Load a key file; a missing file is :class:`VaultKeyMissing`, a bad one
        :class:`VaultKeyInvalid` with the reason."""
        shown = display_path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise VaultKeyMissing(path) from None
        except OSError as exc:
            raise VaultKeyInvalid(
                f"Vault key file {shown} cannot be read: {exc.strerror or type(exc).__name__}."
            ) from None

        def invalid(reason: str) -> NoReturn:
            raise VaultKeyInvalid(
                f"Vault key file {shown} is malformed: {reason}. Restore it from a backup; "
                "`integrations vault init` only creates a new ring (old credentials would be "
                "lost)."
            )

        # Raise outside the except blocks: decode errors keep the whole document (``.doc``,
        # ``.object``) and would otherwise ride along as ``__context__``.
        document: Any = None
        problem: str | None = None
        try:
            document = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problem = "it is not UTF-8 text"
        except json.JSONDecodeError as exc:
            problem = f"not JSON (line {exc.lineno}, column {exc.colno})"
        if problem is not None:
            invalid(problem)
        if not isinstance(document, dict):
            invalid("expected a JSON object")
        entries = document.get("keys")
        if not isinstance(entries, dict) or not entries:
            invalid("'keys' must be a non-empty object of version -> base64 key")
        keys: dict[int, bytes] = {}
        for version_text, key_text in entries.items():
            version = _parse_version(version_text, f"Vault key file {shown}")
            if version in keys:
                invalid(f"key version {version} appears twice")
            if not isinstance(key_text, str):
                invalid(f"key version {version} is not a base64 string")
            keys[version] = _decode_key(key_text, f"Vault key file {shown}, version {version}")
        primary = document.get("primary", max(keys))
        if isinstance(primary, bool) or not isinstance(primary, int):
            invalid("'primary' must be a key version number")
        if primary != max(keys):
            invalid(f"'primary' is {primary} but the highest key version is {max(keys)}")
        return cls(keys, source=shown)

    @property
    def primary_version(self) -> int:
        """The version new encryptions use: always the highest."""
        return max(self._keys)

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    def __contains__(self, version: object) -> bool:
        return version in self._keys

    def key(self, version: int) -> bytes:
        """Key material, for the vault's cipher only. Raises ``KeyError`` for unknown versions."""
        return self._keys[version]

    def with_new_key(self) -> KeyRing:
        """A copy with one more fresh key as the new primary (key rotation)."""
        return KeyRing({**self._keys, self.primary_version + 1: generate_key()}, source=self.source)

    def without(self, version: int) -> KeyRing:
        """A copy without ``version`` (retiring a key no credential uses any more).

        The primary is never removed: new secrets are encrypted with it, and keeping the
        highest version also keeps version numbers from ever being reused."""
        if version not in self._keys:
            raise VaultKeyInvalid(
                f"{self.source}: there is no key version {version} "
                f"(versions: {', '.join(map(str, self.versions))})."
            )
        if version == self.primary_version:
            raise VaultKeysInUse(
                f"Key version {version} is the primary key of {self.source}: new credentials "
                "are encrypted with it. Run `integrations vault rotate` to add a new primary "
                "first."
            )
        return KeyRing({v: k for v, k in self._keys.items() if v != version}, source=self.source)

    def to_file_text(self) -> str:
        """The key file's JSON. Holds key material: write it only through :func:`_write_private`."""
        document = {
            "comment": _FILE_COMMENT,
            "keys": {str(v): encode_key(self._keys[v]) for v in self.versions},
            "primary": self.primary_version,
        }
        return json.dumps(document, indent=2) + "\n"

    def __repr__(self) -> str:
        return (
            f"KeyRing(versions={list(self.versions)}, primary={self.primary_version}, "
            f"source={self.source!r})"
        )

    __str__ = __repr__

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(
            "KeyRing cannot be pickled or copied: pass an integration id and load the vault "
            "inside the task instead."
        )


def load_key_ring(settings: Settings | None = None) -> KeyRing:
    """The configured ring: ``INTEGRATIONS_VAULT_KEYS`` wins when set (non-blank), else the
    key file. Raises :class:`VaultKeyMissing` or :class:`VaultKeyInvalid`."""
    if settings is None:
        from integration_hub.settings import get_settings

        settings = get_settings()
    if keys_from_environment(settings):
        assert settings.vault_keys is not None
        return KeyRing.from_env_value(settings.vault_keys)
    return KeyRing.from_file(settings.key_file)


def keys_from_environment(settings: Settings) -> bool:
    """True when the ring comes from ``INTEGRATIONS_VAULT_KEYS`` (a blank value counts as unset)."""
    return bool(settings.vault_keys and settings.vault_keys.strip())


def _write_private(path: Path, text: str, *, exclusive_target: bool) -> None:
    """Write ``text`` to a file created 0600 from the start (no window with wider permissions).

    With ``exclusive_target`` the target itself is created with O_EXCL (never overwritten);
    otherwise a 0600 temp file beside it is fsynced and moved over it with ``os.replace``,
    so a crash leaves either the old ring or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    target = (
        path if exclusive_target else path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    )
    fd = os.open(target, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if not exclusive_target:
            os.replace(target, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the new directory entry durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def init_key_file(path: Path) -> Path:
    """Create a key file holding one fresh key (version 1), mode 0600.

    Refuses (:class:`VaultKeyExists`) when anything already exists at ``path``: overwriting a
    ring would make every credential encrypted with it unreadable.
    """
    path = Path(path)
    ring = KeyRing.generate(source=display_path(path))
    try:
        _write_private(path, ring.to_file_text(), exclusive_target=True)
    except FileExistsError:
        raise VaultKeyExists(path) from None
    return path


def add_key_version(path: Path) -> int:
    """Append a fresh key as the new primary and return its version (first step of rotation).

    The file is replaced atomically; old versions are kept so existing rows still decrypt.
    Two operators adding a version at the same moment is not guarded against: rotate from one
    place at a time.
    """
    path = Path(path)
    ring = KeyRing.from_file(path).with_new_key()
    _write_private(path, ring.to_file_text(), exclusive_target=False)
    return ring.primary_version


def remove_key_version(path: Path, version: int) -> KeyRing:
    """Drop a retired key version from the key file (atomically) and return what is left.

    The caller checks first that no stored credential still uses it
    (:func:`integration_hub.vault.lifecycle.retire_key_version`)."""
    path = Path(path)
    ring = KeyRing.from_file(path).without(version)
    _write_private(path, ring.to_file_text(), exclusive_target=False)
    return ring
