"""When an integration runs, and which categories it leaves out."""

from __future__ import annotations

from fastapi import APIRouter

from integration_hub.services import api_support
from integration_hub.services import configuration as config
from integration_hub.web.api.common import BASE, CHANGE_ERRORS, READ_ERRORS, CurrentIntegration
from integration_hub.web.api.models import ExclusionsIn, ExclusionsOut, ScheduleIn, ScheduleOut
from integration_hub.web.security import ApiActor

router = APIRouter()


@router.get(
    f"{BASE}/schedule",
    response_model=ScheduleOut,
    responses=READ_ERRORS,
    tags=["schedule"],
    summary="The schedule, its description and the next three runs",
)
def get_schedule(row: CurrentIntegration, actor: ApiActor) -> ScheduleOut:
    return ScheduleOut.model_validate(api_support.schedule_view(row, actor))


@router.put(
    f"{BASE}/schedule",
    response_model=ScheduleOut,
    responses=CHANGE_ERRORS,
    tags=["schedule"],
    summary="Set the schedule: daily at HH:MM or cron, in an IANA time zone",
)
def put_schedule(row: CurrentIntegration, body: ScheduleIn, actor: ApiActor) -> ScheduleOut:
    view = api_support.set_schedule(
        row, actor, daily=body.daily, cron=body.cron, timezone=body.timezone, enabled=body.enabled
    )
    return ScheduleOut.model_validate(view)


@router.get(
    f"{BASE}/exclusions",
    response_model=ExclusionsOut,
    responses=READ_ERRORS,
    tags=["exclusions"],
    summary="The categories that can be left out, and those that are",
)
def get_exclusions(row: CurrentIntegration, actor: ApiActor) -> ExclusionsOut:
    return ExclusionsOut(
        choices=config.exclusion_choices(row), selected=config.list_exclusions(row)
    )


@router.put(
    f"{BASE}/exclusions",
    response_model=ExclusionsOut,
    responses=CHANGE_ERRORS,
    tags=["exclusions"],
    summary="Replace the excluded categories",
)
def put_exclusions(row: CurrentIntegration, body: ExclusionsIn, actor: ApiActor) -> ExclusionsOut:
    selected = config.set_exclusions(row, body.selected, actor)
    return ExclusionsOut(choices=config.exclusion_choices(row), selected=selected)
