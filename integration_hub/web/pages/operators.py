"""The operators' page: every organisation, the integration types each is offered (its feature
flags), renaming one and adding one. Only the hub's operators reach it; an organisation's
admin gets the refusal page. What may be done, and the audit of it, is services/tenancy.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from integration_hub.adapters.registry import all_types
from integration_hub.services import tenancy
from integration_hub.services.errors import InvalidInput
from integration_hub.web.rendering import render, translator
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

PAGE = "/operators/organisations"
FIELDS = ("slug", "name", "org_number")
MAX_TEXT = 300
"""Longer values are cut before they reach the service (which then says what is wrong)."""


def grouped_org_number(number: str) -> str:
    """``974760673`` -> ``974 760 673``, as Brønnøysundregistrene print it."""
    if len(number) != 9:
        return number
    return " ".join((number[:3], number[3:6], number[6:]))


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def _offered(form: FormData) -> list[str]:
    return [v for v in form.getlist("offered") if isinstance(v, str)][: len(all_types()) + 1]


def _problems(
    exc: InvalidInput, request: Request, anchor: str
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Service problems (``"org_number: ..."``) as a summary linking to each field and each
    field's own message; ``anchor`` prefixes the fields' ids (one form per organisation)."""
    tr = translator(request)
    summary, by_field = [], {}
    for problem in exc.problems or [str(exc)]:
        name, sep, message = problem.partition(": ")
        if sep and name in FIELDS:
            by_field.setdefault(name, tr(message))
            summary.append({"field": f"{anchor}-{name}", "message": tr(message)})
        else:
            summary.append({"field": "", "message": tr(problem)})
    return summary, by_field


def page_context(signed_in: Any, **extra: Any) -> dict[str, Any]:
    context: dict[str, Any] = {
        "tenants": tenancy.tenants(signed_in.actor),
        "types": [(t.key, t.display_name) for t in all_types()],
        "grouped_org_number": grouped_org_number,
        "problems": [],
        "errors": {},
        "failed": "",
        "values": {},
        "new": {"slug": "", "name": "", "org_number": "", "offered": []},
    }
    context.update(extra)
    return context


@router.get(PAGE)
def operators_page(
    request: Request, signed_in: PageSession, saved: str = "", added: str = ""
) -> Response:
    context = page_context(signed_in)
    tr = translator(request)
    names = {t.organisation.slug: t.organisation.name for t in context["tenants"]}
    if saved in names:
        context["flash"] = tr("The changes to {name} are saved.", name=names[saved])
    elif added in names:
        context["flash"] = tr("{name} is added.", name=names[added])
    return render(request, "operators.html", context)


@router.post(PAGE)
async def add_organisation(request: Request, signed_in: PageSession) -> Response:
    tenancy.check_manages(signed_in.actor)
    form = await request.form()
    new = {name: _text(form, name) for name in FIELDS} | {"offered": _offered(form)}
    try:
        added = tenancy.add_organisation(
            new["slug"], new["name"], new["org_number"], signed_in.actor, offered=new["offered"]
        )
    except InvalidInput as exc:
        problems, errors = _problems(exc, request, "new")
        context = page_context(signed_in, problems=problems, errors=errors, failed="new", new=new)
        return render(request, "operators.html", context, 422)
    return RedirectResponse(
        f"{PAGE}?added={added.organisation.slug}#org-{added.organisation.slug}", 303
    )


@router.post(PAGE + "/{org}")
async def save_organisation(request: Request, org: str, signed_in: PageSession) -> Response:
    tenancy.check_manages(signed_in.actor)
    form = await request.form()
    name, offered = _text(form, "name"), _offered(form)
    try:
        tenancy.update_organisation(org, name, offered, signed_in.actor)
    except InvalidInput as exc:
        problems, errors = _problems(exc, request, org)
        context = page_context(
            signed_in,
            problems=problems,
            errors=errors,
            failed=org,
            values={"name": name, "offered": offered},
        )
        return render(request, "operators.html", context, 422)
    return RedirectResponse(f"{PAGE}?saved={org}#org-{org}", 303)
