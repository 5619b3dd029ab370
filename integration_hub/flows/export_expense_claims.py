"""``export_expense_claims``: approved claims -> the organisation's accounting system.

extract -> map -> validate -> load -> record, each a batch-level Prefect task. Parameters carry
only ids and dates; each task asks the vault for what it needs, so no secret is ever a
parameter, a result or an artifact.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from integration_hub.adapters.factory import build_adapter, cached_reference_codes
from integration_hub.adapters.registry import get_type
from integration_hub.db import app_engine, hub_session
from integration_hub.ledger import Ledger
from integration_hub.mappings.resolver import empty_failures, map_claims
from integration_hub.models import Integration, OutcomeStatus
from integration_hub.money import format_amount, format_nok
from integration_hub.schemas import gl_lines_schema, validate_lines
from integration_hub.tasks import extract as extract_step
from integration_hub.tasks.context import RunContext, load_context
from integration_hub.tasks.load import LoadReport, RetryPolicy, load_lines
from integration_hub.tasks.record import fail_run, finish_run, outcome_frame, start_run

TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


class ExportNotReady(RuntimeError):
    """The integration cannot export yet (no mapping, not configured); says what to do."""


def _adapter(context: RunContext, purpose: str):  # type: ignore[no-untyped-def]
    with hub_session() as session:
        integration = session.get(Integration, context.integration_id)
        assert integration is not None
        return build_adapter(session, integration, purpose=purpose), integration


@task(name="extract", **TASK_OPTIONS)
def extract(
    context: RunContext, since: date | None, until: date | None
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(claims to map, skipped claims with why, number extracted)."""
    claims = extract_step.extract_claims(app_engine(), context.organisation_id, since, until)
    extracted = len(claims)
    ledger = _ledger(context)
    claims, changed = extract_step.drop_already_exported(claims, ledger.exported_versions())
    claims, excluded = extract_step.apply_exclusions(claims, set(context.excluded))
    get_run_logger().info(
        "extracted %s approved claims: %s new, %s excluded, %s changed after export",
        extracted,
        len(claims),
        len(excluded),
        len(changed),
    )
    return claims, pd.concat([changed, excluded], ignore_index=True), extracted


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
    codes = cached_reference_codes(adapter, integration)
    postable = [c.code for c in codes if c.postable]
    schema = gl_lines_schema(
        accounts=postable, text_max_length=adapter.text_max_length, target_name=adapter.display_name
    )
    return validate_lines(
        lines, schema, target_name=adapter.display_name, text_max_length=adapter.text_max_length
    )


@task(name="load", retries=1, retry_delay_seconds=5, **TASK_OPTIONS)
def load(context: RunContext, run_id: int, lines: pd.DataFrame) -> LoadReport:
    """Safe to retry as a whole: the ledger turns a second attempt into lookups, not posts."""
    adapter, _ = _adapter(context, purpose="export expense claims")
    logger = get_run_logger()
    total_records = lines["idempotency_key"].nunique() if not lines.empty else 0

    def progress(done: int, total: int) -> None:
        logger.info("sent %s of %s records", done, total)

    report = load_lines(
        adapter,
        lines,
        ledger=_ledger(context),
        run_id=run_id,
        policy=RetryPolicy(),
        progress=progress if total_records > 2000 else None,
    )
    return report


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
        write_outcomes=dry_run_lines is None,
    )
    summary["target"] = context.display_name
    if dry_run_lines is not None:
        summary["would_export"] = int(dry_run_lines["idempotency_key"].nunique())
        summary["preview"] = preview(dry_run_lines)
    _publish_artifacts(context, summary)
    return summary


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


def _ledger(context: RunContext) -> Ledger:
    return Ledger(
        hub_session,
        organisation_id=context.organisation_id,
        integration_id=context.integration_id,
        record_type=get_type(context.type_key).record_type,
    )


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
    if summary.get("would_export") is not None:
        lines += ["", f"Would export {summary['would_export']} records; nothing was sent."]
    if summary.get("error"):
        lines += ["", f"**Stopped:** {summary['error']}"]
    return "\n".join(lines)


@flow(name="export-expense-claims", log_prints=False)
def export_expense_claims(
    integration_id: int,
    since: date | None = None,
    until: date | None = None,
    dry_run: bool = False,
    trigger: str = "manual",
) -> dict[str, Any]:
    """Export approved expense claims of one integration; every claim ends with an outcome."""
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
    )
    try:
        claims, skipped, extracted = extract(context, since, until)
        lines, map_failures = map_fields(context, claims)
        valid, invalid = validate(context, lines)
        report = None if dry_run else load(context, run_id, valid)
        return record(
            context,
            run_id,
            claims=claims,
            extracted=extracted,
            skipped=skipped,
            failures=[map_failures, invalid],
            report=report,
            dry_run_lines=valid if dry_run else None,
        )
    except BaseException as exc:
        fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
