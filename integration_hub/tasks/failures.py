"""Why a run did not finish, in words a person can act on, and how long to keep trying.

One table turns whatever stopped a run into a :class:`~integration_hub.models.RunFailure` and a
reason (Airbyte-CDK style: the exception's class decides the kind, never its text)::

    exception                              failure        the reason says
    -------------------------------------  -------------  -----------------------------------
    TransientError (after the retries)     unreachable    the target could not be reached, for
                                                          how long the hub tried, that the next
                                                          run tries again
    RunAbort                               refused        what the target refused (credentials,
                                                          credits), which an admin must fix
    ExportNotReady, IntegrationNotConfigured,
    VaultError, MappingError, the schema   configuration  what to finish or fix in the hub
    ExportBusy                             busy           which run holds the integration
    KeyboardInterrupt, a Prefect cancel    cancelled      who stopped it, and that running it
                                                          again continues where it stopped
    anything else                          unexpected     the error's class and text, for the
                                                          hub's operators

The reason is what the run row, the health monitor, the CLI's last line, the alert and the
Prefect flow run's state message all show, so it is written once, here.

Run-level retry: a target down for a few minutes at 02:00 must not cost a night. Transient
trouble (no connection, 5xx, throttling) that outlasts a request's own retries is waited out and
the run tried again, with doubling waits, for at most a bounded time (:class:`RetryBudget`,
settings ``INTEGRATIONS_RUN_RETRY_SECONDS`` for scheduled and backfill runs and
``INTEGRATIONS_MANUAL_RUN_RETRY_SECONDS`` for runs a person started and watches). No target
publishes how long its outages last; the defaults (30 minutes, 1 minute) are our assumption.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from integration_hub.adapters.base import RunAbort, TransientError
from integration_hub.models import RunFailure

Announcer = Callable[[str], None]
_ANNOUNCER: ContextVar[Announcer | None] = ContextVar("run_announcer", default=None)


@contextmanager
def announcements(callback: Announcer) -> Iterator[None]:
    """Let ``callback`` hear what a run in this context is waiting for (the CLI prints it: a
    person watching a run that waits for its target must know it is waiting, and why)."""
    token = _ANNOUNCER.set(callback)
    try:
        yield
    finally:
        _ANNOUNCER.reset(token)


def announce(message: str) -> None:
    listener = _ANNOUNCER.get()
    if listener is not None:
        listener(message)


SCHEDULED_TRIGGERS = frozenset({"schedule", "backfill"})
"""Runs nobody watches: they wait out an outage for the longer budget."""


class RunStopped(RuntimeError):
    """A run did not finish; its hub run row says so with the same ``failure`` and ``reason``.

    Raised out of the export pipeline in place of what stopped it (which is its ``__cause__``),
    so that callers (services, the backfill, Prefect's state message) see one human sentence."""

    def __init__(self, run_id: int, failure: RunFailure, reason: str) -> None:
        super().__init__(reason)
        self.run_id = run_id
        self.failure = failure
        self.reason = reason

    def __reduce__(self) -> tuple[type[RunStopped], tuple[int, RunFailure, str]]:
        """Prefect stores a failed run's exception (pickled); rebuilt from all three."""
        return (RunStopped, (self.run_id, self.failure, self.reason))


def classify(exc: BaseException, target: str) -> tuple[RunFailure, str]:
    """The failure kind and the reason of what stopped a run against ``target``."""
    from integration_hub.adapters.factory import IntegrationNotConfigured
    from integration_hub.mappings.spec import MappingError
    from integration_hub.tasks.context import ExportNotReady
    from integration_hub.tasks.lease import ExportBusy, LeaseLost
    from integration_hub.vault import VaultError

    if isinstance(exc, RunStopped):
        return exc.failure, exc.reason
    if isinstance(exc, KeyboardInterrupt) or _is_cancellation(exc):
        return RunFailure.CANCELLED, (
            "stopped by a person (Ctrl-C or cancelled) before it finished; what was sent is "
            "recorded, and running it again continues where it stopped"
        )
    if isinstance(exc, TransientError):
        return RunFailure.UNREACHABLE, str(exc)
    if isinstance(exc, RunAbort | LeaseLost):
        return RunFailure.REFUSED, str(exc)
    if isinstance(exc, ExportBusy):
        return RunFailure.BUSY, str(exc)
    if isinstance(exc, ExportNotReady | IntegrationNotConfigured | VaultError):
        return RunFailure.CONFIGURATION, str(exc)
    if isinstance(exc, MappingError):
        return RunFailure.CONFIGURATION, "the field mapping cannot be used: " + "; ".join(
            exc.problems
        )
    text = str(exc).strip()
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return RunFailure.UNEXPECTED, (
        f"the hub met an unexpected error ({detail[:500]}); nothing more was sent. Tell the "
        f"hub's operators: the Prefect flow run's log has the details"
    )


def _is_cancellation(exc: BaseException) -> bool:
    """Prefect's cancellation (``TerminationSignal``, ``Abort``...) without importing Prefect
    at module level: its exceptions are recognised by name."""
    return type(exc).__name__ in {"TerminationSignal", "Abort", "CancelledRun", "Cancelled"}


def _cause(target: str, cause: str) -> str:
    cause = _GAVE_UP.sub("", cause).strip()
    return cause if target in cause else f"{target} could not be reached: {cause}"


def waiting_message(target: str, cause: str, wait_s: float, attempt: int) -> str:
    """What a run waiting for its target says while it waits."""
    return (
        f"{_cause(target, cause)}; trying again in {_duration(wait_s)} (try {attempt}). "
        "Ctrl-C stops; nothing is lost."
    )


def unreachable_reason(target: str, cause: str, tried_s: float) -> str:
    """The reason of a run that gave up waiting for its target (``cause``: what the last try
    met, e.g. "Xledger could not be reached (ConnectError) (gave up after 5 attempts)")."""
    kept = f"; the hub kept trying for {_duration(tried_s)}" if tried_s >= 1 else ""
    later = "Nothing was lost: the next run sends what this one could not"
    return f"{_cause(target, cause)}{kept}. {later}"


_GAVE_UP = re.compile(r"\s*\(gave up after \d+ attempts?\)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    return f"{round(seconds / 60)} min"


@dataclass
class RetryBudget:
    """How long a run keeps trying a target that cannot be reached: waits ``first_wait_s``,
    then doubling up to ``max_wait_s``, until ``seconds`` have passed since the first failure.
    ``clock`` and ``sleep`` are injected so tests do not wait."""

    seconds: float
    first_wait_s: float = 15.0
    max_wait_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    started: float | None = field(default=None, init=False)
    attempts: int = field(default=0, init=False)

    def next_wait(self) -> float | None:
        """Seconds to wait before the next try, or None when the budget is spent."""
        now = self.clock()
        if self.started is None:
            self.started = now
        left = self.seconds - (now - self.started)
        if left <= 0:
            return None
        self.attempts += 1
        wait = min(self.first_wait_s * 2 ** (self.attempts - 1), self.max_wait_s)
        return min(wait, left)

    @property
    def tried_s(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started


def retry_budget(trigger: str) -> RetryBudget:
    """The budget for a run started by ``trigger`` (settings ``run_retry_*``)."""
    from integration_hub.settings import get_settings

    settings = get_settings()
    seconds = (
        settings.run_retry_seconds
        if trigger in SCHEDULED_TRIGGERS
        else settings.manual_run_retry_seconds
    )
    return RetryBudget(
        seconds=seconds,
        first_wait_s=settings.run_retry_first_wait_seconds,
        max_wait_s=max(settings.run_retry_first_wait_seconds, 300.0),
    )
