"""``integrations serve``: run the hub's flows on schedule on one machine.

It starts a local Prefect server (``prefect server start``, SQLite under ``var/prefect``) unless
``PREFECT_API_URL`` points at one, serves every deployable flow with a Prefect Runner, pushes the
hub's schedules at start and again every ``resync_seconds`` (drift repaired, and changes made
where no Prefect API was reachable catch up), and prints where the Prefect UI is.

Scheduled runs need a real server: its scheduler creates the runs, the Runner executes them.
Stopping (Ctrl-C, SIGTERM) stops the Runner with ``pause_on_shutdown=False``, so schedules stay
active for the next start, then stops the server this command started, and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from integration_hub.local_prefect import clear_state, write_state
from integration_hub.private_files import PRIVATE_DIR_MODE, open_private_append
from integration_hub.services.errors import InvalidInput, ServiceError

DEFAULT_PORT = 4200
HOST = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 20.0
Echo = Callable[[str], None]


class ServerDidNotStart(ServiceError):
    """The local Prefect server exited or never answered; the message points at its log."""


# -- the local Prefect server ------------------------------------------------------------------
def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    """A ``prefect server start`` subprocess in its own process group."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path | None

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``timeout``."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


SERVER_ENVIRONMENT = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONDONTWRITEBYTECODE",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "SYSTEMROOT",
    }
)
"""Variables the Prefect server gets from ours, besides ``LC_*`` and ``PREFECT_*``: what the
shell, the locale, temporary files and the Python interpreter need, and nothing else."""


