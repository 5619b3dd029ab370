"""The sync schedule (a wizard step and a screen of its own): daily at a time, or a cron
expression, in a time zone, with the next three run times.

A refused schedule (malformed cron, unknown time zone, a time that is no time) changes nothing:
:func:`integration_hub.services.scheduler.set_schedule` validates before it stores.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from integration_hub.models import Integration, Organisation, SyncSchedule
from integration_hub.services import configuration as config
from integration_hub.services import scheduler
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import InvalidInput
from integration_hub.web.pages.credentials import (
    base_context,
    integration_url,
    load,
)
from integration_hub.web.rendering import render, translator
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

DEFAULT_TIME = "02:00"
DEFAULT_ZONE = "Europe/Oslo"
COMMON_ZONES = (
    "Europe/Oslo",
    "Europe/Stockholm",
    "Europe/Copenhagen",
    "Europe/Helsinki",
    "Europe/London",
    "Europe/Berlin",
    "Atlantic/Reykjavik",
    "Arctic/Longyearbyen",
    "UTC",
)
"""Offered as suggestions; any IANA name is accepted."""


def form_defaults(stored: SyncSchedule | None) -> dict[str, Any]:
    """The form's values for a stored schedule (or the nightly 02:00 Oslo default)."""
    if stored is None:
        return {
            "mode": "daily",
            "time": DEFAULT_TIME,
            "cron": "",
            "timezone": DEFAULT_ZONE,
            "enabled": True,
        }
    hhmm = scheduler.daily_time(stored.cron)
    if hhmm is not None:
        return {
            "mode": "daily",
            "time": hhmm,
            "cron": stored.cron,
            "timezone": stored.timezone,
            "enabled": stored.enabled,
        }
    return {
        "mode": "cron",
        "time": DEFAULT_TIME,
        "cron": stored.cron,
        "timezone": stored.timezone,
        "enabled": stored.enabled,
    }


def submitted_values(form: FormData) -> dict[str, Any]:
    def text(name: str) -> str:
        value = form.get(name)
        return value.strip()[:200] if isinstance(value, str) else ""

    return {
        "mode": "cron" if text("mode") == "cron" else "daily",
        "time": text("time"),
        "cron": " ".join(text("cron").split()),
        "timezone": text("timezone"),
        "enabled": form.get("enabled") is not None,
    }


def field_of(problem: str, mode: str) -> str:
    """Which form field a service problem is about."""
    if problem.startswith("unknown time zone") or problem == "Choose a time zone.":
        return "timezone"
    if "is not a time of day" in problem:
        return "time"
    return "cron" if mode == "cron" else "time"


def apply(row: Integration, values: dict[str, Any], actor: Actor) -> scheduler.ScheduleChange:
    """Store and push the submitted schedule (the service reports every problem at once)."""
    daily = values["mode"] == "daily"
    return scheduler.set_schedule(
        row,
        actor,
        daily=values["time"] if daily else None,
        cron=None if daily else values["cron"],
        timezone=values["timezone"],
        enabled=values["enabled"],
    )


def upcoming(stored: SyncSchedule | None) -> list[str]:
    """The stored schedule's next three runs, as ``2026-11-24 02:00`` in its own zone."""
    if stored is None or not stored.enabled:
        return []
    return [
        run.strftime("%Y-%m-%d %H:%M")
        for run in scheduler.next_runs(stored.cron, stored.timezone, 3)
    ]


def schedule_context(
    organisation: Organisation, row: Integration, values: dict[str, Any] | None = None
) -> dict[str, Any]:
    config.check_schedulable(row)
    stored = config.get_schedule(row)
    return {
        **base_context(organisation, row, "schedule"),
        "schedule": stored,
        "schedule_text": scheduler.describe(stored) if stored else "",
        "next_runs": upcoming(stored),
        "values": values or form_defaults(stored),
        "zones": COMMON_ZONES,
        "problems": [],
        "errors": {},
    }


def save_schedule(
    request: Request, organisation: Organisation, row: Integration, form: FormData, actor: Actor
) -> dict[str, Any] | None:
    """Store the form; None when saved, else the context to show it again (nothing changed)."""
    values = submitted_values(form)
    try:
        apply(row, values, actor)
    except InvalidInput as exc:
        tr = translator(request)
        context = schedule_context(organisation, row, values)
        errors: dict[str, str] = {}
        for problem in exc.problems:
            field = field_of(problem, values["mode"])
            errors[field] = f"{errors[field]} {tr(problem)}" if field in errors else tr(problem)
            context["problems"].append({"field": field, "message": tr(problem)})
        context["errors"] = errors
        return context
    return None


@router.get("/orgs/{org}/integrations/{type_key}/schedule")
def schedule_page(
    request: Request, org: str, type_key: str, signed_in: PageSession, saved: int = 0
) -> Response:
    organisation, row = load(org, type_key, signed_in.actor)
    context = schedule_context(organisation, row)
    if saved:
        context["flash"] = translator(request)("The schedule is saved.")
    return render(request, "schedule.html", context)


@router.post("/orgs/{org}/integrations/{type_key}/schedule")
async def save_schedule_page(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    organisation, row = load(org, type_key, signed_in.actor)
    refused = save_schedule(request, organisation, row, await request.form(), signed_in.actor)
    if refused is not None:
        return render(request, "schedule.html", refused, 422)
    return RedirectResponse(integration_url(org, type_key, "schedule?saved=1"), 303)
