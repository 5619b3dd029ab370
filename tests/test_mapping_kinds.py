"""Accounts of the wrong kind, ``mappings validate``'s exit codes, and an unchanged mapping that
makes no new version.

The kind comes from the target: Xledger's account flags (``cost``, ``revenue``, ``liabilities``
…) and Business Central's ``category``, served by both sandboxes as the real systems do, read by
the adapters over real HTTP; where a target does not say, no warning. Database tests run on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import secrets
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from factories import seed_organisation
from pydantic import SecretStr
from sqlmodel import select
from typer.testing import CliRunner
from webworld import ADMIN_A, ORG_A

from integration_hub.adapters.base import AccountKind, ReferenceCode
from integration_hub.adapters.dynamics import DynamicsAdapter, DynamicsConfig, account_kind
from integration_hub.adapters.registry import feature_flag
from integration_hub.adapters.xledger import XledgerAdapter, XledgerConfig
from integration_hub.cli import app as cli_app
from integration_hub.db import hub_session
from integration_hub.mappings.spec import load_template, parse_mapping
from integration_hub.mappings.validator import Severity, validate_mapping
from integration_hub.models import AuditEntry, FieldMapping
from integration_hub.sandbox.xledger import default_accounts
from integration_hub.services import configuration as config
from integration_hub.services import mapping_editor as editor
from integration_hub.web import i18n

LOCAL = config.Actor("test")
XLEDGER_TEMPLATE = load_template("xledger_expense_claims.yaml")
DYNAMICS_TEMPLATE = load_template("dynamics_expense_claims.yaml")


def _check(document: Any, codes: list[ReferenceCode], adapter: Any = XledgerAdapter) -> Any:
    return validate_mapping(
        document,
        target_key=adapter.key,
        target_name=adapter.display_name,
        target_fields=adapter.target_fields,
        reference_codes=codes,
        reference_label=adapter.reference_label,
    )


def _with(template: Any, *, payable: str | None = None, **expense: str) -> Any:
    document = template.model_dump(mode="json", exclude_none=True)
    document["value_maps"]["expense_accounts"].update(expense)
    if payable is not None:
        document["fields"]["payable_account"] = {"constant": payable}
    return parse_mapping(document)


def _warnings(problems: list[Any]) -> dict[str, str]:
    return {p.field: p.message for p in problems if p.severity is Severity.WARNING}


# -- the validator ---------------------------------------------------------------------------------
def test_an_expense_on_an_income_or_balance_sheet_account_is_warned_about() -> None:
    codes = [
        ReferenceCode("7100", "Bilgodtgjørelse", kind=AccountKind.EXPENSE),
        ReferenceCode("7140", "Reise", kind=AccountKind.EXPENSE),
        ReferenceCode("7160", "Diett", kind=AccountKind.EXPENSE),
        ReferenceCode("6800", "Kontorrekvisita", kind=AccountKind.EXPENSE),
        ReferenceCode("3000", "Salgsinntekt", kind=AccountKind.INCOME),
        ReferenceCode("1920", "Bank", kind=AccountKind.ASSET),
        ReferenceCode("2050", "Annen egenkapital", kind=AccountKind.EQUITY),
        ReferenceCode("2910", "Gjeld til ansatte", kind=AccountKind.LIABILITY),
        ReferenceCode("7777", "Uten art"),  # the target says nothing: nothing to warn about
    ]
    assert _check(XLEDGER_TEMPLATE, codes) == []
    document = _with(
        XLEDGER_TEMPLATE,
        toll="3000",
        parking="1920",
        meals="2910",
        materials="7777",
        payable="2050",
    )
    assert _warnings(_check(document, codes)) == {
        "expense_account[toll]": (
            "Xledger account 3000 is an income account, not an expense account"
        ),
        "expense_account[parking]": (
            "Xledger account 1920 is an asset account, not an expense account"
        ),
        "expense_account[meals]": (
            "Xledger account 2910 is a liability account, not an expense account"
        ),
        "payable_account": "Xledger account 2050 is an equity account, not a liability account",
    }
    payable_on_cost = _with(XLEDGER_TEMPLATE, payable="7140")
    assert _warnings(_check(payable_on_cost, codes)) == {
        "payable_account": "Xledger account 7140 is an expense account, not a liability account"
    }


def test_every_wrong_kind_reads_in_bokmal() -> None:
    from integration_hub.mappings.validator import EXPECTED_KINDS, KIND_WORDS

    for expected in EXPECTED_KINDS.values():
        for actual in AccountKind:
            if actual is expected:
                continue
            message = f"Xledger account 4000 is {KIND_WORDS[actual]}, not {KIND_WORDS[expected]}"
            translated = i18n.translate(message, "nb")
            assert translated.startswith("Xledger-konto 4000 er en "), message
            assert "konto, ikke en " in translated and "account" not in translated


# -- the targets say the kind --------------------------------------------------------------------
def test_xledger_serves_its_account_flags_and_the_adapter_reads_the_kinds(
    xledger_sandbox: Any,
) -> None:
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    state.add_company(
        token,
        accounts=[
            *default_accounts(),
            {"code": "8050", "description": "Renteinntekt", "finance": True, "revenue": True},
            {"code": "9000", "description": "Uten flagg"},
        ],
    )
    headers = {"Authorization": f"token {token}"}
    answer = httpx.post(
        f"{server.url}/graphql",
        json={"query": "{ accounts(first: 3) { edges { node { code cost revenue asset "
              "liabilities equity balanceSheet credit finance } } } }"},
        headers=headers,
    ).json()  # fmt: skip
    first = answer["data"]["accounts"]["edges"][0]["node"]
    assert first == {
        "code": "1500",
        "cost": False,
        "revenue": False,
        "asset": True,
        "liabilities": False,
        "equity": False,
        "balanceSheet": True,
        "credit": False,
        "finance": False,
    }
    adapter = XledgerAdapter(
        XledgerConfig(base_url=f"{server.url}/graphql", api_token=SecretStr(token))
    )
    kinds = {code.code: code.kind for code in adapter.reference_codes()}
    assert adapter.requests_sent == 1
    assert kinds["7140"] is AccountKind.EXPENSE and kinds["6800"] is AccountKind.EXPENSE
    assert kinds["2910"] is AccountKind.LIABILITY and kinds["2400"] is AccountKind.LIABILITY
    assert kinds["3000"] is AccountKind.INCOME and kinds["8050"] is AccountKind.INCOME
    assert kinds["1920"] is AccountKind.ASSET
    assert kinds["9000"] is None


def test_an_xledger_tenant_without_the_flags_is_asked_again_without_them() -> None:
    """Xledger refuses a query with a field its schema lacks before running it; the chart is
    then read without kinds (no warnings), not lost."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["query"]
        asked.append(query)
        if "liabilities" in query:
            return httpx.Response(
                200, json={"errors": [{"message": "Cannot query field 'liabilities' on 'Account'"}]}
            )
        node = {"dbId": 1, "code": "7140", "description": "Reise", "posting": True}
        page = {"edges": [{"cursor": "c1", "node": node}], "pageInfo": {"hasNextPage": False}}
        return httpx.Response(200, json={"data": {"accounts": page}})

    adapter = XledgerAdapter(
        XledgerConfig(base_url="https://demo.xledger.net/graphql", api_token=SecretStr("t" * 20)),
        transport=httpx.MockTransport(answer),
    )
    (code,) = adapter.reference_codes()
    assert (code.code, code.postable, code.kind) == ("7140", True, None)
    assert len(asked) == 2 and "cost" in asked[0] and "cost" not in asked[1]


