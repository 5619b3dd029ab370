"""``integrations demo``: the whole path on embedded defaults, in one command.

Seeds two organisations into the (SQLite) app database, starts the Xledger sandbox on a free
port, configures Xledger for ``blindeforbundet`` through the same service calls the wizard
uses, tests the connection and runs the export flow. A few claims fail for real reasons.
Then Business Central for ``hlf``, and the Bufdir activity report of the last closed half-year
for both (a file for blindeforbundet, the stand-in API for hlf).
"""

from __future__ import annotations

import random
import secrets
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import typer
from sqlmodel import select

from integration_hub.db import app_session, upgrade
from integration_hub.models import (
    Activity,
    ActivityStatus,
    Chapter,
    ClaimStatus,
    ExpenseClaim,
    Organisation,
    Volunteer,
)
from integration_hub.money import mileage_ore
from integration_hub.settings import get_settings
from integration_hub.untrusted import safe_text

ORGANISATIONS = {
    "blindeforbundet": {
        "name": "Norges Blindeforbund",
        "org_number": "970123456",
        "flags": ["xledger", "bufdir"],
    },
    "hlf": {
        "name": "Hørselshemmedes Landsforbund",
        "org_number": "970654321",
        "flags": ["dynamics", "bufdir"],
    },
}
CHAPTERS = [
    ("OSL", "Oslo", "0301"),
    ("BGO", "Bergen", "4601"),
    ("TRD", "Trondheim", "5001"),
    ("SVG", "Stavanger", "1103"),
    ("TOS", "Tromsø", "5501"),
]
FIRST = ["Kari", "Ola", "Ingrid", "Per", "Sigrid", "Lars", "Astrid", "Nils", "Ragnhild", "Odd"]
LAST = ["Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Berg", "Haugen", "Dahl"]
MILEAGE_RATE_ORE = 350  # kr 3,50 per km
CLAIMS_PER_ORG = 300
DEMO_MAPPING_OVERRIDE = {"toll": "7145"}  # an account Xledger's chart does not have
CLOSED_BEFORE = date(2024, 1, 1)


def seed(rng: random.Random, today: date) -> dict[str, int]:
    """Create the demo organisations once; returns organisation ids by slug."""
    ids: dict[str, int] = {}
    with app_session() as session:
        for slug, facts in ORGANISATIONS.items():
            org = session.exec(select(Organisation).where(Organisation.slug == slug)).first()
            if org is not None:
                ids[slug] = org.id or 0
                continue
            org = Organisation(slug=slug, name=facts["name"], org_number=facts["org_number"])
            session.add(org)
            session.flush()
            ids[slug] = org.id or 0
            _seed_organisation(session, org, rng, today)
    return ids


