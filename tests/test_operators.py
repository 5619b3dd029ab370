"""Operators: organisations and what each is offered (services/tenancy.py, ``integrations orgs``
and ``integrations flags``, the operators' page), the read-only views an operator gets instead
of forms that would be refused, and the API reference that needs no CDN.

Database tests run on SQLite and PostgreSQL (the ``db_url`` fixture).
"""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from typing import Any

import pytest
from factories import configure_xledger, seed_organisation
from typer.testing import CliRunner
from webworld import ADMIN_A, OPERATOR, ORG_A, ORG_B

from integration_hub.cli import app
from integration_hub.services import configuration as config
from integration_hub.services.errors import Forbidden, InvalidInput

runner = CliRunner()
LOCAL = config.Actor("cli:test")  # the hub's command line (role local)
WEB_OPERATOR = config.Actor("ops@hub.test", role="operator")
VALID_NUMBER = "974760673"  # Brønnøysundregistrene's own organisasjonsnummer: check digit ok


def audit_actions() -> list[tuple[str, str, dict[str, Any]]]:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import AuditEntry

    with hub_session() as session:
        rows = session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()
    return [(row.actor, row.action, dict(row.details or {})) for row in rows]


def offered(slug: str) -> list[str]:
    from integration_hub.services import tenancy

    return [offer.key for offer in tenancy.tenant(slug, LOCAL).offered]


# =============================================================================================
# the service
# =============================================================================================
@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("974760673", None),
        ("974 760 673", None),  # normalised first
        ("974760674", "not a valid organisation number"),  # one digit off: the check digit
        ("97476067", "nine digits"),
        ("97476067a", "nine digits"),
    ],
)
def test_an_organisation_number_is_nine_digits_with_its_check_digit(
    number: str, problem: str | None
) -> None:
    from integration_hub.services.tenancy import normal_org_number, org_number_problem

    found = org_number_problem(normal_org_number(number))
    assert (found is None) if problem is None else (problem in (found or ""))


def test_adding_an_organisation_offers_its_types_and_is_audited(hub_env: str) -> None:
    from integration_hub.services import tenancy

    added = tenancy.add_organisation(
        "nbf", "  Norges   Blindeforbund ", "974 760 673", WEB_OPERATOR, offered=["xledger"]
    )
    org = added.organisation
    assert (org.slug, org.name, org.org_number) == ("nbf", "Norges Blindeforbund", VALID_NUMBER)
    assert [o.slug for o in config.list_organisations()] == ["nbf"]
    assert offered("nbf") == ["xledger"]
    actions = audit_actions()
    assert actions[0] == (
        "ops@hub.test",
        "organisation.added",
        {"slug": "nbf", "name": "Norges Blindeforbund", "org_number": VALID_NUMBER},
    )
    assert actions[1][:2] == ("ops@hub.test", "feature_flag.set")
    assert actions[1][2] == {"flag": "integration.xledger", "enabled": True}


def test_a_refused_organisation_names_every_problem_and_stores_nothing(hub_env: str) -> None:
    from integration_hub.services import tenancy

    tenancy.add_organisation("hlf", "HLF", VALID_NUMBER, LOCAL)
    with pytest.raises(InvalidInput) as refused:
        tenancy.add_organisation("hlf", "", "123", LOCAL, offered=["xledger", "nope"])
    problems = refused.value.problems
    assert len(problems) == 4, problems
    assert problems[0] == "slug: there is already an organisation hlf"
    assert problems[1].startswith("name: ")
    assert problems[2].startswith("org_number: ")
    assert "unknown integration type nope" in problems[3]
    with pytest.raises(InvalidInput, match="the organisation was not added") as bad_slug:
        tenancy.add_organisation("Not A Slug", "X", VALID_NUMBER, LOCAL)
    assert bad_slug.value.problems[0].startswith("slug: use lowercase letters")
    assert [o.slug for o in config.list_organisations()] == ["hlf"]
    assert [action for _, action, _ in audit_actions()] == ["organisation.added"]


