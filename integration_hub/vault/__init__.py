"""The credential vault: integration secrets encrypted at rest, revealed only inside adapters.

- :class:`CredentialVault` stores, reveals (audited), masks, deletes and rotates credentials.
- :mod:`~integration_hub.vault.keyring`: the key ring, the key file, ``INTEGRATIONS_VAULT_KEYS``.
- :mod:`~integration_hub.vault.lifecycle`: creating the ring and retiring key versions, never
  while stored credentials still need the keys.
- :func:`is_mask`, :func:`mask`, :func:`redact`: what pages, forms and error paths use so that
  no plaintext ever leaves (invariant 2 in ``DESIGN.md``).
"""

from integration_hub.vault.credentials import (
    CredentialVault,
    RotationReport,
    associated_data,
    rotate_key_file,
)
from integration_hub.vault.errors import (
    CredentialNotSet,
    VaultDecryptError,
    VaultEndpointMismatch,
    VaultError,
    VaultKeyExists,
    VaultKeyInvalid,
    VaultKeyMissing,
)
from integration_hub.vault.keyring import (
    KeyRing,
    add_key_version,
    encode_key,
    generate_key,
    init_key_file,
    keys_from_environment,
    load_key_ring,
)
from integration_hub.vault.masking import BULLET, REDACTED, hint_for, is_mask, mask, redact

__all__ = [
    "BULLET",
    "REDACTED",
    "CredentialNotSet",
    "CredentialVault",
    "KeyRing",
    "RotationReport",
    "VaultDecryptError",
    "VaultEndpointMismatch",
    "VaultError",
    "VaultKeyExists",
    "VaultKeyInvalid",
    "VaultKeyMissing",
    "add_key_version",
    "associated_data",
    "encode_key",
    "generate_key",
    "hint_for",
    "init_key_file",
    "is_mask",
    "keys_from_environment",
    "load_key_ring",
    "mask",
    "redact",
    "rotate_key_file",
]
