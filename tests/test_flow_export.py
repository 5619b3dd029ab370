"""``export_expense_claims`` end to end: app database -> Prefect flow -> sandbox over HTTP."""

from __future__ import annotations

import secrets
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import pytest
from factories import configure_xledger, seed_organisation
from sqlmodel import select

from integration_hub.db import hub_session
from integration_hub.models import ExportLedger, RecordOutcome, SyncRun

CLAIMS = [
    {"category": "mileage", "amount_ore": 43_225},
    {"category": "meals", "amount_ore": 15_050},
    {"category": "travel", "amount_ore": 120_000},
    {"category": "toll", "amount_ore": 4_400},  # mapped to an account Xledger lacks
    {"category": "travel", "employee_number": None},  # volunteer without employee number
    {"category": "parking", "amount_ore": 9_000},  # excluded by the organisation
    {"category": "meals", "status": "submitted"},  # not approved: not extracted
    {"category": "meals", "approved_at": datetime(2023, 12, 1, 10, 0, tzinfo=UTC)},  # closed
]


@pytest.fixture
def configured(
    prefect_harness: Any, hub_env: str, vault_key: Any, xledger_sandbox: Any
) -> tuple[Any, Any]:
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    company = state.add_company(
        token, employees=[{"code": "1001"}, {"code": "1002"}], closed_before=date(2024, 1, 1)
    )
    seed_organisation("testorg", CLAIMS)
    row = configure_xledger(
        "testorg", server.url, token, toll_account="7145", exclusions=("parking",)
    )
    return row, company


def _run(row: Any, **kwargs: Any) -> dict[str, Any]:
    from integration_hub.flows.export_expense_claims import export_expense_claims

    return export_expense_claims(integration_id=row.id, **kwargs)


def test_export_end_to_end_then_nothing_twice(configured: tuple[Any, Any]) -> None:
    row, company = configured
    summary = _run(row)
    assert summary["status"] == "partial"
    assert (summary["extracted"], summary["exported"], summary["failed"], summary["skipped"]) == (
        7,
        3,
        3,
        1,
    )
    assert summary["exported_amount_ore"] == 43_225 + 15_050 + 120_000
    # the schema check, the vouchers, and one question about import errors for the run
    assert summary["requests_sent"] == 3
    reasons = [f["reason"] for f in summary["failures"]]
    assert any("account 7145 does not exist in Xledger" in r for r in reasons)
    assert any("could not import" in r and "period" in r and "closed" in r for r in reasons)
    assert any("no employee number" in r for r in reasons)
    assert len(company.ledger) == 8  # the closed-period voucher is staged, then not imported
    assert len(company.journal) == 6 and len(company.import_errors) == 2
    amounts = Counter(item["extIdentifier"] for item in company.ledger)
    assert set(amounts.values()) == {2}

    with hub_session() as session:
        outcomes = session.exec(select(RecordOutcome)).all()
        ledger = session.exec(select(ExportLedger)).all()
        run = session.get(SyncRun, summary["run_id"])
    assert Counter(o.status for o in outcomes) == {"exported": 3, "failed": 3, "skipped": 1}
    assert all(o.reason for o in outcomes if o.status != "exported")
    assert all(o.target_reference for o in outcomes if o.status == "exported")
    assert {o.summary["category"] for o in outcomes if o.status == "failed"} == {
        "toll",
        "travel",
        "meals",
    }
    # the voucher Xledger holds but did not import: looked up by later runs, never sent again
    assert sorted(entry.state for entry in ledger) == ["exported"] * 3 + ["refused"]
    assert run is not None and run.flow_run_id

    again = _run(row)
    assert (again["exported"], again["failed"], again["skipped"]) == (0, 3, 1)
    assert len(company.ledger) == 8 and company.mutations == 1  # nothing posted twice
    assert again["requests_sent"] == 2  # a lookup and the import check; the schema is known
    attempts = sorted(f["attempt"] for f in again["failures"])
    assert attempts == [2, 2, 2]


def test_a_schema_without_a_field_we_send_stops_the_export(
    prefect_harness: Any, hub_env: str, vault_key: Any, xledger_sandbox: Any
) -> None:
    """A tenant whose AddGLImportItemsInput lacks trRegNumber: nothing is sent, and the run
    says which field and what to do."""
    from integration_hub.sandbox.xledger_schema import SchemaChanges

    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    company = state.add_company(
        token,
        employees=[{"code": "1001"}, {"code": "1002"}],
        schema_changes=SchemaChanges(drop=("trRegNumber",)),
    )
    seed_organisation("testorg", CLAIMS[:3])
    row = configure_xledger("testorg", server.url, token)
    summary = _run(row)
    assert summary["status"] == "failed" and summary["exported"] == 0
    assert "AddGLImportItemsInput.node.trRegNumber" in summary["error"]
    assert "schema no longer matches" in summary["error"]
    assert company.mutations == 0 and summary["requests_sent"] == 1  # the schema check
    assert all("not sent" in f["reason"] for f in summary["failures"])


def test_dry_run_sends_nothing_and_records_no_outcomes(configured: tuple[Any, Any]) -> None:
    row, company = configured
    summary = _run(row, dry_run=True)
    assert summary["dry_run"] is True
    assert summary["would_export"] == 4  # the closed-period claim is only refused by Xledger
    assert summary["preview"][0]["amount"] == "432.25"
    assert company.mutations == 0 and company.ledger == []
    with hub_session() as session:
        assert session.exec(select(RecordOutcome)).all() == []
        assert session.exec(select(ExportLedger)).all() == []


def test_window_limits_what_is_extracted(configured: tuple[Any, Any]) -> None:
    row, _ = configured
    summary = _run(row, since=date(2023, 11, 1), until=date(2023, 12, 31))
    assert summary["extracted"] == 1
    assert summary["failed"] == 1
    assert summary["window"] == ["2023-11-01", "2023-12-31"]


def test_failures_are_published_as_a_prefect_table_artifact(configured: tuple[Any, Any]) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    row, _ = configured
    summary = _run(row)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(summary["flow_run_id"])])
            )
        )
    by_key = {a.key: a for a in artifacts}
    failures = by_key[f"xledger-integration-{row.id}-failures"]
    assert failures.type == "table"
    assert "account 7145 does not exist" in str(failures.data)
    assert "Export to Xledger" in str(by_key[f"xledger-integration-{row.id}-summary"].data)
