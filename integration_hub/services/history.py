"""Export history: every run of an integration with its counts, totals and where to look, each
run's records one by one (paged, failures grouped by reason), and the audit log of who changed
what."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func
from sqlmodel import select

from integration_hub.db import hub_session
from integration_hub.models import (
    AuditEntry,
    Integration,
    Organisation,
    OutcomeStatus,
    RecordOutcome,
    SyncRun,
)
from integration_hub.money import format_nok
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import InvalidInput, NotFound
from integration_hub.services.ignored import ignored_among, not_ignored_clause
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
    ``link`` to the Prefect UI only where :func:`links_to_prefect` allows it; ``failure``: why
    it did not finish, a :class:`~integration_hub.models.RunFailure` value)."""
    link = flow_run_link(run.flow_run_id) if links_to_prefect(actor) else None
    return {"failure": run.failure, **run_summary(run), "link": link}


def run_of(integration: Integration, run_id: int, actor: Actor) -> dict[str, Any] | None:
    """One run of ``integration`` as the history shows it (None: no such run of it)."""
    actor.check(integration.organisation_id)
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
    if run is None or run.integration_id != integration.id:
        return None
    return run_entry(run, actor)


def find_run(run_id: int, actor: Actor) -> tuple[Integration, dict[str, Any]]:
    """A run by its id alone (the API's ``/runs/{id}``): its integration and the run as
    :func:`run_entry` shows it. NotFound for a run ``actor`` may not see, as for none at all."""
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
        row = session.get(Integration, run.integration_id) if run is not None else None
    if run is None or row is None or actor.organisation_id not in (None, run.organisation_id):
        raise NotFound(f"there is no run {run_id}")
    return row, run_entry(run, actor)


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


# -- one run's records -------------------------------------------------------------------------
OUTCOMES_PER_PAGE = 50
STATUS_ORDER = (
    OutcomeStatus.FAILED,
    OutcomeStatus.WAITING,
    OutcomeStatus.SKIPPED,
    OutcomeStatus.EXPORTED,
)
"""How a run's records are listed: what needs a person first."""


def _outcome(row: Any, ignored: dict[str, Any] | None) -> dict[str, Any]:
    facts = row.summary or {}
    amount = row.amount_ore if row.amount_ore is not None else facts.get("amount_ore")
    return {
        "record": f"{row.record_type.replace('_', ' ')} {row.record_id}",
        "record_type": row.record_type,
        "record_id": row.record_id,
        "record_version": row.record_version,
        "status": row.status,
        "reason": row.reason,
        "amount_ore": amount,
        "amount": format_nok(amount) if amount is not None else None,
        "category": facts.get("category"),
        "volunteer": facts.get("volunteer_name"),
        "expense_date": facts.get("expense_date"),
        "attempt": row.attempt,
        "target_reference": row.target_reference,
        "ignored": ignored,
    }