def _seed_organisation(session: Any, org: Organisation, rng: random.Random, today: date) -> None:
    chapters = []
    for code, name, municipality in CHAPTERS:
        chapter = Chapter(
            organisation_id=org.id or 0,
            code=code,
            name=f"{name} lokallag",
            municipality_number=municipality,
        )
        session.add(chapter)
        chapters.append(chapter)
    session.flush()
    volunteers = []
    for number in range(40):
        chapter = chapters[number % len(chapters)]
        name = f"{FIRST[number % len(FIRST)]} {LAST[(number * 3) % len(LAST)]}"
        volunteer = Volunteer(
            organisation_id=org.id or 0,
            chapter_id=chapter.id or 0,
            name=name,
            email=f"{name.lower().replace(' ', '.')}@example.org",
            # One volunteer was never given an employee number: a real reason to fail.
            employee_number=None if number == 39 else f"{1001 + number}",
        )
        session.add(volunteer)
        volunteers.append(volunteer)
    session.flush()
    categories = ["mileage", "travel", "meals", "materials", "parking", "mileage", "travel"]
    statuses = [ClaimStatus.APPROVED] * 8 + [
        ClaimStatus.SUBMITTED,
        ClaimStatus.DRAFT,
        ClaimStatus.REJECTED,
    ]
    for number in range(CLAIMS_PER_ORG):
        volunteer = volunteers[number % 39]
        category = categories[number % len(categories)]
        expense_date = today - timedelta(days=rng.randint(5, 60))
        status = statuses[number % len(statuses)]
        claim = _claim(org, volunteer, category, expense_date, status, rng)
        session.add(claim)
    # Claims that fail for reasons a person can act on.
    for _ in range(3):  # toll: the demo mapping points at an account Xledger lacks
        session.add(
            _claim(org, volunteers[1], "toll", today - timedelta(days=9), ClaimStatus.APPROVED, rng)
        )
    session.add(
        _claim(org, volunteers[39], "travel", today - timedelta(days=12), ClaimStatus.APPROVED, rng)
    )  # no employee number
    closed = _claim(org, volunteers[2], "meals", date(2023, 12, 10), ClaimStatus.APPROVED, rng)
    closed.approved_at = datetime(2023, 12, 15, 10, 0, tzinfo=UTC)  # a closed period
    session.add(closed)
    for number in range(120):
        chapter = chapters[number % len(chapters)]
        participants = rng.randint(3, 40)
        session.add(
            Activity(
                organisation_id=org.id or 0,
                chapter_id=chapter.id or 0,
                activity_type=rng.choice(["møte", "kurs", "tur", "likepersonsarbeid"]),
                activity_date=today - timedelta(days=rng.randint(1, 200)),
                duration_minutes=rng.choice([60, 90, 120, 180, 240]),
                participants=None if number % 17 == 0 else participants,
                participants_under_26=None if number % 17 == 0 else rng.randint(0, participants),
                volunteer_count=rng.randint(1, 5),
                municipality_number=chapter.municipality_number,
                status=ActivityStatus.DRAFT if number % 11 == 0 else ActivityStatus.COMPLETED,
            )
        )


def _claim(
    org: Organisation,
    volunteer: Volunteer,
    category: str,
    expense_date: date,
    status: ClaimStatus,
    rng: random.Random,
) -> ExpenseClaim:
    distance = None
    rate = None
    if category == "mileage":
        tenths = rng.randint(50, 3000)
        distance = Decimal(tenths) / 10
        rate = MILEAGE_RATE_ORE
        amount = mileage_ore(tenths, rate)
    else:
        amount = rng.randint(2000, 150000)
    approved_at = None
    if status == ClaimStatus.APPROVED:
        approved_at = datetime.combine(
            expense_date + timedelta(days=3), datetime.min.time(), tzinfo=UTC
        ) + timedelta(hours=rng.randint(8, 16))
    descriptions = {
        "mileage": "Kjøring til medlemsmøte",
        "travel": "Tog til regionsamling",
        "meals": "Servering på likepersonsmøte",
        "materials": "Materiell til kurs",
        "parking": "Parkering ved kurssted",
        "toll": "Bompenger til regionsmøte",
    }
    return ExpenseClaim(
        organisation_id=org.id or 0,
        chapter_id=volunteer.chapter_id,
        volunteer_id=volunteer.id or 0,
        category=category,
        amount_ore=amount,
        distance_km=distance,
        rate_ore_per_km=rate,
        expense_date=expense_date,
        status=status.value,
        approved_at=approved_at,
        description=descriptions[category],
    )


def _employees(organisation_id: int) -> list[dict[str, Any]]:
    with app_session() as session:
        volunteers = session.exec(
            select(Volunteer).where(Volunteer.organisation_id == organisation_id)
        ).all()
    return [
        {
            "dbId": 5000 + (v.id or 0),
            "code": v.employee_number,
            "description": v.name,
            "email": v.email,
        }
        for v in volunteers
        if v.employee_number
    ]


