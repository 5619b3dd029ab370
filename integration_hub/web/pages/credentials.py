"""The credential form (a wizard step and a screen of its own) and the connection test.

Secret fields are write-only: the form shows the vault's mask (``••••••3f9a``), never the value;
posting the mask back, or leaving the field blank, keeps the stored secret
(:func:`configuration.save_configuration` decides that, and audits a replacement without the
value). Also the helpers the other setup screens share: finding the integration a path names,
the screen's navigation and the connection test's words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from integration_hub.adapters.base import ConnectionResult, IntegrationConfig
from integration_hub.adapters.registry import get_type
from integration_hub.models import Integration, Organisation
from integration_hub.services import alerts, setup
from integration_hub.services import configuration as config
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import InvalidInput
from integration_hub.web.rendering import render, translator
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

MAX_FIELD_LENGTH = 4096
"""Longer values are refused before they reach the services (no credential is that long)."""

# -- shared by the setup screens ---------------------------------------------------------------
SECRET_SET_HINT = (
    "Stored encrypted and shown only as a mask. To keep it, leave the field as it is; to "
    "replace it, clear the field and type the new value."
)
SECRET_UNSET_HINT = "Not stored yet. It is stored encrypted and never shown again."

CONNECTION_STATUS_TEXT = {
    "ok": "Connected",
    "bad_credentials": "The credentials were refused",
    "unreachable": "The service could not be reached",
    "timed_out": "The service did not answer within 10 seconds",
    "throttled": "The service is busy and asked us to wait",
    "unexpected_response": "The service gave an answer we did not expect",
}
"""Connection test results as people read them."""


def load(org: str, type_key: str, actor: Actor) -> tuple[Organisation, Integration]:
    """The organisation and its integration of ``type_key`` (the services check who may)."""
    organisation = config.organisation(org, actor)
    return organisation, config.integration(organisation, type_key, actor)


def integration_url(org: str, type_key: str, page: str = "") -> str:
    base = f"/orgs/{org}/integrations/{type_key}"
    return f"{base}/{page}" if page else base


def base_context(organisation: Organisation, row: Integration, nav_current: str = "") -> dict:
    """What every setup screen's template uses: who, which target, and the navigation."""
    adapter_type = get_type(row.type_key)
    return {
        "organisation": organisation.slug,
        "organisation_name": organisation.name,
        "type_key": row.type_key,
        "target": adapter_type.display_name,
        "maps_fields": adapter_type.default_mapping is not None,
        "scheduled": adapter_type.runs_on_schedule,
        "nav_current": nav_current,
        "integration": row,
    }


def connection_result(result: ConnectionResult | None, row: Integration) -> dict | None:
    """A test result (just run, or the stored last one) for the templates."""
    if result is not None:
        return {
            "ok": result.ok,
            "status": result.status.value,
            "detail": result.detail,
            "elapsed_s": round(result.elapsed_ms / 1000, 1),
            "at": None,
            "warnings": list(result.warnings),
        }
    if row.last_test_status is None:
        return None
    return {
        "ok": row.last_test_status == "ok",
        "status": row.last_test_status,
        "detail": row.last_test_detail or "",
        "elapsed_s": None,
        "at": row.last_test_at,
        "warnings": [],  # shown when a test runs, not stored: the export checks again
    }


def run_connection_test(row: Integration, actor: Actor) -> ConnectionResult:
    """The connection test the wizard and the credential screen run (alerts on failure)."""
    result, _alert = alerts.check_connection(row, actor)
    return result


# -- the credential form -----------------------------------------------------------------------
def credential_fields(
    row: Integration,
    actor: Actor,
    submitted: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    offers: dict[str, config.Offer] | None = None,
) -> list[dict[str, Any]]:
    """The form's fields: settings as stored (or as just typed), secrets only as masks; a field
    the target offers choices for (``offers``) is a list to pick from, or says why there is
    none and stays a text field."""
    fields = []
    for field in config.credential_form(row, actor):
        name = field["name"]
        value = field["value"]
        if submitted is not None and not field["secret"]:
            value = submitted.get(name, value)
        offer = (offers or {}).get(name)
        fields.append(
            {
                **field,
                "value": value,  # for a secret: its mask, never what was typed
                "hint": field["help"],
                "secret_hint": SECRET_SET_HINT if field["set"] else SECRET_UNSET_HINT,
                "required": field["required"] and not (field["secret"] and field["set"]),
                "error": (errors or {}).get(name, ""),
                "options": _options(offer, value) if offer and offer.choices else [],
                "offer_problem": offer.problem if offer else "",
            }
        )
    return fields


