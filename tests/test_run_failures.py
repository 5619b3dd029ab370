"""Failures a person can act on (issue 12 §1, §2): a run that stops says why in one sentence
and of what kind; a target down for a while is waited out at run level, within a bounded time;
the CLI ends with one line and a documented exit code, never a traceback; Ctrl-C stops a sync
within seconds and is recorded."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from factories import configure_xledger, seed_organisation
from typer.testing import CliRunner

from integration_hub.adapters.base import RunAbort, TransientError
from integration_hub.db import hub_session
from integration_hub.models import RunFailure, RunStatus, SyncRun
from integration_hub.tasks import failures
from integration_hub.tasks.context import ExportNotReady
from integration_hub.tasks.lease import ExportBusy

CLAIMS = [
    {"category": "mileage", "amount_ore": 43_225},
    {"category": "meals", "amount_ore": 15_050},
]


# -- the table: exception -> kind and reason ------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TransientError("Xledger could not be reached (ConnectError)"), RunFailure.UNREACHABLE),
        (RunAbort("Xledger refused the token"), RunFailure.REFUSED),
        (ExportNotReady("Xledger has no field mapping yet"), RunFailure.CONFIGURATION),
        (KeyboardInterrupt(), RunFailure.CANCELLED),
        (ZeroDivisionError("division by zero"), RunFailure.UNEXPECTED),
    ],
)
def test_what_stopped_a_run_decides_its_kind_never_its_text(
    exc: BaseException, kind: RunFailure
) -> None:
    found, reason = failures.classify(exc, "Xledger")
    assert found is kind
    assert "Traceback" not in reason and reason
    if kind is RunFailure.UNEXPECTED:
        assert "ZeroDivisionError" in reason and "operators" in reason
    if kind is RunFailure.CANCELLED:
        assert "again" in reason  # what to do


def test_a_busy_integration_is_its_own_kind() -> None:
    from datetime import UTC, datetime

    from integration_hub.tasks.lease import Holder

    now = datetime.now(UTC)
    holder = Holder(integration_id=1, run_id=4, owner="host:1", acquired_at=now, expires_at=now)
    assert failures.classify(ExportBusy(holder, "Xledger for hlf"), "Xledger")[0] is RunFailure.BUSY


def test_the_retry_budget_doubles_its_waits_and_ends() -> None:
    now = [100.0]
    budget = failures.RetryBudget(
        seconds=60, first_wait_s=10, max_wait_s=25, clock=lambda: now[0], sleep=lambda s: None
    )
    waits = []
    while (wait := budget.next_wait()) is not None:
        waits.append(wait)
        now[0] += wait
    assert waits == [10, 20, 25, 5]  # doubling, capped, and the last one only what is left
    assert budget.tried_s == 60
    assert failures.RetryBudget(seconds=0).next_wait() is None


def test_reasons_read_as_sentences() -> None:
    cause = "Xledger could not be reached (ConnectError) (gave up after 5 attempts)"
    reason = failures.unreachable_reason("Xledger", cause, 1800)
    assert reason.startswith("Xledger could not be reached (ConnectError); the hub kept trying")
    assert "30 min" in reason and "next run" in reason and "gave up after" not in reason
    assert "kept trying" not in failures.unreachable_reason("Xledger", cause, 0.2)
    waiting = failures.waiting_message("Xledger", cause, 15, 2)
    assert "trying again in 15 s (try 2)" in waiting and "Ctrl-C" in waiting


# -- end to end: the pipeline waits out an outage, or stops with the reason -------------------
@pytest.fixture
def xledger_org(
    quick_flow_runs: None,
    hub_env: str,
    vault_key: Any,
    xledger_sandbox: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    from integration_hub.settings import get_settings

    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    company = state.add_company(token, employees=[{"code": "1001"}, {"code": "1002"}])
    seed_organisation("testorg", CLAIMS)
    row = configure_xledger("testorg", server.url, token)
    monkeypatch.setenv("INTEGRATIONS_REQUEST_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("INTEGRATIONS_REQUEST_RETRY_BASE_DELAY_SECONDS", "0")
    monkeypatch.setenv("INTEGRATIONS_RUN_RETRY_FIRST_WAIT_SECONDS", "0.01")
    get_settings.cache_clear()
    yield row, company
    get_settings.cache_clear()


def _run(run_id: int) -> SyncRun:
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        return run


def test_a_target_down_for_a_while_is_waited_out_and_the_night_is_not_lost(
    xledger_org: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integration_hub.services import sync
    from integration_hub.settings import get_settings

    _row, company = xledger_org
    monkeypatch.setenv("INTEGRATIONS_MANUAL_RUN_RETRY_SECONDS", "30")
    get_settings.cache_clear()
    company.set_faults(fail_5xx=3)  # the first try's read fails twice, the next try's once
    heard: list[str] = []
    with failures.announcements(heard.append):
        summary = sync.run_export("testorg", "xledger", failures_actor())
    assert summary["status"] == RunStatus.SUCCEEDED.value, summary
    assert summary["exported"] == 2 and summary["failure"] is None
    assert len(heard) == 1 and "trying again" in heard[0] and "HTTP 503" in heard[0]


def test_a_target_down_longer_than_the_budget_stops_the_run_with_why(
    xledger_org: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integration_hub.services import sync
    from integration_hub.services.errors import RunFailed
    from integration_hub.settings import get_settings

    _row, company = xledger_org
    monkeypatch.setenv("INTEGRATIONS_MANUAL_RUN_RETRY_SECONDS", "0.05")
    get_settings.cache_clear()
    company.set_faults(fail_5xx=1000)
    with pytest.raises(RunFailed) as stopped:
        sync.run_export("testorg", "xledger", failures_actor())
    assert stopped.value.failure == "unreachable"
    run = _run(stopped.value.run_id)
    assert run.status == RunStatus.FAILED.value and run.failure == "unreachable"
    assert run.error is not None and run.error.startswith("Xledger is unavailable (HTTP 503)")
    assert "TransientError" not in run.error and "next run" in run.error
    company.set_faults(fail_5xx=0)


def failures_actor() -> Any:
    from integration_hub.services import configuration as config

    return config.Actor("test")


# -- the CLI: one last line, a documented exit code, no traceback ----------------------------
def test_the_cli_ends_a_target_down_sync_with_one_line_and_exit_3(
    xledger_org: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integration_hub.cli import app
    from integration_hub.settings import get_settings

    _row, company = xledger_org
    monkeypatch.setenv("INTEGRATIONS_MANUAL_RUN_RETRY_SECONDS", "0")
    get_settings.cache_clear()
    company.set_faults(fail_5xx=1000)
    result = CliRunner().invoke(app, ["sync", "testorg", "xledger"])
    company.set_faults(fail_5xx=0)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Run ") and "stopped: Xledger is unavailable (HTTP 503)" in last


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_the_log(
    hub_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integration_hub import cli
    from integration_hub.settings import get_settings

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("integration_hub.services.configuration.organisation", broken)
    result = CliRunner().invoke(cli.app, ["credentials", "show", "testorg", "xledger"])
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output
    assert "ZeroDivisionError" in result.output and "cli.log" in result.output
    log = get_settings().var_dir / "logs" / "cli.log"
    assert "Traceback" in log.read_text() and oct(log.stat().st_mode & 0o777) == "0o600"


# -- Ctrl-C: a real terminal's SIGINT to the whole process group ------------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_one_ctrl_c_stops_a_waiting_sync_within_seconds(
    xledger_org: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The sync waits for a target that is down; one SIGINT to its process group (what a
    terminal sends) ends it within a few seconds, exit 130, one line, recorded as cancelled.
    The shared Prefect server it used is in its own session: the Ctrl-C does not reach it."""
    _row, company = xledger_org
    company.set_faults(fail_5xx=100_000)
    env = {
        **os.environ,
        "INTEGRATIONS_MANUAL_RUN_RETRY_SECONDS": "600",
        "INTEGRATIONS_RUN_RETRY_FIRST_WAIT_SECONDS": "1",
        "INTEGRATIONS_PREFECT_SERVER_IDLE_SECONDS": "0",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
    }
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "integration_hub.cli", "sync", "testorg", "xledger"]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _waiting_run():
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        assert _waiting_run(), "the sync never started its run"
        time.sleep(1.0)  # inside the wait for the target
        os.killpg(process.pid, signal.SIGINT)
        sent = time.monotonic()
        out, err = process.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        company.set_faults(fail_5xx=0)
    assert process.returncode == 130, (out, err)
    assert took < 10, took
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith("Stopped (Ctrl-C).")
    with hub_session() as session:
        run = session.query(SyncRun).order_by(SyncRun.id.desc()).first()  # type: ignore[union-attr]
        assert run is not None and run.failure == "cancelled"