def test_business_central_serves_category_as_its_json_does_and_the_adapter_reads_it(
    dynamics_sandbox: Any,
) -> None:
    state, server = dynamics_sandbox
    made = state.provision()
    made.company.set_accounts(
        [
            {"number": "4000", "displayName": "Varekost", "category": "Cost of Goods Sold"},
            {"number": "7140", "displayName": "Reise", "category": "Expense"},
            {"number": "2910", "displayName": "Gjeld", "category": "Liabilities"},
            {"number": "3000", "displayName": "Salg", "category": "Income"},
            {"number": "9999", "displayName": "Uten kategori"},
        ]
    )
    adapter = DynamicsAdapter(DynamicsConfig.model_validate(made.settings(server.url)))
    # The raw answer, as any client of the real API sees it (the adapter's client signs in).
    raw = adapter.http.get(
        f"{adapter.company_url}/accounts", params={"$select": "number,category,subCategory"}
    )
    assert raw.status_code == 200, raw.text
    categories = {a["number"]: a["category"] for a in raw.json()["value"]}
    assert categories["4000"] == "Cost_x0020_of_x0020_Goods_x0020_Sold"
    assert categories["9999"] == "_x0020_" and categories["2910"] == "Liabilities"
    kinds = {code.code: code.kind for code in adapter.reference_codes()}
    assert kinds == {
        "4000": AccountKind.EXPENSE,
        "7140": AccountKind.EXPENSE,
        "2910": AccountKind.LIABILITY,
        "3000": AccountKind.INCOME,
        "9999": None,
    }
    assert account_kind("Cost of Goods Sold") is AccountKind.EXPENSE
    assert account_kind(None) is None and account_kind(" ") is None


