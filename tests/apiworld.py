"""Helpers for the REST API tests: bearer tokens from a test identity provider, a configured
Xledger integration, and a snapshot of everything an organisation's integrations hold, to prove
that a refused request changed nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import configure_xledger

API = "/api/v1"
IDP_ISSUER = "https://idp.frivillig.test"
READ_AUDITS = {"credential.used"}


def integration_url(org: str, type_key: str = "xledger", tail: str = "") -> str:
    return f"{API}/organisations/{org}/integrations/{type_key}{tail}"


def use_test_idp(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the hub trust a fresh EC key as the identity provider's; returns the private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from integration_hub.settings import reset_settings

    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("INTEGRATIONS_IDP_PUBLIC_KEY", public_pem.decode())
    monkeypatch.setenv("INTEGRATIONS_IDP_ISSUER", IDP_ISSUER)
    reset_settings()
    return private


def bearer(private: Any, **claims: Any) -> dict[str, str]:
    """The Authorization header of a token the test identity provider signed."""
    import jwt

    body = {
        "sub": "user-17",
        "iss": IDP_ISSUER,
        "aud": "integration-hub",
        "exp": datetime.now(UTC) + timedelta(minutes=5),
        **claims,
    }
    return {"Authorization": f"Bearer {jwt.encode(body, private, algorithm='ES256')}"}


def configured_xledger(web: Any, org: str, **options: Any) -> tuple[Any, str]:
    """``org``'s Xledger integration pointed at a fresh sandbox company: (row, its token)."""
    token = web.xledger_company(org)
    return configure_xledger(org, web.sandbox_url, token, **options), token


def snapshot(organisation_id: int, *, every_audit: bool = False) -> dict[str, Any]:
    """Everything the organisation's integrations hold, comparable before and after.

    Reading a secret to ask the target (e.g. checking a mapping against its codes) is audited
    too; ``every_audit`` False leaves those read records out, to compare what was changed."""
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import (
        AuditEntry,
        Credential,
        Exclusion,
        FieldMapping,
        Integration,
        SyncRun,
        SyncSchedule,
    )

    with hub_session() as session:
        rows = session.exec(
            select(Integration).where(Integration.organisation_id == organisation_id)
        ).all()
        ids = [r.id for r in rows]

        def of(model: Any) -> list[Any]:
            return list(session.exec(select(model).where(model.integration_id.in_(ids))).all())

        return {
            "integrations": sorted(
                (
                    r.id,
                    r.type_key,
                    r.status,
                    r.setup_step,
                    repr(r.settings),
                    r.last_test_status,
                    r.last_test_at,
                    r.updated_at,
                )
                for r in rows
            ),
            "credentials": sorted((c.field, c.ciphertext, c.key_version) for c in of(Credential)),
            "mappings": sorted((m.integration_id, m.version) for m in of(FieldMapping)),
            "schedules": sorted(
                (s.integration_id, s.cron, s.timezone, s.enabled) for s in of(SyncSchedule)
            ),
            "exclusions": sorted((e.integration_id, e.category) for e in of(Exclusion)),
            "runs": sorted((r.id, r.status, r.exported, r.failed) for r in of(SyncRun)),
            "audit": [
                (e.id, e.action)
                for e in session.exec(
                    select(AuditEntry)
                    .where(AuditEntry.organisation_id == organisation_id)
                    .order_by(AuditEntry.id)
                ).all()
                if every_audit or e.action not in READ_AUDITS
            ],
        }
