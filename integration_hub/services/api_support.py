"""Glue the REST API needs on top of the other services, so routes stay translation only:
finding an integration by organisation slug and type, one integration's view without secrets,
mapping documents sent as JSON (malformed or oversized ones are bad input, never a server
error), schedules given as a daily time or cron, the status switch, and the health view with the
run a retry would take.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from integration_hub.adapters.base import AdapterError, Choice, ReferenceCode
from integration_hub.adapters.factory import IntegrationNotConfigured
from integration_hub.adapters.registry import get_type
from integration_hub.db import hub_session
from integration_hub.mappings.spec import (
    MAX_MAPPING_BYTES,
    MappingDocument,
    MappingError,
    parse_mapping,
)
from integration_hub.mappings.validator import Problem
from integration_hub.models import Integration, IntegrationStatus
from integration_hub.services import configuration as config
from integration_hub.services import scheduler, setup, wizard
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import InvalidInput, NotFound, ServiceError
from integration_hub.services.health import integration_health

T = TypeVar("T")


class TargetUnavailable(ServiceError):
    """The target system could not be asked (not configured yet, or not answering)."""


def find_integration(
    org_slug: str, type_key: str, actor: Actor, *, create: bool = False
) -> Integration:
    """The organisation's integration of ``type_key`` (tenancy checked by the services)."""
    org = config.organisation(org_slug, actor)
    return config.integration(org, type_key, actor, create=create)


def start_setup(org_slug: str, type_key: str, actor: Actor) -> tuple[Integration, bool]:
    """The wizard's start for an admin: (the integration, whether it was created now).

    Starting a setup is a change even when the integration exists, so only those who may change
    the organisation's integrations get an answer."""
    org = config.organisation(org_slug, actor)
    actor.check_change(org.id or 0)
    try:
        return config.integration(org, type_key, actor), False
    except NotFound:
        return wizard.start(org_slug, type_key, actor), True


def integration_view(row: Integration, actor: Actor) -> dict[str, Any]:
    """Status, setup step, settings (never a secret) and the last connection test."""
    actor.check(row.organisation_id)
    with hub_session() as session:
        row = session.get(Integration, row.id) or row
    adapter_type = get_type(row.type_key)
    secret_names = set(adapter_type.config_model.secret_fields())
    org = next(o for o in config.list_organisations(actor) if o.id == row.organisation_id)
    return {
        "id": row.id,
        "organisation": org.slug,
        "type": row.type_key,
        "target": adapter_type.display_name,
        "status": row.status,
        "setup_step": row.setup_step,
        "resume_step": wizard.resume_step(row),
        "steps": list(wizard.steps_for(row.type_key)),
        "settings": {k: v for k, v in row.settings.items() if k not in secret_names},
        "last_connection_test": (
            {"status": row.last_test_status, "detail": row.last_test_detail, "at": row.last_test_at}
            if row.last_test_status
            else None
        ),
        "updated_at": row.updated_at,
    }


def _asking(row: Integration, what: str, ask: Callable[[], T]) -> T:
    """``ask`` the target; one not configured yet, or not answering, says why."""
    try:
        return ask()
    except IntegrationNotConfigured as exc:
        raise TargetUnavailable(str(exc)) from None
    except AdapterError as exc:
        raise TargetUnavailable(
            f"{get_type(row.type_key).display_name} could not be asked for {what}: {exc}"
        ) from None


def reference_codes(row: Integration, actor: Actor) -> list[ReferenceCode]:
    """The target's codes to pick from; a target that cannot be asked says why."""
    return _asking(row, "its codes", lambda: config.reference_codes(row, actor))


def companies(row: Integration, actor: Actor) -> list[Choice]:
    """The target's companies to pick ``company_id`` from (Business Central)."""
    return _asking(row, "its companies", lambda: config.list_companies(row, actor))


def journals(row: Integration, actor: Actor, company_id: str | None = None) -> list[Choice]:
    """A company's journal batches to pick ``journal_id`` from (Business Central)."""
    return _asking(row, "its journals", lambda: config.list_journals(row, actor, company_id))


def read_mapping(document: Any) -> MappingDocument:
    """A mapping document sent as JSON: size-limited, every problem reported at once."""
    check_mapping_size(document)
    try:
        return parse_mapping(document)
    except MappingError as exc:
        raise InvalidInput("the mapping is not valid", exc.problems) from None


