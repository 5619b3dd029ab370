"""The setup wizard and the credential, schedule and excluded-categories screens, over HTTP.

Runs on SQLite and PostgreSQL (the ``web`` fixture). Every page a stored secret could reach is
checked for it; every refused post is checked to have changed nothing.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from webworld import ADMIN_A, ADMIN_B, OPERATOR, ORG_A, hidden_csrf

XL = f"/orgs/{ORG_A}/integrations/xledger"
TEMPLATES = Path(__file__).parent.parent / "integration_hub" / "web" / "templates"


# -- helpers -----------------------------------------------------------------------------------
def row_of(web: Any, type_key: str = "xledger", org: str = ORG_A) -> Any:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import Integration

    with hub_session() as session:
        row = session.exec(
            select(Integration).where(
                Integration.organisation_id == web.organisation_ids[org],
                Integration.type_key == type_key,
            )
        ).first()
        if row is not None:
            session.expunge(row)
    return row


def stored_secret(row: Any, field: str = "api_token") -> str:
    from factories import stored_secret as secret_of

    return secret_of(row.organisation_id, row.id, field)


def masks_of(row: Any) -> dict[str, str]:
    from integration_hub.db import hub_session
    from integration_hub.vault import CredentialVault

    with hub_session() as session:
        return CredentialVault.masked(session, integration_id=row.id)


def audit_entries(row: Any) -> list[Any]:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import AuditEntry

    with hub_session() as session:
        entries = session.exec(
            select(AuditEntry).where(AuditEntry.integration_id == row.id).order_by(AuditEntry.id)  # type: ignore[arg-type]
        ).all()
        for entry in entries:
            session.expunge(entry)
    return list(entries)


def schedule_of(row: Any) -> tuple[str, str, bool] | None:
    from integration_hub.services import configuration as config

    stored = config.get_schedule(row)
    return None if stored is None else (stored.cron, stored.timezone, stored.enabled)


def save_credentials(web: Any, client: Any, token: str, org: str = ORG_A) -> Any:
    """Start the Xledger wizard for ``org`` and store ``token`` (pointing at the sandbox)."""
    base = f"/orgs/{org}/integrations/xledger"
    assert client.get(f"{base}/setup").status_code == 303
    response = client.post(
        f"{base}/setup/credentials",
        data={
            "csrf_token": web.csrf(client),
            "base_url": f"{web.sandbox_url}/graphql",
            "api_token": token,
        },
    )
    assert response.status_code == 303, response.text
    return response


def save_template_mapping(web: Any, org: str = ORG_A) -> None:
    """The mapping step is the mapping editor's page: here the service saves the template."""
    from integration_hub.mappings.spec import load_template
    from integration_hub.services import configuration as config
    from integration_hub.services import wizard

    row = row_of(web, org=org)
    config.save_mapping(
        row, load_template("xledger_expense_claims.yaml"), config.OPERATOR, accept_warnings=True
    )
    wizard.complete(row, "mapping", config.OPERATOR)


def reach_schedule_step(web: Any, client: Any) -> str:
    """Credentials, a passing connection test and the mapping: the wizard stands at schedule."""
    token = web.xledger_company(ORG_A)
    save_credentials(web, client, token)
    tested = client.post(f"{XL}/setup/test", data={"csrf_token": web.csrf(client)})
    assert tested.status_code == 200 and "Koblet til Xledger" in tested.text
    save_template_mapping(web)
    return token


def field_input(html: str, name: str) -> str:
    found = re.search(rf'<input id="field-{name}"[^>]*>', html, re.DOTALL)
    assert found, f"no input for {name}"
    return found.group(0)


