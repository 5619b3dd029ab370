"""Export history: every run of an integration with its counts, totals and where to look."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import select

from integration_hub.db import hub_session
from integration_hub.models import Integration, SyncRun
from integration_hub.services.configuration import Actor
from integration_hub.tasks.notify import flow_run_link
from integration_hub.tasks.record import run_summary

OSLO = ZoneInfo("Europe/Oslo")


def links_to_prefect(actor: Actor) -> bool:
    """Whether runs shown to ``actor`` link to the Prefect UI: only for operators and the hub's
    command line. Prefect (open source) has no sign-in and no per-organisation access, so its
    UI shows every organisation's runs, failure tables and logs to whoever reaches it; an
    organisation admin is never sent there (the hub's own pages show their runs)."""
    return actor.organisation_id is None


def run_entry(run: SyncRun, actor: Actor) -> dict[str, Any]:
    """One run as pages, the CLI and ``--json`` show it to ``actor`` (times ISO 8601 in UTC;
    ``link`` to the Prefect UI only where :func:`links_to_prefect` allows it)."""
    link = flow_run_link(run.flow_run_id) if links_to_prefect(actor) else None
    return {**run_summary(run), "link": link}


def run_of(integration: Integration, run_id: int, actor: Actor) -> dict[str, Any] | None:
    """One run of ``integration`` as the history shows it (None: no such run of it)."""
    actor.check(integration.organisation_id)
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
    if run is None or run.integration_id != integration.id:
        return None
    return run_entry(run, actor)


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
        return [run_entry(run, actor) for run in session.exec(query).all()]


def daily_counts(
    integration: Integration, actor: Actor, *, days: int = 14, today: date | None = None
) -> list[dict[str, Any]]:
    """Exported and failed records per day (Oslo time) for the last ``days`` days, oldest
    first, every day present (zeros included), for the health monitor's chart. Dry runs sent
    nothing and are left out; a retry's exports count on the day of the retry."""
    actor.check(integration.organisation_id)
    today = today or datetime.now(OSLO).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time(0), OSLO)
    with hub_session() as session:
        runs = session.exec(
            select(SyncRun).where(
                SyncRun.integration_id == integration.id,
                SyncRun.dry_run == False,  # noqa: E712
                SyncRun.started_at >= since,  # type: ignore[operator]
            )
        ).all()
    buckets = {first + timedelta(days=i): [0, 0] for i in range(days)}
    for run in runs:
        if run.started_at is None:
            continue
        day = run.started_at.astimezone(OSLO).date()
        if day in buckets:
            buckets[day][0] += run.exported
            buckets[day][1] += run.failed
    return [
        {"day": day.isoformat(), "exported": exported, "failed": failed}
        for day, (exported, failed) in sorted(buckets.items())
    ]
