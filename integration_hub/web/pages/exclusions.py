"""The excluded categories panel (a wizard step and a screen of its own): the data categories an
organisation opts out of. Excluded records are skipped, each with the reason, never sent.

Unknown categories are refused by :func:`configuration.set_exclusions`, and nothing changes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from integration_hub.adapters.bufdir import TYPE_PREFIX
from integration_hub.models import Integration, Organisation
from integration_hub.services import configuration as config
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import InvalidInput
from integration_hub.web.pages.credentials import base_context, integration_url, load
from integration_hub.web.rendering import render, translator
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

MAX_CATEGORIES = 100

CATEGORY_TEXT = {
    "mileage": "Mileage",
    "travel": "Travel",
    "meals": "Meals",
    "materials": "Materials",
    "parking": "Parking",
    "toll": "Toll",
    "draft": "Draft activities",
    "no_participants": "Activities without a participant count",
}
"""Category codes as people read them (English source text, the same words as the mapping
editor and the claims; bokmål in setup.yaml)."""

CATEGORY_HINTS = {
    "draft": "Draft and cancelled activities are not reported.",
    "no_participants": "Activities where nobody recorded how many took part.",
}

ACTIVITY_TYPE_TEXT = {
    "møte": "Meetings",
    "kurs": "Courses",
    "tur": "Trips",
    "likepersonsarbeid": "Peer support",
}


def category_label(code: str, tr: Any) -> str:
    """``draft`` -> "Draft activities", ``type:kurs`` -> "Activities of the type: Courses"."""
    if code.startswith(TYPE_PREFIX):
        kind = code.removeprefix(TYPE_PREFIX)
        return tr("Activities of the type: {kind}").format(
            kind=tr(ACTIVITY_TYPE_TEXT.get(kind, kind))
        )
    return tr(CATEGORY_TEXT.get(code, code))


def exclusion_items(row: Integration, selected: list[str], tr: Any) -> list[dict[str, Any]]:
    return [
        {
            "code": code,
            "id": "exclude-" + "".join(c if c.isalnum() else "-" for c in code),
            "label": category_label(code, tr),
            "hint": tr(CATEGORY_HINTS[code]) if code in CATEGORY_HINTS else "",
            "checked": code in selected,
        }
        for code in config.exclusion_choices(row)
    ]


def submitted_categories(form: FormData) -> list[str]:
    categories = [v.strip() for v in form.getlist("categories") if isinstance(v, str)]
    if len(categories) > MAX_CATEGORIES:
        raise InvalidInput(f"at most {MAX_CATEGORIES} categories")
    return categories


def exclusions_context(
    request: Request,
    organisation: Organisation,
    row: Integration,
    selected: list[str] | None = None,
) -> dict[str, Any]:
    tr = translator(request)
    chosen = config.list_exclusions(row) if selected is None else selected
    return {
        **base_context(organisation, row, "exclusions"),
        "items": exclusion_items(row, chosen, tr),
        "excluded_labels": [category_label(c, tr) for c in config.list_exclusions(row)],
        "problems": [],
    }


def save_exclusions(
    request: Request, organisation: Organisation, row: Integration, form: FormData, actor: Actor
) -> dict[str, Any] | None:
    """Store the choice; None when saved, else the context to show it again (nothing changed)."""
    try:
        categories = submitted_categories(form)
        config.set_exclusions(row, categories, actor)
    except InvalidInput as exc:
        tr = translator(request)
        known = set(config.exclusion_choices(row))
        context = exclusions_context(
            request, organisation, row, [c for c in form.getlist("categories") if c in known]
        )
        context["problems"] = [{"field": "", "message": tr(p)} for p in exc.problems]
        return context
    return None


@router.get("/orgs/{org}/integrations/{type_key}/exclusions")
def exclusions_page(
    request: Request, org: str, type_key: str, signed_in: PageSession, saved: int = 0
) -> Response:
    organisation, row = load(org, type_key, signed_in.actor)
    context = exclusions_context(request, organisation, row)
    if saved:
        context["flash"] = translator(request)("The excluded categories are saved.")
    return render(request, "exclusions.html", context)


@router.post("/orgs/{org}/integrations/{type_key}/exclusions")
async def save_exclusions_page(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    organisation, row = load(org, type_key, signed_in.actor)
    refused = save_exclusions(request, organisation, row, await request.form(), signed_in.actor)
    if refused is not None:
        return render(request, "exclusions.html", refused, 422)
    return RedirectResponse(integration_url(org, type_key, "exclusions?saved=1"), 303)
