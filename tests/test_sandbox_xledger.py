"""The Xledger sandbox over real HTTP: auth, paging, errors, vouchers, the staged import,
introspection, schema changes, faults, control endpoints.

One server serves the whole module (starting one costs a few hundred milliseconds); every test
resets its state and creates the companies it needs.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from integration_hub.sandbox.server import RunningServer, start_server
from integration_hub.sandbox.xledger import (
    DOCUMENTED_CODES,
    Company,
    XledgerSandboxState,
    create_xledger_app,
    default_accounts,
)
from integration_hub.sandbox.xledger_schema import (
    CREATE_METADATA,
    SchemaChanges,
    build_xledger_schema,
    metadata_fields,
)

TOKEN = "tok-volunteers"
EMPLOYEES = [
    {"dbId": 501, "code": "E100", "description": "Kari Nordmann", "email": "kari@example.org"},
    {"dbId": 502, "code": "E101", "description": "Ola Nordmann", "email": "ola@example.org"},
]

ACCOUNTS_QUERY = """
query Accounts($first: Int, $after: String) {
  accounts(first: $first, after: $after) {
    edges { cursor node { dbId code description posting } }
    pageInfo { hasNextPage hasPreviousPage }
  }
}"""

EMPLOYEES_QUERY = """
query { employees { edges { node { dbId code description email } } pageInfo { hasNextPage } } }
"""

LOOKUP_QUERY = """
query Lookup($first: Int, $after: String, $key: String) {
  glImportItems(first: $first, after: $after, filter: {extIdentifier: $key}) {
    edges { cursor node { dbId extIdentifier amount trRegNumber account { code }
      subledger { code } transactionSource { code } jobLevel { dbSubId } } }
    pageInfo { hasNextPage }
  }
}"""

ERRORS_QUERY = """
query Errors($since: DateTime, $item: Int) {
  glImportItemErrors(first: 100, filter: {createdAt_gte: $since, transactionDbId: $item}) {
    edges { cursor node { dbId createdAt transactionDbId message errorLevel { code name } } }
    pageInfo { hasNextPage }
  }
}"""

JOURNAL_QUERY = """
query Journal($key: String) {
  journalEntries(first: 100, filter: {extIdentifier: $key}) {
    edges { cursor node { dbId extIdentifier amount postedDate account { dbId }
      transactionHeader { transactionNumber importedAt transactionSource { code } } } }
    pageInfo { hasNextPage }
  }
}"""

ADD_MUTATION = """
mutation Add($inputs: [AddGLImportItemsInput!]!) {
  addGLImportItems(inputs: $inputs) {
    edges { clientId node { dbId extIdentifier amount postedDate text trRegNumber
      account { code } } }
  }
}"""


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[XledgerSandboxState, RunningServer]]:
    state = XledgerSandboxState()
    with start_server(create_xledger_app(state)) as server:
        yield state, server


@pytest.fixture
def state(sandbox: tuple[XledgerSandboxState, RunningServer]) -> XledgerSandboxState:
    sandbox[0].reset()
    return sandbox[0]


@pytest.fixture
def url(sandbox: tuple[XledgerSandboxState, RunningServer]) -> str:
    return sandbox[1].url


@pytest.fixture
def company(state: XledgerSandboxState) -> Company:
    return state.add_company(TOKEN, employees=EMPLOYEES)


@pytest.fixture
def client(url: str, company: Company) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"token {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=5.0) as c:
        yield c


def gql(client: httpx.Client, query: str, variables: dict[str, Any] | None = None) -> Any:
    """POST a GraphQL request; asserts HTTP 200 and returns the JSON body."""
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


_numbers: dict[str, int] = {}


def voucher(
    key: str,
    amount: str = "250.00",
    expense: str = "7140",
    payable: str = "2910",
    employee: str | None = "E100",
    posted: str = "2024-03-15",
    number: str | None = None,
) -> list[dict[str, Any]]:
    """An expense claim as Xledger's example sends a voucher: voucher type GL, a voucher number
    shared by its lines, jobLevel 1; expense debit + the volunteer's payable credit."""
    number = number or str(_numbers.setdefault(key, 1000 + len(_numbers)))
    debit = {
        "transactionSource": {"code": "GL"},
        "trRegNumber": number,
        "jobLevel": {"dbSubId": 1},
        "postedDate": posted,
        "account": {"code": expense},
        "amount": amount,
        "text": f"Claim {key}",
        "extIdentifier": key,
        "invoiceNumber": f"INV-{key}",
    }
    credit = {**debit, "account": {"code": payable}, "amount": str(-Decimal(amount))}
    if employee is not None:
        credit["subledger"] = {"code": employee}
    return [{"clientId": f"{key}:1", "node": debit}, {"clientId": f"{key}:2", "node": credit}]