# -- the whole wizard --------------------------------------------------------------------------
def test_the_xledger_wizard_from_start_to_active(web: Any) -> None:
    client = web.client(ADMIN_A)
    token = web.xledger_company(ORG_A)
    seen: list[str] = []

    started = client.get(f"{XL}/setup")
    assert started.status_code == 303
    assert started.headers["location"] == f"{XL}/setup/credentials"

    page = client.get(f"{XL}/setup/credentials")
    seen.append(page.text)
    assert page.status_code == 200
    assert page.text.count("<h1") == 1
    assert '<ol class="steps">' in page.text
    assert re.search(r'<li class="current" aria-current="step">\s*<span', page.text)
    assert 'type="password"' in page.text and 'autocomplete="off"' in page.text
    assert "Ikke lagret ennå" in page.text  # the token's hint: not stored yet

    saved = client.post(
        f"{XL}/setup/credentials",
        data={
            "csrf_token": hidden_csrf(page.text),
            "base_url": f"{web.sandbox_url}/graphql",
            "api_token": token,
        },
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"{XL}/setup/test"

    test_page = client.get(f"{XL}/setup/test")
    seen.append(test_page.text)
    assert "<progress" in test_page.text and 'aria-live="polite"' in test_page.text
    assert f'data-api="/api/v1/organisations/{ORG_A}/integrations/xledger/connection-test"' in (
        test_page.text
    )
    tested = client.post(f"{XL}/setup/test", data={"csrf_token": web.csrf(client)})
    seen.append(tested.text)
    assert tested.status_code == 200
    assert "Tilkoblet" in tested.text and "Koblet til Xledger" in tested.text
    assert 'name="action" value="continue"' in tested.text
    assert row_of(web).last_test_status == "ok"
    onwards = client.post(
        f"{XL}/setup/test", data={"csrf_token": web.csrf(client), "action": "continue"}
    )
    assert onwards.status_code == 303
    assert onwards.headers["location"] == f"{XL}/setup/mapping"

    save_template_mapping(web)
    assert client.get(f"{XL}/setup").headers["location"] == f"{XL}/setup/schedule"

    schedule_page = client.get(f"{XL}/setup/schedule")
    seen.append(schedule_page.text)
    assert 'value="02:00"' in schedule_page.text and 'value="Europe/Oslo"' in schedule_page.text
    scheduled = client.post(
        f"{XL}/setup/schedule",
        data={
            "csrf_token": web.csrf(client),
            "mode": "daily",
            "time": "02:00",
            "timezone": "Europe/Oslo",
            "enabled": "on",
        },
    )
    assert scheduled.status_code == 303
    assert schedule_of(row_of(web)) == ("0 2 * * *", "Europe/Oslo", True)
    shown = client.get(scheduled.headers["location"])
    seen.append(shown.text)
    runs = re.findall(r'<time datetime="(\d{4}-\d\d-\d\dT02:00)">', shown.text)
    assert len(runs) == 3 and len(set(runs)) == 3
    assert "Tidsplanen er lagret." in shown.text
    assert f'href="{XL}/setup/exclusions"' in shown.text

    excluded = client.post(
        f"{XL}/setup/exclusions",
        data={"csrf_token": web.csrf(client), "categories": ["parking", "toll"]},
    )
    assert excluded.status_code == 303
    assert excluded.headers["location"] == f"{XL}/setup/review"

    from integration_hub.services import configuration as config

    assert config.list_exclusions(row_of(web)) == ["parking", "toll"]

    review = client.get(f"{XL}/setup/review")
    seen.append(review.text)
    assert review.status_code == 200
    assert masks_of(row_of(web))["api_token"] in review.text
    assert "Versjon 1 er lagret." in review.text
    assert "daglig kl. 02:00 (Europe/Oslo)" in review.text
    assert "Parkering" in review.text and "Bompenger" in review.text
    assert len(re.findall(r"<li>\d{4}-\d\d-\d\d 02:00 \(Europe/Oslo\)</li>", review.text)) == 3

    activated = client.post(f"{XL}/setup/review", data={"csrf_token": web.csrf(client)})
    assert activated.status_code == 303
    assert activated.headers["location"].startswith(f"/orgs/{ORG_A}")
    row = row_of(web)
    assert row.status == "active" and row.setup_step is None
    dashboard = client.get(f"/orgs/{ORG_A}")
    assert re.search(
        r'<h2 id="card-xledger">Xledger</h2>\s*<p><span class="status status-active">',
        dashboard.text,
    )

    for text in seen:
        assert token not in text


def test_leaving_and_coming_back_resumes_where_it_stopped(web: Any) -> None:
    first = web.client(ADMIN_A)
    save_credentials(web, first, "wrong-token-for-now-1234")

    later = web.client(ADMIN_A)  # another session, e.g. the next day
    resumed = later.get(f"{XL}/setup")
    assert resumed.status_code == 303
    assert resumed.headers["location"] == f"{XL}/setup/test"
    # A step not reached yet sends the person back to where they are.
    ahead = later.get(f"{XL}/setup/review")
    assert ahead.status_code == 303 and ahead.headers["location"] == f"{XL}/setup/test"
    page = later.get(f"{XL}/setup/test")
    assert re.search(rf'<li class="done">\s*<a href="{XL}/setup/credentials">', page.text), (
        "the credentials step is shown as done and can be reopened"
    )
    assert re.search(r'<li class="todo">\s*<span class="step-number">3\.</span>', page.text)
    # Going back to a done step does not move the resume point back.
    assert later.get(f"{XL}/setup/credentials").status_code == 200
    assert later.get(f"{XL}/setup").headers["location"] == f"{XL}/setup/test"


def test_unknown_type_and_unknown_organisation_are_not_found(web: Any) -> None:
    client = web.client(ADMIN_A)
    assert client.get(f"/orgs/{ORG_A}/integrations/nope/setup").status_code == 404
    assert client.get(f"/orgs/{ORG_A}/integrations/nope/schedule").status_code == 404
    assert client.get("/orgs/nowhere/integrations/xledger/setup").status_code == 404


# -- credentials -------------------------------------------------------------------------------
def test_the_credential_form_shows_only_the_mask_and_a_posted_mask_keeps_the_secret(
    web: Any,
) -> None:
    client = web.client(ADMIN_A)
    token = web.xledger_company(ORG_A)
    save_credentials(web, client, token)
    row = row_of(web)
    mask = masks_of(row)["api_token"]
    assert mask.endswith(token[-4:]) and token not in mask

    page = client.get(f"{XL}/credentials")
    assert page.status_code == 200 and token not in page.text
    secret_input = field_input(page.text, "api_token")
    assert 'type="password"' in secret_input and f'value="{mask}"' in secret_input
    assert 'autocomplete="off"' in secret_input
    assert "(lagret)" in page.text and "tøm feltet og skriv inn den nye verdien" in page.text

    kept = client.post(
        f"{XL}/credentials",
        data={
            "csrf_token": hidden_csrf(page.text),
            "base_url": f"{web.sandbox_url}/graphql",
            "api_token": mask,
        },
    )
    assert kept.status_code == 303 and kept.headers["location"] == f"{XL}/credentials?saved=1"
    assert stored_secret(row) == token
    assert not [e for e in audit_entries(row) if e.action == "credential.replaced"]
    after = client.get(kept.headers["location"])
    assert "Påloggingsopplysningene er lagret." in after.text and token not in after.text

    new_token = web.xledger_company(ORG_A)
    replaced = client.post(
        f"{XL}/credentials",
        data={
            "csrf_token": web.csrf(client),
            "base_url": f"{web.sandbox_url}/graphql",
            "api_token": new_token,
        },
    )
    assert replaced.status_code == 303
    assert stored_secret(row) == new_token
    entries = audit_entries(row)
    replacement = [e for e in entries if e.action == "credential.replaced"]
    assert len(replacement) == 1
    assert replacement[0].actor == ADMIN_A and replacement[0].at is not None
    assert replacement[0].details == {"field": "api_token"}
    for entry in entries:
        dumped = json.dumps(entry.details)
        assert new_token not in dumped and token not in dumped
    page = client.get(f"{XL}/credentials")
    assert new_token not in page.text and token not in page.text
    assert masks_of(row)["api_token"] in page.text


def test_credentials_of_the_wrong_shape_are_refused_and_nothing_is_stored(web: Any) -> None:
    client = web.client(ADMIN_A)
    assert client.get(f"{XL}/setup").status_code == 303
    assert row_of(web) is None  # opening the wizard stores nothing
    refused = client.post(
        f"{XL}/setup/credentials",
        data={
            "csrf_token": web.csrf(client),
            "base_url": "not a url",
            "api_token": "a-new-token-that-must-not-echo",
        },
    )
    assert refused.status_code == 422
    assert 'role="alert"' in refused.text
    assert 'href="#field-base_url"' in refused.text
    assert "Må være en fullstendig nettadresse" in refused.text
    base_input = field_input(refused.text, "base_url")
    assert 'aria-invalid="true"' in base_input and 'value="not a url"' in base_input
    assert "error-base_url" in base_input  # the message is tied to the field
    assert "a-new-token-that-must-not-echo" not in refused.text
    after = row_of(web)  # the first post stores the draft, and nothing of what was refused
    assert after.settings == {} and after.setup_step == "credentials"
    assert masks_of(after) == {}
    assert not [e for e in audit_entries(after) if e.action.startswith(("credential.", "integ"))][
        1:
    ]  # only "integration.created"

    missing = client.post(
        f"{XL}/setup/credentials",
        data={"csrf_token": web.csrf(client), "base_url": f"{web.sandbox_url}/graphql"},
    )
    assert missing.status_code == 422
    assert "Må fylles ut" in missing.text and 'href="#field-api_token"' in missing.text
    assert masks_of(row_of(web)) == {} and row_of(web).settings == {}


def test_a_failed_connection_test_says_why_and_does_not_complete_the_step(web: Any) -> None:
    client = web.client(ADMIN_A)
    web.xledger_company(ORG_A)
    save_credentials(web, client, "this-token-is-not-known-to-xledger")
    tested = client.post(f"{XL}/setup/test", data={"csrf_token": web.csrf(client)})
    assert tested.status_code == 200
    assert re.search(r'<div class="notice failure" role="alert">', tested.text)
    assert "Påloggingsopplysningene ble avvist" in tested.text
    assert "Xledger avviste API-tokenet" in tested.text
    assert f'href="{XL}/setup/credentials"' in tested.text
    assert 'name="action" value="continue"' not in tested.text.split("<template")[0]
    assert "this-token-is-not-known-to-xledger" not in tested.text
    row = row_of(web)
    assert row.last_test_status == "bad_credentials" and row.setup_step == "test"
    refused = client.post(
        f"{XL}/setup/test", data={"csrf_token": web.csrf(client), "action": "continue"}
    )
    assert refused.status_code == 409
    assert row_of(web).setup_step == "test"

    english = web.client(ADMIN_A)
    english.post("/language", data={"language": "en", "next": "/", "csrf_token": web.csrf(english)})
    again = english.post(f"{XL}/credentials/test", data={"csrf_token": web.csrf(english)})
    assert again.status_code == 200
    assert "The credentials were refused" in again.text
    assert "Xledger refused the API token" in again.text


def test_the_test_step_shows_where_the_targets_schema_differs_before_saving(web: Any) -> None:
    """The credentials work, so the step passes; the drift is shown as a warning, in bokmål,
    and the script's template has a place for the API's warnings too."""
    from integration_hub.sandbox.xledger_schema import SchemaChanges

    client = web.client(ADMIN_A)
    token = web.xledger_company(ORG_A, schema_changes=SchemaChanges(drop=("trRegNumber",)))
    save_credentials(web, client, token)
    tested = client.post(f"{XL}/setup/test", data={"csrf_token": web.csrf(client)})
    assert tested.status_code == 200
    shown = tested.text.split("<template")[0]
    assert '<div class="notice warning">' in shown
    assert "Skjemaet til Xledger avviker fra det huben sender" in shown
    assert "Xledger har ikke AddGLImportItemsInput.node.trRegNumber, som huben sender" in shown
    assert 'name="action" value="continue"' in shown  # a warning, not a failed test
    assert 'data-slot="warnings"' in tested.text
    script = (TEMPLATES.parent / "static" / "app.js").read_text(encoding="utf-8")
    assert "answer.warnings" in script


def test_the_page_hands_the_script_what_the_connection_test_api_needs(web: Any) -> None:
    """The script calls the API with the token from the page; the answer has what it reads."""
    client = web.client(ADMIN_A)
    token = web.xledger_company(ORG_A)
    save_credentials(web, client, token)
    page = client.get(f"{XL}/setup/test")
    api = re.search(r'data-api="([^"]+)"', page.text)
    csrf = re.search(r'data-csrf="([^"]+)"', page.text)
    assert api and csrf and csrf.group(1) == web.csrf(client)
    labels = re.search(r"data-status-labels='([^']+)'", page.text)
    assert labels and json.loads(labels.group(1))["bad_credentials"] == (
        "Påloggingsopplysningene ble avvist"
    )
    answer = client.post(api.group(1), headers={"X-CSRF-Token": csrf.group(1)})
    assert answer.status_code == 200
    body = answer.json()
    assert body["ok"] is True and body["status"] == "ok" and body["elapsed_ms"] >= 0
    assert token not in answer.text
    # The step then continues on the test that passed, without running it again.
    onwards = client.post(
        f"{XL}/setup/test", data={"csrf_token": web.csrf(client), "action": "continue"}
    )
    assert onwards.status_code == 303 and onwards.headers["location"] == f"{XL}/setup/mapping"
    script = (TEMPLATES.parent / "static" / "app.js").read_text(encoding="utf-8")
    assert "X-CSRF-Token" in script and "form.submit()" in script


# -- schedule ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {"mode": "cron", "cron": "61 2 * * *", "timezone": "Europe/Oslo"},
            "cron",
            "'61 2 * * *' er ikke et gyldig cron-uttrykk",
        ),
        (
            {"mode": "daily", "time": "02:00", "timezone": "Mars/Olympus"},
            "timezone",
            "ukjent tidssone 'Mars/Olympus' (bruk et IANA-navn som Europe/Oslo)",
        ),
        (
            {"mode": "daily", "time": "25:00", "timezone": "Europe/Oslo"},
            "time",
            "'25:00' er ikke et klokkeslett som 02:00",
        ),
        (
            {"mode": "cron", "cron": "", "timezone": "Europe/Oslo"},
            "cron",
            "Skriv et cron-uttrykk",
        ),
    ],
)
def test_a_bad_schedule_is_refused_and_the_stored_one_is_kept(
    web: Any, data: dict[str, str], field: str, message: str
) -> None:
    client = web.client(ADMIN_A)
    reach_schedule_step(web, client)
    good = client.post(
        f"{XL}/schedule",
        data={
            "csrf_token": web.csrf(client),
            "mode": "daily",
            "time": "03:30",
            "timezone": "Europe/Oslo",
            "enabled": "on",
        },
    )
    assert good.status_code == 303
    before = schedule_of(row_of(web))
    assert before == ("30 3 * * *", "Europe/Oslo", True)
    audits = len(audit_entries(row_of(web)))

    for url in (f"{XL}/schedule", f"{XL}/setup/schedule"):
        refused = client.post(url, data={"csrf_token": web.csrf(client), "enabled": "on", **data})
        assert refused.status_code == 422
        assert message in html.unescape(refused.text)
        assert f'href="#field-{field}"' in refused.text
        assert 'aria-invalid="true"' in field_input(refused.text, field)
        assert schedule_of(row_of(web)) == before
    assert len(audit_entries(row_of(web))) == audits
    assert row_of(web).setup_step == "schedule"


