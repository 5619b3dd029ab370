"""Server-rendered pages: one Jinja2 environment, the language, and how times and money read.

Money goes through :mod:`integration_hub.money` (the one place that formats it); times are shown
in Europe/Oslo unless a schedule names its own zone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from integration_hub.money import format_nok
from integration_hub.web import i18n
from integration_hub.web.security import LANGUAGE_COOKIE, current_session

TEMPLATE_DIR = Path(__file__).parent / "templates"
OSLO = ZoneInfo("Europe/Oslo")
templates = Jinja2Templates(directory=str(TEMPLATE_DIR))  # autoescapes .html

STATUS_LABELS = {
    "not_set_up": "Not set up",
    "setting_up": "Setup started",
    "draft": "Draft",
    "active": "Active",
    "paused": "Paused",
    "failing": "Failing",
    "running": "Running",
    "succeeded": "Succeeded",
    "partial": "Partly done",
    "failed": "Failed",
    "interrupted": "Interrupted",
    "exported": "Exported",
    "skipped": "Skipped",
    "waiting": "Waiting to be confirmed",
    "ok": "OK",
}
"""Status codes as people read them (English source text; the catalogue has bokmål)."""


def status_label(code: str | None) -> str:
    return STATUS_LABELS.get(code or "", code or "")


def language_of(request: Request) -> str:
    signed_in = current_session(request)
    if signed_in is not None:
        return signed_in.language
    return i18n.pick_language(
        request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language")
    )


def format_time(value: datetime | str | None, zone: str | None = None) -> str:
    """``2026-11-24 02:00`` in Oslo (or ``zone``); empty for None."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(ZoneInfo(zone) if zone else OSLO).strftime("%Y-%m-%d %H:%M")


def format_number(value: int | float | None, language: str = "nb", decimals: int = 0) -> str:
    """A count or measure as the page's language writes it: ``12 345,6`` in bokmål (a
    non-breaking space between thousands, a decimal comma, as money.format_nok), ``12,345.6``
    in English; empty for None."""
    if value is None:
        return ""
    text = f"{value:,.{decimals}f}"
    if language != "nb":
        return text
    return text.replace(",", "\u00a0").replace(".", ",")


def translator(request: Request) -> Callable[..., str]:
    """``_(text, **params)`` in the request's language, for pages that build messages."""
    language = language_of(request)

    def _(text: str, **params: object) -> str:
        return i18n.translate(text, language, **params)

    return _


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """Render ``template`` with the language, the signed-in person and the helpers pages use."""
    full = {
        "_": translator(request),
        "lang": language_of(request),
        "languages": i18n.LANGUAGES,
        "signed_in": current_session(request),
        "format_nok": format_nok,
        "format_number": lambda value, decimals=0: format_number(
            value, language_of(request), decimals
        ),
        "format_time": format_time,
        "status_label": status_label,
        **(context or {}),
    }
    return templates.TemplateResponse(request, template, full, status_code=status)
