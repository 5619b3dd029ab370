"""The load engine: chunks whole records into requests, keeps the ledger, retries what is safe.

It is the same for every target; an adapter only answers ``load`` and ``lookup``. Retries cover
whole-request trouble (rate limits, 5xx, dropped connections), never a record the target refused.
An answer that never came is reconciled by looking the keys up before anything is sent again.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pandas as pd

from integration_hub.adapters.base import (
    Adapter,
    OutcomeUnknown,
    RecordStatus,
    RunAbort,
    TransientError,
)
from integration_hub.ledger import Ledger, PendingRecord
from integration_hub.models import OutcomeStatus

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTCOME_COLUMNS = [
    "record_id",
    "record_version",
    "idempotency_key",
    "status",
    "reason",
    "target_reference",
]


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After wins when it is given."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class LoadReport:
    outcomes: list[dict[str, object]] = field(default_factory=list)
    requests: int = 0
    aborted: str | None = None
    reconciled: int = 0

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.outcomes, columns=OUTCOME_COLUMNS)

    def add(
        self,
        records: pd.DataFrame,
        status: OutcomeStatus,
        reason: str | None = None,
        references: dict[str, str] | None = None,
    ) -> None:
        for key, record_id, version in zip(
            records["idempotency_key"],
            records["record_id"],
            records["record_version"],
            strict=True,
        ):
            self.outcomes.append(
                {
                    "record_id": int(record_id),
                    "record_version": int(version),
                    "idempotency_key": str(key),
                    "status": status.value,
                    "reason": reason,
                    "target_reference": (references or {}).get(str(key)),
                }
            )


def records_of(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per record (the first line's identity, the debit amount)."""
    firsts = lines.drop_duplicates("idempotency_key")
    debit = lines[lines["amount_ore"] > 0].drop_duplicates("idempotency_key")
    amounts = debit.set_index("idempotency_key")["amount_ore"]
    return firsts.assign(
        amount_ore=firsts["idempotency_key"].map(amounts).fillna(0).astype("int64")
    )[["idempotency_key", "record_id", "record_version", "amount_ore"]]


def request_chunks(lines: pd.DataFrame, max_lines: int) -> Iterator[pd.DataFrame]:
    """Consecutive slices of at most ``max_lines`` lines that never split a record."""
    sizes = lines.groupby("idempotency_key", sort=False).size()
    start = 0
    taken = 0
    positions = []
    for size in sizes:
        if size > max_lines:
            raise ValueError(f"a record has {size} lines; the target takes {max_lines}")
        if taken + size > max_lines:
            positions.append((start, start + taken))
            start += taken
            taken = 0
        taken += size
    if taken:
        positions.append((start, start + taken))
    for begin, end in positions:
        yield lines.iloc[begin:end]


Hook = Callable[[], None] | None
"""Called before every request to the target (pacing, lease checks); may raise ``RunAbort``."""


def paced(adapter: Adapter, before_request: Hook, call: Callable[[], T]) -> T:
    """Run one adapter call behind ``before_request``; a call that took several requests (paging)
    is charged for the extra ones afterwards, so the next call waits for them."""
    if before_request is None:
        return call()
    before_request()
    sent = adapter.requests_sent
    try:
        return call()
    finally:
        for _ in range(adapter.requests_sent - sent - 1):
            before_request()


def _lookup_with_retry(
    adapter: Adapter, keys: list[str], policy: RetryPolicy, before_request: Hook = None
) -> dict[str, str]:
    for attempt in range(1, policy.attempts + 1):
        try:
            return paced(adapter, before_request, functools.partial(adapter.lookup, keys))
        except (TransientError, OutcomeUnknown) as exc:
            if attempt == policy.attempts:
                raise OutcomeUnknown(f"could not check the target: {exc}") from None
            policy.sleep(policy.delay(attempt, getattr(exc, "retry_after", None)))
    return {}


def reconcile_pending(
    adapter: Adapter, ledger: Ledger, policy: RetryPolicy, before_request: Hook = None
) -> dict[str, str]:
    """Settle rows an earlier run left pending: confirm what the target has, release the rest."""
    pending = ledger.pending_keys()
    if not pending:
        return {}
    found = _lookup_with_retry(adapter, pending, policy, before_request)
    ledger.confirm(found)
    ledger.release([key for key in pending if key not in found])
    return found


