"""The Xledger adapter over real HTTP: connection tests, paging, batching, faults, no duplicates,
vouchers as Xledger documents them, the staged import, reconciliation and the schema check."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from factories import claims_frame
from pydantic import SecretStr

from integration_hub.adapters.base import ConnectionStatus, RecordStatus
from integration_hub.adapters.xledger import XledgerAdapter, XledgerConfig, voucher_number
from integration_hub.db import hub_session
from integration_hub.ledger import Ledger
from integration_hub.mappings.resolver import map_claims
from integration_hub.mappings.spec import load_template
from integration_hub.models import Integration
from integration_hub.sandbox.xledger_schema import SchemaChanges
from integration_hub.tasks.load import RetryPolicy, load_lines

REQUIRED = {f.name: f.label for f in XledgerAdapter.target_fields if f.required}
NO_WAIT = RetryPolicy(attempts=4, base_delay_s=0.0, sleep=lambda _s: None)
EMPLOYEES = [{"code": "1001", "description": "Kari Nordmann"}]


@pytest.fixture
def company(xledger_sandbox: Any) -> Iterator[tuple[Any, str]]:
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    yield state.add_company(token, employees=EMPLOYEES), server.url
    # companies are per token; nothing to clean


def _adapter(url: str, token: str, read_timeout: float | None = None) -> XledgerAdapter:
    adapter = XledgerAdapter(XledgerConfig(base_url=f"{url}/graphql", api_token=SecretStr(token)))
    if read_timeout is not None:
        adapter.read_timeout_s = read_timeout  # type: ignore[misc]
    return adapter


def _lines(count: int, first_id: int = 1) -> Any:
    claims = claims_frame(
        [{"claim_id": i, "amount_ore": 10_000 + i} for i in range(first_id, first_id + count)]
    )
    lines, failures = map_claims(
        claims,
        load_template("xledger_expense_claims.yaml"),
        required_fields=REQUIRED,
        text_max_length=255,
        organisation_id=1,
        integration_id=1,
    )
    assert failures.empty
    return lines


@pytest.fixture
def ledger(hub_env: str) -> Ledger:
    with hub_session() as session:
        row = Integration(organisation_id=1, type_key="xledger")
        session.add(row)
        session.flush()
        integration_id = row.id or 0
    return Ledger(
        hub_session, organisation_id=1, integration_id=integration_id, record_type="expense_claim"
    )


# -- connection tests: classified, always within 10 s --------------------------------------------
def test_connection_ok(company: Any) -> None:
    found, url = company
    result = _adapter(url, found.token).check_connection()
    assert result.status is ConnectionStatus.OK
    assert found.token not in result.detail


def test_wrong_token_is_bad_credentials(company: Any) -> None:
    _, url = company
    result = _adapter(url, "not-the-token").check_connection()
    assert result.status is ConnectionStatus.BAD_CREDENTIALS


def test_burst_limit_is_throttled_and_5xx_unexpected(company: Any) -> None:
    found, url = company
    found.set_faults(burst_limit=1)
    assert _adapter(url, found.token).check_connection().status is ConnectionStatus.THROTTLED
    found.set_faults(fail_5xx=1)
    result = _adapter(url, found.token).check_connection()
    assert result.status is ConnectionStatus.UNEXPECTED_RESPONSE


def test_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _adapter(f"http://127.0.0.1:{port}", "x").check_connection()
    assert result.status is ConnectionStatus.UNREACHABLE


class RawServer:
    """A TCP server on 127.0.0.1 that misbehaves on purpose: ``hang`` accepts and never
    answers; ``trickle`` sends a valid header then one byte per second; ``throttle`` answers 429
    with a Retry-After of an hour."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            if self.mode == "throttle":
                conn.sendall(
                    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\n"
                    b"Content-Length: 0\r\n\r\n"
                )
            elif self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                while not self.stop.is_set():
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        return
                    time.sleep(1)
            self.stop.wait(30)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("hang", ConnectionStatus.TIMED_OUT),
        ("trickle", ConnectionStatus.TIMED_OUT),
        ("throttle", ConnectionStatus.THROTTLED),
    ],
)
def test_connection_test_answers_within_ten_seconds(mode: str, expected: ConnectionStatus) -> None:
    server = RawServer(mode)
    try:
        started = time.monotonic()
        result = _adapter(f"http://127.0.0.1:{server.port}", "x").check_connection()
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert result.status is expected
    assert elapsed < 10.5  # the product's promise, not a speed target


