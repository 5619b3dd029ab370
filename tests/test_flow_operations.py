"""Retry, backfill, guards and alerts end to end: app database -> Prefect flows -> sandbox over
HTTP, under the session's Prefect test server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from factories import configure_xledger, seed_organisation
from sqlmodel import select

from integration_hub.db import app_session, hub_session
from integration_hub.mappings.spec import load_template
from integration_hub.models import ExpenseClaim, RecordOutcome, SyncRun
from integration_hub.services import alerts, health, history, sync
from integration_hub.services import configuration as config
from integration_hub.services.guards import ExportRunning
from integration_hub.tasks import lease

OPERATOR = config.Actor("test")
THREE_TOLLS = [
    {"category": "mileage", "amount_ore": 43_225},
    {"category": "meals", "amount_ore": 15_050, "employee_number": "1002"},
    {"category": "toll", "amount_ore": 4_400},
    {"category": "toll", "amount_ore": 2_950, "employee_number": "1002"},
    {"category": "toll", "amount_ore": 6_100},
]


@pytest.fixture
def org(quick_flow_runs: None, hub_env: str, vault_key: Any, xledger_sandbox: Any) -> Any:
    """``testorg`` on Xledger with toll mapped to 7145, an account Xledger does not have."""
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    company = state.add_company(token, employees=[{"code": "1001"}, {"code": "1002"}])
    seed_organisation("testorg", THREE_TOLLS)
    row = configure_xledger("testorg", server.url, token, toll_account="7145")
    return row, company


def _export(row: Any, **kwargs: Any) -> dict[str, Any]:
    from integration_hub.flows.export_expense_claims import export_expense_claims

    return export_expense_claims(integration_id=row.id, **kwargs)


def _outcomes(run_id: int) -> list[RecordOutcome]:
    with hub_session() as session:
        return list(session.exec(select(RecordOutcome).where(RecordOutcome.run_id == run_id)))


def test_retry_story_fix_the_mapping_retry_and_the_failures_become_exports(
    org: Any, webhook_receiver: Any
) -> None:
    row, company = org
    hook = f"{webhook_receiver.url}/hooks/s3cr3t-{secrets.token_hex(8)}"
    alerts.set_webhook("testorg", hook, OPERATOR)

    first = _export(row, trigger="schedule")
    assert (first["exported"], first["failed"]) == (2, 3)
    assert first["alert"] == "delivered"

    # What the admin sees: three failures with what they are, why, attempts and a retry.
    (report,) = health.check(OPERATOR, "testorg", "xledger")
    assert not report["healthy"] and report["failures_total"] == 3
    assert report["last_run"]["trigger"] == "schedule"
    assert {f["category"] for f in report["failures"]} == {"toll"}
    assert {f["amount"] for f in report["failures"]} == {"kr 44,00", "kr 29,50", "kr 61,00"}
    assert {f["volunteer"] for f in report["failures"]} == {"Frivillig 1001", "Frivillig 1002"}
    assert all("account 7145 does not exist in Xledger" in f["reason"] for f in report["failures"])
    assert {f["attempt"] for f in report["failures"]} == {1}
    assert report["retry"] == f"integrations retry {first['run_id']}"

    # The webhook heard counts and a link, never what the records are.
    (call,) = webhook_receiver.received
    payload = call["json"]
    assert payload["event"] == "export.failures"
    assert payload["counts"] == {
        "extracted": 5,
        "exported": 2,
        "failed": 3,
        "skipped": 0,
        "waiting": 0,
    }
    assert payload["run_id"] == first["run_id"] and payload["organisation"] == "testorg"
    for secret_or_content in ("Frivillig", "44,00", "4400", "7145", "toll", hook, "s3cr3t"):
        assert secret_or_content not in call["body"]

    mapping = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    mapping["value_maps"]["expense_accounts"]["toll"] = "7140"
    config.save_mapping(row, mapping, OPERATOR)

    retried = sync.retry_run(first["run_id"], OPERATOR)
    assert (retried["exported"], retried["failed"], retried["skipped"]) == (3, 0, 0)
    assert retried["trigger"] == "retry" and retried["retry_of_run_id"] == first["run_id"]
    assert {o.attempt for o in _outcomes(retried["run_id"])} == {2}
    assert len(company.ledger) == 2 * 5
    assert len(webhook_receiver.received) == 1  # nothing failed: no alert

    runs = history.list_runs(row, OPERATOR)
    assert [(r["trigger"], r["status"]) for r in runs] == [
        ("retry", "succeeded"),
        ("schedule", "partial"),
    ]
    (after,) = health.check(OPERATOR, "testorg", "xledger")
    assert after["healthy"] and after["failures"] == []

    # Starting the same retry again (as a rerun from the Prefect UI would) posts nothing.
    again = sync.retry_run(first["run_id"], OPERATOR)
    assert (again["exported"], again["failed"], again["requests_sent"]) == (0, 0, 0)
    assert again["skipped_reasons"] == {"already exported by an earlier run": 3}
    assert len(company.ledger) == 2 * 5


def test_a_prefect_retry_of_a_crashed_flow_run_posts_nothing_twice(
    org: Any, monkeypatch: pytest.MonkeyPatch, webhook_receiver: Any
) -> None:
    """Prefect reruns the whole flow run (tasks not persisted): the ledger stops a second post."""
    import integration_hub.flows.pipeline as pipeline
    from integration_hub.flows.export_expense_claims import export_expense_claims

    row, company = org
    webhook_receiver.status = 500  # a broken webhook must not fail anything either
    alerts.set_webhook("testorg", f"{webhook_receiver.url}/hooks/t", OPERATOR)
    real_finish, calls = pipeline.finish_run, []

    def crash_once(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the worker lost its database after sending")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(pipeline, "finish_run", crash_once)
    flaky = export_expense_claims.with_options(retries=1, retry_delay_seconds=0)
    summary = flaky(integration_id=row.id)

    assert len(calls) == 2
    assert len(company.ledger) == 2 * 2  # the two good claims, posted once
    assert Counter(i["extIdentifier"] for i in company.ledger).most_common(1)[0][1] == 2
    with hub_session() as session:
        first, second = session.exec(select(SyncRun).order_by(SyncRun.id)).all()
    assert first.flow_run_id == second.flow_run_id  # one Prefect flow run, two attempts
    assert (first.status, first.exported) == ("failed", 2)  # its sent records keep an outcome
    assert (summary["run_id"], summary["exported"], summary["failed"]) == (second.id, 0, 3)
    assert summary["alert"] == "failed: HTTP 500"
    assert lease.holder(row.id) is None


def test_backfill_chunk_by_chunk_stops_and_resumes_without_sending_twice(
    org: Any, prefect_harness: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    row, company = org
    with app_session() as session:  # spread the approvals over three months
        claims = session.exec(select(ExpenseClaim).order_by(ExpenseClaim.id)).all()
        for claim, month in zip(claims, (1, 1, 2, 2, 2), strict=True):
            claim.approved_at = datetime(2026, month, 10, 9, 0, tzinfo=UTC)
            claim.category = "mileage"
            session.add(claim)

    def stop_after_first(chunk: dict[str, Any]) -> None:
        raise RuntimeError("operator pressed stop")

    with pytest.raises(RuntimeError, match="operator pressed stop"):
        sync.run_backfill(
            "testorg", "xledger", OPERATOR, start=date(2026, 1, 1), end=date(2026, 2, 28),
            on_chunk=stop_after_first,
        )  # fmt: skip
    assert len(company.ledger) == 2 * 2

    seen: list[dict[str, Any]] = []
    result = sync.run_backfill(
        "testorg", "xledger", OPERATOR, start=date(2026, 1, 1), end=date(2026, 2, 28),
        on_chunk=seen.append,
    )  # fmt: skip
    assert [c["status"] for c in seen] == ["already done", "succeeded"]
    assert [(c["index"], c["total"]) for c in seen] == [(1, 2), (2, 2)]
    assert (result["status"], result["exported"], result["chunks_skipped"]) == ("succeeded", 3, 1)
    assert len(company.ledger) == 2 * 5

    again = sync.run_backfill(
        "testorg", "xledger", OPERATOR, start=date(2026, 1, 1), end=date(2026, 2, 28)
    )
    assert again["chunks_skipped"] == 2 and again["exported"] == 0
    assert len(company.ledger) == 2 * 5

    runs = history.list_runs(row, OPERATOR)
    assert [r["window"] for r in runs if r["trigger"] == "backfill"] == [
        ["2026-02-01", "2026-02-28"],
        ["2026-01-01", "2026-01-31"],
    ]
    with get_client(sync_client=True) as client:
        (progress,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"backfill-xledger-integration-{row.id}"])
            ),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert progress.type == "progress" and float(json.loads(str(progress.data))) == 100.0


def test_a_second_export_waits_for_the_first_or_is_refused_never_parallel(
    org: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    row, company = org
    monkeypatch.setattr(lease, "LEASE_WAIT_S", 0.0)
    held = lease.acquire(row.id, 999, what="Xledger for testorg", wait_s=0)
    with pytest.raises(ExportRunning) as refused:
        sync.run_export("testorg", "xledger", OPERATOR)
    assert str(refused.value).startswith(
        "an export of Xledger for testorg is already running (run 999, started "
    )
    assert company.mutations == 0
    with hub_session() as session:
        run = session.exec(select(SyncRun)).one()
    assert run.status == "failed" and "already running" in (run.error or "")

    monkeypatch.setattr(lease, "LEASE_WAIT_S", 30.0)
    monkeypatch.setattr(lease, "POLL_S", 0.05)
    threading.Timer(0.5, held.release).start()
    summary = sync.run_export("testorg", "xledger", OPERATOR)  # waits, then runs
    assert summary["exported"] == 2
    assert lease.holder(row.id) is None


def test_a_lost_answer_waits_then_the_run_that_finds_it_exports_it_and_dead_runs_end(
    org: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target commits and the answer is lost: the records wait (not failures, not re-sent),
    a run after the settle time finds them and records them as its exports; a run that was
    killed is marked interrupted by the next run; the runs add up to what Xledger holds."""
    from integration_hub import settings
    from integration_hub.models import ExportLedger
    from integration_hub.tasks.record import start_run

    row, company = org
    monkeypatch.setenv("INTEGRATIONS_TARGETS__XLEDGER__READ_TIMEOUT_SECONDS", "0.5")
    settings.reset_settings()
    company.set_faults(commit_then_timeout=1, hang_seconds=3)
    killed = start_run(
        integration_id=row.id,
        organisation_id=row.organisation_id,
        trigger="manual",
        since=None,
        until=None,
        dry_run=False,
        flow_run_id=None,
        mapping_version=1,
    )

    first = _export(row)
    assert (first["exported"], first["failed"], first["waiting"]) == (0, 3, 2)
    assert first["status"] == "partial"
    assert all("waiting to be confirmed" in r for r in first["waiting_reasons"])
    with hub_session() as session:
        dead = session.get(SyncRun, killed)
        assert dead is not None and dead.status == "interrupted"
        assert "stopped before it finished" in (dead.error or "")
    (report,) = health.check(OPERATOR, "testorg", "xledger")
    assert report["waiting"] == 2

    # Inside the settle time the next run neither looks up nor sends them.
    early = _export(row)
    assert (early["exported"], early["waiting"]) == (0, 2)
    assert company.mutations == 1

    # The settle time passes (the rows' clock is moved, not the test's).
    with hub_session() as session:
        for entry in session.exec(select(ExportLedger)):
            entry.settle_after = datetime(2000, 1, 1, tzinfo=UTC)
            session.add(entry)
    second = _export(row)
    assert (second["exported"], second["waiting"]) == (2, 0)
    assert company.mutations == 1  # found at Xledger, never posted again

    with hub_session() as session:
        exported = list(
            session.exec(select(RecordOutcome).where(RecordOutcome.status == "exported"))
        )
    assert Counter(o.record_id for o in exported) == Counter({1: 1, 2: 1})
    debits = [Decimal(str(item["amount"])) for item in company.ledger]
    debits = [amount for amount in debits if amount > 0]
    assert len(debits) == 2
    held_ore = int(sum(debits) * 100)
    assert sum(o.amount_ore or 0 for o in exported) == held_ore
