"""The Alerts page in a real browser (Chromium as in tests/test_browser.py, SQLite only), on a
desktop screen and at 390 px wide: an admin goes from the dashboard to the alert channel, sets
up Slack, sees only the mask, sends a test alert that reaches a real local receiver, and a
mistaken e-mail setup is refused with every problem beside its field. Nothing may break the
Content-Security-Policy or scroll the page sideways; axe finds nothing serious.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from browser_support import assert_accessible, sign_in
from playwright.sync_api import Page, expect
from webworld import ADMIN_A, ORG_A, PASSWORD

pytestmark = [
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.timeout(120),
]


def fits(page: Page, width: int) -> None:
    scroll = page.evaluate("() => document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} is {scroll} px wide on a {width} px screen"


@pytest.mark.parametrize("width", [1280, 390], ids=["desktop", "phone"])
def test_an_admin_sets_up_slack_and_sends_a_test_alert(
    browser_page: Page, live_server: str, webhook_receiver: Any, width: int
) -> None:
    page = browser_page
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, live_server, ADMIN_A, PASSWORD)
    page.goto(f"/orgs/{ORG_A}")
    page.get_by_role("link", name="Alerts").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Alerts for Hlf")
    expect(page.get_by_text("No alert channel is set up")).to_be_visible()
    fits(page, width)

    url = f"{webhook_receiver.url}/hooks/{secrets.token_hex(12)}"
    page.get_by_label("Slack").check()
    page.get_by_label("Webhook URL").fill(url)
    page.get_by_role("button", name="Save the alert channel").click()
    expect(page.get_by_role("status")).to_have_text("The alert channel is saved.")
    expect(page.get_by_text("Slack, to the webhook ••••••" + url[-4:])).to_be_visible()
    assert url not in page.content()
    fits(page, width)

    page.get_by_role("button", name="Send a test alert").click()
    expect(page.locator(".notice.success")).to_contain_text("Test alert: Delivered")
    assert [call["json"]["text"] for call in webhook_receiver.received] == [
        "Test from Integration Hub for hlf"
    ]
    expect(page.locator(".alert-history li").first).to_contain_text("Test alert. Delivered")

    page.get_by_label("E-mail (SMTP)").check()
    page.get_by_label("Sender").fill("not an address")
    page.get_by_role("button", name="Save the alert channel").click()
    summary = page.locator("#error-summary")
    expect(summary).to_contain_text("the SMTP server is required")
    expect(summary).to_contain_text("the sender must be one e-mail address")
    expect(summary).to_contain_text("give at least one recipient")
    expect(page.locator("#error-recipients")).to_be_visible()
    fits(page, width)
    assert page.problems.messages == [], page.problems.messages


def test_axe_the_alerts_page(axe_page: Page, live_server: str) -> None:
    page = axe_page
    sign_in(page, live_server, ADMIN_A, PASSWORD)
    page.goto(f"/orgs/{ORG_A}/alerts")
    assert_accessible(page, "the alert channel, empty")
    page.get_by_label("E-mail (SMTP)").check()
    page.get_by_role("button", name="Save the alert channel").click()
    expect(page.locator("#error-summary")).to_be_visible()
    assert_accessible(page, "the alert channel, refused")
