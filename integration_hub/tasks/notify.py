"""Alerts: an organisation's alert channel, told when a run ends with failures, a backfill ends
with failures or a connection test fails.

The channel is one per organisation (an integration row of the reserved type ``_alerts``) and
one of :class:`ChannelKind`: a webhook that takes the hub's own JSON, a Slack incoming webhook,
a Microsoft Teams Workflows webhook (an Adaptive Card), or e-mail through SMTP. Its non-secret
settings (the kind; for e-mail the server, sender and recipients) are the row's ``settings``; the
webhook URL (it often carries a token) and the SMTP password live in the vault, encrypted,
masked, audited and rotated like every other secret, revealed only here at sending time. The
SMTP password is bound to its server (``smtp=HOST:PORT``), so a changed server needs it again.

What an alert says: which integration, what happened (counts, status, the run), and a link to
the integration's health page in the admin web app when the hub knows its public address
(``INTEGRATIONS_PUBLIC_BASE_URL``); never record contents (names, amounts per record,
descriptions), error texts or secrets. The reasons are on the health page, behind sign-in.

The same unresolved failure does not alert every night: each run alert carries a *failure
signature* (the integration, what failed and why: the run's status and kind of failure, and its
failed records with their reasons). An alert whose signature equals that of the last alert
delivered for the integration is not sent again, unless a run in between ended without failed
records (the failure was resolved, and is back). What was alerted is remembered in the audit
log (``alert.delivered`` entries carry the signature; a skipped repeat is ``alert.repeated``),
so no table is added for it. A channel that fails never fails what triggered the alert: the
outcome is logged (without the URL) and written to the audit log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import smtplib
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from sqlmodel import Session, col, select

from integration_hub.adapters.endpoints import (
    EndpointRefused,
    HostUnresolvable,
    allow_list,
    check_addresses,
    guarded_transport,
)
from integration_hub.db import app_session, hub_session
from integration_hub.models import (
    AuditEntry,
    Integration,
    Organisation,
    OutcomeStatus,
    RecordOutcome,
    RunStatus,
    SyncRun,
    utcnow,
)
from integration_hub.settings import get_settings

log = logging.getLogger(__name__)

ALERT_CHANNEL_TYPE = "_alerts"
WEBHOOK_FIELD = "webhook_url"
SMTP_PASSWORD_FIELD = "smtp_password"
TIMEOUT = httpx.Timeout(5.0, connect=3.0)
SMTP_TIMEOUT_S = 10.0
USER_AGENT = "integration-hub-alerts/1"

NO_CHANNEL = "no webhook"
"""What :func:`deliver` answers when the organisation has no alert channel (the CLI and the
flows compare with it)."""
DELIVERED = "delivered"
DELIVERED_ACTION = "alert.delivered"
FAILED_ACTION = "alert.failed"
REPEATED_ACTION = "alert.repeated"
OUTCOME_ACTIONS = (DELIVERED_ACTION, FAILED_ACTION, REPEATED_ACTION)
"""The audit entries that say what became of an alert."""

RUN_EVENTS = ("export.failed", "export.failures")
"""Events about one run: these carry a failure signature and are not repeated."""
CLEAN_STATUSES = (RunStatus.SUCCEEDED.value, RunStatus.PARTIAL.value)
"""A run in one of these with no failed records resolves the failure alerted before it."""
MAX_RECIPIENTS = 20


class ChannelKind(StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    TEAMS = "teams"
    EMAIL = "email"


WEBHOOK_KINDS = (ChannelKind.WEBHOOK, ChannelKind.SLACK, ChannelKind.TEAMS)


class SmtpSecurity(StrEnum):
    STARTTLS = "starttls"  # plain connection upgraded with STARTTLS (port 587)
    TLS = "tls"  # TLS from the first byte (port 465)
    NONE = "none"  # no encryption: only to a host a hub operator allowed


@dataclass(frozen=True)
class ChannelSettings:
    """The non-secret part of an alert channel, as stored in its row's ``settings``."""

    kind: ChannelKind = ChannelKind.WEBHOOK
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    smtp_username: str = ""
    sender: str = ""
    recipients: tuple[str, ...] = ()

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> ChannelSettings:
        """From a row's ``settings``; a row from before the kinds is a JSON webhook."""
        stored = stored or {}
        try:
            return cls(
                kind=ChannelKind(stored.get("kind", ChannelKind.WEBHOOK)),
                smtp_host=str(stored.get("smtp_host") or ""),
                smtp_port=int(stored.get("smtp_port") or 587),
                smtp_security=SmtpSecurity(stored.get("smtp_security") or SmtpSecurity.STARTTLS),
                smtp_username=str(stored.get("smtp_username") or ""),
                sender=str(stored.get("sender") or ""),
                recipients=tuple(str(r) for r in stored.get("recipients") or ()),
            )
        except (TypeError, ValueError):
            return cls()

    def stored(self) -> dict[str, Any]:
        """For the row's ``settings`` (only what the kind uses)."""
        if self.kind is not ChannelKind.EMAIL:
            return {"kind": self.kind.value}
        return {
            "kind": self.kind.value,
            "smtp_host": self.smtp_host,
            "smtp_port": self.smtp_port,
            "smtp_security": self.smtp_security.value,
            "smtp_username": self.smtp_username,
            "sender": self.sender,
            "recipients": list(self.recipients),
        }

    @property
    def secret_field(self) -> str:
        """The vault field this kind sends with."""
        return SMTP_PASSWORD_FIELD if self.kind is ChannelKind.EMAIL else WEBHOOK_FIELD

    @property
    def smtp_endpoint(self) -> str:
        """What the SMTP password is bound to: the server it was entered for."""
        return f"smtp={self.smtp_host.lower()}:{self.smtp_port}"


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


