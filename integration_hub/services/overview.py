"""The dashboard: every integration type an organisation is offered and how each is doing."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from integration_hub.db import hub_session
from integration_hub.models import Integration, IntegrationStatus
from integration_hub.services import configuration as config
from integration_hub.services.configuration import Actor
from integration_hub.services.health import integration_health

NOT_SET_UP = "not_set_up"
SETTING_UP = "setting_up"
FAILING = "failing"


def dashboard(org_slug: str, actor: Actor) -> dict[str, Any]:
    """Each offered type with its status (not set up, setting up, active, paused, failing),
    last run and next run."""
    org = config.organisation(org_slug, actor)
    with hub_session() as session:
        rows = {
            row.type_key: row
            for row in session.exec(
                select(Integration).where(Integration.organisation_id == org.id)
            ).all()
        }
    cards = []
    for adapter_type in config.available_types(org):
        row = rows.get(adapter_type.key)
        card: dict[str, Any] = {
            "type": adapter_type.key,
            "target": adapter_type.display_name,
            "status": NOT_SET_UP,
            "setup_step": None,
            "last_run": None,
            "next_run": None,
            "problems": [],
        }
        if row is not None:
            health = integration_health(row, org, actor, failure_limit=0)
            status = row.status
            if row.setup_step is not None and status == IntegrationStatus.DRAFT:
                status = SETTING_UP
            elif status == IntegrationStatus.ACTIVE and not health["healthy"]:
                status = FAILING
            schedule = health["schedule"]
            card.update(
                status=status,
                setup_step=row.setup_step,
                last_run=health["last_run"],
                next_run=schedule["next_run"] if schedule else None,
                problems=health["problems"],
                failures_total=health["failures_total"],
            )
        cards.append(card)
    return {
        "organisation": org.slug,
        "organisation_name": org.name,
        "organisation_id": org.id,
        "integrations": cards,
    }
