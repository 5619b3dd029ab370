"""Record: the run's summary, every record's outcome, and the failures people must act on."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import func, insert, select

from integration_hub.db import hub_session
from integration_hub.models import (
    ExportLedger,
    LedgerState,
    OutcomeStatus,
    RecordOutcome,
    RunFailure,
    RunStatus,
    SyncRun,
    utcnow,
)

OUTCOME_FRAME_COLUMNS = [
    "record_id",
    "record_version",
    "status",
    "reason",
    "target_reference",
    "idempotency_key",
]


def start_run(
    *,
    integration_id: int,
    organisation_id: int,
    trigger: str,
    since: date | None,
    until: date | None,
    dry_run: bool,
    flow_run_id: str | None,
    mapping_version: int | None,
    retry_of_run_id: int | None = None,
) -> int:
    with hub_session() as session:
        run = SyncRun(
            integration_id=integration_id,
            organisation_id=organisation_id,
            trigger=trigger,
            window_start=since,
            window_end=until,
            dry_run=dry_run,
            flow_run_id=flow_run_id,
            mapping_version=mapping_version,
            retry_of_run_id=retry_of_run_id,
        )
        session.add(run)
        session.flush()
        return run.id or 0


def outcome_frame(status: OutcomeStatus, records: pd.DataFrame) -> pd.DataFrame:
    """Turn a (record_id, record_version, reason) frame into outcome rows of one status."""
    frame = pd.DataFrame(
        {
            "record_id": records["record_id"].astype("int64"),
            "record_version": records["record_version"].astype("int64"),
            "status": status.value,
            "reason": records.get("reason"),
            "target_reference": None,
            "idempotency_key": records.get("idempotency_key"),
        }
    )
    return frame[OUTCOME_FRAME_COLUMNS]


ID_QUERY_LIMIT = 9000
"""Above this many records, one grouped query over the integration's failures beats IN lists."""


def _previous_failures(integration_id: int, record_ids: list[int]) -> dict[tuple[int, int], int]:
    """(record id, version) -> failed attempts so far, for ``record_ids``."""
    table = RecordOutcome.__table__
    counts: dict[tuple[int, int], int] = {}
    if len(record_ids) > ID_QUERY_LIMIT:
        wanted = set(record_ids)
        with hub_session() as session:
            rows = session.execute(
                select(table.c.record_id, table.c.record_version, func.count())
                .where(
                    table.c.integration_id == integration_id,
                    table.c.status == OutcomeStatus.FAILED.value,
                )
                .group_by(table.c.record_id, table.c.record_version)
            )
            return {(r, v): n for r, v, n in rows if r in wanted}
    with hub_session() as session:
        for start in range(0, len(record_ids), 900):
            chunk = record_ids[start : start + 900]
            rows = session.execute(
                select(table.c.record_id, table.c.record_version, func.count())
                .where(
                    table.c.integration_id == integration_id,
                    table.c.status == OutcomeStatus.FAILED.value,
                    table.c.record_id.in_(chunk),
                )
                .group_by(table.c.record_id, table.c.record_version)
            )
            counts.update({(r, v): n for r, v, n in rows})
    return counts


