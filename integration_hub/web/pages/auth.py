"""Sign-in, sign-out, changing one's own password and the language choice."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from integration_hub.services import accounts, passwords
from integration_hub.services.errors import InvalidInput, TooManyAttempts, Unauthorized
from integration_hub.settings import get_settings
from integration_hub.web import i18n
from integration_hub.web.rendering import language_of, render, translator
from integration_hub.web.security import (
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    PageSession,
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


def throttle_explained() -> dict[str, int]:
    """The throttle's numbers for the sign-in page, which tells people the rules up front."""

    def minutes(rule: accounts.ThrottleRule) -> int:
        return int(rule.lock.total_seconds() // 60)

    pair, account, client = (
        accounts.PER_ACCOUNT_AND_CLIENT,
        accounts.PER_ACCOUNT,
        accounts.PER_CLIENT,
    )
    return {
        "pair_limit": pair.limit,
        "pair_minutes": minutes(pair),
        "account_limit": account.limit,
        "account_minutes": minutes(account),
        "client_limit": client.limit,
        "client_minutes": minutes(client),
    }


def _sign_in_form(
    request: Request, next: str, email: str = "", error: str = "", status: int = 200
) -> Response:
    context = {"next": safe_next(next), "email": email, "error": error}
    return render(request, "sign_in.html", {**context, "throttle": throttle_explained()}, status)


@router.get("/sign-in")
def sign_in_page(request: Request, next: str = "/") -> Response:
    return _sign_in_form(request, next)


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
    except Unauthorized as exc:
        return _sign_in_form(request, next, email, str(exc), 401)
    except TooManyAttempts as exc:
        response = _sign_in_form(request, next, email, str(exc), 429)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    target = safe_next(next)
    response = RedirectResponse(target if target != "/" else home_of(signed_in), status_code=303)
    set_session_cookie(response, signed_in.token)
    return response


_PASSWORD_PROBLEM_FIELDS = {
    "the current password is wrong": "current_password",
    "the two new passwords are not the same": "new_password_again",
}
"""Which field a problem from :func:`accounts.change_password` is about (else the new one)."""


def _password_form(
    request: Request,
    problems: list[str] | None = None,
    status: int = 200,
    *,
    refusal: str = "",
    flash: str = "",
) -> Response:
    """The form, with each problem beside its field and in the summary (``refusal``: one that
    belongs to no field, such as a paused sign-in)."""
    tr = translator(request)
    shown = [{"field": "", "message": tr(refusal)}] if refusal else []
    errors: dict[str, str] = {}
    for problem in problems or []:
        field = _PASSWORD_PROBLEM_FIELDS.get(problem, "new_password")
        errors[field] = f"{errors[field]} {tr(problem)}" if field in errors else tr(problem)
        shown.append({"field": field, "message": tr(problem)})
    context: dict[str, Any] = {
        "problems": shown,
        "errors": errors,
        "min_length": passwords.MIN_LENGTH,
        "flash": tr(flash) if flash else "",
    }
    return render(request, "account_password.html", context, status)


@router.get("/account/password")
def password_page(request: Request, signed_in: PageSession, changed: int = 0) -> Response:
    """Any signed-in person may change their own password here."""
    flash = "Your password is changed; other browsers were signed out." if changed else ""
    return _password_form(request, flash=flash)


@router.post("/account/password")
def change_password(
    request: Request,
    signed_in: PageSession,
    current_password: Annotated[str, Form(max_length=1024)] = "",
    new_password: Annotated[str, Form(max_length=1024)] = "",
    new_password_again: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """The current password is required (and throttled like a sign-in); every other session of
    the account ends, this one stays."""
    try:
        accounts.change_password(
            request.cookies.get(SESSION_COOKIE) or "",
            current_password,
            new_password,
            new_password_again,
            client=client_address(request),
        )
    except InvalidInput as exc:
        return _password_form(request, exc.problems, 422)
    except TooManyAttempts as exc:
        response = _password_form(request, status=429, refusal=str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    return RedirectResponse("/account/password?changed=1", status_code=303)


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
