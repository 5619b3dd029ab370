"""The generic load engine against a scripted target: retries, reconciliation, no duplicates.

The ledger is real (SQLite and PostgreSQL); the target is an in-memory fake whose faults are
scripted per request, in the spirit of dlt's dummy destination.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from factories import claims_frame
from pydantic import SecretStr

from integration_hub.adapters.base import (
    BatchResult,
    ConnectionResult,
    ConnectionStatus,
    IntegrationConfig,
    OutcomeUnknown,
    RecordAdapter,
    RecordResult,
    RecordStatus,
    ReferenceCode,
    RunAbort,
    TransientError,
    secret,
)
from integration_hub.db import hub_session
from integration_hub.ledger import Ledger
from integration_hub.mappings.resolver import map_claims
from integration_hub.mappings.spec import load_template
from integration_hub.models import ExportLedger, Integration, RunFailure
from integration_hub.tasks.load import (
    MAX_UNCLEAR_IN_A_ROW,
    RetryPolicy,
    load_lines,
    request_chunks,
)


class FakeConfig(IntegrationConfig):
    token: SecretStr = secret(label="Token")


class ScriptedTarget(RecordAdapter):
    """Faults per request, in order: ok, transient, commit-then-unknown, unknown, abort."""

    key = "fake"
    display_name = "Fake"
    config_model = FakeConfig
    max_lines_per_request = 4

    def __init__(self, script: list[str], reject: set[int] | None = None) -> None:
        super().__init__(FakeConfig(token=SecretStr("t0ken-value")))
        self.script = list(script)
        self.reject = reject or set()
        self.stored: list[str] = []
        self.lookups = 0

    def probe(self, deadline_s: float) -> ConnectionResult:
        return ConnectionResult(ConnectionStatus.OK, "fake")

    def reference_codes(self) -> list[ReferenceCode]:
        return []

    def lookup(self, keys: list[str]) -> dict[str, str]:
        self.lookups += 1
        self.requests_sent += 1
        return {k: f"ref-{k[:6]}" for k in keys if k in self.stored}

    def load(self, lines: pd.DataFrame) -> BatchResult:
        self.requests_sent += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "transient":
            raise TransientError("busy", retry_after=0.0)
        if step == "unknown":
            raise OutcomeUnknown("connection dropped before commit")
        if step == "abort":
            raise RunAbort("token refused")
        results = []
        for record in lines.drop_duplicates("idempotency_key").itertuples():
            if int(record.record_id) in self.reject:
                results.append(
                    RecordResult(
                        record.idempotency_key, RecordStatus.REJECTED, reason="period closed"
                    )
                )
            else:
                self.stored.append(record.idempotency_key)
                results.append(
                    RecordResult(
                        record.idempotency_key,
                        RecordStatus.EXPORTED,
                        f"ref-{record.idempotency_key[:6]}",
                    )
                )
        if step == "commit-then-unknown":
            raise OutcomeUnknown("timed out after commit")
        return BatchResult(results)


NO_WAIT = RetryPolicy(attempts=3, base_delay_s=0.0, sleep=lambda _s: None)


@pytest.fixture
def ledger(hub_env: str) -> Ledger:
    with hub_session() as session:
        row = Integration(organisation_id=1, type_key="fake")
        session.add(row)
        session.flush()
        integration_id = row.id or 0
    return Ledger(
        hub_session, organisation_id=1, integration_id=integration_id, record_type="expense_claim"
    )


def _lines(count: int) -> pd.DataFrame:
    claims = claims_frame([{"claim_id": i, "amount_ore": 1000 + i} for i in range(1, count + 1)])
    required = {"expense_account": "a", "payable_account": "b", "posting_date": "c"}
    lines, _ = map_claims(
        claims,
        load_template("xledger_expense_claims.yaml"),
        required_fields=required,
        text_max_length=255,
        organisation_id=1,
        integration_id=1,
    )
    return lines


def _statuses(report: Any) -> Counter[str]:
    return Counter(o["status"] for o in report.outcomes)


def _ledger_states() -> Counter[str]:
    with hub_session() as session:
        return Counter(row.state for row in session.query(ExportLedger).all())


def test_chunks_never_split_a_voucher() -> None:
    lines = _lines(5)
    chunks = list(request_chunks(lines, 4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    for chunk in chunks:
        assert chunk.groupby("idempotency_key").size().eq(2).all()


def test_all_exported_and_ledger_confirmed(ledger: Ledger) -> None:
    target = ScriptedTarget(["ok"] * 3)
    report = load_lines(target, _lines(5), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"exported": 5}
    assert report.requests == 3
    assert _ledger_states() == {"exported": 5}


def test_transient_errors_are_retried_and_rejections_are_not(ledger: Ledger) -> None:
    target = ScriptedTarget(["transient", "ok", "ok"], reject={2})
    report = load_lines(target, _lines(4), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"exported": 3, "failed": 1}
    failed = [o for o in report.outcomes if o["status"] == "failed"]
    assert failed[0]["record_id"] == 2 and failed[0]["reason"] == "period closed"
    assert _ledger_states() == {"exported": 3}  # the rejected one may be sent again later


class Clock:
    """An injected clock: the settle time passes when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_commit_then_timeout_waits_then_is_confirmed_without_a_second_post(
    ledger: Ledger,
) -> None:
    clock = Clock()
    target = ScriptedTarget(["commit-then-unknown", "ok"])
    lines = _lines(4)
    report = load_lines(target, lines, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"waiting": 2, "exported": 2}
    assert target.lookups == 0  # not looked up in the same breath
    waiting = [o for o in report.outcomes if o["status"] == "waiting"]
    assert "waiting to be confirmed" in waiting[0]["reason"]
    assert _ledger_states() == {"pending": 2, "exported": 2}

    # The next run, still inside the settle time: nothing sent, nothing looked up.
    clock.advance(target.settle_s - 1)
    again = ScriptedTarget([])
    again.stored = target.stored
    report = load_lines(again, lines, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"waiting": 2, "exported": 2}
    assert again.requests_sent == 0

    # After the settle time: looked up, found, exported by run 3; never posted twice.
    clock.advance(2)
    last = ScriptedTarget([])
    last.stored = target.stored
    report = load_lines(last, lines, ledger=ledger, run_id=3, policy=NO_WAIT, clock=clock)
    assert Counter(o["status"] for o in report.outcomes) == {"exported": 4}
    assert report.reconciled == 2
    assert last.lookups == 1
    assert len(target.stored) == 4 and len(set(target.stored)) == 4
    assert _ledger_states() == {"exported": 4}


