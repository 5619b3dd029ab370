"""Screenshots of the admin web app's main screens, for the README: ``docs/screenshots/*.png``.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Builds a throwaway hub in a temp dir (SQLite, its own vault key and Prefect home) with the demo's
organisations and claims, starts the Xledger sandbox and the web app on 127.0.0.1, and drives
Debian's chromium (``/usr/bin/chromium``, see ``make chromium``) through the screens as an admin
would: Blindeforbundet has Xledger running (three toll claims fail: toll is mapped to 7145, an
account its Xledger lacks), HLF is half-way through the setup wizard. Nothing outside the temp
dir and the output folder is touched.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from browser_support import chromium_missing, launch_chromium  # noqa: E402

PASSWORD = "screenshots only, not a real password"
ADMIN_BLIND = "admin@blindeforbundet.example"
ADMIN_HLF = "admin@hlf.example"


def isolate(tmp: Path) -> None:
    """Point the hub and Prefect at ``tmp`` before either is imported."""
    os.environ["INTEGRATIONS_DATABASE_URL"] = f"sqlite:///{tmp}/hub.db"
    os.environ["INTEGRATIONS_VAR_DIR"] = str(tmp / "var")
    # The local sandboxes listen on 127.0.0.1, as an operator allows them.
    os.environ["INTEGRATIONS_ALLOWED_HOSTS"] = "127.0.0.1"
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    for name in (
        "INTEGRATIONS_APP_DATABASE_URL",
        "INTEGRATIONS_VAULT_KEYS",
        "INTEGRATIONS_VAULT_KEY_FILE",
        "PREFECT_API_URL",
    ):
        os.environ.pop(name, None)
    (tmp / "var").mkdir(parents=True, exist_ok=True)


def employees(organisation_id: int) -> list[dict[str, Any]]:
    """The organisation's volunteers with an employee number, as Xledger employees."""
    from sqlmodel import select

    from integration_hub.db import app_session
    from integration_hub.models import Volunteer

    with app_session() as session:
        rows = session.exec(
            select(Volunteer).where(Volunteer.organisation_id == organisation_id)
        ).all()
    return [
        {"dbId": 5000 + (v.id or 0), "code": v.employee_number, "description": v.name}
        for v in rows
        if v.employee_number
    ]


def build_hub(sandbox: Any, sandbox_url: str) -> dict[str, str]:
    """The demo's data, two admins, and Xledger running for Blindeforbundet (with failures)."""
    import random
    from datetime import date

    from integration_hub import demo
    from integration_hub.adapters.registry import feature_flag
    from integration_hub.db import upgrade
    from integration_hub.mappings.spec import load_template
    from integration_hub.services import accounts, wizard
    from integration_hub.services import configuration as config
    from integration_hub.services.sync import run_export
    from integration_hub.settings import get_settings
    from integration_hub.vault import init_key_file

    init_key_file(get_settings().key_file)
    upgrade("hub")
    upgrade("app")
    ids = demo.seed(random.Random(20261124), date.today())
    for slug, keys in {
        "blindeforbundet": ["xledger", "bufdir"],
        "hlf": ["xledger", "dynamics"],
    }.items():
        for key in keys:
            config.set_feature_flag(ids[slug], feature_flag(key), True, config.OPERATOR)
    who = config.Actor("screenshots")
    accounts.add_user(ADMIN_BLIND, PASSWORD, organisation_slug="blindeforbundet", actor=who)
    accounts.add_user(ADMIN_HLF, PASSWORD, organisation_slug="hlf", actor=who)

    tokens = {slug: secrets.token_hex(20) for slug in ids}
    for slug, token in tokens.items():
        sandbox.add_company(token, employees=employees(ids[slug]), closed_before=demo.CLOSED_BEFORE)

    # Blindeforbundet: set up through the same service calls the wizard makes, then one export.
    admin = config.Actor("screenshots (as the admin would, through the services)")
    row = wizard.start("blindeforbundet", "xledger", admin)
    config.save_configuration(
        row, {"base_url": f"{sandbox_url}/graphql", "api_token": tokens["blindeforbundet"]}, admin
    )
    mapping = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    mapping["value_maps"]["expense_accounts"].update(demo.DEMO_MAPPING_OVERRIDE)
    config.save_mapping(row, mapping, admin, accept_warnings=True)
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, admin)
    config.set_exclusions(row, ["parking"], admin)
    config.test_connection(row, admin)
    wizard.activate(
        config.integration(config.organisation("blindeforbundet"), "xledger", admin), admin
    )
    summary = run_export("blindeforbundet", "xledger", admin, trigger="schedule")
    print(
        f"export: {summary['exported']} exported, {summary['failed']} failed, "
        f"{summary['skipped']} skipped",
        flush=True,
    )
    return tokens


