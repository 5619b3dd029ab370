"""The Business Central sandbox over real HTTP: tokens, auth, paging, $filter, journal lines,
$batch semantics, posting, faults and control endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest

from integration_hub.sandbox.dynamics import (
    SCOPE,
    DynamicsSandboxState,
    Provisioned,
    create_dynamics_app,
)
from integration_hub.sandbox.server import RunningServer, start_server


@pytest.fixture
def sandbox(dynamics_sandbox: tuple[DynamicsSandboxState, RunningServer]) -> Any:
    return dynamics_sandbox


@pytest.fixture
def made(sandbox: tuple[DynamicsSandboxState, RunningServer]) -> Provisioned:
    return sandbox[0].provision()


@pytest.fixture
def url(sandbox: tuple[DynamicsSandboxState, RunningServer]) -> str:
    return sandbox[1].url


def get_token(url: str, made: Provisioned, **changes: str) -> httpx.Response:
    tenant = changes.pop("tenant", made.tenant_id)
    form = {
        "grant_type": "client_credentials",
        "client_id": made.client_id,
        "client_secret": made.client_secret,
        "scope": SCOPE,
        **changes,
    }
    return httpx.post(f"{url}/{tenant}/oauth2/v2.0/token", data=form)


@pytest.fixture
def api(url: str, made: Provisioned) -> Iterator[httpx.Client]:
    """A client on the environment's API root with a valid bearer token."""
    token = get_token(url, made).json()["access_token"]
    root = f"{url}/v2.0/{made.tenant_id}/{made.environment}/api/v2.0"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=root, headers=headers, timeout=5.0) as client:
        yield client


def company_path(made: Provisioned) -> str:
    return f"/companies({made.company_id})"


def lines_path(made: Provisioned) -> str:
    return f"{company_path(made)}/journals({made.journal_id})/journalLines"


def line(
    key: str,
    amount: Any = Decimal("250.00"),
    account: str = "7140",
    account_type: str = "G/L Account",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "accountType": account_type,
        "accountNumber": account,
        "postingDate": "2026-03-02",
        "documentNumber": key[:20],
        "externalDocumentNumber": key,
        "amount": amount,
        "description": f"Claim {key}",
        **extra,
    }


def claim(key: str, amount: str = "250.00", employee: str = "1001") -> list[dict[str, Any]]:
    return [
        line(key, Decimal(amount)),
        line(key, -Decimal(amount), account=employee, account_type="Employee"),
    ]


