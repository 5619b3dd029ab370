"""The health monitor: per integration, how it is doing and what a person should do about it.

For each integration: its last run (when, trigger, status, duration, counts), each failure of
that run with the record, what it is (category, amount, volunteer: facts the run stored with the
outcome) and the actionable reason, attempts so far, the last connection test, the next scheduled
run, whether an export is running now, a retry, and (for operators) links to the Prefect
flow run. A run that did not finish is told by its kind (:func:`failure_sentence`: an
unreachable target is not a record failure), and failed records an admin ignored do not keep
the integration failing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func
from sqlmodel import select

from integration_hub.adapters.registry import UnknownIntegrationType, get_type
from integration_hub.db import hub_session
from integration_hub.models import (
    ExportLedger,
    Integration,
    LedgerState,
    Organisation,
    OutcomeStatus,
    RecordOutcome,
    RunFailure,
    RunStatus,
    SyncRun,
    SyncSchedule,
)
from integration_hub.money import format_nok
from integration_hub.services import configuration as config
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import NotFound
from integration_hub.services.guards import running_export
from integration_hub.services.history import run_entry
from integration_hub.services.ignored import ignored_among, open_failures

FAILURE_LIMIT = 50


def check(
    actor: Actor,
    org_slug: str | None = None,
    type_key: str | None = None,
    *,
    failure_limit: int = FAILURE_LIMIT,
) -> list[dict[str, Any]]:
    """The health of every integration the actor may see (of ``org_slug``/``type_key``)."""
    if org_slug is not None:
        organisations = [config.organisation(org_slug, actor)]
    else:
        organisations = config.list_organisations(actor)
    by_id = {o.id: o for o in organisations}
    with hub_session() as session:
        query = select(Integration).where(
            Integration.organisation_id.in_(list(by_id))  # type: ignore[attr-defined]
        )
        if type_key is not None:
            query = query.where(Integration.type_key == type_key)
        rows = session.exec(query.order_by(Integration.organisation_id, Integration.type_key)).all()
    reports = []
    for row in rows:
        try:
            get_type(row.type_key)
        except UnknownIntegrationType:
            continue  # the alert channel and retired types are not integrations to watch
        reports.append(
            integration_health(row, by_id[row.organisation_id], actor, failure_limit=failure_limit)
        )
    if not reports and (org_slug or type_key):
        what = " ".join(p for p in (org_slug, type_key) if p)
        raise NotFound(f"no integration is set up for {what}")
    return reports


def integration_health(
    row: Integration, org: Organisation, actor: Actor, *, failure_limit: int = FAILURE_LIMIT
) -> dict[str, Any]:
    actor.check(row.organisation_id)
    adapter_type = get_type(row.type_key)
    with hub_session() as session:
        last = session.exec(
            select(SyncRun)
            .where(SyncRun.integration_id == row.id, SyncRun.dry_run == False)  # noqa: E712
            .order_by(SyncRun.id.desc())  # type: ignore[union-attr]
            .limit(1)
        ).first()
        schedule = session.exec(
            select(SyncSchedule).where(SyncSchedule.integration_id == row.id)
        ).first()
    last_run = run_entry(last, actor) if last else None
    failures, failures_total = (
        _failures(row.id or 0, last.id or 0, failure_limit) if last else ([], 0)
    )
    # Failed records an admin chose to ignore no longer need anyone: they do not count.
    failures_open = open_failures(last.id or 0) if last and failures_total else 0
    test = (
        {
            "status": row.last_test_status,
            "detail": row.last_test_detail,
            "at": row.last_test_at.isoformat() if row.last_test_at else None,
        }
        if row.last_test_status
        else None
    )
    running = running_export(row, actor)
    if (
        last_run
        and last_run["status"] == RunStatus.RUNNING.value
        and (running is None or running["run_id"] != last_run["run_id"])
    ):
        # It holds no live lease: it died. The next run records it as interrupted (a read
        # changes nothing here).
        last_run["status"] = RunStatus.INTERRUPTED.value
    problems = []
    stopped = failure_sentence(last_run, adapter_type.display_name) if last_run else None
    if last_run and last_run["status"] == RunStatus.INTERRUPTED.value:
        problems.append("the last run stopped before it finished; the next run settles it")
    elif stopped:
        problems.append(stopped)
    elif last_run and last_run["status"] == RunStatus.FAILED.value:
        problems.append(f"the last run failed: {last_run['error'] or 'see the run'}")
    elif failures_open:
        problems.append(f"the last run has {failures_open} failed record(s)")
    if test and test["status"] != "ok":
        problems.append(f"the last connection test says {test['status']}")
    return {
        "organisation": org.slug,
        "organisation_name": org.name,
        "integration_id": row.id,
        "type": row.type_key,
        "target": adapter_type.display_name,
        "status": row.status,
        "healthy": not problems,
        "problems": problems,
        "last_run": last_run,
        "failures": failures,
        "failures_total": failures_total,
        "failures_open": failures_open,
        "failures_ignored": failures_total - failures_open,
        "stopped": stopped,
        "retry": (
            f"integrations retry {last_run['run_id']}" if last_run and failures_total else None
        ),
        "last_connection_test": test,
        "schedule": _schedule(schedule),
        "running": running,
        "waiting": _waiting(row.id or 0),
    }


def _waiting(integration_id: int) -> int:
    """Records sent whose answer was lost: they wait to be confirmed by a later run."""
    table = ExportLedger.__table__
    with hub_session() as session:
        count = session.execute(
            select(func.count())
            .select_from(table)
            .where(
                table.c.integration_id == integration_id,
                table.c.state == LedgerState.PENDING.value,
            )
        ).scalar()
    return int(count or 0)


def _failures(integration_id: int, run_id: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    table = RecordOutcome.__table__
    failed = (table.c.run_id == run_id, table.c.status == OutcomeStatus.FAILED.value)
    with hub_session() as session:
        total = session.execute(select(func.count()).select_from(table).where(*failed)).scalar()
        rows = session.execute(
            select(table).where(*failed).order_by(table.c.record_id).limit(limit)
        ).all()
    ignored = ignored_among(integration_id, [(r.record_id, r.record_version) for r in rows])
    failures = []
    for r in rows:
        facts = r.summary or {}
        amount = facts.get("amount_ore", r.amount_ore)
        failures.append(
            {
                "record": f"{r.record_type.replace('_', ' ')} {r.record_id}",
                "record_id": r.record_id,
                "record_version": r.record_version,
                "category": facts.get("category"),
                "amount_ore": amount,
                "amount": format_nok(amount) if amount is not None else None,
                "volunteer": facts.get("volunteer_name"),
                "reason": r.reason,
                "attempt": r.attempt,
                "ignored": ignored.get((r.record_id, r.record_version)),
            }
        )
    return failures, int(total or 0)


def failure_sentence(run: dict[str, Any], target: str) -> str | None:
    """What a run that did not finish means for people, by its ``failure`` kind (None for a
    run that finished, or one recorded before runs had a kind). "The target was unreachable"
    asks for patience, not for a fix; it is not a record failure. The run's own reason
    (``error``) says the particulars."""
    kind = run.get("failure")
    if run.get("status") != RunStatus.FAILED.value or not kind:
        return None
    if kind == RunFailure.UNREACHABLE.value:
        seconds = round(run.get("duration_s") or 0)
        if seconds < 60:
            return (
                f"{target} could not be reached; the hub retried for {seconds} seconds and "
                "will try again at the next run"
            )
        if seconds < 120:
            return (
                f"{target} could not be reached; the hub retried for a minute and will try "
                "again at the next run"
            )
        return (
            f"{target} could not be reached; the hub retried for {seconds // 60} minutes and "
            "will try again at the next run"
        )
    if kind == RunFailure.REFUSED.value:
        return f"{target} refused the last run; an admin must act on its reason, then run it again"
    if kind == RunFailure.CONFIGURATION.value:
        return (
            f"the last run could not start: the hub's setup of {target} needs fixing "
            "(see its reason)"
        )
    if kind == RunFailure.CANCELLED.value:
        return (
            "a person stopped the last run before it finished; running it again continues "
            "where it stopped"
        )
    if kind == "busy":
        return f"the last run did not start: another export of {target} was running"
    return (
        "the last run stopped because of an error in the hub; the operators can read it in the "
        "run's log, and the next run tries again"
    )


def _schedule(schedule: SyncSchedule | None) -> dict[str, Any] | None:
    if schedule is None:
        return None
    return {
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "paused": not schedule.enabled,
        "next_run": next_run(schedule).isoformat() if schedule.enabled else None,
    }


def next_run(schedule: SyncSchedule, after: datetime | None = None) -> datetime:
    """The next run time as Prefect's scheduler computes it (the scheduler service), in the
    schedule's time zone; plain cron arithmetic if that service is not installed."""
    try:
        from integration_hub.services.scheduler import next_runs_of
    except ImportError:
        from cronsim import CronSim

        zone = ZoneInfo(schedule.timezone)
        start = (after or datetime.now(UTC)).astimezone(zone)
        return next(CronSim(schedule.cron, start))
    return next_runs_of(schedule, 1, after=after)[0]
