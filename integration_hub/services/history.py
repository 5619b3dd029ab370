"""Export history: every run of an integration with its counts and totals."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from integration_hub.db import hub_session
from integration_hub.models import Integration, SyncRun
from integration_hub.services.configuration import Actor
from integration_hub.tasks.record import run_summary


def list_runs(integration: Integration, actor: Actor, *, limit: int = 20) -> list[dict[str, Any]]:
    actor.check(integration.organisation_id)
    with hub_session() as session:
        rows = session.exec(
            select(SyncRun)
            .where(SyncRun.integration_id == integration.id)
            .order_by(SyncRun.id.desc())  # type: ignore[union-attr]
            .limit(limit)
        ).all()
        return [
            {**run_summary(run), "started_at": run.started_at.isoformat() if run.started_at else ""}
            for run in rows
        ]
