"""``export_expense_claims``: approved claims -> the organisation's accounting system.

The flow a schedule, ``integrations sync`` and the Prefect UI start. The steps themselves live in
:mod:`integration_hub.flows.pipeline`, shared with the retry and backfill flows.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from prefect import flow

from integration_hub.flows.pipeline import (  # re-exported: callers and tests import them here
    ExportNotReady,
    artifact_key,
    final_state,
    preview,
    run_name,
    run_pipeline,
    summary_markdown,
)

__all__ = [
    "ExportNotReady",
    "artifact_key",
    "export_expense_claims",
    "preview",
    "summary_markdown",
]


@flow(name="export-expense-claims", flow_run_name=run_name, log_prints=False)
def export_expense_claims(
    integration_id: int,
    since: date | None = None,
    until: date | None = None,
    dry_run: bool = False,
    trigger: Literal["manual", "schedule", "backfill"] = "manual",
) -> Any:
    """Export approved expense claims of one integration; every claim ends with an outcome.

    ``trigger`` names the run in the history: manual, schedule or backfill (a backfill's chunks
    alert once for the whole backfill, not per chunk); a retry is a flow of its own. Typed, so
    the Prefect UI's run form offers exactly these and refuses anything else.
    """
    return final_state(
        run_pipeline(
            integration_id,
            since=since,
            until=until,
            dry_run=dry_run,
            trigger=trigger,
            alerts=trigger != "backfill",
        )
    )
