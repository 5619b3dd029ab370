"""A setup is validated whole, then applied whole (issue 12 §3): the setup service
(``integration_hub/services/setup.py``) as the CLI, the REST API and the web wizard use it.

Runs on SQLite and PostgreSQL (``hub_env``). Every refused or failed setup is checked to have
changed nothing, by comparing everything the organisation's integrations hold before and after.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from apiworld import configured_xledger, integration_url, snapshot
from factories import seed_organisation, stored_secret
from typer.testing import CliRunner
from webworld import ADMIN_A, OPERATOR, ORG_A, ORG_B

from integration_hub.adapters.registry import feature_flag
from integration_hub.cli import app
from integration_hub.services import configuration as config
from integration_hub.services import setup, wizard
from integration_hub.services.errors import InvalidInput

runner = CliRunner()
WHO = config.Actor("test")
XL = f"/orgs/{ORG_A}/integrations/xledger"


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def closed_port_url() -> str:
    """An address on this machine where nothing listens: a port bound, then let go."""
    from integration_hub.serving import free_port

    return f"http://127.0.0.1:{free_port()}/graphql"


@pytest.fixture
def org(hub_env: str, vault_key: Path, xledger_sandbox: Any) -> dict[str, Any]:
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    state.add_company(token, employees=[{"code": "1001"}], closed_before=date(2024, 1, 1))
    org_id = seed_organisation("bf", [{"category": "mileage", "amount_ore": 43_225}])
    config.set_feature_flag(org_id, feature_flag("xledger"), True, config.OPERATOR)
    return {"id": org_id, "token": token, "url": f"{server.url}/graphql", "state": state}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xledger.yaml"
    path.write_text(text)
    return path


def setup_file(url: str, *, extra: str = "") -> str:
    return (
        f"base_url: {url}\n"
        "credentials:\n  api_token: ${XLEDGER_API_TOKEN}\n"
        "mapping: default\n"
        "schedule: {daily: '02:00', timezone: Europe/Oslo}\n"
        "exclusions: [parking]\n" + extra
    )


def run_setup(path: Path, token: str) -> Any:
    return invoke(
        "setup", "bf", "xledger", "--from-file", str(path), env={"XLEDGER_API_TOKEN": token}
    )


def xledger(org_slug: str = "bf") -> Any:
    return config.integration(config.organisation(org_slug), "xledger", config.OPERATOR)


def last_line(output: str) -> str:
    return [line for line in output.splitlines() if line.strip()][-1]


# -- the CLI: validated whole --------------------------------------------------------------------
def test_a_misspelt_key_is_refused_with_a_suggestion_and_nothing_is_stored(
    org: dict[str, Any], tmp_path: Path
) -> None:
    path = write(tmp_path, setup_file(org["url"]).replace("base_url:", "base_ulr:"))
    before = snapshot(org["id"])
    result = run_setup(path, org["token"])
    assert result.exit_code == 2, result.output
    assert "base_ulr: unknown key; did you mean 'base_url'?" in result.output
    assert last_line(result.output) == (
        "Nothing was changed: the setup file has 1 problem (listed above); fix them and run "
        "the command again."
    )
    assert "Traceback" not in result.output and org["token"] not in result.output
    assert snapshot(org["id"]) == before
    assert snapshot(org["id"])["integrations"] == []  # not even a draft


def test_every_problem_of_a_file_is_reported_together(org: dict[str, Any], tmp_path: Path) -> None:
    text = (
        setup_file("not a url")
        .replace("daily: '02:00'", "daily: '25:00'")
        .replace("[parking]", "[sauna]")
        + "schedul: {daily: '02:00'}\n"
    )
    before = snapshot(org["id"])
    result = run_setup(write(tmp_path, text), org["token"])
    assert result.exit_code == 2, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("  - ")]
    assert len(problems) == 4, result.output
    assert any(p.startswith("  - base_url: ") for p in problems)
    assert "  - '25:00' is not a time of day like 02:00" in problems
    sauna = "unknown category sauna (choose from mileage, travel, meals, materials, parking, toll)"
    assert f"  - {sauna}" in problems
    assert "  - schedul: unknown key; did you mean 'schedule'?" in problems
    assert "has 4 problems" in last_line(result.output)
    assert snapshot(org["id"]) == before


def test_the_service_reports_every_problem_of_a_setup_at_once(org: dict[str, Any]) -> None:
    """The same checks through the service, as the API and the demo call it: what cannot be
    read and what is not valid, in one answer."""
    answers = {
        "base_url": org["url"],
        "credentials": {"api_token": org["token"], "api_tokn": "x"},
        "schedule": {"cron": "61 2 * * *", "timezon": "UTC"},
        "exclusions": "parking",
        "activate": "yes",
        "api_token": "in the open",
    }
    with pytest.raises(InvalidInput) as refused:
        setup.apply("bf", "xledger", setup.read_setup("xledger", answers), WHO)
    problems = refused.value.problems
    assert problems[:5] == [
        "api_token: a secret goes under credentials: (e.g. api_token: ${VARIABLE}), so that it "
        "is not written in the file",
        "credentials.api_tokn: unknown key; did you mean 'api_token'?",
        "schedule.timezon: unknown key; did you mean 'timezone'?",
        "exclusions: must be a list of categories, e.g. [parking]",
        "activate: must be true or false",
    ]
    assert problems[5].startswith("'61 2 * * *' is not a valid cron expression")
    assert len(problems) == 6
    assert str(refused.value) == "the setup has 6 problems; nothing was changed"
    assert org["token"] not in repr(problems)
    assert snapshot(org["id"])["integrations"] == []


# -- the connection test comes before anything is stored ------------------------------------------
def test_a_failed_connection_test_leaves_the_stored_setup_as_it_was_and_exits_1(
    org: dict[str, Any], tmp_path: Path
) -> None:
    first = run_setup(write(tmp_path, setup_file(org["url"])), org["token"])
    assert first.exit_code == 0, first.output
    row = xledger()
    assert row.status == "active" and row.last_test_status == "ok"
    before = snapshot(org["id"])

    # The target moves to an address where nothing answers, with a new token.
    new_token = secrets.token_hex(16)
    moved = run_setup(write(tmp_path, setup_file(closed_port_url())), new_token)
    assert moved.exit_code == 1, moved.output
    assert last_line(moved.output).startswith(
        "Nothing was changed: the connection test with the new settings failed (unreachable: "
    )
    assert last_line(moved.output).endswith("the stored configuration is kept.")
    assert "status: active" not in moved.output and new_token not in moved.output
    # A wrong token for the same address: the working one is not replaced.
    wrong = run_setup(write(tmp_path, setup_file(org["url"])), "not-a-token-xledger-knows")
    assert wrong.exit_code == 1, wrong.output
    assert "(bad_credentials: " in last_line(wrong.output)

    assert snapshot(org["id"]) == before
    assert stored_secret(row.organisation_id, row.id, "api_token") == org["token"]
    assert xledger().settings["base_url"] == org["url"]
    assert invoke("test-connection", "bf", "xledger").exit_code == 0


def test_a_store_that_fails_half_way_stores_nothing(
    org: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configuration, mapping, schedule, exclusions and status are one transaction: a failure
    at the last of them leaves none of the others behind."""
    request = setup.read_setup(
        "xledger",
        {
            "base_url": org["url"],
            "credentials": {"api_token": org["token"]},
            "mapping": "default",
            "schedule": {"daily": "02:00"},
            "exclusions": ["parking"],
        },
    )

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(config, "store_exclusions", broken)
    with pytest.raises(RuntimeError):
        setup.apply("bf", "xledger", request, WHO)
    state = snapshot(org["id"])
    assert state["integrations"] == [] and state["credentials"] == []
    assert state["mappings"] == [] and state["schedules"] == []