def add(client: httpx.Client, inputs: list[dict[str, Any]]) -> Any:
    return gql(client, ADD_MUTATION, {"inputs": inputs})


def errors_by_client_id(body: Any) -> dict[str, dict[str, Any]]:
    return {e["clientId"]: e for e in body.get("errors", [])}


def import_errors(client: httpx.Client, **variables: Any) -> list[dict[str, Any]]:
    connection = gql(client, ERRORS_QUERY, variables)["data"]["glImportItemErrors"]
    return [e["node"] for e in connection["edges"]]


def assert_documented_shape(body: Any) -> None:
    """Errors carry a message, and a code only when Xledger documents it."""
    for error in body["errors"]:
        assert error["message"]
        assert set(error) <= {"message", "code", "locations", "path", "clientId"}
        assert error.get("code", DOCUMENTED_CODES[0]) in DOCUMENTED_CODES


# -- runner ---------------------------------------------------------------------------------


def test_start_server_binds_a_free_port_and_stops_cleanly() -> None:
    state = XledgerSandboxState()
    state.add_company("t")
    with start_server(create_xledger_app(state)) as one, start_server(create_xledger_app()) as two:
        assert one.port != 0 and one.port != two.port
        assert one.url == f"http://127.0.0.1:{one.port}"
        response = httpx.post(
            f"{one.url}/graphql",
            json={"query": "{ accounts(first: 1) { edges { node { code } } } }"},
            headers={"Authorization": "token t"},
        )
        assert response.json()["data"]["accounts"]["edges"][0]["node"]["code"] == "1500"
    assert not one.running
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{one.url}/graphql", json={}, timeout=1.0)


def test_stop_does_not_wait_for_a_deliberate_hang() -> None:
    state = XledgerSandboxState()
    company = state.add_company("t")
    company.set_faults(commit_then_timeout=1, hang_seconds=30)
    server = start_server(create_xledger_app(state))
    failures: list[BaseException] = []

    def post() -> None:
        try:
            httpx.post(
                f"{server.url}/graphql",
                json={"query": ADD_MUTATION, "variables": {"inputs": voucher("c", employee=None)}},
                headers={"Authorization": "token t"},
                timeout=10.0,
            )
        except httpx.HTTPError as error:
            failures.append(error)

    caller = threading.Thread(target=post)
    caller.start()
    deadline = time.monotonic() + 5
    while company.mutations == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.5
    caller.join(5)
    assert [type(f) for f in failures] == [httpx.RemoteProtocolError]  # outcome unknown
    assert len(company.ledger) == 2  # but committed


SERVE_SCRIPT = """
from integration_hub.sandbox.server import serve_forever
from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app
state = XledgerSandboxState()
state.add_company("t")
serve_forever(create_xledger_app(state), "127.0.0.1", 0, on_ready=lambda u: print(u, flush=True))
print("stopped", flush=True)
"""


def test_serve_forever_serves_until_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = httpx.post(
            f"{url}/graphql",
            json={"query": "{ accounts(first: 1) { edges { node { code } } } }"},
            headers={"Authorization": "token t"},
            timeout=5.0,
        )
        assert response.status_code == 200 and "1500" in response.text
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.strip() == "stopped"
    assert "Traceback" not in err