def test_a_business_central_gl_payable_on_an_income_account_is_warned_about(
    dynamics_sandbox: Any,
) -> None:
    state, server = dynamics_sandbox
    made = state.provision()
    adapter = DynamicsAdapter(DynamicsConfig.model_validate(made.settings(server.url)))
    codes = adapter.reference_codes()
    document = DYNAMICS_TEMPLATE.model_dump(mode="json", exclude_none=True)
    document["fields"]["payable_account_type"] = {"constant": "gl"}
    document["fields"]["payable_account"] = {"constant": "3400"}
    document["value_maps"]["expense_accounts"]["toll"] = "3000"
    warnings = _warnings(_check(parse_mapping(document), codes, DynamicsAdapter))
    bc = DynamicsAdapter.display_name
    assert warnings == {
        "expense_account[toll]": f"{bc} account 3000 is an income account, not an expense account",
        "payable_account": f"{bc} account 3400 is an income account, not a liability account",
    }
    assert _check(DYNAMICS_TEMPLATE, codes, DynamicsAdapter) == []


# -- through the hub: the check, the CLI's exit codes ----------------------------------------------
@pytest.fixture
def bf(hub_env: str, vault_key: Path, xledger_sandbox: Any) -> Any:
    """``bf`` on an Xledger sandbox company with the default chart (no mapping saved yet)."""
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    state.add_company(token, employees=[{"code": "1001"}], closed_before=date(2024, 1, 1))
    org_id = seed_organisation("bf", [])
    config.set_feature_flag(org_id, feature_flag("xledger"), True, config.OPERATOR)
    row = config.integration(config.organisation("bf"), "xledger", LOCAL, create=True)
    config.save_configuration(row, {"base_url": f"{server.url}/graphql", "api_token": token}, LOCAL)
    return row


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args))


def test_mappings_validate_fails_on_warnings_unless_allowed(bf: Any, tmp_path: Path) -> None:
    clean = _invoke("mappings", "validate", "bf", "xledger")
    assert clean.exit_code == 0, clean.output
    assert "the default template: no problems" in clean.output

    wrong = tmp_path / "wrong.yaml"
    document = XLEDGER_TEMPLATE.model_dump(mode="json", exclude_none=True)
    document["value_maps"]["expense_accounts"]["toll"] = "3000"
    wrong.write_text(yaml.safe_dump(document), encoding="utf-8")
    warned = _invoke("mappings", "validate", "bf", "xledger", "--file", str(wrong))
    assert warned.exit_code == 1, warned.output
    assert (
        "warning: expense_account[toll]: Xledger account 3000 is an income account, not an "
        "expense account"
    ) in warned.output
    assert warned.output.strip().splitlines()[-1] == (
        f"{wrong}: 1 warning(s); fix them, or pass --allow-warnings to accept them"
    )
    allowed = _invoke(
        "mappings", "validate", "bf", "xledger", "--file", str(wrong), "--allow-warnings"
    )
    assert allowed.exit_code == 0 and "Xledger account 3000 is an income" in allowed.output

    document["target"] = "dynamics"  # an error: the mapping cannot be used
    wrong.write_text(yaml.safe_dump(document), encoding="utf-8")
    broken = _invoke(
        "mappings", "validate", "bf", "xledger", "--file", str(wrong), "--allow-warnings"
    )
    assert broken.exit_code == 2
    assert "errors; the mapping cannot be used" in broken.output

    unreadable = tmp_path / "missing.yaml"
    assert (
        _invoke("mappings", "validate", "bf", "xledger", "--file", str(unreadable)).exit_code == 2
    )

    helped = _invoke("mappings", "validate", "--help")
    assert "--allow-warnings" in helped.output and "Exit codes: 0 no problems" in helped.output


def test_the_hubs_check_warns_about_the_kind_from_the_live_chart(bf: Any) -> None:
    document = _with(XLEDGER_TEMPLATE, meals="2910")
    problems = config.check_mapping(bf, document, LOCAL)
    assert [str(p) for p in problems] == [
        "warning: expense_account[meals]: Xledger account 2910 is a liability account, not an "
        "expense account"
    ]