# -- a valid file applies everything and pushes the schedule ---------------------------------------
@pytest.fixture(scope="module")
def export_deployment(prefect_harness: Any) -> Any:
    """The export deployment on the session's test server (as ``serve`` registers it)."""
    from integration_hub.deployments import EXPORT_EXPENSE_CLAIMS

    return EXPORT_EXPENSE_CLAIMS.to_runner_deployment().apply()


@pytest.fixture
def prefect_schedules(export_deployment: Any) -> Iterator[Callable[[], dict[str, Any]]]:
    """A function returning the export deployment's schedules by slug; starts and ends empty."""
    from prefect.client.orchestration import get_client

    def clear() -> None:
        with get_client(sync_client=True) as client:
            for schedule in client.read_deployment_schedules(export_deployment):
                client.delete_deployment_schedule(export_deployment, schedule.id)

    def read() -> dict[str, Any]:
        with get_client(sync_client=True) as client:
            return {s.slug: s for s in client.read_deployment_schedules(export_deployment)}

    clear()
    yield read
    clear()


def test_a_valid_file_applies_everything_and_pushes_the_schedule(
    org: dict[str, Any], tmp_path: Path, prefect_schedules: Callable[[], dict[str, Any]]
) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    result = run_setup(write(tmp_path, setup_file(org["url"])), org["token"])
    assert result.exit_code == 0, result.output
    assert "connection test: ok" in result.output
    assert "field mapping saved as version 1" in result.output
    assert "schedule: daily at 02:00 (Europe/Oslo)" in result.output
    assert org["token"] not in result.output and "••••••" + org["token"][-4:] in result.output
    assert last_line(result.output) == (
        "Xledger for bf is set up and active. Run `integrations sync bf xledger` to export now."
    )
    row = xledger()
    assert row.status == "active" and row.setup_step is None and row.last_test_status == "ok"
    assert row.settings["base_url"] == org["url"]
    assert stored_secret(row.organisation_id, row.id, "api_token") == org["token"]
    assert config.current_mapping(row)[0] == 1
    assert config.list_exclusions(row) == ["parking"]
    schedule = config.get_schedule(row)
    assert schedule is not None and (schedule.cron, schedule.timezone) == (
        "0 2 * * *",
        "Europe/Oslo",
    )
    pushed = prefect_schedules()[f"integration-{row.id}"]
    assert pushed.schedule == CronSchedule(cron="0 2 * * *", timezone="Europe/Oslo")

    # The same file again changes nothing: no new mapping version, the same schedule.
    again = run_setup(write(tmp_path, setup_file(org["url"])), org["token"])
    assert again.exit_code == 0, again.output
    assert "field mapping: version 1, unchanged" in again.output
    # The token from the environment is stored again (its value is not compared).
    assert last_line(again.output).startswith("Xledger for bf is updated (1 change) and active.")
    assert config.current_mapping(xledger())[0] == 1
    assert list(prefect_schedules()) == [f"integration-{row.id}"]


