"""The REST API under /api/v1 as an organisation's own admin uses it: every route's happy path,
bad input that changes nothing, and secrets that never leave the vault."""

from __future__ import annotations

from typing import Any

import pytest
from apiworld import API, bearer, configured_xledger, integration_url, snapshot, use_test_idp
from factories import configure_xledger, stored_secret
from webworld import ADMIN_A, ORG_A, ORG_B

XLEDGER = integration_url(ORG_A)


@pytest.fixture
def admin(web: Any) -> Any:
    """Org A's admin signed in, sending the session's CSRF header with every request."""
    client = web.client(ADMIN_A)
    client.headers["X-CSRF-Token"] = web.csrf(client)
    return client


def _audit(action: str) -> list[Any]:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import AuditEntry

    with hub_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


def _stored_secret(row: Any, field: str = "api_token") -> str:
    return stored_secret(row.organisation_id, row.id, field)


# -- organisations, dashboard, setup -----------------------------------------------------------
def test_organisations_and_dashboard_show_only_the_own_organisation(web: Any, admin: Any) -> None:
    assert admin.get(f"{API}/organisations").json() == [{"slug": ORG_A, "name": "Hlf"}]
    dashboard = admin.get(f"{API}/organisations/{ORG_A}/integrations")
    assert dashboard.status_code == 200, dashboard.text
    cards = {c["type"]: c for c in dashboard.json()["integrations"]}
    assert set(cards) == {"bufdir", "dynamics", "xledger"}
    assert {c["status"] for c in cards.values()} == {"not_set_up"}


def test_starting_a_setup_creates_a_draft_once_and_resumes_at_credentials(admin: Any) -> None:
    assert admin.get(XLEDGER).status_code == 404
    created = admin.post(XLEDGER)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "draft" and body["setup_step"] == "credentials"
    assert body["steps"] == ["credentials", "test", "mapping", "schedule", "exclusions", "review"]
    assert body["last_connection_test"] is None
    again = admin.post(XLEDGER)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert admin.get(XLEDGER).json()["id"] == body["id"]
    card = admin.get(f"{API}/organisations/{ORG_A}/integrations").json()["integrations"]
    assert {c["type"]: c["status"] for c in card}["xledger"] == "setting_up"
    # Bufdir maps no fields, so its setup has no mapping step.
    bufdir = admin.post(integration_url(ORG_A, "bufdir")).json()
    assert "mapping" not in bufdir["steps"]


@pytest.mark.parametrize(
    "url",
    [
        integration_url("Not A Slug"),
        integration_url(ORG_A, "sap"),
        f"{API}/organisations/no-such-org/integrations",
    ],
)
def test_bad_paths_are_client_errors(admin: Any, url: str) -> None:
    response = admin.get(url)
    assert response.status_code in (404, 422), response.text
    assert "error" in response.json()


# -- credentials -------------------------------------------------------------------------------
def test_credentials_are_stored_and_shown_only_as_masks(web: Any, admin: Any) -> None:
    token = web.xledger_company(ORG_A)
    admin.post(XLEDGER)
    url = f"{XLEDGER}/credentials"
    empty = admin.get(url).json()["fields"]
    assert {f["name"]: f["set"] for f in empty}["api_token"] is False
    base_url = f"{web.sandbox_url}/graphql"
    saved = admin.put(url, json={"values": {"base_url": base_url, "api_token": token}})
    assert saved.status_code == 200, saved.text
    assert token not in saved.text
    fields = {f["name"]: f for f in saved.json()["fields"]}
    assert fields["api_token"]["secret"] and fields["api_token"]["set"]
    assert fields["api_token"]["value"] == "••••••" + token[-4:]
    assert fields["base_url"] == {
        "name": "base_url",
        "secret": False,
        "value": base_url,
        "set": True,
        "required": fields["base_url"]["required"],
    }
    for response in (admin.get(url), admin.get(XLEDGER), admin.get(f"{XLEDGER}/health")):
        assert response.status_code == 200 and token not in response.text
    assert "api_token" not in admin.get(XLEDGER).json()["settings"]