def _options(offer: config.Offer, value: str) -> list[dict[str, Any]]:
    """A select's options: each choice (one the hub cannot use is shown, disabled, with why),
    and the current value kept when the target no longer offers it."""
    options = [
        {
            "value": choice.id,
            "text": " · ".join(part for part in (choice.name, choice.code) if part),
            "note": choice.note,
            "selected": choice.id.lower() == value.lower(),
        }
        for choice in offer.choices
    ]
    if value and not any(option["selected"] for option in options):
        options.append({"value": value, "text": value, "note": "", "selected": True, "gone": True})
    return options


def form_values(row: Integration, form: FormData) -> dict[str, str]:
    """The submitted configuration fields (only the type's own fields; too long is refused)."""
    names = get_type(row.type_key).config_model.model_fields
    values = {}
    for name in names:
        value = form.get(name)
        if isinstance(value, str):
            values[name] = value.strip()
    too_long = [name for name, value in values.items() if len(value) > MAX_FIELD_LENGTH]
    if too_long:
        raise InvalidInput(
            "the configuration is not valid",
            [f"{name}: at most {MAX_FIELD_LENGTH} characters" for name in too_long],
        )
    return values


def split_problems(
    problems: list[str], model: type[IntegrationConfig], tr: Callable[[str], str]
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Service problems (``"base_url: Input should be ..."``) as an error summary that links
    to each field, and each field's own message."""
    summary: list[dict[str, str]] = []
    by_field: dict[str, str] = {}
    for problem in problems:
        name, sep, message = problem.partition(": ")
        name = name.split(".")[0]
        if sep and name in model.model_fields:
            label = model.field_text(name)[0]
            text = tr(message)
            by_field.setdefault(name, text)
            summary.append({"field": name, "message": f"{tr(label)}: {text}"})
        else:
            summary.append({"field": "", "message": tr(problem.removeprefix(": "))})
    return summary, by_field


def save_credentials(
    request: Request, row: Integration, form: FormData, actor: Actor
) -> dict[str, Any] | None:
    """Store the form; None when saved, else the context to show the form again (nothing
    stored)."""
    try:
        values = form_values(row, form)
        setup.change_configuration(row, values, actor)  # one that runs: tested, then stored
    except (InvalidInput, setup.ConnectionTestFailed) as exc:
        problems = exc.problems if isinstance(exc, InvalidInput) else [str(exc)]
        model = get_type(row.type_key).config_model
        submitted = {k: v for k, v in form.items() if isinstance(v, str)}
        summary, by_field = split_problems(problems, model, translator(request))
        return {
            "problems": summary,
            "fields": credential_fields(
                row, actor, submitted, by_field, config.offered_choices(row, actor)
            ),
        }
    return None


def credentials_context(
    organisation: Organisation, row: Integration, actor: Actor, **extra: Any
) -> dict[str, Any]:
    row = config.reload(row)
    if "fields" not in extra:
        extra["fields"] = credential_fields(row, actor, offers=config.offered_choices(row, actor))
    context = {
        **base_context(organisation, row, "credentials"),
        "problems": [],
        "test": connection_result(None, row),
        "test_action": integration_url(organisation.slug, row.type_key, "credentials/test"),
        "status_text": CONNECTION_STATUS_TEXT,
    }
    context.update(extra)
    return context


@router.get("/orgs/{org}/integrations/{type_key}/credentials")
def credentials_page(
    request: Request, org: str, type_key: str, signed_in: PageSession, saved: int = 0
) -> Response:
    organisation, row = load(org, type_key, signed_in.actor)
    context = credentials_context(organisation, row, signed_in.actor)
    if saved:
        context["flash"] = translator(request)("The credentials are saved.")
    return render(request, "credentials.html", context)


@router.post("/orgs/{org}/integrations/{type_key}/credentials")
async def save_credentials_page(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    organisation, row = load(org, type_key, signed_in.actor)
    form = await request.form()
    refused = save_credentials(request, row, form, signed_in.actor)
    if refused is not None:
        context = credentials_context(organisation, row, signed_in.actor, **refused)
        return render(request, "credentials.html", context, 422)
    return RedirectResponse(integration_url(org, type_key, "credentials?saved=1"), 303)


@router.post("/orgs/{org}/integrations/{type_key}/credentials/test")
def test_credentials_page(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    organisation, row = load(org, type_key, signed_in.actor)
    result = run_connection_test(row, signed_in.actor)
    context = credentials_context(
        organisation, row, signed_in.actor, test=connection_result(result, row), just_tested=True
    )
    return render(request, "credentials.html", context)
