"""Integration configuration: the calls the setup wizard, the CLI and the REST API share.

Every call takes an :class:`Actor`; an organisation admin only ever reaches their own
organisation's integrations (tenancy is enforced here, not in routes).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from integration_hub.mappings.spec import (
    MappingDocument,
    MappingError,
    load_template,
    parse_mapping,
)
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
    - ``operator``: reads every organisation's integrations and may retry runs, never changes
      an integration's configuration; adds organisations and decides what each is offered;
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

    def may_change(self, organisation_id: int) -> bool:
        """Whether :meth:`check_change` lets this actor change ``organisation_id``'s
        integrations: pages show a read-only view instead of a form that would be refused."""
        try:
            self.check_change(organisation_id)
        except Forbidden:
            return False
        return True

    @property
    def manages_tenancy(self) -> bool:
        """May add and rename organisations and choose the integration types each is offered
        (services/tenancy.py): the hub's operators and its command line, never an admin."""
        return self.organisation_id is None and self.role in ("local", "operator")

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
    if not actor.manages_tenancy:
        raise Forbidden("only the hub's operators change what an organisation is offered")
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


@dataclass(frozen=True)
class ConfigurationChange:
    """What :func:`check_configuration` found a submitted configuration would store: every
    setting (the whole new ``settings``), the secrets typed anew (plaintext, kept out of the
    repr), the stored secrets kept, the endpoint binding the secrets go with and the endpoint
    fields whose origin moves. Checking and storing are apart so that the setup service can
    check a whole setup, test it, and only then store it in one transaction."""

    settings: dict[str, Any]
    new_secrets: dict[str, str] = field(repr=False)
    kept_secrets: tuple[str, ...]
    endpoint: str | None
    moved: dict[str, tuple[str, str]]
    before: dict[str, Any]

    @property
    def changed(self) -> bool:
        """Whether storing it would change anything (settings or a secret)."""
        return bool(self.new_secrets) or self.settings != self.before


def check_configuration(
    integration_row: Integration,
    values: dict[str, str],
    actor: Actor,
    *,
    base: dict[str, Any] | None = None,
    stored_secrets: set[str] | None = None,
) -> ConfigurationChange:
    """Check settings and secrets without storing anything; every problem at once
    (:class:`InvalidInput`). A blank secret or a submitted mask keeps the stored one.

    ``base`` are the settings the values change (default: the stored ones) and
    ``stored_secrets`` the names of the secrets that exist (default: the vault's for this
    integration): a staged change passes its own."""
    actor.check_change(integration_row.organisation_id)
    model = get_type(integration_row.type_key).config_model
    secret_names = set(model.secret_fields())
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    CredentialVault.from_settings()  # no key ring: say so before anything else
    if stored_secrets is None:
        with hub_session() as session:
            stored_secrets = set(
                CredentialVault.masked(session, integration_id=integration_row.id or 0)
                if integration_row.id is not None
                else {}
            )
    new_secrets = {
        name: value
        for name, value in values.items()
        if name in secret_names and value and not is_mask(value)
    }
    if base is None:
        base = reload(integration_row).settings if integration_row.id is not None else {}
    settings = {**base}
    settings.update({k: v for k, v in values.items() if k not in secret_names and v != ""})
    # Validate the whole shape; a kept secret is stood in for by a placeholder.
    candidate = {**settings, **{n: SecretStr("kept") for n in secret_names if n in stored_secrets}}
    candidate.update(new_secrets)
    try:
        config = model.model_validate(candidate)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise InvalidInput("the configuration is not valid", problems) from None
    adapter_type = get_type(integration_row.type_key)
    moved = _check_endpoints(adapter_type, base, config.settings())
    kept = sorted(n for n in stored_secrets if n in secret_names and n not in new_secrets)
    if moved and kept:
        # A stored secret only ever goes where it was entered for.
        raise InvalidInput(
            f"changing {', '.join(moved)} would send the stored {', '.join(kept)} to another "
            f"address; enter {', '.join(kept)} again in the same form",
            [f"{name}: enter it again with the new address" for name in kept],
        )
    return ConfigurationChange(
        settings=config.settings(),
        new_secrets=new_secrets,
        kept_secrets=tuple(kept),
        endpoint=binding(model, config.settings()),
        moved=moved,
        before=dict(base),
    )


