"""The credential vault: encrypt, store, reveal, mask and rotate integration secrets.

Format of one ``hub_credentials`` row: AES-256-GCM under key ``key_version`` of the ring, a fresh
random 96-bit ``nonce`` per encryption, and associated data (see :func:`associated_data`) binding
the ciphertext to organisation, integration, field and key version. A row copied to another
tenant, integration or field, or with its ``key_version`` edited, therefore fails to decrypt
instead of handing one organisation's secret to another.

All methods take a ``Session`` from the caller, who owns the transaction (except :meth:`rotate`,
which commits in batches by design). Plaintext leaves only through :meth:`reveal` and
:meth:`reveal_all`, each of which writes an audit entry; nothing here logs or raises with a value.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from sqlalchemy import func
from sqlmodel import Session, col, select, update

from integration_hub.models.hub import AuditEntry, Credential, Integration, utcnow
from integration_hub.vault.errors import (
    CredentialNotSet,
    VaultDecryptError,
    VaultEndpointMismatch,
    VaultError,
)
from integration_hub.vault.keyring import (
    ENV_VAR,
    KeyRing,
    add_key_version,
    keys_from_environment,
    load_key_ring,
)
from integration_hub.vault.masking import hint_for, is_mask, mask

if TYPE_CHECKING:
    from integration_hub.settings import Settings

log = logging.getLogger(__name__)

NONCE_BYTES = 12
"""96 bits, the size GCM is specified for; random per encryption."""
AD_PREFIX = "ih-cred|v1"
"""Format tag of the associated data; bump it if the binding ever changes."""
AD_PREFIX_ENDPOINT = "ih-cred|v2"
"""The format that also binds the endpoints the secret was entered for."""
DEFAULT_BATCH_SIZE = 100
_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,59}")

SessionFactory = Callable[[], AbstractContextManager[Session]]

_USES_LOGGED_ONLY: ContextVar[bool] = ContextVar("vault_uses_logged_only", default=False)


@contextmanager
def uses_logged_only() -> Iterator[None]:
    """Within the block, :meth:`CredentialVault.reveal` and :meth:`~CredentialVault.reveal_all`
    record each use in the log (INFO: who, which field, why) instead of the audit table.

    Only for reads that show something and send nothing but the request for it, such as the
    target's chart of accounts on the mapping page: a GET must change nothing, the audit log
    included. Everything that sends data or changes configuration stays audited in the table.
    """
    token = _USES_LOGGED_ONLY.set(True)
    try:
        yield
    finally:
        _USES_LOGGED_ONLY.reset(token)


def associated_data(
    *,
    organisation_id: int,
    integration_id: int,
    field: str,
    key_version: int,
    endpoint: str | None = None,
) -> bytes:
    """What a ciphertext is bound to; GCM authenticates it, so a moved or edited row fails.

    ``endpoint`` (:func:`integration_hub.adapters.endpoints.binding`) binds the secret to the
    endpoints it was entered for, so a row whose endpoint was edited does not decrypt either.
    Rows stored before that (``endpoint`` unset) keep the v1 format."""
    base = (
        f"org={int(organisation_id)}|int={int(integration_id)}|field={field}|key={int(key_version)}"
    )
    if endpoint is None:
        return f"{AD_PREFIX}|{base}".encode()
    return f"{AD_PREFIX_ENDPOINT}|{base}|endpoint={endpoint}".encode()


def _check_endpoint(row: Credential, endpoint: str | None) -> None:
    """A secret bound to endpoints goes only there (rows from before the binding: anywhere
    the configuration service allowed)."""
    if row.endpoint is not None and row.endpoint != endpoint:
        raise VaultEndpointMismatch(
            field=row.field, integration_id=row.integration_id, entered_for=row.endpoint
        )


def _check_field(field: str) -> None:
    """Field names are identifiers (config attribute names), which keeps the binding unambiguous."""
    if not isinstance(field, str) or not _FIELD_RE.fullmatch(field):
        raise ValueError(
            "A credential field name must be an identifier of at most 60 characters "
            "(letters, digits, underscore)."
        )


def credential_label(
    organisation: int | str, integration_id: int, integration_type: str, field: str, version: int
) -> str:
    """How reports name one stored credential for an operator: where it belongs, never what
    it holds."""
    return (
        f"organisation {organisation}, integration {integration_id} ({integration_type}), "
        f"field {field}, key version {version}"
    )


@dataclass(frozen=True)
class RotationFailure:
    """A credential that could not be re-encrypted: which row, never its value.

    It still holds its old ciphertext under its old key version, so that version must stay in
    the ring until the row is entered again (or the right ring is restored)."""

    organisation_id: int
    integration_id: int
    integration_type: str
    field: str
    key_version: int
    reason: str
    """The vault's own message (:class:`VaultDecryptError`), which names no secret."""

    def label(self, organisation: str | None = None) -> str:
        """``organisation hlf, integration 7 (xledger), field api_token, key version 1``;
        ``organisation`` is the organisation's name where the caller knows it."""
        return credential_label(
            organisation or self.organisation_id,
            self.integration_id,
            self.integration_type,
            self.field,
            self.key_version,
        )

    def __str__(self) -> str:
        return self.label()