# -- an unchanged mapping makes no new version -----------------------------------------------------
def _versions(row: Any) -> list[int]:
    with hub_session() as session:
        found = session.exec(select(FieldMapping).where(FieldMapping.integration_id == row.id))
        return sorted(m.version for m in found)


def _saves() -> int:
    with hub_session() as session:
        return len(
            session.exec(select(AuditEntry).where(AuditEntry.action == "mapping.saved")).all()
        )


def test_saving_the_same_mapping_again_makes_no_new_version(bf: Any) -> None:
    first = config.save_mapping(bf, XLEDGER_TEMPLATE, LOCAL)
    assert (first.version, first.unchanged) == (1, False)
    version, problems = first  # callers that unpack still work
    assert (version, problems) == (1, [])

    # The same mapping written differently: other key order, comments, quoting, JSON.
    text = (
        "# the same mapping, by hand\n"
        "target: xledger\n"
        "value_maps:\n  expense_accounts:\n"
        "    toll: 7140\n    parking: '7140'\n    materials: \"6800\"\n    meals: 7160\n"
        "    travel: 7140\n    mileage: 7100\n"
        + yaml.safe_dump(
            {"fields": XLEDGER_TEMPLATE.model_dump(mode="json", exclude_none=True)["fields"]}
        )
    )
    again = config.save_mapping(bf, text, LOCAL)
    assert (again.version, again.unchanged) == (1, True)
    as_json = json.dumps(XLEDGER_TEMPLATE.model_dump(mode="json", exclude_none=True))
    assert config.save_mapping(bf, as_json, LOCAL).unchanged
    assert _versions(bf) == [1] and _saves() == 1

    changed = config.save_mapping(bf, _with(XLEDGER_TEMPLATE, toll="7130"), LOCAL)
    assert (changed.version, changed.unchanged) == (2, False)
    back = config.save_mapping(bf, XLEDGER_TEMPLATE, LOCAL)  # the first again is a change now
    assert (back.version, back.unchanged) == (3, False)
    assert _versions(bf) == [1, 2, 3] and _saves() == 3


def test_an_unchanged_mapping_with_acknowledged_warnings_asks_nothing_again(bf: Any) -> None:
    from integration_hub.services.errors import WarningsNotAcknowledged

    warned = _with(XLEDGER_TEMPLATE, toll="3000")
    with pytest.raises(WarningsNotAcknowledged):
        config.save_mapping(bf, warned, LOCAL)
    saved = config.save_mapping(bf, warned, LOCAL, accept_warnings=True)
    again = config.save_mapping(bf, warned, LOCAL)  # no new version, so nothing to acknowledge
    assert (again.version, again.unchanged) == (saved.version, True)
    assert [str(p) for p in again.problems] == [str(p) for p in saved.problems]
    outcome = editor.save(bf, warned, LOCAL)
    assert (outcome.version, outcome.unchanged) == (saved.version, True)
    assert _versions(bf) == [1]


def test_the_editor_page_says_unchanged(web: Any) -> None:
    token = web.xledger_company(ORG_A)
    row = config.integration(config.organisation(ORG_A), "xledger", LOCAL, create=True)
    config.save_configuration(
        row, {"base_url": f"{web.sandbox_url}/graphql", "api_token": token}, LOCAL
    )
    client = web.client(ADMIN_A)
    url = f"/orgs/{ORG_A}/integrations/xledger/mapping"
    form = {"csrf_token": web.csrf(client), "action": "save"}
    form |= {f"map.expense_accounts.{k}": v for k, v in {"toll": "7130"}.items()}
    first = client.post(url, data=form)
    assert first.headers["location"] == f"{url}?saved=1"
    second = client.post(url, data=form)
    assert second.status_code == 303 and second.headers["location"] == f"{url}?unchanged=1"
    page = client.get(second.headers["location"])
    assert "Ingenting er endret: koblingen er fortsatt versjon 1." in page.text
    assert _versions(row) == [1]

    api = web.client(ADMIN_A)
    api.headers["X-CSRF-Token"] = web.csrf(api)
    stored = api.get(f"/api/v1/organisations/{ORG_A}/integrations/xledger/mapping").json()
    put = api.put(
        f"/api/v1/organisations/{ORG_A}/integrations/xledger/mapping",
        json={"document": stored["document"]},
    )
    assert put.status_code == 200, put.text
    assert put.json() == {"version": 1, "problems": [], "unchanged": True}
    assert _versions(row) == [1]