# -- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, f"Bearer {TOKEN}", "token wrong-token", "token", f"Basic {TOKEN}"],
)
def test_missing_or_unknown_token_is_401(url: str, company: Company, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = httpx.post(f"{url}/graphql", json={"query": ACCOUNTS_QUERY}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Invalid or missing API token"}]}
    assert company.requests == 0


def test_graphql_requires_post(client: httpx.Client) -> None:
    assert client.get("/graphql").status_code == 405


# -- reading: accounts, employees, paging ---------------------------------------------------


def test_default_chart_has_the_ns4102_accounts_the_hub_maps_to(client: httpx.Client) -> None:
    body = gql(client, ACCOUNTS_QUERY, {"first": 1000})
    nodes = {e["node"]["code"]: e["node"] for e in body["data"]["accounts"]["edges"]}
    for code in ["1920", "2400", "2910", "2930", "6540", "6800", "6860", "7100", "7130"]:
        assert nodes[code]["posting"] is True
    for code in ["7140", "7150", "7160", "7350", "7770", "7790", "3000"]:
        assert nodes[code]["posting"] is True
    assert nodes["2910"]["description"] == "Gjeld til ansatte"
    assert nodes["2400"]["description"] == "Leverandørgjeld"
    assert nodes["19"]["posting"] is False  # a group heading
    assert len({n["dbId"] for n in nodes.values()}) == len(nodes)


def test_accounts_page_by_each_edge_cursor_in_code_order(
    client: httpx.Client, company: Company
) -> None:
    codes: list[str] = []
    after = None
    pages = 0
    while True:
        connection = gql(client, ACCOUNTS_QUERY, {"first": 4, "after": after})["data"]["accounts"]
        pages += 1
        assert len(connection["edges"]) <= 4
        assert connection["pageInfo"]["hasPreviousPage"] is (after is not None)
        codes += [e["node"]["code"] for e in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["edges"][-1]["cursor"]
    expected = [a["code"] for a in company.accounts]
    assert codes == sorted(expected) == expected
    assert pages == -(-len(expected) // 4)
    assert company.requests == pages


def test_page_info_has_only_what_the_public_templates_ask_for(client: httpx.Client) -> None:
    """No ``endCursor``: a client that pages by it fails here as it may at Xledger."""
    body = gql(client, "{ accounts(first: 1) { pageInfo { hasNextPage endCursor } } }")
    assert "data" not in body and "endCursor" in body["errors"][0]["message"]


def test_default_page_size_is_100(client: httpx.Client, company: Company) -> None:
    company.set_accounts([{"code": f"{4000 + n}", "description": f"A{n}"} for n in range(150)])
    first = gql(client, ACCOUNTS_QUERY)["data"]["accounts"]
    assert len(first["edges"]) == 100 and first["pageInfo"]["hasNextPage"] is True
    rest = gql(client, ACCOUNTS_QUERY, {"after": first["edges"][-1]["cursor"]})
    assert rest["data"]["accounts"]["edges"][0]["node"]["code"] == "4100"
    assert rest["data"]["accounts"]["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize(
    "variables",
    [
        {"first": 1001},
        {"first": -1},
        {"after": "not-a-cursor"},
        {"after": "WyJlbXBsb3llZXMiLCJFMSJd"},
    ],
    ids=["too-many", "negative", "garbage-cursor", "cursor-of-other-connection"],
)
def test_bad_paging_arguments_are_errors_without_a_code(
    client: httpx.Client, variables: dict[str, Any]
) -> None:
    body = gql(client, ACCOUNTS_QUERY, variables)
    assert body["data"] is None
    assert_documented_shape(body)
    assert "code" not in body["errors"][0]
    assert body["errors"][0]["path"] == ["accounts"]


def test_employees_are_listed_and_can_be_added(client: httpx.Client, url: str) -> None:
    nodes = [e["node"] for e in gql(client, EMPLOYEES_QUERY)["data"]["employees"]["edges"]]
    assert nodes == EMPLOYEES
    response = httpx.post(
        f"{url}/_sandbox/companies/{TOKEN}/employees",
        json=[{"code": "E099", "description": "Per Hansen", "email": "per@example.org"}],
    )
    assert response.status_code == 200 and response.json() == {"employees": 3}
    nodes = [e["node"] for e in gql(client, EMPLOYEES_QUERY)["data"]["employees"]["edges"]]
    assert [n["code"] for n in nodes] == ["E099", "E100", "E101"]
    assert nodes[0]["dbId"] not in {501, 502}


# -- malformed requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ accounts(first: 1) { edges { node { code } }", None),
        ("{ accounts { edges { node { code iban } } } }", None),
        ('{ accounts(first: "ten") { edges { node { code } } } }', None),
        ("{ ledgerEntries { dbId } }", None),
        (ACCOUNTS_QUERY, {"first": "ten"}),
        (ADD_MUTATION, {"inputs": [{"clientId": "x", "node": {"amount": "1", "iban": "NO93"}}]}),
        (LOOKUP_QUERY.replace("extIdentifier:", "extIdentifier_in:"), {"key": "k"}),
    ],
    ids=[
        "syntax",
        "unknown-field",
        "wrong-arg-type",
        "unknown-root",
        "bad-var",
        "input-field-xledger-lacks",
        "invented-filter",
    ],
)
def test_malformed_graphql_is_refused_before_anything_runs(
    client: httpx.Client, company: Company, query: str, variables: dict[str, Any] | None
) -> None:
    """As the GraphQL spec has it: no ``data`` at all, and (no code documented) no code."""
    body = gql(client, query, variables)
    assert "data" not in body and body["errors"]
    assert_documented_shape(body)
    assert all("code" not in e for e in body["errors"])
    assert company.ledger == [] and company.mutations == 0


def test_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    response = client.post("/graphql", content=b"query { accounts }")
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "The request body is not JSON"}]}


# -- the generated input type and introspection -------------------------------------------


def test_the_input_type_is_generated_from_every_introspected_field() -> None:
    """Each metadata field (``a_b`` = nested ``a { b }``) and nothing else, with its type."""
    schema = build_xledger_schema()
    node_type = schema.type_map["AddGLImportItemsInput"].fields["node"].type
    found: dict[str, str] = {}

    def walk(input_type: Any, prefix: str) -> None:
        for name, field in input_type.fields.items():
            inner = field.type
            if hasattr(inner, "fields"):
                walk(inner, f"{prefix}{name}_")
            else:
                found[f"{prefix}{name}"] = str(inner)

    walk(node_type, "")
    scalars = {"int": "Int", "string": "String", "float": "Float", "boolean": "Boolean"}
    expected = {n: scalars.get(t, "DateTime") for n, t in metadata_fields(CREATE_METADATA)}
    assert found == expected
    assert set(schema.type_map["AddGLImportItemsInput"].fields) == {"clientId", "node"}


