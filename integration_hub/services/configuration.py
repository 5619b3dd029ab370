"""Integration configuration: the calls the setup wizard, the CLI and the REST API share.

Every call takes an :class:`Actor`; an organisation admin only ever reaches their own
organisation's integrations (tenancy is enforced here, not in routes).
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr, ValidationError
from sqlmodel import Session, select

from integration_hub.adapters.base import (
    CONNECTION_TEST_DEADLINE_S,
    Adapter,
    Choice,
    ConnectionResult,
    RecordAdapter,
    ReferenceCode,
)
from integration_hub.adapters.endpoints import (
    EndpointRefused,
    binding,
    check_endpoint,
    endpoint_fields,
    endpoint_value,
    moved_endpoints,
)
from integration_hub.adapters.factory import (
    IntegrationNotConfigured,
    build_adapter,
    cached_reference_codes,
    forget_reference_codes,
)
from integration_hub.adapters.registry import (
    UnknownIntegrationType,
    feature_flag,
    get_type,
    offered_types,
)
from integration_hub.db import app_session, hub_session
from integration_hub.mappings.spec import MappingDocument, load_template, parse_mapping
from integration_hub.mappings.validator import Problem, has_errors, validate_mapping, warnings_of
from integration_hub.models import (
    AuditEntry,
    Exclusion,
    FeatureFlag,
    FieldMapping,
    Integration,
    IntegrationStatus,
    Organisation,
    SyncSchedule,
    utcnow,
)
from integration_hub.services.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    WarningsNotAcknowledged,
)
from integration_hub.tasks.context import latest_mapping
from integration_hub.vault import CredentialVault, is_mask
from integration_hub.vault.credentials import uses_logged_only


@dataclass(frozen=True)
class Actor:
    """Who is acting, and so what they may see and change.

    - ``admin``: one organisation's admin (``organisation_id``): reads and changes only that
      organisation's integrations;
    - ``operator``: reads every organisation's integrations and may retry runs, changes nothing;
    - ``local``: someone at the hub's own command line, who holds the vault key anyway.
    """

    name: str
    organisation_id: int | None = None
    role: str = "local"

    def check(self, organisation_id: int) -> None:
        """May this actor see ``organisation_id``'s integrations?"""
        if self.organisation_id is not None and self.organisation_id != organisation_id:
            raise Forbidden("you can only manage your own organisation's integrations")

    def check_change(self, organisation_id: int) -> None:
        """May this actor change ``organisation_id``'s integrations?"""
        self.check(organisation_id)
        if self.role == "operator":
            raise Forbidden("operators can read and retry runs, not change configuration")

    @property
    def is_local(self) -> bool:
        return self.role == "local" and self.organisation_id is None


OPERATOR = Actor("operator")
"""The hub's command line (role ``local``)."""


def audit(
    session: Session,
    actor: Actor,
    action: str,
    integration: Integration | None = None,
    organisation_id: int | None = None,
    **details: Any,
) -> None:
    session.add(
        AuditEntry(
            actor=actor.name,
            organisation_id=integration.organisation_id if integration else organisation_id,
            integration_id=integration.id if integration else None,
            action=action,
            details=details,
        )
    )


# -- organisations and what they are offered ---------------------------------------------------
def list_organisations(actor: Actor = OPERATOR) -> list[Organisation]:
    with app_session() as session:
        organisations = session.exec(select(Organisation).order_by(Organisation.slug)).all()
    return [o for o in organisations if actor.organisation_id in (None, o.id)]


def organisation(slug: str, actor: Actor = OPERATOR) -> Organisation:
    with app_session() as session:
        found = session.exec(select(Organisation).where(Organisation.slug == slug)).first()
    if found is None:
        known = ", ".join(o.slug for o in list_organisations(actor)) or "none"
        raise NotFound(f"no organisation {slug!r} (known: {known})")
    actor.check(found.id or 0)
    return found


def enabled_flags(organisation_id: int) -> set[str]:
    with hub_session() as session:
        return set(
            session.exec(
                select(FeatureFlag.flag).where(
                    FeatureFlag.organisation_id == organisation_id, FeatureFlag.enabled
                )
            ).all()
        )


def set_feature_flag(organisation_id: int, flag: str, enabled: bool, actor: Actor) -> None:
    if not actor.is_local:
        raise Forbidden("only the hub's operators at its command line change what is offered")
    with hub_session() as session:
        row = session.exec(
            select(FeatureFlag).where(
                FeatureFlag.organisation_id == organisation_id, FeatureFlag.flag == flag
            )
        ).first() or FeatureFlag(organisation_id=organisation_id, flag=flag)
        row.enabled = enabled
        session.add(row)
        audit(
            session,
            actor,
            "feature_flag.set",
            organisation_id=organisation_id,
            flag=flag,
            enabled=enabled,
        )


