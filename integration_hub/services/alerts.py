"""Alert webhooks: register, remove, show (masked) and try an organisation's webhook, and alert
when a connection test fails.

The URL is a secret (webhook URLs often carry a token), so it goes straight into the vault as
the credential ``webhook_url`` of the organisation's alert channel and is never shown again, only
its mask. Sending happens in :mod:`integration_hub.tasks.notify`, which the flows use too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlmodel import select

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
    utcnow,
)
from integration_hub.services import configuration as config
from integration_hub.services.configuration import Actor, audit
from integration_hub.services.errors import InvalidInput
from integration_hub.tasks import notify
from integration_hub.vault import CredentialVault, is_mask


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


def set_webhook(org_slug: str, url: str, actor: Actor) -> str:
    """Store (or replace) the organisation's webhook URL in the vault; returns its mask."""
    check_webhook_url(url)
    org = config.organisation(org_slug, actor)
    row = _channel(org, actor, create=True)
    assert row is not None
    vault = CredentialVault.from_settings()
    with hub_session() as session:
        vault.store(
            session,
            organisation_id=org.id or 0,
            integration_id=row.id or 0,
            field=notify.WEBHOOK_FIELD,
            plaintext=url.strip(),
            actor=actor.name,
            endpoint=None,  # the URL is itself the destination
        )
        audit(session, actor, "alerts.webhook_set", row)
        return vault.masked(session, integration_id=row.id or 0)[notify.WEBHOOK_FIELD]


def remove_webhook(org_slug: str, actor: Actor) -> bool:
    """Forget the webhook; False when none was registered."""
    org = config.organisation(org_slug, actor)
    actor.check_change(org.id or 0)
    row = _channel(org, actor, create=False)
    if row is None:
        return False
    with hub_session() as session:
        removed = CredentialVault.delete(
            session, integration_id=row.id or 0, field=notify.WEBHOOK_FIELD, actor=actor.name
        )
        if removed:
            audit(session, actor, "alerts.webhook_removed", row)
    return removed


def show_webhook(org_slug: str, actor: Actor) -> dict[str, Any]:
    """The webhook's mask and the last deliveries (results only, never the URL)."""
    org = config.organisation(org_slug, actor)
    row = _channel(org, actor, create=False)
    if row is None:
        return {"organisation": org.slug, "webhook": None, "recent": []}
    with hub_session() as session:
        masked = CredentialVault.masked(session, integration_id=row.id or 0)
        entries = session.exec(
            select(AuditEntry)
            .where(
                AuditEntry.organisation_id == org.id,
                AuditEntry.action.in_(["alert.delivered", "alert.failed"]),  # type: ignore[attr-defined]
            )
            .order_by(AuditEntry.id.desc())  # type: ignore[union-attr]
            .limit(5)
        ).all()
    return {
        "organisation": org.slug,
        "webhook": masked.get(notify.WEBHOOK_FIELD),
        "recent": [
            {
                "at": e.at.isoformat(),
                "event": e.details.get("event"),
                "run_id": e.details.get("run_id"),
                "result": e.details.get("result"),
            }
            for e in entries
        ],
    }


def send_test(org_slug: str, actor: Actor) -> str:
    """Send a ``test`` event so an admin sees the webhook work; returns the result."""
    org = config.organisation(org_slug, actor)
    payload = {
        "event": "test",
        "organisation": org.slug,
        "message": "Integration Hub can reach this webhook",
        "occurred_at": utcnow().isoformat(),
    }
    return notify.deliver(org.id or 0, payload, actor=actor.name)


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
