"""The health monitor: how an integration is doing, its runs, records per day, and retries;
one run record by record, ignored records, submitting a run (never run in the request) and
the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from integration_hub.services import api_support, history, ignored, submit, sync
from integration_hub.services import configuration as config
from integration_hub.services import health as health_service
from integration_hub.services.errors import NotFound
from integration_hub.web.api.common import (
    BASE,
    CHANGE_ERRORS,
    READ_ERRORS,
    CurrentIntegration,
    OrgSlug,
)
from integration_hub.web.api.models import DayCountOut, HealthOut, RetryOut, RunOut
from integration_hub.web.limits import MAX_ID
from integration_hub.web.security import ApiActor

router = APIRouter(tags=["health"])


@router.get(
    f"{BASE}/health",
    response_model=HealthOut,
    responses=READ_ERRORS,
    summary="Last run, each failure with its reason, the last connection test, next run",
)
def health(row: CurrentIntegration, actor: ApiActor) -> HealthOut:
    return HealthOut.model_validate(api_support.health_view(row, actor))


@router.get(
    f"{BASE}/runs",
    response_model=list[RunOut],
    responses=READ_ERRORS,
    summary="The export history, newest first",
)
def runs(
    row: CurrentIntegration,
    actor: ApiActor,
    limit: Annotated[int, Query(ge=1, le=500, description="How many runs")] = 20,
) -> list[RunOut]:
    return [RunOut.model_validate(r) for r in history.list_runs(row, actor, limit=limit)]


@router.get(
    f"{BASE}/daily-counts",
    response_model=list[DayCountOut],
    responses=READ_ERRORS,
    summary="Exported and failed records per day (Oslo time), oldest first",
)
def daily_counts(
    row: CurrentIntegration,
    actor: ApiActor,
    days: Annotated[int, Query(ge=1, le=366, description="How many days back")] = 14,
) -> list[DayCountOut]:
    return [DayCountOut.model_validate(d) for d in history.daily_counts(row, actor, days=days)]


@router.post(
    "/runs/{run_id}/retry",
    response_model=RetryOut,
    responses=CHANGE_ERRORS,
    tags=["runs"],
    summary="Re-send the failed records of a run and answer when it is done (admins of its "
    "organisation, operators); POST .../runs with retry_of_run_id submits it instead",
)
def retry(
    run_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The hub run's id")],
    actor: ApiActor,
) -> RetryOut:
    return RetryOut.model_validate(sync.retry_run(run_id, actor))


# -- one run, record by record -----------------------------------------------------------------
class FailureGroupOut(BaseModel):
    reason: str | None = Field(
        description="The failure reason, as every record of the group has it"
    )
    count: int = Field(ge=0)
    amount_ore: int = Field(description="The group's records' amount, in øre")
    amount: str = Field(description="The same amount as people read it, e.g. kr 1 234,50")
    ignored: int = Field(ge=0, description="How many of the group's records are ignored now")
    first_record_id: int


class RunDetailOut(RunOut):
    failure: str | None = Field(
        default=None,
        description="Why the run did not finish: unreachable, refused, configuration, "
        "cancelled, busy or unexpected; null when it finished",
    )
    stopped: str | None = Field(description="What a run that did not finish means, in a sentence")
    failure_groups: list[FailureGroupOut] = Field(description="Failures by reason, largest first")


class IgnoredOut(BaseModel):
    record_type: str
    record_id: int
    record_version: int
    note: str
    ignored_by: str
    run_id: int | None = Field(description="The run whose failure it was ignored from")
    ignored_at: datetime | None


class OutcomeOut(BaseModel):
    record: str
    record_type: str
    record_id: int
    record_version: int
    status: str = Field(description="exported, failed, skipped or waiting")
    reason: str | None
    amount_ore: int | None
    amount: str | None
    category: str | None
    volunteer: str | None
    expense_date: str | None
    attempt: int
    target_reference: str | None
    ignored: IgnoredOut | None = Field(description="Set when this failed record is ignored now")


class OutcomePageOut(BaseModel):
    run_id: int
    status: str | None = Field(description="The outcome listed, or null for every outcome")
    page: int = Field(ge=1)
    per_page: int = Field(ge=1)
    pages: int = Field(ge=1)
    total: int = Field(ge=0, description="Records of the run with this outcome")
    counts: dict[str, int] = Field(description="Records of the run per outcome")
    items: list[OutcomeOut] = Field(description="Failed first, then waiting, skipped, exported")


Outcome = Literal["exported", "failed", "skipped", "waiting"]


@router.get(
    "/runs/{run_id}",
    response_model=RunDetailOut,
    responses=READ_ERRORS,
    tags=["runs"],
    summary="One run: its counts, why it stopped (if it did) and its failures by reason",
)
def run_detail(
    run_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The hub run's id")],
    actor: ApiActor,
) -> RunDetailOut:
    row, run = history.find_run(run_id, actor)
    target = config.integration_type(row.type_key).display_name
    return RunDetailOut.model_validate(
        {
            **run,
            "stopped": health_service.failure_sentence(run, target),
            "failure_groups": history.failure_groups(row, run_id, actor),
        }
    )


@router.get(
    "/runs/{run_id}/outcomes",
    response_model=OutcomePageOut,
    responses=READ_ERRORS,
    tags=["runs"],
    summary="Every record of a run with its outcome and reason, paged (failed first)",
)
def run_outcomes(
    run_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The hub run's id")],
    actor: ApiActor,
    status: Annotated[Outcome | None, Query(description="Only records with this outcome")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = history.OUTCOMES_PER_PAGE,
) -> OutcomePageOut:
    row, _ = history.find_run(run_id, actor)
    found = history.run_outcomes(row, run_id, actor, status=status, page=page, per_page=per_page)
    return OutcomePageOut.model_validate(found)


# -- ignored records ---------------------------------------------------------------------------
class IgnoreIn(BaseModel):
    record_id: int = Field(ge=1, le=MAX_ID)
    record_version: int = Field(ge=1, le=MAX_ID)
    note: str = Field(min_length=1, max_length=500, description="Why it is ignored")


@router.get(
    f"{BASE}/ignored",
    response_model=list[IgnoredOut],
    responses=READ_ERRORS,
    tags=["runs"],
    summary="Failed records an admin chose to ignore (later runs skip them), newest first",
)
def list_ignored(row: CurrentIntegration, actor: ApiActor) -> list[IgnoredOut]:
    return [IgnoredOut.model_validate(i) for i in ignored.list_ignored(row, actor)]


@router.post(
    f"{BASE}/ignored",
    response_model=IgnoredOut,
    status_code=201,
    responses=CHANGE_ERRORS,
    tags=["runs"],
    summary="Ignore a failed record version: later runs skip it (audited, reversible)",
)
def ignore_record(row: CurrentIntegration, body: IgnoreIn, actor: ApiActor) -> IgnoredOut:
    entry = ignored.ignore(
        row, actor, record_id=body.record_id, record_version=body.record_version, note=body.note
    )
    return IgnoredOut.model_validate(entry)


@router.delete(
    f"{BASE}/ignored/{{record_id}}/{{record_version}}",
    response_model=IgnoredOut,
    responses=CHANGE_ERRORS,
    tags=["runs"],
    summary="Stop ignoring a record version: the next run exports it again (audited)",
)
def unignore_record(
    row: CurrentIntegration,
    actor: ApiActor,
    record_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    record_version: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> IgnoredOut:
    entry = ignored.unignore(row, actor, record_id=record_id, record_version=record_version)
    return IgnoredOut.model_validate(entry)


# -- submitting runs ---------------------------------------------------------------------------
class RunRequestIn(BaseModel):
    dry_run: bool = Field(default=False, description="Check everything, send nothing")
    retry_of_run_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="Re-send the failed records of this run of the integration instead",
    )


class SubmissionOut(BaseModel):
    id: str = Field(description="GET .../submissions?id= with it follows the run")
    kind: Literal["sync", "dry_run", "retry"]
    via: Literal["prefect", "web"] = Field(
        description="prefect: a deployment run of the Prefect server; web: the web app runs it"
    )
    phase: Literal["queued", "running", "finished", "refused"]
    done: bool
    submitted_at: datetime
    submitted_by: str
    retry_of_run_id: int | None
    flow_run_id: str | None
    prefect_state: str | None
    run: RunOut | None = Field(description="The hub run it became, once it started")
    would_export: int | None = Field(description="A finished dry run: records it would send")
    error: str | None = Field(description="Why it never became a run (phase refused)")


@router.post(
    f"{BASE}/runs",
    response_model=SubmissionOut,
    status_code=202,
    responses=CHANGE_ERRORS,
    tags=["runs"],
    summary="Start an export now, a dry run, or a retry of a run's failures: submitted (a "
    "Prefect deployment run, or a background run of the web app), not run in the request",
)
def submit_run(row: CurrentIntegration, body: RunRequestIn, actor: ApiActor) -> SubmissionOut:
    if body.retry_of_run_id is not None:
        if history.run_of(row, body.retry_of_run_id, actor) is None:
            raise NotFound(f"there is no run {body.retry_of_run_id}")
        submission = submit.submit_retry(body.retry_of_run_id, actor)
    else:
        organisation = next(
            o for o in config.list_organisations(actor) if o.id == row.organisation_id
        )
        submission = submit.submit_export(
            organisation.slug, row.type_key, actor, dry_run=body.dry_run
        )
    return SubmissionOut.model_validate(submit.progress(submission.id, row, actor))


@router.get(
    f"{BASE}/submissions",
    response_model=SubmissionOut,
    responses=READ_ERRORS,
    tags=["runs"],
    summary="How far a submitted run got (queued, running, finished, refused)",
)
def submission(
    row: CurrentIntegration,
    actor: ApiActor,
    id: Annotated[str, Query(pattern=r"^[0-9a-f]{32}$", description="The submission's id")],
) -> SubmissionOut:
    return SubmissionOut.model_validate(submit.progress(id, row, actor))


# -- the audit log -----------------------------------------------------------------------------
class AuditEntryOut(BaseModel):
    id: int
    at: datetime | None
    actor: str
    action: str = Field(description="e.g. mapping.saved, record.ignored, schedule.set")
    integration_id: int | None
    type: str | None = Field(description="The integration type the entry is about, if any")
    details: dict[str, Any] = Field(description="What changed; never a secret")


class AuditPageOut(BaseModel):
    page: int = Field(ge=1)
    per_page: int = Field(ge=1)
    pages: int = Field(ge=1)
    total: int = Field(ge=0)
    uses: bool = Field(description="Whether each use of a stored credential is listed")
    uses_total: int = Field(ge=0, description="How many uses of stored credentials there are")
    entries: list[AuditEntryOut] = Field(description="Newest first")


@router.get(
    "/organisations/{org}/audit",
    response_model=AuditPageOut,
    responses=READ_ERRORS,
    tags=["audit"],
    summary="The organisation's audit log, newest first, paged",
)
def audit_log(
    org: OrgSlug,
    actor: ApiActor,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = history.AUDIT_PER_PAGE,
    uses: Annotated[bool, Query(description="Also each use of a stored credential")] = False,
) -> AuditPageOut:
    organisation = config.organisation(org, actor)
    found = history.audit_log(organisation, actor, page=page, per_page=per_page, uses=uses)
    return AuditPageOut.model_validate(found)
