"""Service errors as HTTP answers: JSON for the API, a page for people."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from integration_hub.services.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceError,
    TooManyAttempts,
    Unauthorized,
    WarningsNotAcknowledged,
)
from integration_hub.web import i18n
from integration_hub.web.rendering import language_of, render
from integration_hub.web.security import SignInRequired, apply_security_headers


def status_of(exc: ServiceError) -> int:
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, TooManyAttempts):
        return 429
    return 409  # the request is fine, the state refuses it (a running export, warnings, ...)


def error_body(exc: ServiceError, language: str) -> dict[str, object]:
    body: dict[str, object] = {"error": i18n.translate(str(exc), language)}
    if isinstance(exc, InvalidInput):
        body["problems"] = [i18n.translate(p, language) for p in exc.problems]
    if isinstance(exc, WarningsNotAcknowledged):
        body["warnings"] = [i18n.translate(w, language) for w in exc.warnings]
    return body


SERVER_ERROR = "something went wrong in the hub; try again, and tell the operator if it persists"


def error_response(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """A refusal with one message, in the request's language: JSON for the API, the error page
    for people."""
    text = i18n.translate(message, language_of(request))
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": text}, status_code=status, headers=headers)
    response = render(request, "error.html", {"status": status, "error": text}, status)
    response.headers.update(headers or {})
    return response


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if isinstance(exc, TooManyAttempts):
            headers["Retry-After"] = str(exc.retry_after_s)
        language = language_of(request)
        if request.url.path.startswith("/api/"):
            return JSONResponse(error_body(exc, language), status_code=status, headers=headers)
        return render(
            request, "error.html", {"status": status, **error_body(exc, language)}, status
        )

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        from urllib.parse import quote

        return RedirectResponse(f"/sign-in?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown addresses, wrong methods, bodies too large: JSON for the API, the error page
        for people."""
        message = "there is no such page" if exc.status_code == 404 else str(exc.detail)
        return error_response(request, exc.status_code, message, exc.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        """A bug: a fixed sentence, never the exception's text (it may hold a target's words).

        Starlette answers this from its outermost middleware, outside ``SecurityHeaders``, so
        the headers are set here. The exception is raised on afterwards, so the server logs its
        traceback; the person sees none.
        """
        try:
            response = error_response(request, 500, SERVER_ERROR)
        except Exception:  # the database or a template failing again: a page needing neither
            response = PlainTextResponse(SERVER_ERROR, status_code=500)
        apply_security_headers(response.headers, request.url.path)
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in exc.errors()
        ]
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"error": "the request is not valid", "problems": problems}, status_code=422
            )
        language = language_of(request)
        return render(
            request,
            "error.html",
            {
                "status": 422,
                "error": i18n.translate("the request is not valid", language),
                "problems": problems,
            },
            422,
        )
