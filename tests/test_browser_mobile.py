"""Every page at 390 px wide (a small phone), in bokmål, whose words are the longer: nothing
makes the page scroll sideways, for an organisation's admin and for an operator.

A table may scroll inside its own box (``.health-scroll``), never the page. When a page
overflows, the test names the elements that stick out past the right edge.
Chromium as in tests/test_browser.py (browser_support.py), SQLite only.
"""

from __future__ import annotations

from typing import Any

import pytest
from browser_support import assert_accessible, sign_in
from factories import configure_xledger, record_run
from playwright.sync_api import Page
from webworld import ADMIN_A, OPERATOR, ORG_A, PASSWORD

pytestmark = [
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.timeout(120),
]

WIDTH = 390
XLEDGER = f"/orgs/{ORG_A}/integrations/xledger"

STICKING_OUT = """(width) => {
  const found = [];
  for (const element of document.querySelectorAll('body *')) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || box.right <= width + 0.5) continue;
    // Inside a box that scrolls on its own (a wide table) is fine.
    let scroller = element.parentElement, contained = false;
    while (scroller && scroller !== document.body) {
      const style = getComputedStyle(scroller);
      if (['auto', 'scroll', 'hidden'].includes(style.overflowX)) { contained = true; break; }
      scroller = scroller.parentElement;
    }
    if (!contained) {
      const name = element.tagName.toLowerCase() + (element.id ? '#' + element.id : '') +
        (element.className && typeof element.className === 'string'
          ? '.' + element.className.trim().split(/\\s+/).join('.') : '');
      const text = element.textContent.trim().slice(0, 60);
      found.push(`${name} ends at ${Math.round(box.right)} px: ${text}`);
    }
  }
  return found.slice(0, 8);
}"""


def assert_fits(page: Page, label: str) -> None:
    """The page is no wider than the screen: no sideways scrolling."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    if width > WIDTH:
        culprits = page.evaluate(STICKING_OUT, WIDTH)
        raise AssertionError(
            f"{label} ({page.url}) is {width} px wide at {WIDTH} px:\n  " + "\n  ".join(culprits)
        )


@pytest.fixture
def world(web: Any) -> dict[str, Any]:
    """ORG_A's Xledger set up, scheduled and with a partial run (two failures): every screen
    has content. The run is written directly (no Prefect)."""
    from integration_hub.services import configuration as config

    who = config.Actor("test")
    row = configure_xledger(ORG_A, web.sandbox_url, web.xledger_company(ORG_A))
    assert config.test_connection(row, who).ok
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, who)
    config.set_status(row, config.IntegrationStatus.ACTIVE, who)
    reason = "account 7145 does not exist in Xledger; fix the field mapping, then retry"
    run_id = record_run(
        row.id,
        row.organisation_id,
        failures=[{"record_id": 41, "reason": reason}, {"record_id": 42, "reason": reason}],
    )
    return {"row": row, "run_id": run_id}


def narrow(page: Page) -> Page:
    page.set_viewport_size({"width": WIDTH, "height": 844})
    return page


def test_before_signing_in_the_sign_in_page_and_the_api_reference_fit(
    browser_page: Page,
) -> None:
    page = narrow(browser_page)
    page.goto("/sign-in")
    assert_fits(page, "sign-in")
    page.goto("/api/v1/docs")
    assert_fits(page, "API reference")


def test_every_page_of_an_admin_fits(
    world: dict[str, Any], browser_page: Page, live_server: str
) -> None:
    page = narrow(browser_page)
    sign_in(page, live_server, ADMIN_A, PASSWORD, language="nb")
    for path in (
        "/orgs",
        f"/orgs/{ORG_A}",
        f"{XLEDGER}/health",
        f"{XLEDGER}/credentials",
        f"{XLEDGER}/mapping",
        f"{XLEDGER}/schedule",
        f"{XLEDGER}/exclusions",
        f"{XLEDGER}/setup/review",
        f"/orgs/{ORG_A}/integrations/dynamics/setup/credentials",
        "/account/password",
        "/api/v1/docs",
        f"{XLEDGER}/no-such-screen",
    ):
        page.goto(path)
        assert_fits(page, path)
    # A form refused with every field in error still fits.
    page.goto(f"{XLEDGER}/schedule")
    page.locator("#field-mode-cron").check()
    page.locator("#field-cron").fill("not a cron expression at all, and a long one at that")
    page.locator("main form.form button[type=submit]").click()
    page.locator("#error-summary").wait_for()
    assert_fits(page, "schedule with an error")


def test_every_page_of_an_operator_fits(
    world: dict[str, Any], browser_page: Page, live_server: str
) -> None:
    page = narrow(browser_page)
    sign_in(page, live_server, OPERATOR, PASSWORD, language="nb")
    for path in (
        "/orgs",
        "/operators/organisations",
        f"/orgs/{ORG_A}",
        f"{XLEDGER}/health",
        f"{XLEDGER}/credentials",
        f"{XLEDGER}/mapping",
        f"{XLEDGER}/schedule",
        f"{XLEDGER}/exclusions",
    ):
        page.goto(path)
        assert_fits(page, path)
    # The operators' page with every problem of a refused new organisation.
    page.goto("/operators/organisations")
    page.locator("#field-new-slug").fill("Not A Slug With Spaces And Capitals")
    page.locator("#field-new-org_number").fill("12345")
    page.locator("#add-organisation button[type=submit]").click()
    page.locator("#error-summary").wait_for()
    assert_fits(page, "operators' page with errors")


def test_the_api_reference_loads_nothing_from_elsewhere_and_is_not_blank(
    browser_page: Page, live_server: str
) -> None:
    """Offline and under the app's own policy: every request the page makes goes to the app,
    nothing is refused, and the reference is there to read (Swagger UI from a CDN was blank)."""
    page = browser_page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto("/api/v1/docs")
    page.wait_for_load_state("networkidle")
    assert requested and all(url.startswith(live_server) for url in requested), requested
    assert page.problems.messages == [], page.problems.messages
    assert page.get_by_role("heading", level=1).is_visible()
    assert page.locator("article.api-operation").count() > 10
    assert page.locator("article.api-schema").count() > 10


@pytest.mark.parametrize("language", ["nb", "en"])
def test_axe_the_operators_page_read_only_views_and_the_api_reference_at_390_px(
    world: dict[str, Any], axe_page: Page, live_server: str, language: str
) -> None:
    page = narrow(axe_page)
    page.context.add_cookies([{"name": "ih_lang", "value": language, "url": live_server}])
    page.goto("/api/v1/docs")
    assert_accessible(page, f"API reference ({language})")
    sign_in(page, live_server, OPERATOR, PASSWORD, language=language)
    for path in ("/operators/organisations", f"{XLEDGER}/credentials", f"{XLEDGER}/exclusions"):
        page.goto(path)
        assert_accessible(page, f"{path} as an operator ({language})")
    page.goto("/operators/organisations")
    page.locator("#field-new-org_number").fill("12345")
    page.locator("#add-organisation button[type=submit]").click()
    page.locator("#error-summary").wait_for()
    assert_accessible(page, f"operators' page with errors ({language})")
