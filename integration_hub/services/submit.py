"""Submitting a run from the web app: "sync now", "dry run" and "retry" never run a flow inside
the HTTP request; they hand it to what runs flows and come back at once.

Where the run goes:

- **Prefect**, when a Prefect API answers (``PREFECT_API_URL``: ``integrations serve`` sets it for
  the web app it starts) and holds the flow's deployment with something polling it (a Runner or a
  worker has asked for its runs lately: Prefect's deployment status ``READY``): a deployment flow
  run is created, which the Runner or a worker executes. Its logs and state are in the Prefect UI.
- **This process**, otherwise (``integrations web`` alone, embedded Prefect): the service
  function the CLI uses (:func:`integration_hub.services.sync.run_export`, ``retry_run``) runs in
  a background thread, at most one per integration at a time.

Either way the export lease (:mod:`integration_hub.tasks.lease`) keeps two exports of one
integration from running together, and a running export refuses a new submission before
anything is created. A :class:`Submission` remembers what was asked for (in this process's
memory: a restarted web app forgets it, the run itself is in the export history) and finds the
hub run it became, so the page can show its progress until it finishes.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from inspect import signature
from typing import Any

from sqlmodel import select

from integration_hub.adapters.registry import get_type
from integration_hub.db import hub_session
from integration_hub.deployments import EXPORT_EXPENSE_CLAIMS, RETRY_FAILED_RECORDS, DeployableFlow
from integration_hub.models import Integration, RunStatus, SyncRun, utcnow
from integration_hub.services import configuration as config
from integration_hub.services import sync
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import InvalidInput, NotFound, ServiceError
from integration_hub.services.guards import ExportRunning, refused_when_busy
from integration_hub.services.history import run_entry
from integration_hub.tasks import lease

log = logging.getLogger(__name__)

SYNC, DRY_RUN, RETRY = "sync", "dry_run", "retry"
KINDS = (SYNC, DRY_RUN, RETRY)
PREFECT, HERE = "prefect", "web"
"""Where a submitted run executes: a Prefect deployment run, or a thread of this process."""
KEEP = 200
"""Submissions remembered (the oldest finished ones are forgotten first)."""
PREFECT_TIMEOUT_S = 3.0
"""How long a request waits for the Prefect API (its health check, reading a flow run)."""


class Busy(ExportRunning):
    """A run submitted from this web app for the integration has not finished yet."""


@dataclass
class Submission:
    """A run asked for from the web app, and what became of it."""

    id: str
    kind: str
    integration_id: int
    organisation_id: int
    type_key: str
    submitted_by: str
    via: str
    after_run_id: int
    """The newest hub run of the integration when it was submitted: the run it becomes is newer."""
    retry_of_run_id: int | None = None
    flow_run_id: str | None = None
    submitted_at: datetime = field(default_factory=utcnow)
    run_id: int | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    finished_at: datetime | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def dry_run(self) -> bool:
        return self.kind == DRY_RUN

    @property
    def trigger(self) -> str:
        return "retry" if self.kind == RETRY else "manual"


_LOCK = threading.Lock()
_SUBMISSIONS: OrderedDict[str, Submission] = OrderedDict()
_ACTIVE: dict[int, Submission] = {}
"""Integration id -> its submission running in this process (at most one each)."""


# -- submitting --------------------------------------------------------------------------------
def submit_export(
    org_slug: str, type_key: str, actor: Actor, *, dry_run: bool = False
) -> Submission:
    """Submit an export ("sync now") or a dry run of one integration (admins only)."""
    organisation = config.organisation(org_slug, actor)
    row = config.integration(organisation, type_key, actor)
    actor.check_change(row.organisation_id)
    if not sync.exports_records(row):
        raise InvalidInput(
            f"{get_type(row.type_key).display_name} takes a report per closed period, not an "
            "export now: send a period's report with `integrations report`"
        )
    kind = DRY_RUN if dry_run else SYNC
    if not dry_run:
        _refuse_when_running(row)
    parameters = {"integration_id": row.id, "dry_run": dry_run, "trigger": "manual"}
    return _submit(
        row,
        actor,
        kind,
        EXPORT_EXPENSE_CLAIMS,
        parameters,
        lambda: sync.run_export(org_slug, type_key, actor, dry_run=dry_run, trigger="manual"),
    )


def submit_retry(run_id: int, actor: Actor) -> Submission:
    """Submit a retry of the failed records of hub run ``run_id`` (admins and operators),
    refused at once, before anything is created, by the same checks as a retry run here
    (:func:`sync.retryable_run`), or when an export of the integration is running."""
    run = sync.retryable_run(run_id, actor)
    with hub_session() as session:
        row = session.get(Integration, run.integration_id)
    if row is None:
        raise NotFound(f"there is no run {run_id}")
    _refuse_when_running(row)
    return _submit(
        row,
        actor,
        RETRY,
        RETRY_FAILED_RECORDS,
        {"run_id": run_id},
        lambda: sync.retry_run(run_id, actor),
        retry_of_run_id=run_id,
    )


def _refuse_when_running(row: Integration) -> None:
    """An export of the integration holds its lease now: say which, as the lease itself would."""
    holder = lease.holder(row.id or 0)
    if holder is not None and holder.expires_at > utcnow():
        with refused_when_busy():
            raise lease.ExportBusy(holder, get_type(row.type_key).display_name)


def _newest_run_id(integration_id: int) -> int:
    with hub_session() as session:
        newest = session.exec(
            select(SyncRun.id)
            .where(SyncRun.integration_id == integration_id)
            .order_by(SyncRun.id.desc())  # type: ignore[union-attr]
            .limit(1)
        ).first()
    return int(newest or 0)


def _submit(
    row: Integration,
    actor: Actor,
    kind: str,
    spec: DeployableFlow,
    parameters: dict[str, Any],
    run_here: Callable[[], dict[str, Any]],
    *,
    retry_of_run_id: int | None = None,
) -> Submission:
    integration_id = row.id or 0
    _refuse_when_submitted(row)
    deployment = deployment_for(spec)
    submission = Submission(
        id=uuid.uuid4().hex,
        kind=kind,
        integration_id=integration_id,
        organisation_id=row.organisation_id,
        type_key=row.type_key,
        submitted_by=actor.name,
        via=PREFECT if deployment is not None else HERE,
        after_run_id=_newest_run_id(integration_id),
        retry_of_run_id=retry_of_run_id,
    )
    with _LOCK:
        active = _ACTIVE.get(integration_id)
        if active is not None and not active.done.is_set():  # asked for twice at once
            raise _busy(row, active)
        _ACTIVE[integration_id] = submission
    try:
        if deployment is not None:
            submission.flow_run_id = _create_flow_run(spec, deployment, parameters, submission)
    except BaseException:
        with _LOCK:
            _ACTIVE.pop(integration_id, None)
        raise
    _remember(submission)
    if deployment is None:
        launch(submission, run_here)
    return submission


def _busy(row: Integration, active: Submission) -> Busy:
    return Busy(
        f"a run of {get_type(row.type_key).display_name} asked for at "
        f"{_clock(active.submitted_at)} has not finished yet; wait for it, then try again"
    )


def _refuse_when_submitted(row: Integration) -> None:
    """At most one submitted run per integration at a time: one running here holds its place
    until its thread ends; one handed to Prefect until its hub run or its flow run ended."""
    with _LOCK:
        active = _ACTIVE.get(row.id or 0)
    if active is None or active.done.is_set():
        return
    if active.via == PREFECT and _settled(active):
        _release(active)
        return
    raise _busy(row, active)


def _release(submission: Submission) -> None:
    """A run handed to Prefect has ended: the integration may take the next one."""
    submission.done.set()
    with _LOCK:
        if _ACTIVE.get(submission.integration_id) is submission:
            del _ACTIVE[submission.integration_id]


def _settled(submission: Submission) -> bool:
    """Whether a run handed to Prefect has ended (its hub run finished, or its flow run is in
    a final state without one)."""
    run = _hub_run(submission)
    if run is not None:
        return run.status != RunStatus.RUNNING.value
    state = _prefect_state(submission.flow_run_id or "")
    return bool(state and state["final"])


def _remember(submission: Submission) -> None:
    with _LOCK:
        _SUBMISSIONS[submission.id] = submission
        while len(_SUBMISSIONS) > KEEP:
            oldest = next(iter(_SUBMISSIONS.values()))
            if not oldest.done.is_set() and oldest.via == HERE:
                break  # never forget one that runs here: its thread still reports to it
            _SUBMISSIONS.pop(oldest.id)


def _clock(moment: datetime) -> str:
    return moment.astimezone(lease.DISPLAY_ZONE).strftime("%H:%M:%S")


# -- running here ------------------------------------------------------------------------------
def launch(submission: Submission, work: Callable[[], dict[str, Any]]) -> None:
    """Run ``work`` (a service call that runs the flow) in a daemon thread of this process,
    in a copy of the caller's context (Prefect's settings travel with it); the submission
    hears how it ended. Nothing it raises reaches the web app: a service error is the
    submission's ``error``, anything else a fixed sentence (and a log line with the traceback
    for the operators)."""

    def body() -> None:
        try:
            summary = work()
            submission.summary = summary
            submission.run_id = int(summary["run_id"]) if summary.get("run_id") else None
        except ServiceError as exc:
            submission.error = str(exc)
            submission.run_id = getattr(exc, "run_id", None)
        except Exception:
            log.exception("the run submitted as %s stopped", submission.id)
            submission.error = (
                "the run stopped because of an error in the hub; the operators can read it in "
                "the web app's log"
            )
        finally:
            submission.finished_at = utcnow()
            with _LOCK:
                if _ACTIVE.get(submission.integration_id) is submission:
                    del _ACTIVE[submission.integration_id]
            submission.done.set()

    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(body,), name=f"hub-run-{submission.id[:8]}", daemon=True
    )
    thread.start()


def wait(submission_id: str, timeout: float | None = None) -> bool:
    """Block until a submission that runs here has finished (True) or ``timeout`` passed; for
    tests and scripts. A Prefect submission finishes elsewhere: False at once."""
    submission = _SUBMISSIONS.get(submission_id)
    if submission is None or submission.via != HERE:
        return False
    return submission.done.wait(timeout)


# -- Prefect -----------------------------------------------------------------------------------
def deployment_for(spec: DeployableFlow) -> Any | None:
    """The deployment of ``spec`` when a Prefect API answers, holds it and something polls it
    (a Runner or a worker asked for its runs lately); None when the run is better run here. A
    deployment nobody serves would leave the run scheduled for ever."""
    from integration_hub.services.scheduler import unreachable_reason

    if unreachable_reason() is not None:
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import DeploymentStatus
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(spec.full_name)
    except ObjectNotFound:
        return None
    except Exception as exc:  # an API that answers its health check but not this: run here
        log.warning("could not read the deployment %s: %s", spec.full_name, exc)
        return None
    if deployment.paused or deployment.status != DeploymentStatus.READY:
        return None
    return deployment


def flow_parameters(spec: DeployableFlow, offered: dict[str, Any]) -> dict[str, Any]:
    """The parameters of ``offered`` that the deployment's flow takes."""
    accepted = signature(spec.load().fn).parameters
    return {name: value for name, value in offered.items() if name in accepted}