def run_demo(*, verbose: bool = False) -> dict[str, Any]:
    from integration_hub.prefect_env import configure_prefect

    configure_prefect(verbose=verbose)
    settings = get_settings()
    from integration_hub.vault.lifecycle import init_key_ring

    upgrade("hub")
    upgrade("app")
    if not settings.vault_keys and not settings.key_file.exists():
        # Refuses (and says how to put the old ring back) if credentials of another ring exist.
        init_key_ring(settings)
        typer.echo(f"created a vault key at {settings.key_file}")
    # The sandboxes listen on this machine: an operator's decision, recorded in var/ so the
    # README's later commands reach them too.
    from integration_hub.services import endpoints
    from integration_hub.services.configuration import OPERATOR

    if "127.0.0.1" not in endpoints.stored_hosts():
        endpoints.allow("127.0.0.1", OPERATOR)
        typer.echo("allowed the local sandboxes' host 127.0.0.1 (integrations endpoints list)")
    ids = seed(random.Random(20261124), date.today())
    _feature_flags(ids)
    typer.echo(
        f"volunteer app: {', '.join(ORGANISATIONS)} with chapters, volunteers and "
        f"{CLAIMS_PER_ORG}+ expense claims each"
    )

    from integration_hub.cli import print_summary
    from integration_hub.mappings.spec import load_template
    from integration_hub.sandbox.server import start_server
    from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app

    token = secrets.token_hex(20)
    state = XledgerSandboxState()
    state.add_company(
        token, employees=_employees(ids["blindeforbundet"]), closed_before=CLOSED_BEFORE
    )
    with start_server(create_xledger_app(state)) as server:
        typer.echo(f"Xledger sandbox listening on {server.url}/graphql")
        template = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
        template["value_maps"]["expense_accounts"].update(DEMO_MAPPING_OVERRIDE)
        mapping_file = settings.var_dir / "demo-xledger-mapping.yaml"
        import yaml

        mapping_file.write_text(yaml.safe_dump(template, sort_keys=False, allow_unicode=True))
        lines = _set_up(
            "blindeforbundet",
            "xledger",
            {
                "base_url": f"{server.url}/graphql",
                "credentials": {"api_token": token},
                "mapping": str(mapping_file),
                "schedule": {"daily": "02:00", "timezone": "Europe/Oslo"},
                "exclusions": ["parking"],
                "accept_warnings": True,
            },
        )
        typer.secho("\nSetup wizard (blindeforbundet, Xledger)", bold=True)
        for line in lines:
            typer.echo(safe_text(f"  {line}"))
        from integration_hub.services.configuration import Actor
        from integration_hub.services.sync import run_export

        typer.secho("\nRunning the export flow ...", bold=True)
        summary = run_export("blindeforbundet", "xledger", Actor("demo"), trigger="manual")
        typer.echo("")
        print_summary(summary)
        company = state.company(token)
        typer.echo(
            f"\nthe Xledger sandbox now holds {len(company.ledger)} GL import lines "
            f"from {company.mutations} addGLImportItems request(s)"
        )
    _demo_business_central(ids["hlf"])
    _demo_bufdir(date.today())
    typer.secho("\nWhat to try next", bold=True)
    for command, why in (
        ("sandbox serve --demo", "the demo's sandboxes again (another shell), for sync"),
        ("runs blindeforbundet xledger", "the export history"),
        ("credentials show blindeforbundet xledger", "masked, never plaintext"),
        ("mappings show blindeforbundet xledger", "toll -> 7145 is why three claims fail"),
        (
            f"report blindeforbundet --period {last_closed_half_year(date.today())} --resubmit",
            "the Bufdir report again",
        ),
        ("demo", "again: the failures retry, nothing is posted twice"),
        ("users add you@example.org --org blindeforbundet", "a sign-in for the web app"),
        ("web", "the admin web app on http://127.0.0.1:8300/"),
    ):
        typer.echo(f"  {_command_prefix()} {command:<52} # {why}")
    return summary