def test_the_schedule_screen_shows_the_stored_schedule_and_takes_a_cron_expression(
    web: Any,
) -> None:
    client = web.client(ADMIN_A)
    reach_schedule_step(web, client)
    empty = client.get(f"{XL}/schedule")
    assert "Ingen tidsplan er lagret ennå." in empty.text
    saved = client.post(
        f"{XL}/schedule",
        data={
            "csrf_token": web.csrf(client),
            "mode": "cron",
            "cron": "30 1 * * 1-5",
            "timezone": "Europe/London",
            "enabled": "on",
        },
    )
    assert saved.status_code == 303
    assert schedule_of(row_of(web)) == ("30 1 * * 1-5", "Europe/London", True)
    page = client.get(f"{XL}/schedule")
    runs = re.findall(r'<time datetime="([^"]+)">', page.text)
    assert len(runs) == 3 and all(r.endswith("T01:30") for r in runs)
    assert 'value="cron" aria-describedby="hint-mode-cron" checked' in page.text
    assert 'aria-current="page">Tidsplan</a>' in page.text

    off = client.post(
        f"{XL}/schedule",
        data={
            "csrf_token": web.csrf(client),
            "mode": "cron",
            "cron": "30 1 * * 1-5",
            "timezone": "Europe/London",
        },
    )
    assert off.status_code == 303
    assert schedule_of(row_of(web)) == ("30 1 * * 1-5", "Europe/London", False)
    page = client.get(f"{XL}/schedule")
    assert "er slått av, så ingen kjøringer er planlagt" in page.text
    assert "<time datetime=" not in page.text


