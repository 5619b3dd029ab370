"""Alert channels: set up, show (masked), try and remove an organisation's alert channel, and
alert when a connection test fails. One service for the web page and the CLI.

A channel is a webhook (the hub's own JSON, Slack or Microsoft Teams) or e-mail through SMTP.
The webhook URL (webhook URLs often carry a token) and the SMTP password are secrets: they go
straight into the vault as credentials of the organisation's alert channel and are never shown
again, only their masks; a blank or a submitted mask keeps the stored one. The rest (the kind,
the SMTP server, sender and recipients) is the channel row's settings. Sending happens in
:mod:`integration_hub.tasks.notify`, which the flows use too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from sqlmodel import col, select

from integration_hub.adapters.base import ConnectionResult
from integration_hub.adapters.endpoints import (
    EndpointRefused,
    HostUnresolvable,
    allow_list,
    check_addresses,
)
from integration_hub.adapters.registry import get_type
from integration_hub.db import hub_session
from integration_hub.models import (
    AuditEntry,
    Integration,
    IntegrationStatus,
    Organisation,
)
from integration_hub.services import configuration as config
from integration_hub.services.configuration import Actor, audit
from integration_hub.services.errors import InvalidInput
from integration_hub.tasks import notify
from integration_hub.tasks.notify import ChannelKind, ChannelSettings, SmtpSecurity
from integration_hub.vault import CredentialVault, is_mask

KIND_NAMES: dict[str, str] = {
    ChannelKind.WEBHOOK: "Webhook (JSON)",
    ChannelKind.SLACK: "Slack",
    ChannelKind.TEAMS: "Microsoft Teams",
    ChannelKind.EMAIL: "E-mail (SMTP)",
}
"""Each kind as people read it (English source text; bokmål in translations/alerts.yaml)."""

SECURITY_NAMES: dict[str, str] = {
    SmtpSecurity.STARTTLS: "STARTTLS (usually port 587)",
    SmtpSecurity.TLS: "TLS from the start (usually port 465)",
    SmtpSecurity.NONE: "None (only for a server the hub's operators allowed)",
}

MAX_FIELD_LENGTH = 2048
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
_ADDRESS = re.compile(r"^[^@\s,;<>\"()\[\]\\]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_RECIPIENT_SPLIT = re.compile(r"[\s,;]+")


# -- checks ------------------------------------------------------------------------------------
def check_webhook_url(url: str) -> None:
    """https to a public address (http, or a private address, only for a host the operator
    allowed), a host, no credentials in the authority part, no fragment.

    The message never repeats the URL: it may hold a token.
    """
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InvalidInput("the webhook URL is not a valid URL") from None
    if is_mask(url):
        raise InvalidInput("that is the mask of the stored URL, not a URL")
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidInput("the webhook URL must be an https:// URL")
    if parts.username or parts.password or "@" in parts.netloc:
        raise InvalidInput("put the webhook's token in its path or query, not in user:password@")
    if parts.fragment:
        raise InvalidInput("the webhook URL must not contain a fragment (#...)")
    allowed = allow_list()
    if parts.scheme == "http" and not allowed.allows_host(host):
        raise InvalidInput(
            "the webhook URL must use https (http only for a host a hub operator allowed)"
        )
    try:
        check_addresses(host, parts.port or 443, allowed)
    except HostUnresolvable:
        pass  # nothing to judge now; delivery connects through the same guard
    except EndpointRefused as exc:
        raise InvalidInput(f"the webhook URL is refused: {exc}") from None


def _smtp_problems(settings: ChannelSettings) -> list[str]:
    """Every problem with an e-mail channel's settings (the password is checked apart)."""
    problems = []
    host = settings.smtp_host
    if not host:
        problems.append("smtp_host: the SMTP server is required")
    elif not _HOST.fullmatch(host):
        problems.append("smtp_host: the SMTP server must be a host name or an IP address")
    if not 1 <= settings.smtp_port <= 65535:
        problems.append("smtp_port: the port must be a number from 1 to 65535")
    if host and _HOST.fullmatch(host):
        allowed = allow_list()
        if settings.smtp_security is SmtpSecurity.NONE and not allowed.allows_host(host):
            problems.append(
                "smtp_security: an SMTP server without encryption is only for a host a hub "
                "operator allowed; choose STARTTLS or TLS"
            )
        try:
            check_addresses(host, settings.smtp_port, allowed)
        except HostUnresolvable:
            pass  # nothing to judge now; sending connects through the same guard
        except EndpointRefused as exc:
            problems.append(f"smtp_host: the SMTP server is refused: {exc}")
    if not _ADDRESS.fullmatch(settings.sender):
        problems.append("sender: the sender must be one e-mail address, like alerts@example.org")
    if not settings.recipients:
        problems.append("recipients: give at least one recipient")
    elif len(settings.recipients) > notify.MAX_RECIPIENTS:
        problems.append(f"recipients: at most {notify.MAX_RECIPIENTS} recipients")
    for address in settings.recipients:
        if not _ADDRESS.fullmatch(address):
            problems.append(f"recipients: {address[:100]} is not an e-mail address")
    return problems