# -- the REST API goes through the same service ---------------------------------------------------
@pytest.fixture
def admin(web: Any) -> Any:
    client = web.client(ADMIN_A)
    client.headers["X-CSRF-Token"] = web.csrf(client)
    return client


SAUNA_IN_BOKMAL = (
    "ukjent kategori sauna (velg blant mileage, travel, meals, materials, parking, toll)"
)


def test_the_api_takes_a_whole_setup_and_refuses_it_whole(web: Any, admin: Any) -> None:
    url = integration_url(ORG_A, tail="/setup")
    token = web.xledger_company(ORG_A)
    body = {
        "base_url": f"{web.sandbox_url}/graphql",
        "credentials": {"api_token": token},
        "mapping": "default",
        "schedul": {"daily": "02:00"},
        "exclusions": ["sauna"],
    }
    before = snapshot(web.organisation_ids[ORG_A])
    refused = admin.put(url, json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json() == {
        "error": "oppsettet har 2 feil; ingenting ble endret",
        "problems": ["schedul: ukjent nøkkel; mente du 'schedule'?", SAUNA_IN_BOKMAL],
    }
    assert token not in refused.text
    assert snapshot(web.organisation_ids[ORG_A]) == before

    body = {k: v for k, v in body.items() if k != "schedul"}
    body.update(exclusions=["parking"], schedule={"daily": "02:00"})
    failed = admin.put(
        url, json={**body, "base_url": closed_port_url(), "credentials": {"api_token": "x" * 20}}
    )
    assert failed.status_code == 409, failed.text
    assert "ingenting ble endret" in failed.json()["error"]
    assert snapshot(web.organisation_ids[ORG_A]) == before

    applied = admin.put(url, json=body)
    assert applied.status_code == 200, applied.text
    answer = applied.json()
    assert answer["integration"]["status"] == "active"
    assert answer["connection_test"]["ok"] is True and answer["mapping_version"] == 1
    assert "voucher_type: not set -> GL" in answer["changes"]  # defaults are stored too
    assert answer["changes"][-5:] == [
        "api_token: not set -> entered",
        "field mapping: none -> version 1",
        "schedule: none -> daily at 02:00 (Europe/Oslo)",
        "excluded categories: none -> parking",
        "status: not set up -> active",
    ]
    assert answer["changes"][0] == f"base_url: not set -> {web.sandbox_url}/graphql"
    assert token not in applied.text


def test_the_api_setup_of_another_organisation_or_by_an_operator_is_refused(web: Any) -> None:
    token = web.xledger_company(ORG_B)
    body = {
        "base_url": f"{web.sandbox_url}/graphql",
        "credentials": {"api_token": token},
        "mapping": "default",
    }
    before = snapshot(web.organisation_ids[ORG_B], every_audit=True)
    for email, status in ((ADMIN_A, 403), (OPERATOR, 403), (None, 401)):
        client = web.client(email)
        if email is not None:
            client.headers["X-CSRF-Token"] = web.csrf(client)
        refused = client.put(integration_url(ORG_B, tail="/setup"), json=body)
        assert refused.status_code == status, (email, refused.text)
        assert token not in refused.text
    assert snapshot(web.organisation_ids[ORG_B], every_audit=True) == before


def test_new_credentials_of_a_running_integration_are_tested_before_they_are_stored(
    web: Any, admin: Any
) -> None:
    row, token = configured_xledger(web, ORG_A)
    assert config.test_connection(row, WHO).ok
    wizard.activate(config.reload(row), WHO)
    refused = admin.put(
        integration_url(ORG_A, tail="/credentials"),
        json={"values": {"api_token": "a-token-xledger-does-not-know"}},
    )
    assert refused.status_code == 409, refused.text
    assert stored_secret(row.organisation_id, row.id, "api_token") == token
    new_token = web.xledger_company(ORG_A)
    changed = admin.put(
        integration_url(ORG_A, tail="/credentials"), json={"values": {"api_token": new_token}}
    )
    assert changed.status_code == 200, changed.text
    assert stored_secret(row.organisation_id, row.id, "api_token") == new_token
    assert config.reload(row).status == "active"


def test_the_credentials_screen_of_a_running_integration_tests_before_it_stores(
    web: Any,
) -> None:
    row, token = active_xledger(web)
    client = web.client(ADMIN_A)
    refused = client.post(
        f"{XL}/credentials",
        data={
            "csrf_token": web.csrf(client),
            "base_url": f"{web.sandbox_url}/graphql",
            "api_token": "a-token-xledger-does-not-know",
        },
    )
    assert refused.status_code == 422
    assert "tilkoblingstesten med de nye innstillingene mislyktes (bad_credentials)" in (
        refused.text
    )
    assert stored_secret(row.organisation_id, row.id, "api_token") == token
    assert config.reload(row).last_test_status == "ok"


# -- the web wizard stages a change of a running integration -------------------------------------
def active_xledger(web: Any) -> tuple[Any, str]:
    row, token = configured_xledger(web, ORG_A)
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, WHO)
    assert config.test_connection(row, WHO).ok
    wizard.activate(config.reload(row), WHO)
    row = config.reload(row)
    assert row.status == "active" and row.setup_step is None
    return row, token