def check_mapping_size(document: Any) -> None:
    """Refuse a mapping document sent as JSON that is larger than a mapping file may be."""
    size = len(json.dumps(document, ensure_ascii=False).encode())
    if size > MAX_MAPPING_BYTES:
        raise InvalidInput(f"the mapping is larger than {MAX_MAPPING_BYTES // 1024} KiB")


def check_mapping(row: Integration, document: Any, actor: Actor) -> list[Problem]:
    actor.check(row.organisation_id)
    return config.check_mapping(row, read_mapping(document), actor)


def save_mapping(
    row: Integration, document: Any, actor: Actor, *, accept_warnings: bool
) -> config.SavedMapping:
    actor.check_change(row.organisation_id)
    return config.save_mapping(row, read_mapping(document), actor, accept_warnings=accept_warnings)


def mapping_view(row: Integration, actor: Actor) -> tuple[int | None, MappingDocument]:
    actor.check(row.organisation_id)
    return config.current_mapping(row)


# -- schedule ----------------------------------------------------------------------------------
def schedule_view(
    row: Integration, actor: Actor, *, not_pushed: str | None = None
) -> dict[str, Any]:
    """The stored schedule with its next three runs and a description (none set: defaults)."""
    actor.check(row.organisation_id)
    stored = config.get_schedule(row)
    if stored is None:
        return {
            "configured": False,
            "cron": None,
            "timezone": "Europe/Oslo",
            "enabled": False,
            "description": None,
            "next_runs": [],
            "not_pushed": not_pushed,
        }
    return {
        "configured": True,
        "cron": stored.cron,
        "timezone": stored.timezone,
        "enabled": stored.enabled,
        "description": scheduler.describe(stored),
        "next_runs": scheduler.next_runs_of(stored, 3),
        "not_pushed": not_pushed,
    }


def set_schedule(
    row: Integration,
    actor: Actor,
    *,
    daily: str | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    enabled: bool = True,
) -> dict[str, Any]:
    """Daily at ``HH:MM`` or a cron expression (one of them, or neither to keep the stored
    one); validated before anything is stored."""
    change = scheduler.set_schedule(
        row, actor, daily=daily, cron=cron, timezone=timezone, enabled=enabled
    )
    return schedule_view(row, actor, not_pushed=change.not_pushed)


# -- status ------------------------------------------------------------------------------------
def set_status(row: Integration, status: IntegrationStatus, actor: Actor) -> dict[str, Any]:
    """Activate (finishing the setup wizard when it is still open) or pause; Prefect's copy of
    the schedule follows when Prefect can be reached."""
    actor.check_change(row.organisation_id)
    if status is IntegrationStatus.ACTIVE and row.setup_step is not None:
        setup.activate(row, actor)  # the whole setup, tested again; pushes the schedule
        return integration_view(row, actor)
    config.set_status(row, status, actor)
    with contextlib.suppress(scheduler.PrefectUnavailable):
        scheduler.push(row.id or 0)  # else `integrations serve` pushes it when it starts
    return integration_view(row, actor)


# -- a whole setup ---------------------------------------------------------------------------
def apply_setup(
    org_slug: str, type_key: str, body: dict[str, Any], actor: Actor
) -> setup.SetupOutcome:
    """``PUT .../setup``: the setup file's keys as JSON, through the setup service (a mapping
    is a document, never a path on the hub's disk)."""
    org = config.organisation(org_slug, actor)  # who may, before the body is read
    actor.check_change(org.id or 0)
    mapping = body.get("mapping")
    if isinstance(mapping, dict):
        check_mapping_size(mapping)  # the service reports what else is wrong with it
    request = setup.read_setup(type_key, body, mapping_dir=None)
    return setup.apply(org_slug, type_key, request, actor)


# -- health ------------------------------------------------------------------------------------
def health_view(row: Integration, actor: Actor) -> dict[str, Any]:
    """The health monitor's report plus the run a retry would take (None: nothing to retry)."""
    from integration_hub.services.sync import latest_failed_run

    org = next(o for o in config.list_organisations(actor) if o.id == row.organisation_id)
    report = integration_health(row, org, actor)
    try:
        report["retry_run_id"] = latest_failed_run(row, actor)
    except NotFound:
        report["retry_run_id"] = None
    return report
