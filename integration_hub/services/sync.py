"""Starting exports: the one place pages and the CLI go through to run a flow.

An export, a retry of one run's failed records and a backfill all run their Prefect flow in this
process (embedded Prefect unless ``PREFECT_API_URL`` points at a server); the same flows are
deployments, so the Prefect UI can start them too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from sqlmodel import select

from integration_hub.adapters.base import RecordAdapter
from integration_hub.adapters.registry import get_type
from integration_hub.db import hub_session
from integration_hub.models import Integration, SyncRun
from integration_hub.services.configuration import Actor, integration, organisation
from integration_hub.services.errors import InvalidInput, NotFound, ServiceError
from integration_hub.services.guards import refused_when_busy


def _prefect() -> None:
    from integration_hub.prefect_env import configure_prefect

    configure_prefect()


def run_export(
    org_slug: str,
    type_key: str,
    actor: Actor,
    *,
    since: date | None = None,
    until: date | None = None,
    dry_run: bool = False,
    trigger: str = "manual",
) -> dict[str, Any]:
    """Run the export flow for one integration now and return its summary."""
    if since and until and since > until:
        raise InvalidInput(f"--since {since} is after --until {until}")
    org = organisation(org_slug, actor)
    row = integration(org, type_key, actor)
    actor.check_change(row.organisation_id)
    _prefect()
    from integration_hub.flows.export_expense_claims import export_expense_claims

    with refused_when_busy():
        return export_expense_claims(
            integration_id=row.id or 0, since=since, until=until, dry_run=dry_run, trigger=trigger
        )


# -- retry -------------------------------------------------------------------------------------
def _run(run_id: int, actor: Actor) -> SyncRun:
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
    if run is None:
        raise NotFound(f"there is no run {run_id}")
    actor.check(run.organisation_id)
    return run


def latest_failed_run(row: Integration, actor: Actor) -> int:
    """The newest run with failed records that no later retry has cleared."""
    actor.check(row.organisation_id)
    with hub_session() as session:
        runs = session.exec(
            select(SyncRun)
            .where(SyncRun.integration_id == row.id, SyncRun.dry_run == False)  # noqa: E712
            .order_by(SyncRun.id.desc())  # type: ignore[union-attr]
        ).all()
    cleared = {r.retry_of_run_id for r in runs if r.retry_of_run_id and r.status == "succeeded"}
    for run in runs:
        if run.failed and run.id not in cleared:
            return run.id or 0
    raise NotFound("no run of this integration has failed records to retry")


def retryable_run(run_id: int, actor: Actor) -> SyncRun:
    """The run whose failed records ``actor`` may re-send, or why not: no such run, a dry run,
    a report (delivered again whole, with its own command), or no failed records. Whoever
    starts a retry (here, or a submission from the web) asks this first."""
    run = _run(run_id, actor)
    if run.dry_run:
        raise InvalidInput(f"run {run_id} was a dry run; it sent nothing to retry")
    with hub_session() as session:
        row = session.get(Integration, run.integration_id)
    if row is not None and not exports_records(row):
        raise InvalidInput(
            f"run {run_id} delivered a {get_type(row.type_key).display_name} report, which is "
            "not retried record by record; deliver the period again with `integrations report "
            "ORG --period PERIOD --resubmit`"
        )
    if not run.failed:
        raise InvalidInput(f"run {run_id} has no failed records to retry")
    return run


def exports_records(row: Integration) -> bool:
    """Whether ``row``'s type writes records (export, dry run and retry apply to it)."""
    return issubclass(get_type(row.type_key), RecordAdapter)


def retry_run(run_id: int, actor: Actor) -> dict[str, Any]:
    """Re-send the failed records of ``run_id`` through the ``retry_failed_records`` flow."""
    run = retryable_run(run_id, actor)
    # A retry means someone fixed the cause, perhaps in the target (an account added there):
    # check against the target's codes as they are now, not as cached minutes ago.
    from integration_hub.adapters.factory import forget_reference_codes

    forget_reference_codes(run.integration_id)
    _prefect()
    from integration_hub.flows.retry_failed_records import retry_failed_records

    with refused_when_busy():
        return retry_failed_records(run_id=run_id)