def apply_configuration(
    session: Session, integration_row: Integration, change: ConfigurationChange, actor: Actor
) -> None:
    """Store a checked configuration in ``session`` (the caller's transaction); the caller
    forgets the cached reference codes once it is committed."""
    vault = CredentialVault.from_settings()
    row = session.get(Integration, integration_row.id)
    assert row is not None
    if change.new_secrets or change.settings != row.settings:
        # The last connection test was of other credentials: it no longer says anything.
        row.last_test_status = row.last_test_detail = row.last_test_at = None
    row.settings = change.settings
    row.updated_at = utcnow()
    session.add(row)
    store_secrets(session, vault, row, change.new_secrets, actor, change.endpoint)
    audit(
        session,
        actor,
        "integration.configured",
        row,
        settings=sorted(change.settings),
        secrets_replaced=sorted(change.new_secrets),
        endpoints_changed={
            name: {"from": old, "to": new} for name, (old, new) in change.moved.items()
        },
    )


def save_configuration(integration_row: Integration, values: dict[str, str], actor: Actor) -> None:
    """Store settings and secrets. A blank secret or a submitted mask keeps the stored one."""
    change = check_configuration(integration_row, values, actor)
    with hub_session() as session:
        apply_configuration(session, integration_row, change, actor)
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
        default = None if info.is_required() else info.default  # not "PydanticUndefined"
        value = masks.get(name, "") if secret else integration_row.settings.get(name, default)
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
        remember_connection_test(session, row, result, actor)
    return result


def remember_connection_test(
    session: Session,
    row: Integration,
    result: ConnectionResult,
    actor: Actor,
    *,
    audited: Integration | None = None,
    **details: Any,
) -> None:
    """Keep a connection test's answer on ``row`` (for the health monitor and the wizard) and
    audit it against ``audited`` (the integration itself, also when ``row`` is its staged
    change)."""
    row.last_test_status = result.status.value
    row.last_test_detail = result.detail[:500]
    row.last_test_at = utcnow()
    session.add(row)
    audit(
        session,
        actor,
        "integration.connection_tested",
        audited or row,
        status=result.status.value,
        elapsed_ms=result.elapsed_ms,
        **details,
    )


def store_secrets(
    session: Session,
    vault: CredentialVault,
    row: Integration,
    secrets: dict[str, str],
    actor: Actor,
    endpoint: str | None,
) -> None:
    """Encrypt ``secrets`` as credentials of ``row``, bound to ``endpoint``."""
    for name, value in secrets.items():
        vault.store(
            session,
            organisation_id=row.organisation_id,
            integration_id=row.id or 0,
            field=name,
            plaintext=value,
            actor=actor.name,
            endpoint=endpoint,
        )


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
    codes: list[ReferenceCode] | None
    error = None
    try:
        codes = reference_codes(integration_row, actor)
    except Exception as exc:  # unreachable target: the check says so, saving still possible
        codes, error = None, _short_error(exc)
    return mapping_problems(integration_row.type_key, mapping, codes, error)


def mapping_problems(
    type_key: str,
    mapping: MappingDocument,
    codes: list[ReferenceCode] | None,
    error: str | None = None,
) -> list[Problem]:
    """Every problem with ``mapping`` for a type, against ``codes`` (None: not checked,
    ``error`` says why): what :func:`check_mapping` asks of the stored configuration's target,
    and the setup service of a configuration not stored yet."""
    adapter_type = get_type(type_key)
    return validate_mapping(
        mapping,
        target_key=adapter_type.key,
        target_name=adapter_type.display_name,
        target_fields=getattr(adapter_type, "target_fields", ()),
        reference_codes=codes,
        reference_label=getattr(adapter_type, "reference_label", "account"),
        reference_error=error,
    )


def _short_error(exc: Exception) -> str:
    from integration_hub.adapters.base import AdapterError

    if isinstance(exc, AdapterError | IntegrationNotConfigured):
        return str(exc)
    return type(exc).__name__