def _create_flow_run(
    spec: DeployableFlow, deployment: Any, parameters: dict[str, Any], submission: Submission
) -> str:
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run_from_deployment(
                deployment.id,
                parameters=flow_parameters(spec, parameters),
                tags=["integration-hub", "web", submission.kind.replace("_", "-")],
            )
    except Exception as exc:
        log.warning("could not create a run of %s: %s", spec.full_name, exc)
        raise ServiceError(
            f"Prefect did not take the run ({type(exc).__name__}); try again, or start it with "
            "the command line"
        ) from None
    return str(flow_run.id)


def _prefect_state(flow_run_id: str) -> dict[str, Any] | None:
    """The flow run's state in Prefect (type, name, message), or None when it cannot be read."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(uuid.UUID(flow_run_id))
    except Exception:
        return None
    state = flow_run.state
    if state is None:
        return None
    return {
        "type": state.type.value,
        "name": state.name,
        "message": state.message,
        "final": state.is_final(),
    }


# -- progress ----------------------------------------------------------------------------------
QUEUED, RUNNING, FINISHED, REFUSED = "queued", "running", "finished", "refused"


def progress(submission_id: str, integration: Integration, actor: Actor) -> dict[str, Any]:
    """Where a submission of ``integration`` stands: ``queued`` (not started yet), ``running``
    (its hub run, so far), ``finished`` (the run and its summary) or ``refused`` (it never
    became a run, and why). NotFound for a submission this process does not know or that is
    another integration's."""
    actor.check(integration.organisation_id)
    submission = _SUBMISSIONS.get(submission_id)
    if submission is None or submission.integration_id != integration.id:
        raise NotFound(
            "this web app does not know that run request (it may have restarted); the export "
            "history shows every run"
        )
    run = _hub_run(submission)
    entry = run_entry(run, actor) if run is not None else None
    prefect_state = None
    if submission.via == PREFECT and (run is None or run.status == RunStatus.RUNNING):
        prefect_state = _prefect_state(submission.flow_run_id or "")
    if entry is not None and entry["status"] != RunStatus.RUNNING.value:
        phase = FINISHED
    elif entry is not None:
        phase = RUNNING
    elif submission.done.is_set() or (prefect_state and prefect_state["final"]):
        phase = REFUSED
    else:
        phase = QUEUED
    if phase in (FINISHED, REFUSED) and submission.via == PREFECT:
        _release(submission)
    error = submission.error
    if phase == REFUSED and error is None and prefect_state:
        error = prefect_state["message"] or f"Prefect says {prefect_state['name']}"
    return {
        "id": submission.id,
        "kind": submission.kind,
        "via": submission.via,
        "phase": phase,
        "done": phase in (FINISHED, REFUSED),
        "submitted_at": submission.submitted_at.isoformat(),
        "submitted_by": submission.submitted_by,
        "retry_of_run_id": submission.retry_of_run_id,
        "flow_run_id": submission.flow_run_id,
        "prefect_state": prefect_state["name"] if prefect_state else None,
        "run": entry,
        "would_export": (submission.summary or {}).get("would_export"),
        "error": error if phase == REFUSED else None,
    }


def _hub_run(submission: Submission) -> SyncRun | None:
    """The hub run the submission became: known once it ended here; by its flow run id when
    Prefect runs it; else the newest run of the integration since, of the same kind."""
    with hub_session() as session:
        if submission.run_id is not None:
            return session.get(SyncRun, submission.run_id)
        query = select(SyncRun).where(SyncRun.integration_id == submission.integration_id)
        if submission.flow_run_id is not None:
            query = query.where(SyncRun.flow_run_id == submission.flow_run_id)
        else:
            query = query.where(
                SyncRun.id > submission.after_run_id,  # type: ignore[operator]
                SyncRun.dry_run == submission.dry_run,
                SyncRun.trigger == submission.trigger,
            )
        return session.exec(query.order_by(SyncRun.id).limit(1)).first()  # type: ignore[arg-type]


def forget() -> None:
    """Forget every submission, as a web app starting afresh would (tests, between hubs)."""
    with _LOCK:
        _SUBMISSIONS.clear()
        _ACTIVE.clear()