def run_outcomes(
    integration: Integration,
    run_id: int,
    actor: Actor,
    *,
    status: str | None = None,
    page: int = 1,
    per_page: int = OUTCOMES_PER_PAGE,
) -> dict[str, Any]:
    """One page of a run's records with their outcome (failed first, then waiting, skipped,
    exported; by record id within each), optionally of one ``status``; each failed record says
    whether it is ignored now. NotFound when the run is not one of ``integration``'s."""
    if run_of(integration, run_id, actor) is None:
        raise NotFound(f"there is no run {run_id}")
    if status is not None and status not in {s.value for s in OutcomeStatus}:
        choices = ", ".join(s.value for s in STATUS_ORDER)
        raise InvalidInput(f"status must be one of {choices}, not {status!r}")
    table = RecordOutcome.__table__
    where = [table.c.run_id == run_id]
    if status is not None:
        where.append(table.c.status == status)
    order = case({s.value: i for i, s in enumerate(STATUS_ORDER)}, value=table.c.status, else_=9)
    page = max(1, page)
    with hub_session() as session:
        counts = {
            str(s): int(n)
            for s, n in session.execute(
                select(table.c.status, func.count())
                .where(table.c.run_id == run_id)
                .group_by(table.c.status)
            )
        }
        total = int(
            session.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0
        )
        rows = session.execute(
            select(table)
            .where(*where)
            .order_by(order, table.c.record_id, table.c.id)
            .offset((page - 1) * per_page)
            .limit(per_page)
        ).all()
    pairs = [(r.record_id, r.record_version) for r in rows if r.status == OutcomeStatus.FAILED]
    ignored = ignored_among(integration.id or 0, pairs)
    return {
        "run_id": run_id,
        "status": status,
        "page": page,
        "per_page": per_page,
        "pages": max(1, -(-total // per_page)),
        "total": total,
        "counts": {s.value: counts.get(s.value, 0) for s in STATUS_ORDER},
        "items": [
            _outcome(
                r,
                ignored.get((r.record_id, r.record_version))
                if r.status == OutcomeStatus.FAILED
                else None,
            )
            for r in rows
        ],
    }


def failure_groups(integration: Integration, run_id: int, actor: Actor) -> list[dict[str, Any]]:
    """A run's failed records grouped by reason, the largest group first: one cause (an
    account missing at the target) usually fails many records, and is fixed once. Each group
    counts the records, their amount, and how many of them were ignored since."""
    if run_of(integration, run_id, actor) is None:
        raise NotFound(f"there is no run {run_id}")
    table = RecordOutcome.__table__
    failed = (table.c.run_id == run_id, table.c.status == OutcomeStatus.FAILED.value)
    with hub_session() as session:
        rows = session.execute(
            select(
                table.c.reason,
                func.count(),
                func.coalesce(func.sum(table.c.amount_ore), 0),
                func.min(table.c.record_id),
            )
            .where(*failed)
            .group_by(table.c.reason)
        ).all()
        open_counts = dict(
            session.execute(
                select(table.c.reason, func.count())
                .where(*failed, not_ignored_clause(table))
                .group_by(table.c.reason)
            ).all()
        )
    groups = [
        {
            "reason": reason,
            "count": int(count),
            "amount_ore": int(amount or 0),
            "amount": format_nok(int(amount or 0)),
            "ignored": int(count) - int(open_counts.get(reason, 0)),
            "first_record_id": int(first),
        }
        for reason, count, amount, first in rows
    ]
    return sorted(groups, key=lambda g: (-g["count"], g["first_record_id"]))


# -- the audit log -----------------------------------------------------------------------------
AUDIT_PER_PAGE = 50


CREDENTIAL_USED = "credential.used"
"""Every run reads its credentials, and each read is audited: many entries, and no change."""


def audit_log(
    organisation: Organisation,
    actor: Actor,
    *,
    page: int = 1,
    per_page: int = AUDIT_PER_PAGE,
    uses: bool = False,
) -> dict[str, Any]:
    """The organisation's audit entries (who changed what, never a secret), newest first, one
    page; each names the integration type it is about, if any. Each use of a stored credential
    is left out unless ``uses`` (``uses_total`` counts them)."""
    actor.check(organisation.id or 0)
    table = AuditEntry.__table__
    mine = table.c.organisation_id == organisation.id
    where = [mine] if uses else [mine, table.c.action != CREDENTIAL_USED]
    page = max(1, page)
    with hub_session() as session:
        total = int(
            session.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0
        )
        uses_total = int(
            session.execute(
                select(func.count())
                .select_from(table)
                .where(mine, table.c.action == CREDENTIAL_USED)
            ).scalar()
            or 0
        )
        rows = session.execute(
            select(table)
            .where(*where)
            .order_by(table.c.at.desc(), table.c.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        ).all()
        types = dict(
            session.execute(
                select(Integration.id, Integration.type_key).where(  # type: ignore[call-overload]
                    Integration.organisation_id == organisation.id
                )
            ).all()
        )
    return {
        "page": page,
        "per_page": per_page,
        "pages": max(1, -(-total // per_page)),
        "total": total,
        "uses": uses,
        "uses_total": uses_total,
        "entries": [
            {
                "id": r.id,
                "at": r.at.isoformat() if r.at else None,
                "actor": r.actor,
                "action": r.action,
                "integration_id": r.integration_id,
                "type": types.get(r.integration_id) if r.integration_id else None,
                "details": r.details or {},
            }
            for r in rows
        ],
    }


def run_record(
    integration: Integration, run_id: int, record_id: int, record_version: int, actor: Actor
) -> dict[str, Any]:
    """One record's outcome in a run of ``integration`` (failed first, if it has several), with
    whether it is ignored; NotFound when the run has no such record."""
    if run_of(integration, run_id, actor) is None:
        raise NotFound(f"there is no run {run_id}")
    table = RecordOutcome.__table__
    order = case({s.value: i for i, s in enumerate(STATUS_ORDER)}, value=table.c.status, else_=9)
    with hub_session() as session:
        row = session.execute(
            select(table)
            .where(
                table.c.run_id == run_id,
                table.c.record_id == record_id,
                table.c.record_version == record_version,
            )
            .order_by(order)
            .limit(1)
        ).first()
    if row is None:
        raise NotFound(f"run {run_id} has no record {record_id} version {record_version}")
    ignored = ignored_among(integration.id or 0, [(record_id, record_version)])
    return _outcome(row, ignored.get((record_id, record_version)))