def available_types(org: Organisation) -> list[type[Adapter]]:
    return offered_types(enabled_flags(org.id or 0))


# -- integrations ------------------------------------------------------------------------------
def integration_type(type_key: str) -> type[Adapter]:
    """The adapter type of ``type_key``; an unknown key is a NotFound people can read."""
    try:
        return get_type(type_key)
    except UnknownIntegrationType as exc:
        raise NotFound(str(exc)) from None


def integration(
    org: Organisation, type_key: str, actor: Actor, *, create: bool = False
) -> Integration:
    """The organisation's integration of a type the feature flags offer it."""
    if create:
        actor.check_change(org.id or 0)
    else:
        actor.check(org.id or 0)
    adapter_type = integration_type(type_key)
    if feature_flag(type_key) not in enabled_flags(org.id or 0):
        raise Forbidden(f"{adapter_type.display_name} is not offered to {org.name}")
    with hub_session() as session:
        row = session.exec(
            select(Integration).where(
                Integration.organisation_id == org.id, Integration.type_key == type_key
            )
        ).first()
        if row is None:
            if not create:
                raise NotFound(
                    f"{org.slug} has no {adapter_type.display_name} integration yet; "
                    f"run `integrations setup {org.slug} {type_key}`"
                )
            row = Integration(organisation_id=org.id or 0, type_key=type_key)
            session.add(row)
            session.flush()
            audit(session, actor, "integration.created", row)
        return row


def reload(integration_row: Integration) -> Integration:
    """The integration as stored now (a save or a connection test since it was read)."""
    with hub_session() as session:
        stored = session.get(Integration, integration_row.id)
        if stored is None:
            raise NotFound(f"integration {integration_row.id} no longer exists")
        session.expunge(stored)
    return stored


def save_configuration(integration_row: Integration, values: dict[str, str], actor: Actor) -> None:
    """Store settings and secrets. A blank secret or a submitted mask keeps the stored one."""
    actor.check_change(integration_row.organisation_id)
    model = get_type(integration_row.type_key).config_model
    secret_names = set(model.secret_fields())
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    vault = CredentialVault.from_settings()
    with hub_session() as session:
        stored = vault.masked(session, integration_id=integration_row.id or 0)
    new_secrets = {
        name: value
        for name, value in values.items()
        if name in secret_names and value and not is_mask(value)
    }
    settings = {**integration_row.settings}
    settings.update({k: v for k, v in values.items() if k not in secret_names and v != ""})
    # Validate the whole shape; a kept secret is stood in for by a placeholder.
    candidate = {**settings, **{n: SecretStr("kept") for n in secret_names if n in stored}}
    candidate.update(new_secrets)
    try:
        config = model.model_validate(candidate)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise InvalidInput("the configuration is not valid", problems) from None
    adapter_type = get_type(integration_row.type_key)
    moved = _check_endpoints(adapter_type, reload(integration_row).settings, config.settings())
    kept = sorted(name for name in stored if name in secret_names and name not in new_secrets)
    if moved and kept:
        # A stored secret only ever goes where it was entered for.
        raise InvalidInput(
            f"changing {', '.join(moved)} would send the stored {', '.join(kept)} to another "
            f"address; enter {', '.join(kept)} again in the same form",
            [f"{name}: enter it again with the new address" for name in kept],
        )
    endpoint = binding(model, config.settings())
    with hub_session() as session:
        row = session.get(Integration, integration_row.id)
        assert row is not None
        if new_secrets or config.settings() != row.settings:
            # The last connection test was of other credentials: it no longer says anything.
            row.last_test_status = row.last_test_detail = row.last_test_at = None
        row.settings = config.settings()
        row.updated_at = utcnow()
        session.add(row)
        for name, value in new_secrets.items():
            vault.store(
                session,
                organisation_id=row.organisation_id,
                integration_id=row.id or 0,
                field=name,
                plaintext=value,
                actor=actor.name,
                endpoint=endpoint,
            )
        audit(
            session,
            actor,
            "integration.configured",
            row,
            settings=sorted(config.settings()),
            secrets_replaced=sorted(new_secrets),
            endpoints_changed={
                name: {"from": old, "to": new} for name, (old, new) in moved.items()
            },
        )
    forget_reference_codes(integration_row.id)


