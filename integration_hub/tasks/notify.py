"""Alerts: an organisation's webhook, called when a run ends with failures or a connection test
fails.

The webhook URL can carry a secret token, so it lives in the vault as the credential
``webhook_url`` of the organisation's alert channel (an integration row of the reserved type
``_alerts``): encrypted, masked, audited and rotated like every other secret. It is revealed only
here, at sending time. The payload carries counts, statuses and a link, never record contents
(names, amounts per record, descriptions), error texts or secrets. A webhook that fails never
fails the run: the outcome is logged (without the URL) and written to the audit log.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import httpx
from sqlmodel import Session, select

from integration_hub.adapters.endpoints import guarded_transport
from integration_hub.db import app_session, hub_session
from integration_hub.models import AuditEntry, Integration, Organisation, utcnow
from integration_hub.settings import get_settings

log = logging.getLogger(__name__)

ALERT_CHANNEL_TYPE = "_alerts"
WEBHOOK_FIELD = "webhook_url"
TIMEOUT = httpx.Timeout(5.0, connect=3.0)
USER_AGENT = "integration-hub-alerts/1"


# -- links -------------------------------------------------------------------------------------
def ui_base_url() -> str | None:
    """Where the Prefect UI is: PREFECT_UI_URL, INTEGRATIONS_PREFECT_UI_URL, or the UI beside
    PREFECT_API_URL; None when Prefect runs embedded (its temporary server has no lasting UI)."""
    explicit = os.environ.get("PREFECT_UI_URL") or get_settings().prefect_ui_url
    if explicit:
        return explicit.rstrip("/")
    api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if api:
        return api.removesuffix("/api")
    return None


def flow_run_link(flow_run_id: str | None) -> str | None:
    """The Prefect UI page of a flow run (route ``/runs/flow-run/<id>``)."""
    base = ui_base_url()
    if not flow_run_id or not base:
        return None
    return f"{base}/runs/flow-run/{flow_run_id}"


# -- the channel -------------------------------------------------------------------------------
def channel(session: Session, organisation_id: int) -> Integration | None:
    """The organisation's alert channel row, if it has one."""
    return session.exec(
        select(Integration).where(
            Integration.organisation_id == organisation_id,
            Integration.type_key == ALERT_CHANNEL_TYPE,
        )
    ).first()


def organisation_slug(organisation_id: int) -> str:
    with app_session() as session:
        org = session.get(Organisation, organisation_id)
    return org.slug if org else str(organisation_id)


def _webhook_url(organisation_id: int, purpose: str) -> tuple[str, int] | None:
    """(PLAINTEXT URL, channel id), or None when no webhook is registered."""
    from integration_hub.vault import CredentialNotSet, CredentialVault

    with hub_session() as session:
        row = channel(session, organisation_id)
        if row is None:
            return None
        try:
            url = CredentialVault.from_settings().reveal(
                session,
                organisation_id=organisation_id,
                integration_id=row.id or 0,
                field=WEBHOOK_FIELD,
                purpose=purpose,
            )
        except CredentialNotSet:
            return None
    return url, row.id or 0


# -- payloads ----------------------------------------------------------------------------------
def run_payload(
    summary: dict[str, Any], *, organisation: str, type_key: str, target: str, event: str
) -> dict[str, Any]:
    """What a webhook learns about a run: counts, status and where to look. Nothing else."""
    return {
        "event": event,
        "organisation": organisation,
        "integration": type_key,
        "target": target,
        "integration_id": summary.get("integration_id"),
        "run_id": summary.get("run_id"),
        "trigger": summary.get("trigger"),
        "status": summary.get("status"),
        "window": summary.get("window"),
        "counts": {
            name: int(summary.get(name) or 0)
            for name in ("extracted", "exported", "failed", "skipped", "waiting")
        },
        "requests_sent": int(summary.get("requests_sent") or 0),
        "link": flow_run_link(summary.get("flow_run_id")),
        "see": f"integrations health {organisation} {type_key}",
        "occurred_at": utcnow().isoformat(),
    }


def connection_payload(
    *, organisation: str, type_key: str, target: str, integration_id: int, status: str
) -> dict[str, Any]:
    """A failed connection test: its classification only (the detail text stays in the hub)."""
    return {
        "event": "connection_test.failed",
        "organisation": organisation,
        "integration": type_key,
        "target": target,
        "integration_id": integration_id,
        "status": status,
        "link": None,
        "see": f"integrations health {organisation} {type_key}",
        "occurred_at": utcnow().isoformat(),
    }


# -- sending -----------------------------------------------------------------------------------
_SENDING: set[str] = set()
_SENDING_LOCK = threading.Lock()


class _HideWebhookUrls(logging.Filter):
    """httpx logs every request's URL at INFO; a webhook URL may hold a token, so such records
    are dropped while it is being sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _SENDING_LOCK:
            if not _SENDING:
                return True
            text = f"{record.msg} {record.args}"
            return not any(url in text for url in _SENDING)


def _install_filter() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideWebhookUrls) for f in logger.filters):
            logger.addFilter(_HideWebhookUrls())


def post(url: str, payload: dict[str, Any], transport: httpx.BaseTransport | None = None) -> str:
    """POST ``payload``; returns ``"delivered"`` or why not, in words that never hold the URL."""
    _install_filter()
    with _SENDING_LOCK:
        _SENDING.add(url)
    try:
        with httpx.Client(
            timeout=TIMEOUT,
            transport=transport or guarded_transport(),
            follow_redirects=False,
        ) as client:
            response = client.post(url, json=payload, headers={"User-Agent": USER_AGENT})
    except httpx.HTTPError as exc:
        return f"failed: {type(exc).__name__}"
    finally:
        with _SENDING_LOCK:
            _SENDING.discard(url)
    if 200 <= response.status_code < 300:
        return "delivered"
    return f"failed: HTTP {response.status_code}"


def deliver(
    organisation_id: int,
    payload: dict[str, Any],
    *,
    integration_id: int | None = None,
    actor: str = "system",
) -> str:
    """Send ``payload`` to the organisation's webhook, if any; never raises.

    Returns ``"no webhook"``, ``"delivered"`` or ``"failed: <why>"`` and records the outcome in the
    audit log (event, run and result; never the URL).
    """
    try:
        found = _webhook_url(organisation_id, purpose=f"alert {payload.get('event')}")
        if found is None:
            return "no webhook"
        url, channel_id = found
        result = post(url, payload)
    except Exception as exc:  # the vault or the database: an alert must not fail the run
        result = f"failed: {type(exc).__name__}"
        channel_id = None
    if result != "delivered":
        log.warning(
            "alert webhook of organisation %s (%s): %s",
            organisation_id,
            payload.get("event"),
            result,
        )
    try:
        with hub_session() as session:
            session.add(
                AuditEntry(
                    actor=actor,
                    organisation_id=organisation_id,
                    integration_id=integration_id or channel_id,
                    action="alert.delivered" if result == "delivered" else "alert.failed",
                    details={
                        "event": payload.get("event"),
                        "run_id": payload.get("run_id"),
                        "result": result,
                    },
                )
            )
    except Exception:
        log.warning("could not record the alert outcome of organisation %s", organisation_id)
    return result
