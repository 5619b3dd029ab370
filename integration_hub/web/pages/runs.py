"""One run, record by record: any run of an integration (not only the last), its failures grouped
by reason with counts, every record's outcome paged and filtered by outcome, and "ignore this
record" (with a note; reversible) for a failed record that can never go through.

The routes only gather what the services report (``history``, ``ignored``, ``health``) and turn
refusals into the page again with why.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from starlette.responses import RedirectResponse, Response

from integration_hub.models import OutcomeStatus, RunStatus
from integration_hub.services import configuration as config
from integration_hub.services import health, history, ignored
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import InvalidInput, NotFound, ServiceError
from integration_hub.tasks.extract import CATEGORY_LABELS
from integration_hub.web.limits import MAX_ID
from integration_hub.web.pages.health import (
    REFRESH_SECONDS,
    TRIGGER_LABELS,
    format_duration,
    may_change,
)
from integration_hub.web.rendering import render
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

RUN = "/orgs/{org}/integrations/{integration_type}/runs/{run_id}"
STATUS_PATTERN = "^(" + "|".join(s.value for s in OutcomeStatus) + ")$"
MAX_PAGE = 100_000
RunId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _integration(org: str, integration_type: str, actor: Actor) -> tuple[Any, Any]:
    organisation = config.organisation(org, actor)
    return organisation, config.integration(organisation, integration_type, actor)


def _run_url(organisation: Any, row: Any, run_id: int) -> str:
    return f"/orgs/{organisation.slug}/integrations/{row.type_key}/runs/{run_id}"


def run_context(
    org: str,
    integration_type: str,
    run_id: int,
    actor: Actor,
    *,
    status: str | None = None,
    page: int = 1,
) -> dict[str, Any]:
    organisation, row = _integration(org, integration_type, actor)
    run = history.run_of(row, run_id, actor)
    if run is None:
        raise NotFound(f"there is no run {run_id}")
    target = config.integration_type(row.type_key).display_name
    outcomes = history.run_outcomes(row, run_id, actor, status=status, page=page)
    open_failed = ignored.open_failures(run_id) if run["failed"] else 0
    return {
        "organisation": organisation.slug,
        "organisation_name": organisation.name,
        "type_key": row.type_key,
        "target": target,
        "base": f"/orgs/{organisation.slug}/integrations/{row.type_key}",
        "run": run,
        "stopped": health.failure_sentence(run, target),
        "groups": history.failure_groups(row, run_id, actor),
        "outcomes": outcomes,
        "statuses": [s.value for s in history.STATUS_ORDER],
        "open_failed": open_failed,
        "may_change": may_change(actor, row.organisation_id),
        "may_retry": bool(open_failed) and not run["dry_run"],
        "prefect_links": history.links_to_prefect(actor),
        "trigger_labels": TRIGGER_LABELS,
        "category_names": CATEGORY_LABELS,
        "format_duration": format_duration,
        "refresh_seconds": REFRESH_SECONDS,
    }


@router.get(RUN)
def run_page(
    request: Request,
    org: str,
    integration_type: str,
    run_id: RunId,
    signed_in: PageSession,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    ignored_record: Annotated[int | None, Query(alias="ignored", ge=1, le=MAX_ID)] = None,
    unignored_record: Annotated[int | None, Query(alias="unignored", ge=1, le=MAX_ID)] = None,
) -> Response:
    context = run_context(org, integration_type, run_id, signed_in.actor, status=status, page=page)
    context["ignored_record"] = ignored_record
    context["unignored_record"] = unignored_record
    response = render(request, "run.html", context)
    if context["run"]["status"] == RunStatus.RUNNING.value:
        response.headers["Refresh"] = str(REFRESH_SECONDS)
    return response


# -- ignoring a record -------------------------------------------------------------------------
def _ignore_context(
    org: str, integration_type: str, run_id: int, record: int, version: int, actor: Actor
) -> dict[str, Any]:
    organisation, row = _integration(org, integration_type, actor)
    actor.check_change(row.organisation_id)  # operators read only: no form to refuse later
    outcome = history.run_record(row, run_id, record, version, actor)
    return {
        "organisation": organisation.slug,
        "type_key": row.type_key,
        "target": config.integration_type(row.type_key).display_name,
        "base": f"/orgs/{organisation.slug}/integrations/{row.type_key}",
        "run_id": run_id,
        "record": outcome,
        "category_names": CATEGORY_LABELS,
        "note": "",
        "problems": [],
    }


@router.get(f"{RUN}/ignore")
def ignore_page(
    request: Request,
    org: str,
    integration_type: str,
    run_id: RunId,
    signed_in: PageSession,
    record: Annotated[int, Query(ge=1, le=MAX_ID)],
    version: Annotated[int, Query(ge=1, le=MAX_ID)],
) -> Response:
    """Ask for the note before a record is ignored: the next person must know why."""
    context = _ignore_context(org, integration_type, run_id, record, version, signed_in.actor)
    return render(request, "ignore.html", context)


@router.post(f"{RUN}/ignore")
def ignore_record(
    request: Request,
    org: str,
    integration_type: str,
    run_id: RunId,
    signed_in: PageSession,
    record: Annotated[int, Form(ge=1, le=MAX_ID)],
    version: Annotated[int, Form(ge=1, le=MAX_ID)],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    actor = signed_in.actor
    organisation, row = _integration(org, integration_type, actor)
    try:
        ignored.ignore(
            row, actor, record_id=record, record_version=version, note=note, run_id=run_id
        )
    except (InvalidInput, ignored.AlreadyIgnored) as exc:
        context = _ignore_context(org, integration_type, run_id, record, version, actor)
        context["note"] = note
        context["problems"] = exc.problems if isinstance(exc, InvalidInput) else [str(exc)]
        status = 422 if isinstance(exc, InvalidInput) else 409
        return render(request, "ignore.html", context, status)
    url = _run_url(organisation, row, run_id)
    return RedirectResponse(f"{url}?ignored={record}#record-{record}", status_code=303)


@router.post(f"{RUN}/unignore")
def unignore_record(
    request: Request,
    org: str,
    integration_type: str,
    run_id: RunId,
    signed_in: PageSession,
    record: Annotated[int, Form(ge=1, le=MAX_ID)],
    version: Annotated[int, Form(ge=1, le=MAX_ID)],
) -> Response:
    """Export the record again from the next run on."""
    actor = signed_in.actor
    organisation, row = _integration(org, integration_type, actor)
    if history.run_of(row, run_id, actor) is None:
        raise NotFound(f"there is no run {run_id}")
    try:
        ignored.unignore(row, actor, record_id=record, record_version=version)
    except NotFound as exc:
        raise ServiceError(str(exc)) from None  # the page is stale: 409, not "no such page"
    url = _run_url(organisation, row, run_id)
    return RedirectResponse(f"{url}?unignored={record}#record-{record}", status_code=303)