def load_lines(
    adapter: Adapter,
    lines: pd.DataFrame,
    *,
    ledger: Ledger,
    run_id: int | None,
    policy: RetryPolicy | None = None,
    progress: Callable[[int, int], None] | None = None,
    before_request: Hook = None,
) -> LoadReport:
    """Send ``lines`` (whole records) and say for every record: exported or failed, and why.

    ``before_request`` runs before every request to the target: the pipeline paces requests
    there (:class:`~integration_hub.tasks.pacing.Pacer`) and stops a run that lost its lease.
    """
    policy = policy or RetryPolicy()
    report = LoadReport()
    if lines.empty:
        return report
    adapter.requests_sent = 0
    try:
        reconciled = reconcile_pending(adapter, ledger, policy, before_request)
    except (OutcomeUnknown, RunAbort) as exc:
        report.aborted = f"could not reconcile earlier unconfirmed exports: {exc}"
        report.add(records_of(lines), OutcomeStatus.FAILED, f"not sent: {report.aborted}")
        report.requests = adapter.requests_sent
        return report
    # Confirmed already: reconciled just now, or sent by an earlier attempt of this task.
    confirmed = ledger.exported_references(list(lines["idempotency_key"].unique()))
    if confirmed:
        done = lines["idempotency_key"].isin(list(confirmed))
        report.add(records_of(lines[done]), OutcomeStatus.EXPORTED, None, confirmed)
        report.reconciled = len(set(confirmed) & set(reconciled))
        lines = lines[~done]

    total = lines["idempotency_key"].nunique()
    sent = 0
    chunks = list(request_chunks(lines, adapter.max_lines_per_request))
    for index, chunk in enumerate(chunks):
        if report.aborted:
            report.add(records_of(chunk), OutcomeStatus.FAILED, f"not sent: {report.aborted}")
            continue
        _send_chunk(
            adapter,
            chunk,
            ledger=ledger,
            run_id=run_id,
            policy=policy,
            report=report,
            before_request=before_request,
        )
        sent += chunk["idempotency_key"].nunique()
        if progress:
            progress(sent, total)
        log.debug("chunk %s/%s sent", index + 1, len(chunks))
    report.requests = adapter.requests_sent
    return report


def _send_chunk(
    adapter: Adapter,
    chunk: pd.DataFrame,
    *,
    ledger: Ledger,
    run_id: int | None,
    policy: RetryPolicy,
    report: LoadReport,
    before_request: Hook = None,
) -> None:
    records = records_of(chunk)
    ledger.mark_pending(
        [
            PendingRecord(
                r.idempotency_key, int(r.record_id), int(r.record_version), int(r.amount_ore)
            )
            for r in records.itertuples(index=False)
        ],
        run_id,
    )
    remaining = chunk
    attempt = 0
    while not remaining.empty:
        attempt += 1
        keys = list(remaining["idempotency_key"].unique())
        try:
            result = paced(adapter, before_request, functools.partial(adapter.load, remaining))
        except TransientError as exc:
            if attempt >= policy.attempts:
                ledger.release(keys)
                report.add(
                    records_of(remaining),
                    OutcomeStatus.FAILED,
                    f"{exc} (gave up after {attempt} attempts; retry later)",
                )
                return
            policy.sleep(policy.delay(attempt, exc.retry_after))
            continue
        except OutcomeUnknown as exc:
            try:
                found = _lookup_with_retry(adapter, keys, policy, before_request)
            except (OutcomeUnknown, RunAbort) as lookup_exc:
                # Leave the rows pending: the next run reconciles them before sending.
                if isinstance(lookup_exc, RunAbort):
                    report.aborted = str(lookup_exc)
                report.add(
                    records_of(remaining),
                    OutcomeStatus.FAILED,
                    f"{exc}; {lookup_exc}; it will be checked at the target before any new attempt",
                )
                return
            if found:
                ledger.confirm(found)
                confirmed = remaining[remaining["idempotency_key"].isin(list(found))]
                report.add(records_of(confirmed), OutcomeStatus.EXPORTED, None, found)
                report.reconciled += len(found)
                remaining = remaining[~remaining["idempotency_key"].isin(list(found))]
            if remaining.empty:
                return
            if attempt >= policy.attempts:
                ledger.release(list(remaining["idempotency_key"].unique()))
                report.add(
                    records_of(remaining),
                    OutcomeStatus.FAILED,
                    f"{exc} (gave up after {attempt} attempts; retry later)",
                )
                return
            policy.sleep(policy.delay(attempt))
            continue
        except RunAbort as exc:
            ledger.release(keys)
            report.aborted = str(exc)
            report.add(records_of(remaining), OutcomeStatus.FAILED, f"not sent: {exc}")
            return
        exported = {
            r.idempotency_key: r.target_reference or ""
            for r in result.results
            if r.status is RecordStatus.EXPORTED
        }
        rejected = {
            r.idempotency_key: r.reason or "rejected by the target"
            for r in result.results
            if r.status is RecordStatus.REJECTED
        }
        ledger.confirm(exported)
        ledger.release(list(rejected))
        by_key = records_of(remaining).set_index("idempotency_key", drop=False)
        report.add(by_key.loc[list(exported)], OutcomeStatus.EXPORTED, None, exported)
        for key, reason in rejected.items():
            report.add(by_key.loc[[key]], OutcomeStatus.FAILED, reason)
        return