# -- backfill ----------------------------------------------------------------------------------
def backfill_plan(start: date, end: date, chunk: str) -> list[tuple[date, date]]:
    """The chunks a backfill will run (checked: a valid chunk, start not after end)."""
    from integration_hub.tasks.windows import chunk_windows

    try:
        return chunk_windows(start, end, chunk)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def run_backfill(
    org_slug: str,
    type_key: str,
    actor: Actor,
    *,
    start: date,
    end: date,
    chunk: str = "month",
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the ``backfill_exports`` flow; ``on_chunk`` hears about every chunk as it ends."""
    backfill_plan(start, end, chunk)
    org = organisation(org_slug, actor)
    row = integration(org, type_key, actor)
    actor.check_change(row.organisation_id)
    _prefect()
    from integration_hub.flows.backfill import backfill_exports, progress_listener

    with refused_when_busy(), progress_listener(on_chunk or (lambda _chunk: None)):
        return backfill_exports(integration_id=row.id or 0, start=start, end=end, chunk=chunk)


# -- Bufdir activity report ----------------------------------------------------------------------
def run_activity_report(
    org_slug: str,
    actor: Actor,
    *,
    period: str,
    deliver: str = "file",
    resubmit: bool = False,
) -> dict[str, Any]:
    """Run the ``bufdir-report`` flow for ORG's Bufdir integration and return its summary.

    The summary gains ``municipalities``: the report's totals per municipality (from the file).
    """
    if deliver not in ("file", "api"):
        raise InvalidInput(f"--deliver must be file or api, not {deliver!r}")
    org = organisation(org_slug, actor)
    row = integration(org, "bufdir", actor)
    actor.check_change(row.organisation_id)
    _prefect()
    from integration_hub.flows.bufdir_report import (
        AlreadySubmitted,
        export_activities,
        previous_submissions,
    )
    from integration_hub.tasks.activities import PeriodError, closed_period, parse_period

    try:
        # Checked here too, so a refusal starts no flow run (and logs no flow failure).
        earlier = previous_submissions(row.id or 0, closed_period(period))
        if earlier and not resubmit:
            raise AlreadySubmitted(closed_period(period).label, earlier)
        with refused_when_busy():
            summary = export_activities(
                integration_id=row.id or 0, period=period, resubmit=resubmit, deliver=deliver
            )
    except PeriodError as exc:
        raise InvalidInput(str(exc)) from None
    except AlreadySubmitted as exc:
        last = exc.runs[-1]
        raise ReportAlreadySubmitted(
            f"the Bufdir report for {parse_period(period).label} was already delivered "
            f"(run {last['run_id']}, {last['finished_at'] or 'unknown time'}, "
            f"{last['deliver']}); pass --resubmit to send it again",
            exc.runs,
        ) from None
    summary["municipalities"] = municipality_totals(summary["report"]["csv_path"])
    return summary


class ReportAlreadySubmitted(ServiceError):
    """The period already has a delivered report; ``runs`` are the earlier deliveries."""

    def __init__(self, message: str, runs: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.runs = runs


def municipality_totals(csv_path: str) -> list[dict[str, Any]]:
    """The report file's rows summed per municipality (chapters merged), sorted by number."""
    import csv
    from decimal import Decimal
    from pathlib import Path

    totals: dict[str, dict[str, Any]] = {}
    with Path(csv_path).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            number = row["municipality_number"]
            entry = totals.setdefault(
                number,
                {
                    "municipality_number": number,
                    "activities": 0,
                    "participants": 0,
                    "participant_days": 0,
                    "volunteer_hours": Decimal("0.00"),
                    "participants_under_26": 0,
                },
            )
            for name in ("activities", "participants", "participant_days", "participants_under_26"):
                entry[name] += int(row[name])
            entry["volunteer_hours"] += Decimal(row["volunteer_hours"])
    return [totals[k] for k in sorted(totals)]
