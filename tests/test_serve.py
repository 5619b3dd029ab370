"""Running on schedule for real: deployments, ``integrations serve``, and a scheduled export.

Scheduled runs need a real Prefect server (its scheduler creates the runs), so this module
starts one ``prefect server start`` subprocess (own PREFECT_HOME, a free port, scheduler loops
lowered to a second) and shares it. ``integrations serve`` runs as a subprocess, as in use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from factories import configure_xledger, seed_organisation

from integration_hub import db, settings
from integration_hub.adapters.registry import feature_flag
from integration_hub.deployments import DEPLOYABLE_FLOWS, EXPORT_EXPENSE_CLAIMS, WORK_POOL
from integration_hub.serving import LocalServer, free_port, port_in_use, start_local_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INTEGRATIONS = Path(sys.executable).parent / "integrations"


# -- the one list of deployments ---------------------------------------------------------------
def test_prefect_yaml_declares_every_deployable_flow_for_the_process_pool() -> None:
    document = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text("utf-8"))
    declared = {d["name"]: d for d in document["deployments"]}
    assert list(declared) == [spec.name for spec in DEPLOYABLE_FLOWS]
    for spec in DEPLOYABLE_FLOWS:
        entry = declared[spec.name]
        assert entry["entrypoint"] == spec.file_entrypoint
        assert entry["work_pool"] == {"name": WORK_POOL, "work_queue_name": spec.work_queue}
        assert entry["tags"] == list(spec.tags)
        assert (entry.get("parameters") or {}) == dict(spec.parameters)
        assert entry["description"] == spec.description
        assert entry["schedules"] is None  # redeploying keeps the schedules the hub pushed
    pull = document["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull == {"directory": "{{ $INTEGRATION_HUB_HOME }}"}


PARAMETERS = {
    "export-expense-claims": ["integration_id", "since", "until", "dry_run", "trigger"],
    "retry-failed-records": ["run_id"],
    "backfill": ["integration_id", "start", "end", "chunk"],
}


@pytest.mark.parametrize("spec", DEPLOYABLE_FLOWS, ids=[s.name for s in DEPLOYABLE_FLOWS])
def test_each_deployable_flow_loads_with_its_documented_parameters(spec: Any) -> None:
    if not spec.is_available():
        pytest.skip(f"{spec.module} is not written yet")
    flow = spec.load()
    assert flow.name == spec.flow_name
    assert list(flow.parameters.properties) == PARAMETERS[spec.name]
    assert (PROJECT_ROOT / spec.file_entrypoint.partition(":")[0]).is_file()


# -- a real Prefect server, and serve ----------------------------------------------------------
@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """``prefect server start`` whose scheduler looks for due schedules every second."""
    fast = {
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in fast.items():
            patch.setenv(name, value)
        server = start_local_server(free_port(), tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server
    finally:
        server.stop()


class Serve:
    """``integrations serve`` as a subprocess; its output goes to a file we poll."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(INTEGRATIONS), "serve", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )

    @property
    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        until(lambda: text in self.output, timeout, f"serve to print {text!r}", self)

    def stop(self, sig: signal.Signals, timeout: float = 40.0) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not stop within {timeout} s after {sig.name}:\n{self.output}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def until(check: Callable[[], Any], timeout: float, what: str, serve: Serve | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if serve is not None and serve.process.poll() is not None:
            pytest.fail(f"serve exited ({serve.process.returncode}) waiting for {what}:\n"
                        f"{serve.output}")  # fmt: skip
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout} s waiting for {what}" + (
        f"\nserve output:\n{serve.output}" if serve else ""))  # fmt: skip