def _demo_business_central(organisation_id: int) -> None:
    """HLF books in Business Central: the same wizard calls, a BC sandbox, an export."""
    from integration_hub.cli import print_summary
    from integration_hub.sandbox.dynamics import DynamicsSandboxState, create_dynamics_app
    from integration_hub.sandbox.server import start_server
    from integration_hub.services.configuration import Actor
    from integration_hub.services.sync import run_export

    state = DynamicsSandboxState()
    employees = [
        {"number": e["code"], "displayName": e["description"]} for e in _employees(organisation_id)
    ]
    provisioned = state.provision(company_name="HLF", employees=employees)
    with start_server(create_dynamics_app(state)) as server:
        typer.echo(f"\nBusiness Central sandbox listening on {server.url}")
        settings = provisioned.settings(server.url)
        secret = settings.pop("client_secret")
        lines = _set_up(
            "hlf",
            "dynamics",
            {
                **settings,
                "credentials": {"client_secret": secret},
                "mapping": "default",
                "schedule": {"daily": "02:00", "timezone": "Europe/Oslo"},
                "exclusions": [],
                "accept_warnings": True,
            },
        )
        typer.secho("\nSetup wizard (hlf, Business Central)", bold=True)
        for line in lines:
            typer.echo(safe_text(f"  {line}"))
        typer.secho("\nRunning the export flow ...", bold=True)
        summary = run_export("hlf", "dynamics", Actor("demo"), trigger="manual")
        typer.echo("")
        print_summary(summary)


def _set_up(org: str, type_key: str, answers: dict[str, Any]) -> list[str]:
    """The demo's setup of one integration, as a setup file would give it, through the setup
    service (checked whole, tested, stored in one go); returns the setup's lines."""
    from pathlib import Path

    from integration_hub.services import setup
    from integration_hub.services.configuration import Actor

    request = setup.read_setup(type_key, answers, mapping_dir=Path("."))
    return setup.apply(org, type_key, request, Actor("demo")).lines()


def last_closed_half_year(today: date) -> str:
    """The most recent half-year that has ended before ``today``: ``2026-H1`` on 2026-11-24."""
    if today.month >= 7:
        return f"{today.year}-H1"
    return f"{today.year - 1}-H2"


def _demo_bufdir(today: date) -> None:
    """Both organisations report their activities to Bufdir: blindeforbundet as a file for the
    portal, hlf through the API client against the (stand-in) Bufdir sandbox."""
    from integration_hub.cli_operations import report_failures
    from integration_hub.sandbox.bufdir import BufdirSandboxState, create_bufdir_app
    from integration_hub.sandbox.server import start_server
    from integration_hub.services.configuration import Actor
    from integration_hub.services.sync import ReportAlreadySubmitted, run_activity_report

    period = last_closed_half_year(today)
    state = BufdirSandboxState()
    with start_server(create_bufdir_app(state)) as server:
        typer.echo(f"\nBufdir sandbox (a stand-in: Bufdir publishes no API) on {server.url}")
        for slug, deliver in (("blindeforbundet", "file"), ("hlf", "api")):
            client_id = f"hub-{slug}"
            client_secret = secrets.token_hex(20)
            state.add_client(client_id, client_secret)
            lines = _set_up(
                slug,
                "bufdir",
                {
                    "base_url": server.url,
                    "client_id": client_id,
                    "credentials": {"client_secret": client_secret},
                    "exclusions": ["draft"],
                },
            )
            typer.secho(f"\nSetup wizard ({slug}, Bufdir)", bold=True)
            for line in lines:
                typer.echo(safe_text(f"  {line}"))
            typer.secho(f"\nBufdir report {period} for {slug} ({deliver}) ...", bold=True)
            try:
                summary = run_activity_report(slug, Actor("demo"), period=period, deliver=deliver)
            except ReportAlreadySubmitted as exc:
                typer.echo(f"  already reported, nothing sent again: {exc}")
                continue
            report = summary["report"]
            typer.echo(
                f"  run {summary['run_id']} {summary['status']}: counted {summary['exported']}, "
                f"skipped {summary['skipped']}, failed {summary['failed']} activities in "
                f"{len(summary['municipalities'])} municipalities"
            )
            for reason, count in summary["skipped_reasons"].items():
                typer.echo(safe_text(f"  skipped {count} x {reason}"))
            for reason, ids in report_failures(summary):
                typer.echo(safe_text(f"  failed  {len(ids)} x {reason}"))
            typer.echo(f"  file:    {report['csv_path']}")
            typer.echo(f"  SHA-256: {report['sha256']}")
            if report.get("instance_id"):
                typer.echo(
                    f"  sent through the API stand-in: instance {report['instance_id']} "
                    f"({report.get('instance_status', '')})"
                )