def _check_endpoints(
    adapter_type: type[Adapter], before: dict[str, Any], after: dict[str, Any]
) -> dict[str, tuple[str, str]]:
    """Refuse endpoints the hub may not send to; returns the endpoint fields whose origin
    changes, with the old and new host (the stored secrets must then be entered again)."""
    model = adapter_type.config_model
    problems = []
    for name in endpoint_fields(model):
        try:
            check_endpoint(endpoint_value(model, after, name), adapter_type.vendor_hosts, name)
        except EndpointRefused as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise InvalidInput("the configuration is not valid", problems)
    return moved_endpoints(model, before, after)


def credential_form(integration_row: Integration, actor: Actor) -> list[dict[str, Any]]:
    """The credential form's fields: settings shown, secrets only as masks."""
    actor.check(integration_row.organisation_id)
    model = get_type(integration_row.type_key).config_model
    with hub_session() as session:
        if integration_row.id is not None:  # None: the wizard's draft, not stored yet
            integration_row = session.get(Integration, integration_row.id) or integration_row
        masks = CredentialVault.from_settings().masked(
            session, integration_id=integration_row.id or 0
        )
    fields = []
    for name, info in model.model_fields.items():
        secret = name in model.secret_fields()
        value = masks.get(name, "") if secret else integration_row.settings.get(name, info.default)
        label, help_text = model.field_text(name)
        fields.append(
            {
                "name": name,
                "label": label,
                "help": help_text,
                "secret": secret,
                "value": "" if value is None else str(value),
                "set": name in masks if secret else value is not None,
                "required": info.is_required(),
            }
        )
    return fields


def open_adapter(integration_row: Integration, actor: Actor, purpose: str) -> Adapter:
    actor.check(integration_row.organisation_id)
    with hub_session() as session:
        row = session.get(Integration, integration_row.id)
        assert row is not None
        return build_adapter(session, row, purpose=purpose, actor=actor.name)


def test_connection(integration_row: Integration, actor: Actor) -> ConnectionResult:
    """Probe the target (at most 10 s) and remember the answer for the health monitor."""
    from integration_hub.adapters.base import ConnectionStatus

    try:
        adapter = open_adapter(integration_row, actor, "connection test")
        result = adapter.check_connection()
    except IntegrationNotConfigured as exc:
        result = ConnectionResult(ConnectionStatus.BAD_CREDENTIALS, str(exc))
    with hub_session() as session:
        row = session.get(Integration, integration_row.id)
        assert row is not None
        row.last_test_status = result.status.value
        row.last_test_detail = result.detail[:500]
        row.last_test_at = utcnow()
        session.add(row)
        audit(
            session,
            actor,
            "integration.connection_tested",
            row,
            status=result.status.value,
            elapsed_ms=result.elapsed_ms,
        )
    return result


def reference_codes(integration_row: Integration, actor: Actor) -> list[ReferenceCode]:
    """The target's codes (accounts, dimensions) to show and check a mapping against. A read:
    the credentials' use is logged, not written to the audit table, so that viewing the
    mapping page or ``GET .../reference-codes`` changes nothing. A type that writes no records
    (Bufdir) has none: :class:`NotFound`."""
    adapter_type = integration_type(integration_row.type_key)
    if not issubclass(adapter_type, RecordAdapter):
        raise NotFound(f"{adapter_type.display_name} has no codes to pick from")
    with uses_logged_only():
        adapter = open_adapter(integration_row, actor, "read reference codes")
    assert isinstance(adapter, RecordAdapter)
    return cached_reference_codes(adapter, integration_row)


# -- what the target offers to choose (Business Central: companies, journals) -------------------
def list_companies(integration_row: Integration, actor: Actor) -> list[Choice]:
    """The target's companies, so an admin picks ``company_id`` from a list once the
    credentials work instead of pasting a GUID. A read: the credentials' use is logged only."""
    return field_choices(integration_row, actor, "company_id")


def list_journals(
    integration_row: Integration, actor: Actor, company_id: str | None = None
) -> list[Choice]:
    """A company's journal batches (the saved company unless ``company_id`` names one), each
    with why the hub cannot use it as it is, so an admin picks ``journal_id``."""
    return field_choices(integration_row, actor, "journal_id", within=company_id or None)


