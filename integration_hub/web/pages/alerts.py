"""The alert channel page: where an organisation is told that an export failed (a webhook for
Slack, Microsoft Teams or the hub's own JSON, or e-mail through SMTP), a test alert, and the last
alerts. An operator sees it read-only.

The routes only translate HTTP into calls of :mod:`integration_hub.services.alerts`; the webhook
URL and the SMTP password are write-only fields that show the vault's mask.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from integration_hub.services import alerts
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import Forbidden, InvalidInput
from integration_hub.tasks.notify import ChannelKind, ChannelSettings
from integration_hub.web.pages.credentials import SECRET_SET_HINT, SECRET_UNSET_HINT
from integration_hub.web.rendering import render, translator
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

PAGE = "/orgs/{org}/alerts"

FIELDS = (
    "kind",
    "webhook_url",
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "smtp_username",
    "smtp_password",
    "sender",
    "recipients",
)

KIND_HINTS: dict[str, str] = {
    ChannelKind.WEBHOOK: "The hub's own JSON (counts, status, links), for a service of your own.",
    ChannelKind.SLACK: "A Slack incoming webhook: in Slack, add Incoming Webhooks to the channel "
    "and paste its URL below.",
    ChannelKind.TEAMS: "A Teams Workflows webhook: in the Teams channel, add the workflow that "
    "posts to a channel when a webhook request is received, and paste its URL below.",
    ChannelKind.EMAIL: "E-mail through your organisation's SMTP server, to the addresses below.",
}

EVENT_TEXT: dict[str, str] = {
    "export.failures": "Records failed",
    "export.failed": "A run failed",
    "backfill.failures": "A backfill ended with failures",
    "connection_test.failed": "A connection test failed",
    "test": "Test alert",
}


def result_text(result: str | None, tr: Any) -> str:
    """What became of an alert, in the page's language: never an error class name."""
    text = result or ""
    if text == "delivered":
        return tr("Delivered")
    if text == "no webhook":
        return tr("No alert channel is set up.")
    if text.startswith("failed: ") and " " not in text.removeprefix("failed: "):
        return tr("Not delivered: the channel could not be reached")
    return tr(text)


def _may_change(actor: Actor, organisation_id: int) -> bool:
    try:
        actor.check_change(organisation_id)
    except Forbidden:
        return False
    return True


def _values(view: dict[str, Any], submitted: FormData | None = None) -> dict[str, str]:
    """The form's values: as stored (secrets as masks), or as just typed (secrets as masks)."""
    settings: ChannelSettings = view["settings"]
    values = {
        "kind": view["kind"] or ChannelKind.WEBHOOK.value,
        "webhook_url": view["webhook"] or "",
        "smtp_host": settings.smtp_host,
        "smtp_port": str(settings.smtp_port),
        "smtp_security": settings.smtp_security.value,
        "smtp_username": settings.smtp_username,
        "smtp_password": view["smtp_password"] or "",
        "sender": settings.sender,
        "recipients": ", ".join(settings.recipients),
    }
    if submitted is not None:
        for name in FIELDS:
            value = submitted.get(name)
            if isinstance(value, str) and name not in ("webhook_url", "smtp_password"):
                values[name] = value
    return values


def _context(
    request: Request,
    org: str,
    actor: Actor,
    *,
    submitted: FormData | None = None,
    problems: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    tr = translator(request)
    view = alerts.channel_view(org, actor)
    summary: list[dict[str, str]] = []
    errors: dict[str, str] = {}
    for problem in problems or []:
        name, sep, message = problem.partition(": ")
        if sep and name in FIELDS:
            errors.setdefault(name, tr(message))
            summary.append({"field": name, "message": tr(message)})
        else:
            summary.append({"field": "", "message": tr(problem)})
    organisation_id = _organisation_id(org, actor)
    return {
        "organisation": view["organisation"],
        "organisation_name": view["organisation_name"],
        "view": view,
        "values": _values(view, submitted),
        "problems": summary,
        "errors": errors,
        "may_change": _may_change(actor, organisation_id),
        "kinds": [
            {"value": kind, "label": alerts.KIND_NAMES[kind], "hint": KIND_HINTS[kind]}
            for kind in ChannelKind
        ],
        "kind_label": alerts.KIND_NAMES.get(view["kind"] or "", ""),
        "securities": alerts.SECURITY_NAMES,
        "secret_set_hint": SECRET_SET_HINT,
        "secret_unset_hint": SECRET_UNSET_HINT,
        "recent": [
            {
                "at": entry["at"],
                "event": tr(EVENT_TEXT.get(entry["event"] or "", entry["event"] or "")),
                "run_id": entry["run_id"],
                "result": result_text(entry["result"], tr),
                "delivered": entry["result"] == "delivered",
            }
            for entry in view["recent"]
        ],
        **extra,
    }


def _organisation_id(org: str, actor: Actor) -> int:
    from integration_hub.services import configuration as config

    return config.organisation(org, actor).id or 0


@router.get(PAGE)
def alerts_page(request: Request, org: str, signed_in: PageSession, saved: int = 0) -> Response:
    context = _context(request, org, signed_in.actor)
    if saved:
        context["flash"] = translator(request)("The alert channel is saved.")
    return render(request, "alerts.html", context)


@router.post(PAGE)
async def save_alerts_page(request: Request, org: str, signed_in: PageSession) -> Response:
    form = await request.form()
    values = {name: form.get(name) for name in FIELDS if isinstance(form.get(name), str)}
    try:
        alerts.configure_channel(org, values, signed_in.actor)
    except InvalidInput as exc:
        context = _context(
            request, org, signed_in.actor, submitted=form, problems=exc.problems or [str(exc)]
        )
        return render(request, "alerts.html", context, 422)
    return RedirectResponse(f"/orgs/{org}/alerts?saved=1", 303)


@router.post(PAGE + "/test")
def test_alerts_page(request: Request, org: str, signed_in: PageSession) -> Response:
    actor = signed_in.actor
    actor.check_change(_organisation_id(org, actor))  # a read-only view has no test button
    result = alerts.send_test(org, actor)
    tr = translator(request)
    context = _context(
        request,
        org,
        actor,
        test_result={"ok": result == "delivered", "text": result_text(result, tr)},
    )
    return render(request, "alerts.html", context)


@router.post(PAGE + "/remove")
def remove_alerts_page(request: Request, org: str, signed_in: PageSession) -> Response:
    alerts.remove_channel(org, signed_in.actor)
    return RedirectResponse(f"/orgs/{org}/alerts", 303)
