"""Prefect's environment for embedded use: state under ``var/``, no telemetry, a quiet screen.

Must run before ``prefect`` is imported; explicit environment settings always win.

Logging: run logs go to the Prefect API at INFO (the Prefect UI is the operators' view of a
run, so what a run logs must reach it), while Prefect's console handler shows only CRITICAL
unless ``verbose``: a person at a terminal reads the command's own summary and last line, not
Prefect's tracebacks (those stay in the flow run's log in the UI). Quieting the terminal with
``PREFECT_LOGGING_LEVEL`` instead would also starve the API handler: runs without logs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from integration_hub.private_files import PRIVATE_DIR_MODE
from integration_hub.settings import get_settings


def configure_prefect(*, verbose: bool = False, shared_server: bool = False) -> None:
    """Prefect's settings for this process; ``shared_server`` (the CLI's commands that run
    flows) points it at the hub's shared local Prefect server
    (:mod:`integration_hub.local_prefect`) instead of a temporary one per command, unless an
    API is set already. If that server cannot be started, Prefect's temporary one is used."""
    var_dir = get_settings().var_dir
    defaults = {
        "PREFECT_HOME": str(var_dir / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO" if verbose else "CRITICAL",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_LOG_PRINTS": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if verbose:  # the CLI then also prints an unexpected error's traceback
        os.environ["INTEGRATIONS_CLI_VERBOSE"] = "1"
    (var_dir / "prefect").mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if shared_server and not _api_configured():
        from integration_hub.local_prefect import api_url_for_command

        # If it cannot be started, Prefect's temporary server serves this command alone.
        with contextlib.suppress(OSError, RuntimeError):
            os.environ["PREFECT_API_URL"] = api_url_for_command(
                Path(os.environ["PREFECT_HOME"]),
                get_settings().prefect_server_idle_seconds,
                var_dir / "logs" / "prefect-server.log",
            )


def _api_configured() -> bool:
    """An API URL from the environment, or from settings already in force in this process
    (a test harness, a caller's ``temporary_settings``)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect" not in sys.modules:
        return False
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())