# -- excluded categories -----------------------------------------------------------------------
def test_exclusions_show_people_words_and_refuse_unknown_categories(web: Any) -> None:
    client = web.client(ADMIN_A)
    reach_schedule_step(web, client)
    page = client.get(f"{XL}/exclusions")
    assert "<fieldset" in page.text and "<legend>Kategorier som ikke skal sendes til Xledger" in (
        page.text
    )
    for code, label in (("mileage", "Kjøregodtgjørelse"), ("toll", "Bompenger")):
        assert re.search(
            rf'<input type="checkbox" id="exclude-{code}" name="categories" value="{code}"\s*>\s*'
            rf'<label for="exclude-{code}">{label}</label>',
            page.text,
        )
    saved = client.post(
        f"{XL}/exclusions", data={"csrf_token": web.csrf(client), "categories": ["meals"]}
    )
    assert saved.status_code == 303
    from integration_hub.services import configuration as config

    assert config.list_exclusions(row_of(web)) == ["meals"]
    assert 'value="meals" checked' in client.get(f"{XL}/exclusions").text

    refused = client.post(
        f"{XL}/exclusions",
        data={"csrf_token": web.csrf(client), "categories": ["parking", "caviar"]},
    )
    assert refused.status_code == 422
    assert "ukjent kategori caviar" in refused.text and 'role="alert"' in refused.text
    assert config.list_exclusions(row_of(web)) == ["meals"]