def live_state(row: Any) -> tuple[Any, ...]:
    stored = config.get_schedule(row)
    return (
        stored_secret(row.organisation_id, row.id, "api_token"),
        config.reload(row).settings,
        config.current_mapping(row)[0],
        (stored.cron, stored.timezone, stored.enabled) if stored else None,
        config.list_exclusions(row),
        config.reload(row).status,
    )


def test_changing_an_active_integration_is_staged_until_it_is_tested_and_applied(
    web: Any,
) -> None:
    from test_web_mapping import choices

    row, token = active_xledger(web)
    live = live_state(row)
    client = web.client(ADMIN_A)
    new_token = web.xledger_company(ORG_A)

    page = client.get(f"{XL}/setup/credentials")
    assert page.status_code == 200 and 'id="staged-notice"' in page.text
    saved = client.post(
        f"{XL}/setup/credentials",
        data={
            "csrf_token": web.csrf(client),
            "base_url": f"{web.sandbox_url}/graphql",
            "api_token": new_token,
        },
    )
    assert saved.status_code == 303 and saved.headers["location"] == f"{XL}/setup/test"
    assert live_state(row) == live  # the running setup is untouched
    shown = client.get(f"{XL}/setup/credentials").text
    assert "••••••" + new_token[-4:] in shown and new_token not in shown

    test_page = client.get(f"{XL}/setup/test")
    assert "data-connection-test" not in test_page.text  # the form tests the staged setup
    tested = client.post(f"{XL}/setup/test", data={"csrf_token": web.csrf(client)})
    assert tested.status_code == 200 and "Koblet til Xledger" in tested.text
    assert live_state(row) == live

    mapped = client.post(
        f"{XL}/setup/mapping",
        data={"csrf_token": web.csrf(client), "action": "save", **choices(toll="7160")},
    )
    assert mapped.status_code == 303, mapped.text
    assert config.current_mapping(row)[0] == 1  # staged, not saved

    scheduled = client.post(
        f"{XL}/setup/schedule",
        data={
            "csrf_token": web.csrf(client),
            "mode": "cron",
            "cron": "30 5 * * 1-5",
            "timezone": "UTC",
            "enabled": "on",
        },
    )
    assert scheduled.status_code == 303
    kept = client.get(scheduled.headers["location"])
    assert "Tidsplanen er tatt vare på sammen med de andre endringene dine." in kept.text
    excluded = client.post(
        f"{XL}/setup/exclusions",
        data={"csrf_token": web.csrf(client), "categories": ["parking"]},
    )
    assert excluded.status_code == 303
    assert live_state(row) == live

    review = client.get(f"{XL}/setup/review")
    assert review.status_code == 200
    changes = re.search(r'<dl class="facts" id="changes">(.*?)</dl>', review.text, re.DOTALL)
    assert changes, review.text
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", changes.group(1))))
    assert text.strip() == (
        "API-token byttet ut "  # the token: replaced, never shown
        "Feltkobling versjon 1 → versjon 2 "
        "Tidsplan daglig kl. 02:00 (Europe/Oslo) → cron '30 5 * * 1-5' (UTC) "
        "Utelatte kategorier ingen → parking"
    )
    assert new_token not in review.text and token not in review.text

    applied = client.post(
        f"{XL}/setup/review", data={"csrf_token": web.csrf(client), "action": "apply"}
    )
    assert applied.status_code == 303, applied.text
    assert applied.headers["location"] == f"{XL}/setup/done?changed=1"
    done = client.get(applied.headers["location"])
    assert "Endringene er tatt i bruk: Xledger kjører med det nye oppsettet." in done.text
    assert live_state(row) == (
        new_token,
        live[1],
        2,
        ("30 5 * * 1-5", "UTC", True),
        ["parking"],
        "active",
    )
    assert setup.staged_of(row) is None
    assert client.get(f"{XL}/setup/credentials").text.count('id="staged-notice"') == 1


