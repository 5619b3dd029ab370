"""The key ring's life: create it once, and retire old key versions when nothing needs them.

Both steps can lose every stored credential if done at the wrong moment, so both look at the
``hub_credentials`` table first:

- :func:`init_key_ring` (``integrations vault init``) refuses to create a new ring while
  credentials encrypted under another ring are stored: a new ring cannot decrypt them, and they
  would be stranded. Putting the old ring back is the fix; when it is lost for good, the
  operator can discard those credentials explicitly and have them entered again.
- :func:`retire_key_version` (``integrations vault retire``) removes a key version only when no
  credential uses it any more (after ``integrations vault rotate`` moved them all).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, inspect
from sqlmodel import col, delete, select

from integration_hub.models.hub import AuditEntry, Credential, Integration
from integration_hub.vault.credentials import SessionFactory, credential_label
from integration_hub.vault.errors import VaultKeyExists, VaultKeysInUse
from integration_hub.vault.errors import display_path as shown
from integration_hub.vault.keyring import (
    ENV_VAR,
    init_key_file,
    keys_from_environment,
    load_key_ring,
    remove_key_version,
)

if TYPE_CHECKING:
    from integration_hub.settings import Settings

LISTED_ROWS = 10
"""How many credentials a refusal names; the count says how many there are in all."""


@dataclass(frozen=True)
class Retired:
    """What :func:`retire_key_version` did."""

    version: int
    remaining: tuple[int, ...]
    source: str
    written: bool
    """False when the keys come from ``INTEGRATIONS_VAULT_KEYS``: the operator removes the
    version there (the hub never writes the environment)."""


def _defaults(
    settings: Settings | None, session_factory: SessionFactory | None
) -> tuple[Settings, SessionFactory]:
    if settings is None:
        from integration_hub.settings import get_settings

        settings = get_settings()
    if session_factory is None:
        from integration_hub.db import hub_session

        session_factory = hub_session
    return settings, session_factory


def key_version_usage(session_factory: SessionFactory) -> dict[int, int]:
    """Key version -> how many stored credentials are encrypted with it (empty before the hub
    database has its schema: then nothing is stored)."""
    with session_factory() as session:
        if not inspect(session.connection()).has_table(Credential.__tablename__):
            return {}
        rows = session.exec(
            select(Credential.key_version, func.count()).group_by(col(Credential.key_version))
        ).all()
    return {int(version): int(count) for version, count in rows}


def _credentials_using(session_factory: SessionFactory, versions: set[int]) -> list[str]:
    """The first :data:`LISTED_ROWS` credentials under ``versions``, named, never revealed."""
    with session_factory() as session:
        rows = session.exec(
            select(Credential, Integration.type_key)
            .join(Integration, col(Integration.id) == col(Credential.integration_id))
            .where(col(Credential.key_version).in_(versions))
            .order_by(col(Credential.id))
            .limit(LISTED_ROWS)
        ).all()
    return [
        credential_label(
            row.organisation_id, row.integration_id, type_key, row.field, row.key_version
        )
        for row, type_key in rows
    ]


def _listing(session_factory: SessionFactory, versions: set[int], total: int) -> str:
    named = _credentials_using(session_factory, versions)
    more = f"\n  ... and {total - len(named)} more" if total > len(named) else ""
    return "".join(f"\n  {label}" for label in named) + more


def init_key_ring(
    settings: Settings | None = None,
    *,
    discard_credentials: bool = False,
    session_factory: SessionFactory | None = None,
    actor: str = "cli",
) -> Path:
    """``integrations vault init``: write a new key file, unless that would strand credentials.

    Stored credentials mean a ring already exists somewhere (a lost or misplaced key file, or
    ``INTEGRATIONS_VAULT_KEYS``); a new ring cannot decrypt them, so this refuses
    (:class:`VaultKeysInUse`) and says how to put the old ring back. With
    ``discard_credentials`` (the old ring is lost for good) the stored credentials are deleted
    first, audited, and have to be entered again.
    """
    settings, session_factory = _defaults(settings, session_factory)
    path = settings.key_file
    if path.exists():
        raise VaultKeyExists(path)
    usage = key_version_usage(session_factory)
    total = sum(usage.values())
    if total and not discard_credentials:
        versions = ", ".join(map(str, sorted(usage)))
        raise VaultKeysInUse(
            f"Not creating a new key ring: {total} stored credential(s) are encrypted with key "
            f"version(s) {versions} of another ring, and a new ring could not decrypt them:"
            f"{_listing(session_factory, set(usage), total)}\n"
            f"Put that ring back at {shown(path)} from your backup (or set {ENV_VAR} to its "
            "keys). If it is lost for good, those credentials cannot be "
            "recovered: `integrations vault init --discard-credentials` deletes them and creates "
            "a new ring; then enter them again in the setup wizard."
        )
    if total:
        with session_factory() as session:
            session.exec(delete(Credential))
            session.add(
                AuditEntry(
                    actor=actor,
                    action="vault.credentials_discarded",
                    details={"credentials": total, "key_versions": sorted(usage)},
                )
            )
    return init_key_file(path)


def retire_key_version(
    version: int,
    settings: Settings | None = None,
    *,
    session_factory: SessionFactory | None = None,
    actor: str = "cli",
) -> Retired:
    """``integrations vault retire VERSION``: remove a key version no credential uses any more.

    Refused (:class:`VaultKeysInUse`) for the primary and while any stored credential is still
    encrypted with ``version``; ``integrations vault rotate --no-new-key`` moves them to the
    primary first. A process started before the last rotation may still hold ``version`` as its
    primary, so restart the long-running ones (``serve``, ``web``) before retiring.
    """
    settings, session_factory = _defaults(settings, session_factory)
    ring = load_key_ring(settings)
    remaining = ring.without(version)  # refuses an unknown version and the primary
    used = key_version_usage(session_factory).get(version, 0)
    if used:
        raise VaultKeysInUse(
            f"Key version {version} is still used by {used} stored credential(s):"
            f"{_listing(session_factory, {version}, used)}\n"
            "Run `integrations vault rotate --no-new-key` to re-encrypt them with the primary "
            f"key (version {ring.primary_version}), then retire version {version}. A credential "
            "the rotation cannot decrypt has to be entered again first."
        )
    if keys_from_environment(settings):
        return Retired(version, remaining.versions, ENV_VAR, written=False)
    remaining = remove_key_version(settings.key_file, version)
    with session_factory() as session:
        session.add(
            AuditEntry(
                actor=actor,
                action="vault.key_retired",
                details={"key_version": version, "remaining": list(remaining.versions)},
            )
        )
    return Retired(version, remaining.versions, shown(settings.key_file), written=True)
