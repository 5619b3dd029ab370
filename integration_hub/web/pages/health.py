"""The health monitor: last run, each failure and why, "sync now", "dry run" and "retry" buttons
(which submit a run and show its progress, never run it in the request), pausing and resuming
the schedule, the export history and a small chart of exported and failed records per day.

The route only gathers what the services report (``health``, ``history``, ``sync``); the one
thing computed here is presentational: the chart's geometry (:func:`chart_geometry`), a plain
function tested without HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from integration_hub.models import IntegrationStatus
from integration_hub.services import configuration as config
from integration_hub.services import health, history, ignored, scheduler, submit, sync
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import Forbidden, InvalidInput, NotFound, ServiceError
from integration_hub.services.guards import ExportRunning
from integration_hub.tasks.extract import CATEGORY_LABELS
from integration_hub.web.limits import MAX_ID
from integration_hub.web.rendering import render
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

CHART_DAYS = 14
HISTORY_LIMIT = 20

TRIGGER_LABELS = {
    "schedule": "Scheduled",
    "manual": "Started by hand",
    "retry": "Retry",
    "backfill": "Backfill",
}
"""How a run was started, as people read it (English source text; bokmål in health.yaml)."""

CONNECTION_LABELS = {
    "ok": "Connected",
    "bad_credentials": "Credentials refused",
    "unreachable": "Could not connect",
    "timed_out": "No answer in time",
    "throttled": "Throttled by the target",
    "unexpected_response": "Unexpected answer",
}


# -- the chart ---------------------------------------------------------------------------------
def chart_geometry(
    days: Sequence[Mapping[str, Any]], *, width: int = 640, height: int = 220
) -> dict[str, Any]:
    """Where the bars of the per-day chart go, in SVG user units.

    ``days`` is :func:`history.daily_counts`' answer (oldest first). Each day gets two bars side
    by side, exported on the left and failed on the right (so the chart does not rely on colour
    alone); a bar's height is proportional to its count, the tallest bar filling the plot. A
    count of zero draws no bar; a non-zero count gets at least 1 unit so it stays visible.
    """
    left, right, top, bottom = 44.0, 8.0, 12.0, 34.0
    plot_bottom = height - bottom
    plot_height = plot_bottom - top
    plot_width = width - left - right
    peak = max((max(int(d["exported"]), int(d["failed"])) for d in days), default=0)
    slot = plot_width / len(days) if days else 0.0
    bar_width = slot * 0.36
    gap = slot * 0.14

    def bar(value: int, x: float) -> dict[str, Any]:
        h = value / peak * plot_height if peak else 0.0
        if value > 0:
            h = max(h, 1.0)
        return {
            "value": value,
            "x": round(x, 2),
            "y": round(plot_bottom - h, 2),
            "width": round(bar_width, 2),
            "height": round(h, 2),
        }

    placed = []
    for i, day in enumerate(days):
        start = left + i * slot + gap
        when = date.fromisoformat(str(day["day"]))
        placed.append(
            {
                "day": when.isoformat(),
                "label": when.strftime("%d.%m"),
                "label_x": round(left + (i + 0.5) * slot, 2),
                "exported": bar(int(day["exported"]), start),
                "failed": bar(int(day["failed"]), start + bar_width),
            }
        )
    ticks = [{"value": 0, "y": round(plot_bottom, 2)}]
    if peak:
        if peak >= 2 and peak % 2 == 0:
            ticks.append({"value": peak // 2, "y": round(plot_bottom - plot_height / 2, 2)})
        ticks.append({"value": peak, "y": round(top, 2)})
    return {
        "width": width,
        "height": height,
        "plot_left": left,
        "plot_right": width - right,
        "plot_top": top,
        "plot_bottom": plot_bottom,
        "label_y": plot_bottom + 18,
        "peak": peak,
        "days": placed,
        "ticks": ticks,
        "total_exported": sum(int(d["exported"]) for d in days),
        "total_failed": sum(int(d["failed"]) for d in days),
        "first": placed[0]["day"] if placed else None,
        "last": placed[-1]["day"] if placed else None,
    }


# -- what the page shows -----------------------------------------------------------------------
def format_duration(seconds: float | None, language: str) -> str:
    """``4.2 s`` / ``3 min 5 s`` (decimal comma in bokmål); empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        text = f"{seconds:.1f} s"
        return text.replace(".", ",") if language == "nb" else text
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def may_change(actor: Actor, organisation_id: int) -> bool:
    """Whether the page offers ``actor`` the forms that change things (operators read, and
    retry runs, only: they see no form that would be refused)."""
    try:
        actor.check_change(organisation_id)
    except Forbidden:
        return False
    return True


