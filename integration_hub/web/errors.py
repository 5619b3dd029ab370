"""Service errors as HTTP answers: JSON for the API, a page for people."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

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
from integration_hub.web.security import SignInRequired


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
        """Unknown addresses and wrong methods: JSON for the API, the error page for people."""
        language = language_of(request)
        message = i18n.translate(
            "there is no such page" if exc.status_code == 404 else str(exc.detail), language
        )
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"error": message}, status_code=exc.status_code, headers=exc.headers
            )
        return render(
            request, "error.html", {"status": exc.status_code, "error": message}, exc.status_code
        )

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
