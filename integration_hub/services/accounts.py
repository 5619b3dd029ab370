"""People who sign in: admin accounts, browser sessions, sign-in throttling and bearer tokens.

Passwords are hashed with Argon2id (memory-hard) and must pass :mod:`.passwords` (NIST
800-63B: length, not a common password, not the person's own e-mail). A browser session is a
random token in a cookie; the hub stores only its SHA-256, so a copy of the database signs nobody
in. The volunteer app's own users reach the API with a JWT from its identity provider, verified
with the provider's public key; the token names the organisation (``org``, a slug) and the role.

Sign-in throttling counts attempts in three counters (see :data:`THROTTLE_RULES`): per account
and client address, per account from anywhere, and per client address for any account. Each
attempt is counted *before* the password is checked, in one atomic statement per counter, so
concurrent guesses cannot slip past the limit and a counter never loses an increment.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Table, and_, case, literal, null, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, delete, select

from integration_hub.db import hub_engine, hub_session
from integration_hub.models import SignInThrottle, User, UserRole, WebSession, utcnow
from integration_hub.models.types import UTCDateTime
from integration_hub.services.configuration import Actor, audit, organisation
from integration_hub.services.errors import InvalidInput, NotFound, TooManyAttempts, Unauthorized
from integration_hub.services.passwords import password_problems
from integration_hub.settings import get_settings

_hasher = PasswordHasher()  # Argon2id, 64 MiB, 3 passes: argon2-cffi's RFC 9106 profile
_DUMMY_HASH = _hasher.hash("not a password anyone has")

LANGUAGES = ("nb", "en")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def actor_for(user: User) -> Actor:
    return Actor(user.email, user.organisation_id, user.role)


def _normal_email(email: str) -> str:
    return email.strip().lower()


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
    email = _normal_email(email)
    problems = []
    if not _EMAIL.match(email):
        problems.append(f"{email!r} is not an e-mail address")
    problems.extend(password_problems(password, email))
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


def _managed_user(session: Session, email: str, actor: Actor) -> User:
    """The account behind ``email`` for a change only the hub's own operators may make."""
    if not actor.is_local:
        raise InvalidInput("accounts are managed at the hub's command line")
    user = session.exec(select(User).where(User.email == _normal_email(email))).first()
    if user is None:
        raise NotFound(f"there is no account for {_normal_email(email)}")
    return user


def _end_sessions(session: Session, user_id: int | None, *, keep_token: str = "") -> int:
    """Delete the account's sessions (all but ``keep_token``'s); returns how many ended."""
    statement = delete(WebSession).where(col(WebSession.user_id) == user_id)
    if keep_token:
        statement = statement.where(col(WebSession.token_hash) != _token_hash(keep_token))
    return session.exec(statement).rowcount or 0


def set_disabled(email: str, disabled: bool, *, actor: Actor) -> int:
    """Disable a sign-in (or enable it again); returns how many sessions disabling ended.

    A disabled account's sessions are deleted at once rather than merely refused, so enabling
    the account later does not bring back a browser that was signed in before.
    """
    with hub_session() as session:
        user = _managed_user(session, email, actor)
        user.disabled = disabled
        session.add(user)
        ended = _end_sessions(session, user.id) if disabled else 0
        action = "user.disabled" if disabled else "user.enabled"
        audit(session, actor, action, organisation_id=user.organisation_id, email=user.email)
    return ended


def reset_password(email: str, password: str, *, actor: Actor) -> int:
    """Give an account a new password at the command line; returns how many sessions ended.

    Used when a password is forgotten or may have leaked, so every session ends with it:
    whoever knew the old password must not stay signed in.
    """
    with hub_session() as session:
        user = _managed_user(session, email, actor)
        problems = password_problems(password, user.email)
        if problems:
            raise InvalidInput("; ".join(problems), problems)
        user.password_hash = _hasher.hash(password)
        session.add(user)
        ended = _end_sessions(session, user.id)
        audit(
            session,
            actor,
            "user.password_reset",
            organisation_id=user.organisation_id,
            email=user.email,
            sessions_ended=ended,
        )
    return ended


