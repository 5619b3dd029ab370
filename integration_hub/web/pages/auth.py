"""Sign-in, sign-out and the language choice."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from integration_hub.services import accounts
from integration_hub.services.errors import TooManyAttempts, Unauthorized
from integration_hub.settings import get_settings
from integration_hub.web import i18n
from integration_hub.web.rendering import language_of, render
from integration_hub.web.security import (
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    SignInRequired,
    clear_session_cookie,
    client_address,
    csrf_ok,
    current_session,
    set_session_cookie,
)

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path on this site (no ``//host`` or ``https://``), so sign-in cannot redirect away."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def home_of(signed_in: accounts.SignedIn) -> str:
    from integration_hub.services.configuration import list_organisations

    organisations = list_organisations(signed_in.actor)
    if signed_in.actor.organisation_id is not None and organisations:
        return f"/orgs/{organisations[0].slug}"
    return "/orgs"


@router.get("/")
def home(request: Request) -> Response:
    signed_in = current_session(request)
    if signed_in is None:
        raise SignInRequired()
    return RedirectResponse(home_of(signed_in), status_code=303)


@router.get("/sign-in")
def sign_in_page(request: Request, next: str = "/") -> Response:
    return render(request, "sign_in.html", {"next": safe_next(next), "email": ""})


@router.post("/sign-in")
def sign_in(
    request: Request,
    email: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    try:
        signed_in = accounts.sign_in(
            email, password, client=client_address(request), language=language_of(request)
        )
    except (Unauthorized, TooManyAttempts) as exc:
        status = 429 if isinstance(exc, TooManyAttempts) else 401
        return render(
            request,
            "sign_in.html",
            {"next": safe_next(next), "email": email, "error": str(exc)},
            status,
        )
    target = safe_next(next)
    response = RedirectResponse(target if target != "/" else home_of(signed_in), status_code=303)
    set_session_cookie(response, signed_in.token)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    signed_in = current_session(request)
    form = await request.form()
    token = form.get("csrf_token")
    if signed_in is not None and csrf_ok(signed_in, token if isinstance(token, str) else None):
        accounts.sign_out(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/sign-in", status_code=303)
    clear_session_cookie(response)
    return response


@router.post("/language")
async def choose_language(request: Request) -> Response:
    """Switch language; for a signed-in person it sticks to the session (CSRF-checked)."""
    form = await request.form()
    language = str(form.get("language", ""))
    back = safe_next(str(form.get("next", "/")))
    if language not in i18n.LANGUAGES:
        language = i18n.DEFAULT_LANGUAGE
    signed_in = current_session(request)
    token = form.get("csrf_token")
    if signed_in is not None and csrf_ok(signed_in, token if isinstance(token, str) else None):
        accounts.set_language(request.cookies.get(SESSION_COOKIE) or "", language)
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(
        LANGUAGE_COOKIE,
        language,
        max_age=365 * 24 * 3600,
        samesite="lax",
        secure=get_settings().web_secure_cookies,
    )
    return response