def _recipients(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    parts = [p.strip() for p in _RECIPIENT_SPLIT.split(str(value or "")) if p.strip()]
    return tuple(dict.fromkeys(parts))


def _port(value: Any, problems: list[str]) -> int:
    text = str(value if value not in (None, "") else 587).strip()
    if not text.isdigit():
        problems.append("smtp_port: the port must be a number from 1 to 65535")
        return 587
    return int(text)


# -- the channel row ---------------------------------------------------------------------------
def _channel(org: Organisation, actor: Actor, *, create: bool) -> Integration | None:
    if create:
        actor.check_change(org.id or 0)
    else:
        actor.check(org.id or 0)
    with hub_session() as session:
        row = notify.channel(session, org.id or 0)
        if row is None and create:
            row = Integration(
                organisation_id=org.id or 0,
                type_key=notify.ALERT_CHANNEL_TYPE,
                status=IntegrationStatus.ACTIVE.value,
            )
            session.add(row)
            session.flush()
        return row


def configure_channel(org_slug: str, values: dict[str, Any], actor: Actor) -> dict[str, Any]:
    """Set up (or change) the organisation's alert channel from ``values``: ``kind`` (webhook,
    slack, teams or email) and, for a webhook, ``webhook_url``; for e-mail ``smtp_host``,
    ``smtp_port``, ``smtp_security``, ``smtp_username``, ``smtp_password``, ``sender`` and
    ``recipients`` (comma- or line-separated, or a list). Secrets left blank or sent back as
    their mask keep the stored ones. Every problem is reported at once (:class:`InvalidInput`,
    each ``field: message``) and nothing changes unless all is well. Switching kinds forgets
    the other kind's secret. Returns :func:`channel_view`."""
    org = config.organisation(org_slug, actor)
    actor.check_change(org.id or 0)
    problems: list[str] = []
    too_long = [k for k, v in values.items() if isinstance(v, str) and len(v) > MAX_FIELD_LENGTH]
    if too_long:
        raise InvalidInput(
            "the alert channel is not valid",
            [f"{name}: at most {MAX_FIELD_LENGTH} characters" for name in sorted(too_long)],
        )
    try:
        kind = ChannelKind(str(values.get("kind") or ChannelKind.WEBHOOK))
    except ValueError:
        raise InvalidInput(
            "the alert channel is not valid", ["kind: choose webhook, slack, teams or email"]
        ) from None
    try:
        security = SmtpSecurity(str(values.get("smtp_security") or SmtpSecurity.STARTTLS))
    except ValueError:
        security = SmtpSecurity.STARTTLS
        problems.append("smtp_security: choose starttls, tls or none")
    settings = ChannelSettings(kind=kind)
    if kind is ChannelKind.EMAIL:
        settings = ChannelSettings(
            kind=kind,
            smtp_host=str(values.get("smtp_host") or "").strip().lower(),
            smtp_port=_port(values.get("smtp_port"), problems),
            smtp_security=security,
            smtp_username=str(values.get("smtp_username") or "").strip(),
            sender=str(values.get("sender") or "").strip(),
            recipients=_recipients(values.get("recipients")),
        )
        problems += _smtp_problems(settings)

    existing = _channel(org, actor, create=False)
    with hub_session() as session:
        stored = (
            CredentialVault.masked(session, integration_id=existing.id or 0) if existing else {}
        )
    before = ChannelSettings.of(existing.settings if existing else None)
    typed = str(values.get(settings.secret_field) or "").strip()
    new_secret = typed if typed and not is_mask(typed) else None
    if kind in notify.WEBHOOK_KINDS:
        if new_secret is not None:
            try:
                check_webhook_url(new_secret)
            except InvalidInput as exc:
                problems.append(f"webhook_url: {exc}")
        elif notify.WEBHOOK_FIELD not in stored:
            problems.append("webhook_url: the webhook URL is required")
    elif settings.smtp_username and new_secret is None:
        entered_for = before.smtp_endpoint if before.kind is ChannelKind.EMAIL else None
        if notify.SMTP_PASSWORD_FIELD not in stored:
            problems.append("smtp_password: the password is required with a user name")
        elif entered_for != settings.smtp_endpoint:
            problems.append(
                "smtp_password: enter the SMTP password again: it is kept only for the server "
                "it was entered for"
            )
    if problems:
        raise InvalidInput("the alert channel is not valid", problems)

    # What to forget: the other kind's secret, and a password no user name needs any more.
    unused = (
        {notify.SMTP_PASSWORD_FIELD} if kind in notify.WEBHOOK_KINDS else {notify.WEBHOOK_FIELD}
    )
    if kind is ChannelKind.EMAIL and not settings.smtp_username:
        unused.add(notify.SMTP_PASSWORD_FIELD)
        new_secret = None
    row = _channel(org, actor, create=True)
    assert row is not None
    with hub_session() as session:
        stored_row = session.get(Integration, row.id)
        assert stored_row is not None
        stored_row.settings = settings.stored()
        session.add(stored_row)
        dropped = sorted(name for name in unused if name in stored)
        for name in dropped:
            CredentialVault.delete(
                session, integration_id=row.id or 0, field=name, actor=actor.name
            )
        if new_secret is not None:
            CredentialVault.from_settings().store(
                session,
                organisation_id=org.id or 0,
                integration_id=row.id or 0,
                field=settings.secret_field,
                plaintext=new_secret,
                actor=actor.name,
                endpoint=settings.smtp_endpoint if kind is ChannelKind.EMAIL else None,
            )
        audit(
            session,
            actor,
            "alerts.webhook_set",  # the action name since webhooks were the only channel
            stored_row,
            kind=kind.value,
            previous_kind=before.kind.value if existing else None,
            secret_replaced=new_secret is not None,
            secrets_dropped=dropped,
            recipients=len(settings.recipients),
        )
    return channel_view(org_slug, actor)


def set_webhook(
    org_slug: str, url: str, actor: Actor, kind: ChannelKind = ChannelKind.WEBHOOK
) -> str:
    """Store (or replace) the organisation's webhook URL (``kind``: the hub's JSON, Slack or
    Teams); returns its mask."""
    if kind not in notify.WEBHOOK_KINDS:
        raise InvalidInput("a webhook is of the kind webhook, slack or teams")
    check_webhook_url(url)
    view = configure_channel(org_slug, {"kind": kind.value, "webhook_url": url}, actor)
    return str(view["webhook"])


def remove_channel(org_slug: str, actor: Actor) -> bool:
    """Forget the alert channel (its secrets and settings); False when there was none."""
    org = config.organisation(org_slug, actor)
    actor.check_change(org.id or 0)
    row = _channel(org, actor, create=False)
    if row is None:
        return False
    removed = False
    with hub_session() as session:
        for name in (notify.WEBHOOK_FIELD, notify.SMTP_PASSWORD_FIELD):
            removed |= CredentialVault.delete(
                session, integration_id=row.id or 0, field=name, actor=actor.name
            )
        stored_row = session.get(Integration, row.id)
        if stored_row is not None and stored_row.settings:
            removed = True
            stored_row.settings = {}
            session.add(stored_row)
        if removed:
            audit(session, actor, "alerts.webhook_removed", row)
    return removed


remove_webhook = remove_channel
"""The name the CLI's ``--remove`` has always called."""


def channel_view(org_slug: str, actor: Actor) -> dict[str, Any]:
    """The channel as a page or the CLI shows it: the kind, the secrets' masks only, the
    e-mail settings, the last alerts (results only, never the URL or an address), and whether
    alerts link to the health page."""
    org = config.organisation(org_slug, actor)
    row = _channel(org, actor, create=False)
    settings = ChannelSettings.of(row.settings if row else None)
    masked: dict[str, str] = {}
    recent: list[AuditEntry] = []
    with hub_session() as session:
        if row is not None:
            masked = CredentialVault.masked(session, integration_id=row.id or 0)
        recent = list(
            session.exec(
                select(AuditEntry)
                .where(
                    AuditEntry.organisation_id == org.id,
                    col(AuditEntry.action).in_(notify.OUTCOME_ACTIONS),
                )
                .order_by(col(AuditEntry.id).desc())
                .limit(10)
            ).all()
        )
    configured = row is not None and (
        notify.WEBHOOK_FIELD in masked
        if settings.kind in notify.WEBHOOK_KINDS
        else bool(settings.smtp_host and settings.recipients)
    )
    return {
        "organisation": org.slug,
        "organisation_name": org.name,
        "configured": configured,
        "kind": settings.kind.value if configured or row is not None else None,
        "webhook": masked.get(notify.WEBHOOK_FIELD),
        "smtp_password": masked.get(notify.SMTP_PASSWORD_FIELD),
        "settings": settings,
        "links_to_health_page": notify.public_base_url() is not None,
        "recent": [
            {
                "at": e.at.isoformat(),
                "event": e.details.get("event"),
                "run_id": e.details.get("run_id"),
                "result": e.details.get("result"),
            }
            for e in recent
        ],
    }


def show_webhook(org_slug: str, actor: Actor) -> dict[str, Any]:
    """The webhook's mask and the last deliveries (results only, never the URL)."""
    view = channel_view(org_slug, actor)
    return {
        "organisation": view["organisation"],
        "webhook": view["webhook"],
        "kind": view["kind"],
        "recent": view["recent"][:5],
    }


def send_test(org_slug: str, actor: Actor) -> str:
    """Send a ``test`` event so an admin sees the channel work; returns the result."""
    org = config.organisation(org_slug, actor)
    return notify.deliver(org.id or 0, notify.trial_payload(org.slug), actor=actor.name)


def connection_test_alert(row: Integration, result: ConnectionResult) -> str | None:
    """Alert the organisation about a failed connection test; None when it passed."""
    if result.ok:
        return None
    payload = notify.connection_payload(
        organisation=notify.organisation_slug(row.organisation_id),
        type_key=row.type_key,
        target=get_type(row.type_key).display_name,
        integration_id=row.id or 0,
        status=result.status.value,
    )
    return notify.deliver(row.organisation_id, payload, integration_id=row.id)


def check_connection(row: Integration, actor: Actor) -> tuple[ConnectionResult, str | None]:
    """:func:`configuration.test_connection`, then the alert when it failed: what the CLI's
    ``test-connection``, the wizard and pages should call. Returns (result, alert outcome)."""
    result = config.test_connection(row, actor)
    return result, connection_test_alert(row, result)
