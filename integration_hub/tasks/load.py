"""The load engine: chunks whole records into requests, keeps the ledger, retries what is safe.

It is the same for every target; an adapter only answers ``load`` and ``lookup`` and sorts each
answer into the error tree of :mod:`integration_hub.adapters.base`. What the engine does:

* ``TransientError`` (refused before processing): wait and send the same request again;
* ``OutcomeUnknown`` (no clear answer: a timeout, a reset, a gateway 5xx, an unreadable body):
  the records stay pending and *wait to be confirmed*. They are looked up at the target only
  after the target's settle time (``RecordAdapter.settle_s``), by a later run, because a commit can
  land after the client gave up; found ones are exported by that run, absent ones sent again;
* ``RunAbort`` (refused before processing, nothing more can succeed): release and stop;
* a record the target refused is failed with its reason and never retried as is;
* a target whose import is staged (``RecordAdapter.import_is_staged``: Xledger accepts GL import
  items, then imports them) is asked once per run, after the last request, which accepted
  records its import refused (``RecordAdapter.check_imports``). Only the others are exported. A
  refused record is failed with the target's reason and its ledger row becomes ``refused``: it
  is at the target, so the next run looks it up (and asks again) instead of sending it again.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import pandas as pd

from integration_hub.adapters.base import (
    Adapter,
    AdapterError,
    OutcomeUnknown,
    RecordAdapter,
    RecordStatus,
    RunAbort,
    TransientError,
)
from integration_hub.ledger import Ledger, PendingRecord
from integration_hub.models import OutcomeStatus, RunFailure, utcnow
from integration_hub.settings import get_settings
from integration_hub.tasks.lease import DISPLAY_ZONE

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTCOME_COLUMNS = [
    "record_id",
    "record_version",
    "idempotency_key",
    "status",
    "reason",
    "target_reference",
    "amount_ore",
]

MAX_UNCLEAR_IN_A_ROW = 3
"""After this many requests in a row got no clear answer, the run stops sending: a target that
keeps failing after commit should not see the whole night's claims (they would all wait)."""

Clock = Callable[[], datetime]


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After wins when it is given."""

    attempts: int = field(default_factory=lambda: get_settings().request_retry_attempts)
    base_delay_s: float = field(
        default_factory=lambda: get_settings().request_retry_base_delay_seconds
    )
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
    failure: RunFailure | None = None
    """What kind of stop ``aborted`` is (for the run row): refused unless said otherwise."""
    unreachable: str | None = None
    """Set (with ``aborted``) when the target could not be reached even after the retries: the
    run as a whole may wait and try again (:mod:`integration_hub.tasks.failures`); its unsent
    records were released, so the next attempt or run sends them."""
    reconciled: int = 0
    accepted: dict[str, tuple[PendingRecord, str]] = field(default_factory=dict)
    """Staged import only: key -> (ledger row, target reference) of records the target took
    whose import this run has not checked yet; emptied by the check."""

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.outcomes, columns=OUTCOME_COLUMNS)

    def add(
        self,
        records: pd.DataFrame,
        status: OutcomeStatus,
        reason: str | Mapping[str, str] | None = None,
        references: Mapping[str, str] | None = None,
    ) -> None:
        """One outcome per row of ``records`` (a :func:`records_of` frame); ``reason`` is one
        text for all, or one per idempotency key."""
        for key, record_id, version, amount in zip(
            records["idempotency_key"],
            records["record_id"],
            records["record_version"],
            records["amount_ore"],
            strict=True,
        ):
            self.outcomes.append(
                {
                    "record_id": int(record_id),
                    "record_version": int(version),
                    "idempotency_key": str(key),
                    "status": status.value,
                    "reason": reason.get(str(key)) if isinstance(reason, Mapping) else reason,
                    "target_reference": (references or {}).get(str(key)),
                    "amount_ore": int(amount),
                }
            )

    def add_pending(
        self,
        rows: list[PendingRecord],
        references: Mapping[str, str],
        status: OutcomeStatus = OutcomeStatus.EXPORTED,
        reason: str | None = None,
    ) -> None:
        """Outcomes for ledger rows: by default exported, as this run confirmed them."""
        for row in rows:
            self.outcomes.append(
                {
                    "record_id": row.record_id,
                    "record_version": row.record_version,
                    "idempotency_key": row.idempotency_key,
                    "status": status.value,
                    "reason": reason,
                    "target_reference": references.get(row.idempotency_key),
                    "amount_ore": row.amount_ore,
                }
            )


def pending_rows(records: pd.DataFrame) -> list[PendingRecord]:
    """Ledger rows for a :func:`records_of` frame."""
    return [
        PendingRecord(r.idempotency_key, int(r.record_id), int(r.record_version), int(r.amount_ore))
        for r in records.itertuples(index=False)
    ]


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


def read_with_retry(
    adapter: Adapter, policy: RetryPolicy, call: Callable[[], T], before_request: Hook = None
) -> T:
    """A read (chart of accounts, lookups): a transient failure is waited out and tried again,
    up to ``policy.attempts``; reads change nothing, so trying again is always safe."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return paced(adapter, before_request, call)
        except TransientError as exc:
            if attempt == policy.attempts:
                raise TransientError(f"{exc} (gave up after {attempt} attempts)") from None
            policy.sleep(policy.delay(attempt, exc.retry_after))
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Settled:
    """Earlier pending rows after :func:`settle_pending`."""

    confirmed: dict[str, str] = field(default_factory=dict)
    """key -> target reference: found at the target now, exported by this run (for a staged
    import: once its import check cleared them)."""
    rows: list[PendingRecord] = field(default_factory=list)
    """The ledger rows of ``confirmed`` (record, version, amount) for their outcomes."""
    waiting: dict[str, datetime] = field(default_factory=dict)
    """key -> when it may be looked up: still inside its settle time, left alone."""