def test_submitting_the_mask_keeps_the_secret_and_replacing_it_is_audited(
    web: Any, admin: Any
) -> None:
    row, token = configured_xledger(web, ORG_A)
    url = f"{XLEDGER}/credentials"
    mask = {f["name"]: f["value"] for f in admin.get(url).json()["fields"]}["api_token"]
    before = len(_audit("integration.configured"))
    kept = admin.put(url, json={"values": {"api_token": mask}})
    assert kept.status_code == 200, kept.text
    assert _stored_secret(row) == token
    blank = admin.put(url, json={"values": {"api_token": ""}})
    assert blank.status_code == 200 and _stored_secret(row) == token
    entries = _audit("integration.configured")[before:]
    assert [e.details["secrets_replaced"] for e in entries] == [[], []]

    new_token = web.xledger_company(ORG_A)
    replaced = admin.put(url, json={"values": {"api_token": new_token}})
    assert replaced.status_code == 200 and new_token not in replaced.text
    assert _stored_secret(row) == new_token
    last = _audit("integration.configured")[-1]
    assert last.actor == ADMIN_A and last.at is not None
    assert last.details["secrets_replaced"] == ["api_token"]
    assert new_token not in repr(last.details) and token not in repr(last.details)
    test = admin.post(f"{XLEDGER}/connection-test")
    assert test.json()["ok"] is True  # the new token is the one in use


@pytest.mark.parametrize(
    "values",
    [
        {"base_url": "not a url", "api_token": "x" * 32},
        {"no_such_field": "1"},
    ],
)
def test_credentials_of_the_wrong_shape_are_refused_and_nothing_is_stored(
    web: Any, admin: Any, values: dict[str, str]
) -> None:
    admin.post(XLEDGER)
    before = snapshot(web.organisation_ids[ORG_A])
    response = admin.put(f"{XLEDGER}/credentials", json={"values": values})
    assert response.status_code == 422, response.text
    assert response.json()["problems"]
    assert "x" * 32 not in response.text
    assert snapshot(web.organisation_ids[ORG_A]) == before


def test_a_malformed_credential_body_never_echoes_the_secret(admin: Any) -> None:
    admin.post(XLEDGER)
    secret = "s3cret-that-must-not-echo-" + "q" * 20
    response = admin.put(
        f"{XLEDGER}/credentials", json={"values": {"api_token": secret}, "extra": secret}
    )
    assert response.status_code == 422
    assert secret not in response.text
    response = admin.put(f"{XLEDGER}/credentials", json={"values": {"api_token": [secret]}})
    assert response.status_code == 422 and secret not in response.text


# -- sessions need CSRF, bearer tokens do not --------------------------------------------------
def test_session_changes_need_the_csrf_header_and_change_nothing_without_it(web: Any) -> None:
    _row, _token = configured_xledger(web, ORG_A)
    client = web.client(ADMIN_A)
    before = snapshot(web.organisation_ids[ORG_A])
    attempts = [
        client.put(f"{XLEDGER}/exclusions", json={"selected": ["toll"]}),
        client.put(f"{XLEDGER}/schedule", json={"daily": "03:00"}),
        client.put(f"{XLEDGER}/credentials", json={"values": {"api_token": "y" * 32}}),
        client.put(
            f"{XLEDGER}/exclusions",
            json={"selected": ["toll"]},
            headers={"X-CSRF-Token": "forged"},
        ),
    ]
    assert [a.status_code for a in attempts] == [403, 403, 403, 403]
    assert "X-CSRF-Token" in attempts[0].json()["error"]
    assert snapshot(web.organisation_ids[ORG_A]) == before
    assert client.get(f"{XLEDGER}/exclusions").status_code == 200  # reads need no header