def test_introspection_serves_the_input_type(client: httpx.Client) -> None:
    query = (
        '{ __type(name: "AddGLImportItemsInputNode") { kind inputFields { name '
        "type { kind name inputFields { name type { kind name } } } } } }"
    )
    introspected = gql(client, query)["data"]["__type"]
    assert introspected["kind"] == "INPUT_OBJECT"
    fields = {f["name"]: f["type"] for f in introspected["inputFields"]}
    assert fields["trRegNumber"] == {"kind": "SCALAR", "name": "String", "inputFields": None}
    source = {f["name"] for f in fields["transactionSource"]["inputFields"]}
    assert source == {"dbId", "code", "description"}


def test_a_company_can_have_a_changed_schema(url: str, state: XledgerSandboxState) -> None:
    changes = SchemaChanges(drop=("trRegNumber",), rename={"extIdentifier": "externalId"})
    state.add_company("tok-drift", schema_changes=changes)
    state.add_company("tok-plain")
    query = '{ __type(name: "AddGLImportItemsInputNode") { inputFields { name } } }'
    names = {}
    for token in ("tok-drift", "tok-plain"):
        with httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}) as c:
            fields = gql(c, query)["data"]["__type"]["inputFields"]
            names[token] = {f["name"] for f in fields}
    assert names["tok-plain"] - names["tok-drift"] == {"trRegNumber", "extIdentifier"}
    assert names["tok-drift"] - names["tok-plain"] == {"externalId"}
    with httpx.Client(base_url=url, headers={"Authorization": "token tok-drift"}) as c:
        body = add(c, voucher("v"))
    assert "data" not in body and "trRegNumber" in body["errors"][0]["message"]


# -- addGLImportItems: vouchers refused at once -------------------------------------------


def test_balanced_vouchers_are_staged_and_imported(client: httpx.Client, company: Company) -> None:
    inputs = voucher("claim-1", "250") + voucher("claim-2", "99.90", expense="7150")
    body = add(client, inputs)
    assert "errors" not in body
    edges = body["data"]["addGLImportItems"]["edges"]
    assert [e["clientId"] for e in edges] == ["claim-1:1", "claim-1:2", "claim-2:1", "claim-2:2"]
    db_ids = [e["node"]["dbId"] for e in edges]
    assert db_ids == sorted(db_ids) and len(set(db_ids)) == 4
    assert edges[0]["node"]["amount"] == "250.00"
    assert edges[1]["node"]["amount"] == "-250.00"
    assert edges[2]["node"]["account"] == {"code": "7150"}
    assert edges[0]["node"]["trRegNumber"] == edges[1]["node"]["trRegNumber"]
    assert company.requests == 1 and company.mutations == 1
    ledger = company.ledger
    assert [i["dbId"] for i in ledger] == db_ids
    credit = ledger[1]
    assert credit["clientId"] == "claim-1:2"
    assert credit["extIdentifier"] == "claim-1"
    assert credit["account_code"] == "2910"
    assert credit["subledger_code"] == "E100"
    assert credit["transactionSource_code"] == "GL" and credit["jobLevel_dbSubId"] == 1
    assert credit["amount"] == "-250.00"
    assert credit["text"] == "Claim claim-1"
    assert credit["postedDate"] == "2024-03-15"
    assert credit["invoiceNumber"] == "INV-claim-1"
    created = datetime.fromisoformat(credit["createdAt"])
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
    assert sum(Decimal(i["amount"]) for i in ledger) == 0
    assert company.import_errors == [] and len(company.journal) == 4
    assert all(i.get("imported") for i in ledger)


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        ("transactionSource", "a voucher type"),
        ("trRegNumber", "a voucher number"),
    ],
)
def test_a_voucher_without_type_or_number_is_refused(
    client: httpx.Client, company: Company, drop: str, missing: str
) -> None:
    """Every public example sends both, and GL02b makes them mandatory."""
    inputs = voucher("v") + voucher("ok")
    for line in inputs[:2]:
        del line["node"][drop]
    body = add(client, inputs)
    assert_documented_shape(body)
    errors = errors_by_client_id(body)
    assert set(errors) == {"v:1", "v:2"}
    assert missing in errors["v:1"]["message"] and "code" not in errors["v:1"]
    assert errors["v:1"]["path"] == ["addGLImportItems", 0]
    assert [i["extIdentifier"] for i in company.ledger] == ["ok", "ok"]


