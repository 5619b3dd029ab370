"""The audit log: who changed what in an organisation's integrations, and when, newest first.

An organisation's admin sees their own organisation's entries; operators any organisation's.
The entries never hold a secret (see :class:`integration_hub.models.AuditEntry`); each use of a
stored credential (every run reads its own) is left out unless asked for.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from integration_hub.adapters.registry import UnknownIntegrationType, get_type
from integration_hub.services import configuration as config
from integration_hub.services import history
from integration_hub.web.rendering import render
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

MAX_PAGE = 100_000

ACTION_LABELS = {
    "integration.created": "Integration created",
    "integration.configured": "Settings saved",
    "integration.connection_tested": "Connection tested",
    "integration.status": "Status changed",
    "mapping.saved": "Field mapping saved",
    "schedule.set": "Schedule saved",
    "exclusions.set": "Excluded categories saved",
    "record.ignored": "Record ignored",
    "record.unignored": "Record no longer ignored",
    "credential.set": "Secret stored",
    "credential.replaced": "Secret replaced",
    "credential.deleted": "Secret deleted",
    "credential.used": "Stored secret used",
    "feature_flag.set": "Integration type offered or withdrawn",
    "organisation.added": "Organisation added",
    "organisation.renamed": "Organisation renamed",
    "alert.delivered": "Alert sent",
    "alert.failed": "Alert not delivered",
    "alerts.webhook_set": "Alert channel saved",
    "alerts.webhook_removed": "Alert channel removed",
    "bufdir.report.resubmitted": "Bufdir report sent again",
    "setup.applied": "Setup applied",
    "setup.staged": "Setup staged",
    "setup.discarded": "Staged setup discarded",
    "user.created": "User added",
    "user.signed_in": "Signed in",
    "user.disabled": "User disabled",
    "user.enabled": "User enabled",
    "user.password_changed": "Password changed",
    "user.password_reset": "Password reset",
    "user.sessions_revoked": "Sessions signed out",
    "vault.rotated": "Encryption key rotated",
    "vault.key_retired": "Old encryption key retired",
    "vault.credentials_discarded": "Secrets discarded",
    "connection_test.failed": "Connection test failed",
}
"""What each audited action is, as people read it (English source text; bokmål in runs.yaml).
An action not listed shows its code."""


def detail_text(value: Any) -> str:
    """A detail's value in one short line: lists joined, mappings as compact JSON."""
    if isinstance(value, list | tuple):
        return ", ".join(detail_text(v) for v in value) or "–"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if value is None or value == "":
        return "–"
    return str(value)


def target_name(type_key: str | None) -> str | None:
    if type_key is None:
        return None
    try:
        return get_type(type_key).display_name
    except UnknownIntegrationType:
        return type_key


@router.get("/orgs/{org}/audit")
def audit_page(
    request: Request,
    org: str,
    signed_in: PageSession,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    uses: Annotated[bool, Query()] = False,
) -> Response:
    actor = signed_in.actor
    organisation = config.organisation(org, actor)
    log = history.audit_log(organisation, actor, page=page, uses=uses)
    return render(
        request,
        "audit.html",
        {
            "organisation": organisation.slug,
            "organisation_name": organisation.name,
            "log": log,
            "action_labels": ACTION_LABELS,
            "detail_text": detail_text,
            "target_name": target_name,
        },
    )