def settle_pending(
    adapter: RecordAdapter,
    ledger: Ledger,
    policy: RetryPolicy,
    *,
    now: datetime,
    run_id: int | None,
    before_request: Hook = None,
) -> Settled:
    """Settle rows earlier requests left pending whose settle time has passed: confirm what
    the target has (this run then owns their outcome), release the rest so it can be sent.
    Rows still inside their settle time are left alone: a commit may yet land."""
    settled = Settled()
    due: list[PendingRecord] = []
    for row in ledger.pending():
        if row.settle_after is not None and row.settle_after > now:
            settled.waiting[row.idempotency_key] = row.settle_after
        else:
            due.append(row)
    if not due:
        return settled
    keys = [row.idempotency_key for row in due]
    found = read_with_retry(
        adapter, policy, functools.partial(adapter.lookup, keys), before_request
    )
    if not adapter.import_is_staged:  # staged: confirmed once the import check cleared them
        ledger.confirm(found, run_id)
    ledger.release([key for key in keys if key not in found])
    settled.confirmed = found
    settled.rows = [row for row in due if row.idempotency_key in found]
    return settled


def waiting_reason(target: str, cause: str, settle_after: datetime) -> str:
    when = settle_after.astimezone(DISPLAY_ZONE).strftime("%Y-%m-%d %H:%M")
    return (
        f"sent, but {target} gave no clear answer ({cause}); waiting to be confirmed: it is "
        f"looked up at {target} from {when} on, by the next run, before anything is sent again"
    )


def load_lines(
    adapter: RecordAdapter,
    lines: pd.DataFrame,
    *,
    ledger: Ledger,
    run_id: int | None,
    policy: RetryPolicy | None = None,
    progress: Callable[[int, int], None] | None = None,
    before_request: Hook = None,
    clock: Clock = utcnow,
) -> LoadReport:
    """Send ``lines`` (whole records) and say for every record: exported, failed and why, or
    waiting to be confirmed; plus every earlier record this run settled at the target.

    ``before_request`` runs before every request to the target: the pipeline paces requests
    there (:class:`~integration_hub.tasks.pacing.Pacer`) and stops a run that lost its lease.
    """
    policy = policy or RetryPolicy()
    report = LoadReport()
    adapter.requests_sent = 0
    try:
        settled = settle_pending(
            adapter, ledger, policy, now=clock(), run_id=run_id, before_request=before_request
        )
    except AdapterError as exc:
        report.aborted = (
            f"could not look up earlier unconfirmed exports at {adapter.display_name}: {exc}"
        )
        if isinstance(exc, TransientError):
            report.unreachable = str(exc)
            report.failure = RunFailure.UNREACHABLE
        if not lines.empty:
            report.add(records_of(lines), OutcomeStatus.FAILED, f"not sent: {report.aborted}")
        report.requests = adapter.requests_sent
        return report
    accept(adapter, ledger, report, settled.rows, settled.confirmed, run_id)
    report.reconciled = len(settled.confirmed)
    if not lines.empty:
        _send_lines(
            adapter,
            lines,
            settled,
            ledger=ledger,
            run_id=run_id,
            policy=policy,
            report=report,
            progress=progress,
            before_request=before_request,
            clock=clock,
        )
    check_imports(
        adapter, ledger, report, policy, run_id=run_id, before_request=before_request, clock=clock
    )
    report.requests = adapter.requests_sent
    return report


