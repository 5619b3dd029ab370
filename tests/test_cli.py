"""The ``integrations`` command line, in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from factories import seed_organisation
from typer.testing import CliRunner

from integration_hub.adapters.registry import feature_flag
from integration_hub.cli import app
from integration_hub.services import configuration as config

runner = CliRunner()
CLAIMS = [
    {"category": "mileage", "amount_ore": 43_225},
    {"category": "toll"},
    {"category": "parking"},
]


def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, input=input)


@pytest.fixture
def org(hub_env: str, vault_key: Path, xledger_sandbox: Any) -> dict[str, Any]:
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    company = state.add_company(token, employees=[{"code": "1001"}], closed_before=date(2024, 1, 1))
    org_id = seed_organisation("bf", CLAIMS)
    config.set_feature_flag(org_id, feature_flag("xledger"), True, config.OPERATOR)
    return {"token": token, "url": server.url, "company": company}


def write_setup(tmp_path: Path, url: str, mapping: str = "default") -> Path:
    path = tmp_path / "xledger.yaml"
    path.write_text(
        f"base_url: {url}/graphql\n"
        "credentials:\n  api_token: ${XLEDGER_API_TOKEN}\n"
        f"mapping: {mapping}\n"
        "schedule: {daily: '02:00', timezone: Europe/Oslo}\n"
        "exclusions: [parking]\n"
        "accept_warnings: true\n"
    )
    return path


def setup_xledger(
    org: dict[str, Any], tmp_path: Path, *, token: str | None = None, mapping: str = "default"
) -> Any:
    return invoke(
        "setup",
        "bf",
        "xledger",
        "--from-file",
        str(write_setup(tmp_path, org["url"], mapping)),
        env={"XLEDGER_API_TOKEN": token or org["token"]},
    )


def test_help_imports_neither_prefect_nor_pandas() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from integration_hub.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'pandas'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_setup_from_file_then_masked_credentials_and_connection(
    org: dict[str, Any], tmp_path: Path
) -> None:
    setup = setup_xledger(org, tmp_path)
    assert setup.exit_code == 0, setup.output
    assert "connection test: ok" in setup.output
    assert org["token"] not in setup.output
    shown = invoke("credentials", "show", "bf", "xledger")
    assert shown.exit_code == 0
    assert "••••••" + org["token"][-4:] in shown.output
    assert org["token"] not in shown.output
    assert invoke("test-connection", "bf", "xledger").exit_code == 0
    assert invoke("types", "bf").output.split()[:2] == ["xledger", "Xledger"]


def test_setup_refuses_an_unset_variable_and_changes_nothing(
    org: dict[str, Any], tmp_path: Path
) -> None:
    os.environ.pop("XLEDGER_API_TOKEN", None)
    result = invoke("setup", "bf", "xledger", "--from-file", str(write_setup(tmp_path, org["url"])))
    assert result.exit_code == 2
    assert "XLEDGER_API_TOKEN" in result.output
    assert "Traceback" not in result.output


def test_wrong_token_fails_the_connection_test_with_exit_1(
    org: dict[str, Any], tmp_path: Path
) -> None:
    result = setup_xledger(org, tmp_path, token="wrong-token-value")
    assert result.exit_code == 1  # and nothing is stored (tests/test_setup_whole.py)
    assert "bad_credentials" in result.output


def test_the_connection_test_shows_schema_drift_as_warnings(
    org: dict[str, Any], tmp_path: Path, xledger_sandbox: Any
) -> None:
    """A tenant whose input type lacks a field the hub sends: the credentials work (exit 0),
    and the setup output and ``test-connection`` both say which field, before anything runs."""
    from integration_hub.sandbox.xledger_schema import SchemaChanges

    state, _server = xledger_sandbox
    token = secrets.token_hex(16)
    state.add_company(token, schema_changes=SchemaChanges(drop=("trRegNumber",)))
    setup = setup_xledger(org, tmp_path, token=token)
    assert setup.exit_code == 0, setup.output
    assert "warning: Xledger does not have AddGLImportItemsInput.node.trRegNumber" in setup.output
    tested = invoke("test-connection", "bf", "xledger")
    assert tested.exit_code == 0
    assert "ok: Connected to Xledger" in tested.output
    assert "warning: Xledger does not have AddGLImportItemsInput.node.trRegNumber" in (
        tested.output
    )
    unchanged = setup_xledger(org, tmp_path)  # the org's own company: nothing to warn about
    assert "warning" not in unchanged.output.split("field mapping")[0]


def test_mapping_warning_sync_dry_run_runs_and_exclusions(
    org: dict[str, Any], tmp_path: Path, prefect_harness: Path
) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        Path("integration_hub/mappings/xledger_expense_claims.yaml")
        .read_text()
        .replace('toll: "7140"', 'toll: "9999"')
    )
    setup = setup_xledger(org, tmp_path, mapping=str(mapping))
    assert "Xledger has no account 9999" in setup.output

    checked = invoke("mappings", "validate", "bf", "xledger")
    assert checked.exit_code == 1  # warnings only: non-zero unless accepted
    assert "warning: expense_account[toll]: Xledger has no account 9999" in checked.output
    assert invoke("mappings", "validate", "bf", "xledger", "--allow-warnings").exit_code == 0

    dry = invoke("sync", "bf", "xledger", "--dry-run")
    assert "would export 1 records; nothing was sent" in dry.output
    assert org["company"].mutations == 0

    real = invoke("sync", "bf", "xledger")
    assert real.exit_code == 1  # one record failed
    assert "account 9999 does not exist in Xledger" in real.output
    assert "skipped 1 x category 'parking' is excluded" in real.output

    history = json.loads(invoke("runs", "bf", "xledger", "--json").output)
    assert [run["dry_run"] for run in history] == [False, True]
    assert history[0]["exported"] == 1 and history[0]["failed"] == 1

    assert "excluded: parking, toll" in invoke("exclusions", "bf", "xledger", "add", "toll").output
    bad = invoke("exclusions", "bf", "xledger", "add", "sauna")
    assert bad.exit_code == 2 and "unknown category sauna" in bad.output


def test_bad_dates_and_unknown_organisation_are_clear_errors(org: dict[str, Any]) -> None:
    result = invoke("sync", "bf", "xledger", "--since", "31.01.2026")
    assert result.exit_code == 2 and "not a date" in result.output
    unknown = invoke("types", "nope")
    assert unknown.exit_code == 2 and "no organisation 'nope' (known: bf)" in unknown.output


def test_a_type_the_flags_do_not_offer_is_refused(org: dict[str, Any], tmp_path: Path) -> None:
    config.set_feature_flag(1, feature_flag("xledger"), False, config.OPERATOR)
    result = setup_xledger(org, tmp_path)
    assert result.exit_code == 2
    assert "Xledger is not offered to Bf" in result.output


def test_vault_init_is_private_and_never_overwrites(hub_env: str) -> None:
    from integration_hub.settings import get_settings

    first = invoke("vault", "init")
    assert first.exit_code == 0
    mode = stat.S_IMODE(get_settings().key_file.stat().st_mode)
    assert mode == 0o600
    second = invoke("vault", "init")
    assert second.exit_code == 2
    assert "Traceback" not in second.output


def test_missing_vault_key_is_a_clear_error(hub_env: str) -> None:
    seed_organisation("bf", [])
    config.set_feature_flag(1, feature_flag("xledger"), True, config.OPERATOR)
    result = invoke("setup", "bf", "xledger", "--from-file", "/dev/null")
    assert result.exit_code == 2
    assert "integrations vault init" in result.output


def test_vault_rotate_keeps_credentials_usable(org: dict[str, Any], tmp_path: Path) -> None:
    setup_xledger(org, tmp_path)
    rotated = invoke("vault", "rotate")
    assert rotated.exit_code == 0, rotated.output
    assert invoke("test-connection", "bf", "xledger").exit_code == 0


def test_db_upgrade_is_idempotent(hub_env: str) -> None:
    result = invoke("db", "upgrade")
    assert result.exit_code == 0
    assert "newest schema" in result.output


def test_interactive_setup_of_bufdir_asks_for_no_schedule(hub_env: str, vault_key: Path) -> None:
    from integration_hub.sandbox.bufdir import BufdirSandboxState, create_bufdir_app
    from integration_hub.sandbox.server import start_server

    org_id = seed_organisation("bf", [])
    config.set_feature_flag(org_id, feature_flag("bufdir"), True, config.OPERATOR)
    state = BufdirSandboxState()  # the connection test must pass: a failed one stores nothing
    state.add_client("client-1", "secret-value-1")
    with start_server(create_bufdir_app(state)) as server:
        answers = f"{server.url}\n\nclient-1\nsecret-value-1\n\n"
        result = invoke("setup", "bf", "bufdir", input=answers)
    assert result.exit_code == 0, result.output
    assert "none: Bufdir (tilskuddsrapportering) is reported per closed period" in result.output
    assert "run daily at" not in result.output
    assert "secret-value-1" not in result.output
    row = config.integration(config.organisation("bf"), "bufdir", config.OPERATOR)
    assert config.get_schedule(row) is None
    assert row.settings["client_id"] == "client-1"
