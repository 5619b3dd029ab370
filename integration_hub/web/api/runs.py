"""The health monitor: how an integration is doing, its runs, records per day, and retries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from integration_hub.services import api_support, history, sync
from integration_hub.web.api.common import BASE, CHANGE_ERRORS, READ_ERRORS, CurrentIntegration
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
    summary="Re-send the failed records of a run (admins of its organisation, operators)",
)
def retry(
    run_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The hub run's id")],
    actor: ApiActor,
) -> RetryOut:
    return RetryOut.model_validate(sync.retry_run(run_id, actor))
