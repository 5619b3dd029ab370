"""``export_activities``: a period's activities -> a Bufdir grant report (file, or the API).

Bufdir publishes no API. ``deliver="file"`` writes the report an admin uploads in Bufdir's portal
(CSV + markdown summary under ``var/reports/<org>/<period>/``); ``deliver="api"`` also sends it
through the Altinn-3-style client in :mod:`integration_hub.adapters.bufdir`, a stand-in run
against the sandbox until Bufdir offers an endpoint.

Every activity of the period gets an outcome (record type ``activity``): ``exported`` (counted in
the report), ``skipped`` (excluded category) or ``failed`` (with what to fix). The report itself
is one more outcome row of the run (record type ``report``, record id = the run id) whose
``summary`` holds the period, the file paths, the CSV's SHA-256 and, for the API, the instance id:
that is the export history of the report, with no schema change.

A period that already has a delivered report is refused unless ``resubmit=True``; a resubmission
is its own run (trigger ``resubmission``) and an audit entry naming the earlier runs.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from sqlalchemy import insert, select

from integration_hub.adapters.bufdir import BufdirAdapter
from integration_hub.adapters.factory import build_adapter
from integration_hub.db import app_engine, app_session, hub_session
from integration_hub.models import (
    AuditEntry,
    Integration,
    Organisation,
    OutcomeStatus,
    RecordOutcome,
    RunFailure,
    RunStatus,
    SyncRun,
    utcnow,
)
from integration_hub.settings import get_settings
from integration_hub.tasks import activities as steps
from integration_hub.tasks import failures
from integration_hub.tasks import lease as lease_step
from integration_hub.tasks.context import ExportNotReady, RunContext, load_context
from integration_hub.tasks.record import fail_run, run_summary, start_run

TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
DELIVERIES = ("file", "api")
REPORT_RECORD_TYPE = "report"
TRIGGER_REPORT = "report"
TRIGGER_RESUBMISSION = "resubmission"


class AlreadySubmitted(RuntimeError):
    """The period already has a delivered report; pass ``resubmit=True`` to send it again."""

    def __init__(self, period: str, runs: list[dict[str, Any]]) -> None:
        last = runs[-1]
        super().__init__(
            f"the Bufdir report for {period} was already delivered (run {last['run_id']}, "
            f"{last['finished_at'] or 'unknown time'}, {last['deliver']}); resubmitting must be "
            "explicit: pass resubmit=True"
        )
        self.runs = runs


def previous_submissions(integration_id: int, period: steps.Period) -> list[dict[str, Any]]:
    """Delivered reports of this integration for this period, oldest first."""
    outcome, run = RecordOutcome.__table__, SyncRun.__table__
    with hub_session() as session:
        rows = session.execute(
            select(run.c.id, run.c.finished_at, outcome.c.summary)
            .join(outcome, outcome.c.run_id == run.c.id)
            .where(
                run.c.integration_id == integration_id,
                run.c.window_start == period.start,
                run.c.window_end == period.end,
                outcome.c.record_type == REPORT_RECORD_TYPE,
                outcome.c.status == OutcomeStatus.EXPORTED.value,
            )
            .order_by(run.c.id)
        ).all()
    return [
        {
            "run_id": run_id,
            "finished_at": finished.isoformat() if finished else None,
            "deliver": (summary or {}).get("deliver"),
            "sha256": (summary or {}).get("sha256"),
        }
        for run_id, finished, summary in rows
        if (summary or {}).get("period") == period.label
    ]


def record_report_run(
    run_id: int,
    *,
    integration_id: int,
    report: steps.ActivityReport,
    delivery: dict[str, Any],
    error: str | None = None,
    requests_sent: int = 0,
) -> dict[str, Any]:
    """Store one outcome per activity, the report row and the run's counts; returns the summary.

    With ``error`` (the delivery failed) the activities that would have been counted fail with
    that reason and the run fails; the written file and its checksum are still kept."""
    outcomes = report.outcomes()
    if error:
        counted = outcomes["status"] == OutcomeStatus.EXPORTED.value
        outcomes.loc[counted, "reason"] = f"the report could not be delivered: {error}"
        outcomes.loc[counted, "status"] = OutcomeStatus.FAILED.value
    reference = delivery.get("instance_id") or f"sha256:{delivery.get('sha256', '')[:16]}"
    details = pd.concat([report.counted, report.skipped, report.failed], ignore_index=True)
    facts = {
        int(r.record_id): {
            "activity_type": str(r.activity_type),
            "activity_date": str(r.activity_date),
            "chapter_code": str(r.chapter_code),
            "municipality_number": None
            if pd.isna(r.municipality_number)
            else str(r.municipality_number),
        }
        for r in details.itertuples(index=False)
    }
    now = utcnow()
    rows = [
        {
            "run_id": run_id,
            "integration_id": integration_id,
            "record_type": "activity",
            "record_id": int(o.record_id),
            "record_version": int(o.record_version),
            "status": o.status,
            "reason": None if pd.isna(o.reason) else str(o.reason),
            "target_reference": reference if o.status == OutcomeStatus.EXPORTED.value else None,
            "idempotency_key": None,
            "attempt": 1,
            "amount_ore": None,
            "summary": facts.get(int(o.record_id), {}),
            "created_at": now,
        }
        for o in outcomes.itertuples(index=False)
    ]
    rows.append(
        {
            "run_id": run_id,
            "integration_id": integration_id,
            "record_type": REPORT_RECORD_TYPE,
            "record_id": run_id,
            "record_version": 1,
            "status": OutcomeStatus.FAILED.value if error else OutcomeStatus.EXPORTED.value,
            "reason": error,
            "target_reference": reference,
            "idempotency_key": None,
            "attempt": 1,
            "amount_ore": None,
            "summary": delivery,
            "created_at": now,
        }
    )
    counts = outcomes["status"].value_counts()
    with hub_session() as session:
        session.execute(insert(RecordOutcome.__table__), rows)
        run = session.get(SyncRun, run_id)
        assert run is not None
        run.extracted = report.extracted
        run.exported = int(counts.get(OutcomeStatus.EXPORTED.value, 0))
        run.failed = int(counts.get(OutcomeStatus.FAILED.value, 0))
        run.skipped = int(counts.get(OutcomeStatus.SKIPPED.value, 0))
        run.requests_sent = requests_sent
        if error:
            run.status = RunStatus.FAILED.value
        elif run.failed:
            run.status = RunStatus.PARTIAL.value
        else:
            run.status = RunStatus.SUCCEEDED.value
        run.error = error[:2000] if error else None
        run.failure = delivery.get("failure") if error else None
        run.finished_at = now
        session.add(run)
        summary = run_summary(run)
    summary["report"] = delivery
    summary["failures"] = [
        {"record_id": int(r.record_id), "reason": str(r.reason)}
        for r in outcomes[outcomes["status"] == OutcomeStatus.FAILED.value].itertuples()
    ]
    summary["skipped_reasons"] = report.skipped["reason"].value_counts().to_dict()
    return summary


# -- tasks -----------------------------------------------------------------------------------------
@task(name="extract-activities", **TASK_OPTIONS)
def extract(context: RunContext, period: steps.Period) -> pd.DataFrame:
    frame = steps.extract_activities(app_engine(), context.organisation_id, period)
    get_run_logger().info("extracted %s activities for %s", len(frame), period.label)
    return frame


@task(name="aggregate-activities", **TASK_OPTIONS)
def build(
    context: RunContext, activities: pd.DataFrame, period: steps.Period
) -> steps.ActivityReport:
    return steps.build_report(activities, period, set(context.excluded))


@task(name="deliver-report", **TASK_OPTIONS)
def deliver_report(
    context: RunContext,
    run_id: int,
    report: steps.ActivityReport,
    deliver: str,
    resubmission_of: list[int],
) -> tuple[dict[str, Any], str | None, int]:
    """(delivery facts, error or None, requests sent). The file is always written."""
    with app_session() as session:
        org = session.get(Organisation, context.organisation_id)
        assert org is not None
        slug, name, number = org.slug, org.name, org.org_number
    files = steps.write_report(
        report,
        var_dir=get_settings().var_dir,
        organisation_slug=slug,
        organisation_name=name,
        org_number=number,
        run_id=run_id,
    )
    delivery: dict[str, Any] = {
        "period": report.period.label,
        "deliver": deliver,
        "csv_path": str(files.csv_path),
        "summary_path": str(files.summary_path),
        "sha256": files.sha256,
        "summary_sha256": files.summary_sha256,
        "rows": len(report.aggregate),
        "resubmission_of": resubmission_of,
    }
    if deliver != "api":
        return delivery, None, 0
    with hub_session() as session:
        integration = session.get(Integration, context.integration_id)
        assert integration is not None
        adapter = build_adapter(session, integration, purpose="submit the Bufdir report")
    assert isinstance(adapter, BufdirAdapter)
    with adapter:
        try:
            submission = adapter.submit_report(number, files.csv_bytes, files.summary_text)
        except Exception as exc:  # recorded as the run's reason; the flow then raises
            failure, reason = failures.classify(exc, adapter.display_name)
            delivery["failure"] = failure.value
            return delivery, adapter.redact(reason), adapter.requests_sent
    delivery["instance_id"] = submission.instance_id
    delivery["instance_status"] = submission.status
    return delivery, None, submission.requests


def _publish(context: RunContext, summary: dict[str, Any]) -> None:
    key = f"bufdir-integration-{context.integration_id}"
    if summary["failures"]:
        create_table_artifact(
            key=f"{key}-failures",
            table=[
                {"record": f"activity {f['record_id']}", "reason": f["reason"]}
                for f in summary["failures"]
            ],
            description=f"Activities not counted in run {summary['run_id']}",
        )
    report = summary["report"]
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown="\n".join(
            [
                f"# Bufdir report {report['period']}: run {summary['run_id']} "
                f"({summary['status']})",
                "",
                f"counted {summary['exported']}, skipped {summary['skipped']}, "
                f"failed {summary['failed']}; file `{report['csv_path']}` "
                f"(SHA-256 `{report['sha256']}`)",
            ]
        ),
        description="Bufdir report summary",
    )


@flow(name="bufdir-report", log_prints=False)
def export_activities(
    integration_id: int, period: str, resubmit: bool = False, deliver: str = "file"
) -> dict[str, Any]:
    """Report one closed period's activities to Bufdir; every activity ends with an outcome."""
    if deliver not in DELIVERIES:
        raise ValueError(f"deliver must be one of {', '.join(DELIVERIES)}, not {deliver!r}")
    context = load_context(integration_id)
    if context.type_key != BufdirAdapter.key:
        raise ExportNotReady(
            f"integration {integration_id} is {context.display_name}, not Bufdir; "
            "activities are reported through a Bufdir integration"
        )
    closed = steps.closed_period(period)
    earlier = previous_submissions(integration_id, closed)
    if earlier and not resubmit:
        raise AlreadySubmitted(closed.label, earlier)
    run_id = start_run(
        integration_id=integration_id,
        organisation_id=context.organisation_id,
        trigger=TRIGGER_RESUBMISSION if earlier else TRIGGER_REPORT,
        since=closed.start,
        until=closed.end,
        dry_run=False,
        flow_run_id=str(flow_run.get_id() or ""),
        mapping_version=None,
    )
    if earlier:
        with hub_session() as session:
            session.add(
                AuditEntry(
                    actor="system",
                    organisation_id=context.organisation_id,
                    integration_id=integration_id,
                    action="bufdir.report.resubmitted",
                    details={
                        "period": closed.label,
                        "run_id": run_id,
                        "deliver": deliver,
                        "previous_run_ids": [e["run_id"] for e in earlier],
                    },
                )
            )
    lease = None
    try:
        lease = lease_step.acquire(
            integration_id, run_id, what=f"the Bufdir report of integration {integration_id}"
        )
        activities = extract(context, closed)
        report = build(context, quote(activities), closed)
        delivery, error, requests = deliver_report(
            context, run_id, quote(report), deliver, [e["run_id"] for e in earlier]
        )
        summary = record_report_run(
            run_id,
            integration_id=integration_id,
            report=report,
            delivery=delivery,
            error=error,
            requests_sent=requests,
        )
        summary["target"] = context.display_name
        _publish(context, summary)
    except BaseException as exc:
        failure, reason = failures.classify(exc, context.display_name)
        fail_run(run_id, reason, failure=failure)
        if not isinstance(exc, Exception) or failure is RunFailure.BUSY:
            raise
        raise failures.RunStopped(run_id, failure, reason) from exc
    finally:
        if lease is not None:
            lease.release()
    if error:
        raise failures.RunStopped(
            run_id,
            RunFailure(delivery.get("failure") or RunFailure.UNREACHABLE),
            f"the report was not delivered: {error}; the file is at {delivery['csv_path']}",
        )
    return summary