def test_a_commit_landing_after_the_client_gave_up_is_found_after_the_settle_time(
    ledger: Ledger,
) -> None:
    """A lookup right after the timeout would see nothing and send again: a double booking."""
    clock = Clock()
    lines = _lines(2)

    class LateCommit(ScriptedTarget):
        def load(self, lines: pd.DataFrame) -> BatchResult:
            self.requests_sent += 1
            self.late = list(lines["idempotency_key"].unique())
            raise OutcomeUnknown("read timeout")

    target = LateCommit([])
    report = load_lines(target, lines, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"waiting": 2}
    target.stored.extend(target.late)  # the target commits after the client gave up

    clock.advance(target.settle_s)
    nxt = ScriptedTarget([])
    nxt.stored = target.stored
    report = load_lines(nxt, lines, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"exported": 2}
    assert len(target.stored) == 2  # booked once


def test_unknown_before_commit_is_sent_again_after_the_settle_time(ledger: Ledger) -> None:
    clock = Clock()
    target = ScriptedTarget(["unknown"])
    lines = _lines(2)
    report = load_lines(target, lines, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"waiting": 2}
    assert target.stored == []

    clock.advance(target.settle_s)
    nxt = ScriptedTarget(["ok"])
    report = load_lines(nxt, lines, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"exported": 2}
    assert nxt.lookups == 1 and len(nxt.stored) == 2


def test_without_a_settle_time_an_unknown_outcome_is_looked_up_at_once(ledger: Ledger) -> None:
    target = ScriptedTarget(["commit-then-unknown", "ok"])
    target.settle_s = 0
    report = load_lines(target, _lines(4), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"exported": 4}
    assert len(target.stored) == 4 and len(set(target.stored)) == 4
    assert report.reconciled == 2

    resent = ScriptedTarget(["unknown", "ok"])
    resent.settle_s = 0
    with hub_session() as session:
        session.query(ExportLedger).delete()
    report = load_lines(resent, _lines(2), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"exported": 2}
    assert resent.lookups == 1 and len(resent.stored) == 2