def revoke_sessions(email: str, *, actor: Actor) -> int:
    """Sign an account out everywhere (a lost laptop, a shared computer); returns how many."""
    with hub_session() as session:
        user = _managed_user(session, email, actor)
        ended = _end_sessions(session, user.id)
        audit(
            session,
            actor,
            "user.sessions_revoked",
            organisation_id=user.organisation_id,
            email=user.email,
            sessions_ended=ended,
        )
    return ended


def change_password(token: str, current: str, new: str, repeated: str, *, client: str) -> int:
    """The signed-in person behind ``token`` sets a new password; returns how many of their
    other sessions ended.

    The current password is required, and checked and throttled exactly like a sign-in, so a
    browser left signed in cannot be used to take the account over or to guess the password.
    Every other session ends (whoever may know the old password is signed out); this one stays.
    All problems are reported at once; nothing changes when there is one.
    """
    signed_in = session_for(token)
    if signed_in is None:
        raise Unauthorized("sign in again to change your password")
    email = signed_in.actor.name
    problems = password_problems(new, email)
    if new != repeated:
        problems.append("the two new passwords are not the same")
    user = _checked_user(email, current, client)
    if user is None:
        problems.insert(0, "the current password is wrong")
    elif new == current:
        problems.append("the new password must differ from the current one")
    if problems or user is None:
        raise InvalidInput("; ".join(problems), problems)
    with hub_session() as session:
        stored = session.get(User, user.id)
        if stored is None:
            raise Unauthorized("sign in again to change your password")
        stored.password_hash = _hasher.hash(new)
        session.add(stored)
        ended = _end_sessions(session, stored.id, keep_token=token)
        audit(
            session,
            actor_for(stored),
            "user.password_changed",
            organisation_id=stored.organisation_id,
            sessions_ended=ended,
        )
    return ended


# -- sign-in throttling ------------------------------------------------------------------------
@dataclass(frozen=True)
class ThrottleRule:
    """One counter of sign-in attempts: the ``limit``-th attempt within :data:`FAILURE_WINDOW`
    locks the counter's key for ``lock``; ``message`` tells the person (``{minutes}``)."""

    scope: str
    limit: int  # at least 2: the first attempt of a window never locks
    lock: timedelta
    message: str
    reset_on_success: bool = False


FAILURE_WINDOW = timedelta(minutes=15)
PER_ACCOUNT_AND_CLIENT = ThrottleRule(
    "pair",
    5,
    timedelta(minutes=15),
    "too many wrong passwords for this account from your address; try again in {minutes} minute(s)",
    reset_on_success=True,
)
PER_ACCOUNT = ThrottleRule(
    "account",
    20,
    timedelta(minutes=5),
    "this account had too many wrong passwords from several addresses, so it is paused for "
    "everyone for a few minutes; try again in {minutes} minute(s)",
)
PER_CLIENT = ThrottleRule(
    "client",
    20,
    timedelta(minutes=15),
    "too many wrong passwords from your address; try again in {minutes} minute(s)",
)
THROTTLE_RULES = (PER_ACCOUNT_AND_CLIENT, PER_ACCOUNT, PER_CLIENT)
"""In the order an attempt is counted. The pair (account + client address) comes first, so the
attempts it refuses never reach the account's counter: one address cannot lock anyone else out,
it takes at least four to pause an account, and that account-wide pause is the short one
because it shuts out the owner too. The per-client counter stops one address trying a few
passwords on many accounts."""

_THROTTLE: Table = SignInThrottle.__table__  # type: ignore[assignment]
_KEY_LENGTH: int = _THROTTLE.c.key.type.length  # type: ignore[attr-defined]


