"""Prefect's environment for embedded use: state under ``var/``, no telemetry, a quiet screen.

Must run before ``prefect`` is imported; explicit environment settings always win.
"""

from __future__ import annotations

import os

from integration_hub.private_files import PRIVATE_DIR_MODE
from integration_hub.settings import get_settings


def configure_prefect(*, verbose: bool = False) -> None:
    var_dir = get_settings().var_dir
    defaults = {
        "PREFECT_HOME": str(var_dir / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO" if verbose else "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_LOG_PRINTS": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    (var_dir / "prefect").mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