def public_base_url() -> str | None:
    """``INTEGRATIONS_PUBLIC_BASE_URL`` when it is an http(s) address (no query or fragment);
    None when unset, or unusable (logged once per alert, never a failure)."""
    value = (get_settings().public_base_url or "").strip().rstrip("/")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        log.warning("INTEGRATIONS_PUBLIC_BASE_URL is not an http(s) address; alerts carry no link")
        return None
    return value


def health_link(organisation: str, type_key: str | None) -> str | None:
    """The integration's health page in the admin web app, or None without a public address."""
    base = public_base_url()
    if base is None or not type_key:
        return None
    return (
        f"{base}/orgs/{quote(organisation, safe='')}/integrations/{quote(type_key, safe='')}/health"
    )


def alerts_page_link(organisation: str) -> str | None:
    """The organisation's alert channel page (for a test message)."""
    base = public_base_url()
    return f"{base}/orgs/{quote(organisation, safe='')}/alerts" if base else None


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


@dataclass(frozen=True)
class _Channel:
    """A channel ready to send: its settings and its secret in PLAINTEXT (never logged)."""

    channel_id: int
    settings: ChannelSettings
    secret: str | None = field(repr=False)


def _open_channel(organisation_id: int, purpose: str) -> _Channel | None:
    """The organisation's channel with its secret revealed, or None when it has none (or the
    secret its kind needs is not stored). A secret entered for another SMTP server is refused
    by the vault."""
    from integration_hub.vault import CredentialNotSet, CredentialVault

    with hub_session() as session:
        row = channel(session, organisation_id)
        if row is None:
            return None
        settings = ChannelSettings.of(row.settings)
        secret: str | None = None
        try:
            secret = CredentialVault.from_settings().reveal(
                session,
                organisation_id=organisation_id,
                integration_id=row.id or 0,
                field=settings.secret_field,
                purpose=purpose,
                endpoint=settings.smtp_endpoint if settings.kind is ChannelKind.EMAIL else None,
            )
        except CredentialNotSet:
            if settings.kind is not ChannelKind.EMAIL:
                return None
        if settings.kind is ChannelKind.EMAIL and not (settings.smtp_host and settings.recipients):
            return None
        return _Channel(row.id or 0, settings, secret)


