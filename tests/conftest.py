"""Shared fixtures for the whole suite, one section per concern.

Sections:
    prefect   one Prefect test server per session (``prefect_harness``), state in a temp dir.
    sandbox   one Xledger sandbox server per session, and a vault key per test.
    database  a throwaway PostgreSQL cluster per session, a fresh empty database per test on
              SQLite and on PostgreSQL (``db_url``), and a migrated hub environment (``hub_env``).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgcluster import PostgresCluster, PostgresStartError, PostgresUnavailable

from integration_hub import db, settings

# =============================================================================================
# database
# =============================================================================================

REQUIRE_POSTGRES_ENV = "INTEGRATIONS_REQUIRE_POSTGRES"
"""Set to 1 (CI does) to turn a missing PostgreSQL into a failure instead of a skip."""

HUB_ENV_UNSET = (
    "INTEGRATIONS_APP_DATABASE_URL",
    "INTEGRATIONS_VAULT_KEYS",
    "INTEGRATIONS_VAULT_KEY_FILE",
)
"""Variables a developer's shell may carry that would point a test at real data or keys."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgresql: runs against the throwaway PostgreSQL cluster (deselect with "
        "-m 'not postgresql')",
    )  # fmt: skip


def _postgres_required() -> bool:
    return os.environ.get(REQUIRE_POSTGRES_ENV, "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the whole session; skipped where PostgreSQL is missing, unless required.

    A cluster whose binaries exist but which fails to start is always an error: that is a broken
    setup to fix, not a machine without PostgreSQL.
    """
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        if _postgres_required():
            pytest.fail(f"PostgreSQL is required ({REQUIRE_POSTGRES_ENV}=1) but unavailable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    except PostgresStartError as exc:
        pytest.fail(f"PostgreSQL did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
    ids=["sqlite", "postgresql"],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL per test, once on SQLite and once on PostgreSQL.

    The cluster is only started when a PostgreSQL case actually runs, so ``-k sqlite`` needs no
    PostgreSQL at all. PostgreSQL databases are dropped afterwards to keep the cluster small.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hub.db"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    name = f"t_{uuid.uuid4().hex}"
    url = cluster.create_database(name)
    try:
        yield url
    finally:
        db.dispose_engines()
        cluster.drop_database(name)


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """Every ``integrations`` command sets the process umask to 0o077 (private files); a test
    that runs one in-process must not leave it set for the rest of the session."""
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        yield
    finally:
        os.umask(umask)


def _forget_cached_state() -> None:
    """Settings and engines are cached per process; a test that changes the env resets both."""
    settings.reset_settings()
    db.dispose_engines()


@pytest.fixture
def hub_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the hub at ``db_url`` (hub and app side) with ``var/`` in ``tmp_path``, migrated.

    Yields the database URL. Vault keys and a separate app database are unset, so a test sees
    only what it creates itself.
    """
    var_dir = tmp_path / "var"
    var_dir.mkdir(exist_ok=True)
    monkeypatch.setenv("INTEGRATIONS_DATABASE_URL", db_url)
    monkeypatch.setenv("INTEGRATIONS_VAR_DIR", str(var_dir))
    for name in HUB_ENV_UNSET:
        monkeypatch.delenv(name, raising=False)
    _forget_cached_state()
    try:
        db.upgrade("hub")
        db.upgrade("app")
        yield db_url
    finally:
        _forget_cached_state()


# =============================================================================================
# prefect
# =============================================================================================
# Prefect reads these when it is first imported: keep its state in a temp dir, no telemetry.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="hub-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.pop("PREFECT_API_URL", None)
# The sandboxes and the webhook receiver listen on 127.0.0.1: allowed as an operator would for
# a local sandbox. Tests of the endpoint guard take it away again.
os.environ["INTEGRATIONS_ALLOWED_HOSTS"] = "127.0.0.1"
# A target that cannot be reached fails the run at once; the tests of run-level retry set a
# budget of their own (with an injected clock).
os.environ["INTEGRATIONS_RUN_RETRY_SECONDS"] = "0"
os.environ["INTEGRATIONS_MANUAL_RUN_RETRY_SECONDS"] = "0"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[Path]:
    """One Prefect test server for the whole session (starting one costs ~9 s); yields the
    directory that holds its database, so tests can inspect what Prefect stored."""
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
        yield Path(str(url).split(":///", 1)[1]).parent


# =============================================================================================
# sandbox and a configured integration
# =============================================================================================
@pytest.fixture(scope="session")
def xledger_sandbox() -> Iterator[tuple[Any, Any]]:
    """One Xledger sandbox server per session; tests register their own companies (tokens)."""
    from integration_hub.sandbox.server import start_server
    from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app

    state = XledgerSandboxState()
    with start_server(create_xledger_app(state)) as server:
        yield state, server


@pytest.fixture
def vault_key(hub_env: str) -> Path:
    from integration_hub.settings import get_settings
    from integration_hub.vault import init_key_file

    return init_key_file(get_settings().key_file)


@pytest.fixture
def ledger(hub_env: str) -> Any:
    """An export ledger for a fresh integration (organisation 1) in the hub database."""
    from integration_hub.db import hub_session
    from integration_hub.ledger import Ledger
    from integration_hub.models import Integration

    with hub_session() as session:
        row = Integration(organisation_id=1, type_key="xledger")
        session.add(row)
        session.flush()
        integration_id = row.id or 0
    return Ledger(
        hub_session, organisation_id=1, integration_id=integration_id, record_type="expense_claim"
    )


# =============================================================================================
# alerts: a real local webhook receiver
# =============================================================================================
class WebhookReceiver:
    """A tiny HTTP endpoint on 127.0.0.1 that records what it is sent (path, headers, JSON)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.url = ""

    def reset(self) -> None:
        self.received.clear()
        self.status = 200


@pytest.fixture(scope="session")
def _webhook_server() -> Iterator[WebhookReceiver]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from integration_hub.sandbox.server import start_server

    receiver = WebhookReceiver()

    async def hook(request: Request) -> JSONResponse:
        receiver.received.append(
            {
                "path": request.url.path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "body": (await request.body()).decode(),
                "json": await request.json(),
            }
        )
        return JSONResponse({"ok": receiver.status < 300}, status_code=receiver.status)

    app = Starlette(routes=[Route("/hooks/{token}", hook, methods=["POST"])])
    with start_server(app) as server:
        receiver.url = server.url
        yield receiver


@pytest.fixture
def webhook_receiver(_webhook_server: WebhookReceiver) -> WebhookReceiver:
    """The session's webhook receiver, emptied and answering 200 (set ``status`` to fail)."""
    _webhook_server.reset()
    return _webhook_server


# =============================================================================================
# Business Central sandbox
# =============================================================================================
@pytest.fixture
def web(hub_env: str, vault_key: Path, xledger_sandbox: tuple[Any, Any]) -> Any:
    """The web app over a fresh hub: organisations hlf and blindeforbundet (every integration
    type offered), their admins, an operator, and the Xledger sandbox (tests/webworld.py)."""
    from webworld import build_world

    state, server = xledger_sandbox
    return build_world(state, server.url)


@pytest.fixture(scope="session")
def dynamics_sandbox() -> Iterator[tuple[Any, Any]]:
    """One Business Central sandbox server per session; tests provision their own tenants."""
    from integration_hub.sandbox.dynamics import DynamicsSandboxState, create_dynamics_app
    from integration_hub.sandbox.server import start_server

    state = DynamicsSandboxState()
    with start_server(create_dynamics_app(state)) as server:
        yield state, server


@pytest.fixture
def quick_flow_runs(prefect_harness: Path) -> Iterator[None]:
    """Flow runs without Prefect's run heartbeat thread: at the end of every flow run Prefect
    3.9 joins that thread, which sleeps in one-second steps, so each run would cost ~1 s more
    (measured: an empty flow 1.07 s with it, 0.09 s without). Nothing here tests heartbeats."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


# =============================================================================================
# browser
# =============================================================================================
# Debian's chromium driven by Playwright for Python (tests/browser_support.py): one browser per
# test module, a fresh context per test, the app served for real by uvicorn on 127.0.0.1.
# Browser tests run on SQLite only: mark them with
# ``pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)``.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless chromium for one test module; skipped where it is missing, unless required
    (CI). Module-scoped, not session-scoped: while Playwright's sync API is running, Prefect's
    sync-or-async calls in later modules see its event loop and return coroutines."""
    from browser_support import browser_required, chromium_missing, launch_chromium

    reason = chromium_missing()
    if reason is not None:
        if browser_required():
            pytest.fail(f"the browser tests are required but cannot run: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_server(web: Any) -> Iterator[str]:
    """The web app of the ``web`` world served on 127.0.0.1; yields its base URL."""
    from integration_hub.sandbox.server import start_server

    with start_server(web.app) as server:
        yield server.url


@pytest.fixture
def browser_page(chromium: Any, live_server: str) -> Iterator[Any]:
    """A page in a fresh context under the app's real Content-Security-Policy."""
    from browser_support import open_page

    with open_page(chromium, live_server) as page:
        yield page


@pytest.fixture
def axe_page(chromium: Any, live_server: str) -> Iterator[Any]:
    """A page whose context bypasses the CSP, so axe-core can be injected."""
    from browser_support import open_page

    with open_page(chromium, live_server, bypass_csp=True) as page:
        yield page