def test_a_voucher_number_is_digits(client: httpx.Client, company: Company) -> None:
    body = add(client, voucher("v", number="UTL-1"))
    assert "not a voucher number" in errors_by_client_id(body)["v:1"]["message"]
    assert company.ledger == []


def test_lines_are_grouped_by_voucher_number_not_by_ext_identifier(
    client: httpx.Client, company: Company
) -> None:
    split = voucher("same-key")
    split[1]["node"]["trRegNumber"] = "9002"  # one claim's lines in two vouchers
    joined = voucher("a", number="7000")[:1] + voucher("b", number="7000")[1:]
    body = add(client, split + joined)
    errors = errors_by_client_id(body)
    assert set(errors) == {"same-key:1", "same-key:2"}
    assert "does not balance" in errors["same-key:1"]["message"]
    assert [i["clientId"] for i in company.ledger] == ["a:1", "b:2"]  # one voucher, balanced


def test_a_failing_line_rejects_its_whole_voucher_only(
    client: httpx.Client, company: Company
) -> None:
    inputs = voucher("good") + voucher("bad")
    inputs[2]["node"]["amount"] = "1e3"
    body = add(client, inputs)
    edges = body["data"]["addGLImportItems"]["edges"]
    assert [e["clientId"] for e in edges] == ["good:1", "good:2"]
    errors = errors_by_client_id(body)
    assert set(errors) == {"bad:1", "bad:2"}
    assert errors["bad:1"]["message"] == "Amount '1e3' is not a decimal number"
    assert errors["bad:1"]["path"] == ["addGLImportItems", 2]
    assert "line bad:1 failed" in errors["bad:2"]["message"]
    assert_documented_shape(body)
    assert [i["extIdentifier"] for i in company.ledger] == ["good", "good"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(node: dict[str, Any]) -> None:
        node[path] = value

    return change


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_set("account", {}), "Account is required"),
        (_set("amount", "250.001"), "more than 2 decimals"),
        (_set("amount", "0.00"), "must not be zero"),
        (_set("amount", "1e3"), "not a decimal number"),
        (_set("amount", "NaN"), "not a decimal number"),
        (_set("postedDate", "2024-13-01"), "not YYYY-MM-DD"),
        (_set("postedDate", "15.03.2024"), "not YYYY-MM-DD"),
        (_set("postedDate", "20240315"), "not YYYY-MM-DD"),
        (_set("text", "x" * 256), "at most 255"),
    ],
    ids=[
        "no-account",
        "three-decimals",
        "zero",
        "exponent",
        "nan",
        "bad-month",
        "norwegian-date",
        "compact-date",
        "text-256",
    ],
)
def test_line_validation(
    client: httpx.Client,
    company: Company,
    change: Callable[[dict[str, Any]], None],
    words: str,
) -> None:
    inputs = voucher("v")
    change(inputs[0]["node"])
    body = add(client, inputs)
    assert body["data"]["addGLImportItems"]["edges"] == []
    errors = errors_by_client_id(body)
    assert words in errors["v:1"]["message"]
    assert "rejected" in errors["v:2"]["message"]
    assert company.ledger == []


def test_text_of_255_characters_is_accepted(client: httpx.Client, company: Company) -> None:
    inputs = voucher("v")
    inputs[0]["node"]["text"] = "æ" * 255
    assert "errors" not in add(client, inputs)
    assert company.ledger[0]["text"] == "æ" * 255


def test_unbalanced_vouchers_are_refused(client: httpx.Client, company: Company) -> None:
    inputs = voucher("off-by-one-ore")
    inputs[1]["node"]["amount"] = "-249.99"
    lone = {"clientId": "lone", "node": voucher("x", number="4242")[0]["node"]}
    body = add(client, [*inputs, lone])
    errors = errors_by_client_id(body)
    assert set(errors) == {"off-by-one-ore:1", "off-by-one-ore:2", "lone"}
    assert all("does not balance" in e["message"] for e in errors.values())
    assert "0.01" in errors["off-by-one-ore:1"]["message"]
    assert company.ledger == []


def test_lines_of_one_voucher_need_not_be_adjacent(client: httpx.Client, company: Company) -> None:
    a, b = voucher("a"), voucher("b")
    body = add(client, [a[0], b[0], a[1], b[1]])
    assert "errors" not in body
    assert len(company.ledger) == 4


def test_more_than_500_inputs_are_refused_before_anything_runs(
    client: httpx.Client, company: Company
) -> None:
    inputs = [line for n in range(250) for line in voucher(f"c{n}")]
    body = add(client, [*inputs, *voucher("one-too-many")[:1]])
    assert body == {"errors": [{"message": "At most 500 inputs per request; got 501"}]}
    assert company.ledger == [] and company.mutations == 0
    body = add(client, inputs)
    assert "errors" not in body and len(company.ledger) == 500
    assert company.mutations == 1


