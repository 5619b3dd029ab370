"""The API's authorization matrix, generated from the app's own routes: every route and method
under /api/v1, for organisation A's admin against organisation B's resources (all refused,
nothing changed), for the operator (reads and retries, changes nothing) and for nobody (401).

A route without a sample below fails the suite, so no new route escapes the matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from apiworld import bearer, configured_xledger, snapshot, use_test_idp
from fastapi.routing import APIRoute, iter_route_contexts
from webworld import ADMIN_A, OPERATOR, ORG_A, ORG_B

READ, CHANGE, PROBE, RETRY, OWN, FOLLOW = "read", "change", "probe", "retry", "own", "follow"
"""What a route does: reads; changes configuration; probes the target (a connection test,
which operators may run); retries a run (operators may); answers about the caller only; or
follows something only its submitter knows the id of (a submission: 404 for anyone else)."""

TYPES = ("xledger", "dynamics")
"""B's Xledger is set up, its Dynamics is not: both must be refused alike."""


def _mapping_document() -> dict[str, Any]:
    from integration_hub.mappings.spec import load_template

    return load_template("xledger_expense_claims.yaml").model_dump(mode="json")


@dataclass(frozen=True)
class Sample:
    kind: str
    body: Any = None
    params: dict[str, Any] = field(default_factory=dict)


I = "/api/v1/organisations/{org}/integrations/{type}"  # noqa: E741
SAMPLES: dict[tuple[str, str], Sample] = {
    ("GET", "/api/v1/me"): Sample(OWN),
    ("GET", "/api/v1/organisations"): Sample(OWN),
    ("GET", "/api/v1/organisations/{org}/integrations"): Sample(READ),
    ("POST", I): Sample(CHANGE),
    ("GET", I): Sample(READ),
    ("GET", f"{I}/credentials"): Sample(READ),
    ("PUT", f"{I}/credentials"): Sample(CHANGE, {"values": {"api_token": "z" * 32}}),
    ("POST", f"{I}/connection-test"): Sample(PROBE),
    ("PUT", f"{I}/status"): Sample(CHANGE, {"status": "paused"}),
    ("GET", f"{I}/reference-codes"): Sample(READ),
    ("GET", f"{I}/companies"): Sample(READ),
    ("GET", f"{I}/journals"): Sample(READ),
    ("GET", f"{I}/mapping"): Sample(READ),
    ("POST", f"{I}/mapping/check"): Sample(READ, "mapping"),
    ("PUT", f"{I}/mapping"): Sample(CHANGE, {"document": "mapping", "accept_warnings": True}),
    ("GET", f"{I}/schedule"): Sample(READ),
    ("PUT", f"{I}/schedule"): Sample(CHANGE, {"daily": "04:30", "timezone": "UTC"}),
    ("GET", f"{I}/exclusions"): Sample(READ),
    ("PUT", f"{I}/exclusions"): Sample(CHANGE, {"selected": ["meals"]}),
    ("PUT", f"{I}/setup"): Sample(CHANGE, {"exclusions": ["meals"], "activate": False}),
    ("GET", f"{I}/health"): Sample(READ),
    ("GET", f"{I}/runs"): Sample(READ, params={"limit": 5}),
    ("GET", f"{I}/daily-counts"): Sample(READ, params={"days": 7}),
    ("POST", "/api/v1/runs/{run_id}/retry"): Sample(RETRY),
    ("GET", "/api/v1/runs/{run_id}"): Sample(READ),
    ("GET", "/api/v1/runs/{run_id}/outcomes"): Sample(READ),
    ("GET", "/api/v1/organisations/{org}/audit"): Sample(READ),
    ("GET", f"{I}/ignored"): Sample(READ),
    ("POST", f"{I}/ignored"): Sample(CHANGE, {"record_id": 8, "record_version": 1, "note": "x"}),
    ("DELETE", f"{I}/ignored/{{record_id}}/{{record_version}}"): Sample(CHANGE),
    ("POST", f"{I}/runs"): Sample(CHANGE, {"dry_run": True}),
    ("GET", f"{I}/submissions"): Sample(FOLLOW, params={"id": "0" * 32}),
}


