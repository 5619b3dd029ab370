"""Export history: every run of an integration with its counts, totals and where to look."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from integration_hub.db import hub_session
from integration_hub.models import Integration, SyncRun
from integration_hub.services.configuration import Actor
from integration_hub.tasks.notify import flow_run_link
from integration_hub.tasks.record import run_summary


def run_entry(run: SyncRun) -> dict[str, Any]:
    """One run as pages, the CLI and ``--json`` show it (times ISO 8601 in UTC)."""
    return {**run_summary(run), "link": flow_run_link(run.flow_run_id)}


def list_runs(
    integration: Integration, actor: Actor, *, limit: int | None = 20
) -> list[dict[str, Any]]:
    """Newest first; ``limit`` None (or 0) lists every run."""
    actor.check(integration.organisation_id)
    query = (
        select(SyncRun).where(SyncRun.integration_id == integration.id).order_by(SyncRun.id.desc())  # type: ignore[union-attr]
    )
    if limit:
        query = query.limit(limit)
    with hub_session() as session:
        return [run_entry(run) for run in session.exec(query).all()]