def _waiting_run() -> bool:
    with hub_session() as session:
        return session.query(SyncRun).filter(SyncRun.status == "running").count() > 0


# -- Prefect as the operators' surface: names that say what ran and how it went ------------------
def test_a_run_with_failures_is_named_so_in_prefect(
    quick_flow_runs: None, hub_env: str, vault_key: Any, xledger_sandbox: Any
) -> None:
    from prefect.client.orchestration import get_client

    from integration_hub.flows.export_expense_claims import export_expense_claims

    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    state.add_company(token, employees=[{"code": "1001"}, {"code": "1002"}])
    seed_organisation("namedorg", [*CLAIMS, {"category": "toll", "amount_ore": 4_400}])
    row = configure_xledger("namedorg", server.url, token, toll_account="7145")  # not in Xledger
    final = export_expense_claims(integration_id=row.id, since=None, until=None, return_state=True)
    assert final.name == "Completed with failures" and final.is_completed()
    assert final.message == "1 failed, 0 waiting to be confirmed"
    assert final.result()["failed"] == 1  # callers still get the summary
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(final.state_details.flow_run_id)
    assert flow_run.name == "namedorg-xledger-manual"


def test_the_run_history_fits_an_80_column_terminal() -> None:
    from rich.console import Console

    from integration_hub.cli_operations import runs_table

    run = {
        "run_id": 12345,
        "started_at": "2026-12-02T01:00:03+00:00",
        "trigger": "schedule",
        "window": [None, None],
        "status": "partial",
        "dry_run": False,
        "exported": 100_000,
        "failed": 12,
        "skipped": 3,
        "exported_amount_ore": 123_456_789_00,
        "failed_amount_ore": 1_000_00,
        "requests_sent": 200,
        "duration_s": 312.5,
        "retry_of_run_id": None,
    }
    for width in (80, 200):
        out = Console(width=width, record=True, highlight=False)
        out.print(runs_table([run], title="history", width=width))
        text = out.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        assert "#12345" in text and "100000" in text and "kr 123\xa0456\xa0789,00" in text
        assert "…" not in text  # nothing that matters is cut
    assert "duration" in text  # the wide table has everything