def test_a_target_that_keeps_giving_no_clear_answer_stops_the_run(ledger: Ledger) -> None:
    target = ScriptedTarget(["unknown"] * 10)
    report = load_lines(target, _lines(10), ledger=ledger, run_id=1, policy=NO_WAIT)
    assert _statuses(report) == {"waiting": 6, "failed": 4}
    assert target.requests_sent == MAX_UNCLEAR_IN_A_ROW
    assert "no clear answer to 3 requests in a row" in (report.aborted or "")
    assert _ledger_states() == {"pending": 6}  # the unsent ones were never marked


def test_records_settled_for_an_earlier_run_are_exported_by_this_run(ledger: Ledger) -> None:
    """Even when this run was not asked to send them (another window, a retry of one record):
    the runs' exported outcomes add up to what the target holds."""
    clock = Clock()
    target = ScriptedTarget(["commit-then-unknown"])
    first = _lines(2)
    load_lines(target, first, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock)

    clock.advance(target.settle_s)
    other = _lines(3)[lambda f: f["record_id"] == 3]
    nxt = ScriptedTarget([])
    nxt.stored = target.stored
    report = load_lines(nxt, other, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock)
    exported = sorted((o["record_id"], o["amount_ore"]) for o in report.outcomes)
    assert exported == [(1, 1001), (2, 1002), (3, 1003)]
    assert {o["status"] for o in report.outcomes} == {"exported"}


def test_giving_up_on_transient_errors_fails_records_and_frees_them(ledger: Ledger) -> None:
    target = ScriptedTarget(["transient"] * 3)
    report = load_lines(target, _lines(2), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"failed": 2}
    assert "gave up after 3 attempts" in report.outcomes[0]["reason"]
    assert _ledger_states() == Counter()


def test_an_unreachable_target_stops_the_sending_and_says_so_for_the_run(
    ledger: Ledger,
) -> None:
    """The next requests would meet the same outage: not one more request after the first
    gave up, and the report tells the pipeline it may wait and try the run again."""
    target = ScriptedTarget(["transient"] * 3 + ["ok"] * 5)
    lines = _lines(4)  # two lines a claim, four lines a request: two requests
    report = load_lines(target, lines, ledger=ledger, run_id=None, policy=NO_WAIT)
    assert target.requests_sent == 3
    assert report.unreachable is not None and "gave up after 3 attempts" in report.unreachable
    assert report.failure is RunFailure.UNREACHABLE and report.aborted == report.unreachable
    assert _statuses(report) == {"failed": 4}
    assert all(o["reason"].startswith("not sent: ") for o in report.outcomes)
    assert _ledger_states() == Counter()  # released: the next try sends them


def test_abort_fails_the_rest_of_the_run_with_the_reason(ledger: Ledger) -> None:
    target = ScriptedTarget(["ok", "abort"])
    report = load_lines(target, _lines(6), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"exported": 2, "failed": 4}
    assert report.aborted == "token refused"
    assert all("token refused" in o["reason"] for o in report.outcomes if o["status"] == "failed")
    assert target.requests_sent == 2  # nothing sent after the abort


def test_pending_rows_left_by_a_crash_are_reconciled_before_sending(ledger: Ledger) -> None:
    lines = _lines(4)

    class CrashAfterCommit(ScriptedTarget):
        def load(self, lines: pd.DataFrame) -> BatchResult:
            super().load(lines)
            raise KeyboardInterrupt  # the process dies after the target committed

    clock = Clock()
    crashing = CrashAfterCommit(["ok"])
    with pytest.raises(KeyboardInterrupt):
        load_lines(crashing, lines, ledger=ledger, run_id=None, policy=NO_WAIT, clock=clock)
    assert _ledger_states() == {"pending": 2}

    # A crashed run's rows wait its request's timeout plus the settle time.
    clock.advance(crashing.read_timeout_s + crashing.settle_s)
    target = ScriptedTarget(["ok"])
    target.stored = list(crashing.stored)  # the same target system, seen by the next run
    report = load_lines(target, lines, ledger=ledger, run_id=None, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"exported": 4}
    assert len(target.stored) == 4 and len(set(target.stored)) == 4
    assert _ledger_states() == {"exported": 4}


