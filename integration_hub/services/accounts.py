"""People who sign in: admin accounts, browser sessions, sign-in throttling and bearer tokens.

Passwords are hashed with Argon2id (memory-hard). A browser session is a random token in a
cookie; the hub stores only its SHA-256, so a copy of the database signs nobody in. The volunteer
app's own users reach the API with a JWT from its identity provider, verified with the provider's
public key; the token names the organisation (``org``, a slug) and the role.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, delete, select

from integration_hub.db import hub_session
from integration_hub.models import SignInThrottle, User, UserRole, WebSession, utcnow
from integration_hub.services.configuration import Actor, audit, organisation
from integration_hub.services.errors import InvalidInput, TooManyAttempts, Unauthorized
from integration_hub.settings import get_settings

_hasher = PasswordHasher()  # Argon2id, 64 MiB, 3 passes: argon2-cffi's RFC 9106 profile
_DUMMY_HASH = _hasher.hash("not a password anyone has")

MIN_PASSWORD_LENGTH = 12
MAX_FAILURES_PER_ADDRESS = 5  # per e-mail address within the window, then locked
MAX_FAILURES_PER_CLIENT = 20  # per client address within the window, then locked
FAILURE_WINDOW = timedelta(minutes=15)
LOCK_TIME = timedelta(minutes=15)
LANGUAGES = ("nb", "en")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def actor_for(user: User) -> Actor:
    return Actor(user.email, user.organisation_id, user.role)


# -- accounts ----------------------------------------------------------------------------------
def add_user(
    email: str,
    password: str,
    *,
    role: str = UserRole.ADMIN,
    organisation_slug: str | None = None,
    display_name: str = "",
    actor: Actor,
) -> User:
    """Create a sign-in. Every problem is reported at once; nothing is stored when one is found."""
    if not actor.is_local:
        raise InvalidInput("accounts are created at the hub's command line")
    email = email.strip().lower()
    problems = []
    if not _EMAIL.match(email):
        problems.append(f"{email!r} is not an e-mail address")
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if role not in {r.value for r in UserRole}:
        problems.append(f"unknown role {role!r} (admin or operator)")
    if role == UserRole.ADMIN and not organisation_slug:
        problems.append("an admin belongs to an organisation: give --org")
    if role == UserRole.OPERATOR and organisation_slug:
        problems.append("an operator reads every organisation: leave out --org")
    organisation_id = organisation(organisation_slug).id if organisation_slug else None
    with hub_session() as session:
        if session.exec(select(User).where(User.email == email)).first():
            problems.append(f"there is already an account for {email}")
        if problems:
            raise InvalidInput("; ".join(problems), problems)
        user = User(
            email=email,
            display_name=display_name or email,
            password_hash=_hasher.hash(password),
            role=role,
            organisation_id=organisation_id,
        )
        session.add(user)
        audit(
            session, actor, "user.created", organisation_id=organisation_id, email=email, role=role
        )
        session.flush()
        session.refresh(user)
        session.expunge(user)
    return user


def list_users() -> list[User]:
    with hub_session() as session:
        return list(session.exec(select(User).order_by(User.email)).all())


# -- sign-in -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignedIn:
    """A browser session as pages see it (``token`` only right after sign-in)."""

    actor: Actor
    user_id: int
    display_name: str
    csrf_token: str
    language: str
    token: str = ""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _throttle_keys(email: str, client: str) -> list[tuple[str, int]]:
    return [
        (f"email:{email}", MAX_FAILURES_PER_ADDRESS),
        (f"client:{client}", MAX_FAILURES_PER_CLIENT),
    ]


def _check_not_locked(session: Session, keys: list[tuple[str, int]]) -> None:
    now = utcnow()
    for key, _limit in keys:
        row = session.exec(select(SignInThrottle).where(SignInThrottle.key == key)).first()
        if row and row.locked_until and row.locked_until > now:
            wait = int((row.locked_until - now).total_seconds()) + 1
            raise TooManyAttempts(
                f"too many failed sign-ins; try again in {max(1, (wait + 59) // 60)} minute(s)",
                wait,
            )


def _record_failure(keys: list[tuple[str, int]]) -> None:
    now = utcnow()
    with hub_session() as session:
        for key, limit in keys:
            row = session.exec(select(SignInThrottle).where(SignInThrottle.key == key)).first()
            if row is None:
                row = SignInThrottle(key=key, failures=0, window_started_at=now)
            if row.window_started_at + FAILURE_WINDOW < now:
                row.failures, row.window_started_at = 0, now
            row.failures += 1
            if row.failures >= limit:
                row.locked_until = now + LOCK_TIME
                row.failures, row.window_started_at = 0, now
            session.add(row)


def sign_in(email: str, password: str, *, client: str, language: str = "nb") -> SignedIn:
    """Check the password and open a session; repeated failures lock the address a while."""
    email = email.strip().lower()
    keys = _throttle_keys(email, client)
    with hub_session() as session:
        _check_not_locked(session, keys)
        user = session.exec(select(User).where(User.email == email)).first()
    try:
        # An unknown address costs the same hash as a known one, so timing tells nothing.
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
        ok = user is not None and not user.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None:
        _record_failure(keys)
        raise Unauthorized("the e-mail address or the password is wrong")
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    hours = get_settings().web_session_hours
    with hub_session() as session:
        session.exec(delete(SignInThrottle).where(col(SignInThrottle.key) == keys[0][0]))
        session.exec(delete(WebSession).where(col(WebSession.expires_at) < utcnow()))
        if _hasher.check_needs_rehash(user.password_hash):
            stored = session.get(User, user.id)
            if stored is not None:
                stored.password_hash = _hasher.hash(password)
        session.add(
            WebSession(
                token_hash=_token_hash(token),
                user_id=user.id or 0,
                csrf_token=csrf,
                language=language if language in LANGUAGES else "nb",
                expires_at=utcnow() + timedelta(hours=hours),
            )
        )
        audit(session, actor_for(user), "user.signed_in", organisation_id=user.organisation_id)
    return SignedIn(actor_for(user), user.id or 0, user.display_name, csrf, language, token)


def session_for(token: str | None) -> SignedIn | None:
    """The live session behind a cookie, or None (unknown, expired or a disabled account)."""
    if not token:
        return None
    with hub_session() as session:
        row = session.exec(
            select(WebSession).where(WebSession.token_hash == _token_hash(token))
        ).first()
        if row is None or row.expires_at <= utcnow():
            return None
        user = session.get(User, row.user_id)
        if user is None or user.disabled:
            return None
        return SignedIn(
            actor_for(user), user.id or 0, user.display_name, row.csrf_token, row.language
        )


def set_language(token: str, language: str) -> None:
    if language not in LANGUAGES:
        raise InvalidInput(f"unknown language {language!r} (nb or en)")
    with hub_session() as session:
        row = session.exec(
            select(WebSession).where(WebSession.token_hash == _token_hash(token))
        ).first()
        if row is not None:
            row.language = language
            session.add(row)


def sign_out(token: str | None) -> None:
    if token:
        with hub_session() as session:
            session.exec(delete(WebSession).where(col(WebSession.token_hash) == _token_hash(token)))


# -- bearer tokens from the volunteer app's identity provider ----------------------------------
def _idp_key() -> str | None:
    settings = get_settings()
    if settings.idp_public_key:
        return settings.idp_public_key
    if settings.idp_public_key_file and settings.idp_public_key_file.exists():
        return settings.idp_public_key_file.read_text()
    return None


def actor_from_bearer(token: str) -> Actor:
    """Verify a JWT from the volunteer app's identity provider and say who it speaks for.

    Asymmetric signatures only (the hub holds a public key, never a secret that could mint
    tokens); ``exp``, ``sub``, ``org`` or ``role`` missing or wrong refuses the token.
    """
    import jwt

    key = _idp_key()
    if key is None:
        raise Unauthorized("bearer tokens are not accepted: no identity provider key is configured")
    settings = get_settings()
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256", "ES256", "EdDSA"],
            audience=settings.idp_audience,
            issuer=settings.idp_issuer,
            options={"require": ["exp", "sub", "role"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"the bearer token was refused: {exc}") from None
    role = claims.get("role")
    if role == UserRole.OPERATOR:
        return Actor(f"idp:{claims['sub']}", None, UserRole.OPERATOR)
    if role != UserRole.ADMIN or not isinstance(claims.get("org"), str):
        raise Unauthorized("the bearer token must carry role admin with org, or role operator")
    try:
        org = organisation(claims["org"])
    except Exception:
        raise Unauthorized("the bearer token names an unknown organisation") from None
    return Actor(f"idp:{claims['sub']}", org.id, UserRole.ADMIN)