def test_bufdir_exclusions_name_the_activity_categories(web: Any) -> None:
    client = web.client(ADMIN_B)
    base = "/orgs/blindeforbundet/integrations/bufdir"
    assert client.get(f"{base}/setup").headers["location"] == f"{base}/setup/credentials"
    page = client.get(f"{base}/setup/credentials")
    assert "Feltkobling" not in page.text  # Bufdir maps no fields: no mapping step
    assert "Trinn 1 av 4" in page.text  # ... and is reported per closed period: no schedule
    assert f"{base}/schedule" not in page.text and "Tidsplan" not in page.text
    started = client.post(  # the API's start of a setup stores the draft
        "/api/v1/organisations/blindeforbundet/integrations/bufdir",
        headers={"X-CSRF-Token": web.csrf(client)},
    )
    assert started.status_code == 201, started.text
    exclusions = client.get(f"{base}/exclusions")
    assert "Utkast til aktiviteter" in exclusions.text
    assert "Aktiviteter av typen: Kurs" in exclusions.text
    assert 'value="type:likepersonsarbeid"' in exclusions.text


# -- who may --------------------------------------------------------------------------------------
ROUTES = [
    ("GET", "setup"),
    ("GET", "setup/credentials"),
    ("POST", "setup/credentials"),
    ("GET", "setup/test"),
    ("POST", "setup/test"),
    ("GET", "setup/schedule"),
    ("POST", "setup/schedule"),
    ("GET", "setup/exclusions"),
    ("POST", "setup/exclusions"),
    ("GET", "setup/review"),
    ("POST", "setup/review"),
    ("GET", "credentials"),
    ("POST", "credentials"),
    ("POST", "credentials/test"),
    ("GET", "schedule"),
    ("POST", "schedule"),
    ("GET", "exclusions"),
    ("POST", "exclusions"),
]
CHANGE = {
    "csrf_token": "",
    "base_url": "https://evil.example/graphql",
    "api_token": "stolen-token-0000000",
    "mode": "daily",
    "time": "04:00",
    "timezone": "UTC",
    "categories": "meals",
    "action": "test",
}