@dataclass(frozen=True)
class RotationReport:
    """What a rotation did; counts and names only."""

    primary_version: int
    rotated: int = 0
    already_current: int = 0
    failed: tuple[RotationFailure, ...] = field(default=())
    """The rows that did not decrypt, so were left as they were."""

    @property
    def complete(self) -> bool:
        return not self.failed


class CredentialVault:
    """Encrypts and decrypts credential rows with a :class:`KeyRing`.

    Build it with :meth:`from_settings` in services, or from a ring in tests. Built from
    settings, it re-reads the ring once when it meets a key version it does not know, so a
    long-running process keeps working after another process rotated the keys.
    """

    def __init__(self, ring: KeyRing, *, reload: Callable[[], KeyRing] | None = None) -> None:
        self._ring = ring
        self._reload = reload

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> CredentialVault:
        """Load the configured ring; raises ``VaultKeyMissing`` / ``VaultKeyInvalid``."""
        return cls(load_key_ring(settings), reload=lambda: load_key_ring(settings))

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def __repr__(self) -> str:
        return f"CredentialVault({self._ring!r})"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(
            "CredentialVault cannot be pickled: pass the integration id and open the vault "
            "inside the task."
        )

    # -- cipher ---------------------------------------------------------------------------

    def _encrypt(
        self,
        *,
        organisation_id: int,
        integration_id: int,
        field: str,
        plaintext: str,
        endpoint: str | None,
    ) -> tuple[int, bytes, bytes]:
        """(key_version, nonce, ciphertext) under the primary key with a fresh nonce."""
        version = self._ring.primary_version
        nonce = os.urandom(NONCE_BYTES)
        ad = associated_data(
            organisation_id=organisation_id,
            integration_id=integration_id,
            field=field,
            key_version=version,
            endpoint=endpoint,
        )
        ciphertext = AESGCM(self._ring.key(version)).encrypt(nonce, plaintext.encode(), ad)
        return version, nonce, ciphertext

    def _decrypt(self, row: Credential, *, organisation_id: int) -> str:
        """Authenticate and decrypt one row as belonging to ``organisation_id``."""
        version = row.key_version
        if version not in self._ring and self._reload is not None:
            self._try_reload()
        if version not in self._ring:
            raise VaultDecryptError(
                field=row.field,
                integration_id=row.integration_id,
                reason=(
                    f"it was encrypted with key version {version}, which is not in the key ring "
                    f"({self._ring.source}, versions {list(self._ring.versions)})"
                ),
            )
        ad = associated_data(
            organisation_id=organisation_id,
            integration_id=row.integration_id,
            field=row.field,
            key_version=version,
            endpoint=row.endpoint,
        )
        try:
            if len(row.nonce) != NONCE_BYTES:
                raise InvalidTag
            plaintext = AESGCM(self._ring.key(version)).decrypt(row.nonce, row.ciphertext, ad)
            return plaintext.decode("utf-8")
        except (InvalidTag, ValueError, TypeError):
            log.warning(
                "credential %s of integration %s failed authentication (key version %s)",
                row.field,
                row.integration_id,
                version,
            )
            raise VaultDecryptError(field=row.field, integration_id=row.integration_id) from None

    def _try_reload(self) -> None:
        """Pick up keys added by a rotation in another process; keep the old ring on failure."""
        assert self._reload is not None
        try:
            self._ring = self._reload()
        except VaultError as exc:
            log.warning("could not reload the vault key ring: %s", exc)

    # -- per-integration operations --------------------------------------------------------

    @staticmethod
    def _row(session: Session, integration_id: int, field: str) -> Credential | None:
        return session.exec(
            select(Credential).where(
                Credential.integration_id == integration_id, Credential.field == field
            )
        ).first()

    def store(
        self,
        session: Session,
        *,
        organisation_id: int,
        integration_id: int,
        field: str,
        plaintext: str | SecretStr,
        actor: str,
        endpoint: str | None,
    ) -> None:
        """Encrypt and upsert one secret, and audit it (the field name, never the value).

        ``endpoint`` is where the secret may be sent (:func:`~integration_hub.adapters.
        endpoints.binding`; None for a secret that is itself the destination, such as a
        webhook URL): it is bound into the ciphertext, and :meth:`reveal` refuses the secret
        for any other endpoint.

        Refuses an empty value or a mask (``••••••3f9a``): a form posted back unchanged must
        not overwrite the real secret. Use :meth:`delete` to remove one.
        """
        _check_field(field)
        value = plaintext.get_secret_value() if isinstance(plaintext, SecretStr) else plaintext
        if not value:
            raise ValueError(f"Refusing to store an empty value as credential {field}.")
        if is_mask(value):
            raise ValueError(
                f"Refusing to store a mask as credential {field}: skip unchanged masked fields."
            )
        integration = session.get(Integration, integration_id)
        if integration is None:
            raise VaultError(f"Integration {integration_id} does not exist.")
        if integration.organisation_id != organisation_id:
            raise VaultError(
                f"Integration {integration_id} does not belong to organisation {organisation_id}."
            )
        version, nonce, ciphertext = self._encrypt(
            organisation_id=organisation_id,
            integration_id=integration_id,
            field=field,
            plaintext=value,
            endpoint=endpoint,
        )
        row = self._row(session, integration_id, field)
        action = "credential.replaced" if row is not None else "credential.set"
        if row is None:
            row = Credential(
                organisation_id=organisation_id,
                integration_id=integration_id,
                field=field,
                key_version=version,
                nonce=nonce,
                ciphertext=ciphertext,
                hint=hint_for(value),
                endpoint=endpoint,
            )
        else:
            row.organisation_id = organisation_id
            row.key_version = version
            row.nonce = nonce
            row.ciphertext = ciphertext
            row.hint = hint_for(value)
            row.endpoint = endpoint
            row.updated_at = utcnow()
        session.add(row)
        session.add(
            AuditEntry(
                actor=actor,
                organisation_id=organisation_id,
                integration_id=integration_id,
                action=action,
                details={"field": field},
            )
        )
        session.flush()

    def reveal(
        self,
        session: Session,
        *,
        organisation_id: int,
        integration_id: int,
        field: str,
        purpose: str,
        actor: str = "system",
        endpoint: str | None = None,
    ) -> str:
        """PLAINTEXT for an adapter at request time, audited as ``credential.used``.

        ``endpoint`` is where it is about to be sent; a secret entered for other endpoints is
        refused (:class:`VaultEndpointMismatch`). Never return the result to a page, API, CLI,
        log, exception or Prefect parameter. Raises :class:`CredentialNotSet` or
        :class:`VaultDecryptError`.
        """
        if not purpose.strip():
            raise ValueError("reveal() needs a purpose, recorded in the audit log.")
        row = session.exec(
            select(Credential).where(
                Credential.organisation_id == organisation_id,
                Credential.integration_id == integration_id,
                Credential.field == field,
            )
        ).first()
        if row is None:
            raise CredentialNotSet(
                field=field, integration_id=integration_id, organisation_id=organisation_id
            )
        _check_endpoint(row, endpoint)
        value = self._decrypt(row, organisation_id=organisation_id)
        self._audit_use(session, organisation_id, integration_id, field, purpose, actor)
        return value

    def reveal_all(
        self,
        session: Session,
        *,
        organisation_id: int,
        integration_id: int,
        purpose: str,
        actor: str = "system",
        endpoint: str | None = None,
    ) -> dict[str, str]:
        """PLAINTEXT of every stored field of one integration; one ``credential.used`` entry per
        field. Missing fields are simply absent (the adapter's config model reports them)."""
        if not purpose.strip():
            raise ValueError("reveal_all() needs a purpose, recorded in the audit log.")
        rows = session.exec(
            select(Credential)
            .where(
                Credential.organisation_id == organisation_id,
                Credential.integration_id == integration_id,
            )
            .order_by(col(Credential.field))
        ).all()
        for row in rows:
            _check_endpoint(row, endpoint)
        values = {row.field: self._decrypt(row, organisation_id=organisation_id) for row in rows}
        for name in values:
            self._audit_use(session, organisation_id, integration_id, name, purpose, actor)
        return values

    @staticmethod
    def _audit_use(
        session: Session,
        organisation_id: int,
        integration_id: int,
        field: str,
        purpose: str,
        actor: str,
    ) -> None:
        if _USES_LOGGED_ONLY.get():
            log.info(
                "credential %s of integration %s used by %s for %s (read-only request: logged, "
                "not stored)",
                field,
                integration_id,
                actor,
                purpose,
            )
            return
        session.add(
            AuditEntry(
                actor=actor,
                organisation_id=organisation_id,
                integration_id=integration_id,
                action="credential.used",
                details={"field": field, "purpose": purpose},
            )
        )
        session.flush()

    @staticmethod
    def masked(session: Session, *, integration_id: int) -> dict[str, str]:
        """Field -> mask (``••••••3f9a``) for pages and the CLI; reads hints, never decrypts."""
        rows = session.exec(
            select(Credential.field, Credential.hint)
            .where(Credential.integration_id == integration_id)
            .order_by(col(Credential.field))
        ).all()
        return {name: mask(hint) for name, hint in rows}

    @staticmethod
    def delete(session: Session, *, integration_id: int, field: str, actor: str) -> bool:
        """Remove one secret and audit ``credential.deleted``; False when there was none."""
        row = CredentialVault._row(session, integration_id, field)
        if row is None:
            return False
        session.delete(row)
        session.add(
            AuditEntry(
                actor=actor,
                organisation_id=row.organisation_id,
                integration_id=integration_id,
                action="credential.deleted",
                details={"field": field},
            )
        )
        session.flush()
        return True

    # -- rotation -------------------------------------------------------------------------

    def rotate(
        self,
        session_factory: SessionFactory,
        *,
        actor: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> RotationReport:
        """Re-encrypt every row not under the primary key, one transaction per batch.

        An interruption leaves each row either old (still decryptable: old keys stay in the
        ring) or new, so re-running finishes the job. Rows that fail to decrypt are skipped and
        listed in the report instead of blocking the rest. Ends with one ``vault.rotated``
        audit entry.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        primary = self._ring.primary_version
        with session_factory() as session:
            already_current = session.exec(
                select(func.count())
                .select_from(Credential)
                .where(Credential.key_version == primary)
            ).one()
        rotated = 0
        failed: list[RotationFailure] = []
        after_id = 0
        while True:
            with session_factory() as session:
                last_id, done, failures = self._rotate_batch(session, after_id, batch_size)
            rotated += done
            failed.extend(failures)
            if last_id is None:
                break
            after_id = last_id
        report = RotationReport(
            primary_version=primary,
            rotated=rotated,
            already_current=int(already_current),
            failed=tuple(failed),
        )
        with session_factory() as session:
            session.add(
                AuditEntry(
                    actor=actor,
                    action="vault.rotated",
                    details={
                        "primary_version": primary,
                        "rotated": report.rotated,
                        "already_current": report.already_current,
                        "failed": len(report.failed),
                    },
                )
            )
        log.info(
            "vault rotation to key version %s: %s rotated, %s already current, %s failed",
            primary,
            report.rotated,
            report.already_current,
            len(report.failed),
        )
        return report

    def _rotate_batch(
        self, session: Session, after_id: int, batch_size: int
    ) -> tuple[int | None, int, list[RotationFailure]]:
        """Re-encrypt up to ``batch_size`` stale rows with id > ``after_id``.

        Returns (last id seen or None when nothing was left, rows rotated, rows that failed).
        Each update is conditional on the nonce read, so a secret replaced meanwhile by
        :meth:`store` is never overwritten with its old value.
        """
        primary = self._ring.primary_version
        rows = session.exec(
            select(Credential)
            .where(col(Credential.id) > after_id, Credential.key_version != primary)
            .order_by(col(Credential.id))
            .limit(batch_size)
        ).all()
        if not rows:
            return None, 0, []
        rotated = 0
        failures: list[RotationFailure] = []
        for row in rows:
            try:
                value = self._decrypt(row, organisation_id=row.organisation_id)
            except VaultDecryptError as exc:
                integration = session.get(Integration, row.integration_id)
                failures.append(
                    RotationFailure(
                        organisation_id=row.organisation_id,
                        integration_id=row.integration_id,
                        integration_type=integration.type_key if integration else "?",
                        field=row.field,
                        key_version=row.key_version,
                        reason=exc.reason,
                    )
                )
                continue
            version, nonce, ciphertext = self._encrypt(
                organisation_id=row.organisation_id,
                integration_id=row.integration_id,
                field=row.field,
                plaintext=value,
                endpoint=row.endpoint,
            )
            result = session.exec(
                update(Credential)
                .where(
                    col(Credential.id) == row.id,
                    Credential.key_version == row.key_version,
                    col(Credential.nonce) == row.nonce,
                )
                .values(key_version=version, nonce=nonce, ciphertext=ciphertext)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                rotated += 1
        last_id = rows[-1].id
        assert last_id is not None
        return last_id, rotated, failures


def rotate_key_file(
    settings: Settings | None = None,
    *,
    new_key: bool = True,
    actor: str = "cli",
    session_factory: SessionFactory | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> RotationReport:
    """``integrations vault rotate``: add a key version to the key file, reload, re-encrypt.

    With ``new_key=False`` (``--no-new-key``) only re-encrypts under the current primary, which
    is the way when the keys come from ``INTEGRATIONS_VAULT_KEYS``: the hub never writes that.
    Old key versions must stay in the ring until every process runs with the new one.
    """
    if settings is None:
        from integration_hub.settings import get_settings

        settings = get_settings()
    if new_key:
        if keys_from_environment(settings):
            raise VaultError(
                f"The vault keys come from {ENV_VAR}, so there is no key file to add a version "
                f"to. Add a new version to {ENV_VAR} (e.g. '...,3:<new base64 key>'), keep the "
                "old ones, restart the services, then re-run with --no-new-key."
            )
        add_key_version(settings.key_file)
    if session_factory is None:
        from integration_hub.db import hub_session

        session_factory = hub_session
    vault = CredentialVault.from_settings(settings)
    return vault.rotate(session_factory, actor=actor, batch_size=batch_size)