# -- payloads ----------------------------------------------------------------------------------
def run_payload(
    summary: dict[str, Any], *, organisation: str, type_key: str, target: str, event: str
) -> dict[str, Any]:
    """What a channel learns about a run: counts, status and where to look. Nothing else."""
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
        "health_link": health_link(organisation, type_key),
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
        "health_link": health_link(organisation, type_key),
        "see": f"integrations health {organisation} {type_key}",
        "occurred_at": utcnow().isoformat(),
    }


def trial_payload(organisation: str) -> dict[str, Any]:
    """A test event an admin sends to see the channel work."""
    return {
        "event": "test",
        "organisation": organisation,
        "message": "Integration Hub can reach this channel",
        "health_link": alerts_page_link(organisation),
        "occurred_at": utcnow().isoformat(),
    }


# -- what a person reads -------------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    """An alert as a person reads it (Slack, Teams, e-mail): a title naming the integration,
    facts, and the link to the health page. Not the Prefect UI's: that is for operators only
    (README, "Running on schedule"). English: the hub's bokmål lives in the web app's
    catalogue, which this layer may not import."""

    title: str
    facts: tuple[tuple[str, str], ...]
    link: str | None
    link_text: str

    def text(self) -> str:
        """Plain text: the e-mail's body."""
        lines = [self.title, ""]
        lines += [f"{name}: {value}" for name, value in self.facts]
        if self.link:
            lines += ["", f"{self.link_text}: {self.link}"]
        return "\n".join(lines) + "\n"


def message(payload: Mapping[str, Any]) -> Message:
    """The title and facts of an alert, from its payload (which holds no record contents)."""
    event = str(payload.get("event") or "")
    org = str(payload.get("organisation") or "")
    what = f"{payload.get('target') or payload.get('integration') or 'Integration'} for {org}"
    counts = payload.get("counts") or {}
    failed = int(counts.get("failed") or 0)
    run = payload.get("run_id")
    facts: list[tuple[str, str]] = [("Organisation", org)]
    if payload.get("target"):
        facts.append(("Integration", str(payload["target"])))
    if event == "test":
        return Message(
            f"Test from Integration Hub for {org}",
            (*facts, ("Message", "Integration Hub can reach this channel")),
            payload.get("health_link"),
            "Alert settings",
        )
    if event == "connection_test.failed":
        title = f"{what}: the connection test failed ({payload.get('status')})"
    elif event == "export.failed":
        title = f"{what}: run {run} failed" if run else f"{what}: a run failed"
    elif event == "backfill.failures":
        window = payload.get("window") or ""
        title = f"{what}: the backfill {window} ended with {failed} failed record(s)"
    else:
        title = f"{what}: {failed} record(s) failed in run {run}"
    for name, key in (("Run", "run_id"), ("Status", "status"), ("Trigger", "trigger")):
        if payload.get(key) not in (None, ""):
            facts.append((name, str(payload[key])))
    if payload.get("window"):
        facts.append(("Window", str(payload["window"])))
    for name in ("extracted", "exported", "failed", "skipped", "waiting"):
        if name in counts:
            facts.append((name.capitalize(), str(int(counts[name] or 0))))
    if payload.get("see"):
        facts.append(("Command", str(payload["see"])))
    return Message(
        title.replace("  ", " "), tuple(facts), payload.get("health_link"), "Health page"
    )


def slack_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming webhook's message: ``text`` (the notification and fallback) and
    ``blocks`` (a header, the facts, the link), with Slack's mrkdwn escapes."""
    found = message(payload)
    link = f"<{found.link}|{_slack(found.link_text)}>" if found.link else ""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": found.title[:150]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{_slack(name)}*\n{_slack(value)}"}
                for name, value in found.facts[:10]
            ],
        },
    ]
    if link:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": link}})
    text = _slack(found.title) + (f" {link}" if link else "")
    return {"text": text, "blocks": blocks}