def shoot(
    base_url: str, sandbox_url: str, tokens: dict[str, str], out: Path, bc: dict[str, str]
) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    made: list[Path] = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(
            base_url=base_url, viewport={"width": 1200, "height": 860}, locale="en-GB"
        )
        context.set_default_timeout(15_000)
        context.add_cookies([{"name": "ih_lang", "value": "en", "url": base_url}])
        page = context.new_page()

        def snap(name: str, *, full_page: bool = False) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=full_page)
            made.append(path)
            print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")

        def sign_in(email: str) -> None:
            page.goto("/sign-in")
            page.get_by_label("E-mail address").fill(email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/sign-in" not in url)

        # Blindeforbundet: the dashboard and the health monitor after a night with failures.
        sign_in(ADMIN_BLIND)
        page.goto("/orgs/blindeforbundet")
        snap("dashboard")
        page.goto("/orgs/blindeforbundet/integrations/xledger/health")
        expect(page.locator("#failures tbody tr").first).to_be_visible()
        snap("health", full_page=True)

        # Blindeforbundet: the last run record by record, one claim ignored with a note, a run
        # started with "Sync now" (submitted, not run in the request), and the audit log.
        page.get_by_role("link", name=re.compile(r"^Every record of run \d+")).first.click()
        expect(page.locator("#failure-groups")).to_be_visible()
        snap("run-detail", full_page=True)
        failed = page.locator("#outcomes tbody tr").first
        failed.get_by_role("link", name=re.compile(r"^Ignore record")).click()
        page.get_by_label("Why is it ignored?").fill(
            "Paid in cash at the chapter meeting and booked by hand in Xledger"
        )
        snap("ignore-record")
        page.get_by_role("button", name="Ignore this record").click()
        expect(page.locator("#ignore-result")).to_be_visible()
        page.goto("/orgs/blindeforbundet/integrations/xledger/health")
        page.get_by_role("button", name="Sync now").click()
        expect(page.locator("#submission")).to_contain_text(
            re.compile(r"Run \d+ has finished"), timeout=120_000
        )
        snap("health-sync-now")
        page.goto("/orgs/blindeforbundet/audit")
        expect(page.locator("#audit")).to_be_visible()
        snap("audit-log")
        page.get_by_role("button", name="Sign out").click()

        # HLF: the setup wizard, step by step.
        sign_in(ADMIN_HLF)
        page.goto("/orgs/hlf/integrations/xledger/setup")
        page.get_by_label("Service address (URL)").fill(f"{sandbox_url}/graphql")
        page.get_by_label("API token").fill(tokens["hlf"])
        page.get_by_role("button", name="Save and continue").click()
        page.wait_for_url("**/setup/test")
        page.goto("/orgs/hlf/integrations/xledger/setup/credentials")  # back: the token masked
        snap("wizard-credentials")
        page.goto("/orgs/hlf/integrations/xledger/setup/test")
        page.get_by_role("button", name="Test connection").click()
        expect(page.locator("[data-test-result] .notice.success")).to_be_visible()
        snap("wizard-test-connection")
        page.locator("[data-test-result] .notice.success").get_by_role(
            "button", name="Continue"
        ).click()
        page.wait_for_url("**/setup/mapping")
        page.get_by_label("Travel", exact=True).select_option("7130")
        page.get_by_label("Toll", exact=True).select_option("7140")
        page.get_by_role("button", name="Check without saving").click()
        mapping_file = out.parent / ".mapping-upload.yaml"
        mapping_file.write_text(_mapping_with(toll="9999"), encoding="utf-8")
        try:
            page.get_by_label("Mapping file (YAML or JSON)").set_input_files(mapping_file)
            page.get_by_role("button", name="Upload and check").click()
        finally:
            mapping_file.unlink(missing_ok=True)
        expect(page.get_by_role("button", name="Save anyway")).to_be_visible()
        snap("mapping-warning", full_page=True)
        page.get_by_label("I have read the warnings and want to save anyway").check()
        page.get_by_role("button", name="Save anyway").click()
        page.wait_for_url("**/setup/schedule")
        page.get_by_label("Time of day").fill("02:00")
        page.get_by_label("Time zone").fill("Europe/Oslo")
        page.get_by_label("Run exports on this schedule").check()
        page.get_by_role("button", name="Save the schedule").click()
        expect(page.locator(".next-runs ol li")).to_have_count(3)
        snap("schedule")
        page.get_by_role("link", name="Continue").click()
        page.wait_for_url("**/setup/exclusions")
        page.get_by_label("Parking").check()
        snap("exclusions")

        # HLF: Business Central, the company and the journal picked from lists.
        page.goto("/orgs/hlf/integrations/dynamics/setup")
        page.get_by_label("Tenant (Microsoft Entra directory)").fill(bc["tenant_id"])
        page.get_by_label("Client id").fill(bc["client_id"])
        page.get_by_label("Client secret").fill(bc["client_secret"])
        page.get_by_label("Service address (URL)", exact=True).fill(bc["url"])
        page.get_by_label("Sign-in service address (URL)").fill(bc["url"])
        page.get_by_role("button", name="Save and continue").click()
        page.wait_for_url("**/setup/test")
        page.goto("/orgs/hlf/integrations/dynamics/setup/credentials")
        page.get_by_label("Company id").select_option(bc["company_id"])
        page.get_by_role("button", name="Save and continue").click()
        page.wait_for_url("**/setup/test")
        page.goto("/orgs/hlf/integrations/dynamics/setup/credentials")
        expect(page.get_by_label("Journal id")).to_be_visible()
        page.get_by_label("Journal id").focus()
        snap("wizard-pick-journal", full_page=True)
        browser.close()
    return made


def _mapping_with(**accounts: str) -> str:
    import yaml

    from integration_hub.mappings.spec import load_template

    document = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    document["value_maps"]["expense_accounts"].update(accounts)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    missing = chromium_missing()
    if missing is not None:
        print(f"error: {missing}", file=sys.stderr)
        return 1
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="hub-screenshots-"))
    try:
        isolate(tmp)
        from integration_hub.prefect_env import configure_prefect
        from integration_hub.sandbox.dynamics import DynamicsSandboxState, create_dynamics_app
        from integration_hub.sandbox.server import start_server
        from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app
        from integration_hub.web.app import create_app

        configure_prefect()
        sandbox = XledgerSandboxState()
        business_central = DynamicsSandboxState()
        with (
            start_server(create_xledger_app(sandbox)) as xledger,
            start_server(create_dynamics_app(business_central)) as dynamics,
        ):
            tokens = build_hub(sandbox, xledger.url)
            tenant = business_central.provision(company_name="HLF Hørselshemmedes Landsforbund")
            business_central.add_tenant(tenant.tenant_id).add_environment(
                tenant.environment
            ).add_company("HLF Testselskap")
            bc = {**tenant.settings(dynamics.url), "url": dynamics.url}
            with start_server(create_app()) as web:
                made = shoot(web.url, xledger.url, tokens, out, bc)
        print(f"{len(made)} screenshots in {out}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
