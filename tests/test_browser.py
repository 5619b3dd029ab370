"""The admin web app in a real browser: Debian's chromium, headless, driven by Playwright for
Python against the app served by uvicorn on 127.0.0.1 (tests/browser_support.py).

What a person does is done as a person does it: labels and roles, the keyboard, clicks. The
accessibility pass injects the vendored axe-core into every page (in a context that bypasses
the Content-Security-Policy, since axe arrives as an inline script); every other test runs under
the app's real policy and fails on anything the page logs as an error.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_support import assert_accessible, sign_in
from factories import configure_xledger
from playwright.sync_api import Page, expect
from webworld import ADMIN_A, ADMIN_B, OPERATOR, ORG_A, ORG_B, PASSWORD

pytestmark = [
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.timeout(120),
]


def no_browser_problems(page: Page) -> None:
    """Nothing logged as an error or warning: a CSP refusal, a failed script, a 404 asset."""
    assert page.problems.messages == [], page.problems.messages


# =============================================================================================
# signing in, the dashboard, keyboard basics
# =============================================================================================
def test_sign_in_by_keyboard_lands_on_the_own_dashboard_with_a_secure_cookie(
    browser_page: Page, live_server: str
) -> None:
    page = browser_page
    page.context.add_cookies([{"name": "ih_lang", "value": "en", "url": live_server}])
    page.goto(f"/orgs/{ORG_A}")
    expect(page).to_have_url(re.compile(r"/sign-in\?next="))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")

    page.get_by_label("E-mail address").fill(ADMIN_A)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")

    expect(page).to_have_url(f"{live_server}/orgs/{ORG_A}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Integrations for Hlf")
    session = next(c for c in page.context.cookies() if c["name"] == "ih_session")
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    no_browser_problems(page)


def test_a_wrong_password_is_announced_and_focused(browser_page: Page, live_server: str) -> None:
    page = browser_page
    page.context.add_cookies([{"name": "ih_lang", "value": "en", "url": live_server}])
    page.goto("/sign-in")
    page.get_by_label("E-mail address").fill(ADMIN_A)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("the e-mail address or the password is wrong")
    expect(alert).to_be_focused()
    assert not any(c["name"] == "ih_session" for c in page.context.cookies())


def test_dashboard_lists_every_offered_type_with_status_and_a_set_up_link(
    browser_page: Page, live_server: str
) -> None:
    page = browser_page
    sign_in(page, live_server, ADMIN_A, PASSWORD)
    cards = page.locator(".integration-card")
    expect(cards.get_by_role("heading", name="Xledger")).to_be_visible()
    xledger = cards.filter(has=page.get_by_role("heading", name="Xledger"))
    expect(xledger).to_contain_text("Not set up")
    expect(xledger).to_contain_text("Not scheduled")
    expect(xledger.get_by_role("link", name="Set up Xledger")).to_have_attribute(
        "href", f"/orgs/{ORG_A}/integrations/xledger/setup"
    )
    assert cards.count() >= 3  # Xledger, Business Central and Bufdir are all switched on
    no_browser_problems(page)


def test_the_skip_link_is_the_first_tab_stop_and_moves_focus_to_main(
    browser_page: Page, live_server: str
) -> None:
    page = browser_page
    sign_in(page, live_server, ADMIN_A, PASSWORD)
    page.goto(f"/orgs/{ORG_A}")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()  # shown when focused, not left off-screen
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()
    # The next Tab goes on from main's content, not back to the header.
    page.keyboard.press("Tab")
    focused_in_main = page.evaluate(
        "() => document.querySelector('main').contains(document.activeElement)"
    )
    assert focused_in_main


def test_an_admin_asking_for_another_organisation_gets_a_refusal_page(
    browser_page: Page, live_server: str
) -> None:
    page = browser_page
    sign_in(page, live_server, ADMIN_B, PASSWORD)
    response = page.goto(f"/orgs/{ORG_A}")
    assert response is not None and response.status in {403, 404}
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("main")).not_to_contain_text("Hlf")


def test_bokmal_is_the_default_and_english_can_be_chosen(
    browser_page: Page, live_server: str
) -> None:
    page = browser_page
    page.goto("/sign-in")
    expect(page.locator("html")).to_have_attribute("lang", "nb")
    expect(page.get_by_role("heading", level=1)).to_have_text("Logg inn")
    page.get_by_label("Språk").select_option("en")
    page.get_by_role("button", name="Bytt").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    no_browser_problems(page)


# =============================================================================================
# accessibility: axe-core on every page
# =============================================================================================
def test_axe_sign_in_organisations_dashboard_and_error_pages(
    axe_page: Page, live_server: str
) -> None:
    page = axe_page
    page.goto("/sign-in")  # bokmål, the default
    assert_accessible(page, "sign-in (nb)")
    page.context.add_cookies([{"name": "ih_lang", "value": "en", "url": live_server}])
    page.goto("/sign-in")
    page.get_by_label("E-mail address").fill(ADMIN_A)
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert_accessible(page, "sign-in with an error (en)")

    sign_in(page, live_server, OPERATOR, PASSWORD)
    page.goto("/orgs")
    expect(page.get_by_role("link", name="Blindeforbundet")).to_be_visible()
    assert_accessible(page, "organisations (operator)")
    page.goto(f"/orgs/{ORG_B}")
    assert_accessible(page, "dashboard (operator)")
    page.goto("/orgs/no-such-organisation")
    expect(page.get_by_role("alert")).to_be_visible()
    assert_accessible(page, "error page")


def test_axe_dashboard_in_bokmal(axe_page: Page, live_server: str) -> None:
    page = axe_page
    sign_in(page, live_server, ADMIN_B, PASSWORD, language="nb")
    expect(page.locator("html")).to_have_attribute("lang", "nb")
    assert_accessible(page, "dashboard (nb)")


def test_the_axe_check_itself_finds_a_serious_violation(axe_page: Page) -> None:
    """The accessibility pass can fail: an unlabelled field and unreadable text are caught."""
    page = axe_page
    page.set_content(
        '<html lang="en"><head><title>t</title></head><body><main><h1>Form</h1>'
        '<input type="text" name="x"><p style="color:#eee;background:#fff">faint</p>'
        "</main></body></html>"
    )
    with pytest.raises(AssertionError) as failed:
        assert_accessible(page, "a page made to fail")
    assert "label" in str(failed.value) and "color-contrast" in str(failed.value)


@pytest.mark.parametrize("language", ["en", "nb"])
def test_axe_every_wizard_step(web: Any, axe_page: Page, live_server: str, language: str) -> None:
    """Each step as it first looks and after its action (errors, the test result, a warning
    before saving, the next runs), in English and in bokmål. Driven by ids, not words."""
    token = web.xledger_company(ORG_A)
    page = axe_page
    base = f"/orgs/{ORG_A}/integrations/xledger/setup"
    sign_in(page, live_server, ADMIN_A, PASSWORD, language=language)
    expect(page.locator("html")).to_have_attribute("lang", language)
    submit = page.locator("main form.form button[type=submit]").last

    page.goto(base)
    expect(page).to_have_url(f"{live_server}{base}/credentials")
    assert_accessible(page, f"wizard: credentials ({language})")
    page.locator("#field-base_url").fill("")
    submit.click()
    expect(page.locator("#error-summary")).to_be_visible()
    assert_accessible(page, f"wizard: credentials with errors ({language})")
    page.locator("#field-base_url").fill(f"{web.sandbox_url}/graphql")
    page.locator("#field-api_token").fill(token)
    submit.click()

    expect(page).to_have_url(f"{live_server}{base}/test")
    assert_accessible(page, f"wizard: test connection ({language})")
    page.locator("form[data-test-form] button").click()
    expect(page.locator("[data-test-result] .notice.success")).to_be_visible()
    assert_accessible(page, f"wizard: test connection passed ({language})")
    page.locator("[data-test-result] .notice.success button").click()

    expect(page).to_have_url(f"{live_server}{base}/mapping")
    assert_accessible(page, f"wizard: field mapping ({language})")
    upload = page.locator("#mapping-file")
    upload.set_input_files(
        files=[
            {
                "name": "m.yaml",
                "mimeType": "text/yaml",
                "buffer": _mapping_yaml(toll="9999").encode(),
            }
        ]
    )
    page.locator(".mapping-upload button[type=submit]").click()
    expect(page.locator("#accept-warnings")).to_be_visible()
    assert_accessible(page, f"wizard: field mapping with a warning ({language})")
    page.locator("#accept-warnings").check()
    page.locator(".warning-summary button[value=save]").click()

    expect(page).to_have_url(f"{live_server}{base}/schedule")
    assert_accessible(page, f"wizard: schedule ({language})")
    page.locator("#field-time").fill("02:00")
    page.locator("#field-timezone").fill("Europe/Oslo")
    page.locator("#field-enabled").check()
    submit.click()
    expect(page.locator(".next-runs ol li")).to_have_count(3)
    assert_accessible(page, f"wizard: schedule with the next runs ({language})")
    page.goto(f"{base}/exclusions")

    assert_accessible(page, f"wizard: excluded categories ({language})")
    submit.click()
    expect(page).to_have_url(f"{live_server}{base}/review")
    assert_accessible(page, f"wizard: review and activate ({language})")


@pytest.mark.parametrize("language", ["en", "nb"])
def test_axe_settings_screens_and_the_health_monitor_with_data(
    quick_flow_runs: None, web: Any, axe_page: Page, live_server: str, language: str
) -> None:
    from integration_hub.flows.export_expense_claims import export_expense_claims
    from integration_hub.services import configuration as config

    token = web.xledger_company(ORG_A)
    row = configure_xledger(ORG_A, web.sandbox_url, token, toll_account="7145")
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, config.Actor("test"))
    first = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert first["failed"] == 3
    page = axe_page
    base = f"/orgs/{ORG_A}/integrations/xledger"
    sign_in(page, live_server, ADMIN_A, PASSWORD, language=language)

    page.goto(f"{base}/credentials")
    assert_accessible(page, f"credentials ({language})")
    page.locator("form[data-test-form] button").click()
    expect(page.locator("[data-test-result] .notice.success")).to_be_visible()
    assert_accessible(page, f"credentials with a test result ({language})")

    page.goto(f"{base}/mapping")
    expect(page.locator(".mapping-table select").first).to_be_visible()
    assert_accessible(page, f"mapping editor ({language})")
    page.locator("button[value=check]").click()
    expect(page.locator(".warning-summary")).to_contain_text("7145")
    assert_accessible(page, f"mapping editor with a warning ({language})")

    page.goto(f"{base}/schedule")
    expect(page.locator(".next-runs ol li")).to_have_count(3)
    assert_accessible(page, f"schedule ({language})")
    page.locator("#field-mode-cron").check()
    page.locator("#field-cron").fill("not a cron")
    page.locator("main form.form button[type=submit]").click()
    expect(page.locator("#error-summary")).to_be_visible()
    assert_accessible(page, f"schedule with an error ({language})")

    page.goto(f"{base}/exclusions")
    assert_accessible(page, f"excluded categories ({language})")

    page.goto(f"{base}/health")
    expect(page.locator("#failures tbody tr")).to_have_count(3)
    expect(page.locator("svg").first).to_be_visible()
    assert_accessible(page, f"health monitor with failures and the chart ({language})")


def test_an_unknown_page_address_gets_the_accessible_error_page(
    axe_page: Page, live_server: str
) -> None:
    page = axe_page
    sign_in(page, live_server, ADMIN_A, PASSWORD)
    response = page.goto(f"/orgs/{ORG_A}/integrations/xledger/no-such-screen")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found", timeout=2_000)
    assert_accessible(page, "not found, unknown address")


# =============================================================================================
# the health monitor's retry
# =============================================================================================
def test_health_monitor_retry_turns_three_failures_into_exports(
    quick_flow_runs: None, web: Any, browser_page: Page, live_server: str
) -> None:
    from integration_hub.flows.export_expense_claims import export_expense_claims

    token = web.xledger_company(ORG_A)
    company = web.sandbox_state.company(token)
    row = configure_xledger(ORG_A, web.sandbox_url, token, toll_account="7145")
    first = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert (first["exported"], first["failed"]) == (2, 3)
    assert len(company.ledger) == 2 * 2  # a debit and a credit line per exported claim

    page = browser_page
    sign_in(page, live_server, ADMIN_A, PASSWORD)
    page.goto(f"/orgs/{ORG_A}/integrations/xledger/health")
    expect(page.get_by_role("heading", level=1)).to_have_text("Health of Xledger")
    expect(page.locator("#failure-count")).to_have_text("3 record(s) of the last run failed.")
    caption = re.compile(f"Failed records of run {first['run_id']}")
    failures = page.get_by_role("table", name=caption)
    rows = failures.locator("tbody tr")
    expect(rows).to_have_count(3)
    for i in range(3):
        expect(rows.nth(i)).to_contain_text("account 7145 does not exist in Xledger")

    # The admin fixes the cause: toll goes to 7140, an account Xledger has. (Adding 7145 at
    # Xledger's end would do too, but the hub caches the chart of accounts for 5 minutes.)
    from integration_hub.mappings.spec import load_template
    from integration_hub.services import configuration as config

    mapping = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    mapping["value_maps"]["expense_accounts"]["toll"] = "7140"
    config.save_mapping(row, mapping, config.Actor("test"))
    retry = page.get_by_role("button", name="Retry the 3 failed records")
    expect(retry).to_be_enabled()
    retry.click()

    result = page.locator("#retry-result")
    expect(result).to_contain_text(
        f"The retry of run {first['run_id']} exported 3 record(s); 0 still failed.",
        timeout=60_000,
    )
    expect(result).to_have_attribute("role", "status")
    expect(page.locator("#failure-count")).to_have_text("No record of the last run failed.")
    expect(page.get_by_role("button", name=re.compile("Retry"))).to_have_count(0)
    newest = page.locator("#history tbody tr").first
    expect(newest).to_contain_text(f"Retry (retry of run {first['run_id']})")
    expect(newest).to_contain_text("Succeeded")
    expect(newest.locator("td.number").nth(1)).to_have_text("3")  # read, *exported*, failed
    assert len(company.ledger) == 2 * 5
    no_browser_problems(page)


# =============================================================================================
# the setup wizard, start to finish
# =============================================================================================
def _xledger_row() -> Any:
    from integration_hub.services import configuration as config

    organisation = config.organisation(ORG_A)
    return config.integration(organisation, "xledger", config.Actor("test"))


def test_the_whole_xledger_setup_wizard_by_keyboard_and_mouse(
    web: Any, browser_page: Page, live_server: str, tmp_path: Any
) -> None:
    from integration_hub.services import configuration as config
    from integration_hub.services import mapping_editor

    token = web.xledger_company(ORG_A)
    company = web.sandbox_state.company(token)
    postable = sorted(a["code"] for a in company.accounts if a["posting"])
    page = browser_page
    base = f"/orgs/{ORG_A}/integrations/xledger"
    sign_in(page, live_server, ADMIN_A, PASSWORD)

    # Dashboard -> "Set up Xledger" resumes at the first step.
    page.get_by_role("link", name="Set up Xledger").click()
    expect(page).to_have_url(f"{live_server}{base}/setup/credentials")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Credentials")
    steps = page.get_by_role("navigation", name="Setup steps")
    expect(steps.locator('[aria-current="step"]')).to_contain_text("Credentials")

    # 1. Credentials: the base URL and the API token, typed in, sent with Enter.
    page.get_by_label("Service address (URL)").fill(f"{web.sandbox_url}/graphql")
    token_field = page.get_by_label("API token")
    expect(token_field).to_have_attribute("type", "password")
    token_field.click()
    page.keyboard.type(token)
    page.keyboard.press("Enter")

    # 2. Test connection: visible progress while it runs (the sandbox answers slowly), then OK.
    expect(page).to_have_url(f"{live_server}{base}/setup/test")
    company.set_faults(latency_ms=1500)
    page.get_by_role("button", name="Test connection").click()
    progress = page.get_by_role("progressbar", name="Testing the connection")
    expect(progress).to_be_visible()
    expect(page.locator("[data-test-status]")).to_have_text(
        "Testing the connection. This takes at most 10 seconds."
    )
    ok = page.locator("[data-test-result] .notice.success")
    expect(ok).to_contain_text("Connected", timeout=15_000)
    expect(progress).to_be_hidden()
    company.set_faults(latency_ms=0)
    assert token not in page.content()
    ok.get_by_role("button", name="Continue").click()

    # 3. Field mapping: the selects offer the sandbox's real (postable) account codes.
    expect(page).to_have_url(f"{live_server}{base}/setup/mapping")
    travel = page.get_by_label("Travel", exact=True)
    offered = travel.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert sorted(v for v in offered if v) == postable
    assert "19" not in offered  # a group heading in the chart, not an account to post to
    travel.select_option("7130")
    page.get_by_label("Meals", exact=True).select_option("7160")

    # A mapping file that names an account Xledger lacks: the warning comes before any save.
    upload = tmp_path / "mapping.yaml"
    upload.write_text(_mapping_yaml(toll="9999"), encoding="utf-8")
    page.get_by_label("Mapping file (YAML or JSON)").set_input_files(upload)
    page.get_by_role("button", name="Upload and check").click()
    warning = page.get_by_role("alert").filter(has_text="Check before saving")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("9999")
    expect(warning).to_contain_text("Nothing has been saved yet")
    assert mapping_editor.saved_version(_xledger_row()) is None, "saved before confirming"

    # Your own choices go on top of the file; saving needs the explicit confirmation.
    page.get_by_label("Travel", exact=True).select_option("7130")
    save_anyway = page.get_by_role("button", name="Save anyway")
    save_anyway.click()  # the confirmation box is required: the browser refuses the form
    expect(page).to_have_url(re.compile(r"/setup/mapping$"))
    assert mapping_editor.saved_version(_xledger_row()) is None
    page.get_by_label("I have read the warnings and want to save anyway").check()
    save_anyway.click()

    # 4. Schedule: daily at 02:00 in Europe/Oslo; the next three runs are shown.
    expect(page).to_have_url(f"{live_server}{base}/setup/schedule")
    stored = config.current_mapping(_xledger_row())[1].model_dump(mode="json")
    accounts = stored["value_maps"]["expense_accounts"]
    assert (accounts["toll"], accounts["travel"]) == ("9999", "7130")
    page.get_by_label("Every day at a set time").check()
    page.get_by_label("Time of day").fill("02:00")
    page.get_by_label("Time zone").fill("Europe/Oslo")
    page.get_by_label("Run exports on this schedule").check()
    page.get_by_role("button", name="Save the schedule").click()
    runs = page.get_by_role("region", name="Next three runs").locator("ol li")
    expect(runs).to_have_count(3)
    for i in range(3):
        expect(runs.nth(i)).to_have_text(re.compile(r"^\d{4}-\d{2}-\d{2} 02:00 \(Europe/Oslo\)$"))
    page.get_by_role("link", name="Continue").click()

    # 5. Excluded categories: parking is not sent.
    expect(page).to_have_url(f"{live_server}{base}/setup/exclusions")
    page.get_by_label("Parking").check()
    page.get_by_role("button", name="Save and continue").click()

    # 6. Review and activate.
    expect(page).to_have_url(f"{live_server}{base}/setup/review")
    main = page.get_by_role("main")
    expect(main).to_contain_text("Connected")
    expect(main).to_contain_text("Parking")
    expect(main.locator(".run-list li")).to_have_count(3)
    assert token not in page.content()
    page.get_by_role("button", name="Activate Xledger").click()

    expect(page.get_by_role("status")).to_have_text("Xledger is active.")  # the confirmation
    page.get_by_role("link", name="Back to the integrations").click()
    expect(page).to_have_url(re.compile(f"/orgs/{ORG_A}(\\?|$)"))
    card = page.locator(".integration-card").filter(has=page.get_by_role("heading", name="Xledger"))
    expect(card.locator(".status")).to_have_text("Active")
    expect(card).to_contain_text("02:00")
    assert config.list_exclusions(_xledger_row()) == ["parking"]
    no_browser_problems(page)


def _mapping_yaml(**accounts: str) -> str:
    import yaml

    from integration_hub.mappings.spec import load_template

    document = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    document["value_maps"]["expense_accounts"].update(accounts)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


# =============================================================================================
# the credential form: write-only, masked
# =============================================================================================
def _stored_token(row: Any) -> str:
    from factories import stored_secret

    return stored_secret(row.organisation_id, row.id, "api_token")


def _credential_audit(row: Any) -> list[Any]:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models.hub import AuditEntry

    with hub_session() as session:
        entries = session.exec(
            select(AuditEntry)
            .where(AuditEntry.integration_id == row.id)
            .where(AuditEntry.action.in_(["credential.set", "credential.replaced"]))  # type: ignore[attr-defined]
            .order_by(AuditEntry.id)  # type: ignore[arg-type]
        ).all()
        return [(e.actor, e.action, dict(e.details)) for e in entries]


def test_the_credential_form_shows_only_a_mask_and_a_submitted_mask_keeps_the_secret(
    web: Any, browser_page: Page, live_server: str
) -> None:
    old_token = web.xledger_company(ORG_A)
    row = configure_xledger(ORG_A, web.sandbox_url, old_token)
    new_token = web.xledger_company(ORG_A)
    page = browser_page
    sign_in(page, live_server, ADMIN_A, PASSWORD)
    page.goto(f"/orgs/{ORG_A}/integrations/xledger/credentials")
    expect(page.get_by_role("heading", level=1)).to_have_text("Credentials for Xledger")

    field = page.get_by_label("API token")
    expect(field).to_have_attribute("type", "password")
    mask = field.input_value()
    assert mask.endswith(old_token[-4:]) and "•" in mask and old_token not in mask
    assert old_token not in page.content()

    # Replace the secret: focus selects the mask, so typing replaces it.
    field.focus()
    page.keyboard.type(new_token)
    page.get_by_role("button", name="Save the credentials").click()
    expect(page.get_by_role("status").filter(has_text="saved")).to_be_visible()
    field = page.get_by_label("API token")
    new_mask = field.input_value()
    assert new_mask.endswith(new_token[-4:]) and new_token not in new_mask
    html = page.content()
    assert new_token not in html and old_token not in html
    assert _stored_token(row) == new_token

    # Submitting the form with the mask as it is keeps the secret.
    page.get_by_label("Service address (URL)").fill(f"{web.sandbox_url}/graphql")
    page.get_by_role("button", name="Save the credentials").click()
    expect(page.get_by_role("status").filter(has_text="saved")).to_be_visible()
    assert page.get_by_label("API token").input_value() == new_mask
    assert _stored_token(row) == new_token
    assert new_token not in page.content()

    # The connection test on the same screen uses the stored secret.
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("[data-test-result] .notice.success")).to_contain_text("Connected")

    # The replacement is in the audit log (who), never the value; the mask wrote nothing.
    audit = _credential_audit(row)
    assert [a[1] for a in audit] == ["credential.set", "credential.replaced"]
    assert audit[1][0] == ADMIN_A and audit[1][2] == {"field": "api_token"}
    assert new_token not in repr(audit) and old_token not in repr(audit)
    no_browser_problems(page)
