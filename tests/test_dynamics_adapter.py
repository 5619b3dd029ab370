"""The Business Central adapter over real HTTP: tokens, connection tests, paging, batching,
per-line reasons, faults, no duplicates, reconciliation through posted G/L entries."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from factories import claims_frame
from pydantic import SecretStr, ValidationError

from integration_hub.adapters.base import ConnectionStatus, RecordStatus, RunAbort
from integration_hub.adapters.dynamics import (
    DynamicsAdapter,
    DynamicsConfig,
    clear_token_cache,
    document_number_for,
    json_bytes,
)
from integration_hub.ledger import Ledger, PendingRecord
from integration_hub.mappings.resolver import map_claims
from integration_hub.mappings.spec import load_template
from integration_hub.mappings.validator import Severity, has_errors, validate_mapping
from integration_hub.sandbox.dynamics import DynamicsSandboxState, Provisioned
from integration_hub.tasks.load import RetryPolicy, load_lines

REQUIRED = {f.name: f.label for f in DynamicsAdapter.target_fields if f.required}
NO_WAIT = RetryPolicy(attempts=4, base_delay_s=0.0, sleep=lambda _s: None)
TEMPLATE = load_template("dynamics_expense_claims.yaml")


@pytest.fixture(autouse=True)
def _fresh_tokens() -> Iterator[None]:
    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture
def bc(dynamics_sandbox: tuple[DynamicsSandboxState, Any]) -> tuple[Provisioned, str]:
    """A fresh tenant with one company per test (tenants are apart, so no reset needed)."""
    state, server = dynamics_sandbox
    return state.provision(), server.url


def _adapter(bc: tuple[Provisioned, str], **changes: Any) -> DynamicsAdapter:
    made, url = bc
    settings = {**made.settings(url), **changes}
    settings = {k: v for k, v in settings.items() if v is not None}
    return DynamicsAdapter(DynamicsConfig.model_validate(settings))


def _lines(count: int, first_id: int = 1, mapping: Any = TEMPLATE, **claim: Any) -> Any:
    claims = claims_frame(
        [
            {"claim_id": i, "amount_ore": 10_000 + i, **claim}
            for i in range(first_id, first_id + count)
        ]
    )
    lines, failures = map_claims(
        claims,
        mapping,
        required_fields=REQUIRED,
        text_max_length=DynamicsAdapter.text_max_length,
        organisation_id=1,
        integration_id=1,
    )
    assert failures.empty, failures
    return lines


def _statuses(report: Any) -> Counter[str]:
    return Counter(str(o["status"]) for o in report.outcomes)


# -- configuration ------------------------------------------------------------------------------
def test_config_flags_the_secret_and_never_echoes_input(bc: tuple[Provisioned, str]) -> None:
    made, url = bc
    assert DynamicsConfig.secret_fields() == ("client_secret",)
    settings = _adapter(bc).config.settings()
    assert made.client_secret not in str(settings) and "client_secret" not in settings
    with pytest.raises(ValidationError) as caught:
        DynamicsConfig.model_validate({**made.settings(url), "company_id": "not-a-guid"})
    assert "company_id" in str(caught.value) and made.client_secret not in str(caught.value)
    with pytest.raises(ValidationError, match="give journal_id or journal_code"):
        DynamicsConfig.model_validate({**made.settings(url), "journal_id": None})


def test_amounts_go_out_as_exact_json_numbers() -> None:
    body = json_bytes({"amount": Decimal("0.10"), "n": [Decimal("-1234567890123.45")]})
    assert body == b'{"amount":0.10,"n":[-1234567890123.45]}'
    with pytest.raises(TypeError):
        json_bytes({"amount": 0.1})


# -- connection tests ---------------------------------------------------------------------------
def test_connection_ok_names_company_and_journal(bc: tuple[Provisioned, str]) -> None:
    made, _ = bc
    adapter = _adapter(bc)
    result = adapter.check_connection()
    assert result.status is ConnectionStatus.OK, result.detail
    assert "Frivillig Norge" in result.detail and "UTLEGG" in result.detail
    assert made.client_secret not in result.detail
    assert adapter._last_token and adapter._last_token not in result.detail


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"client_secret": "wrong-secret-value"}, ConnectionStatus.BAD_CREDENTIALS, "secret"),
        (
            {"tenant_id": "nowhere.onmicrosoft.com"},
            ConnectionStatus.BAD_CREDENTIALS,
            "tenant nowhere.onmicrosoft.com was not found",
        ),
        (
            {"client_id": "11111111-2222-4333-8444-555555555555"},
            ConnectionStatus.BAD_CREDENTIALS,
            "client id",
        ),
        (
            {"company_id": "99999999-2222-4333-8444-555555555555"},
            ConnectionStatus.UNEXPECTED_RESPONSE,
            "not found in environment 'production'",
        ),
        ({"environment": "staging"}, ConnectionStatus.UNEXPECTED_RESPONSE, "environment"),
        (
            {"journal_id": "", "journal_code": "NOPE"},
            ConnectionStatus.UNEXPECTED_RESPONSE,
            "journal NOPE not found",
        ),
    ],
    ids=["wrong-secret", "wrong-tenant", "unknown-client", "unknown-company", "env", "journal"],
)
def test_connection_failures_are_classified(
    bc: tuple[Provisioned, str], change: dict[str, str], status: ConnectionStatus, words: str
) -> None:
    made, _ = bc
    result = _adapter(bc, **change).check_connection()
    assert result.status is status
    assert words in result.detail
    assert made.client_secret not in result.detail and "wrong-secret-value" not in result.detail


def test_missing_permission_is_bad_credentials(
    dynamics_sandbox: tuple[DynamicsSandboxState, Any],
) -> None:
    state, server = dynamics_sandbox
    made = state.provision(permitted=False)
    result = _adapter((made, server.url)).check_connection()
    assert result.status is ConnectionStatus.BAD_CREDENTIALS
    assert "permission" in result.detail


def test_journal_with_a_balancing_account_is_flagged(bc: tuple[Provisioned, str]) -> None:
    made, _ = bc
    journal = made.company.add_journal("BANK", balancing_account_number="1920")
    result = _adapter(bc, journal_id=journal["id"]).check_connection()
    assert result.status is ConnectionStatus.UNEXPECTED_RESPONSE
    assert "balancing account 1920" in result.detail


@pytest.mark.parametrize(
    ("account", "words"),
    [("2910", None), ("2911", "not in the company's chart"), ("2400", "direct posting is off")],
)
def test_a_configured_balancing_account_is_checked(
    bc: tuple[Provisioned, str], account: str, words: str | None
) -> None:
    result = _adapter(bc, balancing_account_number=account).check_connection()
    if words is None:
        assert result.status is ConnectionStatus.OK, result.detail
    else:
        assert result.status is ConnectionStatus.UNEXPECTED_RESPONSE
        assert f"balancing account {account}" in result.detail and words in result.detail


def test_throttled_never_waits_for_retry_after(bc: tuple[Provisioned, str]) -> None:
    made, _ = bc
    made.tenant.set_faults(throttle=1, retry_after_s=3600)
    started = time.monotonic()
    result = _adapter(bc).check_connection()
    assert result.status is ConnectionStatus.THROTTLED
    assert "3600" in result.detail and time.monotonic() - started < 3


def test_closed_port_is_unreachable(bc: tuple[Provisioned, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = _adapter(bc, base_url=url, token_url=url).check_connection()
    assert result.status is ConnectionStatus.UNREACHABLE


def test_a_hanging_company_request_times_out_within_the_deadline(
    bc: tuple[Provisioned, str],
) -> None:
    made, _ = bc
    made.tenant.set_faults(hang=1, hang_seconds=30)
    started = time.monotonic()
    # The token comes back, then the company request hangs. A shorter deadline than the
    # product's 10 s keeps the suite fast; every request's timeout is cut from what is left.
    result = _adapter(bc).check_connection(deadline_s=3.0)
    elapsed = time.monotonic() - started
    assert result.status is ConnectionStatus.TIMED_OUT
    assert elapsed < 3.5


# -- tokens -------------------------------------------------------------------------------------
def test_token_is_cached_and_renewed_once_after_a_401(
    bc: tuple[Provisioned, str], dynamics_sandbox: tuple[DynamicsSandboxState, Any]
) -> None:
    made, _ = bc
    sandbox = dynamics_sandbox[0]
    adapter = _adapter(bc)
    adapter.reference_codes()
    adapter.reference_codes()
    assert made.tenant.token_requests == 1
    _adapter(bc).reference_codes()  # another adapter of the same process reuses it
    assert made.tenant.token_requests == 1

    counted = made.tenant.requests
    sandbox.revoke_tokens(made.tenant_id)  # the next request meets a 401
    codes = adapter.reference_codes()
    assert codes and made.tenant.token_requests == 2
    assert made.tenant.requests == counted + 1  # the 401 is not counted, the retry is
    assert adapter.requests_sent == 4  # 1 + 1 + (401 + retry)


def test_token_is_renewed_shortly_before_it_expires(bc: tuple[Provisioned, str]) -> None:
    made, _ = bc
    made.tenant.token_lifetime_s = 1
    adapter = _adapter(bc)
    adapter.reference_codes()
    time.sleep(1.0)
    adapter.reference_codes()
    assert made.tenant.token_requests == 2
    assert adapter.requests_sent == made.tenant.requests == 2  # no request met a 401


def test_a_refused_secret_stops_the_run_without_showing_it(bc: tuple[Provisioned, str]) -> None:
    adapter = _adapter(bc, client_secret="definitely-wrong-secret")
    with pytest.raises(RunAbort) as caught:
        adapter.load(_lines(3))
    assert "secret" in str(caught.value)
    assert "definitely-wrong-secret" not in str(caught.value)
    assert adapter.requests_sent == 0  # no token, nothing sent to Business Central


# -- reference codes ----------------------------------------------------------------------------
def test_reference_codes_follow_every_page_and_say_what_cannot_be_posted(
    bc: tuple[Provisioned, str],
) -> None:
    made, _ = bc
    chart = [{"number": str(40000 + i), "displayName": f"Konto {i}"} for i in range(117)]
    chart += [
        {"number": "2910", "displayName": "Gjeld til ansatte"},
        {"number": "7350", "displayName": "Representasjon", "blocked": True},
        {"number": "2400", "displayName": "Leverandørgjeld", "directPosting": False},
        {"number": "7000", "displayName": "Reise", "accountType": "Heading"},
    ]
    made.company.set_accounts(chart)
    adapter = _adapter(bc)
    codes = {c.code: c for c in adapter.reference_codes()}
    assert len(codes) == 121
    assert adapter.requests_sent == 3  # 50 a page
    assert codes["2910"].postable
    assert not codes["7350"].postable and codes["7350"].note == "blocked"
    assert codes["2400"].note == "direct posting is off"
    assert codes["7000"].note == "not a posting account (Heading)"


def test_mapping_is_validated_against_the_company_accounts(bc: tuple[Provisioned, str]) -> None:
    codes = _adapter(bc).reference_codes()

    def check(mapping: Any) -> list[Any]:
        return validate_mapping(
            mapping,
            target_key=DynamicsAdapter.key,
            target_name=DynamicsAdapter.display_name,
            target_fields=DynamicsAdapter.target_fields,
            reference_codes=codes,
            reference_label=DynamicsAdapter.reference_label,
        )

    assert check(TEMPLATE) == []
    document = TEMPLATE.model_dump(mode="json")
    document["value_maps"]["expense_accounts"].update({"toll": "7145", "meals": "7350"})
    problems = check(load_template_from(document))
    assert not has_errors(problems)
    warnings = {p.field: p.message for p in problems if p.severity is Severity.WARNING}
    assert warnings["expense_account[toll]"].endswith("has no account 7145")
    assert "7350 cannot be posted to (blocked)" in warnings["expense_account[meals]"]


def load_template_from(document: dict[str, Any]) -> Any:
    from integration_hub.mappings.spec import parse_mapping

    return parse_mapping(document)


# -- loading ------------------------------------------------------------------------------------
def test_120_claims_are_240_lines_in_3_batches(bc: tuple[Provisioned, str], ledger: Ledger) -> None:
    made, _ = bc
    report = load_lines(_adapter(bc), _lines(120), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"exported": 120}
    assert report.requests == 3 and made.tenant.batches == 3
    lines = made.company.journal_lines()
    assert len(lines) == 240
    assert Counter(line["accountType"] for line in lines) == {"G/L Account": 120, "Employee": 120}
    by_key = Counter(line["externalDocumentNumber"] for line in lines)
    assert set(by_key.values()) == {2}  # two lines per claim, never a claim twice
    assert sum((line["amount"] for line in lines), Decimal(0)) == 0
    first = next(line for line in lines if line["accountType"] == "G/L Account")
    assert first["amount"] == Decimal("100.01") and first["accountNumber"] == "7140"
    assert first["documentNumber"] == document_number_for(first["externalDocumentNumber"])
    assert first["description"].startswith("UTL-1 Reise 2026-01-10")
    references = {o["target_reference"] for o in report.outcomes}
    assert all(str(r).startswith("journalLine:") for r in references) and len(references) == 120


def test_a_thousand_claims_take_twenty_requests(
    bc: tuple[Provisioned, str], ledger: Ledger
) -> None:
    made, _ = bc
    adapter = _adapter(bc)
    report = load_lines(adapter, _lines(1000), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"exported": 1000}
    assert report.requests == 20  # the floor: 2,000 lines at 100 operations per $batch
    assert adapter.token_requests == 1
    assert len(made.company.journal_lines()) == 2000


def test_failing_lines_reject_their_claim_only_with_a_reason(
    bc: tuple[Provisioned, str], ledger: Ledger
) -> None:
    made, _ = bc
    lines = _lines(6)
    unknown_employee = (lines["record_id"] == 2) & (lines["line_no"] == 2)
    lines.loc[unknown_employee, "account"] = "9999"
    lines.loc[(lines["record_id"] == 4) & (lines["line_no"] == 1), "account"] = "7350"
    lines.loc[(lines["record_id"] == 5) & (lines["line_no"] == 1), "account"] = "2400"
    adapter = _adapter(bc)
    report = load_lines(adapter, lines, ledger=ledger, run_id=None, policy=NO_WAIT)
    failed = {o["record_id"]: o["reason"] for o in report.outcomes if o["status"] == "failed"}
    assert sorted(failed) == [2, 4, 5]
    assert (
        "Employee does not exist" in failed[2] and "add the volunteer as an employee" in failed[2]
    )
    assert "Blocked" in failed[4] and "unblock it" in failed[4]
    assert "Direct Posting" in failed[5]
    assert _statuses(report) == {"exported": 3, "failed": 3}
    # each rejection rolled its batch back (snapshot isolation); the rest went again
    assert report.requests == 4
    journal = made.company.journal_lines()
    assert len(journal) == 6  # three whole claims: never half a claim
    rejected = set(lines.loc[lines["record_id"].isin([2, 4, 5]), "idempotency_key"].str.upper())
    assert not rejected & {line["externalDocumentNumber"] for line in journal}


def test_too_long_document_number_is_rejected_before_sending(
    bc: tuple[Provisioned, str],
) -> None:
    lines = _lines(2)
    lines.loc[lines["record_id"] == 1, "document_number"] = "UTLEGG-2026-00000000001"
    result = _adapter(bc).load(lines)
    assert [r.status for r in result.results] == [RecordStatus.REJECTED, RecordStatus.EXPORTED]
    assert "longer than the 20 characters" in str(result.results[0].reason)
    assert result.requests == 1


def test_vendor_and_balancing_account_credits(bc: tuple[Provisioned, str]) -> None:
    made, _ = bc
    document = TEMPLATE.model_dump(mode="json")
    document["fields"]["payable_account_type"] = {"constant": "vendor"}
    document["fields"]["counterparty"] = {"source": "supplier_number"}
    vendor_lines = _lines(2, mapping=load_template_from(document), supplier_number="50001")
    result = _adapter(bc).load(vendor_lines)
    assert {r.status for r in result.results} == {RecordStatus.EXPORTED}
    assert Counter(line["accountType"] for line in made.company.journal_lines()) == {
        "G/L Account": 2,
        "Vendor": 2,
    }

    adapter = _adapter(bc, balancing_account_number="2910")
    result = adapter.load(_lines(2, first_id=10))
    assert {r.status for r in result.results} == {RecordStatus.EXPORTED}
    credits = [line for line in made.company.journal_lines() if line["accountNumber"] == "2910"]
    assert len(credits) == 2 and all(line["amount"] < 0 for line in credits)
    keys = [r.idempotency_key for r in result.results]
    assert sorted(adapter.lookup(keys)) == sorted(keys)


class Clock:
    """The settle time passes when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_throttling_is_retried_honouring_retry_after(
    bc: tuple[Provisioned, str], ledger: Ledger
) -> None:
    made, _ = bc
    made.tenant.set_faults(throttle=1, retry_after_s=7)
    waits: list[float] = []
    policy = RetryPolicy(attempts=4, base_delay_s=0.0, sleep=waits.append)
    report = load_lines(_adapter(bc), _lines(3), ledger=ledger, run_id=None, policy=policy)
    assert _statuses(report) == {"exported": 3}
    assert 7.0 in waits
    assert made.tenant.batches == 1 and len(made.company.journal_lines()) == 6


