"""Small builders for test data shared by several test modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from integration_hub.tasks.extract import CATEGORY_LABELS, CLAIM_COLUMNS


def claims_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A claims DataFrame shaped like extract's output; unspecified fields get defaults."""
    defaults: dict[str, Any] = {
        "version": 1,
        "volunteer_id": 1,
        "category": "travel",
        "amount_ore": 10000,
        "distance_km": None,
        "description": "Tog til samling",
        "expense_date": "2026-01-10",
        "approved_date": "2026-01-12",
        "volunteer_name": "Kari Nordmann",
        "employee_number": "1001",
        "supplier_number": None,
        "chapter_code": "OSL",
        "chapter_name": "Oslo lokallag",
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows]).astype(CLAIM_COLUMNS)
    frame["category_label"] = frame["category"].map(CATEGORY_LABELS).astype("string")
    return frame


def seed_organisation(slug: str, claims: list[dict[str, Any]]) -> int:
    """An organisation with one chapter, volunteers 1001..1003 (and one without a number) and
    the given claims in the app database; returns the organisation id."""
    from datetime import UTC, date, datetime

    from integration_hub.db import app_session
    from integration_hub.models import Chapter, ExpenseClaim, Organisation, Volunteer

    with app_session() as session:
        org = Organisation(slug=slug, name=slug.title(), org_number="999888777")
        session.add(org)
        session.flush()
        chapter = Chapter(
            organisation_id=org.id or 0, code="OSL", name="Oslo", municipality_number="0301"
        )
        session.add(chapter)
        session.flush()
        volunteers = {}
        for number in ("1001", "1002", "1003", None):
            volunteer = Volunteer(
                organisation_id=org.id or 0,
                chapter_id=chapter.id or 0,
                name=f"Frivillig {number or 'uten nummer'}",
                employee_number=number,
            )
            session.add(volunteer)
            session.flush()
            volunteers[number] = volunteer.id
        for claim in claims:
            approved = claim.get("approved_at", datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
            session.add(
                ExpenseClaim(
                    organisation_id=org.id or 0,
                    chapter_id=chapter.id or 0,
                    volunteer_id=volunteers[claim.get("employee_number", "1001")],
                    category=claim.get("category", "travel"),
                    amount_ore=claim.get("amount_ore", 25_000),
                    expense_date=claim.get("expense_date", date(2026, 2, 27)),
                    status=claim.get("status", "approved"),
                    approved_at=approved if claim.get("status", "approved") == "approved" else None,
                    description=claim.get("description", "Tog til samling"),
                    version=claim.get("version", 1),
                )
            )
        return org.id or 0


def configure_xledger(
    slug: str, url: str, token: str, *, toll_account: str = "7140", exclusions: tuple[str, ...] = ()
) -> Any:
    """Xledger for ``slug`` through the same service calls the setup wizard makes."""
    from integration_hub.adapters.registry import feature_flag
    from integration_hub.mappings.spec import load_template
    from integration_hub.services import configuration as config

    who = config.Actor("test")
    org = config.organisation(slug)
    config.set_feature_flag(org.id or 0, feature_flag("xledger"), True, config.OPERATOR)
    row = config.integration(org, "xledger", who, create=True)
    config.save_configuration(row, {"base_url": f"{url}/graphql", "api_token": token}, who)
    mapping = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    mapping["value_maps"]["expense_accounts"]["toll"] = toll_account
    config.save_mapping(row, mapping, who, accept_warnings=True)
    config.set_exclusions(row, list(exclusions), who)
    return row


def record_run(
    integration_id: int,
    organisation_id: int,
    *,
    failures: Sequence[dict[str, Any]] = (),
    **fields: Any,
) -> int:
    """A finished hub run written directly (no Prefect), with failed outcomes as given; for
    tests of what the health monitor and the history show."""
    from datetime import UTC, datetime, timedelta

    from integration_hub.db import hub_session
    from integration_hub.models import RecordOutcome, SyncRun

    started = fields.pop("started_at", datetime(2026, 3, 2, 1, 0, 3, tzinfo=UTC))
    values: dict[str, Any] = {
        "trigger": "schedule",
        "status": "partial" if failures else "succeeded",
        "extracted": 10,
        "exported": 10 - len(failures),
        "failed": len(failures),
        "exported_amount_ore": 123_456,
        "failed_amount_ore": sum(f.get("amount_ore", 0) for f in failures),
        "requests_sent": 1,
        "flow_run_id": "6d1f7a4e-0000-4000-8000-000000000001",
        "started_at": started,
        "finished_at": started + timedelta(seconds=4.2),
        **fields,
    }
    with hub_session() as session:
        run = SyncRun(integration_id=integration_id, organisation_id=organisation_id, **values)
        session.add(run)
        session.flush()
        for failure in failures:
            session.add(
                RecordOutcome(
                    run_id=run.id or 0,
                    integration_id=integration_id,
                    record_type="expense_claim",
                    record_id=failure["record_id"],
                    record_version=1,
                    status="failed",
                    reason=failure["reason"],
                    attempt=failure.get("attempt", 1),
                    amount_ore=failure.get("amount_ore"),
                    summary={
                        k: failure[k]
                        for k in ("category", "volunteer_name", "amount_ore")
                        if k in failure
                    },
                )
            )
        return run.id or 0


def stored_secret(organisation_id: int, integration_id: int, field: str) -> str:
    """What the vault holds for one field, asked for on behalf of the endpoints it was entered
    for (as the adapter factory does for the integration's current endpoints)."""
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import Credential
    from integration_hub.vault import CredentialVault

    with hub_session() as session:
        row = session.exec(
            select(Credential).where(
                Credential.integration_id == integration_id, Credential.field == field
            )
        ).first()
        return CredentialVault.from_settings().reveal(
            session,
            organisation_id=organisation_id,
            integration_id=integration_id,
            field=field,
            purpose="test check",
            endpoint=row.endpoint if row is not None else None,
        )