def health_context(
    org_slug: str,
    type_key: str,
    actor: Actor,
    *,
    retried: int | None = None,
    submitted: str | None = None,
) -> dict[str, Any]:
    organisation = config.organisation(org_slug, actor)
    row = config.integration(organisation, type_key, actor)
    report = health.integration_health(row, organisation, actor)
    runs = history.list_runs(row, actor, limit=HISTORY_LIMIT)
    by_id = {r["run_id"]: r for r in runs}
    try:
        retry_id: int | None = sync.latest_failed_run(row, actor)
    except NotFound:
        retry_id = None
    retry = (by_id.get(retry_id) or history.run_of(row, retry_id, actor)) if retry_id else None
    retry_open = ignored.open_failures(retry_id) if retry_id else 0
    if retry is not None and not retry_open:
        retry = None  # every failure of it is ignored: nothing a retry should send
    progress = None
    submission_missing = None
    if submitted:
        try:
            progress = submit.progress(submitted, row, actor)
        except NotFound as exc:
            submission_missing = str(exc)
    if progress and progress["run"]:
        progress["stopped"] = health.failure_sentence(progress["run"], report["target"])
    if progress and progress["kind"] == submit.RETRY and progress["phase"] == submit.FINISHED:
        retried = progress["run"]["run_id"]
    retry_result = None
    if retried is not None:
        found = by_id.get(retried) or history.run_of(row, retried, actor)
        if found and found["trigger"] == "retry":
            retry_result = found
    status = report["status"]
    if status == IntegrationStatus.ACTIVE and not report["healthy"]:
        status = "failing"
    return {
        **report,
        "integration_status": status,
        "base": f"/orgs/{organisation.slug}/integrations/{row.type_key}",
        "runs": runs,
        "history_limit": HISTORY_LIMIT,
        "retry": retry,
        "retry_open": retry_open,
        "retry_result": retry_result,
        "progress": progress,
        "submission_missing": submission_missing,
        "may_change": may_change(actor, row.organisation_id),
        "exports_records": sync.exports_records(row),
        "chart": chart_geometry(history.daily_counts(row, actor, days=CHART_DAYS)),
        "prefect_links": history.links_to_prefect(actor),  # operators only
        "trigger_labels": TRIGGER_LABELS,
        "connection_labels": CONNECTION_LABELS,
        "category_names": CATEGORY_LABELS,  # as the volunteer app names them
        "format_duration": format_duration,
    }


REFRESH_SECONDS = 3
"""How often a page showing a run in progress reloads itself (the ``Refresh`` header: it works
without JavaScript, and stops once the run has finished)."""


def _health_url(org: str, integration_type: str) -> str:
    return f"/orgs/{org}/integrations/{integration_type}/health"


@router.get("/orgs/{org}/integrations/{integration_type}/health")
def health_page(
    request: Request,
    org: str,
    integration_type: str,
    signed_in: PageSession,
    retried: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    submitted: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
    schedule: Annotated[str | None, Query(pattern=r"^(paused|resumed)$")] = None,
    not_pushed: Annotated[bool, Query()] = False,
) -> Response:
    context = health_context(
        org, integration_type, signed_in.actor, retried=retried, submitted=submitted
    )
    context["schedule_changed"] = schedule
    context["schedule_not_pushed"] = not_pushed
    context["refresh_seconds"] = REFRESH_SECONDS
    response = render(request, "health.html", context)
    if context["progress"] and not context["progress"]["done"]:
        response.headers["Refresh"] = str(REFRESH_SECONDS)
    return response


def _refused(
    request: Request,
    org: str,
    integration_type: str,
    actor: Actor,
    exc: ServiceError,
    what: str = "retry",
) -> Response:
    """The health page again, saying why nothing was started or changed (``what``: retry,
    start or schedule; 422 bad input, 409 busy)."""
    context = health_context(org, integration_type, actor)
    context[f"{what}_refused"] = str(exc)
    status = 422 if isinstance(exc, InvalidInput) else 409
    return render(request, "health.html", context, status)


@router.post("/orgs/{org}/integrations/{integration_type}/health/retry")
def retry_failed(
    request: Request,
    org: str,
    integration_type: str,
    signed_in: PageSession,
    run_id: Annotated[int, Form(ge=1, le=MAX_ID)],
) -> Response:
    """Submit a retry of one run's failed records, then back to the page, which shows its
    progress: the retry runs in Prefect or in the background, never in this request."""
    actor = signed_in.actor
    organisation = config.organisation(org, actor)
    row = config.integration(organisation, integration_type, actor)
    if history.run_of(row, run_id, actor) is None:
        raise NotFound(f"there is no run {run_id}")
    try:
        submission = submit.submit_retry(run_id, actor)
    except (InvalidInput, ExportRunning) as exc:
        return _refused(request, org, integration_type, actor, exc)
    back = _health_url(organisation.slug, row.type_key)
    return RedirectResponse(f"{back}?submitted={submission.id}", status_code=303)


@router.post("/orgs/{org}/integrations/{integration_type}/health/sync")
def sync_now(
    request: Request,
    org: str,
    integration_type: str,
    signed_in: PageSession,
    mode: Annotated[str, Form(pattern=r"^(sync|dry_run)$")] = "sync",
) -> Response:
    """Submit an export now ("sync now") or a dry run; the page then shows its progress."""
    actor = signed_in.actor
    organisation = config.organisation(org, actor)
    row = config.integration(organisation, integration_type, actor)
    try:
        submission = submit.submit_export(
            organisation.slug, row.type_key, actor, dry_run=mode == "dry_run"
        )
    except (InvalidInput, ExportRunning) as exc:
        return _refused(request, org, integration_type, actor, exc, "start")
    back = _health_url(organisation.slug, row.type_key)
    return RedirectResponse(f"{back}?submitted={submission.id}", status_code=303)


@router.post("/orgs/{org}/integrations/{integration_type}/health/schedule")
def pause_or_resume(
    request: Request,
    org: str,
    integration_type: str,
    signed_in: PageSession,
    enabled: Annotated[bool, Form()],
) -> Response:
    """Pause or resume the integration's scheduled runs (the schedule's own switch: its time
    and zone stay as they are); audited, and pushed to Prefect when it can be reached."""
    actor = signed_in.actor
    organisation = config.organisation(org, actor)
    row = config.integration(organisation, integration_type, actor)
    try:
        change = scheduler.set_schedule(row, actor, enabled=enabled)
    except InvalidInput as exc:
        return _refused(request, org, integration_type, actor, exc, "schedule")
    back = _health_url(organisation.slug, row.type_key)
    query = f"schedule={'resumed' if enabled else 'paused'}"
    if change.not_pushed:
        query += "&not_pushed=true"
    return RedirectResponse(f"{back}?{query}", status_code=303)
