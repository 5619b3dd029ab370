"""The setup wizard: credentials -> test connection -> field mapping -> schedule -> excluded
categories -> review and activate. It can be left and resumed: ``/setup`` goes to where the
person left off (:func:`integration_hub.services.wizard.resume_step`).

Each step uses the same form as its screen of its own (credentials, schedule, exclusions); the
mapping step is the mapping editor's (``pages/mapping.py``), which shows the step list with
:func:`wizard_steps` and ``_wizard_steps.html``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from integration_hub.adapters.base import ConnectionResult
from integration_hub.adapters.registry import get_type
from integration_hub.models import Integration, IntegrationStatus, Organisation
from integration_hub.services import configuration as config
from integration_hub.services import scheduler
from integration_hub.services import wizard as setup
from integration_hub.services.errors import InvalidInput, NotFound
from integration_hub.web.pages import credentials, exclusions, schedule
from integration_hub.web.pages.credentials import (
    CONNECTION_STATUS_TEXT,
    base_context,
    connection_result,
    integration_url,
)
from integration_hub.web.rendering import render, translator
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

STEP_LABELS = {
    "credentials": "Credentials",
    "test": "Test connection",
    "mapping": "Field mapping",
    "schedule": "Schedule",
    "exclusions": "Excluded categories",
    "review": "Review and activate",
}
"""The steps as people read them (English source text; bokmål in setup.yaml)."""


def step_url(org: str, type_key: str, step: str) -> str:
    return integration_url(org, type_key, f"setup/{step}")


def setup_finished(row: Integration) -> bool:
    """An activated (or paused) integration: every step is done and may be revisited."""
    return row.setup_step is None and row.status != IntegrationStatus.DRAFT


def wizard_steps(org: str, type_key: str, row: Integration, current: str) -> list[dict[str, Any]]:
    """The step list ``_wizard_steps.html`` shows: each step's ``key``, ``label`` (English,
    translated by the template), ``number``, ``state`` (done, current or todo) and ``url``
    (None for a step that cannot be opened yet)."""
    steps = setup.steps_for(type_key)
    reached = len(steps) - 1 if setup_finished(row) else steps.index(setup.resume_step(row))
    items = []
    for index, key in enumerate(steps):
        if key == current:
            state = "current"
        elif index < reached or setup_finished(row):
            state = "done"
        else:
            state = "todo"
        items.append(
            {
                "key": key,
                "label": STEP_LABELS[key],
                "number": index + 1,
                "state": state,
                "url": step_url(org, type_key, key) if index <= reached else None,
            }
        )
    return items


def step_context(
    organisation: Organisation, row: Integration, step: str, /, **extra: Any
) -> dict[str, Any]:
    """A wizard step's template context; ``extra`` (e.g. the shared form's context) wins."""
    steps = setup.steps_for(row.type_key)
    index = steps.index(step)
    following = steps[index + 1] if index + 1 < len(steps) else None
    previous = steps[index - 1] if index > 0 else None
    context = {
        **base_context(organisation, row, ""),
        "step": step,
        "step_label": STEP_LABELS[step],
        "step_number": index + 1,
        "step_total": len(steps),
        "steps": wizard_steps(organisation.slug, row.type_key, row, step),
        "next_url": step_url(organisation.slug, row.type_key, following) if following else None,
        "back_url": step_url(organisation.slug, row.type_key, previous) if previous else None,
        "action": step_url(organisation.slug, row.type_key, step),
    }
    context.update(extra)
    return context


def open_step(org: str, type_key: str, step: str, actor: Any) -> tuple[Organisation, Integration]:
    """The integration a wizard step works on (unsaved, without an id, until the first step is
    posted); a step not reached yet is refused with a redirect (raised as
    :class:`StepNotReached`)."""
    organisation, row = setup.planned(org, type_key, actor)
    setup.check_step(type_key, step)
    if not setup_finished(row):
        steps = setup.steps_for(type_key)
        if steps.index(step) > steps.index(setup.resume_step(row)):
            raise StepNotReached(step_url(org, type_key, setup.resume_step(row)))
    return organisation, row


class StepNotReached(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def guarded(org: str, type_key: str, step: str, actor: Any) -> tuple[Any, Any] | Response:
    try:
        return open_step(org, type_key, step, actor)
    except StepNotReached as exc:
        return RedirectResponse(exc.url, 303)


def completed(org: str, type_key: str, row: Integration, step: str, actor: Any) -> Response:
    following = setup.complete(row, step, actor)
    return RedirectResponse(step_url(org, type_key, following), 303)


# -- start and resume --------------------------------------------------------------------------
@router.get("/orgs/{org}/integrations/{type_key}/setup")
def start(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    """Where the person left off; for a new integration the first step, with nothing stored
    yet (a GET changes nothing: the first post creates the draft)."""
    _organisation, row = setup.planned(org, type_key, signed_in.actor)
    return RedirectResponse(step_url(org, type_key, setup.resume_step(row)), 303)


# -- credentials -------------------------------------------------------------------------------
@router.get("/orgs/{org}/integrations/{type_key}/setup/credentials")
def credentials_step(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    opened = guarded(org, type_key, "credentials", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    context = step_context(
        organisation,
        row,
        "credentials",
        fields=credentials.credential_fields(
            row, signed_in.actor, offers=config.offered_choices(row, signed_in.actor)
        ),
        problems=[],
    )
    return render(request, "wizard_credentials.html", context)


@router.post("/orgs/{org}/integrations/{type_key}/setup/credentials")
async def save_credentials_step(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    opened = guarded(org, type_key, "credentials", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    if row.id is None:  # the wizard's first post stores the draft
        row = setup.start(org, type_key, signed_in.actor)
    form = await request.form()
    refused = credentials.save_credentials(request, row, form, signed_in.actor)
    if refused is not None:
        context = step_context(organisation, row, "credentials", **refused)
        return render(request, "wizard_credentials.html", context, 422)
    return completed(org, type_key, row, "credentials", signed_in.actor)


# -- test connection ---------------------------------------------------------------------------
def test_context(
    organisation: Organisation, row: Integration, result: ConnectionResult | None, **extra: Any
) -> dict[str, Any]:
    row = config.reload(row)
    return step_context(
        organisation,
        row,
        "test",
        test=connection_result(result, row),
        just_tested=result is not None,
        status_text=CONNECTION_STATUS_TEXT,
        test_action=step_url(organisation.slug, row.type_key, "test"),
        continue_action=step_url(organisation.slug, row.type_key, "test"),
        credentials_url=step_url(organisation.slug, row.type_key, "credentials"),
        **extra,
    )


@router.get("/orgs/{org}/integrations/{type_key}/setup/test")
def test_step(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    opened = guarded(org, type_key, "test", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    return render(request, "wizard_test.html", test_context(organisation, row, None))


@router.post("/orgs/{org}/integrations/{type_key}/setup/test")
async def run_test_step(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    """``action=test`` (the button; also what the page falls back to without JavaScript) runs
    the test and completes the step when it passes; ``action=continue`` completes the step
    after a test that passed (the JavaScript path tests through the API)."""
    opened = guarded(org, type_key, "test", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    form = await request.form()
    if form.get("action") == "continue":
        if config.reload(row).last_test_status != "ok":
            context = test_context(
                organisation,
                row,
                None,
                problems=[
                    {
                        "field": "",
                        "message": translator(request)(
                            "Test the connection successfully before you continue."
                        ),
                    }
                ],
            )
            return render(request, "wizard_test.html", context, 409)
        return completed(org, type_key, row, "test", signed_in.actor)
    result = credentials.run_connection_test(row, signed_in.actor)
    if result.ok:
        setup.complete(row, "test", signed_in.actor)
    return render(request, "wizard_test.html", test_context(organisation, row, result))


# -- schedule ----------------------------------------------------------------------------------
@router.get("/orgs/{org}/integrations/{type_key}/setup/schedule")
def schedule_step(
    request: Request, org: str, type_key: str, signed_in: PageSession, saved: int = 0
) -> Response:
    opened = guarded(org, type_key, "schedule", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    context = step_context(
        organisation, row, "schedule", **schedule.schedule_context(organisation, row)
    )
    context["saved"] = bool(saved) and context["schedule"] is not None
    if context["saved"]:
        context["flash"] = translator(request)("The schedule is saved.")
    return render(request, "wizard_schedule.html", context)


@router.post("/orgs/{org}/integrations/{type_key}/setup/schedule")
async def save_schedule_step(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    """Saves, completes the step and shows the schedule with its next three runs again (with a
    "Continue" link), so the person sees when the first exports will happen."""
    opened = guarded(org, type_key, "schedule", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    form = await request.form()
    refused = schedule.save_schedule(request, organisation, row, form, signed_in.actor)
    if refused is not None:
        context = step_context(organisation, row, "schedule", **refused)
        return render(request, "wizard_schedule.html", context, 422)
    setup.complete(row, "schedule", signed_in.actor)
    return RedirectResponse(step_url(org, type_key, "schedule") + "?saved=1", 303)


# -- excluded categories -----------------------------------------------------------------------
@router.get("/orgs/{org}/integrations/{type_key}/setup/exclusions")
def exclusions_step(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    opened = guarded(org, type_key, "exclusions", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    context = step_context(
        organisation,
        row,
        "exclusions",
        **exclusions.exclusions_context(request, organisation, row),
    )
    return render(request, "wizard_exclusions.html", context)


@router.post("/orgs/{org}/integrations/{type_key}/setup/exclusions")
async def save_exclusions_step(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    opened = guarded(org, type_key, "exclusions", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    form = await request.form()
    refused = exclusions.save_exclusions(request, organisation, row, form, signed_in.actor)
    if refused is not None:
        context = step_context(organisation, row, "exclusions", **refused)
        return render(request, "wizard_exclusions.html", context, 422)
    return completed(org, type_key, row, "exclusions", signed_in.actor)


# -- review and activate -----------------------------------------------------------------------
def review_context(
    request: Request, organisation: Organisation, row: Integration, actor: Any
) -> dict[str, Any]:
    row = config.reload(row)
    tr = translator(request)
    mapping_version = None
    if get_type(row.type_key).default_mapping is not None:
        try:
            mapping_version, _document = config.current_mapping(row)
        except NotFound:
            mapping_version = None
    stored = config.get_schedule(row)
    return step_context(
        organisation,
        row,
        "review",
        fields=credentials.credential_fields(row, actor),
        test=connection_result(None, row),
        status_text=CONNECTION_STATUS_TEXT,
        mapping_version=mapping_version,
        schedule=stored,
        schedule_text=scheduler.describe(stored) if stored else "",
        next_runs=schedule.upcoming(stored),
        excluded_labels=[exclusions.category_label(c, tr) for c in config.list_exclusions(row)],
        problems=[],
    )


@router.get("/orgs/{org}/integrations/{type_key}/setup/review")
def review_step(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    opened = guarded(org, type_key, "review", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    return render(
        request, "wizard_review.html", review_context(request, organisation, row, signed_in.actor)
    )


@router.post("/orgs/{org}/integrations/{type_key}/setup/review")
def activate_step(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    opened = guarded(org, type_key, "review", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    try:
        setup.activate(config.reload(row), signed_in.actor)
    except InvalidInput as exc:
        tr = translator(request)
        context = review_context(request, organisation, row, signed_in.actor)
        context["problems"] = [{"field": "", "message": tr(p)} for p in exc.problems]
        return render(request, "wizard_review.html", context, 422)
    return RedirectResponse(f"/orgs/{org}?activated={type_key}", 303)