def test_deployment_parameters_are_typed_so_a_bad_value_never_runs(quick_flow_runs: None) -> None:
    """The Prefect UI's run form offers these choices; a value outside them is refused before
    the flow starts (Prefect validates parameters against the signature)."""
    from prefect.exceptions import ParameterTypeError

    from integration_hub.flows.backfill import backfill_exports
    from integration_hub.flows.export_expense_claims import export_expense_claims

    with pytest.raises(ParameterTypeError):
        export_expense_claims(integration_id=1, trigger="whenever")
    with pytest.raises(ParameterTypeError):
        backfill_exports(integration_id=1, start="2026-01-01", end="2026-01-31", chunk="year")
    schema = export_expense_claims.parameters.model_dump()["properties"]["trigger"]
    assert set(schema["enum"]) == {"manual", "schedule", "backfill"}


# -- the other ways a command ends badly: one line each, the documented exit code ----------------
def test_a_missing_key_ring_stops_the_run_with_what_to_do(
    xledger_org: Any, vault_key: Path
) -> None:
    from integration_hub.cli import app

    vault_key.rename(vault_key.with_suffix(".moved"))
    result = CliRunner().invoke(app, ["sync", "testorg", "xledger"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert "No vault key found" in last and "integrations vault init" in last
    with hub_session() as session:
        run = session.query(SyncRun).order_by(SyncRun.id.desc()).first()  # type: ignore[union-attr]
        assert run is not None and run.failure == "configuration"


def test_a_report_run_is_not_retried_record_by_record(hub_env: str) -> None:
    from factories import record_run

    from integration_hub.adapters.registry import feature_flag
    from integration_hub.cli import app
    from integration_hub.services import configuration as config

    seed_organisation("bufdirorg", CLAIMS)
    organisation = config.organisation("bufdirorg")
    config.set_feature_flag(organisation.id or 0, feature_flag("bufdir"), True, config.OPERATOR)
    row = config.integration(organisation, "bufdir", config.Actor("test"), create=True)
    run_id = record_run(
        row.id or 0, organisation.id or 0, failures=[{"record_id": 1, "reason": "no count"}]
    )
    result = CliRunner().invoke(app, ["retry", str(run_id)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "--resubmit" in result.output.strip().splitlines()[-1]


def test_a_full_disk_is_one_line(hub_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from integration_hub import cli

    def full(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", "/var/hub/var/hub.db")

    monkeypatch.setattr("integration_hub.services.configuration.organisation", full)
    result = CliRunner().invoke(cli.app, ["credentials", "show", "testorg", "xledger"])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == "Error: the disk is full; free some space (/var/hub/var/hub.db)"