def finish_run(
    run_id: int,
    *,
    integration_id: int,
    outcomes: pd.DataFrame,
    details: pd.DataFrame,
    extracted: int,
    requests_sent: int,
    error: str | None = None,
    failure: RunFailure | None = None,
    write_outcomes: bool = True,
) -> dict[str, Any]:
    """Store every outcome and the run's counts; returns the summary that flows print.
    ``error`` (with its ``failure`` kind) says why the run stopped before sending everything."""
    outcomes = outcomes.copy()
    amounts = details.set_index("record_id")["amount_ore"] if not details.empty else pd.Series()
    from_details = outcomes["record_id"].map(amounts)
    if "amount_ore" in outcomes:
        # The load engine knows each sent record's amount, also for records of earlier runs
        # it settled (which are not among this run's claims).
        outcomes["amount_ore"] = outcomes["amount_ore"].astype("Int64").fillna(from_details)
    else:
        outcomes["amount_ore"] = from_details
    # Attempts count the tries to send a record: failed ones, and the one that finally worked.
    tried_ids = sorted(
        {int(i) for i in outcomes.loc[outcomes["status"] != OutcomeStatus.SKIPPED, "record_id"]}
    )
    previous = _previous_failures(integration_id, tried_ids) if write_outcomes else {}
    summaries = _record_summaries(details)
    now = utcnow()
    rows = [
        {
            "run_id": run_id,
            "integration_id": integration_id,
            "record_type": "expense_claim",
            "record_id": int(o.record_id),
            "record_version": int(o.record_version),
            "status": o.status,
            "reason": None if pd.isna(o.reason) else str(o.reason),
            "target_reference": None if pd.isna(o.target_reference) else str(o.target_reference),
            "idempotency_key": None if pd.isna(o.idempotency_key) else str(o.idempotency_key),
            "attempt": previous.get((int(o.record_id), int(o.record_version)), 0) + 1,
            "amount_ore": None if pd.isna(o.amount_ore) else int(o.amount_ore),
            "summary": summaries.get(int(o.record_id), {}),
            "created_at": now,
        }
        for o in outcomes.itertuples(index=False)
    ]
    counts = outcomes["status"].value_counts()
    by_status = {s: int(counts.get(s.value, 0)) for s in OutcomeStatus}

    def amount(status: OutcomeStatus) -> int:
        return int(outcomes.loc[outcomes["status"] == status.value, "amount_ore"].fillna(0).sum())

    if error:
        status = RunStatus.FAILED
    elif by_status[OutcomeStatus.FAILED] or by_status[OutcomeStatus.WAITING]:
        status = RunStatus.PARTIAL
    else:
        status = RunStatus.SUCCEEDED
    with hub_session() as session:
        if write_outcomes and rows:
            session.execute(insert(RecordOutcome.__table__), rows)
        run = session.get(SyncRun, run_id)
        assert run is not None
        run.extracted = extracted
        run.exported = by_status[OutcomeStatus.EXPORTED]
        run.failed = by_status[OutcomeStatus.FAILED]
        run.skipped = by_status[OutcomeStatus.SKIPPED]
        run.waiting = by_status[OutcomeStatus.WAITING]
        run.exported_amount_ore = amount(OutcomeStatus.EXPORTED)
        run.failed_amount_ore = amount(OutcomeStatus.FAILED)
        run.requests_sent = requests_sent
        run.status = status.value
        run.error = error[:2000] if error else None
        run.failure = (failure or RunFailure.REFUSED).value if error else None
        run.finished_at = now
        session.add(run)
        summary = run_summary(run)
    summary["failures"] = [
        {
            "record_id": r["record_id"],
            "reason": r["reason"],
            "attempt": r["attempt"],
            **r["summary"],
        }
        for r in rows
        if r["status"] == OutcomeStatus.FAILED.value
    ]
    summary["skipped_reasons"] = (
        outcomes.loc[outcomes["status"] == OutcomeStatus.SKIPPED.value, "reason"]
        .value_counts()
        .to_dict()
    )
    summary["waiting_reasons"] = (
        outcomes.loc[outcomes["status"] == OutcomeStatus.WAITING.value, "reason"]
        .value_counts()
        .to_dict()
    )
    return summary


def fail_run(
    run_id: int,
    error: str,
    status: RunStatus = RunStatus.FAILED,
    failure: RunFailure | None = RunFailure.UNEXPECTED,
) -> None:
    """Mark a run that could not finish (or, ``INTERRUPTED``, that was killed), with why in
    words (``error``) and in kind (``failure``, :mod:`integration_hub.tasks.failures`).

    What it had already sent and the target confirmed (the ledger rows it confirmed) still gets
    an ``exported`` outcome of this run: a run that crashed after posting would otherwise leave
    those records without any outcome, since later runs skip them as already exported. What it
    left pending is settled, and recorded, by the run that looks it up.
    """
    ledger = ExportLedger.__table__
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
        if run is None:
            return
        recorded = session.execute(
            select(func.count()).where(RecordOutcome.__table__.c.run_id == run_id)
        ).scalar_one()
        sent = (
            []
            if recorded
            else session.execute(
                select(
                    ledger.c.record_id,
                    ledger.c.record_version,
                    ledger.c.record_type,
                    ledger.c.idempotency_key,
                    ledger.c.target_reference,
                    ledger.c.amount_ore,
                ).where(
                    ledger.c.confirmed_run_id == run_id,
                    ledger.c.state == LedgerState.EXPORTED.value,
                )
            ).all()
        )
    previous = _previous_failures(run.integration_id, sorted({r.record_id for r in sent}))
    now = utcnow()
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        if sent:
            session.execute(
                insert(RecordOutcome.__table__),
                [
                    {
                        "run_id": run_id,
                        "integration_id": run.integration_id,
                        "record_type": r.record_type,
                        "record_id": r.record_id,
                        "record_version": r.record_version,
                        "status": OutcomeStatus.EXPORTED.value,
                        "reason": None,
                        "target_reference": r.target_reference,
                        "idempotency_key": r.idempotency_key,
                        "attempt": previous.get((r.record_id, r.record_version), 0) + 1,
                        "amount_ore": r.amount_ore,
                        "summary": {},
                        "created_at": now,
                    }
                    for r in sent
                ],
            )
            run.exported = len(sent)
            run.exported_amount_ore = sum(int(r.amount_ore) for r in sent)
        run.status = status.value
        run.error = error[:2000]
        run.failure = failure.value if failure else None
        run.finished_at = now
        session.add(run)