@pytest.mark.parametrize(
    ("fault", "committed"),
    [
        ({"commit_then_timeout": 1, "hang_seconds": 5}, True),
        ({"commit_then_drop": 1}, True),
        ({"drop_connection": 1}, False),
        ({"fail_5xx": 1}, False),
    ],
    ids=["commit-then-timeout", "commit-then-drop", "dropped", "503"],
)
def test_no_clear_answer_waits_the_settle_time_then_never_doubles(
    bc: tuple[Provisioned, str], ledger: Ledger, fault: dict[str, Any], committed: bool
) -> None:
    """Whatever the lost answer hid, the next run after the settle time books each claim once."""
    made, _ = bc
    made.tenant.set_faults(**fault)
    clock = Clock()
    adapter = _adapter(bc)
    adapter.read_timeout_s = 0.5
    lines = _lines(10)
    first = load_lines(adapter, lines, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock)
    assert _statuses(first) == {"waiting": 10}
    clock.now += timedelta(seconds=adapter.read_timeout_s + adapter.settle_s)
    second = load_lines(_adapter(bc), lines, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock)
    assert _statuses(second) == {"exported": 10}
    assert second.reconciled == (10 if committed else 0)
    assert len(made.company.journal_lines()) == 20


def test_lookup_finds_claims_in_posted_gl_entries(bc: tuple[Provisioned, str]) -> None:
    made, _ = bc
    adapter = _adapter(bc)
    lines = _lines(30)
    keys = list(lines["idempotency_key"].unique())
    assert {r.status for r in adapter.load(lines.iloc[:40]).results} == {RecordStatus.EXPORTED}
    made.company.post_journal(made.journal_id)
    assert made.company.journal_lines() == []
    found = adapter.lookup(keys)
    assert sorted(found) == sorted(keys[:20])
    assert all(reference.startswith("glEntry:") for reference in found.values())


