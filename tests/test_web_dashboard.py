"""The dashboard: each offered type with its status, last run and next run, one org at a time."""

from __future__ import annotations

from typing import Any

from factories import configure_xledger, record_run
from webworld import ADMIN_A, ADMIN_B, OPERATOR, ORG_A, ORG_B


def _cards(web: Any, email: str, org: str) -> dict[str, dict[str, Any]]:
    from integration_hub.services import overview
    from integration_hub.services.accounts import session_for

    client = web.client(email)
    signed_in = session_for(client.cookies.get("ih_session"))
    assert signed_in is not None
    return {c["type"]: c for c in overview.dashboard(org, signed_in.actor)["integrations"]}


def test_statuses_not_set_up_setting_up_active_failing_paused(web: Any) -> None:
    from integration_hub.models import IntegrationStatus
    from integration_hub.services import configuration as config
    from integration_hub.services import wizard

    cards = _cards(web, ADMIN_A, ORG_A)
    assert {k: c["status"] for k, c in cards.items()} == {
        "xledger": "not_set_up",
        "dynamics": "not_set_up",
        "bufdir": "not_set_up",
    }
    admin = config.Actor(ADMIN_A, web.organisation_ids[ORG_A], "admin")
    wizard.start(ORG_A, "dynamics", admin)
    row = configure_xledger(ORG_A, web.sandbox_url, web.xledger_company(ORG_A))
    config.set_status(row, IntegrationStatus.ACTIVE, admin)
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, admin)
    cards = _cards(web, ADMIN_A, ORG_A)
    assert cards["dynamics"]["status"] == "setting_up"
    assert cards["xledger"]["status"] == "active"
    assert cards["xledger"]["next_run"] is not None

    record_run(row.id, row.organisation_id, failures=[{"record_id": 7, "reason": "no account"}])
    cards = _cards(web, ADMIN_A, ORG_A)
    assert cards["xledger"]["status"] == "failing"
    assert cards["xledger"]["last_run"]["failed"] == 1
    config.set_status(row, IntegrationStatus.PAUSED, admin)
    assert _cards(web, ADMIN_A, ORG_A)["xledger"]["status"] == "paused"


def test_dashboard_page_shows_the_cards_and_refuses_other_organisations(web: Any) -> None:
    configure_xledger(ORG_A, web.sandbox_url, web.xledger_company(ORG_A))
    page = web.client(ADMIN_A).get(f"/orgs/{ORG_A}")
    assert page.status_code == 200
    assert "Integrasjoner for Hlf" in page.text
    assert "Sett opp Microsoft Dynamics 365 Business Central" in page.text  # not set up yet
    other = web.client(ADMIN_B).get(f"/orgs/{ORG_A}")
    assert other.status_code == 403
    assert "Hlf" not in other.text.split("<main", 1)[1]
    assert web.client(OPERATOR).get(f"/orgs/{ORG_A}").status_code == 200
    assert web.client(OPERATOR).get(f"/orgs/{ORG_B}").status_code == 200