def test_renaming_keeps_the_slug_and_audits_only_a_real_change(hub_env: str) -> None:
    from integration_hub.services import tenancy

    tenancy.add_organisation("hlf", "HLF", VALID_NUMBER, LOCAL)
    assert tenancy.rename_organisation("hlf", "Hørselshemmedes Landsforbund", WEB_OPERATOR)
    assert not tenancy.rename_organisation("hlf", "Hørselshemmedes  Landsforbund", WEB_OPERATOR)
    assert config.organisation("hlf").name == "Hørselshemmedes Landsforbund"
    renames = [a for a in audit_actions() if a[1] == "organisation.renamed"]
    assert renames == [
        (
            "ops@hub.test",
            "organisation.renamed",
            {"old": "HLF", "new": "Hørselshemmedes Landsforbund"},
        )
    ]
    with pytest.raises(InvalidInput):
        tenancy.rename_organisation("hlf", "   ", LOCAL)


def test_offers_change_one_at_a_time_or_as_a_whole_and_only_changes_are_audited(
    hub_env: str,
) -> None:
    from integration_hub.services import tenancy

    tenancy.add_organisation("hlf", "HLF", VALID_NUMBER, LOCAL)
    change = tenancy.set_offered("hlf", "dynamics", True, WEB_OPERATOR)
    assert change is not None and (change.key, change.offered) == ("dynamics", True)
    assert tenancy.set_offered("hlf", "dynamics", True, WEB_OPERATOR) is None  # already so
    changes = tenancy.set_offers("hlf", ["xledger", "bufdir"], WEB_OPERATOR)
    assert sorted((c.key, c.offered) for c in changes) == [
        ("bufdir", True),
        ("dynamics", False),
        ("xledger", True),
    ]
    assert offered("hlf") == ["bufdir", "xledger"]
    flags = [a[2] for a in audit_actions() if a[1] == "feature_flag.set"]
    assert len(flags) == 4  # dynamics on, then bufdir on, dynamics off, xledger on
    with pytest.raises(InvalidInput, match="the offers were not changed"):
        tenancy.set_offers("hlf", ["xledger", "nope"], WEB_OPERATOR)
    assert offered("hlf") == ["bufdir", "xledger"]


def test_switching_off_a_type_that_is_set_up_says_the_integration_stays(
    hub_env: str, vault_key: Any, xledger_sandbox: Any
) -> None:
    from integration_hub.services import tenancy

    _, server = xledger_sandbox
    org_id = seed_organisation("bf", [])
    row = configure_xledger("bf", server.url, "token-of-bf")  # offers xledger, sets it up
    change = tenancy.set_offered("bf", "xledger", False, WEB_OPERATOR)
    assert change is not None and change.still_set_up == "draft"
    with pytest.raises(Forbidden, match="not offered"):  # its admins no longer reach it
        config.integration(config.organisation("bf"), "xledger", config.Actor("a", org_id))
    assert config.reload(row).status == "draft"  # kept as it was


def test_an_admin_manages_no_organisation_and_no_offer(hub_env: str) -> None:
    from integration_hub.services import tenancy

    org_id = seed_organisation("hlf", [])
    admin = config.Actor("admin@hlf", organisation_id=org_id, role="admin")
    assert not admin.manages_tenancy and WEB_OPERATOR.manages_tenancy and LOCAL.manages_tenancy
    for call in (
        lambda: tenancy.tenants(admin),
        lambda: tenancy.add_organisation("x", "X", VALID_NUMBER, admin),
        lambda: tenancy.rename_organisation("hlf", "Other", admin),
        lambda: tenancy.set_offered("hlf", "xledger", True, admin),
        lambda: config.set_feature_flag(org_id, "integration.xledger", True, admin),
    ):
        with pytest.raises(Forbidden):
            call()
    assert offered("hlf") == [] and config.organisation("hlf").name == "Hlf"
    assert audit_actions() == []


def test_may_change_answers_what_check_change_decides(hub_env: str) -> None:
    admin = config.Actor("a", organisation_id=7, role="admin")
    assert admin.may_change(7) and not admin.may_change(8)
    assert not WEB_OPERATOR.may_change(7)
    assert LOCAL.may_change(7)