def test_pending_keys_of_a_crashed_run_are_found_after_posting(
    bc: tuple[Provisioned, str], ledger: Ledger
) -> None:
    made, _ = bc
    lines = _lines(5)
    _adapter(bc).load(lines)  # sent by a run that died before recording anything
    ledger.mark_pending(
        [
            PendingRecord(str(r.idempotency_key), int(r.record_id), int(r.record_version), 1)
            for r in lines.drop_duplicates("idempotency_key").itertuples()
        ],
        None,
        settle_after=None,
    )
    made.company.post_journal(made.journal_id)
    entries = len(made.company.gl_entries)
    report = load_lines(_adapter(bc), lines, ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"exported": 5} and report.reconciled == 5
    assert made.tenant.batches == 1  # only the crashed run's batch
    assert len(made.company.gl_entries) == entries


def test_a_next_link_to_another_host_is_not_followed(bc: tuple[Provisioned, str]) -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "t0k3n-value", "expires_in": 3599})
        body = {"value": [], "@odata.nextLink": "https://evil.example/steal"}
        return httpx.Response(200, json=body)

    made, _ = bc
    config = DynamicsConfig.model_validate(
        {**made.settings("https://bc.example"), "client_secret": SecretStr("s3cret-value")}
    )
    adapter = DynamicsAdapter(config, transport=httpx.MockTransport(handler))
    with pytest.raises(RunAbort, match="points elsewhere"):
        adapter.reference_codes()
    assert not any("evil.example" in url for url in sent)
    assert adapter.redact("token t0k3n-value, secret s3cret-value") == (
        "token [REDACTED], secret [REDACTED]"
    )