def _throttle_key(scope: str, *parts: str) -> str:
    """``pair:127.0.0.1 kari@hlf.no``; a key too long for its column becomes a digest of itself."""
    key = f"{scope}:{' '.join(parts)}"
    if len(key) > _KEY_LENGTH:
        key = f"{scope}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def _counters(email: str, client: str) -> list[tuple[ThrottleRule, str]]:
    parts = {"pair": (client, email), "account": (email,), "client": (client,)}
    return [(rule, _throttle_key(rule.scope, *parts[rule.scope])) for rule in THROTTLE_RULES]


def _upsert(connection: Connection) -> Any:
    """The dialect's INSERT, which has ON CONFLICT DO UPDATE (SQLite >= 3.35, PostgreSQL)."""
    dialects = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
    name = connection.dialect.name
    if name not in dialects:
        raise NotImplementedError(f"sign-in throttling needs SQLite or PostgreSQL, not {name}")
    return dialects[name](_THROTTLE)


def _count(key: str, rule: ThrottleRule, now: datetime) -> tuple[int, datetime | None]:
    """Count one attempt on ``key``: (attempts in this window including it, locked until).

    One ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``: the database serialises concurrent
    attempts on the row, so 30 simultaneous attempts are numbered 1 to 30 (none lost, no
    duplicate insert to fail on), and there is no read-then-write for two requests to
    interleave. A window starts afresh when it is over or when a lock has run out; the attempt
    that reaches the limit starts the lock, later ones do not extend it.
    """
    column = _THROTTLE.c

    def at(moment: datetime) -> Any:
        return literal(moment, UTCDateTime(timezone=True))

    fresh = or_(
        column.locked_until <= now,
        and_(column.locked_until.is_(None), column.window_started_at <= now - FAILURE_WINDOW),
    )
    lock_until = at(now + rule.lock)
    with hub_engine().begin() as connection:
        statement = (
            _upsert(connection)
            .values(key=key, failures=1, window_started_at=now, locked_until=None)
            .on_conflict_do_update(
                index_elements=[column.key],
                set_={
                    "failures": case((fresh, 1), else_=column.failures + 1),
                    "window_started_at": case((fresh, at(now)), else_=column.window_started_at),
                    "locked_until": case(
                        (fresh, null()),
                        (column.locked_until.is_not(None), column.locked_until),
                        (column.failures + 1 >= rule.limit, lock_until),
                        else_=null(),
                    ),
                },
            )
            .returning(column.failures, column.locked_until)
        )
        attempts, locked_until = connection.execute(statement).one()
    return int(attempts), locked_until


def _give_back(counted: list[tuple[ThrottleRule, str]], *, signed_in: bool) -> None:
    """Uncount one attempt on each counter, as it was no wrong password; lift a lock it started.

    After a right password (``signed_in``) a counter with ``reset_on_success`` starts afresh:
    the person has shown they know the password.
    """
    column = _THROTTLE.c
    for rule, key in counted:
        with hub_engine().begin() as connection:
            if signed_in and rule.reset_on_success:
                connection.execute(_THROTTLE.delete().where(column.key == key))
                continue
            connection.execute(
                update(_THROTTLE)
                .where(column.key == key, column.failures > 0)
                .values(
                    failures=column.failures - 1,
                    locked_until=case(
                        (column.failures - 1 < rule.limit, null()), else_=column.locked_until
                    ),
                )
            )


def _take_attempt(counters: list[tuple[ThrottleRule, str]]) -> None:
    """Count this attempt on each counter in turn, before any password is checked; refuse it at
    the first counter over its limit.

    The refusing counter keeps the attempt (every attempt counts); the counters before it get
    it back, as it never reached a password check: the pair's counter must not fill up while the
    account is paused, nor the account's while one address is.
    """
    now = utcnow()
    counted: list[tuple[ThrottleRule, str]] = []
    for rule, key in counters:
        attempts, locked_until = _count(key, rule, now)
        if attempts > rule.limit:
            _give_back(counted, signed_in=False)
            wait = (locked_until - now) if locked_until else rule.lock
            seconds = max(1, math.ceil(wait.total_seconds()))
            raise TooManyAttempts(rule.message.format(minutes=math.ceil(seconds / 60)), seconds)
        counted.append((rule, key))


