"""The vault's exceptions.

Every message says what went wrong and what to do, and names only things that are safe to show
(paths, field names, ids, key *versions*). No message, repr or attribute holds a plaintext, key
material or ciphertext, so these can be logged and shown to operators as they are.
"""

from __future__ import annotations

from pathlib import Path


def display_path(path: Path) -> str:
    """A path as the operator typed it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


class VaultError(Exception):
    """Base of everything the vault raises on purpose; the message is safe to show."""


class VaultKeyMissing(VaultError):
    """No key ring configured: neither a key file nor ``INTEGRATIONS_VAULT_KEYS``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"No vault key found at {display_path(path)}. Run `integrations vault init` to "
            "create one, or set INTEGRATIONS_VAULT_KEYS."
        )


class VaultKeyExists(VaultError):
    """``init`` would overwrite a key file, which would make every stored credential unreadable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"A vault key file already exists at {display_path(path)}; refusing to overwrite it "
            "(credentials encrypted with it would become unreadable). Use "
            "`integrations vault rotate` to add a new key version instead."
        )


class VaultKeyInvalid(VaultError):
    """The key file or ``INTEGRATIONS_VAULT_KEYS`` is malformed (message says where and how)."""


class VaultDecryptError(VaultError):
    """A stored credential did not authenticate: wrong key ring, tampering or a moved row."""

    def __init__(self, *, field: str, integration_id: int, reason: str | None = None) -> None:
        self.field = field
        self.integration_id = integration_id
        self.reason = reason or "the key ring does not match or the row was altered"
        """Why, without the row's name (a rotation report names the row itself)."""
        super().__init__(
            f"Credential {field} of integration {integration_id} could not be decrypted: "
            + self.reason
        )


class CredentialNotSet(VaultError):
    """The integration has no stored value for the requested field."""

    def __init__(self, *, field: str, integration_id: int, organisation_id: int) -> None:
        self.field = field
        self.integration_id = integration_id
        self.organisation_id = organisation_id
        super().__init__(
            f"No credential {field} is stored for integration {integration_id} of organisation "
            f"{organisation_id}. Enter it on the integration's settings page."
        )


class VaultEndpointMismatch(VaultError):
    """A secret was asked for on behalf of endpoints other than those it was entered for."""

    def __init__(self, *, field: str, integration_id: int, entered_for: str) -> None:
        self.field = field
        self.integration_id = integration_id
        super().__init__(
            f"Credential {field} of integration {integration_id} was entered for "
            f"{entered_for}; the integration now points elsewhere, so it is not sent there. "
            f"Enter {field} again together with the new address."
        )


class VaultKeysInUse(VaultError):
    """A new key ring, or removing a key version, would leave stored credentials that nothing
    can decrypt any more; the message lists what still needs the keys and what to do."""