@dataclass(frozen=True)
class SavedMapping:
    """What :func:`save_mapping` did. ``version`` is the mapping's current version: a new one,
    or, when ``unchanged``, the saved one the document equals (nothing was written). Unpacks as
    ``version, problems`` for the callers that need no more."""

    version: int
    problems: list[Problem]
    unchanged: bool = False

    def __iter__(self) -> Iterator[Any]:
        return iter((self.version, self.problems))


def unchanged_mapping_version(
    session: Session, integration_row: Integration, document: MappingDocument
) -> int | None:
    """The latest saved version when ``document`` is the same mapping, else None. Compared
    normalised (both parsed and dumped as stored), so comments, quoting, key order and YAML
    against JSON make no difference: saving the same mapping again is not a change."""
    previous = latest_mapping(session, integration_row.id or 0)
    if previous is None:
        return None
    try:
        stored = parse_mapping(previous.document)
    except MappingError:  # written by an older hub under other rules: a new version replaces it
        return None
    as_stored = {"mode": "json", "exclude_none": True}
    if stored.model_dump(**as_stored) != document.model_dump(**as_stored):
        return None
    return previous.version


def save_mapping(
    integration_row: Integration,
    mapping: MappingDocument | dict[str, Any] | str,
    actor: Actor,
    *,
    accept_warnings: bool = False,
) -> SavedMapping:
    """Save a new mapping version. Errors refuse; warnings need ``accept_warnings``. A mapping
    equal to the saved version is not saved again (``unchanged``, with its problems for the
    caller to show; its warnings were acknowledged when it was saved)."""
    actor.check_change(integration_row.organisation_id)
    document = mapping if isinstance(mapping, MappingDocument) else parse_mapping(mapping)
    problems = check_mapping(integration_row, document, actor)
    if not has_errors(problems):
        with hub_session() as session:
            same = unchanged_mapping_version(session, integration_row, document)
        if same is not None:
            return SavedMapping(same, problems, unchanged=True)
    warnings = refuse_mapping_problems(problems, accept_warnings=accept_warnings)
    with hub_session() as session:
        version = add_mapping_version(session, integration_row, document, warnings, actor)
    return SavedMapping(version, problems)


def refuse_mapping_problems(problems: list[Problem], *, accept_warnings: bool) -> list[str]:
    """Errors refuse (:class:`InvalidInput`), warnings unless accepted
    (:class:`WarningsNotAcknowledged`); returns the warnings that are acknowledged."""
    if has_errors(problems):
        raise InvalidInput("the mapping has errors", [str(p) for p in problems])
    warnings = warnings_of(problems)
    if warnings and not accept_warnings:
        raise WarningsNotAcknowledged(warnings)
    return warnings


def add_mapping_version(
    session: Session,
    integration_row: Integration,
    document: MappingDocument,
    warnings: list[str],
    actor: Actor,
) -> int:
    """Store a checked mapping as the next version in ``session`` (the caller's
    transaction); returns the version."""
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
    return version


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
        return store_schedule(session, integration_row, cron, timezone, enabled, actor)


def store_schedule(
    session: Session,
    integration_row: Integration,
    cron: str,
    timezone: str,
    enabled: bool,
    actor: Actor,
) -> SyncSchedule:
    """Store a checked schedule in ``session`` (the caller's transaction)."""
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
    wanted = check_exclusions(integration_row, categories)
    with hub_session() as session:
        store_exclusions(session, integration_row, wanted, actor)
    return wanted


def check_exclusions(integration_row: Integration, categories: list[str]) -> list[str]:
    """The categories, sorted, if the type offers every one (else :class:`InvalidInput`)."""
    choices = exclusion_choices(integration_row)
    unknown = sorted(set(categories) - set(choices))
    if unknown:
        raise InvalidInput(
            f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
            f"(choose from {', '.join(choices)})"
        )
    return sorted(set(categories))


def store_exclusions(
    session: Session, integration_row: Integration, categories: list[str], actor: Actor
) -> None:
    """Replace the excluded categories in ``session`` (the caller's transaction) with checked
    ones."""
    wanted = set(categories)
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