def test_another_organisations_admin_is_refused_on_every_route(web: Any) -> None:
    owner = web.client(ADMIN_A)
    token = reach_schedule_step(web, owner)
    row = row_of(web)
    before = (row.settings, masks_of(row), schedule_of(row), row.setup_step, row.last_test_at)
    audits = len(audit_entries(row))

    intruder = web.client(ADMIN_B)
    for method, page in ROUTES:
        url = f"{XL}/{page}"
        if method == "GET":
            response = intruder.get(url)
        else:
            response = intruder.post(url, data={**CHANGE, "csrf_token": web.csrf(intruder)})
        assert response.status_code in (403, 404), (method, url, response.status_code)
        assert token not in response.text
    row = row_of(web)
    assert (row.settings, masks_of(row), schedule_of(row), row.setup_step, row.last_test_at) == (
        before
    )
    assert len(audit_entries(row)) == audits
    assert stored_secret(row) == token


def test_an_operator_reads_the_screens_but_cannot_change_anything(web: Any) -> None:
    owner = web.client(ADMIN_A)
    token = reach_schedule_step(web, owner)
    owner.post(
        f"{XL}/setup/schedule",
        data={
            "csrf_token": web.csrf(owner),
            "mode": "daily",
            "time": "02:00",
            "timezone": "Europe/Oslo",
            "enabled": "on",
        },
    )
    owner.post(f"{XL}/setup/exclusions", data={"csrf_token": web.csrf(owner)})
    row = row_of(web)
    assert row.setup_step == "review"
    before = (row.settings, masks_of(row), schedule_of(row), row.status)

    operator = web.client(OPERATOR)
    for page in ("credentials", "schedule", "exclusions", "setup/credentials"):
        response = operator.get(f"{XL}/{page}")
        assert response.status_code == 200, page
        assert token not in response.text
    for page in ("credentials", "schedule", "exclusions", "setup/credentials", "setup/review"):
        response = operator.post(f"{XL}/{page}", data={**CHANGE, "csrf_token": web.csrf(operator)})
        assert response.status_code == 403, page
        assert "driftere kan lese og kjøre på nytt, ikke endre oppsettet" in response.text
    row = row_of(web)
    assert (row.settings, masks_of(row), schedule_of(row), row.status) == before
    assert stored_secret(row) == token


