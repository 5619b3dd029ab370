"""``integrations health | runs | retry | backfill | alerts``, in-process, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from factories import configure_xledger, record_run, seed_organisation
from typer.testing import CliRunner

from integration_hub.adapters.registry import feature_flag
from integration_hub.cli import app
from integration_hub.money import format_nok
from integration_hub.services import configuration as config
from integration_hub.services import health, sync
from integration_hub.services.errors import Forbidden

runner = CliRunner()
FLOW_RUN = "6d1f7a4e-0000-4000-8000-000000000001"


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


@pytest.fixture
def org(hub_env: str, vault_key: Path, xledger_sandbox: Any) -> dict[str, Any]:
    """``bf`` on Xledger (toll mapped to 7145, which Xledger lacks), schedule daily 02:00."""
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    company = state.add_company(token, employees=[{"code": "1001"}])
    org_id = seed_organisation(
        "bf",
        [
            {"category": "mileage", "amount_ore": 43_225},
            {"category": "toll", "amount_ore": 4_400},
            {"category": "travel", "approved_at": datetime(2026, 1, 20, 9, 0, tzinfo=UTC)},
        ],
    )
    config.set_feature_flag(org_id, feature_flag("xledger"), True, config.OPERATOR)
    row = configure_xledger("bf", server.url, token, toll_account="7145")
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, config.Actor("test"))
    return {"row": row, "org_id": org_id, "company": company}


def test_health_shows_failures_what_they_are_why_and_what_to_do(org: dict[str, Any]) -> None:
    row = org["row"]
    config.test_connection(row, config.Actor("test"))
    run_id = record_run(
        row.id,
        org["org_id"],
        failures=[
            {
                "record_id": 301,
                "reason": "account 7145 does not exist in Xledger; fix the mapping, then retry",
                "category": "toll",
                "volunteer_name": "Ola Olsen",
                "amount_ore": 29_951,
                "attempt": 2,
            }
        ],
    )
    result = invoke("health", "bf", "xledger", env={"PREFECT_UI_URL": "http://127.0.0.1:4200"})
    assert result.exit_code == 1, result.output
    out = result.output
    assert "Xledger for bf (draft): needs attention" in out
    assert "the last run has 1 failed record(s)" in out
    assert "2026-03-02 02:00:03" in out and "schedule" in out and "4.2 s" in out
    for shown in ("expense claim 301", "toll", "kr 299,51", "Ola Olsen", "account 7145 does not"):
        assert shown in out
    assert f"Prefect flow run: http://127.0.0.1:4200/runs/flow-run/{FLOW_RUN}" in out
    assert f"retry the failures: integrations retry {run_id}" in out
    assert "next run: " in out and "02:00:00 (0 2 * * *, Europe/Oslo)" in out
    assert "connection test: ok" in out

    stranger = config.Actor("hlf-admin", organisation_id=org["org_id"] + 1)
    with pytest.raises(Forbidden):
        health.check(stranger, "bf")
    with pytest.raises(Forbidden):
        sync.retry_run(run_id, stranger)
    assert health.check(stranger) == []  # sees no other organisation's integrations

    data = json.loads(invoke("health", "--json").output)
    assert [(h["organisation"], h["type"]) for h in data] == [("bf", "xledger")]
    assert data[0]["failures"][0]["attempt"] == 2
    assert data[0]["last_run"]["link"] is None  # no UI URL known outside the env above


def test_runs_lists_every_trigger_as_a_table_and_as_json(org: dict[str, Any]) -> None:
    row, org_id = org["row"], org["org_id"]
    first = record_run(row.id, org_id, failures=[{"record_id": 1, "reason": "x"}])
    record_run(row.id, org_id, trigger="retry", retry_of_run_id=first, exported=1)
    record_run(
        row.id,
        org_id,
        trigger="backfill",
        window_start=date(2026, 1, 1),
        window_end=date(2026, 1, 31),
    )
    out = invoke("runs", "bf", "xledger").output
    for shown in ("schedule", "retry of #1", "backfill", "2026-01-01 .. 2026-01-31", "partial"):
        assert shown in out
    assert format_nok(123_456) in out and "amount exported" in out
    history = json.loads(invoke("runs", "bf", "xledger", "--json", "--limit", "0").output)
    assert [r["trigger"] for r in history] == ["backfill", "retry", "schedule"]
    assert history[1]["retry_of_run_id"] == first
    assert {"window", "requests_sent", "duration_s", "exported_amount_ore", "link"} <= set(
        history[0]
    )


def test_alerts_register_from_the_environment_show_masked_test_remove(
    org: dict[str, Any], webhook_receiver: Any
) -> None:
    url = f"{webhook_receiver.url}/hooks/{secrets.token_hex(16)}"
    saved = invoke("alerts", "bf", "--webhook-from-env", "BF_HOOK", env={"BF_HOOK": url})
    assert saved.exit_code == 0, saved.output
    assert "••••••" + url[-4:] in saved.output
    tested = invoke("alerts", "bf", "--test")
    assert "test event: delivered" in tested.output and len(webhook_receiver.received) == 1
    shown = invoke("alerts", "bf")
    assert "••••••" + url[-4:] in shown.output and "test: delivered" in shown.output
    watched = json.loads(invoke("health", "--json").output)
    assert [h["type"] for h in watched] == ["xledger"]  # the alert channel is no integration
    assert invoke("alerts", "bf", "--remove").output.strip() == "alert webhook removed"
    assert "alert webhook for bf: none" in invoke("alerts", "bf").output
    unset = invoke("alerts", "bf", "--webhook-from-env", "NOPE_NOT_SET")
    assert unset.exit_code == 2 and "$NOPE_NOT_SET is not set" in unset.output
    for result in (saved, tested, shown):
        assert url not in result.output and url[-20:] not in result.output


def test_sync_then_retry_and_backfill_from_the_command_line(
    org: dict[str, Any], quick_flow_runs: None
) -> None:
    from integration_hub.mappings.spec import load_template

    first = invoke("sync", "bf", "xledger", "--since", "2026-03-01")
    assert first.exit_code == 1 and "retry the failures: integrations retry 1" in first.output

    nothing = invoke("retry", "1", "--integration", "bf", "xledger")
    assert nothing.exit_code == 2 and "either RUN_ID or --integration" in nothing.output

    mapping = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    mapping["value_maps"]["expense_accounts"]["toll"] = "7140"
    config.save_mapping(org["row"], mapping, config.Actor("test"))
    retried = invoke("retry", "--integration", "bf", "xledger")
    assert retried.exit_code == 0, retried.output
    assert "retry of the failed records of run 1" in retried.output
    assert "exported 1 (kr 44,00)" in retried.output

    span = ("--from", "2026-01-15", "--to", "2026-02-15")
    backfill = invoke("backfill", "bf", "xledger", *span)
    assert backfill.exit_code == 0, backfill.output
    assert "Backfill 2026-01-15 .. 2026-02-15 by month: succeeded" in backfill.output
    done = "2 of 2 chunks done (0 already done before); 0 already exported earlier, exported 1 "
    assert done in backfill.output
    assert len(org["company"].ledger) == 2 * 3  # every claim once, whatever ran it

    bad = invoke("backfill", "bf", "xledger", "--from", "2026-02-01", "--to", "2026-01-01")
    assert bad.exit_code == 2 and "starts (2026-02-01) after it ends" in bad.output
    assert "retry of #1" in invoke("runs", "bf", "xledger").output