def server_environment(prefect_home: Path, *, verbose: bool) -> dict[str, str]:
    """The server's environment: state in ``prefect_home``, no telemetry, quiet unless asked.

    Built from an allow-list, not by copying ours: the server is a separate program with its
    own UI and API, and it has no use for the vault keys (``INTEGRATIONS_VAULT_KEYS``), the
    databases' passwords or any other ``INTEGRATIONS_*`` setting, so it never holds them.
    ``PREFECT_API_URL`` is left out as well: the server is the API and must not point at one.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if name in SERVER_ENVIRONMENT
        or name.startswith("LC_")
        or (name.startswith("PREFECT_") and name != "PREFECT_API_URL")
    }
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="INFO" if verbose else "WARNING",
        PREFECT_LOGGING_LEVEL="INFO" if verbose else "WARNING",
    )
    return env


def start_local_server(
    port: int,
    prefect_home: Path,
    *,
    verbose: bool = False,
    timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> LocalServer:
    """Start ``prefect server start`` on 127.0.0.1:``port`` and wait until it is healthy."""
    if port_in_use(port):
        raise InvalidInput(
            f"port {port} on {HOST} is in use (another Prefect server?); pass --port, or set "
            "PREFECT_API_URL to use a server that is already running"
        )
    prefect_home.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    log_path = None if verbose else prefect_home / "server.log"
    output: Any = None if log_path is None else open_private_append(log_path)
    try:
        command = [sys.executable, "-m", "prefect", "server", "start"]
        process = subprocess.Popen(
            [*command, "--host", HOST, "--port", str(port)],
            env=server_environment(prefect_home, verbose=verbose),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            # Its own session: Ctrl-C reaches only us, and we stop the server after the
            # Runner, which still needs it to finish cleanly.
            start_new_session=True,
        )
    finally:
        if output is not None:
            output.close()
    server = LocalServer(process, port, log_path)
    try:
        wait_until_healthy(server.api_url, timeout, process=process)
    except ServerDidNotStart as exc:
        server.stop()
        where = f"; see its log, {log_path}" if log_path else ""
        raise ServerDidNotStart(f"{exc}{where}") from None
    except BaseException:
        server.stop()
        raise
    return server


def wait_until_healthy(
    api_url: str, timeout: float, *, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``<api>/health`` until it answers 200; fail early if ``process`` exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerDidNotStart(f"the Prefect server exited with code {process.returncode}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    raise ServerDidNotStart(
        f"the Prefect server at {api_url} did not answer within {timeout:.0f} s"
    )


# -- signals -----------------------------------------------------------------------------------
class Stop(BaseException):
    """Raised by our SIGTERM handler so ``finally`` blocks run (the default would just die)."""


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """While set up (before and after the Runner runs), SIGTERM unwinds like Ctrl-C.

    The Runner installs its own graceful SIGTERM handler while it runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stop()

    if sys.platform == "win32" or not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_interruption(exc: BaseException) -> bool:
    """Ctrl-C or SIGTERM, also when it reaches us wrapped by a task group, as cancellation, or
    as the error a library raised while being cancelled (Ctrl-C during the Runner's start-up
    surfaces as anyio's "cancel scope" RuntimeError raised while handling the cancellation)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt | Stop | asyncio.CancelledError):
            return True
        if isinstance(current, BaseExceptionGroup) and all(
            _is_interruption(inner) for inner in current.exceptions
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# -- serving -----------------------------------------------------------------------------------
def serve(
    *,
    port: int = DEFAULT_PORT,
    verbose: bool = False,
    resync_seconds: float = 60.0,
    web: bool = True,
    echo: Echo = print,
) -> None:
    """Serve the deployments (and the admin web app) until Ctrl-C or SIGTERM; see the module
    docstring."""
    from integration_hub.prefect_env import configure_prefect
    from integration_hub.settings import get_settings

    configure_prefect(verbose=verbose)
    server: LocalServer | None = None
    web_server = None
    with sigterm_stops():
        try:
            if web:
                web_server = start_web(echo)
            api_url = os.environ.get("PREFECT_API_URL")
            if api_url:
                echo(f"Using the Prefect server at {api_url} (PREFECT_API_URL)")
                wait_until_healthy(api_url.rstrip("/"), 30.0)
                ui_url = api_url.rstrip("/").removesuffix("/api")
            else:
                home = server_home = Path(os.environ["PREFECT_HOME"])
                echo(f"Starting a local Prefect server on {HOST}:{port} (state in {home}) ...")
                server = start_local_server(port, home, verbose=verbose)
                api_url, ui_url = server.api_url, server.ui_url
                os.environ["PREFECT_API_URL"] = api_url
                # Commands run meanwhile use this server (integration_hub/local_prefect.py).
                write_state(home, api_url, os.getpid())
            ui_url = get_settings().prefect_ui_url or ui_url
            _serve_with(api_url, ui_url, resync=resync_seconds, echo=echo)
        except BaseException as exc:
            if not _is_interruption(exc):
                raise
        finally:
            if web_server is not None:
                web_server.stop()
            if server is not None:
                echo("Stopping the local Prefect server ...")
                clear_state(server_home, os.getpid())
                server.stop()
    echo("Stopped. Schedules stay active in Prefect; they run again when serve starts.")


def start_web(echo: Echo) -> Any:
    """The admin web app and REST API in a thread beside the Runner (settings web_host/port)."""
    from integration_hub.sandbox.server import start_server
    from integration_hub.settings import get_settings
    from integration_hub.web.app import create_app

    settings = get_settings()
    if port_in_use(settings.web_port, settings.web_host):
        raise InvalidInput(
            f"port {settings.web_port} is taken; set INTEGRATIONS_WEB_PORT or pass --no-web"
        )
    running = start_server(create_app(), settings.web_host, settings.web_port)
    echo(f"Admin web app: {running.url}/  (REST API: {running.url}/api/v1/docs)")
    return running


def _serve_with(api_url: str, ui_url: str, *, resync: float, echo: Echo) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from integration_hub.deployments import runner_deployments

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        deployments, missing = runner_deployments()
        for spec in missing:
            echo(f"  not served: {spec.name} ({spec.module} is not installed)")
        asyncio.run(_run(deployments, ui_url, resync=resync, echo=echo))


async def _run(deployments: list[Any], ui_url: str, *, resync: float, echo: Echo) -> None:
    import anyio
    from prefect.runner import Runner

    runner = Runner(
        name=f"integration-hub-{socket.gethostname()}".replace("/", "-").replace("%", "-"),
        pause_on_shutdown=False,
    )
    for deployment in deployments:
        await runner.aadd_deployment(deployment)
    echo(f"Serving deployments: {', '.join(d.name for d in deployments)}")
    await anyio.to_thread.run_sync(_resync, echo, True)
    echo(f"Prefect UI: {ui_url}")
    echo("Running on schedule; press Ctrl-C to stop.")

    async def resync_forever() -> None:
        while resync > 0:
            await anyio.sleep(resync)
            await anyio.to_thread.run_sync(_resync, echo, False)

    async with anyio.create_task_group() as group:
        group.start_soon(resync_forever)
        try:
            await runner.start()
        finally:
            group.cancel_scope.cancel()


_last_problem: list[str] = []


def _resync(echo: Echo, first: bool) -> None:
    """Push the hub's schedules; say what changed (always at start), and problems once."""
    from integration_hub.services import scheduler

    try:
        report = scheduler.sync_all()
    except Exception as exc:  # keep serving: the next resync tries again
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        problem = f"schedules not synced: {first_line}"
        if first or _last_problem != [problem]:
            echo(problem)
        _last_problem[:] = [problem]
        return
    _last_problem.clear()
    if first or report.changed:
        echo(str(report))