@contextmanager
def _client(api_url: str) -> Iterator[Any]:
    """A sync Prefect client for the module's server (the session harness stays the default)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


CLAIMS = [
    {"category": "mileage", "amount_ore": 43_225},
    {"category": "meals", "amount_ore": 15_050},
    {"category": "toll", "amount_ore": 4_400},  # Xledger lacks the mapped account: fails
]


def test_a_due_schedule_runs_the_export_unattended_and_lands_in_the_history(
    prefect_server: LocalServer,
    hub_env: str,
    vault_key: Path,
    xledger_sandbox: Any,
    tmp_path: Path,
) -> None:
    """Given an enabled schedule, when it falls due, the export runs with no one touching it
    and its summary is in the export history (trigger ``schedule``)."""
    import secrets

    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.schedules import IntervalSchedule

    from integration_hub.services import configuration as config
    from integration_hub.services import scheduler
    from integration_hub.services.history import list_runs

    state, sandbox = xledger_sandbox
    token = secrets.token_hex(16)
    company = state.add_company(token, employees=[{"code": "1001"}])
    seed_organisation("scheduled", CLAIMS)
    row = configure_xledger("scheduled", sandbox.url, token, toll_account="7145")
    config.set_schedule(row, config.parse_daily("02:00"), "Europe/Oslo", True, config.OPERATOR)
    slug = scheduler.slug_for(row.id)

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_HOME": str(tmp_path / "serve-prefect"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "INTEGRATIONS_WEB_PORT": str(web_port := free_port()),
    }
    serve = Serve(["--resync", "1"], env, tmp_path / "serve.log")
    due_soon = None
    try:
        serve.wait_for("Running on schedule", timeout=60)
        assert f"Using the Prefect server at {prefect_server.api_url}" in serve.output
        assert f"Prefect UI: {prefect_server.ui_url}" in serve.output
        web_url = f"http://127.0.0.1:{web_port}"
        assert f"Admin web app: {web_url}/" in serve.output  # serve also serves the web app
        assert httpx.get(f"{web_url}/sign-in", timeout=10).status_code == 200

        with _client(prefect_server.api_url) as client:
            deployment = client.read_deployment_by_name(EXPORT_EXPENSE_CLAIMS.full_name)
            pushed = {s.slug: s for s in client.read_deployment_schedules(deployment.id)}
            assert pushed[slug].schedule.cron == "0 2 * * *"  # serve pushed the hub's schedule
            assert pushed[slug].parameters == {"integration_id": row.id, "trigger": "schedule"}

            # Prefect's scheduler plans the 02:00 runs exactly where next_runs said.
            def planned() -> list[datetime]:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
                )
                return sorted(
                    r.expected_start_time
                    for r in runs
                    if r.created_by and r.created_by.display_value == slug
                    and r.state and r.state.is_scheduled()
                )  # fmt: skip

            times = until(lambda: len(planned()) >= 3 and planned(), 20, "runs to be planned")
            expected = scheduler.next_runs("0 2 * * *", "Europe/Oslo", 3)
            assert [t.timestamp() for t in times[:3]] == [t.timestamp() for t in expected]

            # A change stored without a push (as the setup wizard does) reaches Prefect at the
            # next resync.
            config.set_schedule(row, "0 3 * * *", "Europe/Oslo", True, config.OPERATOR)

            def pushed_cron() -> str:
                found = client.read_deployment_schedules(deployment.id)
                return next(s.schedule.cron for s in found if s.slug == slug)

            until(lambda: pushed_cron() == "0 3 * * *", 15, "serve to push the change", serve)
            serve.wait_for("schedules in Prefect: 1 updated", timeout=5)

            # Waiting for 03:00 is not an option: the same schedule a few seconds ahead.
            due_soon = client.create_deployment_schedules(
                deployment.id,
                [
                    DeploymentScheduleCreate(
                        schedule=IntervalSchedule(
                            interval=timedelta(days=1),
                            anchor_date=datetime.now(UTC) + timedelta(seconds=5),
                        ),
                        parameters={"integration_id": row.id, "trigger": "schedule"},
                        slug="test-due-soon",
                    )
                ],
            )[0]

        def finished_run() -> dict[str, Any] | None:
            history = list_runs(row, config.OPERATOR)
            done = [r for r in history if r["status"] != "running"]
            return done[0] if done else None

        summary = until(finished_run, 60, "the scheduled export to finish", serve)
        assert summary["trigger"] == "schedule"
        assert summary["status"] == "partial"
        assert (summary["exported"], summary["failed"]) == (2, 1)
        assert summary["exported_amount_ore"] == 43_225 + 15_050
        assert len({item["extIdentifier"] for item in company.ledger}) == 2

        with _client(prefect_server.api_url) as client:
            flow_run = client.read_flow_run(UUID(summary["flow_run_id"]))
            assert flow_run.auto_scheduled and flow_run.deployment_id == deployment.id
            assert flow_run.parameters["trigger"] == "schedule"
            until(lambda: client.read_flow_run(flow_run.id).state.is_completed(), 20,
                  "the flow run to be marked completed")  # fmt: skip

        assert serve.stop(signal.SIGTERM) == 0
        assert "Stopped. Schedules stay active" in serve.output
        with _client(prefect_server.api_url) as client:
            after = client.read_deployment_by_name(EXPORT_EXPENSE_CLAIMS.full_name)
            assert not after.paused  # stopping serve paused nothing
            kept = {s.slug: s for s in client.read_deployment_schedules(after.id)}
            assert kept[slug].active
    finally:
        serve.kill()
        if due_soon is not None:
            with _client(prefect_server.api_url) as client:
                client.delete_deployment_schedule(due_soon.deployment_id, due_soon.id)


@pytest.fixture
def fresh_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A migrated SQLite hub under ``tmp_path/var``, as after `integrations db upgrade`."""
    var_dir = tmp_path / "var"
    monkeypatch.setenv("INTEGRATIONS_VAR_DIR", str(var_dir))
    for name in ("INTEGRATIONS_DATABASE_URL", "INTEGRATIONS_APP_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings.reset_settings()
    db.dispose_engines()
    db.upgrade("hub")
    db.upgrade("app")
    yield var_dir
    settings.reset_settings()
    db.dispose_engines()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(proc.name))
    return found


