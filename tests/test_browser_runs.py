"""Runs in a real browser (Chromium as in tests/test_browser.py, SQLite only), on a desktop
screen and at 390 px wide: an admin starts a dry run and watches it finish (the page reloads
itself, no JavaScript needed), opens the run record by record, ignores one failed claim with a
note, starts an export that skips it, pauses the schedule and reads it all in the audit log.
Nothing the pages do may break the Content-Security-Policy or scroll the page sideways.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_support import assert_accessible, sign_in
from factories import configure_xledger
from playwright.sync_api import Page, expect
from webworld import ADMIN_A, ORG_A, PASSWORD

pytestmark = [
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.timeout(180),
]

BASE = f"/orgs/{ORG_A}/integrations/xledger"
RUN_TIMEOUT_MS = 60_000
"""A submitted run finishes in a second or two here; the page polls every 3 s."""


def fits(page: Page, width: int) -> None:
    """Nothing makes the page wider than the screen (a table scrolls in its own box)."""
    scroll = page.evaluate("() => document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} is {scroll} px wide on a {width} px screen"


@pytest.fixture
def failed_export(web: Any, quick_flow_runs: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """HLF's Xledger after a scheduled export in which the three toll claims failed (toll is
    mapped to 7145, an account this Xledger lacks); runs submitted from the pages run in the
    web app's own background thread."""
    from integration_hub.flows.export_expense_claims import export_expense_claims
    from integration_hub.services import configuration as config
    from integration_hub.services import submit

    monkeypatch.setattr(submit, "deployment_for", lambda spec: None)
    submit.forget()
    token = web.xledger_company(ORG_A)
    row = configure_xledger(ORG_A, web.sandbox_url, token, toll_account="7145")
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, config.Actor("test"))
    first = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert (first["exported"], first["failed"]) == (2, 3)
    yield {"row": row, "run": first, "company": web.sandbox_state.company(token)}
    submit.forget()


@pytest.mark.parametrize("width", [1280, 390], ids=["desktop", "phone"])
def test_dry_run_drill_down_ignore_a_record_sync_now_pause_and_the_audit_log(
    failed_export: Any, browser_page: Page, live_server: str, width: int
) -> None:
    page = browser_page
    page.set_viewport_size({"width": width, "height": 900})
    run_id = failed_export["run"]["run_id"]
    sign_in(page, live_server, ADMIN_A, PASSWORD)
    page.goto(f"{BASE}/health")
    expect(page.locator("#failure-count")).to_have_text("3 record(s) of the last run failed.")
    fits(page, width)

    # A dry run: submitted, the page shows it waiting or running, then its result.
    page.get_by_role("button", name="Dry run").click()
    page.wait_for_url(re.compile(r"/health\?submitted=[0-9a-f]{32}$"))
    result = page.locator("#submission")
    expect(result).to_contain_text("has finished; nothing was sent.", timeout=RUN_TIMEOUT_MS)
    # the two exported claims are not tried again; the three toll claims would fail again
    expect(result).to_contain_text("0 record(s) would be exported.")
    expect(result).to_contain_text("3 record(s) would fail and 0 are skipped.")
    assert len(failed_export["company"].ledger) == 2 * 2  # a dry run sends nothing
    fits(page, width)

    # The last run, record by record: the three toll claims fail for one reason.
    page.get_by_role(
        "link", name=f"Every record of run {run_id}, failures grouped by reason"
    ).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Run {run_id} of Xledger")
    groups = page.locator("#failure-groups tbody tr")
    expect(groups).to_have_count(1)
    expect(groups.first).to_contain_text("account 7145 does not exist in Xledger")
    expect(groups.first.locator("td").first).to_have_text("3")
    expect(page.locator("#outcomes tbody tr")).to_have_count(5)
    fits(page, width)

    # Ignore the first failed claim, with a note.
    first_failed = page.locator("#outcomes tbody tr").first
    record = first_failed.locator("th").inner_text().split()[0]
    first_failed.get_by_role("link", name=f"Ignore record {record}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Ignore record {record}")
    page.get_by_role("button", name="Ignore this record").click()  # no note yet
    expect(page.locator("#error-summary")).to_contain_text("write a note")
    page.get_by_label("Why is it ignored?").fill("paid in cash at the chapter meeting")
    page.get_by_role("button", name="Ignore this record").click()
    expect(page.locator("#ignore-result")).to_contain_text(f"Record {record} is ignored")
    row = page.locator(f"#record-{record}")
    expect(row).to_contain_text(f"Ignored by {ADMIN_A}: paid in cash at the chapter meeting")
    expect(row.get_by_role("button", name=f"Stop ignoring record {record}")).to_be_visible()
    fits(page, width)

    # Sync now: the ignored claim is skipped, the other two fail again, nothing is sent twice.
    page.goto(f"{BASE}/health")
    expect(page.locator("#failure-count")).to_contain_text("1 of them are ignored")
    page.get_by_role("button", name="Sync now").click()
    expect(page.locator("#submission")).to_contain_text(
        "has finished: 0 record(s) exported, 2 failed, 1 skipped.", timeout=RUN_TIMEOUT_MS
    )
    expect(page.get_by_role("button", name="Sync now")).to_be_visible()  # free to start again
    assert len(failed_export["company"].ledger) == 2 * 2

    # Pause the schedule, then read it all in the audit log.
    page.get_by_role("button", name="Pause scheduled runs").click()
    expect(page.locator("#schedule-changed")).to_contain_text("Scheduled runs are paused")
    expect(page.locator("#next-run")).to_have_text("Scheduled runs are switched off")
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Audit log of")
    actions = page.locator("#audit tbody tr td:nth-child(2)")
    expect(actions.nth(0)).to_have_text("Schedule saved")
    expect(actions.nth(1)).to_have_text("Record ignored")
    fits(page, width)
    assert page.problems.messages == [], page.problems.messages


def test_axe_the_run_ignore_and_audit_pages(
    failed_export: Any, axe_page: Page, live_server: str
) -> None:
    page = axe_page
    run_id = failed_export["run"]["run_id"]
    sign_in(page, live_server, ADMIN_A, PASSWORD)
    page.goto(f"{BASE}/runs/{run_id}")
    assert_accessible(page, "one run, record by record")
    record = page.locator("#outcomes tbody tr th").first.inner_text().split()[0]
    page.goto(f"{BASE}/runs/{run_id}/ignore?record={record}&version=1")
    page.get_by_role("button", name="Ignore this record").click()
    expect(page.locator("#error-summary")).to_be_visible()
    assert_accessible(page, "ignore a record, with an error")
    page.goto(f"{BASE}/health")
    assert_accessible(page, "the health monitor with run buttons")
    page.goto(f"/orgs/{ORG_A}/audit")
    assert_accessible(page, "the audit log")