def _checked_user(email: str, password: str, client: str) -> User | None:
    """The account when ``password`` is right for ``email`` and the account is enabled, else
    None (the attempt then stays counted as a failure). Raises :class:`TooManyAttempts`, without
    checking the password, when a counter is over its limit."""
    counters = _counters(email, client)
    _take_attempt(counters)
    with hub_session() as session:
        user = session.exec(select(User).where(User.email == email)).first()
    try:
        # An unknown address costs the same hash as a known one, so timing tells nothing.
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
        ok = user is not None and not user.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        return None
    _give_back(counters, signed_in=True)
    return user


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


def sign_in(email: str, password: str, *, client: str, language: str = "nb") -> SignedIn:
    """Check the password and open a session; repeated failures pause sign-in a while (see
    :data:`THROTTLE_RULES`)."""
    email = _normal_email(email)
    user = _checked_user(email, password, client)
    if user is None:
        raise Unauthorized("the e-mail address or the password is wrong")
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    hours = get_settings().web_session_hours
    with hub_session() as session:
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
    if settings.idp_public_key_file and settings.idp_public_key_file.is_file():
        return settings.idp_public_key_file.read_text()
    return None


def check_identity_provider() -> None:
    """Refuse to start with an identity provider that is only half configured.

    Without a pinned issuer the hub would accept any token the provider's key signs, including
    tokens it issues for other realms or applications that share the key; a key file that is
    not there would silently turn bearer tokens off. ``create_app`` calls this, so ``web`` and
    ``serve`` stop at startup with the reason instead of failing on the first API call.
    """
    settings = get_settings()
    if not (settings.idp_public_key or settings.idp_public_key_file):
        return
    problems = []
    if not settings.idp_issuer:
        problems.append(
            "INTEGRATIONS_IDP_ISSUER is required with an identity provider key: set it to the "
            "issuer (iss) the provider writes into its tokens"
        )
    key_file = settings.idp_public_key_file
    if not settings.idp_public_key and key_file and not key_file.is_file():
        problems.append(f"INTEGRATIONS_IDP_PUBLIC_KEY_FILE names {key_file}, which is not a file")
    if problems:
        raise InvalidInput("the identity provider is not fully configured", problems)


def actor_from_bearer(token: str) -> Actor:
    """Verify a JWT from the volunteer app's identity provider and say who it speaks for.

    Asymmetric signatures only (the hub holds a public key, never a secret that could mint
    tokens); ``iss`` must be the configured issuer; ``exp``, ``sub``, ``org`` or ``role``
    missing or wrong refuses the token. So does an ``exp`` further ahead than
    ``INTEGRATIONS_IDP_MAX_TOKEN_HOURS``: the hub cannot revoke a token, so a long-lived one
    that leaks would work like a password that never changes.
    """
    import jwt

    key = _idp_key()
    if key is None:
        raise Unauthorized("bearer tokens are not accepted: no identity provider key is configured")
    settings = get_settings()
    if not settings.idp_issuer:
        raise Unauthorized("bearer tokens are not accepted: no identity provider issuer is set")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256", "ES256", "EdDSA"],
            audience=settings.idp_audience,
            issuer=settings.idp_issuer,
            options={"require": ["exp", "iss", "sub", "role"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"the bearer token was refused: {exc}") from None
    hours = settings.idp_max_token_hours
    if datetime.fromtimestamp(float(claims["exp"]), UTC) > utcnow() + timedelta(hours=hours):
        raise Unauthorized(
            f"the bearer token was refused: it expires more than {hours:g} hours from now"
        )
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