# =============================================================================================
# the command line
# =============================================================================================
def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_orgs_alone_still_lists_and_add_rename_flags_work_within_80_columns(
    hub_env: str,
) -> None:
    empty = invoke("orgs")
    assert empty.exit_code == 0 and "no organisations yet" in empty.output

    added = invoke(
        "orgs", "add", "blindeforbundet", "--name", "Norges Blindeforbund, et langt navn her",
        "--org-number", "974 760 673", "--offer", "xledger", "--offer", "dynamics",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "added blindeforbundet" in added.output and "offered: dynamics, xledger" in added.output
    assert invoke("flags", "enable", "blindeforbundet", "bufdir").exit_code == 0

    for listing in (invoke("orgs"), invoke("orgs", "list")):
        assert listing.exit_code == 0, listing.output
        lines = listing.output.splitlines()
        assert lines[0].split() == ["SLUG", "NAME", "ORG", "NO.", "OFFERED"]
        assert lines[1].startswith("blindeforbundet  Norges Blindeforbund")
        assert "bufdir, dynamics, xledger" in listing.output
        assert max(len(line) for line in lines) <= 80, lines

    renamed = invoke("orgs", "rename", "blindeforbundet", "Norges Blindeforbund")
    assert renamed.exit_code == 0 and "is now called Norges Blindeforbund" in renamed.output
    assert config.organisation("blindeforbundet").name == "Norges Blindeforbund"

    off = invoke("flags", "disable", "blindeforbundet", "dynamics")
    assert off.exit_code == 0 and "dynamics: no longer offered" in off.output
    again = invoke("flags", "disable", "blindeforbundet", "dynamics")
    assert "already not offered" in again.output
    listed = invoke("flags", "list", "blindeforbundet")
    assert re.search(r"dynamics\s+not offered", listed.output)
    assert re.search(r"xledger\s+offered", listed.output)
    actions = [action for who, action, _ in audit_actions() if who.startswith("cli:")]
    assert actions.count("feature_flag.set") == 4
    assert actions.count("organisation.added") == actions.count("organisation.renamed") == 1


def test_operator_commands_fail_with_one_clear_message_and_exit_2(hub_env: str) -> None:
    bad = invoke("orgs", "add", "Bad Slug", "--name", "", "--org-number", "123")
    assert bad.exit_code == 2
    assert "Error: the organisation was not added" in bad.output
    assert bad.output.count("  - ") == 3 and "Traceback" not in bad.output
    unknown_org = invoke("flags", "enable", "nope", "xledger")
    assert unknown_org.exit_code == 2 and "no organisation 'nope'" in unknown_org.output
    seed_organisation("hlf", [])
    unknown_type = invoke("flags", "enable", "hlf", "nope")
    assert unknown_type.exit_code == 2 and "Unknown integration type 'nope'" in unknown_type.output
    assert audit_actions() == []


def test_the_operator_commands_help_imports_neither_prefect_nor_pandas() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from integration_hub.cli import app\n"
        "for args in (['orgs', '--help'], ['flags', '--help'], ['orgs', 'add', '--help']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'pandas'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# =============================================================================================
# the operators' page
# =============================================================================================
PAGE = "/operators/organisations"


def speaking(web: Any, email: str, language: str = "en") -> Any:
    """A client signed in as ``email`` whose pages are in ``language``."""
    client = web.client(email)
    client.post("/language", data={"language": language, "csrf_token": web.csrf(client)})
    return client


def test_an_operator_adds_an_organisation_and_changes_what_one_is_offered(web: Any) -> None:
    client = speaking(web, OPERATOR)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert f'action="{PAGE}/{ORG_A}"' in page.text and f'action="{PAGE}"' in page.text

    added = client.post(
        PAGE,
        data={
            "csrf_token": web.csrf(client),
            "slug": "nbf",
            "name": "Norges Blindeforbund",
            "org_number": "974 760 673",
            "offered": ["xledger"],
        },
    )
    assert added.status_code == 303 and added.headers["location"].startswith(f"{PAGE}?added=nbf")
    shown = client.get(added.headers["location"])
    assert "Norges Blindeforbund is added." in shown.text and "974 760 673" in shown.text
    assert offered("nbf") == ["xledger"]

    saved = client.post(
        f"{PAGE}/{ORG_A}",
        data={"csrf_token": web.csrf(client), "name": "HLF Norge", "offered": ["bufdir"]},
    )
    assert saved.status_code == 303
    assert "The changes to HLF Norge are saved." in client.get(saved.headers["location"]).text
    assert config.organisation(ORG_A).name == "HLF Norge"
    assert offered(ORG_A) == ["bufdir"]
    who = {actor for actor, _, _ in audit_actions()[-5:]}
    assert who == {"ops@hub.test"}


def test_a_refused_change_shows_every_problem_at_its_field_and_changes_nothing(
    web: Any,
) -> None:
    client = speaking(web, OPERATOR)
    refused = client.post(
        PAGE,
        data={"csrf_token": web.csrf(client), "slug": ORG_B, "name": "", "org_number": "12"},
    )
    assert refused.status_code == 422
    assert (
        'href="#field-new-slug"' in refused.text and 'href="#field-new-org_number"' in refused.text
    )
    assert f"there is already an organisation {ORG_B}" in refused.text
    assert 'id="error-new-name"' in refused.text
    blank = client.post(f"{PAGE}/{ORG_A}", data={"csrf_token": web.csrf(client), "name": " "})
    assert blank.status_code == 422 and 'href="#field-hlf-name"' in blank.text
    assert config.organisation(ORG_A).name == "Hlf"
    assert len(offered(ORG_A)) == 3  # the world offers every type; the refusal changed none


def test_the_operators_page_is_in_bokmal_and_refused_to_admins(web: Any) -> None:
    client = speaking(web, OPERATOR, "nb")
    page = client.get(PAGE)
    assert (
        "Organisasjoner og integrasjonstyper" in page.text
        and "Legg til en organisasjon" in page.text
    )
    refused = client.post(PAGE, data={"csrf_token": web.csrf(client), "slug": "x"})
    assert refused.status_code == 422 and "oppgi navnet på organisasjonen" in refused.text
    assert "et organisasjonsnummer har ni sifre" in refused.text
    orgs = client.get("/orgs")
    assert f'href="{PAGE}"' in orgs.text

    admin = web.client(ADMIN_A)
    assert admin.get(PAGE).status_code == 403
    assert f'href="{PAGE}"' not in admin.get("/orgs").text
    data = {"csrf_token": web.csrf(admin), "name": "Taken over", "offered": []}
    assert admin.post(f"{PAGE}/{ORG_A}", data=data).status_code == 403
    assert (
        admin.post(PAGE, data={**data, "slug": "x", "org_number": VALID_NUMBER}).status_code == 403
    )
    # Without the session's CSRF token the operator is refused too.
    assert client.post(f"{PAGE}/{ORG_A}", data={"name": "X"}).status_code == 403
    assert config.organisation(ORG_A).name == "Hlf" and len(offered(ORG_A)) == 3


# =============================================================================================
# operators read, they are not shown forms that would be refused
# =============================================================================================
class Forms(HTMLParser):
    """The POST forms of a page (their actions) and its submit buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form" and (found.get("method") or "").lower() == "post":
            self.actions.append(found.get("action") or "")


def post_actions(html: str) -> list[str]:
    parser = Forms()
    parser.feed(html)
    return parser.actions


OPERATOR_MAY = re.compile(r"^/(language|sign-out)$|/credentials/test$")
"""What an operator may post from these pages: the language, signing out, a connection test."""


@pytest.mark.parametrize("language", ["en", "nb"])
def test_an_operator_gets_read_only_pages_an_admin_gets_the_forms(web: Any, language: str) -> None:
    row = configure_xledger(
        ORG_A, web.sandbox_url, web.xledger_company(ORG_A), exclusions=("parking",)
    )
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, config.Actor("test"))
    base = f"/orgs/{ORG_A}/integrations/xledger"
    pages = ["/orgs", f"/orgs/{ORG_A}"]
    pages += [f"{base}/{screen}" for screen in ("credentials", "mapping", "schedule", "exclusions")]
    operator, admin = speaking(web, OPERATOR, language), speaking(web, ADMIN_A, language)
    for path in pages:
        seen = operator.get(path)
        assert seen.status_code == 200, path
        refused = [a for a in post_actions(seen.text) if not OPERATOR_MAY.search(a)]
        assert refused == [], f"{path} shows an operator forms they may not send: {refused}"
    texts = {path: operator.get(path).text for path in pages}
    # What the forms would hold is still there to read, and says why it is read-only.
    assert (
        "••••••" in texts[f"{base}/credentials"]
        and f"{web.sandbox_url}/graphql" in texts[f"{base}/credentials"]
    )
    assert ("Parking" if language == "en" else "Parkering") in texts[f"{base}/exclusions"]
    assert "02:00" in texts[f"{base}/schedule"]
    note = {"en": "not change", "nb": "men ikke endre"}[language]
    for path in pages[1:]:
        assert note in texts[path], path
    # Not set up yet: no setup button the wizard would refuse.
    assert f"/orgs/{ORG_A}/integrations/dynamics/setup" not in texts[f"/orgs/{ORG_A}"]

    # The admin of the organisation still gets every form.
    for path, action in [
        (f"{base}/credentials", f"{base}/credentials"),
        (f"{base}/schedule", f"{base}/schedule"),
        (f"{base}/exclusions", f"{base}/exclusions"),
        (f"{base}/mapping", f"{base}/mapping"),
        (f"/orgs/{ORG_A}", None),
    ]:
        html = admin.get(path).text
        if action:
            assert action in post_actions(html), path
        assert note not in html, path
    assert f"/orgs/{ORG_A}/integrations/dynamics/setup" in admin.get(f"/orgs/{ORG_A}").text


# =============================================================================================
# the API reference
# =============================================================================================
EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def test_the_api_reference_is_served_whole_from_the_app_under_its_own_policy(
    web: Any,
) -> None:
    client = web.client()  # no sign-in needed, as before
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not EXTERNAL.search(page.text), EXTERNAL.search(page.text)
    assert "<script" not in page.text.replace('<script src="/static/app.js" defer></script>', "")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert "cdn" not in policy.lower()
    document = client.get("/api/v1/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert f'id="{operation["operationId"]}"' in page.text, (method, path)
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page.text, name
    assert 'href="/api/v1/openapi.json"' in page.text
    nb = client.get("/api/v1/docs", cookies={"ih_lang": "nb"})
    assert "Slik bruker du API-et" in nb.text and 'lang="en"' in nb.text


# =============================================================================================
# bokmål: numbers and singular
# =============================================================================================
def test_numbers_read_as_the_page_language_writes_them() -> None:
    from integration_hub.web.rendering import format_number

    assert format_number(1234567, "nb") == "1\u00a0234\u00a0567"
    assert format_number(4.25, "nb", 1) == "4,2"
    assert format_number(-1234.5, "nb", 2) == "-1\u00a0234,50"
    assert format_number(1234567, "en") == "1,234,567"
    assert format_number(None) == ""


@pytest.mark.parametrize(
    ("message", "bokmal"),
    [
        ("the last run has 1 failed record(s)", "siste kjøring har 1 feilet post"),
        ("the last run has 2 failed record(s)", "siste kjøring har 2 feilede poster"),
        (
            "too many wrong passwords from your address; try again in 1 minute(s)",
            "for mange feil passord fra adressen din; prøv igjen om 1 minutt",
        ),
        (
            "too many wrong passwords from your address; try again in 15 minute(s)",
            "for mange feil passord fra adressen din; prøv igjen om 15 minutter",
        ),
    ],
)
def test_service_messages_with_a_count_are_singular_for_one(message: str, bokmal: str) -> None:
    from integration_hub.web import i18n

    assert i18n.translate(message, "nb") == bokmal
