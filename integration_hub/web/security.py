"""Who is asking: a browser session cookie (pages, and the API with a CSRF header) or a bearer
token from the volunteer app's identity provider (the API). Also the headers every answer gets.

Routes only find out who is asking; what that person may do is decided in the services.
"""

from __future__ import annotations

import hmac
import ipaddress
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import MutableHeaders
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from integration_hub.services import accounts
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import Forbidden, Unauthorized
from integration_hub.settings import get_settings

SESSION_COOKIE = "ih_session"
LANGUAGE_COOKIE = "ih_lang"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


class SignInRequired(Exception):
    """A page was asked for without a session: pages redirect to the sign-in page."""


def client_address(request: Request) -> str:
    """The client address sign-in throttling counts against.

    The socket's peer, unless that peer is a proxy named in INTEGRATIONS_WEB_TRUSTED_PROXIES:
    then the nearest address in ``X-Forwarded-For`` that is not such a proxy (read from the
    right, as each proxy appends the address it saw). Anyone can write the header, so it is
    believed only from a named proxy; uvicorn's own proxy-header handling is switched off where
    the app is served, so it cannot rewrite the peer first.
    """
    peer = request.client.host if request.client else "unknown"
    trusted = get_settings().web_trusted_proxies
    if not _is_one_of(peer, trusted):
        return peer
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return client  # not written by a proxy of ours: nothing further left is believed
        client = str(address)
        if not _is_one_of(client, trusted):
            break
    return client


def _is_one_of(address: str, networks: list[IPv4Network | IPv6Network]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)


def current_session(request: Request) -> accounts.SignedIn | None:
    cached = getattr(request.state, "signed_in", False)
    if cached is not False:
        return cached
    signed_in = accounts.session_for(request.cookies.get(SESSION_COOKIE))
    request.state.signed_in = signed_in
    return signed_in


def set_session_cookie(response: Response, token: str) -> None:
    settings = get_settings()
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.web_session_hours * 3600,
        httponly=True,
        secure=settings.web_secure_cookies,
        samesite="strict",
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def csrf_ok(signed_in: accounts.SignedIn, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(signed_in.csrf_token, submitted or "")


# -- pages -------------------------------------------------------------------------------------
async def page_session(request: Request) -> accounts.SignedIn:
    """The signed-in person for a page; a form post must carry the session's CSRF token."""
    signed_in = current_session(request)
    if signed_in is None:
        raise SignInRequired()
    if request.method in UNSAFE_METHODS:
        form = await request.form()
        submitted = form.get(CSRF_FIELD)
        if not csrf_ok(signed_in, submitted if isinstance(submitted, str) else None):
            raise Forbidden("the form was out of date or not sent by this site; reload and retry")
    return signed_in


PageSession = Annotated[accounts.SignedIn, Depends(page_session)]


# -- API ---------------------------------------------------------------------------------------
def api_actor(request: Request) -> Actor:
    """A bearer token, or a browser session whose unsafe requests carry the CSRF header."""
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        return accounts.actor_from_bearer(token.strip())
    signed_in = current_session(request)
    if signed_in is None:
        raise Unauthorized("sign in, or send a bearer token from the volunteer app")
    if request.method in UNSAFE_METHODS and not csrf_ok(
        signed_in, request.headers.get(CSRF_HEADER)
    ):
        raise Forbidden(f"a request with a session cookie needs the {CSRF_HEADER} header")
    return signed_in.actor


ApiActor = Annotated[Actor, Depends(api_actor)]


def apply_security_headers(headers: MutableHeaders, path: str) -> None:
    """The headers every answer carries, error pages included (a route may set its own CSP)."""
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["X-Frame-Options"] = "DENY"
    if not path.startswith("/static/"):
        headers["Cache-Control"] = "no-store"


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        apply_security_headers(response.headers, request.url.path)
        return response