# -- the demo's sandboxes, again ---------------------------------------------------------------
DEMO_INTEGRATIONS = (
    ("blindeforbundet", "xledger"),
    ("hlf", "dynamics"),
    ("blindeforbundet", "bufdir"),
    ("hlf", "bufdir"),
)


def demo_sandboxes() -> dict[int, tuple[str, Any]]:
    """The sandboxes ``make demo`` set up, rebuilt with the demo's data on the ports the
    integrations point at: port -> (what, ASGI app).

    Nothing is recorded beside the hub's own configuration: each integration's settings say
    where its sandbox listened (and which tenant, company and journal), and its credentials
    come from the vault (an audited use, ``serve the demo's sandbox``), so no secret is
    written anywhere else. Only integrations that point at 127.0.0.1 are served."""
    from urllib.parse import urlsplit

    from integration_hub.adapters.factory import build_adapter
    from integration_hub.db import hub_session
    from integration_hub.sandbox.bufdir import BufdirSandboxState, create_bufdir_app
    from integration_hub.sandbox.dynamics import DynamicsSandboxState, create_dynamics_app
    from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app
    from integration_hub.services import configuration as config
    from integration_hub.services.errors import NotFound

    served: dict[int, tuple[str, Any]] = {}
    bufdir = BufdirSandboxState()
    for slug, type_key in DEMO_INTEGRATIONS:
        try:
            organisation = config.organisation(slug)
            row = config.integration(organisation, type_key, config.OPERATOR)
        except NotFound:
            continue
        if row.id is None:
            continue
        with hub_session() as session:
            adapter = build_adapter(
                session, row, purpose="serve the demo's sandbox", actor="sandbox serve --demo"
            )
        cfg: Any = adapter.config
        where = urlsplit(str(cfg.base_url))
        if where.hostname != "127.0.0.1" or where.port is None:
            continue
        if type_key == "xledger":
            state = XledgerSandboxState()
            state.add_company(
                cfg.api_token.get_secret_value(),
                employees=_employees(organisation.id or 0),
                closed_before=CLOSED_BEFORE,
            )
            served[where.port] = ("Xledger", create_xledger_app(state))
        elif type_key == "dynamics":
            dynamics = DynamicsSandboxState()
            employees = [
                {"number": e["code"], "displayName": e["description"]}
                for e in _employees(organisation.id or 0)
            ]
            dynamics.provision(
                tenant_id=cfg.tenant_id,
                client_id=cfg.client_id,
                client_secret=cfg.client_secret.get_secret_value(),
                environment=cfg.environment,
                company_name="HLF",
                company_id=cfg.company_id,
                journal_id=cfg.journal_id,
                employees=employees,
            )
            served[where.port] = ("Business Central", create_dynamics_app(dynamics))
        else:
            bufdir.add_client(cfg.client_id, cfg.client_secret.get_secret_value())
            served[where.port] = ("Bufdir (stand-in)", create_bufdir_app(bufdir))
    return served


def _command_prefix() -> str:
    """How the user reaches the CLI: on PATH, or inside .venv after ``make demo``."""
    import shutil

    return "integrations" if shutil.which("integrations") else ".venv/bin/integrations"


def _feature_flags(ids: dict[str, int]) -> None:
    from integration_hub.adapters.registry import feature_flag
    from integration_hub.services.configuration import OPERATOR, enabled_flags, set_feature_flag

    for slug, facts in ORGANISATIONS.items():
        present = enabled_flags(ids[slug])
        for key in facts["flags"]:
            if feature_flag(key) not in present:
                set_feature_flag(ids[slug], feature_flag(key), True, OPERATOR)