def test_a_staged_change_that_fails_its_test_is_refused_and_can_be_discarded(web: Any) -> None:
    row, _token = active_xledger(web)
    live = live_state(row)
    before = snapshot(web.organisation_ids[ORG_A])
    client = web.client(ADMIN_A)
    staged = client.post(
        f"{XL}/setup/credentials",
        data={
            "csrf_token": web.csrf(client),
            "base_url": closed_port_url(),
            "api_token": "a-token-for-an-address-that-is-down",
        },
    )
    assert staged.status_code == 303
    tested = client.post(f"{XL}/setup/test", data={"csrf_token": web.csrf(client)})
    assert "Fikk ikke kontakt med Xledger: ConnectError" in tested.text
    onwards = client.post(
        f"{XL}/setup/test", data={"csrf_token": web.csrf(client), "action": "continue"}
    )
    assert onwards.status_code == 409

    refused = client.post(
        f"{XL}/setup/review", data={"csrf_token": web.csrf(client), "action": "apply"}
    )
    assert refused.status_code == 422
    assert "Endringene ble ikke tatt i bruk" in refused.text
    assert "tilkoblingstesten med de nye innstillingene mislyktes (unreachable)" in refused.text
    assert "a-token-for-an-address-that-is-down" not in refused.text
    assert live_state(row) == live
    assert setup.staged_of(row) is not None  # the staged change stays, to be fixed

    discarded = client.post(
        f"{XL}/setup/review", data={"csrf_token": web.csrf(client), "action": "discard"}
    )
    assert discarded.status_code == 303
    done = client.get(discarded.headers["location"])
    assert "Endringene er forkastet: Xledger kjører som før." in done.text
    assert setup.staged_of(row) is None
    after = snapshot(web.organisation_ids[ORG_A])
    assert {k: v for k, v in after.items() if k != "audit"} == {
        k: v for k, v in before.items() if k != "audit"
    }