def test_a_second_load_of_the_same_lines_posts_nothing(ledger: Ledger) -> None:
    lines = _lines(3)
    first = ScriptedTarget([])
    load_lines(first, lines, ledger=ledger, run_id=None, policy=NO_WAIT)
    again = ScriptedTarget([])
    again.stored = list(first.stored)
    report = load_lines(again, lines, ledger=ledger, run_id=None, policy=NO_WAIT)
    assert _statuses(report) == {"exported": 3}
    assert len(again.stored) == 3
    assert again.requests_sent == 0


class StagedTarget(ScriptedTarget):
    """A target that answers before it imports (as Xledger's GL import): records whose id is
    in ``refuse`` fail their import; ``check_fails`` makes the import question unanswerable."""

    import_is_staged = True

    def __init__(self, refuse: set[int] | None = None, check_fails: bool = False) -> None:
        super().__init__([])
        self.refuse = refuse or set()
        self.check_fails = check_fails
        self.checks: list[dict[str, str]] = []
        self.record_of: dict[str, int] = {}

    def load(self, lines: pd.DataFrame) -> BatchResult:
        for record in lines.drop_duplicates("idempotency_key").itertuples():
            self.record_of[record.idempotency_key] = int(record.record_id)
        return super().load(lines)

    def check_imports(self, accepted: dict[str, str]) -> list[RecordResult]:
        self.requests_sent += 1
        self.checks.append(dict(accepted))
        if self.check_fails:
            raise TransientError("the import errors could not be read")
        return [
            RecordResult(key, RecordStatus.REJECTED, reason=f"import refused {key[:6]}")
            for key in accepted
            if self.record_of.get(key) in self.refuse
        ]


def _next_run(previous: StagedTarget, **kwargs: Any) -> StagedTarget:
    target = StagedTarget(**kwargs)
    target.stored, target.record_of = previous.stored, previous.record_of
    return target


def test_a_staged_import_is_checked_once_per_run_and_a_refused_record_is_not_sent_again(
    ledger: Ledger,
) -> None:
    clock = Clock()
    lines = _lines(5)  # three requests of at most four lines
    target = StagedTarget(refuse={2})
    report = load_lines(target, lines, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"exported": 4, "failed": 1}
    refused = next(o for o in report.outcomes if o["status"] == "failed")
    assert refused["record_id"] == 2 and refused["reason"].startswith("import refused")
    assert len(target.checks) == 1 and len(target.checks[0]) == 5
    assert report.requests == 3 + 1
    assert _ledger_states() == {"exported": 4, "refused": 1}  # held at the target

    # The next run extracts the refused record again: it is looked up and asked about, never
    # sent a second time.
    clock.advance(60)
    again = _next_run(target, refuse={2})
    retry = lines[lines["record_id"] == 2]
    report = load_lines(again, retry, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock)
    assert [(o["record_id"], o["status"]) for o in report.outcomes] == [(2, "failed")]
    assert again.lookups == 1 and len(again.checks) == 1
    assert len(target.stored) == 5

    # Fixed at the target: the next run confirms it.
    clock.advance(60)
    fixed = _next_run(target)
    report = load_lines(fixed, retry, ledger=ledger, run_id=3, policy=NO_WAIT, clock=clock)
    assert [(o["record_id"], o["status"]) for o in report.outcomes] == [(2, "exported")]
    assert len(target.stored) == 5 and _ledger_states() == {"exported": 5}


def test_an_import_that_cannot_be_checked_waits_to_be_confirmed(ledger: Ledger) -> None:
    clock = Clock()
    lines = _lines(2)
    target = StagedTarget(check_fails=True)
    report = load_lines(target, lines, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"waiting": 2}
    assert "its import could not be checked" in report.outcomes[0]["reason"]
    assert _ledger_states() == {"pending": 2}

    clock.advance(60)
    later = _next_run(target)
    report = load_lines(later, lines, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock)
    assert _statuses(report) == {"exported": 2}
    assert later.lookups == 1 and len(target.stored) == 2
    assert _ledger_states() == {"exported": 2}