@pytest.mark.skipif(sys.platform == "win32", reason="signals and /proc")
def test_serve_starts_its_own_server_under_var_and_ctrl_c_stops_everything(
    fresh_var: Path, tmp_path: Path
) -> None:
    from integration_hub.services import configuration as config

    seed_organisation("bf", [])
    config.set_feature_flag(1, feature_flag("xledger"), True, config.OPERATOR)
    row = config.integration(config.organisation("bf"), "xledger", config.OPERATOR, create=True)
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, config.OPERATOR)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    serve = Serve(["--port", str(port), "--no-web"], env, tmp_path / "serve.log")
    try:
        serve.wait_for("Running on schedule", timeout=90)
        output = serve.output
        assert f"Prefect UI: http://127.0.0.1:{port}" in output
        assert "schedules in Prefect: 1 created" in output
        assert "___" not in output and "prefect config set" not in output  # Prefect's banner
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200  # the UI
        assert (fresh_var / "prefect" / "prefect.db").is_file()
        server_processes = _processes_mentioning(f"--port {port}")
        assert server_processes

        assert serve.stop(signal.SIGINT) == 0, serve.output  # Ctrl-C
        assert "Stopping the local Prefect server" in serve.output
        assert "Traceback" not in serve.output
        until(lambda: not port_in_use(port), 10, "the port to be free")
        assert _processes_mentioning(f"--port {port}") == []
    finally:
        serve.kill()
        for pid in _processes_mentioning(f"--port {port}"):
            os.kill(pid, signal.SIGKILL)


def test_serve_refuses_a_port_in_use_with_a_clear_message(fresh_var: Path) -> None:
    import socket

    from typer.testing import CliRunner

    from integration_hub.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"PREFECT_API_URL": None}
        result = CliRunner().invoke(app, ["serve", "--port", str(port), "--no-web"], env=env)
    assert result.exit_code == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.output