def _slack(text: str) -> str:
    """Slack's three control characters escaped, as its message formatting asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def teams_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A Teams Workflows webhook's message: one Adaptive Card attachment with the title, the
    facts and a button to the health page."""
    found = message(payload)
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": found.title,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            },
            {
                "type": "FactSet",
                "facts": [{"title": name, "value": value} for name, value in found.facts],
            },
        ],
    }
    if found.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": found.link_text, "url": found.link}]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def webhook_body(kind: ChannelKind, payload: Mapping[str, Any]) -> dict[str, Any]:
    """What is POSTed for each webhook kind: the hub's JSON as it is, or Slack's or Teams'."""
    if kind is ChannelKind.SLACK:
        return slack_body(payload)
    if kind is ChannelKind.TEAMS:
        return teams_body(payload)
    return {**payload, "title": message(payload).title}


def email_message(settings: ChannelSettings, payload: Mapping[str, Any]) -> EmailMessage:
    """The alert as a plain-text e-mail."""
    found = message(payload)
    mail = EmailMessage()
    mail["Subject"] = f"[Integration Hub] {found.title}"
    mail["From"] = settings.sender
    mail["To"] = ", ".join(settings.recipients)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(found.text())
    return mail


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
        return DELIVERED
    return f"failed: HTTP {response.status_code}"


class _GuardedSMTP(smtplib.SMTP):
    """SMTP whose socket goes only to addresses :func:`check_addresses` allows, checked when it
    opens (DNS rebinding gets nowhere); TLS still verifies the server's name."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        last: OSError | None = None
        for address in check_addresses(host, port):
            try:
                return socket.create_connection((address, port), timeout, self.source_address)
            except OSError as exc:
                last = exc
        raise last or OSError(f"cannot connect to {host}")


class _GuardedSMTPSSL(smtplib.SMTP_SSL, _GuardedSMTP):
    """TLS from the first byte, over :class:`_GuardedSMTP`'s checked socket."""


def send_mail(settings: ChannelSettings, password: str | None, mail: EmailMessage) -> str:
    """Send ``mail`` through the channel's SMTP server; ``"delivered"`` or why not (never the
    password). Plain SMTP (security none) only to a host a hub operator allowed; STARTTLS is
    required when chosen, never skipped."""
    if settings.smtp_security is SmtpSecurity.NONE and not allow_list().allows_host(
        settings.smtp_host
    ):
        return "failed: unencrypted SMTP is only for a host a hub operator allowed"
    context = ssl.create_default_context()
    try:
        if settings.smtp_security is SmtpSecurity.TLS:
            client: smtplib.SMTP = _GuardedSMTPSSL(
                settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_S, context=context
            )
        else:
            client = _GuardedSMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_S)
        with client:
            if settings.smtp_security is SmtpSecurity.STARTTLS:
                client.starttls(context=context)
            if settings.smtp_username:
                client.login(settings.smtp_username, password or "")
            refused = client.send_message(mail)
    except HostUnresolvable:
        return "failed: the SMTP server's name could not be resolved"
    except EndpointRefused:
        return "failed: the SMTP server's address is not allowed"
    except smtplib.SMTPAuthenticationError:
        return "failed: the SMTP server refused the user name or password"
    except (smtplib.SMTPException, OSError) as exc:
        return f"failed: {type(exc).__name__}"
    if refused:
        return f"failed: the SMTP server refused {len(refused)} recipient(s)"
    return DELIVERED


