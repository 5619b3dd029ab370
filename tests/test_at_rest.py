"""At rest and in tooling: ``var/`` is 0700 and what the hub writes is 0600 (databases, reports,
the Prefect server's log), an open ``var/`` is closed once with a note, and the Prefect server
that ``integrations serve`` starts gets only the environment it needs, never the vault keys.

The command runs in a subprocess started with the usual umask (022), so a file the hub leaves to
the default would be readable by every user and the test would see it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from integration_hub import serving

OPEN_BITS = 0o077
"""Group and other permission bits: none may be set on anything the hub keeps."""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def open_entries(root: Path) -> dict[str, str]:
    """Everything under ``root`` (itself included) that group or others may use."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink() and mode(path) & OPEN_BITS:
            found[str(path.relative_to(root))] = oct(mode(path))
    return found


def integrations(*args: str, var_dir: Path) -> subprocess.CompletedProcess[str]:
    """``integrations ARGS`` as an operator's shell runs it, with a SQLite hub under var_dir."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INTEGRATIONS_") and k != "PREFECT_API_URL"
    }
    env["INTEGRATIONS_VAR_DIR"] = str(var_dir)
    return subprocess.run(
        [sys.executable, "-m", "integration_hub.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        umask=0o022,
    )


# -- var/ and what is in it ----------------------------------------------------------------------
def test_db_upgrade_creates_a_private_var_and_private_databases(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    result = integrations("db", "upgrade", var_dir=var_dir)
    assert result.returncode == 0, result.stderr
    assert mode(var_dir) == 0o700
    assert mode(var_dir / "hub.db") == 0o600
    assert open_entries(var_dir) == {}  # also SQLite's -wal and -shm files
    assert "open to other users" not in result.stderr  # a new var/ needs no note


def test_an_open_var_from_before_is_made_private_once_and_says_so(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    (var_dir / "reports" / "hlf").mkdir(parents=True)
    old_report = var_dir / "reports" / "hlf" / "old.csv"
    old_report.write_text("chapter_code;activities\n")
    for path, wide in ((var_dir, 0o755), (var_dir / "reports", 0o755), (old_report, 0o644)):
        path.chmod(wide)

    first = integrations("db", "upgrade", var_dir=var_dir)
    assert first.returncode == 0, first.stderr
    assert f"Note: {var_dir} was open to other users (mode 0755)" in first.stderr
    assert open_entries(var_dir) == {}
    assert mode(var_dir) == 0o700 and mode(old_report) == 0o600

    again = integrations("db", "upgrade", var_dir=var_dir)
    assert again.returncode == 0, again.stderr
    assert "Note:" not in again.stderr  # said once


def test_report_files_written_under_the_hubs_umask_are_private(tmp_path: Path) -> None:
    from test_bufdir import activity

    from integration_hub.private_files import restrict_new_files
    from integration_hub.tasks import activities as steps

    os.umask(0o022)
    restrict_new_files()  # what every `integrations` command does first (conftest restores)
    report = steps.build_report(
        steps.activities_frame([activity(1)]), steps.parse_period("2025"), set()
    )
    files = steps.write_report(
        report,
        var_dir=tmp_path / "var",
        organisation_slug="hlf",
        organisation_name="HLF",
        org_number="999888777",
        run_id=1,
    )
    assert mode(files.csv_path) == mode(files.summary_path) == 0o600
    assert mode(files.csv_path.parent) == 0o700
    assert open_entries(tmp_path / "var") == {}


# -- the Prefect server's environment and log ------------------------------------------------------
class _ExitedServer:
    """Stands in for ``prefect server start``: records how it was started, then "exits"."""

    started: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, command: list[str], **options: Any) -> None:
        self.started.append({"command": command, **options})
        self.pid = -1
        self.returncode = 3

    def poll(self) -> int:
        return self.returncode


def test_the_prefect_server_gets_only_the_environment_it_needs_and_a_private_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "INTEGRATIONS_VAULT_KEYS": "1:c2VjcmV0LWtleS1tYXRlcmlhbC0wMTIzNDU2Nzg5YWI=",
        "INTEGRATIONS_DATABASE_URL": "postgresql+psycopg://hub:pw-123@db/hub",
        "INTEGRATIONS_IDP_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----",
        "XLEDGER_API_TOKEN": "a-token-from-a-setup-file",
        "AWS_SECRET_ACCESS_KEY": "not-for-prefect",
        "PREFECT_API_URL": "http://127.0.0.1:1/api",
    }
    wanted = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "nb_NO.UTF-8",
        "LC_TIME": "nb_NO.UTF-8",
        "TMPDIR": str(tmp_path),
        "PYTHONPATH": str(tmp_path),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
    }
    for name, value in {**secrets, **wanted}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(_ExitedServer, "started", [])
    monkeypatch.setattr(serving.subprocess, "Popen", _ExitedServer)
    os.umask(0o022)  # as `serve` would run without the CLI's umask: the log is private anyway

    home = tmp_path / "var" / "prefect"
    with pytest.raises(serving.ServerDidNotStart, match="see its log"):
        serving.start_local_server(serving.free_port(), home, timeout=5)

    (started,) = _ExitedServer.started
    env = started["env"]
    assert not set(secrets) & set(env), sorted(set(secrets) & set(env))
    assert not [name for name in env if name.startswith("INTEGRATIONS_")]
    for name, value in wanted.items():
        assert env[name] == value, name
    assert env["PREFECT_HOME"] == str(home)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert mode(home / "server.log") == 0o600 and mode(home) == 0o700


def test_the_server_environment_is_built_from_an_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a new setting is called, it does not reach the server unless listed."""
    monkeypatch.setenv("INTEGRATIONS_SOMETHING_NEW_2031", "secret")
    monkeypatch.setenv("DATABASE_PASSWORD", "secret")
    env = serving.server_environment(tmp_path, verbose=False)
    assert "secret" not in env.values()
    assert set(env) <= serving.SERVER_ENVIRONMENT | {
        name for name in env if name.startswith(("LC_", "PREFECT_"))
    }