# -- reference codes and loading ------------------------------------------------------------------
def test_reference_codes_follow_every_page(company: Any) -> None:
    found, url = company
    chart = [{"code": str(10000 + i), "description": f"Konto {i}"} for i in range(2300)]
    found.set_accounts([*chart, {"code": "2910", "description": "Gjeld", "posting": True}])
    adapter = _adapter(url, found.token)
    codes = adapter.reference_codes()
    assert len(codes) == 2301
    assert adapter.requests_sent == 3  # 1,000 per page


def test_batches_of_500_lines_all_exported_once(company: Any, ledger: Ledger) -> None:
    found, url = company
    adapter = _adapter(url, found.token)
    report = load_lines(adapter, _lines(600), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert Counter(o["status"] for o in report.outcomes) == {"exported": 600}
    # 1,200 lines at 500 per request, plus one question about import errors for the whole run
    assert report.requests == 4
    assert found.mutations == 3
    assert len(found.ledger) == 1200 and len(found.journal) == 1200
    keys = Counter(item["extIdentifier"] for item in found.ledger)
    assert set(keys.values()) == {2}  # two lines per voucher, never a voucher twice


class Clock:
    """The settle time passes when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _two_runs(found: Any, url: str, lines: Any, ledger: Ledger, read_timeout: float | None = None):  # type: ignore[no-untyped-def]
    """A run that meets the fault, then the next run after the settle time: both reports."""
    clock = Clock()
    adapter = _adapter(url, found.token, read_timeout)
    first = load_lines(adapter, lines, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock)
    clock.now += timedelta(seconds=adapter.read_timeout_s + adapter.settle_s)
    second = load_lines(
        _adapter(url, found.token), lines, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock
    )
    return first, second


@pytest.mark.parametrize(
    "fault",
    [
        {"commit_then_timeout": 1, "hang_seconds": 5},
        {"commit_then_drop": 1},
    ],
    ids=["commit-then-timeout", "commit-then-drop"],
)
def test_a_lost_answer_after_commit_waits_then_is_confirmed_once(
    company: Any, ledger: Ledger, fault: dict[str, Any]
) -> None:
    found, url = company
    found.set_faults(**fault)
    first, second = _two_runs(found, url, _lines(10), ledger, read_timeout=1.0)
    assert Counter(o["status"] for o in first.outcomes) == {"waiting": 10}
    assert Counter(o["status"] for o in second.outcomes) == {"exported": 10}
    assert second.reconciled == 10
    assert len(found.ledger) == 20
    assert found.mutations == 1  # confirmed by lookup, never posted again


@pytest.mark.parametrize("fault", [{"drop_connection": 1}, {"fail_5xx": 1}], ids=["dropped", "503"])
def test_no_clear_answer_before_commit_is_sent_again_after_the_settle_time(
    company: Any, ledger: Ledger, fault: dict[str, Any]
) -> None:
    """A 503 or a dropped connection may come after a commit (a gateway in front of the real
    service): never re-sent blindly, looked up first."""
    found, url = company
    found.set_faults(**fault)
    first, second = _two_runs(found, url, _lines(5), ledger)
    assert Counter(o["status"] for o in first.outcomes) == {"waiting": 5}
    assert Counter(o["status"] for o in second.outcomes) == {"exported": 5}
    assert len(found.ledger) == 10


def test_burst_limit_is_retried_in_the_same_run(company: Any, ledger: Ledger) -> None:
    found, url = company
    found.set_faults(burst_limit=1)
    report = load_lines(
        _adapter(url, found.token), _lines(3), ledger=ledger, run_id=None, policy=NO_WAIT
    )
    assert Counter(o["status"] for o in report.outcomes) == {"exported": 3}
    assert len(found.ledger) == 6


def test_an_import_error_fails_its_claim_and_it_is_not_sent_again(
    company: Any, ledger: Ledger
) -> None:
    """Xledger stages what it accepts and imports it afterwards: a claim whose import fails is
    failed with Xledger's words, and as it stays in Xledger's GL import, a later run looks it
    up and asks again instead of staging a second copy."""
    found, url = company
    lines = _lines(3)
    unknown = (lines["record_id"] == 2) & lines["counterparty"].notna()
    lines.loc[unknown, "counterparty"] = "9999"
    clock = Clock()
    report = load_lines(
        _adapter(url, found.token), lines, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock
    )
    failed = [o for o in report.outcomes if o["status"] == "failed"]
    assert [o["record_id"] for o in failed] == [2]
    assert "could not import" in failed[0]["reason"]
    assert "Employee subledger 9999 does not exist" in failed[0]["reason"]
    assert Counter(o["status"] for o in report.outcomes) == {"exported": 2, "failed": 1}
    assert report.requests == 2  # the vouchers, then one question about import errors
    assert len(found.ledger) == 6 and len(found.journal) == 4 and len(found.import_errors) == 1
    assert _ledger_states(ledger) == {"exported": 2, "refused": 1}

    retry = lines[lines["record_id"] == 2]  # what the next run extracts: not exported yet
    clock.now += timedelta(hours=1)
    again = load_lines(
        _adapter(url, found.token), retry, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock
    )
    assert [(o["record_id"], o["status"]) for o in again.outcomes] == [(2, "failed")]
    assert found.mutations == 1  # still in Xledger's GL import: never staged twice

    # Deleted from Xledger's GL import and fixed here: the next run sends it again.
    found.delete_import_items(str(lines.loc[unknown, "idempotency_key"].iloc[0]))
    found.add_employees([{"code": "9999"}])
    clock.now += timedelta(hours=1)
    third = load_lines(
        _adapter(url, found.token), retry, ledger=ledger, run_id=3, policy=NO_WAIT, clock=clock
    )
    assert [(o["record_id"], o["status"]) for o in third.outcomes] == [(2, "exported")]
    assert found.mutations == 2 and len(found.journal) == 6
    assert _ledger_states(ledger) == {"exported": 3}


def test_import_errors_name_their_items_and_other_errors_are_ignored(company: Any) -> None:
    """Only errors about this run's items count; the check is one request per run."""
    found, url = company
    found.set_accounts([*found.accounts, {"code": "7777", "posting": False}])
    adapter = _adapter(url, found.token)
    lines = _lines(2)
    lines.loc[(lines["record_id"] == 1) & (lines["line_no"] == 1), "account"] = "7777"
    result = adapter.load(lines)
    accepted = {r.idempotency_key: r.target_reference or "" for r in result.results}
    assert all(ref.startswith("glImportItem:") and "," in ref for ref in accepted.values())
    before = adapter.requests_sent
    refused = adapter.check_imports(accepted)
    assert adapter.requests_sent - before == 1
    assert [r.idempotency_key for r in refused] == [lines["idempotency_key"].iloc[0]]
    assert "Account 7777 is not a posting account" in (refused[0].reason or "")
    # Another adapter (no createdAt known) asks by the items' dbIds instead.
    other = _adapter(url, found.token)
    assert [r.idempotency_key for r in other.check_imports(accepted)] == [
        refused[0].idempotency_key
    ]


def _ledger_states(ledger: Ledger) -> Counter[str]:
    from integration_hub.models import ExportLedger

    with hub_session() as session:
        rows = session.query(ExportLedger).filter_by(integration_id=ledger.integration_id)
        return Counter(row.state for row in rows)


def test_bad_token_stops_the_run_with_a_reason(company: Any, ledger: Ledger) -> None:
    _, url = company
    report = load_lines(
        _adapter(url, "wrong"), _lines(3), ledger=ledger, run_id=None, policy=NO_WAIT
    )
    assert report.aborted and "token" in report.aborted
    assert Counter(o["status"] for o in report.outcomes) == {"failed": 3}


# -- vouchers as Xledger documents them ------------------------------------------------------------
def _captured_inputs(lines: Any, config: XledgerConfig) -> list[dict[str, Any]]:
    """The inputs ``load`` puts on the wire (a fake Xledger that accepts every line)."""
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["variables"]["inputs"]
        sent.extend(inputs)
        edges = [
            {"clientId": i["clientId"], "node": {"dbId": n, "createdAt": "2026-01-01T00:00:00Z"}}
            for n, i in enumerate(inputs, start=1)
        ]
        return httpx.Response(200, json={"data": {"addGLImportItems": {"edges": edges}}})

    XledgerAdapter(config, transport=httpx.MockTransport(answer)).load(lines)
    return sent


def _walk(value: Any, input_type: Any, path: str) -> list[str]:
    """Every field of ``value`` that ``input_type`` (a graphql-core input type) lacks, or
    whose value it cannot take; recursing into nested input objects."""
    from graphql import GraphQLInputObjectType, GraphQLNonNull, GraphQLScalarType

    problems = []
    for name, inner in value.items():
        field = input_type.fields.get(name)
        if field is None:
            problems.append(f"{path}.{name}: not in the introspected input type")
            continue
        field_type = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
        if isinstance(field_type, GraphQLInputObjectType):
            problems += _walk(inner, field_type, f"{path}.{name}")
        elif not isinstance(field_type, GraphQLScalarType):
            problems.append(f"{path}.{name}: {field_type} is not a scalar")
        elif field_type.name in ("Int", "Float") and not isinstance(inner, int | float):
            problems.append(f"{path}.{name}: {field_type} cannot take {inner!r}")
        elif field_type.name == "String" and not isinstance(inner, str):
            problems.append(f"{path}.{name}: String cannot take {inner!r}")
    return problems


def test_every_field_the_adapter_sends_exists_in_the_introspected_input_type() -> None:
    """The wire inputs, walked through ``AddGLImportItemsInput`` as generated from Xledger's
    introspected metadata.json, and each leaf by its flattened name in that file."""
    from integration_hub.sandbox.xledger_schema import (
        CREATE_METADATA,
        build_xledger_schema,
        metadata_fields,
    )

    lines = _lines(2)
    lines["dimension"] = "OSL"  # every optional field present
    inputs = _captured_inputs(lines, XledgerConfig(api_token=SecretStr("t")))
    generated = build_xledger_schema().type_map["AddGLImportItemsInput"]
    assert [p for i in inputs for p in _walk(i, generated, "input")] == []
    metadata = {name for name, _type in metadata_fields(CREATE_METADATA)}

    def flattened(node: dict[str, Any], prefix: str = "") -> set[str]:
        names: set[str] = set()
        for name, value in node.items():
            full = f"{prefix}{name}"
            names |= flattened(value, f"{full}_") if isinstance(value, dict) else {full}
        return names

    sent = set().union(*(flattened(i["node"]) for i in inputs))
    assert sent <= metadata
    assert {"transactionSource_code", "trRegNumber", "jobLevel_dbSubId", "subledger_code"} <= sent


def test_vouchers_carry_type_number_and_job_level_from_the_settings(company: Any) -> None:
    found, url = company
    config = XledgerConfig(
        base_url=f"{url}/graphql",
        api_token=SecretStr(found.token),
        voucher_type="KR",
        job_level=2,
        voucher_number_start=5000,
    )
    result = XledgerAdapter(config).load(_lines(2))
    assert {r.status for r in result.results} == {RecordStatus.EXPORTED}
    vouchers = {
        (i["transactionSource_code"], i["trRegNumber"], i["jobLevel_dbSubId"]) for i in found.ledger
    }
    assert vouchers == {("KR", 5001, 2), ("KR", 5002, 2)}
    by_claim = Counter((i["extIdentifier"], i["trRegNumber"]) for i in found.ledger)
    assert set(by_claim.values()) == {2}  # a claim's two lines share its voucher number
    headers = {e["transactionHeader"]["transactionNumber"] for e in found.journal}
    assert headers == {"5001", "5002"}


def test_the_voucher_number_is_deterministic_and_a_too_long_one_is_never_sent(
    company: Any,
) -> None:
    found, url = company
    config = XledgerConfig(api_token=SecretStr("t"), voucher_number_start=99_999_999)
    assert voucher_number(XledgerConfig(api_token=SecretStr("t")), 17) == "17"
    assert voucher_number(config, 1) is None
    adapter = XledgerAdapter(
        XledgerConfig(
            base_url=f"{url}/graphql",
            api_token=SecretStr(found.token),
            voucher_number_start=99_999_999,
        )
    )
    result = adapter.load(_lines(1))
    assert [r.status for r in result.results] == [RecordStatus.REJECTED]
    assert "8 digits" in (result.results[0].reason or "")
    assert found.mutations == 0 and adapter.requests_sent == 0


# -- answers: documented codes, and errors judged by where they point ------------------------------
def test_concurrency_limit_waits_a_second_and_sends_again(company: Any, ledger: Ledger) -> None:
    found, url = company
    found.set_faults(concurrency_limit=1)
    waits: list[float] = []
    policy = RetryPolicy(attempts=4, sleep=waits.append)
    report = load_lines(
        _adapter(url, found.token), _lines(2), ledger=ledger, run_id=None, policy=policy
    )
    assert Counter(o["status"] for o in report.outcomes) == {"exported": 2}
    assert waits == [1.0] and found.mutations == 1


def test_insufficient_credits_stops_the_run_with_what_an_admin_can_do(
    company: Any, ledger: Ledger
) -> None:
    found, url = company
    found.set_faults(insufficient_credits=1)
    report = load_lines(
        _adapter(url, found.token), _lines(2), ledger=ledger, run_id=None, policy=NO_WAIT
    )
    assert report.aborted and "credits" in report.aborted and "buy more" in report.aborted
    assert Counter(o["status"] for o in report.outcomes) == {"failed": 2}
    assert _ledger_states(ledger) == {}  # refused before processing: sent again next run


def _answering(body: dict[str, Any]) -> httpx.MockTransport:
    """A fake Xledger that answers every mutation with ``body`` and finds no import errors."""

    def answer(request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["query"]
        if "glImportItemErrors" in query:
            empty = {"edges": [], "pageInfo": {"hasNextPage": False}}
            return httpx.Response(200, json={"data": {"glImportItemErrors": empty}})
        return httpx.Response(200, json=body)

    return httpx.MockTransport(answer)


@pytest.mark.parametrize("pointer", ["clientId", "path", "extensions"])
def test_an_undocumented_error_that_points_at_a_line_rejects_that_claim(
    ledger: Ledger, pointer: str
) -> None:
    lines = _lines(2)
    first, second = lines["idempotency_key"].unique()
    error: dict[str, Any] = {"message": "Konto er sperret", "code": "SOMETHING.NEW"}
    if pointer == "clientId":
        error["clientId"] = f"{first}:2"
    elif pointer == "path":
        error["path"] = ["addGLImportItems", 1]  # the second input: claim 1's credit line
    else:
        error["extensions"] = {"clientId": f"{first}:1"}
    edges = [
        {"clientId": f"{second}:{n}", "node": {"dbId": n, "createdAt": "2026-01-01T00:00:00Z"}}
        for n in (1, 2)
    ]
    body = {"data": {"addGLImportItems": {"edges": edges}}, "errors": [error]}
    adapter = XledgerAdapter(XledgerConfig(api_token=SecretStr("t")), transport=_answering(body))
    report = load_lines(adapter, lines, ledger=ledger, run_id=None, policy=NO_WAIT)
    outcome = {o["idempotency_key"]: (o["status"], o["reason"]) for o in report.outcomes}
    assert outcome[second] == ("exported", None)
    assert outcome[first][0] == "failed" and "Konto er sperret" in outcome[first][1]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"data": None, "errors": [{"message": "Oops", "code": "NEW.CODE"}]}, "waiting"),
        ({"errors": [{"message": "Unknown argument 'inputs'"}]}, "failed"),
    ],
    ids=["executed-may-have-stored", "refused-before-execution"],
)
def test_an_undocumented_error_about_the_whole_request(
    ledger: Ledger, body: dict[str, Any], expected: str
) -> None:
    """With ``data`` the request ran and may have stored the vouchers: they wait to be looked
    up. Without it (the GraphQL spec's parse and validation errors) nothing ran: the run stops
    and nothing is left pending."""
    adapter = XledgerAdapter(XledgerConfig(api_token=SecretStr("t")), transport=_answering(body))
    report = load_lines(adapter, _lines(2), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert Counter(o["status"] for o in report.outcomes) == {expected: 2}
    assert ("Oops" if expected == "waiting" else "Unknown argument") in report.outcomes[0]["reason"]
    assert bool(report.aborted) is (expected == "failed")


# -- reconciliation ------------------------------------------------------------------------------
def test_lookup_falls_back_to_journal_entries(xledger_sandbox: Any, ledger: Ledger) -> None:
    """If Xledger drops import items once imported, the journal still shows the vouchers."""
    state, server = xledger_sandbox
    found = state.add_company(secrets.token_hex(8), employees=EMPLOYEES, keep_imported_items=False)
    found.set_faults(commit_then_drop=1)
    first, second = _two_runs(found, server.url, _lines(3), ledger)
    assert Counter(o["status"] for o in first.outcomes) == {"waiting": 3}
    assert Counter(o["status"] for o in second.outcomes) == {"exported": 3}
    assert all(o["target_reference"].startswith("journalEntry:") for o in second.outcomes)
    assert found.mutations == 1 and len(found.journal) == 6


def test_lookup_pages_each_key_with_its_last_edge_cursor(
    company: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import integration_hub.adapters.xledger as xledger

    found, url = company
    adapter = _adapter(url, found.token)
    lines = _lines(2)
    adapter.load(lines)
    monkeypatch.setattr(xledger, "ITEMS_PER_KEY", 1)
    keys = list(lines["idempotency_key"].unique())
    before = adapter.requests_sent
    found_refs = adapter.lookup([*keys, "IH-not-there"])
    assert set(found_refs) == set(keys)
    assert all(
        len(ref.removeprefix("glImportItem:").split(",")) == 2 for ref in found_refs.values()
    )
    # one request for three keys, one more for the second item of each found key, then the
    # journal for the key found nowhere
    assert adapter.requests_sent - before == 3


# -- the schema check ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "field", "severity", "words"),
    [
        ({"drop": ("trRegNumber",)}, "node.trRegNumber", "error", "does not have"),
        (
            {"rename": {"extIdentifier": "externalIdentifier"}},
            "node.extIdentifier",
            "error",
            "does not have",
        ),
        ({"retype": {"jobLevel_dbSubId": "String"}}, "node.jobLevel.dbSubId", "error", "expects"),
        ({"require": ("dueDate",)}, "node.dueDate", "error", "requires"),
        (
            {"enums": {"transactionSource_code": ("AP", "AR")}},
            "node.transactionSource.code",
            "warning",
            "accepts only AP, AR",
        ),
    ],
    ids=["dropped", "renamed", "retyped", "required", "enum"],
)
def test_the_schema_check_finds_what_a_changed_schema_refuses(
    xledger_sandbox: Any, changes: dict[str, Any], field: str, severity: str, words: str
) -> None:
    state, server = xledger_sandbox
    token = secrets.token_hex(8)
    state.add_company(token, schema_changes=SchemaChanges(**changes))
    adapter = _adapter(server.url, token)
    drift = adapter.check_schema()
    assert [(d.field, d.severity) for d in drift] == [(f"AddGLImportItemsInput.{field}", severity)]
    assert words in drift[0].message
    assert adapter.requests_sent == 1
    result = adapter.check_connection()
    assert result.ok and result.warnings == (drift[0].message,)


def test_the_schema_check_of_an_unchanged_schema_finds_nothing(company: Any) -> None:
    found, url = company
    adapter = _adapter(url, found.token)
    assert adapter.check_schema() == [] and adapter.requests_sent == 1
    assert _adapter(url, found.token).check_connection().warnings == ()


def test_the_schema_check_reports_read_queries_xledger_refuses() -> None:
    """Xledger validates the lookup and import-check queries in the check's own request; a
    refused filter stops exports now rather than leaving records waiting."""
    from graphql import graphql_sync

    from integration_hub.sandbox.xledger_schema import build_xledger_schema

    refusal = "Field 'createdAt_gte' is not defined by type 'GLImportItemErrorFilter'."
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        calls.append(payload["query"])
        if "ImportErrors" in payload["query"]:
            return httpx.Response(200, json={"errors": [{"message": refusal}]})
        result = graphql_sync(build_xledger_schema(), payload["query"])
        return httpx.Response(200, json={"data": result.data})

    adapter = XledgerAdapter(
        XledgerConfig(api_token=SecretStr("t")), transport=httpx.MockTransport(answer)
    )
    drift = adapter.check_schema()
    assert [d.severity for d in drift] == ["error"]
    assert refusal in drift[0].message and len(calls) == 2


def test_a_schema_check_that_cannot_run_is_a_warning_within_the_deadline() -> None:
    """The credentials work, so the test passes; that the schema could not be compared is
    said, and the ten seconds still hold."""

    def answering(delay_s: float, status: int) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            if "Probe" in json.loads(request.content)["query"]:
                accounts = {"edges": [{"node": {"code": "1920"}}]}
                return httpx.Response(200, json={"data": {"accounts": accounts}})
            time.sleep(delay_s)
            return httpx.Response(status, json={"errors": [{"message": "no"}]})

        return httpx.MockTransport(answer)

    config = XledgerConfig(api_token=SecretStr("t"))
    broken = XledgerAdapter(config, transport=answering(0.0, 500)).check_connection()
    assert broken.ok and len(broken.warnings) == 1
    assert "schema could not be compared" in broken.warnings[0]
    started = time.monotonic()
    slow = XledgerAdapter(config, transport=answering(3.0, 200)).check_connection(deadline_s=1.0)
    assert time.monotonic() - started < 1.5
    assert slow.ok and slow.warnings == (
        "Xledger's schema could not be read in time; the hub checks again before each export",
    )