def api_operations(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /api/v1 (its OpenAPI document and docs are
    plain routes, not API routes)."""
    found = set()
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and (route.path or "").startswith("/api/"):
            found.update((method, route.path) for method in (route.methods or set()) - {"HEAD"})
    assert found, "no API routes found: has FastAPI changed how routers are included?"
    return sorted(found)


def _body(sample: Sample) -> Any:
    if sample.body == "mapping":
        return _mapping_document()
    if isinstance(sample.body, dict) and sample.body.get("document") == "mapping":
        return {**sample.body, "document": _mapping_document()}
    return sample.body


def requests_for(app: Any, org: str, run_id: int, types: tuple[str, ...] = TYPES) -> list[Any]:
    """(kind, method, url, body, params) for every operation, path parameters filled in."""
    out = []
    for method, path in api_operations(app):
        sample = SAMPLES[(method, path)]
        for type_key in types if "{type}" in path else (None,):
            url = path.format(org=org, type=type_key, run_id=run_id, record_id=8, record_version=1)
            out.append((sample.kind, method, url, _body(sample), sample.params))
    return out


def _call(client: Any, method: str, url: str, body: Any, params: Any, **kw: Any) -> Any:
    return client.request(method, url, json=body, params=params, **kw)


@pytest.fixture
def world_b(web: Any) -> dict[str, Any]:
    """Organisation B fully configured (credentials, mapping, schedule, exclusions, a run with
    failures); organisation A with an integration of its own."""
    from factories import record_run

    from integration_hub.services import configuration as config
    from integration_hub.services.configuration import Actor

    row, token = configured_xledger(web, ORG_B, exclusions=("parking",))
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, Actor("test"))
    run_id = record_run(
        row.id, row.organisation_id, failures=[{"record_id": 8, "reason": "no account 9999"}]
    )
    configured_xledger(web, ORG_A)
    return {"row": row, "token": token, "run_id": run_id}


def test_every_api_route_has_a_sample(web: Any) -> None:
    operations = api_operations(web.app)
    missing = [op for op in operations if op not in SAMPLES]
    assert not missing, f"add these routes to the authorization matrix: {missing}"
    stale = [op for op in SAMPLES if op not in operations]
    assert not stale, f"these samples name routes that no longer exist: {stale}"
    assert len(operations) >= 20
    documented = {
        (method.upper(), path)
        for path, items in web.app.openapi()["paths"].items()
        for method in items
    }
    assert documented == set(operations)


def test_admin_of_a_is_refused_everything_of_b_and_nothing_changes(
    web: Any, world_b: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    private = use_test_idp(monkeypatch)
    session_client = web.client(ADMIN_A)
    csrf = {"X-CSRF-Token": web.csrf(session_client)}
    token_client = web.client()
    token_headers = bearer(private, role="admin", org=ORG_A)
    org_b = web.organisation_ids[ORG_B]
    before = snapshot(org_b, every_audit=True)
    outcomes = {}
    for kind, method, url, body, params in requests_for(web.app, ORG_B, world_b["run_id"]):
        for label, client, headers in (
            ("session", session_client, csrf),
            ("bearer", token_client, token_headers),
        ):
            response = _call(client, method, url, body, params, headers=headers)
            assert world_b["token"] not in response.text
            if kind == OWN:
                assert response.status_code == 200, (label, method, url, response.text)
                assert ORG_B not in response.text, (label, method, url)
                continue
            outcomes[(label, method, url)] = response.status_code
            assert response.status_code in (403, 404), (label, method, url, response.text)
            assert "error" in response.json()
    assert snapshot(org_b, every_audit=True) == before
    assert len(outcomes) >= 2 * 2 * 17
    # Most refusals name the reason: another organisation is forbidden, not merely absent.
    assert sum(code == 403 for code in outcomes.values()) > len(outcomes) // 2


def test_nobody_signed_in_gets_401_everywhere(web: Any, world_b: dict[str, Any]) -> None:
    anonymous = web.client()
    before = snapshot(web.organisation_ids[ORG_B], every_audit=True)
    for _kind, method, url, body, params in requests_for(web.app, ORG_B, world_b["run_id"]):
        response = _call(anonymous, method, url, body, params)
        assert response.status_code == 401, (method, url, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    assert snapshot(web.organisation_ids[ORG_B], every_audit=True) == before


def test_operator_reads_everything_changes_nothing(web: Any, world_b: dict[str, Any]) -> None:
    operator = web.client(OPERATOR)
    operator.headers["X-CSRF-Token"] = web.csrf(operator)
    org_b = web.organisation_ids[ORG_B]
    requests = requests_for(web.app, ORG_B, world_b["run_id"], types=("xledger",))
    before = snapshot(org_b)
    for kind, method, url, body, params in requests:
        if kind == CHANGE:
            response = _call(operator, method, url, body, params)
            assert response.status_code == 403, (method, url, response.text)
    assert snapshot(org_b) == before
    for kind, method, url, body, params in requests:
        if kind in (READ, OWN, PROBE):
            response = _call(operator, method, url, body, params)
            assert response.status_code == 200, (method, url, response.text)
            assert world_b["token"] not in response.text
    assert {o["slug"] for o in operator.get("/api/v1/organisations").json()} == {ORG_A, ORG_B}
    after = snapshot(org_b)
    assert {k: v for k, v in after.items() if k not in ("audit", "integrations")} == {
        k: v for k, v in before.items() if k not in ("audit", "integrations")
    }


def test_operator_may_retry_any_organisations_run(
    web: Any, world_b: dict[str, Any], prefect_harness: Any
) -> None:
    from integration_hub.services import configuration as config
    from integration_hub.services import sync
    from integration_hub.services.configuration import Actor

    row = world_b["row"]
    who = Actor("test")
    mapping = _mapping_document()
    mapping["value_maps"]["expense_accounts"]["toll"] = "9999"
    config.save_mapping(row, mapping, who, accept_warnings=True)
    config.set_exclusions(row, [], who)
    first = sync.run_export(ORG_B, "xledger", who)
    assert first["failed"] == 3
    config.save_mapping(row, _mapping_document(), who)

    operator = web.client(OPERATOR)
    operator.headers["X-CSRF-Token"] = web.csrf(operator)
    other_admin = web.client(ADMIN_A)
    other_admin.headers["X-CSRF-Token"] = web.csrf(other_admin)
    assert other_admin.post(f"/api/v1/runs/{first['run_id']}/retry").status_code == 403
    response = operator.post(f"/api/v1/runs/{first['run_id']}/retry")
    assert response.status_code == 200, response.text
    assert (response.json()["exported"], response.json()["failed"]) == (3, 0)