def interrupt_dead_runs(integration_id: int, *, current_run_id: int) -> list[int]:
    """Mark this integration's runs that still say "running" but died (killed process, lost
    host) as interrupted, with what they had confirmed; their ids.

    Only called by a run that holds the integration's export lease: one export at a time, so
    every other non-dry run still "running" is dead. Dry runs take no lease and are left alone.
    """
    with hub_session() as session:
        dead = list(
            session.scalars(
                select(SyncRun.id).where(
                    SyncRun.integration_id == integration_id,
                    SyncRun.status == RunStatus.RUNNING.value,
                    SyncRun.dry_run == False,  # noqa: E712
                    SyncRun.id != current_run_id,
                )
            )
        )
    for run_id in dead:
        fail_run(
            run_id,
            "the run stopped before it finished (its process was killed or its machine "
            f"stopped); found by run {current_run_id}: what it had sent but not confirmed is "
            "looked up at the target and recorded by the run that finds it",
            RunStatus.INTERRUPTED,
            None,  # the status says it all: killed, not stopped by a person or a target
        )
    return [int(r) for r in dead if r is not None]


class NothingToRetry(ValueError):
    """The run has no failed records."""


def failed_records(run_id: int) -> tuple[int, list[tuple[int, int]]]:
    """(integration id, [(record id, version)]) of a run's failed records, for a retry."""
    table = RecordOutcome.__table__
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        rows = session.execute(
            select(table.c.record_id, table.c.record_version)
            .where(table.c.run_id == run_id, table.c.status == OutcomeStatus.FAILED.value)
            .order_by(table.c.record_id)
        ).all()
    return run.integration_id, [(int(r), int(v)) for r, v in rows]


FINISHED = (RunStatus.SUCCEEDED.value, RunStatus.PARTIAL.value)


def finished_windows(integration_id: int, trigger: str) -> dict[tuple[date, date], int]:
    """(window start, window end) -> run id of runs with ``trigger`` that finished (every record
    got an outcome): how a restarted backfill recognises the chunks it already did."""
    with hub_session() as session:
        rows = session.execute(
            select(SyncRun.id, SyncRun.window_start, SyncRun.window_end)
            .where(
                SyncRun.integration_id == integration_id,
                SyncRun.trigger == trigger,
                SyncRun.dry_run == False,  # noqa: E712
                SyncRun.status.in_(FINISHED),  # type: ignore[attr-defined]
            )
            .order_by(SyncRun.id)  # type: ignore[arg-type]
        ).all()
    return {(start, end): run_id for run_id, start, end in rows if start and end}


def run_summary(run: SyncRun) -> dict[str, Any]:
    duration = (
        (run.finished_at - run.started_at).total_seconds()
        if run.finished_at and run.started_at
        else None
    )
    return {
        "run_id": run.id,
        "integration_id": run.integration_id,
        "trigger": run.trigger,
        "status": run.status,
        "dry_run": run.dry_run,
        "window": [
            run.window_start.isoformat() if run.window_start else None,
            run.window_end.isoformat() if run.window_end else None,
        ],
        "extracted": run.extracted,
        "exported": run.exported,
        "failed": run.failed,
        "skipped": run.skipped,
        "waiting": run.waiting,
        "exported_amount_ore": run.exported_amount_ore,
        "failed_amount_ore": run.failed_amount_ore,
        "requests_sent": run.requests_sent,
        "duration_s": duration,
        "error": run.error,
        "failure": run.failure,
        "flow_run_id": run.flow_run_id,
        "retry_of_run_id": run.retry_of_run_id,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _record_summaries(details: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """What a person needs to recognise a record: never secrets, only app facts."""
    if details.empty:
        return {}
    columns = [
        c for c in ("category", "volunteer_name", "expense_date", "amount_ore") if c in details
    ]
    subset = details.set_index("record_id")[columns]
    return {
        int(record_id): {
            k: (None if pd.isna(v) else (int(v) if k == "amount_ore" else str(v)))
            for k, v in values.items()
        }
        for record_id, values in subset.to_dict("index").items()
    }