def test_activating_a_draft_in_the_wizard_confirms_it(web: Any) -> None:
    wizard.start(ORG_A, "xledger", WHO)  # a draft the wizard made, at its first step
    row, _token = configured_xledger(web, ORG_A)
    assert config.test_connection(row, WHO).ok
    for step in ("credentials", "test", "mapping", "schedule", "exclusions"):
        wizard.complete(config.reload(row), step, WHO)
    assert config.reload(row).setup_step == "review"
    client = web.client(ADMIN_A)
    activated = client.post(f"{XL}/setup/review", data={"csrf_token": web.csrf(client)})
    assert activated.status_code == 303
    done = client.get(activated.headers["location"])
    assert done.status_code == 200
    assert '<div class="notice success" role="status">Xledger er aktiv.</div>' in done.text
    assert config.reload(row).status == "active"


# -- the pages at 390 px wide ---------------------------------------------------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_staged_review_and_the_confirmation_fit_a_phone(
    web: Any, browser_page: Any, live_server: str
) -> None:
    from browser_support import sign_in
    from test_browser_mobile import assert_fits, narrow
    from webworld import PASSWORD

    row, _token = active_xledger(web)
    setup.stage_configuration(
        row,
        {"base_url": f"{web.sandbox_url}/graphql", "api_token": web.xledger_company(ORG_A)},
        WHO,
    )
    setup.stage_schedule(row, WHO, cron="30 5 * * 1-5", timezone="America/Argentina/Buenos_Aires")
    setup.stage_exclusions(row, ["mileage", "travel", "meals", "materials", "parking"], WHO)
    page = narrow(browser_page)
    sign_in(page, live_server, ADMIN_A, PASSWORD, language="nb")
    page.goto(f"{XL}/setup/review")
    assert page.locator("#changes dt").count() == 3
    assert_fits(page, "the staged review")
    page.get_by_role("button", name="Ta endringene i bruk").click()
    page.wait_for_url(lambda url: "/setup/done" in url)
    assert page.get_by_role("status").inner_text() == (
        "Endringene er tatt i bruk: Xledger kjører med det nye oppsettet."
    )
    assert_fits(page, "the confirmation")


def test_an_operator_reads_a_staged_change_but_cannot_apply_it(web: Any) -> None:
    row, _token = active_xledger(web)
    setup.stage_exclusions(row, ["parking"], WHO)
    client = web.client(OPERATOR)
    for step in ("credentials", "test", "schedule", "exclusions", "review", "done"):
        assert client.get(f"{XL}/setup/{step}").status_code == 200, step
    review = client.get(f"{XL}/setup/review")
    assert "Endringer er under arbeid" in review.text and 'value="apply"' not in review.text
    refused = client.post(
        f"{XL}/setup/review", data={"csrf_token": web.csrf(client), "action": "apply"}
    )
    assert refused.status_code == 403
    assert config.list_exclusions(row) == [] and setup.staged_of(row) is not None