def test_the_same_voucher_posted_twice_is_duplicated(
    client: httpx.Client, company: Company
) -> None:
    add(client, voucher("claim-7"))
    add(client, voucher("claim-7"))
    assert [i["extIdentifier"] for i in company.ledger] == ["claim-7"] * 4
    assert len({i["dbId"] for i in company.ledger}) == 4
    assert len(company.journal) == 4


# -- the staged import: import errors and the journal ---------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("account", {"code": "9999"}), "Account 9999 does not exist"),
        (_set("account", {"code": "19"}), "Account 19 is not a posting account"),
        (_set("account", {"dbId": 1}), "Account with dbId 1 does not exist"),
        (_set("subledger", {"code": "E999"}), "Employee subledger E999 does not exist"),
        (_set("postedDate", "2023-12-31"), "The period of postedDate 2023-12-31 is closed"),
    ],
    ids=["unknown-account", "non-posting-account", "unknown-dbid", "unknown-employee", "closed"],
)
def test_what_needs_the_company_data_fails_at_import(
    client: httpx.Client, company: Company, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    """Accepted (staged, answered with its items), then not imported: an import error per
    failing line, readable through ``glImportItemErrors``, and no journal entries."""
    company.closed_before = date(2024, 1, 1)
    inputs = voucher("v") + voucher("ok")
    change(inputs[0]["node"])
    body = add(client, inputs)
    assert "errors" not in body
    edges = body["data"]["addGLImportItems"]["edges"]
    assert [e["clientId"] for e in edges] == ["v:1", "v:2", "ok:1", "ok:2"]
    (error,) = import_errors(client)
    assert error["transactionDbId"] == edges[0]["node"]["dbId"]
    assert error["message"].startswith(message)
    assert error["errorLevel"] == {"code": "ERROR", "name": "Error"}
    journal = gql(client, JOURNAL_QUERY)["data"]["journalEntries"]["edges"]
    assert {e["node"]["extIdentifier"] for e in journal} == {"ok"}


def test_import_errors_filter_by_time_and_item(client: httpx.Client, company: Company) -> None:
    add(client, voucher("a", expense="9999"))
    between = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    body = add(client, voucher("b", expense="9998"))
    item = body["data"]["addGLImportItems"]["edges"][0]["node"]["dbId"]
    assert len(import_errors(client)) == 2
    assert [e["message"] for e in import_errors(client, since=between)] == [
        "Account 9998 does not exist"
    ]
    assert [e["transactionDbId"] for e in import_errors(client, item=item)] == [item]


def test_journal_entries_carry_ext_identifier_and_the_voucher(
    client: httpx.Client, company: Company
) -> None:
    add(client, voucher("k1", number="31") + voucher("k2", number="32"))
    edges = gql(client, JOURNAL_QUERY, {"key": "k2"})["data"]["journalEntries"]["edges"]
    assert [e["node"]["amount"] for e in edges] == ["250.00", "-250.00"]
    header = edges[0]["node"]["transactionHeader"]
    assert header["transactionNumber"] == "32" and header["transactionSource"] == {"code": "GL"}
    assert header["importedAt"]


def test_imported_items_can_drop_out_of_gl_import_items(
    client: httpx.Client, url: str, state: XledgerSandboxState
) -> None:
    state.add_company("tok-purge", employees=EMPLOYEES, keep_imported_items=False)
    with httpx.Client(base_url=url, headers={"Authorization": "token tok-purge"}) as c:
        add(c, voucher("gone") + voucher("stays", expense="9999"))
        items = gql(c, LOOKUP_QUERY)["data"]["glImportItems"]["edges"]
        assert {e["node"]["extIdentifier"] for e in items} == {"stays"}
        journal = gql(c, JOURNAL_QUERY, {"key": "gone"})["data"]["journalEntries"]["edges"]
        assert len(journal) == 2


def test_gl_import_items_filter_by_ext_identifier_with_paging(
    client: httpx.Client, company: Company
) -> None:
    add(client, voucher("k1") + voucher("k2") + voucher("k1", number="777"))
    found: list[dict[str, Any]] = []
    after = None
    while True:
        variables = {"first": 3, "after": after, "key": "k1"}
        connection = gql(client, LOOKUP_QUERY, variables)["data"]["glImportItems"]
        found += [e["node"] for e in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["edges"][-1]["cursor"]
    assert [n["extIdentifier"] for n in found] == ["k1"] * 4
    assert [n["dbId"] for n in found] == [1, 2, 5, 6]
    assert found[1]["subledger"] == {"code": "E100"} and found[0]["subledger"] is None
    assert found[0]["account"] == {"code": "7140"}
    assert found[0]["transactionSource"] == {"code": "GL"}
    assert found[0]["jobLevel"] == {"dbSubId": 1}
    none = gql(client, LOOKUP_QUERY, {"key": "nope"})["data"]["glImportItems"]
    assert none == {"edges": [], "pageInfo": {"hasNextPage": False}}
    every = gql(client, LOOKUP_QUERY, {"key": None})["data"]["glImportItems"]["edges"]
    assert len(every) == 6


def test_companies_are_isolated(client: httpx.Client, url: str, state: XledgerSandboxState) -> None:
    other = state.add_company("tok-other", accounts=[{"code": "1000", "description": "Only"}])
    add(client, voucher("mine"))
    headers = {"Authorization": "token tok-other"}
    with httpx.Client(base_url=url, headers=headers) as other_client:
        edges = gql(other_client, LOOKUP_QUERY, {"key": "mine"})["data"]["glImportItems"]["edges"]
        assert edges == []
        add(other_client, voucher("theirs"))
        assert [e["message"] for e in import_errors(other_client)] == [
            "Account 7140 does not exist",
            "Account 2910 does not exist",
        ]
        assert import_errors(client) == []
    assert len(other.ledger) == 2 and len(state.company(TOKEN).ledger) == 2
    assert other.requests == 3 and state.company(TOKEN).requests == 2


# -- faults ---------------------------------------------------------------------------------


def test_fail_5xx_answers_503_and_commits_nothing(client: httpx.Client, company: Company) -> None:
    company.faults.fail_5xx = 2
    for _ in range(2):
        payload = {"query": ADD_MUTATION, "variables": {"inputs": voucher("c")}}
        response = client.post("/graphql", json=payload)
        assert response.status_code == 503
        assert response.json() == {"errors": [{"message": "Service temporarily unavailable"}]}
    assert company.ledger == [] and company.faults.fail_5xx == 0
    assert "errors" not in add(client, voucher("c"))
    assert len(company.ledger) == 2
    assert company.requests == 3 and company.mutations == 1


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        ("burst_limit", "BAD_REQUEST.BURST_RATE_LIMIT_REACHED", "Burst rate limit reached"),
        ("concurrency_limit", "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED", "Concurrency limit reached"),
        ("insufficient_credits", "BAD_REQUEST.INSUFFICIENT_CREDITS", "Insufficient credits"),
    ],
)
def test_limit_faults_answer_200_with_the_documented_code(
    client: httpx.Client, company: Company, fault: str, code: str, message: str
) -> None:
    setattr(company.faults, fault, 1)
    assert add(client, voucher("c")) == {
        "data": None,
        "errors": [{"message": message, "code": code}],
    }
    assert company.ledger == [] and company.mutations == 0
    assert "errors" not in add(client, voucher("c"))
    assert len(company.ledger) == 2


