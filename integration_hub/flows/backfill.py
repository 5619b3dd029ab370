"""``backfill_exports``: export a date range chunk by chunk, each chunk a run of its own.

Each chunk (a calendar month, ISO week or day of approval dates) is an ``export-expense-claims``
subflow with trigger ``backfill`` and the chunk as its window, so it has its own hub run, its own
Prefect flow run and its own lease. What was already exported is skipped by the ledger; a chunk
whose run finished (every record got an outcome) is recognised by its window and not run again,
so a backfill that was stopped (Ctrl-C, a crash, a refused start) is simply started again with the
same parameters. Progress: a Prefect progress artifact, and :func:`progress_listener` for a
terminal progress bar in the process that runs the flow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run

from integration_hub.flows.export_expense_claims import export_expense_claims
from integration_hub.flows.pipeline import ExportNotReady, alert, artifact_key, run_name
from integration_hub.models import RunFailure
from integration_hub.money import format_nok
from integration_hub.tasks.context import load_context
from integration_hub.tasks.failures import RunStopped
from integration_hub.tasks.record import finished_windows
from integration_hub.tasks.windows import chunk_windows

TRIGGER = "backfill"
COUNTS = (
    "extracted",
    "already_exported",  # by earlier runs: the ledger left them out
    "exported",
    "failed",
    "skipped",
    "waiting",
    "requests_sent",
    "exported_amount_ore",
)
Listener = Callable[[dict[str, Any]], None]
_LISTENER: ContextVar[Listener | None] = ContextVar("backfill_listener", default=None)


@contextmanager
def progress_listener(callback: Listener) -> Iterator[None]:
    """Call ``callback(chunk)`` after each chunk of a backfill run in this context."""
    token = _LISTENER.set(callback)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def _chunk_entry(index: int, total: int, window: tuple[date, date]) -> dict[str, Any]:
    return {
        "index": index,
        "total": total,
        "window": [window[0].isoformat(), window[1].isoformat()],
        **dict.fromkeys(COUNTS, 0),
    }


@flow(
    name="backfill-exports",
    flow_run_name=run_name,
    log_prints=False,
)
def backfill_exports(
    integration_id: int, start: date, end: date, chunk: Literal["month", "week", "day"] = "month"
) -> dict[str, Any]:
    """Export approved claims of ``start``..``end`` (approval dates) chunk by chunk."""
    windows = chunk_windows(start, end, chunk)
    context = load_context(integration_id)
    if context.mapping is None:
        raise ExportNotReady(
            f"{context.display_name} has no field mapping yet; finish the setup wizard first"
        )
    logger = get_run_logger()
    done = finished_windows(integration_id, TRIGGER)
    key = artifact_key("backfill", context.type_key, "integration", integration_id)
    progress_id = create_progress_artifact(
        progress=0.0, key=key, description=f"Backfill {start} to {end} by {chunk}"
    )
    listener = _LISTENER.get()
    chunks: list[dict[str, Any]] = []
    for index, window in enumerate(windows, start=1):
        entry = _chunk_entry(index, len(windows), window)
        previous = done.get(window)
        if previous is not None:
            entry.update(run_id=previous, status="already done")
        else:
            try:
                summary = export_expense_claims(
                    integration_id=integration_id,
                    since=window[0],
                    until=window[1],
                    trigger=TRIGGER,
                )
            except RunStopped as stopped:
                if stopped.failure is RunFailure.CANCELLED:
                    raise
                # The chunk's run is recorded with why; the next chunks would stop alike.
                entry.update(run_id=stopped.run_id, status="failed", error=stopped.reason)
                chunks.append(entry)
                if listener is not None:
                    listener(entry)
                break
            entry.update({name: summary[name] for name in COUNTS if name in summary})
            entry.update(run_id=summary["run_id"], status=summary["status"])
            entry["already_exported"] = max(
                0,
                entry["extracted"]
                - entry["exported"]
                - entry["failed"]
                - entry["skipped"]
                - entry.get("waiting", 0),
            )
        chunks.append(entry)
        logger.info(
            "chunk %s of %s (%s): %s", index, len(windows), entry["window"], entry["status"]
        )
        update_progress_artifact(
            progress_id,
            progress=100.0 * index / len(windows),
            description=f"Backfill {start} to {end}: {index} of {len(windows)} chunks",
        )
        if listener is not None:
            listener(entry)
        if entry["status"] == "failed":
            break  # the next chunks would fail alike (bad token, no credits): stop, rerun later
    result = _result(integration_id, start, end, chunk, chunks, len(windows))
    create_markdown_artifact(
        key=f"{key}-summary", markdown=backfill_markdown(result), description="Backfill summary"
    )
    if result["failed"] or result["status"] == "failed":
        result["alert"] = alert(
            context,
            {**result, "flow_run_id": str(flow_run.get_id() or ""), "run_id": None},
            "backfill.failures",
        )
    return result


def _result(
    integration_id: int,
    start: date,
    end: date,
    chunk: str,
    chunks: list[dict[str, Any]],
    total: int,
) -> dict[str, Any]:
    stopped = len(chunks) < total
    failed_runs = any(c["status"] == "failed" for c in chunks)
    totals = {name: sum(c[name] for c in chunks) for name in COUNTS}
    if stopped or failed_runs:
        status = "failed"
    elif totals["failed"]:
        status = "partial"
    else:
        status = "succeeded"
    return {
        "integration_id": integration_id,
        "trigger": TRIGGER,
        "window": [start.isoformat(), end.isoformat()],
        "chunk": chunk,
        "chunks": chunks,
        "chunks_total": total,
        "chunks_done": sum(1 for c in chunks if c["status"] != "failed"),
        "chunks_skipped": sum(1 for c in chunks if c["status"] == "already done"),
        "status": status,
        "error": next((c["error"] for c in chunks if c.get("error")), None),
        **totals,
    }


def backfill_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Backfill {result['window'][0]} to {result['window'][1]} by {result['chunk']} "
        f"({result['status']})",
        "",
        f"{result['chunks_done']} of {result['chunks_total']} chunks done "
        f"({result['chunks_skipped']} already done before).",
        "",
        "| window | run | status | already exported | exported | failed | skipped "
        "| amount exported |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['window'][0]} .. {c['window'][1]} | {c.get('run_id') or ''} | {c['status']} | "
        f"{c['already_exported']} | {c['exported']} | {c['failed']} | {c['skipped']} | "
        f"{format_nok(c['exported_amount_ore'])} |"
        for c in result["chunks"]
    ]
    return "\n".join(lines)
