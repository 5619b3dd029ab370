"""The export pipeline every export flow shares: extract -> map -> validate -> load -> record.

:func:`run_pipeline` is called by the flows (a scheduled or manual export, a retry of one run's
failed records, each chunk of a backfill); they differ only in which claims are extracted and
what the run is called. Each step is a batch-level Prefect task. Parameters carry only ids and
dates; each task asks the vault for what it needs, so no secret is ever a parameter, a result or
an artifact.

Guards: a real (not dry) run holds its integration's export lease from start to end, so two
exports of one integration never run in parallel (:mod:`integration_hub.tasks.lease`), and every
request to the target takes a slot from the target's shared rate limit
(:mod:`integration_hub.tasks.pacing`). A dry run sends nothing, so it takes no lease. Before
anything is sent, the target's own schema is compared with what the adapter sends
(``Adapter.check_schema``, remembered for hours per integration): a difference that would have
the target refuse or misread the records stops the run with the reason, and nothing is sent.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from integration_hub.adapters.base import (
    Adapter,
    AdapterError,
    RecordAdapter,
    RunAbort,
    SchemaDrift,
    TransientError,
)
from integration_hub.adapters.factory import (
    build_adapter,
    cached_reference_codes,
    cached_schema_drift,
)
from integration_hub.adapters.registry import get_type
from integration_hub.db import app_engine, hub_session
from integration_hub.ledger import Ledger
from integration_hub.mappings.resolver import empty_failures, map_claims
from integration_hub.models import Integration, OutcomeStatus, RunFailure, RunStatus, SyncRun
from integration_hub.money import format_amount, format_nok
from integration_hub.schemas import gl_lines_schema, validate_lines
from integration_hub.tasks import extract as extract_step
from integration_hub.tasks import failures, notify
from integration_hub.tasks import lease as lease_step
from integration_hub.tasks.context import ExportNotReady, RunContext, load_context
from integration_hub.tasks.load import (
    LoadReport,
    RetryPolicy,
    load_lines,
    read_with_retry,
    records_of,
)
from integration_hub.tasks.pacing import Pacer, target_key
from integration_hub.tasks.record import (
    fail_run,
    finish_run,
    interrupt_dead_runs,
    outcome_frame,
    run_summary,
    start_run,
)
from integration_hub.untrusted import markdown_text

TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
RecordIds = list[tuple[int, int]]
"""(record id, version) pairs: the records a retry re-sends."""


def _adapter(context: RunContext, purpose: str) -> tuple[RecordAdapter, Integration]:
    """The integration's adapter: the export pipeline only runs types that write records."""
    with hub_session() as session:
        integration = session.get(Integration, context.integration_id)
        assert integration is not None
        adapter = build_adapter(session, integration, purpose=purpose)
    if not isinstance(adapter, RecordAdapter):
        raise RunAbort(f"{adapter.display_name} takes reports, not exported records")
    return adapter, integration