def test_drop_connection_is_a_transport_error_and_commits_nothing(
    client: httpx.Client, company: Company
) -> None:
    company.faults.drop_connection = 1
    records = _capture_uvicorn_errors()
    try:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            add(client, voucher("c"))
    finally:
        logging.getLogger("uvicorn.error").removeHandler(records)
    assert company.ledger == [] and company.faults.drop_connection == 0
    assert records.records == []  # the deliberate drop is not reported as a server bug
    assert "errors" not in add(client, voucher("c"))
    assert len(company.ledger) == 2


def test_commit_then_timeout_commits_and_then_hangs(url: str, company: Company) -> None:
    company.faults.commit_then_timeout = 1
    company.faults.hang_seconds = 10.0
    headers = {"Authorization": f"token {TOKEN}"}
    started = time.monotonic()
    bad = voucher("bad")
    bad[0]["node"]["amount"] = "x"
    with (
        httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(5.0, read=0.3)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        add(c, voucher("c") + bad)
    assert time.monotonic() - started < 3
    assert [i["extIdentifier"] for i in company.ledger] == ["c", "c"]
    with httpx.Client(base_url=url, headers=headers) as c:
        for key, count in (("c", 2), ("bad", 0)):
            edges = gql(c, LOOKUP_QUERY, {"key": key})["data"]["glImportItems"]["edges"]
            assert len(edges) == count
        assert "errors" not in add(c, voucher("d"))  # the fault fired once
    assert len(company.ledger) == 4


def test_commit_then_timeout_answers_a_patient_client(
    client: httpx.Client, company: Company
) -> None:
    company.set_faults(commit_then_timeout=1, hang_seconds=0.3)
    started = time.monotonic()
    body = add(client, voucher("c"))
    assert time.monotonic() - started >= 0.3
    assert len(body["data"]["addGLImportItems"]["edges"]) == 2


def test_commit_faults_wait_for_a_mutation(client: httpx.Client, company: Company) -> None:
    company.faults.commit_then_drop = 1
    assert gql(client, ACCOUNTS_QUERY, {"first": 1})["data"]["accounts"]["edges"]
    assert company.faults.commit_then_drop == 1
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        add(client, voucher("c"))
    assert [i["extIdentifier"] for i in company.ledger] == ["c", "c"]
    assert company.faults.commit_then_drop == 0


def test_latency_delays_every_answer(client: httpx.Client, company: Company) -> None:
    company.faults.latency_ms = 200
    started = time.monotonic()
    gql(client, ACCOUNTS_QUERY, {"first": 1})
    assert time.monotonic() - started >= 0.2


def test_burst_per_second_limits_requests_in_a_one_second_window(
    client: httpx.Client, company: Company
) -> None:
    company.faults.burst_per_second = 2
    codes = []
    for _ in range(3):
        body = gql(client, ACCOUNTS_QUERY, {"first": 1})
        codes.append(body["errors"][0]["code"] if "errors" in body else "ok")
    assert codes == ["ok", "ok", "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"]
    time.sleep(1.05)
    assert "errors" not in gql(client, ACCOUNTS_QUERY, {"first": 1})
    assert company.requests == 4


def _capture_uvicorn_errors() -> logging.Handler:
    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.ERROR)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    handler = Collect()
    logging.getLogger("uvicorn.error").addHandler(handler)
    return handler