def field_choices(
    integration_row: Integration, actor: Actor, field: str, *, within: str | None = None
) -> list[Choice]:
    """What the target offers for configuration field ``field`` (``within``: the choice it
    depends on, e.g. the company of a journal); a type whose target offers nothing for it
    (Xledger, Bufdir) answers an empty list, its credentials never opened. A read: the
    credentials' use is logged, not audited."""
    actor.check(integration_row.organisation_id)
    if field not in integration_type(integration_row.type_key).choice_fields:
        return []
    with uses_logged_only():
        adapter = open_adapter(integration_row, actor, f"list choices for {field}")
    with adapter:
        try:
            return adapter.choices(field, within)
        except ValueError as exc:  # a company id that is not a GUID
            raise InvalidInput(str(exc)) from None


@dataclass(frozen=True)
class Offer:
    """What the target offers for one configuration field, or why it could not be asked."""

    choices: tuple[Choice, ...] = ()
    problem: str = ""


def offered_choices(
    integration_row: Integration, actor: Actor, *, deadline_s: float = CONNECTION_TEST_DEADLINE_S
) -> dict[str, Offer]:
    """For a setup page: each of the type's choice fields with what the target offers, all
    within ``deadline_s`` (as a connection test), never raising: a target unreachable or slow
    is a ``problem`` shown beside the field, which can still be typed; an integration without
    its credentials yet offers nothing."""
    actor.check(integration_row.organisation_id)
    fields = integration_type(integration_row.type_key).choice_fields
    if not fields or integration_row.id is None:
        return {}
    try:
        with uses_logged_only():
            adapter = open_adapter(integration_row, actor, "list choices")
    except IntegrationNotConfigured:  # nothing to ask with yet: the fields' help says so
        return {}
    offers: dict[str, Offer] = {}
    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        for name in fields:
            left = deadline_s - (time.monotonic() - started)
            future = pool.submit(adapter.choices, name)
            try:
                offers[name] = Offer(choices=tuple(future.result(timeout=max(0.1, left))))
            except concurrent.futures.TimeoutError:
                offers[name] = Offer(problem=f"{adapter.display_name} did not answer in time")
            except Exception as exc:  # the page still works: the field can be typed
                offers[name] = Offer(problem=_short_error(exc))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        adapter.close()
    return offers


# -- field mappings ----------------------------------------------------------------------------
def current_mapping(integration_row: Integration) -> tuple[int | None, MappingDocument]:
    """The saved mapping (version, document), or the type's template (None, document)."""
    with hub_session() as session:
        stored = latest_mapping(session, integration_row.id or 0)
    if stored is not None:
        return stored.version, parse_mapping(stored.document)
    template = get_type(integration_row.type_key).default_mapping
    if template is None:
        raise NotFound(f"{integration_row.type_key} has no mapping template")
    return None, load_template(template)


def check_mapping(
    integration_row: Integration, mapping: MappingDocument, actor: Actor
) -> list[Problem]:
    """Every problem with ``mapping``, checked against the target's live codes when reachable."""
    adapter_type = get_type(integration_row.type_key)
    codes: list[ReferenceCode] | None
    error = None
    try:
        codes = reference_codes(integration_row, actor)
    except Exception as exc:  # unreachable target: the check says so, saving still possible
        codes, error = None, _short_error(exc)
    return validate_mapping(
        mapping,
        target_key=adapter_type.key,
        target_name=adapter_type.display_name,
        target_fields=adapter_type.target_fields,
        reference_codes=codes,
        reference_label=adapter_type.reference_label,
        reference_error=error,
    )


def _short_error(exc: Exception) -> str:
    from integration_hub.adapters.base import AdapterError

    if isinstance(exc, AdapterError | IntegrationNotConfigured):
        return str(exc)
    return type(exc).__name__


def save_mapping(
    integration_row: Integration,
    mapping: MappingDocument | dict[str, Any] | str,
    actor: Actor,
    *,
    accept_warnings: bool = False,
) -> tuple[int, list[Problem]]:
    """Save a new mapping version. Errors refuse; warnings need ``accept_warnings``."""
    actor.check_change(integration_row.organisation_id)
    document = mapping if isinstance(mapping, MappingDocument) else parse_mapping(mapping)
    problems = check_mapping(integration_row, document, actor)
    if has_errors(problems):
        raise InvalidInput("the mapping has errors", [str(p) for p in problems])
    warnings = warnings_of(problems)
    if warnings and not accept_warnings:
        raise WarningsNotAcknowledged(warnings)
    with hub_session() as session:
        previous = latest_mapping(session, integration_row.id or 0)
        version = (previous.version if previous else 0) + 1
        session.add(
            FieldMapping(
                integration_id=integration_row.id or 0,
                version=version,
                document=document.model_dump(mode="json", exclude_none=True),
                acknowledged_warnings=warnings,
                created_by=actor.name,
            )
        )
        audit(
            session,
            actor,
            "mapping.saved",
            integration_row,
            version=version,
            acknowledged_warnings=warnings,
        )
    return version, problems