def _send_lines(
    adapter: RecordAdapter,
    lines: pd.DataFrame,
    settled: Settled,
    *,
    ledger: Ledger,
    run_id: int | None,
    policy: RetryPolicy,
    report: LoadReport,
    progress: Callable[[int, int], None] | None,
    before_request: Hook,
    clock: Clock,
) -> None:
    """Send what is neither settled nor waiting nor exported already, request by request."""
    lines = lines[~lines["idempotency_key"].isin(list(settled.confirmed))]
    waiting = lines["idempotency_key"].isin(list(settled.waiting))
    if waiting.any():
        held = records_of(lines[waiting])
        report.add(
            held,
            OutcomeStatus.WAITING,
            {
                key: waiting_reason(adapter.display_name, "an earlier run", settled.waiting[key])
                for key in held["idempotency_key"]
            },
        )
        lines = lines[~waiting]
    # Confirmed already by an earlier attempt of this run's load task.
    confirmed = ledger.exported_references(list(lines["idempotency_key"].unique()))
    if confirmed:
        done = lines["idempotency_key"].isin(list(confirmed))
        report.add(records_of(lines[done]), OutcomeStatus.EXPORTED, None, confirmed)
        lines = lines[~done]

    total = lines["idempotency_key"].nunique()
    sent = 0
    unclear_in_a_row = 0
    chunks = list(request_chunks(lines, adapter.max_lines_per_request))
    for index, chunk in enumerate(chunks):
        if report.aborted:
            report.add(records_of(chunk), OutcomeStatus.FAILED, f"not sent: {report.aborted}")
            continue
        answered = _send_chunk(
            adapter,
            chunk,
            ledger=ledger,
            run_id=run_id,
            policy=policy,
            report=report,
            before_request=before_request,
            clock=clock,
        )
        unclear_in_a_row = 0 if answered else unclear_in_a_row + 1
        if unclear_in_a_row >= MAX_UNCLEAR_IN_A_ROW and not report.aborted:
            report.failure = RunFailure.UNREACHABLE
            report.aborted = (
                f"{adapter.display_name} gave no clear answer to {unclear_in_a_row} requests in "
                "a row; the run stopped, and their records are looked up before anything is "
                "sent again"
            )
        sent += chunk["idempotency_key"].nunique()
        if progress:
            progress(sent, total)
        log.debug("chunk %s/%s sent", index + 1, len(chunks))


def accept(
    adapter: RecordAdapter,
    ledger: Ledger,
    report: LoadReport,
    rows: list[PendingRecord],
    references: Mapping[str, str],
    run_id: int | None,
) -> None:
    """Records the target took (answered or found): exported now, or, for a staged import,
    kept pending until :func:`check_imports` has asked about them."""
    if not references:
        return
    if adapter.import_is_staged:
        for row in rows:
            report.accepted[row.idempotency_key] = (row, references[row.idempotency_key])
        return
    ledger.confirm(dict(references), run_id)
    report.add_pending(rows, references)


def check_imports(
    adapter: RecordAdapter,
    ledger: Ledger,
    report: LoadReport,
    policy: RetryPolicy,
    *,
    run_id: int | None,
    before_request: Hook = None,
    clock: Clock = utcnow,
) -> None:
    """One question per run, after the last request: which accepted records did the target's
    import refuse? Those fail with its reason and are marked refused (they are at the target:
    the next run looks them up instead of sending them); the rest are exported. If the question
    cannot be asked, all of them wait to be confirmed by the next run."""
    accepted, report.accepted = report.accepted, {}
    if not accepted:
        return
    references = {key: reference for key, (_row, reference) in accepted.items()}
    try:
        results = read_with_retry(
            adapter,
            policy,
            functools.partial(adapter.check_imports, references),
            before_request,
        )
    except AdapterError as exc:
        now = clock()
        ledger.mark_unknown(list(accepted), now)
        reason = waiting_reason(
            adapter.display_name, f"its import could not be checked: {exc}", now
        )
        rows = [row for row, _reference in accepted.values()]
        report.add_pending(rows, {}, OutcomeStatus.WAITING, reason)
        return
    refused = {
        r.idempotency_key: r.reason or f"{adapter.display_name} could not import it"
        for r in results
        if r.status is RecordStatus.REJECTED and r.idempotency_key in accepted
    }
    imported = {key: ref for key, ref in references.items() if key not in refused}
    ledger.confirm(imported, run_id)
    report.add_pending([accepted[key][0] for key in imported], imported)
    ledger.mark_refused(list(refused))
    for key, reason in refused.items():
        report.add_pending([accepted[key][0]], {}, OutcomeStatus.FAILED, reason)


