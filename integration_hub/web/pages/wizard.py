"""The setup wizard: credentials -> test connection -> field mapping -> schedule -> excluded
categories -> review and activate. It can be left and resumed: ``/setup`` goes to where the
person left off (:func:`integration_hub.services.wizard.resume_step`).

Each step uses the same form as its screen of its own (credentials, schedule, exclusions); the
mapping step is the mapping editor's (``pages/mapping.py``), which shows the step list with
:func:`wizard_steps` and ``_wizard_steps.html``.

A draft is stored step by step, and activated through the setup service (which tests the
connection again and stores the activation as a whole). A finished setup (active or paused)
runs while it is changed, so its steps *stage* their part (:mod:`integration_hub.services.setup`):
the live configuration keeps running until the staged one passes its connection test and the
admin applies it on the review step, which lists what will change.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from integration_hub.adapters.base import ConnectionResult
from integration_hub.adapters.registry import get_type
from integration_hub.models import Integration, IntegrationStatus, Organisation, SyncSchedule
from integration_hub.services import configuration as config
from integration_hub.services import scheduler
from integration_hub.services import setup as setup_service
from integration_hub.services import wizard as setup
from integration_hub.services.errors import InvalidInput, NotFound
from integration_hub.services.setup import ConnectionTestFailed
from integration_hub.web.pages import credentials, exclusions, schedule
from integration_hub.web.pages.credentials import (
    CONNECTION_STATUS_TEXT,
    SECRET_SET_HINT,
    base_context,
    connection_result,
    integration_url,
    split_problems,
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

STAGED_NOTICE = (
    "{target} is running. What you change here is kept aside: the current setup keeps "
    "running until the changes pass the connection test and you apply them on the last step."
)


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
        "staged": setup_service.stages_changes(row),
        "staged_notice": STAGED_NOTICE,
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
        fields=staged_fields(row, signed_in.actor)
        if setup_service.stages_changes(row)
        else credentials.credential_fields(
            row, signed_in.actor, offers=config.offered_choices(row, signed_in.actor)
        ),
        problems=[],
    )
    return render(request, "wizard_credentials.html", context)


def staged_fields(
    row: Integration,
    actor: Any,
    submitted: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The credential form of a staged change: the staged settings (or what was just typed)
    and, for a secret replaced in the staged change, its mask."""
    staged = setup_service.staged_change(row)
    shown = {k: "" if v is None else str(v) for k, v in (staged.settings if staged else {}).items()}
    fields = credentials.credential_fields(
        row, actor, {**shown, **(submitted or {})}, errors, config.offered_choices(row, actor)
    )
    for field in fields:
        if staged is not None and field["secret"] and field["name"] in staged.secret_masks:
            field.update(
                value=staged.secret_masks[field["name"]],
                set=True,
                required=False,
                secret_hint=SECRET_SET_HINT,
            )
    return fields


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
    if setup_service.stages_changes(row):
        refused = stage_credentials(request, row, form, signed_in.actor)
    else:
        refused = credentials.save_credentials(request, row, form, signed_in.actor)
    if refused is not None:
        context = step_context(organisation, row, "credentials", **refused)
        return render(request, "wizard_credentials.html", context, 422)
    return completed(org, type_key, row, "credentials", signed_in.actor)


def stage_credentials(
    request: Request, row: Integration, form: Any, actor: Any
) -> dict[str, Any] | None:
    """Stage the form (the live configuration is untouched); None when staged, else the
    context to show it again with every problem."""
    try:
        setup_service.stage_configuration(row, credentials.form_values(row, form), actor)
    except InvalidInput as exc:
        model = get_type(row.type_key).config_model
        submitted = {k: v for k, v in form.items() if isinstance(v, str)}
        summary, by_field = split_problems(exc.problems, model, translator(request))
        settings = {k: v for k, v in submitted.items() if k in model.setting_fields()}
        return {"problems": summary, "fields": staged_fields(row, actor, settings, by_field)}
    return None


# -- test connection ---------------------------------------------------------------------------
def test_context(
    organisation: Organisation, row: Integration, result: ConnectionResult | None, **extra: Any
) -> dict[str, Any]:
    row = config.reload(row)
    return step_context(
        organisation,
        row,
        "test",
        test=staged_test(row, result)
        if setup_service.stages_changes(row)
        else connection_result(result, row),
        just_tested=result is not None,
        status_text=CONNECTION_STATUS_TEXT,
        test_action=step_url(organisation.slug, row.type_key, "test"),
        continue_action=step_url(organisation.slug, row.type_key, "test"),
        credentials_url=step_url(organisation.slug, row.type_key, "credentials"),
        **extra,
    )