# -- schedule, exclusions, status --------------------------------------------------------------
def parse_daily(hhmm: str) -> str:
    """``"02:00"`` -> the cron expression ``"0 2 * * *"``."""
    try:
        hours, minutes = (int(part) for part in hhmm.split(":"))
    except ValueError:
        raise InvalidInput(f"{hhmm!r} is not a time of day like 02:00") from None
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise InvalidInput(f"{hhmm!r} is not a time of day like 02:00")
    return f"{minutes} {hours} * * *"


def check_schedulable(integration_row: Integration) -> None:
    """Refuse a schedule for a type that is not exported on one (Bufdir: per closed period)."""
    adapter_type = integration_type(integration_row.type_key)
    if not adapter_type.runs_on_schedule:
        raise InvalidInput(
            f"{adapter_type.display_name} is reported once per closed period, not on a "
            "schedule: send a period's report with `integrations report`"
        )


def validate_schedule(cron: str, timezone: str) -> None:
    from cronsim import CronSim, CronSimError

    problems = []
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"unknown time zone {timezone!r} (use an IANA name like Europe/Oslo)")
        zone = None
    try:
        CronSim(cron, datetime.now(zone))
    except (CronSimError, ValueError) as exc:
        problems.append(f"{cron!r} is not a valid cron expression: {exc}")
    if problems:
        raise InvalidInput("; ".join(problems), problems)


def set_schedule(
    integration_row: Integration, cron: str, timezone: str, enabled: bool, actor: Actor
) -> SyncSchedule:
    actor.check_change(integration_row.organisation_id)
    check_schedulable(integration_row)
    validate_schedule(cron, timezone)
    with hub_session() as session:
        row = session.exec(
            select(SyncSchedule).where(SyncSchedule.integration_id == integration_row.id)
        ).first() or SyncSchedule(integration_id=integration_row.id or 0, cron=cron)
        row.cron, row.timezone, row.enabled, row.updated_at = cron, timezone, enabled, utcnow()
        session.add(row)
        audit(
            session,
            actor,
            "schedule.set",
            integration_row,
            cron=cron,
            timezone=timezone,
            enabled=enabled,
        )
        return row


def get_schedule(integration_row: Integration) -> SyncSchedule | None:
    with hub_session() as session:
        return session.exec(
            select(SyncSchedule).where(SyncSchedule.integration_id == integration_row.id)
        ).first()


def exclusion_choices(integration_row: Integration) -> list[str]:
    return list(get_type(integration_row.type_key).exclusion_choices)


def list_exclusions(integration_row: Integration) -> list[str]:
    with hub_session() as session:
        return sorted(
            session.exec(
                select(Exclusion.category).where(Exclusion.integration_id == integration_row.id)
            ).all()
        )


def set_exclusions(integration_row: Integration, categories: list[str], actor: Actor) -> list[str]:
    """Replace the excluded categories (unknown ones are refused, nothing changed)."""
    actor.check_change(integration_row.organisation_id)
    choices = exclusion_choices(integration_row)
    unknown = sorted(set(categories) - set(choices))
    if unknown:
        raise InvalidInput(
            f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
            f"(choose from {', '.join(choices)})"
        )
    wanted = set(categories)
    with hub_session() as session:
        existing = {
            e.category: e
            for e in session.exec(
                select(Exclusion).where(Exclusion.integration_id == integration_row.id)
            ).all()
        }
        for category in set(existing) - wanted:
            session.delete(existing[category])
        for category in wanted - set(existing):
            session.add(Exclusion(integration_id=integration_row.id or 0, category=category))
        audit(session, actor, "exclusions.set", integration_row, categories=sorted(wanted))
    return sorted(wanted)


def set_status(integration_row: Integration, status: IntegrationStatus, actor: Actor) -> None:
    actor.check_change(integration_row.organisation_id)
    with hub_session() as session:
        row = session.get(Integration, integration_row.id)
        assert row is not None
        if (
            status is IntegrationStatus.ACTIVE
            and get_type(row.type_key).default_mapping is not None  # a type that maps fields
            and latest_mapping(session, row.id or 0) is None
        ):
            raise InvalidInput("save a field mapping before activating the integration")
        row.status = status.value
        row.updated_at = utcnow()
        session.add(row)
        audit(session, actor, "integration.status", row, status=status.value)