def _send_chunk(
    adapter: RecordAdapter,
    chunk: pd.DataFrame,
    *,
    ledger: Ledger,
    run_id: int | None,
    policy: RetryPolicy,
    report: LoadReport,
    before_request: Hook = None,
    clock: Clock = utcnow,
) -> bool:
    """Send one request's records until each has an outcome; False when the target gave no
    clear answer (the records then wait to be confirmed)."""
    records = records_of(chunk)
    in_flight_until = clock() + timedelta(seconds=adapter.read_timeout_s + adapter.settle_s)
    ledger.mark_pending(pending_rows(records), run_id, settle_after=in_flight_until)
    remaining = chunk
    attempt = 0
    while not remaining.empty:
        attempt += 1
        keys = list(remaining["idempotency_key"].unique())
        try:
            result = paced(adapter, before_request, functools.partial(adapter.load, remaining))
        except TransientError as exc:
            if attempt >= policy.attempts:
                # Refused before processing every time: the target is down or throttling us.
                # The next requests would fare alike, so the run stops sending (and may wait
                # and try again as a whole); nothing of these records was stored.
                ledger.release(keys)
                reason = f"{exc} (gave up after {attempt} attempts)"
                report.unreachable = reason
                report.aborted = reason
                report.failure = RunFailure.UNREACHABLE
                report.add(records_of(remaining), OutcomeStatus.FAILED, f"not sent: {reason}")
                return True
            policy.sleep(policy.delay(attempt, exc.retry_after))
            continue
        except OutcomeUnknown as exc:
            if adapter.settle_s > 0:
                _leave_waiting(adapter, ledger, remaining, str(exc), report, clock)
                return False
            # No settle time configured: look the keys up at once.
            try:
                found = read_with_retry(
                    adapter, policy, functools.partial(adapter.lookup, keys), before_request
                )
            except AdapterError as lookup_exc:
                _leave_waiting(adapter, ledger, remaining, f"{exc}; {lookup_exc}", report, clock)
                if isinstance(lookup_exc, RunAbort):
                    report.aborted = str(lookup_exc)
                return False
            if found:
                confirmed = remaining[remaining["idempotency_key"].isin(list(found))]
                accept(adapter, ledger, report, pending_rows(records_of(confirmed)), found, run_id)
                report.reconciled += len(found)
                remaining = remaining[~remaining["idempotency_key"].isin(list(found))]
            if remaining.empty:
                return True
            if attempt >= policy.attempts:
                ledger.release(list(remaining["idempotency_key"].unique()))
                report.add(
                    records_of(remaining),
                    OutcomeStatus.FAILED,
                    f"{exc} (gave up after {attempt} attempts; retry later)",
                )
                return True
            policy.sleep(policy.delay(attempt))
            continue
        except RunAbort as exc:
            # A refusal before processing (or before the request left): nothing was stored.
            ledger.release(keys)
            report.aborted = str(exc)
            report.add(records_of(remaining), OutcomeStatus.FAILED, f"not sent: {exc}")
            return True
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
        ledger.release(list(rejected))
        by_key = records_of(remaining).set_index("idempotency_key", drop=False)
        accept(adapter, ledger, report, pending_rows(by_key.loc[list(exported)]), exported, run_id)
        report.add(by_key.loc[list(rejected)], OutcomeStatus.FAILED, rejected)
        return True
    return True


def _leave_waiting(
    adapter: RecordAdapter,
    ledger: Ledger,
    remaining: pd.DataFrame,
    cause: str,
    report: LoadReport,
    clock: Clock,
) -> None:
    """Keep the records pending until their settle time has passed, and say so."""
    settle_after = clock() + timedelta(seconds=adapter.settle_s)
    ledger.mark_unknown(list(remaining["idempotency_key"].unique()), settle_after)
    report.add(
        records_of(remaining),
        OutcomeStatus.WAITING,
        waiting_reason(adapter.display_name, cause, settle_after),
    )
