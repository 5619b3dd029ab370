"""``integrations demo`` as a user runs it, then a search for the credential's plaintext: it
must be nowhere, not in the database, Prefect's storage, the output or the logs (DESIGN
invariant 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import MetaData, select
from sqlmodel import Session

from integration_hub.db import hub_engine
from integration_hub.models import Credential
from integration_hub.settings import get_settings
from integration_hub.vault import CredentialVault


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_demo_exports_and_leaks_no_plaintext(hub_env: str, prefect_harness: Path) -> None:
    import prefect.settings

    env = {
        **os.environ,
        "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value()),
        "PREFECT_LOGGING_LEVEL": "DEBUG",
    }
    result = subprocess.run(
        [sys.executable, "-m", "integration_hub.cli", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Export to Xledger: run 1 partial" in output
    assert "Traceback" not in output

    vault = CredentialVault.from_settings()
    with Session(hub_engine()) as session:
        secrets = [
            vault.reveal(
                session,
                organisation_id=c.organisation_id,
                integration_id=c.integration_id,
                field=c.field,
                purpose="leak test",
                endpoint=c.endpoint,
            )
            for c in session.query(Credential).all()
        ]
    # Xledger's API token, Business Central's client secret, both organisations' Bufdir secrets
    assert len(secrets) == 4
    metadata = MetaData()
    metadata.reflect(hub_engine())
    with hub_engine().connect() as connection:
        rows = [
            (table.name, repr(tuple(row)))
            for table in metadata.sorted_tables
            for row in connection.execute(select(table))
        ]
    for secret in secrets:
        assert len(secret) >= 16
        assert f"••••••{secret[-4:]}" in output  # shown masked by the wizard
        assert secret not in output  # CLI output, Prefect's DEBUG logs on stderr included
        assert _files_containing(get_settings().var_dir, secret.encode()) == []
        assert _files_containing(prefect_harness, secret.encode()) == []  # Prefect's storage
        assert [name for name, text in rows if secret in text] == []

    # After the demo its sandboxes are gone; `sandbox serve --demo` rebuilds them from the
    # hub's own configuration (secrets from the vault, nothing written elsewhere) on the ports
    # the integrations point at, and every integration connects again.
    from integration_hub.demo import DEMO_INTEGRATIONS, demo_sandboxes
    from integration_hub.sandbox.server import start_server
    from integration_hub.services import configuration as config

    sandboxes = demo_sandboxes()
    assert sorted(what for what, _app in sandboxes.values()) == [
        "Bufdir (stand-in)",
        "Business Central",
        "Xledger",
    ]
    running = [start_server(app, "127.0.0.1", port) for port, (_what, app) in sandboxes.items()]
    try:
        for slug, type_key in DEMO_INTEGRATIONS:
            row = config.integration(config.organisation(slug), type_key, config.OPERATOR)
            result = config.test_connection(row, config.Actor("test"))
            assert result.ok, (slug, type_key, result)
    finally:
        for server in running:
            server.stop()
    for secret in secrets:
        assert _files_containing(get_settings().var_dir, secret.encode()) == []
