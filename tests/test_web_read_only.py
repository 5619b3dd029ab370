"""GET requests change nothing, and organisation admins are not sent to the Prefect UI.

Every GET route of the web app (pages and REST API, found from the routers so a new page is
covered without editing this file) is requested by an organisation admin and by an operator,
while a listener on the hub's engine counts the statements that write. The world has one
integration set up end to end (credentials, mapping, schedule, a run with failures) and one
type never set up, so the setup wizard is opened both for an existing integration and for one
that does not exist yet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from factories import configure_xledger, record_run
from webworld import ADMIN_A, OPERATOR, ORG_A

TYPES = ("xledger", "dynamics")
"""Set up (xledger) and never set up (dynamics): a GET must not create the second."""
WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|MERGE|UPSERT)\b", re.IGNORECASE)
PREFECT_UI = "http://127.0.0.1:4200"
FLOW_RUN_ID = "6d1f7a4e-0000-4000-8000-000000000001"


@contextmanager
def counting_writes() -> Iterator[list[str]]:
    """The writing statements the hub's engine executes while the block runs."""
    from sqlalchemy import event

    from integration_hub.db import hub_engine

    engine = hub_engine()
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if WRITES.match(statement):
            seen.append(" ".join(statement.split())[:160])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def get_paths(app: Any, run_id: int) -> list[str]:
    """Every GET route of the pages (their routers) and of the REST API (its OpenAPI
    document), its parameters filled in, once per type."""
    from integration_hub.web.pages import routers as page_routers

    templates = [
        route.path
        for router in page_routers
        for route in router.routes
        if "GET" in getattr(route, "methods", ())
    ]
    templates += [path for path, item in app.openapi()["paths"].items() if "get" in item]
    assert len(templates) > 25, templates  # both were found
    paths: list[str] = []
    for template in templates:
        for type_key in TYPES:
            path = re.sub(r"\{(type_key|integration_type|type)\}", type_key, template)
            path = path.replace("{org}", ORG_A).replace("{run_id}", str(run_id))
            assert "{" not in path, f"fill in the parameters of {template}"
            if path not in paths:
                paths.append(path)
    return paths


@pytest.fixture
def configured(web: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """ORG_A's Xledger: credentials, mapping, a passed test, a schedule, active, and a run."""
    from integration_hub.services import configuration as config
    from integration_hub.services import wizard
    from integration_hub.settings import reset_settings

    monkeypatch.setenv("PREFECT_UI_URL", PREFECT_UI)
    monkeypatch.setenv("INTEGRATIONS_ALLOWED_HOSTS", "127.0.0.1")  # the local sandbox
    reset_settings()
    who = config.Actor("test")
    row = configure_xledger(ORG_A, web.sandbox_url, web.xledger_company(ORG_A))
    assert config.test_connection(row, who).ok
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, who)
    wizard.activate(config.reload(row), who)
    run_id = record_run(
        row.id,
        row.organisation_id,
        flow_run_id=FLOW_RUN_ID,
        failures=[{"record_id": 41, "reason": "account 7145 does not exist in Xledger"}],
    )
    return {"row": row, "run_id": run_id}


@pytest.mark.parametrize("email", [ADMIN_A, OPERATOR], ids=["admin", "operator"])
def test_no_get_request_writes_to_the_database(
    web: Any, configured: dict[str, Any], email: str
) -> None:
    client = web.client(email)  # signing in writes a session: done before counting
    paths = get_paths(web.app, configured["run_id"])
    answered: dict[str, int] = {}
    wrote: dict[str, list[str]] = {}
    for path in paths:
        with counting_writes() as writes:
            answered[path] = client.get(path).status_code
        if writes:
            wrote[path] = writes
    assert not wrote, "\n".join(
        f"GET {path} wrote: {statements}" for path, statements in wrote.items()
    )
    # The pages were really rendered (not all refused), also the wizard for a new integration.
    assert answered[f"/orgs/{ORG_A}/integrations/xledger/mapping"] == 200
    assert answered[f"/orgs/{ORG_A}/integrations/xledger/health"] == 200
    assert answered["/api/v1/organisations/hlf/integrations/xledger/reference-codes"] == 200
    if email == ADMIN_A:
        assert answered[f"/orgs/{ORG_A}/integrations/dynamics/setup"] == 303
        assert answered[f"/orgs/{ORG_A}/integrations/dynamics/setup/credentials"] == 200
    sum_ok = sum(1 for status in answered.values() if status == 200)
    assert sum_ok >= len(paths) // 2, answered


def test_opening_the_wizard_creates_nothing_until_the_first_step_is_posted(web: Any) -> None:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import AuditEntry, Integration

    def stored() -> tuple[list[str], int]:
        with hub_session() as session:
            types = session.exec(
                select(Integration.type_key).where(
                    Integration.organisation_id == web.organisation_ids[ORG_A]
                )
            ).all()
            audits = len(session.exec(select(AuditEntry.id)).all())
        return sorted(types), audits

    client = web.client(ADMIN_A)
    base = f"/orgs/{ORG_A}/integrations/xledger"
    before = stored()
    opened = client.get(f"{base}/setup")
    assert opened.status_code == 303 and opened.headers["location"] == f"{base}/setup/credentials"
    page = client.get(opened.headers["location"])
    assert page.status_code == 200 and 'name="api_token"' in page.text
    # A step further on sends the person to the first step instead of a "not found".
    ahead = client.get(f"{base}/setup/schedule")
    assert ahead.status_code == 303 and ahead.headers["location"] == f"{base}/setup/credentials"
    assert stored() == before

    posted = client.post(
        f"{base}/setup/credentials",
        data={
            "csrf_token": web.csrf(client),
            "base_url": f"{web.sandbox_url}/graphql",
            "api_token": web.xledger_company(ORG_A),
        },
    )
    assert posted.status_code == 303 and posted.headers["location"] == f"{base}/setup/test"
    assert "xledger" in stored()[0]
    assert client.get(f"{base}/setup").headers["location"] == f"{base}/setup/test"


def test_an_operator_opening_a_new_setup_is_refused_and_nothing_is_created(web: Any) -> None:
    client = web.client(OPERATOR)
    with counting_writes() as writes:
        refused = client.get(f"/orgs/{ORG_A}/integrations/xledger/setup")
    assert refused.status_code == 403 and not writes
    assert "Traceback" not in refused.text


# -- the Prefect UI is for operators only --------------------------------------------------------
def test_the_health_page_links_operators_to_prefect_and_admins_not(
    web: Any, configured: dict[str, Any]
) -> None:
    health = f"/orgs/{ORG_A}/integrations/xledger/health"
    link = f"{PREFECT_UI}/runs/flow-run/{FLOW_RUN_ID}"

    admin_page = web.client(ADMIN_A).get(health)
    assert admin_page.status_code == 200
    assert PREFECT_UI not in admin_page.text and "Prefect" not in admin_page.text

    operator_page = web.client(OPERATOR).get(health)
    assert operator_page.status_code == 200
    assert operator_page.text.count(f'<a href="{link}">') == 2  # the last run, the history row

    api = f"/api/v1/organisations/{ORG_A}/integrations/xledger"
    for path in (f"{api}/health", f"{api}/runs"):
        assert PREFECT_UI not in web.client(ADMIN_A).get(path).text, path
        assert link in web.client(OPERATOR).get(path).text, path
