"""Guards without Prefect: the export lease under concurrent attempts, request pacing across
runs, and backfill windows. Database cases run on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import threading
from datetime import date, timedelta
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
    RecordAdapter,
    RecordResult,
    RecordStatus,
    ReferenceCode,
    RunAbort,
    secret,
)
from integration_hub.db import hub_session
from integration_hub.ledger import Ledger
from integration_hub.mappings.resolver import map_claims
from integration_hub.mappings.spec import load_template
from integration_hub.models import ExportLease, Integration, utcnow
from integration_hub.tasks import lease
from integration_hub.tasks.load import RetryPolicy, load_lines
from integration_hub.tasks.pacing import Pacer, RateLimit, take_slot, target_key
from integration_hub.tasks.windows import chunk_windows


@pytest.fixture
def integration_id(hub_env: str) -> int:
    with hub_session() as session:
        row = Integration(organisation_id=1, type_key="xledger")
        session.add(row)
        session.flush()
        return row.id or 0


# -- the export lease --------------------------------------------------------------------------
def _race(integration_id: int, runs: tuple[int, int]) -> list[Any]:
    """Both runs try to take the lease at the same moment; returns what each got."""
    barrier = threading.Barrier(len(runs))
    results: list[Any] = []

    def attempt(run_id: int) -> None:
        barrier.wait()
        try:
            results.append(
                lease.acquire(integration_id, run_id, what="Xledger for testorg", wait_s=0)
            )
        except lease.ExportBusy as exc:
            results.append(exc)

    threads = [threading.Thread(target=attempt, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_concurrent_attempts_one_runs_the_other_is_refused(integration_id: int) -> None:
    for round_no in range(3):
        results = _race(integration_id, (10 * round_no + 1, 10 * round_no + 2))
        held = [r for r in results if isinstance(r, lease.Lease)]
        refused = [r for r in results if isinstance(r, lease.ExportBusy)]
        assert len(held) == 1 and len(refused) == 1
        message = str(refused[0])
        assert message.startswith("an export of Xledger for testorg is already running (run ")
        assert f"run {held[0].run_id}, started " in message
        held[0].release()
    assert lease.holder(integration_id) is None


def test_a_second_trigger_waits_for_the_first_within_its_bound(integration_id: int) -> None:
    first = lease.acquire(integration_id, 1, what="X", wait_s=0)
    releaser = threading.Timer(0.3, first.release)
    releaser.start()
    second = lease.acquire(integration_id, 2, what="X", wait_s=20, poll_s=0.05)
    assert lease.holder(integration_id).run_id == 2  # type: ignore[union-attr]
    second.release()
    releaser.join()


def test_a_crashed_runs_lease_expires_and_is_taken_over(integration_id: int) -> None:
    past = utcnow() - timedelta(minutes=5)
    with hub_session() as session:
        session.add(
            ExportLease(
                integration_id=integration_id,
                run_id=7,
                owner="gone-host:1",
                acquired_at=past,
                heartbeat_at=past,
                expires_at=past + timedelta(seconds=120),
            )
        )
    taken = lease.acquire(integration_id, 8, what="X", wait_s=0)
    assert lease.holder(integration_id).run_id == 8  # type: ignore[union-attr]
    taken.release()


def test_a_run_that_lost_its_lease_stops_sending(integration_id: int) -> None:
    held = lease.acquire(integration_id, 1, what="X", wait_s=0, heartbeat_s=3600)
    assert held.renew()
    with hub_session() as session:  # another run took it over after it stalled
        row = session.query(ExportLease).one()
        row.run_id = 2
    assert not held.renew()
    held.lost = True
    with pytest.raises(lease.LeaseLost, match="lost its export lease"):
        held.check()
    held.release()
    assert lease.holder(integration_id).run_id == 2  # type: ignore[union-attr]


# -- pacing ------------------------------------------------------------------------------------
def test_slots_taken_concurrently_are_spaced_by_the_limit(hub_env: str) -> None:
    limit = RateLimit(10, 0.2)  # one slot every 20 ms, at most 10 in any 0.2 s
    slots: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            slot = take_slot("xledger:example", limit)
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    ordered = sorted(slots)
    assert len(set(ordered)) == 15
    assert min(b - a for a, b in itertools.pairwise(ordered)) >= limit.interval_us
    # So no window of the limit's period holds more slots than allowed, whoever took them.
    assert all(ordered[i + 10] - ordered[i] >= 200_000 for i in range(len(ordered) - 10))


def test_pacer_sleeps_until_its_slot(hub_env: str) -> None:
    now = [1_000_000_000]
    slept: list[float] = []
    pacer = Pacer("k", RateLimit(4, 1.0), sleep=slept.append, clock=lambda: now[0])
    for _ in range(3):
        pacer()
    assert slept == [0.25, 0.5]  # the first request goes at once, the next wait their turn
    assert target_key("xledger", "https://user:pw@www.xledger.net/graphql?x=1") == (
        "xledger:www.xledger.net"
    )


class CountingTarget(RecordAdapter):
    """Stores every record; counts requests. Enough to see the hook run once per request."""

    key = "counting"
    display_name = "Counting"
    config_model = type(
        "CountingConfig",
        (IntegrationConfig,),
        {"__annotations__": {"t": SecretStr}, "t": secret(label="Token")},
    )
    max_lines_per_request = 4

    def __init__(self) -> None:
        super().__init__(self.config_model(t=SecretStr("x" * 12)))

    def probe(self, deadline_s: float) -> ConnectionResult:
        return ConnectionResult(ConnectionStatus.OK, "ok")

    def reference_codes(self) -> list[ReferenceCode]:
        return []

    def lookup(self, keys: list[str]) -> dict[str, str]:
        self.requests_sent += 1
        return {}

    def load(self, lines: pd.DataFrame) -> BatchResult:
        self.requests_sent += 1
        keys = lines["idempotency_key"].drop_duplicates()
        return BatchResult([RecordResult(k, RecordStatus.EXPORTED, f"ref-{k[:4]}") for k in keys])


def _lines(count: int) -> pd.DataFrame:
    claims = claims_frame([{"claim_id": i} for i in range(1, count + 1)])
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


def test_the_load_engine_asks_before_every_request_and_stops_when_refused(
    ledger: Ledger,
) -> None:
    target, calls = CountingTarget(), []
    no_wait = RetryPolicy(attempts=2, base_delay_s=0, sleep=lambda _s: None)
    report = load_lines(
        target, _lines(5), ledger=ledger, run_id=None, policy=no_wait,
        before_request=lambda: calls.append(1),
    )  # fmt: skip
    assert target.requests_sent == 3 and len(calls) == 3
    assert {o["status"] for o in report.outcomes} == {"exported"}

    def refuse() -> None:
        raise RunAbort("run 4 lost its export lease")

    report = load_lines(
        CountingTarget(), _lines(8).iloc[10:], ledger=ledger, run_id=None, policy=no_wait,
        before_request=refuse,
    )  # fmt: skip
    assert report.aborted == "run 4 lost its export lease"
    assert {o["status"] for o in report.outcomes} == {"failed"}


# -- backfill windows --------------------------------------------------------------------------
def test_chunk_windows_follow_the_calendar() -> None:
    assert chunk_windows(date(2026, 1, 15), date(2026, 3, 10), "month") == [
        (date(2026, 1, 15), date(2026, 1, 31)),
        (date(2026, 2, 1), date(2026, 2, 28)),
        (date(2026, 3, 1), date(2026, 3, 10)),
    ]
    assert chunk_windows(date(2025, 12, 1), date(2026, 1, 31), "month")[0][1] == date(2025, 12, 31)
    weeks = chunk_windows(date(2026, 3, 4), date(2026, 3, 17), "week")  # a Wednesday
    assert weeks[0] == (date(2026, 3, 4), date(2026, 3, 8)) and weeks[-1][1] == date(2026, 3, 17)
    assert all(s.weekday() == 0 for s, _ in weeks[1:])
    assert len(chunk_windows(date(2026, 2, 27), date(2026, 3, 2), "day")) == 4
    with pytest.raises(ValueError, match="chunk must be one of month, week, day"):
        chunk_windows(date(2026, 1, 1), date(2026, 1, 2), "year")
    with pytest.raises(ValueError, match="starts"):
        chunk_windows(date(2026, 2, 1), date(2026, 1, 1))