def test_a_bearer_token_changes_its_own_organisation_without_csrf(
    web: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = use_test_idp(monkeypatch)
    configured_xledger(web, ORG_A)
    client = web.client()
    headers = bearer(private, role="admin", org=ORG_A)
    response = client.put(f"{XLEDGER}/exclusions", json={"selected": ["toll"]}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["selected"] == ["toll"]
    assert _audit("exclusions.set")[-1].actor == "idp:user-17"
    other = client.get(integration_url(ORG_B), headers=headers)
    assert other.status_code == 403


# -- connection test and reference codes -------------------------------------------------------
def test_connection_test_answers_with_a_classified_result(web: Any, admin: Any) -> None:
    _row, token = configured_xledger(web, ORG_A)
    response = admin.post(f"{XLEDGER}/connection-test")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"ok", "status", "detail", "elapsed_ms", "warnings"}
    assert body["ok"] is True and body["status"] == "ok" and 0 <= body["elapsed_ms"] < 10_000
    assert body["warnings"] == []
    assert token not in response.text
    last = admin.get(XLEDGER).json()["last_connection_test"]
    assert last["status"] == "ok" and last["at"]

    admin.put(f"{XLEDGER}/credentials", json={"values": {"api_token": "wrong" * 8}})
    refused = admin.post(f"{XLEDGER}/connection-test").json()
    assert refused["ok"] is False and refused["status"] == "bad_credentials"
    assert refused["detail"]


def test_connection_test_warns_in_the_callers_language_where_the_schema_differs(
    web: Any, admin: Any
) -> None:
    from integration_hub.sandbox.xledger_schema import SchemaChanges

    token = web.xledger_company(ORG_A, schema_changes=SchemaChanges(require=("dueDate",)))
    configure_xledger(ORG_A, web.sandbox_url, token)
    body = admin.post(f"{XLEDGER}/connection-test", headers={"Accept-Language": "nb"}).json()
    assert body["ok"] is True
    assert body["warnings"] == [
        "Xledger krever AddGLImportItemsInput.node.dueDate, som huben ikke sender; eksporten "
        "stopper til huben er oppdatert for det (si fra til driften av huben)"
    ]


def test_connection_test_without_credentials_says_so(admin: Any) -> None:
    admin.post(XLEDGER)
    body = admin.post(f"{XLEDGER}/connection-test").json()
    assert body["ok"] is False and body["status"] == "bad_credentials"


def test_reference_codes_come_from_the_target(web: Any, admin: Any) -> None:
    admin.post(XLEDGER)
    not_configured = admin.get(f"{XLEDGER}/reference-codes")
    assert not_configured.status_code == 409, not_configured.text
    configured_xledger(web, ORG_A)
    codes = admin.get(f"{XLEDGER}/reference-codes")
    assert codes.status_code == 200, codes.text
    by_code = {c["code"]: c for c in codes.json()}
    assert by_code["7140"]["name"] == "Reisekostnad ikke oppgavepliktig"
    assert by_code["7140"]["postable"] is True
    assert by_code["19"]["postable"] is False


# -- mapping -----------------------------------------------------------------------------------
def _template(admin: Any) -> dict[str, Any]:
    body = admin.get(f"{XLEDGER}/mapping").json()
    return body["document"]


def test_mapping_warnings_need_an_explicit_acknowledgement(web: Any, admin: Any) -> None:
    admin.post(XLEDGER)
    admin.put(
        f"{XLEDGER}/credentials",
        json={
            "values": {
                "base_url": f"{web.sandbox_url}/graphql",
                "api_token": web.xledger_company(ORG_A),
            }
        },
    )
    current = admin.get(f"{XLEDGER}/mapping").json()
    assert current["version"] is None and current["document"]["target"] == "xledger"
    document = current["document"]
    document["value_maps"]["expense_accounts"]["toll"] = "9999"

    check = admin.post(f"{XLEDGER}/mapping/check", json=document)
    assert check.status_code == 200, check.text
    assert check.json()["errors"] is False
    assert any("Xledger has no account 9999" in w for w in check.json()["warnings"])

    refused = admin.put(f"{XLEDGER}/mapping", json={"document": document})
    assert refused.status_code == 409, refused.text
    assert any("9999" in w for w in refused.json()["warnings"])
    assert admin.get(f"{XLEDGER}/mapping").json()["version"] is None

    saved = admin.put(f"{XLEDGER}/mapping", json={"document": document, "accept_warnings": True})
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == 1
    stored = admin.get(f"{XLEDGER}/mapping").json()
    assert stored["version"] == 1
    assert stored["document"]["value_maps"]["expense_accounts"]["toll"] == "9999"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(target="dynamics"),  # an error, not a warning
        lambda d: d.update(fields="not a mapping"),
        lambda d: d.update(unknown_key=1),
        lambda d: d["value_maps"].update(big={str(i): "x" * 100 for i in range(3000)}),
    ],
    ids=["wrong-target", "malformed", "unknown-key", "oversized"],
)
def test_bad_mappings_are_refused_and_nothing_is_saved(web: Any, admin: Any, mutate: Any) -> None:
    configured_xledger(web, ORG_A)
    document = _template(admin)
    mutate(document)
    before = snapshot(web.organisation_ids[ORG_A])
    response = admin.put(f"{XLEDGER}/mapping", json={"document": document, "accept_warnings": True})
    assert response.status_code == 422, response.text
    assert response.json()["problems"]
    assert snapshot(web.organisation_ids[ORG_A]) == before
    assert admin.post(f"{XLEDGER}/mapping/check", json=document).status_code in (200, 422)