@task(name="extract", **TASK_OPTIONS)
def extract(
    context: RunContext,
    since: date | None,
    until: date | None,
    record_ids: RecordIds | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(claims to map, skipped claims with why, number extracted)."""
    ids = None if record_ids is None else [record_id for record_id, _ in record_ids]
    extracted_claims = extract_step.extract_claims(
        app_engine(), context.organisation_id, since, until, ids
    )
    extracted = len(extracted_claims)
    exported = _ledger(context).exported_versions()
    claims, changed = extract_step.drop_already_exported(extracted_claims, exported)
    claims, excluded = extract_step.apply_exclusions(claims, set(context.excluded), context.ignored)
    skipped = [changed, excluded]
    if record_ids is not None:
        skipped.append(extract_step.not_resent(record_ids, extracted_claims, claims, exported))
    get_run_logger().info(
        "extracted %s approved claims: %s new, %s excluded, %s changed after export",
        extracted,
        len(claims),
        len(excluded),
        len(changed),
    )
    return claims, pd.concat(skipped, ignore_index=True), extracted


@task(name="map", **TASK_OPTIONS)
def map_fields(context: RunContext, claims: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    adapter_type = get_type(context.type_key)
    assert context.mapping is not None
    required = {f.name: f.label for f in adapter_type.target_fields if f.required}
    return map_claims(
        claims,
        context.mapping,
        required_fields=required,
        text_max_length=adapter_type.text_max_length,
        organisation_id=context.organisation_id,
        integration_id=context.integration_id,
    )


@task(name="validate", **TASK_OPTIONS)
def validate(context: RunContext, lines: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if lines.empty:
        return lines, empty_failures()
    adapter, integration = _adapter(context, purpose="read reference codes for validation")
    codes = read_with_retry(
        adapter,
        RetryPolicy(),
        lambda: cached_reference_codes(adapter, integration),
        _pacer(adapter),
    )
    postable = [c.code for c in codes if c.postable]
    schema = gl_lines_schema(
        accounts=postable, text_max_length=adapter.text_max_length, target_name=adapter.display_name
    )
    return validate_lines(
        lines, schema, target_name=adapter.display_name, text_max_length=adapter.text_max_length
    )


@task(name="load", retries=1, retry_delay_seconds=5, **TASK_OPTIONS)
def load(
    context: RunContext,
    run_id: int,
    lines: pd.DataFrame,
    lease: lease_step.Lease | None = None,
) -> LoadReport:
    """Safe to retry as a whole: the ledger turns a second attempt into lookups, not posts."""
    adapter, integration = _adapter(context, purpose="export expense claims")
    logger = get_run_logger()
    total_records = lines["idempotency_key"].nunique() if not lines.empty else 0
    pacer = _pacer(adapter)

    def before_request() -> None:
        if lease is not None:
            try:
                lease.check()
            except lease_step.LeaseLost as exc:
                raise RunAbort(str(exc)) from None
        pacer()

    def progress(done: int, total: int) -> None:
        logger.info("sent %s of %s records", done, total)

    checked = 0
    if not lines.empty:
        drift = _schema_drift(adapter, integration, before_request)
        checked = adapter.requests_sent
        for warning in (d for d in drift if d.severity == "warning"):
            logger.warning("%s", warning.message)
        stop = schema_stop_reason(adapter.display_name, drift)
        if stop is not None:
            logger.error("%s", stop)
            report = LoadReport(requests=checked, aborted=stop, failure=RunFailure.CONFIGURATION)
            report.add(records_of(lines), OutcomeStatus.FAILED, f"not sent: {stop}")
            return report
    report = load_lines(
        adapter,
        lines,
        ledger=_ledger(context),
        run_id=run_id,
        policy=RetryPolicy(),
        progress=progress if total_records > 2000 else None,
        before_request=before_request,
    )
    report.requests += checked
    return report


def _schema_drift(
    adapter: Adapter, integration: Integration, before_request: Any
) -> list[SchemaDrift]:
    """The target's schema against what the adapter sends (remembered per integration). A
    check that cannot run does not stop the export: whatever kept it from running (a bad
    token, an outage) stops the load itself, with its own reason."""
    try:
        return read_with_retry(
            adapter,
            RetryPolicy(),
            lambda: cached_schema_drift(adapter, integration),
            before_request,
        )
    except AdapterError as exc:
        get_run_logger().warning("could not compare %s's schema: %s", adapter.display_name, exc)
        return []


def schema_stop_reason(target: str, drift: list[SchemaDrift]) -> str | None:
    """Why a run must not send anything, when the schema check found errors."""
    errors = [d.message for d in drift if d.severity == "error"]
    if not errors:
        return None
    return (
        f"{target}'s schema no longer matches what the hub sends, so nothing was sent: "
        + "; ".join(errors)
    )


@task(name="record", **TASK_OPTIONS)
def record(
    context: RunContext,
    run_id: int,
    *,
    claims: pd.DataFrame,
    extracted: int,
    skipped: pd.DataFrame,
    failures: list[pd.DataFrame],
    report: LoadReport | None,
    dry_run_lines: pd.DataFrame | None = None,
) -> dict[str, Any]:
    frames = [outcome_frame(OutcomeStatus.SKIPPED, skipped)]
    frames += [outcome_frame(OutcomeStatus.FAILED, f) for f in failures if not f.empty]
    if report is not None:
        frames.append(report.frame())
    outcomes = pd.concat([f for f in frames if not f.empty] or frames, ignore_index=True)
    details = claims.rename(columns={"claim_id": "record_id"})
    summary = finish_run(
        run_id,
        integration_id=context.integration_id,
        outcomes=outcomes,
        details=details,
        extracted=extracted,
        requests_sent=report.requests if report else 0,
        error=report.aborted if report else None,
        failure=report.failure if report else None,
        write_outcomes=dry_run_lines is None,
    )
    summary["target"] = context.display_name
    if dry_run_lines is not None:
        summary["would_export"] = int(dry_run_lines["idempotency_key"].nunique())
        summary["preview"] = preview(dry_run_lines)
    _publish_artifacts(context, summary)
    return summary


@task(name="alert", **TASK_OPTIONS)
def alert(context: RunContext, summary: dict[str, Any], event: str) -> str:
    """Call the organisation's webhook (if any) about this run; never fails the run."""
    organisation = notify.organisation_slug(context.organisation_id)
    payload = notify.run_payload(
        summary,
        organisation=organisation,
        type_key=context.type_key,
        target=context.display_name,
        event=event,
    )
    return notify.deliver(context.organisation_id, payload, integration_id=context.integration_id)


def preview(lines: pd.DataFrame, limit: int = 10) -> list[dict[str, Any]]:
    """The first lines as they would be sent (amounts in wire format), for dry runs."""
    head = lines.head(limit)
    return [
        {
            "document": str(r.document_number),
            "account": str(r.account),
            "counterparty": None if pd.isna(r.counterparty) else str(r.counterparty),
            "amount": format_amount(r.amount_ore),
            "date": str(r.posting_date),
            "text": str(r.text),
        }
        for r in head.itertuples(index=False)
    ]


def _pacer(adapter: Adapter) -> Pacer:
    """Requests to this adapter's target host share one rate limit across all runs."""
    return Pacer(
        target_key(adapter.key, getattr(adapter.config, "base_url", None)),
        adapter.rate_limit,
    )


def _ledger(context: RunContext) -> Ledger:
    return Ledger(
        hub_session,
        organisation_id=context.organisation_id,
        integration_id=context.integration_id,
        record_type=get_type(context.type_key).record_type,
    )


def run_name() -> str:
    """A flow run's name in the Prefect UI says what ran: ``blindeforbundet-xledger-manual``,
    with the window (``2026-01-01..2026-01-31``), ``dry-run``, or the run a retry re-sends."""
    parameters = flow_run.parameters or {}
    parts: list[str] = []
    integration_id = parameters.get("integration_id")
    retry_of = parameters.get("run_id")
    with hub_session() as session:
        if integration_id is None and retry_of is not None:
            retried = session.get(SyncRun, int(retry_of))
            integration_id = retried.integration_id if retried is not None else None
        integration = session.get(Integration, int(integration_id)) if integration_id else None
    if integration is not None:
        parts += [notify.organisation_slug(integration.organisation_id), integration.type_key]
    if retry_of is not None:
        parts.append(f"retry-of-run-{retry_of}")
    else:
        parts.append(str(parameters.get("trigger") or "backfill"))
    since = parameters.get("since") or parameters.get("start")
    until = parameters.get("until") or parameters.get("end")
    if since or until:
        parts.append(f"{since or '…'}..{until or '…'}")
    if parameters.get("dry_run"):
        parts.append("dry-run")
    return "-".join(str(p) for p in parts) or "export"


def final_state(summary: dict[str, Any]) -> Any:
    """What a flow returns: the summary, as a named state when the run is not a clean success
    ("Completed with failures", or "Stopped" with why), so the Prefect UI shows it at a glance.
    Callers of the flow still get the summary itself.

    Not on a retried attempt: Prefect (3.x) then re-raises the earlier attempt's exception to
    the caller of a flow that returns a State, so a retried run ends plainly "Completed"."""
    from prefect.states import Completed

    if (flow_run.run_count or 1) > 1:
        return summary
    if summary["status"] == RunStatus.PARTIAL.value:
        counts = f"{summary['failed']} failed, {summary.get('waiting', 0)} waiting to be confirmed"
        return Completed(name="Completed with failures", message=counts, data=summary)
    if summary["status"] == RunStatus.FAILED.value:
        return Completed(name="Stopped", message=str(summary.get("error") or ""), data=summary)
    return summary


def artifact_key(*parts: object) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


def _publish_artifacts(context: RunContext, summary: dict[str, Any]) -> None:
    failures = summary["failures"]
    key = artifact_key(context.type_key, "integration", context.integration_id)
    if failures:
        create_table_artifact(
            key=f"{key}-failures",
            table=[
                {
                    "record": f"claim {f['record_id']}",
                    "category": f.get("category") or "",
                    "volunteer": f.get("volunteer_name") or "",
                    "amount": format_nok(f["amount_ore"]) if f.get("amount_ore") else "",
                    "reason": f["reason"] or "",
                    "attempt": str(f["attempt"]),
                }
                for f in failures
            ],
            description=f"Records that failed in run {summary['run_id']}",
        )
    create_markdown_artifact(
        key=f"{key}-summary", markdown=summary_markdown(summary), description="Export summary"
    )


def summary_markdown(summary: dict[str, Any]) -> str:
    title = "Dry run" if summary.get("dry_run") else "Export"
    lines = [
        f"# {title} to {summary.get('target', '')}: run {summary['run_id']} ({summary['status']})",
        "",
        "| exported | failed | skipped | amount exported | requests |",
        "|---|---|---|---|---|",
        f"| {summary['exported']} | {summary['failed']} | {summary['skipped']} | "
        f"{format_nok(summary['exported_amount_ore'])} | {summary['requests_sent']} |",
    ]
    if summary.get("retry_of_run_id"):
        lines += ["", f"Retry of the failed records of run {summary['retry_of_run_id']}."]
    if summary.get("would_export") is not None:
        lines += ["", f"Would export {summary['would_export']} records; nothing was sent."]
    if summary.get("error"):
        lines += ["", f"**Stopped:** {markdown_text(summary['error'])}"]  # a target's words
    return "\n".join(lines)


def _stored_summary(run_id: int) -> dict[str, Any]:
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        return run_summary(run)


def run_pipeline(
    integration_id: int,
    *,
    since: date | None = None,
    until: date | None = None,
    dry_run: bool = False,
    trigger: str = "manual",
    record_ids: RecordIds | None = None,
    retry_of_run_id: int | None = None,
    alerts: bool = True,
) -> dict[str, Any]:
    """One export run of one integration, from its own hub run row to its summary.

    ``record_ids`` restricts it to those records (their current versions); ``alerts`` False
    leaves telling the organisation to the caller (a backfill sends one alert, not one a chunk).
    """
    context = load_context(integration_id)
    if context.mapping is None:
        raise ExportNotReady(
            f"{context.display_name} has no field mapping yet; finish the setup wizard first"
        )
    run_id = start_run(
        integration_id=integration_id,
        organisation_id=context.organisation_id,
        trigger=trigger,
        since=since,
        until=until,
        dry_run=dry_run,
        flow_run_id=str(flow_run.get_id() or ""),
        mapping_version=context.mapping_version,
        retry_of_run_id=retry_of_run_id,
    )
    lease = None
    budget = failures.retry_budget(trigger)
    try:
        if not dry_run:
            what = f"{context.display_name} for {notify.organisation_slug(context.organisation_id)}"
            lease = lease_step.acquire(integration_id, run_id, what=what)
            interrupt_dead_runs(integration_id, current_run_id=run_id)
        while True:
            claims, skipped, extracted = extract(context, since, until, record_ids)
            lines, map_failures = map_fields(context, claims)
            try:
                valid, invalid = validate(context, lines)
                report = None if dry_run else load(context, run_id, valid, lease)
            except TransientError as exc:  # a read before sending found the target down
                unreachable, report = str(exc), None
            else:
                unreachable = report.unreachable if report is not None else None
            if unreachable is None:
                break
            wait = budget.next_wait()
            if wait is None:
                reason = failures.unreachable_reason(
                    context.display_name, unreachable, budget.tried_s
                )
                if report is None:
                    raise failures.RunStopped(run_id, RunFailure.UNREACHABLE, reason)
                report.aborted = reason
                break
            waiting = failures.waiting_message(
                context.display_name, unreachable, wait, budget.attempts + 1
            )
            get_run_logger().warning("%s", waiting)
            failures.announce(waiting)
            budget.sleep(wait)
        summary = record(
            context,
            run_id,
            claims=claims,
            extracted=extracted,
            skipped=skipped,
            failures=[map_failures, invalid],
            # quote(): Prefect would otherwise walk 100,000 outcome dicts twice (~8 s).
            report=quote(report) if report is not None else None,
            dry_run_lines=valid if dry_run else None,
        )
    except BaseException as exc:
        failure, reason = failures.classify(exc, context.display_name)
        fail_run(run_id, reason, failure=failure)
        # A refused start is the guard working, and Ctrl-C is a person: neither is news.
        newsworthy = failure not in (RunFailure.BUSY, RunFailure.CANCELLED)
        if alerts and not dry_run and newsworthy:
            try:
                alert(context, _stored_summary(run_id), "export.failed")
            except Exception:  # the run's own error is what matters here
                get_run_logger().warning("could not send the alert of run %s", run_id)
        if not isinstance(exc, Exception) or failure is RunFailure.BUSY:
            raise  # Ctrl-C and cancellation stay what they are; a busy guard is its own error
        raise failures.RunStopped(run_id, failure, reason) from exc
    finally:
        if lease is not None:
            lease.release()
    if alerts and not dry_run:
        if summary["status"] == RunStatus.FAILED.value:
            summary["alert"] = alert(context, summary, "export.failed")
        elif summary["failed"]:
            summary["alert"] = alert(context, summary, "export.failures")
    return summary
