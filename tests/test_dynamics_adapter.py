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

from integration_hub.adapters.base import (
    ConnectionStatus,
    OutcomeUnknown,
    RecordStatus,
    RunAbort,
    SchemaDrift,
    TransientError,
)
from integration_hub.adapters.dynamics import (
    SENT_PROPERTIES,
    TOKENS,
    DynamicsAdapter,
    DynamicsConfig,
    EntraClientCredentials,
    TokenCache,
    TokenRefused,
    _answered_operations,
    _csdl_entity,
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
    TOKENS.clear()
    yield
    TOKENS.clear()


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
    # The company and journal are picked after the credentials work: both may wait.
    bare = {**made.settings(url), "company_id": None, "journal_id": None}
    assert DynamicsConfig.model_validate(bare).company_id is None
    with pytest.raises(ValidationError, match="choose the company before the journal"):
        DynamicsConfig.model_validate({**bare, "journal_code": "UTLEGG"})


def test_the_old_balancing_setting_is_dropped_when_empty_and_refused_when_set(
    bc: tuple[Provisioned, str],
) -> None:
    """Stored settings carry ``balancing_account_number: null`` from before the G/L mode moved
    into the mapping; a value must not be ignored silently (claims would credit employees)."""
    made, url = bc
    config = DynamicsConfig.model_validate({**made.settings(url), "balancing_account_number": None})
    assert "balancing_account_number" not in config.settings()
    with pytest.raises(ValidationError, match="payable_account_type gl, payable_account 2910"):
        DynamicsConfig.model_validate({**made.settings(url), "balancing_account_number": "2910"})


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
    token = adapter.auth.last_token
    assert token and token not in result.detail
    # The API shows no number series: the test says what the journal batch needs instead.
    assert "No. Series (or one allowing manual numbers) and no Posting No. Series" in result.detail


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


def test_without_a_company_or_journal_the_test_lists_what_to_choose(
    bc: tuple[Provisioned, str],
) -> None:
    made, _ = bc
    made.tenant.environments["production"].add_company("Frivillig Vest")
    result = _adapter(bc, company_id="", journal_id="").check_connection()
    assert result.status is ConnectionStatus.UNEXPECTED_RESPONSE
    assert "choose the company (2 in companies: 'Frivillig Norge', 'Frivillig Vest')" in (
        result.detail
    )
    result = _adapter(bc, journal_id="").check_connection()
    assert (
        "choose the journal (1 in the journals of company 'Frivillig Norge': "
        "UTLEGG ('Utlegg frivillige')) and save it" in result.detail
    )


def test_companies_and_journals_to_pick_from(bc: tuple[Provisioned, str]) -> None:
    made, _ = bc
    other = made.tenant.environments["production"].add_company("Frivillig Vest")
    bank = made.company.add_journal("BANK", "Bank", balancing_account_number="1920")
    adapter = _adapter(bc, company_id="", journal_id="")
    companies = {c.name: c.id for c in adapter.companies()}
    assert companies == {"Frivillig Norge": made.company_id, "Frivillig Vest": other.id}
    journals = {j.code: j for j in adapter.journals(made.company_id)}
    assert journals["UTLEGG"].id == made.journal_id and journals["UTLEGG"].note == ""
    assert journals["BANK"].id == bank["id"] and "balancing account 1920" in journals["BANK"].note
    assert adapter.journals(other.id) == []
    with pytest.raises(RunAbort, match="no Business Central company is chosen"):
        adapter.journals()  # the configured company, which there is none of yet
    with pytest.raises(RunAbort, match="no Business Central company is chosen"):
        adapter.load(_lines(1))


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


def _gl_mode(payable_account: str | None = "2910") -> Any:
    """The template switched to the G/L balancing mode, as its comments say."""
    document = TEMPLATE.model_dump(mode="json")
    document["fields"]["payable_account_type"] = {"constant": "gl"}
    if payable_account is not None:
        document["fields"]["payable_account"] = {"constant": payable_account}
    return load_template_from(document)


def test_gl_balancing_mode_never_sends_an_employee_line(bc: tuple[Provisioned, str]) -> None:
    """Every line can be read back (journalLines lists only G/L..Bank lines), and the credit
    line names the volunteer, who has no employee line of their own."""
    made, _ = bc
    adapter = _adapter(bc)
    lines = _lines(3, mapping=_gl_mode(), employee_number="1002")
    result = adapter.load(lines)
    assert {r.status for r in result.results} == {RecordStatus.EXPORTED}
    journal = made.company.journal_lines()
    assert {line["accountType"] for line in journal} == {"G/L Account"}
    credits = [line for line in journal if line["accountNumber"] == "2910"]
    assert len(credits) == 3 and all(line["amount"] < 0 for line in credits)
    key = str(lines["idempotency_key"].iloc[0])
    credit = next(c for c in credits if c["externalDocumentNumber"] == key.upper())
    assert credit["description"].startswith("1002: UTL-1 Reise")
    assert credit["description"].endswith(" " + document_number_for(key))
    listed = made.company.journal_lines(listed_only=True)
    assert len(listed) == len(journal) == 6  # nothing hidden from the lookup
    keys = [r.idempotency_key for r in result.results]
    assert sorted(adapter.lookup(keys)) == sorted(keys)


def test_gl_balancing_mode_without_a_payable_account_says_what_to_map(
    bc: tuple[Provisioned, str],
) -> None:
    result = _adapter(bc).load(_lines(1, mapping=_gl_mode(payable_account=None)))
    assert result.results[0].status is RecordStatus.REJECTED
    assert "map payable_account (the G/L payable account)" in str(result.results[0].reason)
    assert result.requests == 0


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


# -- $batch answers without ids ----------------------------------------------------------------
def test_null_batch_ids_are_matched_by_position(
    bc: tuple[Provisioned, str], ledger: Ledger
) -> None:
    """Microsoft's transactional batch example answers ``"id": null``: the answers are then
    placed by position, so the failing claim (and only it) is rejected, the others exported
    with their own line ids."""
    made, _ = bc
    made.tenant.null_batch_ids = True
    lines = _lines(4)
    lines.loc[(lines["record_id"] == 3) & (lines["line_no"] == 2), "account"] = "9999"
    report = load_lines(_adapter(bc), lines, ledger=ledger, run_id=None, policy=NO_WAIT)
    failed = {o["record_id"]: o["reason"] for o in report.outcomes if o["status"] == "failed"}
    assert list(failed) == [3] and "Employee does not exist" in failed[3]
    assert _statuses(report) == {"exported": 3, "failed": 1}
    journal = {line["id"]: line for line in made.company.journal_lines()}
    for outcome in report.outcomes:
        if outcome["status"] == "exported":
            line = journal[str(outcome["target_reference"]).removeprefix("journalLine:")]
            assert line["externalDocumentNumber"] == str(outcome["idempotency_key"]).upper()
            assert line["accountType"] == "G/L Account"  # the claim's first line, its own


@pytest.mark.parametrize(
    ("ids", "words"),
    [
        (["1", None, "1"], "answers one line twice"),
        (["7"], "names an unknown operation"),
        ([None, None, None, None], "more answers than lines"),
    ],
    ids=["twice", "unknown", "too-many"],
)
def test_batch_answers_that_cannot_be_placed_leave_the_outcome_unknown(
    ids: list[str | None], words: str
) -> None:
    answers = [{"id": i, "status": 201} for i in ids]
    with pytest.raises(OutcomeUnknown, match=words):
        _answered_operations(answers, ["1", "2", "3"])
    assert _answered_operations(
        [{"id": None, "status": 201}, {"id": "3", "status": 400}],
        [
            "1",
            "2",
            "3",
        ],
    ) == ["1", "3"]


# -- reconciliation without the document number --------------------------------------------------
def test_posted_claims_are_found_by_their_tag_when_a_posting_series_renumbers(
    bc: tuple[Provisioned, str],
) -> None:
    """A batch with a Posting No. Series gives posted entries new document numbers; the tag at
    the end of each description still finds them (Business Central's G/L entries carry no
    external document number)."""
    made, _ = bc
    journal = made.company.add_journal("RENUMBER", posting_no_series="GJP")
    adapter = _adapter(bc, journal_id=journal["id"])
    lines = _lines(25)
    keys = list(lines["idempotency_key"].unique())
    assert {r.status for r in adapter.load(lines.iloc[:40]).results} == {RecordStatus.EXPORTED}
    made.company.post_journal(journal["id"])
    entries = made.company.gl_entries
    assert {e["documentNumber"] for e in entries} == {f"GJP{n:05d}" for n in range(1, 21)}
    adapter.requests_sent = 0
    found = adapter.lookup(keys)
    assert sorted(found) == sorted(keys[:20])
    assert all(reference.startswith("glEntry:") for reference in found.values())
    # journal lines, then G/L entries by document number, then by description: one page each
    assert adapter.requests_sent == 2 + 2 + 2


def test_every_description_ends_with_the_tag_and_the_text_is_cut_to_fit(
    bc: tuple[Provisioned, str],
) -> None:
    made, _ = bc
    lines = _lines(1)
    lines["text"] = "x" * 200  # longer than any mapping would leave it
    assert _adapter(bc).load(lines).results[0].status is RecordStatus.EXPORTED
    tag = document_number_for(str(lines["idempotency_key"].iloc[0]))
    for line in made.company.journal_lines():
        assert len(line["description"]) == 100
        assert line["description"] == "x" * 78 + "… " + tag


# -- schema check against $metadata -------------------------------------------------------------
def test_the_line_body_sends_exactly_the_properties_the_schema_check_knows(
    bc: tuple[Provisioned, str],
) -> None:
    adapter = _adapter(bc)
    for row in _lines(1).itertuples(index=False):
        body, problem = adapter._line_body(row)
        assert problem is None and set(body) == set(SENT_PROPERTIES)


def test_an_unchanged_business_central_shows_no_drift(bc: tuple[Provisioned, str]) -> None:
    adapter = _adapter(bc)
    assert adapter.check_schema() == []
    result = adapter.check_connection()
    assert result.status is ConnectionStatus.OK and result.warnings == ()


def test_the_schema_check_finds_a_property_we_send_that_the_target_lacks(
    bc: tuple[Provisioned, str],
) -> None:
    """A Business Central without ``externalDocumentNumber``: the check says so before any
    export, and the sandbox indeed refuses the lines the check warned about."""
    made, _ = bc
    made.tenant.change_schema(drop=["externalDocumentNumber"])
    adapter = _adapter(bc)
    # The wording is SchemaDrift's, shared by every adapter; what is compared is ours.
    assert adapter.check_schema() == [
        SchemaDrift.missing("Business Central", "journalLine.externalDocumentNumber")
    ]
    warnings = adapter.check_connection().warnings
    assert any("externalDocumentNumber" in w for w in warnings)
    result = adapter.load(_lines(1))
    assert result.results[0].status is RecordStatus.REJECTED
    assert "'externalDocumentNumber' does not exist" in str(result.results[0].reason)


def test_changed_types_and_lengths_are_errors_unknown_enum_values_warnings(
    bc: tuple[Provisioned, str],
) -> None:
    made, _ = bc
    made.tenant.change_schema(
        types={"amount": "Edm.Double", "postingDate": "Edm.DateTimeOffset"},
        max_lengths={"description": 50},
        drop_members=["Employee", "Vendor"],
    )
    field = "journalLine.{}".format
    known = "Bank Account, Customer, Fixed Asset, G/L Account, IC Partner"
    assert _adapter(bc).check_schema() == [
        # Neither Employee nor Vendor: only the balancing modes that use them would fail.
        SchemaDrift.unknown_value("Business Central", field("accountType"), known, None),
        SchemaDrift.changed(
            "Business Central", field("postingDate"), "Edm.DateTimeOffset", "Edm.Date"
        ),
        SchemaDrift.changed("Business Central", field("amount"), "Edm.Double", "Edm.Decimal"),
        SchemaDrift.changed(
            "Business Central",
            field("description"),
            "at most 50 characters",
            "up to 100 characters",
        ),
    ]


def test_metadata_names_are_decoded_and_hostile_documents_refused() -> None:
    document = (
        b'<?xml version="1.0"?><edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"'
        b' Version="4.0"><edmx:DataServices><Schema xmlns="http://docs.oasis-open.org/odata/ns/'
        b'edm" Namespace="Microsoft.NAV" Alias="NAV"><EnumType Name="kind"><Member Name="G_x002F'
        b'_L_x0020_Account" Value="0"/></EnumType><EntityType Name="journalLine"><Property Name='
        b'"accountType" Type="NAV.kind"/><Property Name="description" Type="Edm.String" MaxLength'
        b'="100"/></EntityType></Schema></edmx:DataServices></edmx:Edmx>'
    )
    entity, enums = _csdl_entity(document, "journalLine")
    assert entity == {"accountType": ("NAV.kind", None), "description": ("Edm.String", 100)}
    assert enums["NAV.kind"] == enums["Microsoft.NAV.kind"] == {"G/L Account"}
    assert _csdl_entity(document, "account")[0] is None
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    with pytest.raises(TransientError, match="DTD"):
        _csdl_entity(bomb, "journalLine")
    with pytest.raises(TransientError, match="not readable XML"):
        _csdl_entity(b"{}", "journalLine")


# -- the OAuth2 client-credentials auth ---------------------------------------------------------
class FakeEntra:
    """A token endpoint and an API behind one MockTransport; the API refuses listed tokens."""

    def __init__(self) -> None:
        self.issued = 0
        self.refused: set[str] = set()
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/v2.0/token"):
            self.issued += 1
            return httpx.Response(200, json={"access_token": f"t{self.issued}", "expires_in": 3599})
        token = request.headers["Authorization"].removeprefix("Bearer ")
        self.seen.append(token)
        return httpx.Response(401 if token in self.refused else 200, json={})


def _auth(cache: TokenCache, secret: str = "s3cret") -> EntraClientCredentials:
    return EntraClientCredentials(
        "https://login.example/tenant/oauth2/v2.0/token",
        tenant_id="tenant",
        client_id="client",
        client_secret=SecretStr(secret),
        cache=cache,
    )


def test_auth_fetches_again_once_on_401_and_caches_per_secret() -> None:
    entra, cache = FakeEntra(), TokenCache()
    with httpx.Client(transport=httpx.MockTransport(entra), auth=_auth(cache)) as client:
        assert client.get("https://bc.example/a").status_code == 200
        assert client.get("https://bc.example/b").status_code == 200
        assert entra.issued == 1 and entra.seen == ["t1", "t1"]  # cached
        entra.refused = {"t1"}
        assert client.get("https://bc.example/c").status_code == 200
        assert entra.issued == 2 and entra.seen[2:] == ["t1", "t2"]  # refetched once, resent
        entra.refused = {"t2", "t3"}
        assert client.get("https://bc.example/d").status_code == 401
        assert entra.issued == 3 and entra.seen[4:] == ["t2", "t3"]  # once, not again
    # Another secret never gets the first one's token; the same one does, in a new auth.
    entra.refused = set()
    with httpx.Client(transport=httpx.MockTransport(entra), auth=_auth(cache, "other")) as other:
        other.get("https://bc.example/e")
    assert entra.issued == 4 and _auth(cache).key != _auth(cache, "other").key
    assert cache.get(_auth(cache).key) == "t3"


def test_auth_does_not_refetch_a_token_it_just_fetched() -> None:
    entra, cache = FakeEntra(), TokenCache()
    entra.refused = {"t1"}
    with httpx.Client(transport=httpx.MockTransport(entra), auth=_auth(cache)) as client:
        assert client.get("https://bc.example/a").status_code == 401
    assert entra.issued == 1 and entra.seen == ["t1"]


def test_a_token_endpoint_refusal_is_raised_with_a_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": "invalid_client", "error_codes": [7000215]}
        return httpx.Response(401, json=body)

    with (
        httpx.Client(transport=httpx.MockTransport(handler), auth=_auth(TokenCache())) as client,
        pytest.raises(TokenRefused) as caught,
    ):
        client.get("https://bc.example/a")
    assert caught.value.status is ConnectionStatus.BAD_CREDENTIALS
    assert "client secret" in caught.value.detail and not caught.value.transient


# -- choosing the company and journal: services, REST API, CLI ----------------------------------
def test_admin_picks_company_and_journal_from_lists_after_the_token_works(
    web: Any, bc: tuple[Provisioned, str]
) -> None:
    """Credentials first (no GUIDs pasted), then the lists: through the service, the REST API
    and ``integrations dynamics companies|journals``; the choice is saved like any setting."""
    from typer.testing import CliRunner
    from webworld import ADMIN_A, ORG_A

    from integration_hub.cli import app
    from integration_hub.services import configuration as config
    from integration_hub.services.configuration import Actor

    made, url = bc
    admin = Actor("admin", organisation_id=web.organisation_ids[ORG_A], role="admin")
    row = config.integration(config.organisation(ORG_A, admin), "dynamics", admin, create=True)
    settings = {
        k: v for k, v in made.settings(url).items() if k not in ("company_id", "journal_id")
    }
    config.save_configuration(row, settings, admin)
    tested = config.test_connection(row, admin)
    assert not tested.ok and "now choose the company (1 in companies" in tested.detail

    companies = config.list_companies(row, admin)
    assert [(c.id, c.name) for c in companies] == [(made.company_id, "Frivillig Norge")]
    listed = CliRunner().invoke(app, ["dynamics", "companies", ORG_A])
    assert listed.exit_code == 0 and f"{made.company_id}  Frivillig Norge" in listed.output

    client = web.client(ADMIN_A)
    path = f"/api/v1/organisations/{ORG_A}/integrations/dynamics/journals"
    response = client.get(path, params={"company_id": made.company_id})
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"id": made.journal_id, "name": "Utlegg frivillige", "code": "UTLEGG", "note": ""}
    ]
    assert client.get(path, params={"company_id": "not-a-guid"}).status_code == 422
    journals = CliRunner().invoke(app, ["dynamics", "journals", ORG_A])
    assert journals.exit_code == 2 and "no Business Central company is chosen" in journals.output

    config.save_configuration(config.reload(row), {"company_id": companies[0].id}, admin)
    journals = CliRunner().invoke(app, ["dynamics", "journals", ORG_A])
    assert journals.exit_code == 0 and f"{made.journal_id}  UTLEGG" in journals.output
    config.save_configuration(config.reload(row), {"journal_id": made.journal_id}, admin)
    assert config.test_connection(row, admin).ok
    xledger = config.integration(config.organisation(ORG_A, admin), "xledger", admin, create=True)
    assert config.list_companies(xledger, admin) == []  # nothing of the kind to choose


def test_a_missing_gl_account_value_is_an_error(bc: tuple[Provisioned, str]) -> None:
    """Every claim's expense line is a "G/L Account" line: without it nothing can be sent."""
    made, _ = bc
    made.tenant.change_schema(drop_members=["G/L Account"])
    known = "Bank Account, Customer, Employee, Fixed Asset, IC Partner, Vendor"
    assert _adapter(bc).check_schema() == [
        SchemaDrift.changed(
            "Business Central", "journalLine.accountType", f"one of {known}", "G/L Account"
        )
    ]