# -- not the same alert every night ---------------------------------------------------------------
def failure_signature(event: str, run_id: int | None) -> str | None:
    """What makes a run's failure this failure: the event, the run's status and kind of failure
    (``SyncRun.failure`` where recorded, else its error's first words), and each failed record
    with its reason. None when there is no run to say (a backfill, a test, a connection test):
    such alerts are always sent."""
    if event not in RUN_EVENTS or not run_id:
        return None
    with hub_session() as session:
        run = session.get(SyncRun, run_id)
        if run is None:
            return None
        failed = session.exec(
            select(RecordOutcome.record_id, RecordOutcome.record_version, RecordOutcome.reason)
            .where(
                RecordOutcome.run_id == run_id,
                RecordOutcome.status == OutcomeStatus.FAILED.value,
            )
            .order_by(col(RecordOutcome.record_id), col(RecordOutcome.record_version))
        ).all()
    why = getattr(run, "failure", None) or (run.error or "").split(":", 1)[0]
    facts = {
        "integration": run.integration_id,
        "event": event,
        "status": run.status,
        "failure": why,
        "records": [[record, version, reason or ""] for record, version, reason in failed],
    }
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def already_alerted(organisation_id: int, integration_id: int, signature: str) -> int | None:
    """The run whose alert told of this same failure, when no run since ended without failed
    records; None when it is news (never alerted, another failure last, or resolved since)."""
    with hub_session() as session:
        entries = session.exec(
            select(AuditEntry)
            .where(
                AuditEntry.organisation_id == organisation_id,
                AuditEntry.integration_id == integration_id,
                AuditEntry.action == DELIVERED_ACTION,
            )
            .order_by(col(AuditEntry.id).desc())
            .limit(50)
        ).all()
        last = next((e for e in entries if e.details.get("signature")), None)
        if last is None or last.details.get("signature") != signature:
            return None
        alerted_run = int(last.details.get("run_id") or 0)
        resolved = session.exec(
            select(SyncRun.id).where(
                SyncRun.integration_id == integration_id,
                col(SyncRun.id) > alerted_run,
                col(SyncRun.dry_run).is_(False),
                col(SyncRun.status).in_(CLEAN_STATUSES),
                SyncRun.failed == 0,
            )
        ).first()
    return None if resolved is not None else alerted_run


def _record(
    organisation_id: int,
    integration_id: int | None,
    action: str,
    details: dict[str, Any],
    actor: str,
) -> None:
    try:
        with hub_session() as session:
            session.add(
                AuditEntry(
                    actor=actor,
                    organisation_id=organisation_id,
                    integration_id=integration_id,
                    action=action,
                    details=details,
                )
            )
    except Exception:
        log.warning("could not record the alert outcome of organisation %s", organisation_id)


def deliver(
    organisation_id: int,
    payload: dict[str, Any],
    *,
    integration_id: int | None = None,
    actor: str = "system",
) -> str:
    """Tell the organisation's channel, if any; never raises.

    Returns ``"no webhook"`` (no channel), ``"delivered"``, ``"failed: <why>"`` or, for the
    same unresolved failure as the last alert, ``"not repeated: ..."``; records the outcome in
    the audit log (event, run, result and the failure signature; never the URL or an address).
    """
    event = str(payload.get("event") or "")
    run_id = payload.get("run_id")
    integration_id = integration_id or payload.get("integration_id")
    signature: str | None = None
    try:
        with hub_session() as session:
            if channel(session, organisation_id) is None:
                return NO_CHANNEL
        signature = failure_signature(event, run_id)
        if signature and integration_id:
            earlier = already_alerted(organisation_id, integration_id, signature)
            if earlier is not None:
                result = f"not repeated: the same failure was alerted for run {earlier}"
                details = {"event": event, "run_id": run_id, "result": result}
                _record(organisation_id, integration_id, REPEATED_ACTION, details, actor)
                return result
        found = _open_channel(organisation_id, purpose=f"alert {event}")
        if found is None:
            return NO_CHANNEL
        channel_id = found.channel_id
        settings = found.settings
        if settings.kind is ChannelKind.EMAIL:
            result = send_mail(settings, found.secret, email_message(settings, payload))
        else:
            result = post(found.secret or "", webhook_body(settings.kind, payload))
    except Exception as exc:  # the vault or the database: an alert must not fail the run
        result = f"failed: {type(exc).__name__}"
        channel_id = None
    if result != DELIVERED:
        log.warning("alert of organisation %s (%s): %s", organisation_id, event, result)
    details = {"event": event, "run_id": run_id, "result": result}
    if signature:
        details["signature"] = signature
    action = DELIVERED_ACTION if result == DELIVERED else FAILED_ACTION
    _record(organisation_id, integration_id or channel_id, action, details, actor)
    return result