def staged_test(row: Integration, result: ConnectionResult | None) -> dict[str, Any] | None:
    """The connection test of the staged configuration (just run, or the last one)."""
    if result is not None:
        return connection_result(result, row)
    staged = setup_service.staged_change(row)
    if staged is None or staged.test is None:
        return None
    shown = connection_result(staged.test, row)
    assert shown is not None
    shown.update(elapsed_s=None, at=staged.tested_at)
    return shown


def staged_test_passed(row: Integration) -> bool:
    staged = setup_service.staged_change(row)
    return staged is not None and staged.test is not None and staged.test.ok


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
    staged = setup_service.stages_changes(row)
    if form.get("action") == "continue":
        passed = staged_test_passed(row) if staged else config.reload(row).last_test_status == "ok"
        if not passed:
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
    if staged:
        result = setup_service.check_staged_connection(row, signed_in.actor)
    else:
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
        organisation, row, "schedule", **schedule_step_context(organisation, row)
    )
    context["saved"] = bool(saved) and context["schedule"] is not None
    if context["saved"]:
        context["flash"] = translator(request)(
            "The schedule is kept with your other changes."
            if context["staged"]
            else "The schedule is saved."
        )
    return render(request, "wizard_schedule.html", context)


def schedule_step_context(
    organisation: Organisation, row: Integration, values: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The schedule form's context; for a staged change, its schedule instead of the live one."""
    context = schedule.schedule_context(organisation, row, values)
    staged = setup_service.staged_change(row) if setup_service.stages_changes(row) else None
    if staged is not None and staged.schedule is not None:
        planned = SyncSchedule(integration_id=row.id or 0, **staged.schedule)
        context.update(
            schedule=planned,
            schedule_text=scheduler.describe(planned),
            next_runs=schedule.upcoming(planned),
            values=values or schedule.form_defaults(planned),
        )
    return context


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
    if setup_service.stages_changes(row):
        refused = stage_schedule(request, organisation, row, form, signed_in.actor)
    else:
        refused = schedule.save_schedule(request, organisation, row, form, signed_in.actor)
    if refused is not None:
        context = step_context(organisation, row, "schedule", **refused)
        return render(request, "wizard_schedule.html", context, 422)
    setup.complete(row, "schedule", signed_in.actor)
    return RedirectResponse(step_url(org, type_key, "schedule") + "?saved=1", 303)


def stage_schedule(
    request: Request, organisation: Organisation, row: Integration, form: Any, actor: Any
) -> dict[str, Any] | None:
    """Stage the submitted schedule; None when staged, else the form again with each problem
    at its field (nothing staged)."""
    values = schedule.submitted_values(form)
    daily = values["mode"] == "daily"
    try:
        setup_service.stage_schedule(
            row,
            actor,
            daily=values["time"] if daily else None,
            cron=None if daily else values["cron"],
            timezone=values["timezone"],
            enabled=values["enabled"],
        )
    except InvalidInput as exc:
        tr = translator(request)
        context = schedule_step_context(organisation, row, values)
        for problem in exc.problems:
            field = schedule.field_of(problem, values["mode"])
            message = tr(problem)
            context["errors"][field] = " ".join(
                part for part in (context["errors"].get(field), message) if part
            )
            context["problems"].append({"field": field, "message": message})
        return context
    return None


# -- excluded categories -----------------------------------------------------------------------
@router.get("/orgs/{org}/integrations/{type_key}/setup/exclusions")
def exclusions_step(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    opened = guarded(org, type_key, "exclusions", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    staged = setup_service.staged_change(row) if setup_service.stages_changes(row) else None
    selected = staged.exclusions if staged is not None else None
    context = step_context(
        organisation,
        row,
        "exclusions",
        **exclusions.exclusions_context(request, organisation, row, selected),
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
    if setup_service.stages_changes(row):
        refused = stage_exclusions(request, organisation, row, form, signed_in.actor)
    else:
        refused = exclusions.save_exclusions(request, organisation, row, form, signed_in.actor)
    if refused is not None:
        context = step_context(organisation, row, "exclusions", **refused)
        return render(request, "wizard_exclusions.html", context, 422)
    return completed(org, type_key, row, "exclusions", signed_in.actor)


def stage_exclusions(
    request: Request, organisation: Organisation, row: Integration, form: Any, actor: Any
) -> dict[str, Any] | None:
    """Stage the ticked categories; None when staged, else the form again (nothing staged)."""
    try:
        setup_service.stage_exclusions(row, exclusions.submitted_categories(form), actor)
    except InvalidInput as exc:
        tr = translator(request)
        known = set(config.exclusion_choices(row))
        chosen = [c for c in form.getlist("categories") if c in known]
        context = exclusions.exclusions_context(request, organisation, row, chosen)
        context["problems"] = [{"field": "", "message": tr(p)} for p in exc.problems]
        return context
    return None


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
    staged: dict[str, Any] = {}
    if setup_service.stages_changes(row):
        review = setup_service.review_staged(row, actor)
        staged = {
            "changes": [
                {"what": _label(row, c.what), "before": c.before, "after": c.after}
                for c in review.changes
            ],
            "staged_problems": [tr(p) for p in review.problems],
            "has_stage": review.staged is not None,
            "stage_readable": review.readable,
            "staged_test": staged_test(row, None),
        }
    return step_context(
        organisation,
        row,
        "review",
        **staged,
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


CHANGE_LABELS = {
    "field mapping": "Field mapping",
    "schedule": "Schedule",
    "excluded categories": "Excluded categories",
    "status": "Status",
}
"""The setup service's names of what changes, as the review shows them."""


def _label(row: Integration, what: str) -> str:
    """What a change is about, as people read it (English source text): a configuration
    field's label, or the step's name."""
    model = get_type(row.type_key).config_model
    if what in model.model_fields:
        return model.field_text(what)[0]
    return CHANGE_LABELS.get(what, what)


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
async def activate_step(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    """A draft is activated; a finished setup's staged change is applied (``action=apply``)
    or discarded (``action=discard``). Each through the setup service: checked whole, tested
    again, stored in one go; refused, nothing changes and the page says why."""
    opened = guarded(org, type_key, "review", signed_in.actor)
    if isinstance(opened, Response):
        return opened
    organisation, row = opened
    row = config.reload(row)
    action = (await request.form()).get("action")
    done = integration_url(org, type_key, "setup/done")
    try:
        if not setup_service.stages_changes(row):
            setup_service.activate(row, signed_in.actor)
            return RedirectResponse(f"{done}?activated=1", 303)
        if action == "discard":
            setup_service.discard_staged(row, signed_in.actor)
            return RedirectResponse(f"{done}?discarded=1", 303)
        setup_service.confirm_staged(row, signed_in.actor)
        return RedirectResponse(f"{done}?changed=1", 303)
    except InvalidInput as exc:
        problems = exc.problems
    except ConnectionTestFailed as exc:
        problems = [str(exc)]
    tr = translator(request)
    context = review_context(request, organisation, row, signed_in.actor)
    context["problems"] = [{"field": "", "message": tr(p)} for p in problems]
    return render(request, "wizard_review.html", context, 422)


DONE_MESSAGES = {
    "activated": "{target} is active.",
    "changed": "The changes are applied: {target} runs with the new setup.",
    "discarded": "The changes are discarded: {target} runs as before.",
}


@router.get("/orgs/{org}/integrations/{type_key}/setup/done")
def done_step(
    request: Request,
    org: str,
    type_key: str,
    signed_in: PageSession,
    activated: int = 0,
    changed: int = 0,
    discarded: int = 0,
) -> Response:
    """The confirmation after activating, applying or discarding: what runs now, and when."""
    organisation, row = setup.planned(org, type_key, signed_in.actor)
    if row.id is None:
        return RedirectResponse(step_url(org, type_key, "credentials"), 303)
    row = config.reload(row)
    tr = translator(request)
    said = next(
        (key for key, flag in (("activated", activated), ("changed", changed),
                               ("discarded", discarded)) if flag),
        None,
    )  # fmt: skip
    stored = config.get_schedule(row)
    context = {
        **base_context(organisation, row, ""),
        "flash": tr(DONE_MESSAGES[said], target=get_type(row.type_key).display_name)
        if said
        else None,
        "schedule": stored,
        "schedule_text": scheduler.describe(stored) if stored else "",
        "next_runs": schedule.upcoming(stored) if row.status == IntegrationStatus.ACTIVE else [],
        "dashboard_url": f"/orgs/{org}",
        "health_url": integration_url(org, type_key, "health"),
        "setup_url": step_url(org, type_key, "credentials"),
    }
    return render(request, "wizard_done.html", context)