def test_a_mapping_that_is_not_a_json_object_is_refused(admin: Any) -> None:
    admin.post(XLEDGER)
    for body in ([1, 2], "target: xledger", 42):
        response = admin.post(f"{XLEDGER}/mapping/check", json=body)
        assert response.status_code == 422, response.text


# -- schedule ----------------------------------------------------------------------------------
def test_schedule_daily_or_cron_with_the_next_three_runs(web: Any, admin: Any) -> None:
    from datetime import datetime

    configured_xledger(web, ORG_A)
    url = f"{XLEDGER}/schedule"
    empty = admin.get(url).json()
    assert empty["configured"] is False and empty["next_runs"] == []
    daily = admin.put(url, json={"daily": "02:00"})
    assert daily.status_code == 200, daily.text
    body = daily.json()
    assert body["cron"] == "0 2 * * *" and body["timezone"] == "Europe/Oslo"
    assert body["description"] == "daily at 02:00 (Europe/Oslo)"
    runs = [datetime.fromisoformat(r) for r in body["next_runs"]]
    assert len(runs) == 3 and all((r.hour, r.minute) == (2, 0) for r in runs)
    assert runs == sorted(runs) and str(runs[0].tzinfo) in ("Europe/Oslo", "UTC+01:00", "UTC+02:00")

    cron = admin.put(url, json={"cron": "30 6 * * 1-5", "timezone": "UTC", "enabled": True})
    assert cron.status_code == 200, cron.text
    assert cron.json()["description"] == "cron '30 6 * * 1-5' (UTC)"
    assert all(datetime.fromisoformat(r).weekday() < 5 for r in cron.json()["next_runs"])
    assert admin.get(url).json()["cron"] == "30 6 * * 1-5"

    off = admin.put(url, json={"enabled": False})  # keeps the expression
    assert off.json()["cron"] == "30 6 * * 1-5" and off.json()["next_runs"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"cron": "61 2 * * *"},
        {"cron": "every night"},
        {"daily": "02:00", "timezone": "Europe/Atlantis"},
        {"daily": "25:00"},
        {"daily": "02:00", "cron": "0 2 * * *"},
        {"timezone": "../../etc/passwd"},
    ],
)
def test_bad_schedules_are_refused_and_nothing_changes(
    web: Any, admin: Any, body: dict[str, Any]
) -> None:
    configured_xledger(web, ORG_A)
    assert admin.put(f"{XLEDGER}/schedule", json={"daily": "02:00"}).status_code == 200
    before = snapshot(web.organisation_ids[ORG_A])
    response = admin.put(f"{XLEDGER}/schedule", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["problems"]
    assert snapshot(web.organisation_ids[ORG_A]) == before


# -- exclusions and status ---------------------------------------------------------------------
def test_exclusions_offer_the_choices_and_refuse_unknown_categories(web: Any, admin: Any) -> None:
    configured_xledger(web, ORG_A)
    url = f"{XLEDGER}/exclusions"
    current = admin.get(url).json()
    assert current == {
        "choices": ["mileage", "travel", "meals", "materials", "parking", "toll"],
        "selected": [],
    }
    saved = admin.put(url, json={"selected": ["toll", "meals"]})
    assert saved.status_code == 200 and saved.json()["selected"] == ["meals", "toll"]
    before = snapshot(web.organisation_ids[ORG_A])
    refused = admin.put(url, json={"selected": ["toll", "champagne"]})
    assert refused.status_code == 422 and "champagne" in refused.json()["error"]
    assert snapshot(web.organisation_ids[ORG_A]) == before
    assert admin.get(url).json()["selected"] == ["meals", "toll"]


def test_activating_needs_a_passed_connection_test_then_finishes_the_setup(
    web: Any, admin: Any
) -> None:
    assert admin.post(XLEDGER).status_code == 201  # the wizard's start
    configured_xledger(web, ORG_A)
    url = f"{XLEDGER}/status"
    assert admin.put(url, json={"status": "bogus"}).status_code == 422
    draft = admin.get(XLEDGER).json()
    assert draft["status"] == "draft"
    assert admin.post(f"{XLEDGER}/connection-test").json()["ok"] is True
    active = admin.put(url, json={"status": "active"})
    assert active.status_code == 200, active.text
    assert active.json()["status"] == "active" and active.json()["setup_step"] is None
    paused = admin.put(url, json={"status": "paused"})
    assert paused.json()["status"] == "paused"
    card = admin.get(f"{API}/organisations/{ORG_A}/integrations").json()["integrations"]
    assert {c["type"]: c["status"] for c in card}["xledger"] == "paused"


def test_activating_a_setup_without_a_passed_test_is_refused(admin: Any) -> None:
    admin.post(XLEDGER)
    response = admin.put(f"{XLEDGER}/status", json={"status": "active"})
    assert response.status_code == 422, response.text
    assert admin.get(XLEDGER).json()["status"] == "draft"


# -- health, history, counts -------------------------------------------------------------------
def test_health_runs_and_daily_counts(web: Any, admin: Any) -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from factories import record_run

    row, token = configured_xledger(web, ORG_A)
    # Days are Oslo days: 10:00 in Oslo today, whatever the hour in UTC (at 23:30 UTC it is
    # already tomorrow in Oslo).
    today = datetime.now(ZoneInfo("Europe/Oslo")).replace(
        hour=10, minute=0, second=0, microsecond=0
    )
    first = record_run(row.id, row.organisation_id, started_at=today - timedelta(days=1))
    failing = record_run(
        row.id,
        row.organisation_id,
        started_at=today,
        failures=[
            {"record_id": 3, "reason": "Xledger has no account 9999", "amount_ore": 4300},
            {"record_id": 4, "reason": "Xledger has no account 9999", "amount_ore": 3900},
        ],
    )
    health = admin.get(f"{XLEDGER}/health")
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["last_run"]["run_id"] == failing and body["failures_total"] == 2
    assert body["retry_run_id"] == failing and body["healthy"] is False
    assert [f["reason"] for f in body["failures"]] == ["Xledger has no account 9999"] * 2
    assert body["failures"][0]["amount"] == "kr 43,00"
    assert token not in health.text

    runs = admin.get(f"{XLEDGER}/runs", params={"limit": 1})
    assert [r["run_id"] for r in runs.json()] == [failing]
    assert [r["run_id"] for r in admin.get(f"{XLEDGER}/runs").json()] == [failing, first]
    counts = admin.get(f"{XLEDGER}/daily-counts", params={"days": 3}).json()
    assert len(counts) == 3
    assert counts[-1]["failed"] == 2 and counts[-1]["exported"] == 8
    assert counts[-2]["exported"] == 10 and counts[0] == {
        "day": counts[0]["day"],
        "exported": 0,
        "failed": 0,
    }
    for params in ({"limit": 0}, {"limit": 10_000}, {"limit": "many"}):
        assert admin.get(f"{XLEDGER}/runs", params=params).status_code == 422
    for params in ({"days": 0}, {"days": 400}):
        assert admin.get(f"{XLEDGER}/daily-counts", params=params).status_code == 422


def test_retry_of_an_unknown_or_clean_run_is_refused(web: Any, admin: Any) -> None:
    from factories import record_run

    row, _token = configured_xledger(web, ORG_A)
    clean = record_run(row.id, row.organisation_id)
    assert admin.post(f"{API}/runs/{clean}/retry").status_code == 422
    assert admin.post(f"{API}/runs/999999/retry").status_code == 404
    assert admin.post(f"{API}/runs/0/retry").status_code == 422
    assert admin.post(f"{API}/runs/{2**40}/retry").status_code == 422


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_retry_turns_failures_into_exports_after_the_mapping_is_fixed(
    web: Any, admin: Any, prefect_harness: Any
) -> None:
    from integration_hub.services import sync
    from integration_hub.services.configuration import Actor

    configured_xledger(web, ORG_A, toll_account="9999")
    first = sync.run_export(ORG_A, "xledger", Actor("test"))
    assert first["failed"] == 3
    health = admin.get(f"{XLEDGER}/health").json()
    assert health["retry_run_id"] == first["run_id"] and health["failures_total"] == 3

    document = _template(admin)
    document["value_maps"]["expense_accounts"]["toll"] = "7140"
    assert admin.put(f"{XLEDGER}/mapping", json={"document": document}).status_code == 200
    retried = admin.post(f"{API}/runs/{first['run_id']}/retry")
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert body["retry_of_run_id"] == first["run_id"]
    assert (body["exported"], body["failed"]) == (3, 0)
    assert admin.get(f"{XLEDGER}/health").json()["retry_run_id"] is None