def post_json(client: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    """POST JSON written with exact decimals, as Business Central clients must send it."""
    from integration_hub.sandbox.dynamics import dumps

    return client.post(
        path, content=dumps(body), headers={"Content-Type": "application/json", **headers}
    )


def batch(made: Any, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON batch creating ``bodies`` in ``made``'s journal (anything with company_id and
    journal_id)."""
    url = f"companies({made.company_id})/journals({made.journal_id})/journalLines"
    return {
        "requests": [
            {
                "id": str(n),
                "method": "POST",
                "url": url,
                "headers": {"Content-Type": "application/json"},
                "body": body,
            }
            for n, body in enumerate(bodies, 1)
        ]
    }


def exact(response: httpx.Response) -> Any:
    return json.loads(response.content, parse_float=Decimal)


# -- token endpoint -----------------------------------------------------------------------------
def test_token_endpoint_issues_a_bearer_token(url: str, made: Provisioned) -> None:
    response = get_token(url, made)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599
    assert body["access_token"] and made.tenant.token_requests == 1


@pytest.mark.parametrize(
    ("changes", "status", "error", "code"),
    [
        ({"client_secret": "nope"}, 401, "invalid_client", 7000215),
        ({"client_id": "11111111-2222-4333-8444-555555555555"}, 400, "unauthorized_client", 700016),
        ({"tenant": "nowhere.example"}, 400, "invalid_request", 90002),
        ({"scope": "https://graph.microsoft.com/.default"}, 400, "invalid_scope", 1002012),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ],
    ids=["secret", "client", "tenant", "scope", "grant"],
)
def test_token_errors_look_like_entra_id(
    url: str, made: Provisioned, changes: dict[str, str], status: int, error: str, code: int
) -> None:
    response = get_token(url, made, **changes)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert made.client_secret not in response.text


def test_token_endpoint_wants_a_form(url: str, made: Provisioned) -> None:
    response = httpx.post(f"{url}/{made.tenant_id}/oauth2/v2.0/token", json={"a": 1})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


# -- auth ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer"])
def test_api_needs_a_live_bearer_token(url: str, made: Provisioned, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    root = f"{url}/v2.0/{made.tenant_id}/{made.environment}/api/v2.0"
    response = httpx.get(f"{root}{company_path(made)}", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Authentication_InvalidCredentials"
    assert made.tenant.requests == 0


def test_expired_and_revoked_tokens_are_401(
    sandbox: tuple[DynamicsSandboxState, RunningServer], url: str, made: Provisioned
) -> None:
    made.tenant.token_lifetime_s = 1
    token = get_token(url, made).json()["access_token"]
    root = f"{url}/v2.0/{made.tenant_id}/{made.environment}/api/v2.0"
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{root}{company_path(made)}", headers=headers).status_code == 200
    time.sleep(1.05)
    assert httpx.get(f"{root}{company_path(made)}", headers=headers).status_code == 401
    made.tenant.token_lifetime_s = 3599
    headers = {"Authorization": f"Bearer {get_token(url, made).json()['access_token']}"}
    assert sandbox[0].revoke_tokens(made.tenant_id) == 2
    assert httpx.get(f"{root}{company_path(made)}", headers=headers).status_code == 401


def test_tenants_are_apart(
    sandbox: tuple[DynamicsSandboxState, RunningServer], url: str, made: Provisioned
) -> None:
    other = sandbox[0].provision()
    token = get_token(url, other).json()["access_token"]
    mine = f"{url}/v2.0/{made.tenant_id}/{made.environment}/api/v2.0{company_path(made)}"
    response = httpx.get(mine, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    theirs = f"{url}/v2.0/{other.tenant_id}/production/api/v2.0{company_path(made)}"
    response = httpx.get(theirs, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404  # my company is not in their environment


def test_missing_permission_is_403(
    sandbox: tuple[DynamicsSandboxState, RunningServer], url: str
) -> None:
    made = sandbox[0].provision(permitted=False)
    token = get_token(url, made).json()["access_token"]
    root = f"{url}/v2.0/{made.tenant_id}/{made.environment}/api/v2.0"
    response = httpx.get(
        f"{root}{company_path(made)}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403
    assert set(response.json()["error"]) == {"code", "message"}


def test_unknown_environment_and_company_are_404(api: httpx.Client, made: Provisioned) -> None:
    response = api.get("/companies(00000000-0000-4000-8000-000000000000)")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "BadRequest_NotFound"
    other_env = str(api.base_url).replace(f"/{made.environment}/", "/staging/")
    response = httpx.get(f"{other_env}/companies", headers=dict(api.headers))
    assert response.status_code == 404 and response.json()["error"]["code"] == "NoEnvironment"


# -- reading --------------------------------------------------------------------------------
def test_company_and_companies(api: httpx.Client, made: Provisioned) -> None:
    company = api.get(company_path(made)).json()
    assert company["id"] == made.company_id and company["name"] == "Frivillig Norge"
    listed = api.get("/companies").json()["value"]
    assert [c["id"] for c in listed] == [made.company_id]


def test_default_chart_has_the_accounts_the_hub_maps_to(
    api: httpx.Client, made: Provisioned
) -> None:
    accounts: dict[str, Any] = {}
    link: str | None = f"{company_path(made)}/accounts"
    while link:
        body = api.get(link).json()
        accounts.update({a["number"]: a for a in body["value"]})
        link = body.get("@odata.nextLink")
    for number in ("7100", "7140", "7160", "6800", "2910"):
        assert accounts[number]["accountType"] == "Posting"
        assert accounts[number]["directPosting"] and not accounts[number]["blocked"]
    assert accounts["7350"]["blocked"] is True
    assert accounts["2400"]["directPosting"] is False
    assert accounts["7000"]["accountType"] == "Heading"


def test_accounts_page_by_50_with_next_links(api: httpx.Client, made: Provisioned) -> None:
    made.company.set_accounts(
        [{"number": str(10000 + n), "displayName": f"Konto {n}"} for n in range(120)]
    )
    numbers: list[str] = []
    first = api.get(f"{company_path(made)}/accounts", params={"$select": "number,blocked"})
    body = first.json()
    pages = 1
    while True:
        assert len(body["value"]) <= 50
        assert all(set(a) == {"number", "blocked"} for a in body["value"])
        numbers += [a["number"] for a in body["value"]]
        link = body.get("@odata.nextLink")
        if link is None:
            break
        assert link.startswith("http://127.0.0.1:") and "%24skiptoken=" in link
        body = httpx.get(link, headers=dict(api.headers)).json()
        pages += 1
    assert pages == 3 and numbers == sorted(numbers) and len(numbers) == 120
    top = api.get(f"{company_path(made)}/accounts", params={"$top": "3"}).json()
    assert len(top["value"]) == 3 and "@odata.nextLink" not in top


@pytest.mark.parametrize(
    "params",
    [
        {"$filter": "number eq 7100 and blocked eq false"},
        {"$filter": "nope eq '1'"},
        {"$expand": "trialBalance"},
        {"$skiptoken": "garbage!"},
        {"$top": "-1"},
    ],
    ids=["and", "unknown-property", "expand", "skiptoken", "top"],
)
def test_bad_queries_are_400(api: httpx.Client, made: Provisioned, params: dict[str, str]) -> None:
    response = api.get(f"{company_path(made)}/accounts", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_filter_takes_or_chains_and_quoted_quotes(api: httpx.Client, made: Provisioned) -> None:
    made.company.add_employees([{"number": "O'HARA", "displayName": "Pat"}])
    flt = "number eq '1001' or number eq 'O''HARA' or number eq '4040'"
    body = api.get(f"{company_path(made)}/employees", params={"$filter": flt}).json()
    assert [e["number"] for e in body["value"]] == ["1001", "O'HARA"]
    journals = api.get(f"{company_path(made)}/journals", params={"$filter": "code eq 'UTLEGG'"})
    assert [j["id"] for j in journals.json()["value"]] == [made.journal_id]


# -- journal lines ------------------------------------------------------------------------------
def test_a_journal_line_is_created_with_codes_in_capitals_and_exact_amount(
    api: httpx.Client, made: Provisioned
) -> None:
    response = post_json(api, lines_path(made), line("ih0abc", Decimal("1234567.89")))
    assert response.status_code == 201
    created = exact(response)
    assert created["externalDocumentNumber"] == "IH0ABC" and created["documentNumber"] == "IH0ABC"
    assert created["amount"] == Decimal("1234567.89") and created["lineNumber"] == 10000
    assert created["journalDisplayName"] == "UTLEGG" and created["journalId"] == made.journal_id
    assert b'"amount":1234567.89' in response.content
    assert made.company.journal_lines()[0]["amount"] == Decimal("1234567.89")


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (line("k", account="9999"), "Application_DialogException", "does not match to an Account"),
        (line("k", account="7350"), "Application_DialogException", "Blocked must be equal"),
        (line("k", account="2400"), "Application_DialogException", "Direct Posting"),
        (line("k", account="7000"), "Application_DialogException", "Account Type must be"),
        (
            line("k", account="4242", account_type="Employee"),
            "Internal_RecordNotFound",
            "The Employee does not exist",
        ),
        (
            line("k", account="4242", account_type="Vendor"),
            "Internal_RecordNotFound",
            "The Vendor does not exist",
        ),
        (line("k", amount="250.00"), "BadRequest", "Edm.Decimal"),
        (line("k", amount=Decimal("1.001")), "Application_DialogException", "decimals"),
        (line("k", postingDate="2026-02-30"), "BadRequest", "Edm.Date"),
        (line("k", documentNumber="D" * 21), "Application_StringExceededLength", "equal to 20"),
        (line("k", description="x" * 101), "Application_StringExceededLength", "100"),
        (line("k", accountType="Employe"), "BadRequest", "is not an option"),
        (line("k", dimension="OSL"), "BadRequest", "'dimension' does not exist"),
    ],
    ids=[
        "unknown-gl",
        "blocked",
        "no-direct-posting",
        "heading",
        "unknown-employee",
        "unknown-vendor",
        "string-amount",
        "fraction-of-ore",
        "bad-date",
        "long-document",
        "long-description",
        "bad-type",
        "unknown-property",
    ],
)
def test_invalid_lines_are_400_with_odata_errors(
    api: httpx.Client, made: Provisioned, body: dict[str, Any], code: str, words: str
) -> None:
    response = post_json(api, lines_path(made), body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]
    assert made.company.journal_lines() == []


def test_employee_lines_are_created_but_not_listed(api: httpx.Client, made: Provisioned) -> None:
    for body in claim("ih1"):
        assert post_json(api, lines_path(made), body).status_code == 201
    listed = api.get(lines_path(made)).json()["value"]
    assert [x["accountType"] for x in listed] == ["G/L Account"]
    assert len(made.company.journal_lines()) == 2
    flt = {"$filter": "externalDocumentNumber eq 'IH1'", "$select": "id,externalDocumentNumber"}
    found = api.get(lines_path(made), params=flt).json()["value"]
    assert found == [{"id": listed[0]["id"], "externalDocumentNumber": "IH1"}]


# -- $metadata ----------------------------------------------------------------------------------
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"


def _journal_line_type(api: httpx.Client) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The journalLine properties (name -> attributes) and the accountType enum's member
    names, read from ``$metadata`` with the standard library alone."""
    response = api.get("/$metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    root = ElementTree.fromstring(response.content)
    entity = next(e for e in root.iter(f"{EDM}EntityType") if e.get("Name") == "journalLine")
    properties = {p.get("Name", ""): dict(p.attrib) for p in entity.iter(f"{EDM}Property")}
    enum = next(root.iter(f"{EDM}EnumType"))
    return properties, [m.get("Name", "") for m in enum.iter(f"{EDM}Member")]


def test_metadata_describes_the_journal_line_microsoft_documents(
    api: httpx.Client, made: Provisioned
) -> None:
    properties, members = _journal_line_type(api)
    assert properties["externalDocumentNumber"] == {
        "Name": "externalDocumentNumber",
        "Type": "Edm.String",
        "MaxLength": "35",
    }
    assert properties["postingDate"]["Type"] == "Edm.Date"
    assert properties["accountType"]["Type"] == "Microsoft.NAV.genJournalAccountType"
    assert {"journalId", "taxCode", "balancingAccountNumber"} <= set(properties)  # v2.0 only
    assert members[0] == "G_x002F_L_x0020_Account" and "Employee" in members


def test_a_changed_schema_is_described_and_enforced(api: httpx.Client, made: Provisioned) -> None:
    made.tenant.change_schema(
        drop=["externalDocumentNumber"], types={"amount": "Edm.String"}, drop_members=["Employee"]
    )
    properties, members = _journal_line_type(api)
    assert "externalDocumentNumber" not in properties and "Employee" not in members
    assert properties["amount"]["Type"] == "Edm.String"
    refused = post_json(api, lines_path(made), line("k"))
    assert "'externalDocumentNumber' does not exist" in refused.json()["error"]["message"]
    body = {k: v for k, v in line("k").items() if k != "externalDocumentNumber"}
    assert "Edm.String" in post_json(api, lines_path(made), body).json()["error"]["message"]
    body["amount"] = "250.00"
    assert post_json(api, lines_path(made), body).status_code == 201
    employee = {**body, "accountType": "Employee", "accountNumber": "1001"}
    assert "is not an option" in post_json(api, lines_path(made), employee).text
    made.tenant.change_schema()  # back to the default
    assert "externalDocumentNumber" in _journal_line_type(api)[0]


# -- $batch -------------------------------------------------------------------------------------
def test_batch_creates_every_line_and_answers_per_operation(
    api: httpx.Client, made: Provisioned
) -> None:
    bodies = claim("a") + claim("b", "99.90")
    response = post_json(api, "/$batch", batch(made, bodies), Isolation="snapshot")
    assert response.status_code == 200
    answers = response.json()["responses"]
    assert [(a["id"], a["status"]) for a in answers] == [(str(n), 201) for n in range(1, 5)]
    assert answers[0]["body"]["id"] and made.tenant.batches == 1
    assert sum((x["amount"] for x in made.company.journal_lines()), Decimal(0)) == 0


def test_batch_of_more_than_100_operations_is_refused(api: httpx.Client, made: Provisioned) -> None:
    response = post_json(api, "/$batch", batch(made, [line(f"k{n}") for n in range(101)]))
    assert response.status_code == 400 and "at most 100" in response.json()["error"]["message"]
    assert made.company.journal_lines() == []


def test_batch_stops_at_the_first_failure_by_default(api: httpx.Client, made: Provisioned) -> None:
    bodies = claim("a") + claim("b", employee="4242") + claim("c")
    answers = post_json(api, "/$batch", batch(made, bodies)).json()["responses"]
    assert [a["status"] for a in answers] == [201, 201, 201, 400]
    assert len(made.company.journal_lines()) == 3  # half of claim b is left behind


def test_continue_on_error_processes_every_operation(api: httpx.Client, made: Provisioned) -> None:
    bodies = claim("a") + claim("b", employee="4242") + claim("c")
    response = post_json(api, "/$batch", batch(made, bodies), Prefer="odata.continue-on-error")
    assert [a["status"] for a in response.json()["responses"]] == [201, 201, 201, 400, 201, 201]
    assert len(made.company.journal_lines()) == 5


def test_snapshot_isolation_rolls_the_whole_batch_back(
    api: httpx.Client, made: Provisioned
) -> None:
    bodies = claim("a") + claim("b", employee="4242") + claim("c")
    response = post_json(api, "/$batch", batch(made, bodies), Isolation="snapshot")
    answers = response.json()["responses"]
    assert [a["status"] for a in answers] == [201, 201, 201, 400]
    assert answers[-1]["body"]["error"]["code"] == "Internal_RecordNotFound"
    assert made.company.journal_lines() == []


def test_batch_answers_carry_the_ids_microsofts_example_shows(
    api: httpx.Client, made: Provisioned
) -> None:
    """Named ids are echoed; an operation without one is answered ``"id": null`` (Microsoft's
    transactional batch example sends none); a tenant can answer null throughout."""
    payload = batch(made, claim("a") + claim("b"))
    del payload["requests"][1]["id"]
    answers = post_json(api, "/$batch", payload, Isolation="snapshot").json()["responses"]
    assert [a["id"] for a in answers] == ["1", None, "3", "4"]
    assert answers[0]["headers"]["odata-version"] == "4.0"
    made.tenant.null_batch_ids = True
    answers = post_json(api, "/$batch", batch(made, claim("c"))).json()["responses"]
    assert [(a["id"], a["status"]) for a in answers] == [(None, 201), (None, 201)]


def test_atomicity_groups_are_not_supported(api: httpx.Client, made: Provisioned) -> None:
    payload = batch(made, claim("a"))
    payload["requests"][0]["atomicityGroup"] = "g1"
    response = post_json(api, "/$batch", payload)
    assert response.status_code == 400 and made.company.journal_lines() == []


# -- posting ------------------------------------------------------------------------------------
def test_posting_turns_lines_into_gl_entries(api: httpx.Client, made: Provisioned) -> None:
    post_json(api, "/$batch", batch(made, claim("ih-post")), Isolation="snapshot")
    response = api.post(f"{company_path(made)}/journals({made.journal_id})/Microsoft.NAV.post")
    assert response.status_code == 204
    assert made.company.journal_lines() == []
    flt = {"$filter": "documentNumber eq 'IH-POST'"}
    entries = exact(api.get(f"{company_path(made)}/generalLedgerEntries", params=flt))["value"]
    assert [(e["accountNumber"], e["debitAmount"], e["creditAmount"]) for e in entries] == [
        ("7140", Decimal("250.00"), Decimal("0.00")),
        ("2910", Decimal("0.00"), Decimal("250.00")),  # the employee's payables account
    ]


def test_a_posting_no_series_renumbers_and_descriptions_still_find_the_entries(
    api: httpx.Client, made: Provisioned
) -> None:
    journal = made.company.add_journal("RENUMBER", posting_no_series="gjp")
    assert "posting" not in json.dumps(journal).lower()  # the API cannot show it
    bodies = claim("ih-a") + claim("ih-b")
    payload = batch(SimpleNamespace(company_id=made.company_id, journal_id=journal["id"]), bodies)
    post_json(api, "/$batch", payload, Isolation="snapshot")
    made.company.post_journal(journal["id"])
    entries = made.company.gl_entries
    assert [e["documentNumber"] for e in entries] == ["GJP00001"] * 2 + ["GJP00002"] * 2
    url = f"{company_path(made)}/generalLedgerEntries"
    by_number = api.get(url, params={"$filter": "documentNumber eq 'IH-A'"}).json()["value"]
    assert by_number == []
    flt = "endswith(description,'ih-b') or endswith(description, 'nothing')"
    found = api.get(url, params={"$filter": flt, "$select": "entryNumber,description"})
    assert [e["entryNumber"] for e in found.json()["value"]] == [3, 4]


def test_or_joins_filters_on_one_field_only(api: httpx.Client, made: Provisioned) -> None:
    """Microsoft's filter page: "you can't use OR operators to apply filters on two different
    fields"."""
    flt = "documentNumber eq 'A' or endswith(description,'A')"
    response = api.get(f"{company_path(made)}/generalLedgerEntries", params={"$filter": flt})
    assert response.status_code == 400 and "same field" in response.json()["error"]["message"]


def test_an_unbalanced_journal_is_not_posted(api: httpx.Client, made: Provisioned) -> None:
    post_json(api, lines_path(made), line("half"))
    response = api.post(f"{company_path(made)}/journals({made.journal_id})/Microsoft.NAV.post")
    assert response.status_code == 400 and "out of balance" in response.json()["error"]["message"]
    assert len(made.company.journal_lines()) == 1 and made.company.gl_entries == []


# -- faults -------------------------------------------------------------------------------------
def test_5xx_and_throttle_commit_nothing(api: httpx.Client, made: Provisioned) -> None:
    made.tenant.set_faults(fail_5xx=1, throttle=1, retry_after_s=9)
    first = post_json(api, "/$batch", batch(made, claim("a")))
    second = post_json(api, "/$batch", batch(made, claim("a")))
    assert first.status_code == 503 and first.json()["error"]["code"] == "ServiceUnavailable"
    assert second.status_code == 429 and second.headers["Retry-After"] == "9"
    assert second.json()["error"]["code"] == "Application_TooManyRequests"
    assert made.company.journal_lines() == [] and made.tenant.batches == 0
    assert post_json(api, "/$batch", batch(made, claim("a"))).status_code == 200


def test_a_real_per_second_limit(api: httpx.Client, made: Provisioned) -> None:
    made.tenant.set_faults(requests_per_second=2)
    codes = [api.get(company_path(made)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_dropped_connection_commits_nothing(api: httpx.Client, made: Provisioned) -> None:
    made.tenant.set_faults(drop_connection=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post_json(api, "/$batch", batch(made, claim("a")))
    assert made.company.journal_lines() == []


def test_commit_then_timeout_and_commit_then_drop(url: str, made: Provisioned) -> None:
    made.tenant.set_faults(commit_then_timeout=1, commit_then_drop=1, hang_seconds=10)
    token = get_token(url, made).json()["access_token"]
    root = f"{url}/v2.0/{made.tenant_id}/{made.environment}/api/v2.0"
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    with (
        httpx.Client(base_url=root, headers=headers, timeout=httpx.Timeout(5.0, read=0.3)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        post_json(c, "/$batch", batch(made, claim("a")))
    assert time.monotonic() - started < 3
    assert len(made.company.journal_lines()) == 2  # committed nonetheless
    with httpx.Client(base_url=root, headers=headers) as c:
        assert c.get(company_path(made)).status_code == 200  # reads do not use up the fault
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            post_json(c, "/$batch", batch(made, claim("b")))
    assert len(made.company.journal_lines()) == 4


def test_hang_and_latency(api: httpx.Client, made: Provisioned) -> None:
    made.tenant.set_faults(hang=1, hang_seconds=10, latency_ms=150)
    with pytest.raises(httpx.ReadTimeout):
        api.get(company_path(made), timeout=httpx.Timeout(5.0, read=0.4))
    started = time.monotonic()
    assert api.get(company_path(made)).status_code == 200
    assert time.monotonic() - started >= 0.15


# -- control endpoints ----------------------------------------------------------------------------
def test_control_endpoints() -> None:
    state = DynamicsSandboxState()
    with (
        start_server(create_dynamics_app(state)) as server,
        httpx.Client(base_url=f"{server.url}/_sandbox") as control,
    ):
        created = control.post("/provision", json={"company_name": "HLF", "employees": []})
        assert created.status_code == 201
        made = created.json()
        assert made["journal_code"] == "UTLEGG" and made["client_secret"]
        assert control.post("/provision", json={"nope": 1}).status_code == 400
        tenant = made["tenant_id"]
        company = (
            f"/tenants/{tenant}/environments/{made['environment']}/companies/{made['company_id']}"
        )
        assert control.post(f"{company}/employees", json=[{"number": "7"}]).json() == {
            "employees": 1
        }
        faults = control.post(f"/tenants/{tenant}/faults", json={"fail_5xx": 1})
        assert faults.status_code == 200 and faults.json()["fail_5xx"] == 1
        assert control.post(f"/tenants/{tenant}/faults", json={"boom": 1}).status_code == 400
        options = {"null_batch_ids": True, "schema": {"drop": ["comment"]}}
        changed = control.post(f"/tenants/{tenant}/options", json=options).json()
        assert changed["null_batch_ids"] is True and "comment" not in changed["properties"]
        bad = {"schema": {"drop": ["nope"]}}
        assert control.post(f"/tenants/{tenant}/options", json=bad).status_code == 400
        assert control.post("/tenants/unknown/faults", json={}).status_code == 404

        form = {
            "grant_type": "client_credentials",
            "client_id": made["client_id"],
            "client_secret": made["client_secret"],
            "scope": SCOPE,
        }
        token = httpx.post(f"{server.url}/{tenant}/oauth2/v2.0/token", data=form).json()
        root = f"{server.url}/v2.0/{tenant}/production/api/v2.0"
        with httpx.Client(
            base_url=root, headers={"Authorization": f"Bearer {token['access_token']}"}
        ) as client:
            payload = batch(SimpleNamespace(**made), claim("x", employee="7"))
            assert post_json(client, "/$batch", payload).status_code == 503
            assert post_json(client, "/$batch", payload).status_code == 200
        stats = control.get(f"/tenants/{tenant}/stats").json()
        assert stats["requests"] == 2 and stats["batches"] == 1 and stats["token_requests"] == 1
        ledger = control.get(f"{company}/ledger").json()
        assert [x["amount"] for x in ledger["journalLines"]] == [250.0, -250.0]
        posted = control.post(f"{company}/journals/{made['journal_id']}/post")
        assert posted.json() == {"posted": True, "entries": 2}
        assert control.post(f"/tenants/{tenant}/revoke-tokens").json() == {"revoked": 1}
        assert control.post("/reset").status_code == 200
        assert control.get(f"/tenants/{tenant}/stats").status_code == 404
    assert state.tenant_ids == []