def test_a_form_post_without_the_csrf_token_is_refused(web: Any) -> None:
    client = web.client(ADMIN_A)
    assert client.get(f"{XL}/setup").status_code == 303
    for page in ("setup/credentials", "credentials", "schedule", "exclusions", "setup/review"):
        data = {k: v for k, v in CHANGE.items() if k != "csrf_token"}
        response = client.post(f"{XL}/{page}", data=data)
        assert response.status_code == 403, page
        forged = client.post(f"{XL}/{page}", data={**data, "csrf_token": "forged"})
        assert forged.status_code == 403, page
    assert row_of(web) is None  # not even the draft a first accepted post would store


# -- language ----------------------------------------------------------------------------------
SETUP_TEMPLATES = [
    "_wizard_steps.html",
    "_settings_nav.html",
    "_credential_fields.html",
    "_connection_test.html",
    "_schedule_fields.html",
    "_next_runs.html",
    "_exclusion_fields.html",
    "credentials.html",
    "schedule.html",
    "exclusions.html",
    *sorted(p.name for p in TEMPLATES.glob("wizard_*.html")),
]


def test_every_text_of_the_setup_screens_has_a_bokmal_translation() -> None:
    from integration_hub.adapters import all_types
    from integration_hub.web import i18n
    from integration_hub.web.pages import credentials, exclusions, wizard

    texts: set[str] = set()
    literal = re.compile(r"""_\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
    for name in SETUP_TEMPLATES:
        for found in literal.finditer((TEMPLATES / name).read_text(encoding="utf-8")):
            texts.add(found.group(1) if found.group(1) is not None else found.group(2))
    texts |= set(wizard.STEP_LABELS.values()) | set(credentials.CONNECTION_STATUS_TEXT.values())
    texts |= {
        text
        for adapter_type in all_types()
        for name in adapter_type.config_model.model_fields
        for text in adapter_type.config_model.field_text(name)
        if text
    }
    texts |= {credentials.SECRET_SET_HINT, credentials.SECRET_UNSET_HINT}
    texts |= set(exclusions.CATEGORY_TEXT.values()) | set(exclusions.CATEGORY_HINTS.values())
    texts |= set(exclusions.ACTIVITY_TYPE_TEXT.values())
    assert len(texts) > 100
    missing = sorted(t for t in texts if t not in i18n.catalogue())
    assert not missing


def test_the_setup_screens_speak_english_when_asked(web: Any) -> None:
    client = web.client(ADMIN_A)
    client.post("/language", data={"language": "en", "next": "/", "csrf_token": web.csrf(client)})
    assert client.get(f"{XL}/setup").status_code == 303
    page = client.get(f"{XL}/setup/credentials")
    assert "Credentials" in page.text and "Step 1 of 6" in page.text
    assert "Påloggingsopplysninger" not in page.text


def test_bufdir_has_no_schedule_anywhere(web: Any) -> None:
    """Bufdir is reported once per closed period: no schedule step, and a schedule is refused
    by the service whichever way it comes (page, API, CLI path), nothing stored or pushed."""
    from integration_hub.db import hub_session
    from integration_hub.models import SyncSchedule
    from integration_hub.services import configuration as config
    from integration_hub.services import scheduler, wizard
    from integration_hub.services.errors import InvalidInput

    admin = config.Actor(ADMIN_B, web.organisation_ids["blindeforbundet"], "admin")
    row = wizard.start("blindeforbundet", "bufdir", admin)
    assert "schedule" not in wizard.steps_for("bufdir")
    with pytest.raises(InvalidInput, match="once per closed period"):
        scheduler.set_schedule(row, admin, daily="02:00", timezone="Europe/Oslo")
    with pytest.raises(InvalidInput, match="once per closed period"):
        config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, admin)
    client = web.client(ADMIN_B)
    page = client.get("/orgs/blindeforbundet/integrations/bufdir/schedule")
    assert page.status_code == 422 and "én gang per avsluttet periode" in page.text
    api = client.put(
        "/api/v1/organisations/blindeforbundet/integrations/bufdir/schedule",
        json={"daily": "02:00"},
        headers={"X-CSRF-Token": web.csrf(client)},
    )
    assert api.status_code == 422 and "avsluttet periode" in api.json()["error"]
    assert config.get_schedule(row) is None
    # A schedule stored before this rule (or by hand) is never pushed to Prefect.
    with hub_session() as session:
        session.add(SyncSchedule(integration_id=row.id or 0, cron="0 2 * * *"))
    assert scheduler.slug_for(row.id or 0) not in scheduler.wanted_schedules()