# -- control endpoints ----------------------------------------------------------------------


def test_control_endpoints(url: str, state: XledgerSandboxState) -> None:
    with httpx.Client(base_url=f"{url}/_sandbox") as control:
        spec = {
            "token": "tok-http",
            "employees": [{"code": "E1", "description": "Kari"}],
            "closed_before": "2024-01-01",
            "schema_changes": {"require": ["dueDate"]},
            "keep_imported_items": False,
        }
        created = control.post("/companies", json=spec)
        assert created.status_code == 201
        chart_size = len(default_accounts())
        assert created.json() == {"token": "tok-http", "accounts": chart_size, "employees": 1}
        assert control.post("/companies", json=spec).status_code == 409
        assert control.post("/companies", json={"token": ""}).status_code == 400
        bad_changes = {"token": "tok-bad", "schema_changes": {"explode": []}}
        assert control.post("/companies", json=bad_changes).status_code == 400
        made = state.company("tok-http")
        assert made.closed_before == date(2024, 1, 1)
        assert made.schema_changes == SchemaChanges(require=("dueDate",))
        assert made.keep_imported_items is False

        faults = control.post("/companies/tok-http/faults", json={"fail_5xx": 1, "latency_ms": 5})
        assert faults.status_code == 200
        assert faults.json()["fail_5xx"] == 1 and faults.json()["hang_seconds"] == 30.0
        assert control.post("/companies/tok-http/faults", json={"nope": 1}).status_code == 400
        bad = control.post("/companies/tok-http/faults", json={"fail_5xx": -1})
        assert bad.status_code == 400
        assert control.post("/companies/unknown/faults", json={}).status_code == 404

        graphql = httpx.Client(base_url=url, headers={"Authorization": "token tok-http"})
        with graphql:
            assert graphql.post("/graphql", json={"query": ADD_MUTATION}).status_code == 503
            inputs = voucher("h", employee="E1", posted="2024-02-01")
            inputs[1]["node"]["subledger"] = {"code": "E9"}
            for line in inputs:
                line["node"]["dueDate"] = "2024-03-01"
            body = add(graphql, inputs)
            assert "errors" not in body

        ledger = control.get("/companies/tok-http/ledger")
        assert ledger.status_code == 200
        payload = ledger.json()
        assert payload["requests"] == 2 and payload["mutations"] == 1
        assert [i["clientId"] for i in payload["items"]] == ["h:1", "h:2"]
        assert payload["items"][1]["subledger_code"] == "E9"
        assert [e["message"] for e in payload["import_errors"]] == [
            "Employee subledger E9 does not exist"
        ]
        assert payload["journal"] == []

        assert control.post("/reset").status_code == 200
        assert control.get("/companies/tok-http/ledger").status_code == 404
    assert state.tokens == []


def test_in_process_state_api(state: XledgerSandboxState) -> None:
    company = state.add_company(
        "tok-py",
        accounts=[{"code": "1920", "description": "Bank"}, {"code": "2910", "posting": False}],
        closed_before=date(2024, 1, 1),
    )
    assert [a["code"] for a in company.accounts] == ["1920", "2910"]
    assert company.accounts[1]["posting"] is False
    assert state.company("tok-py") is company
    with pytest.raises(KeyError):
        state.company("missing")
    with pytest.raises(ValueError, match="already exists"):
        state.add_company("tok-py")
    with pytest.raises(ValueError, match="unknown fault"):
        company.set_faults(explode=1)
    company.add_employees([{"code": "E5", "description": "Eva"}])
    company.add_employees([{"code": "E5", "description": "Eva Renamed"}])
    assert [e["description"] for e in company.employees] == ["Eva Renamed"]
