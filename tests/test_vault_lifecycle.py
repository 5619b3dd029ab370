"""The key ring's life through the command line: ``vault rotate`` says which credentials it could
not re-encrypt and fails, ``vault init`` never strands stored credentials, and ``vault retire``
removes a key version only once no credential uses it. SQLite and PostgreSQL (``hub_env``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from factories import seed_organisation
from sqlmodel import select
from typer.testing import CliRunner

from integration_hub.cli import app

SECRETS = {"api_token": "xl-token-0123456789abcdef", "client_secret": "cs-9876543210fedcba"}


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def key_versions() -> dict[str, int]:
    from integration_hub.db import hub_session
    from integration_hub.models import Credential

    with hub_session() as session:
        return {row.field: row.key_version for row in session.exec(select(Credential)).all()}


def reveal(integration_id: int, field: str) -> str:
    from integration_hub.db import hub_session
    from integration_hub.vault import CredentialVault

    with hub_session() as session:
        return CredentialVault.from_settings().reveal(
            session, organisation_id=1, integration_id=integration_id, field=field, purpose="test"
        )


@pytest.fixture
def stored(hub_env: str, vault_key: Path) -> int:
    """Organisation ``bf`` (id 1) with an Xledger integration holding two secrets (key 1)."""
    from integration_hub.db import hub_session
    from integration_hub.models import Integration
    from integration_hub.vault import CredentialVault

    seed_organisation("bf", [])
    with hub_session() as session:
        row = Integration(organisation_id=1, type_key="xledger")
        session.add(row)
        session.flush()
        assert row.id is not None
        for field, value in SECRETS.items():
            CredentialVault.from_settings().store(
                session,
                organisation_id=1,
                integration_id=row.id,
                field=field,
                plaintext=value,
                actor="test",
                endpoint=None,
            )
        return row.id


def test_rotate_names_each_credential_it_could_not_reencrypt_and_exits_non_zero(
    stored: int,
) -> None:
    from integration_hub.db import hub_session
    from integration_hub.models import Credential

    with hub_session() as session:
        row = session.exec(select(Credential).where(Credential.field == "api_token")).one()
        row.ciphertext = bytes(len(row.ciphertext))  # damaged: it will not authenticate
        session.add(row)

    result = invoke("vault", "rotate")
    assert result.exit_code == 1, result.output
    out = result.output
    assert "key version 2 is the primary: 1 credential(s) re-encrypted" in out
    assert "1 credential(s) could not be re-encrypted" in out
    assert (
        f"organisation bf, integration {stored} (xledger), field api_token, key version 1: "
        "the key ring does not match or the row was altered"
    ) in out
    assert "integrations vault rotate --no-new-key" in out
    assert "vault.key now, apart from the database" in out  # the reminder to back it up
    assert "Traceback" not in out
    for value in SECRETS.values():
        assert value not in out and value[-8:] not in out
    assert key_versions() == {"api_token": 1, "client_secret": 2}
    assert reveal(stored, "client_secret") == SECRETS["client_secret"]

    clean = invoke("vault", "rotate", "--no-new-key")
    assert clean.exit_code == 1  # still that one row: the exit code keeps saying so


def test_rotate_that_reencrypts_everything_exits_zero_and_reminds_of_the_backup(
    stored: int,
) -> None:
    result = invoke("vault", "rotate")
    assert result.exit_code == 0, result.output
    assert "2 credential(s) re-encrypted, 0 already used it" in result.output
    assert "Back up " in result.output and "apart from the database" in result.output
    assert key_versions() == {"api_token": 2, "client_secret": 2}


def test_init_refuses_a_new_ring_while_credentials_need_the_old_one(stored: int) -> None:
    from integration_hub.db import hub_session
    from integration_hub.models import AuditEntry
    from integration_hub.settings import get_settings

    key_file = get_settings().key_file
    key_file.unlink()  # lost, or INTEGRATIONS_VAULT_KEY_FILE points somewhere else

    refused = invoke("vault", "init")
    assert refused.exit_code == 2, refused.output
    out = refused.output
    assert "Not creating a new key ring: 2 stored credential(s)" in out
    assert f"organisation 1, integration {stored} (xledger), field api_token, key version 1" in (
        out
    )
    assert "from your backup" in out and "--discard-credentials" in out
    assert "Traceback" not in out
    assert not key_file.exists()
    assert key_versions() == {"api_token": 1, "client_secret": 1}

    discarded = invoke("vault", "init", "--discard-credentials")
    assert discarded.exit_code == 0, discarded.output
    assert key_file.exists() and key_versions() == {}
    with hub_session() as session:
        actions = session.exec(select(AuditEntry.action)).all()
    assert "vault.credentials_discarded" in actions


def test_init_on_a_fresh_hub_creates_the_ring(hub_env: str) -> None:
    from integration_hub.settings import get_settings

    created = invoke("vault", "init")
    assert created.exit_code == 0, created.output
    assert get_settings().key_file.exists()
    assert "Back up " in created.output


def test_a_key_version_is_retired_only_once_no_credential_uses_it(stored: int) -> None:
    from integration_hub.settings import get_settings
    from integration_hub.vault import KeyRing, add_key_version

    key_file = get_settings().key_file

    primary = invoke("vault", "retire", "1")
    assert primary.exit_code == 2 and "is the primary key" in primary.output

    add_key_version(key_file)  # a new primary, the credentials not re-encrypted yet
    before = key_file.read_bytes()
    in_use = invoke("vault", "retire", "1")
    assert in_use.exit_code == 2, in_use.output
    assert "Key version 1 is still used by 2 stored credential(s)" in in_use.output
    named = f"integration {stored} (xledger), field client_secret, key version 1"
    assert named in in_use.output
    assert "integrations vault rotate --no-new-key" in in_use.output
    assert key_file.read_bytes() == before

    assert invoke("vault", "rotate", "--no-new-key").exit_code == 0
    retired = invoke("vault", "retire", "1")
    assert retired.exit_code == 0, retired.output
    assert "removed key version 1" in retired.output and "versions left: 2" in retired.output
    assert KeyRing.from_file(key_file).versions == (2,)
    assert reveal(stored, "api_token") == SECRETS["api_token"]

    unknown = invoke("vault", "retire", "1")
    assert unknown.exit_code == 2 and "there is no key version 1" in unknown.output


def test_retiring_a_key_from_the_environment_says_what_to_remove(
    stored: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integration_hub.settings import get_settings, reset_settings
    from integration_hub.vault import KeyRing, encode_key

    ring = KeyRing.from_file(get_settings().key_file)
    new_key = encode_key(b"\x01" * 32)
    value = f"1:{encode_key(ring.key(1))},2:{new_key}"
    monkeypatch.setenv("INTEGRATIONS_VAULT_KEYS", value)
    reset_settings()

    assert invoke("vault", "retire", "1").exit_code == 2  # the credentials use it
    assert invoke("vault", "rotate", "--no-new-key").exit_code == 0
    told = invoke("vault", "retire", "1")
    assert told.exit_code == 0, told.output
    assert "remove it from INTEGRATIONS_VAULT_KEYS (keep versions 2)" in told.output
    assert new_key not in told.output
