"""schemathesis against the API's own OpenAPI document, signed in as organisation A's admin
over real configured data (an Xledger integration with a stored token, a schedule, a run with
failures): no server errors, responses as documented, and never the stored secret."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from apiworld import bearer, configured_xledger, use_test_idp
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from webworld import ORG_A

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """SQLite only: the matrix and behaviour tests cover PostgreSQL; this one is about shapes."""
    return f"sqlite:///{tmp_path}/hub.db"


@pytest.fixture
def world(web: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from factories import record_run

    from integration_hub.services import configuration as config
    from integration_hub.services.configuration import Actor

    private = use_test_idp(monkeypatch)
    # A generated "run now" is submitted but never run (tests/test_web_runs.py runs them).
    from integration_hub.services import submit

    monkeypatch.setattr(submit, "deployment_for", lambda spec: None)
    monkeypatch.setattr(submit, "launch", lambda submission, work: submission.done.set())
    row, token = configured_xledger(web, ORG_A)
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, Actor("test"))
    # Failed outcomes for the health monitor, but a run count of 0 so that a generated retry is
    # refused (422) rather than starting a Prefect flow run (test_api covers the real retry).
    record_run(
        row.id, row.organisation_id, failures=[{"record_id": 3, "reason": "no account"}], failed=0
    )
    return {"web": web, "token": token, "headers": bearer(private, role="admin", org=ORG_A)}


def _app() -> Any:
    from integration_hub.web.app import create_app

    return create_app()  # holds no state: each test's environment is the hub it talks to


schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", _app())


@schema.parametrize()
@settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_api_conforms_and_never_shows_the_secret(case: Any, world: dict[str, Any]) -> None:
    if "org" in (case.path_parameters or {}):
        case.path_parameters["org"] = ORG_A  # the admin's own organisation, with real data
    response = case.call(headers=world["headers"])
    case.validate_response(response, checks=CHECKS, headers=world["headers"])
    assert world["token"] not in response.text
