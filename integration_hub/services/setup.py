"""Setting an integration up, as one whole: validated whole, tested, then applied whole.

Every way in uses this module: ``integrations setup`` (from a file and interactively), the demo,
the web wizard (a draft's activation, and a staged change of a finished setup) and the REST API
(``PUT .../setup``, credentials of a live integration, activation). A setup is one typed
:class:`SetupRequest` (settings and secrets, mapping, schedule, excluded categories, activate
or not), and :func:`apply` does, in this order:

1. **check everything** without storing anything: unknown keys (with "did you mean"), the
   configuration's shape and endpoints (:func:`configuration.check_configuration`), the
   mapping's own errors, the schedule (:func:`scheduler.planned_schedule`), the categories
   (:func:`configuration.check_exclusions`); every problem at once, one
   :class:`InvalidInput`;
2. **test the connection with the new settings and secrets** before anything is stored
   (:func:`factory.build_candidate_adapter`); a failed test is :class:`ConnectionTestFailed`
   and the integration stays exactly as it was (a working token is never replaced by one that
   does not work);
3. check the mapping against the target's live codes through that same connection (errors
   refuse; warnings need ``accept_warnings``);
4. **store it all in one database transaction** (configuration, connection test result,
   mapping version, schedule, exclusions, status, audit);
5. push the schedule to Prefect (:func:`scheduler.push`), as the scheduler's own screen does.

The secrets rules stay those of the configuration service: a blank secret or a mask keeps the
stored one, and a stored secret only goes to the endpoint it was entered for.

**Staged changes.** A finished setup (active or paused) changed in the web wizard is not
changed step by step: each step stores its part in a *staged change*, and the live
configuration keeps running until the staged one passes its connection test and the admin
confirms it on the review step (:func:`confirm_staged`, which is :func:`apply` of the staged
whole). The staged change is kept in a draft row of ``hub_integrations`` with the reserved
type ``_staged.<type>`` (as the alert channel is kept in the reserved ``_alerts`` row): its
``settings`` JSON holds the staged settings, mapping document, schedule and categories, and
the staged secrets are that row's own credentials in the vault, encrypted and bound to the
staged endpoint like any other. So no migration is needed, a half-made change survives a
restart, a new secret is never kept in plain text anywhere (not in a session, not in JSON),
and listings skip the row (its type is not an adapter type). Confirming moves the staged
secrets to the live integration and deletes the row in the same transaction.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from integration_hub.adapters.base import (
    Adapter,
    ConnectionResult,
    ConnectionStatus,
    RecordAdapter,
    ReferenceCode,
)
from integration_hub.adapters.endpoints import binding
from integration_hub.adapters.factory import (
    IntegrationNotConfigured,
    build_candidate_adapter,
    forget_reference_codes,
)
from integration_hub.db import hub_session
from integration_hub.mappings.spec import (
    MappingDocument,
    MappingError,
    load_mapping_file,
    load_template,
    parse_mapping,
)
from integration_hub.mappings.validator import Problem, Severity, has_errors, warnings_of
from integration_hub.models import (
    Credential,
    Integration,
    IntegrationStatus,
    Organisation,
    SyncSchedule,
    utcnow,
)
from integration_hub.services import configuration as config
from integration_hub.services import scheduler, wizard
from integration_hub.services.configuration import (
    Actor,
    ConfigurationChange,
    audit,
    remember_connection_test,
    store_secrets,
)
from integration_hub.services.errors import Forbidden, InvalidInput, NotFound, ServiceError
from integration_hub.services.mapping_editor import SaveOutcome
from integration_hub.tasks.context import latest_mapping
from integration_hub.vault import CredentialVault

SETUP_KEYS = ("credentials", "mapping", "accept_warnings", "schedule", "exclusions", "activate")
"""A setup file's keys besides the type's own settings (``base_url``, ``client_id``, ...)."""
SCHEDULE_KEYS = ("daily", "cron", "timezone", "enabled")
STAGED_PREFIX = "_staged."
"""The reserved type of the row that holds an integration's staged change."""
SECRET_REPLACED = "replaced"


class ConnectionTestFailed(ServiceError):
    """The connection test of a setup failed; nothing was stored (``result`` says why)."""

    def __init__(self, target: str, result: ConnectionResult) -> None:
        super().__init__(
            f"the connection test with the new settings failed ({result.status.value}): "
            f"{result.detail}; nothing was changed"
        )
        self.target = target
        self.result = result


# -- the request -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleRequest:
    """Daily at ``HH:MM`` or a cron expression (one of them), in a time zone; None keeps the
    stored value (as :func:`scheduler.set_schedule`)."""

    daily: str | None = None
    cron: str | None = None
    timezone: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class SetupRequest:
    """One whole setup. ``values`` are settings and secrets by field name (a blank secret or a
    mask keeps the stored one); ``mapping``, ``schedule`` and ``exclusions`` None keep what is
    stored; ``activate`` makes the integration active once everything is stored."""

    values: Mapping[str, Any] = field(default_factory=dict, repr=False)
    mapping: MappingDocument | None = None
    accept_warnings: bool = False
    schedule: ScheduleRequest | None = None
    exclusions: tuple[str, ...] | None = None
    activate: bool = True
    problems: tuple[str, ...] = ()
    """What :func:`read_setup` could not read; :func:`apply` reports them with the rest."""


def unknown_key(path: str, key: object, known: Collection[str]) -> str:
    """``"schedule.dayly: unknown key; did you mean 'daily'?"``"""
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    return f"{path}{key}: unknown key; {hint}"


def read_setup(
    type_key: str,
    answers: Mapping[str, Any],
    *,
    secret: Callable[[str, Any], str] | None = None,
    mapping_dir: Path | None = None,
) -> SetupRequest:
    """A setup file (or the API's JSON body) as a :class:`SetupRequest`. What cannot be read
    (unknown keys, wrong types, an unset variable, a mapping file's errors) is kept in its
    ``problems``, which :func:`apply` reports together with every other problem of the setup.

    ``secret(name, value)`` turns a ``credentials`` value into the secret (the CLI reads
    ``${VARIABLE}`` from the environment and ``-`` from stdin) and may raise
    :class:`InvalidInput`; ``mapping_dir`` allows a mapping file's path (relative to it), which
    only the command line may name: the API takes the document itself.
    """
    adapter_type = config.integration_type(type_key)
    model = adapter_type.config_model
    settings_names = set(model.setting_fields())
    secret_names = set(model.secret_fields())
    problems: list[str] = []
    values: dict[str, Any] = {}

    for key in answers:
        if key in secret_names:
            problems.append(
                f"{key}: a secret goes under credentials: (e.g. {key}: ${{VARIABLE}}), "
                "so that it is not written in the file"
            )
        elif key not in settings_names and key not in SETUP_KEYS:
            problems.append(unknown_key("", key, sorted(settings_names | set(SETUP_KEYS))))
    for name in sorted(settings_names & set(answers)):
        if answers[name] is not None:
            values[name] = str(answers[name])

    credentials = answers.get("credentials") or {}
    if not isinstance(credentials, Mapping):
        problems.append("credentials: must be a mapping of field: value")
        credentials = {}
    for name, value in credentials.items():
        if name not in model.model_fields:
            problems.append(unknown_key("credentials.", name, sorted(model.model_fields)))
            continue
        try:
            values[name] = secret(name, value) if secret else ("" if value is None else str(value))
        except InvalidInput as exc:
            problems.extend(exc.problems)
            values[name] = str(value)  # "${VARIABLE}" stands in: not reported twice, never used

    mapping: MappingDocument | None = None
    if "mapping" in answers and answers["mapping"] is not None:
        try:
            mapping = _read_mapping(adapter_type, answers["mapping"], mapping_dir)
        except MappingError as exc:
            problems.extend(f"mapping: {p}" for p in exc.problems)
        except InvalidInput as exc:
            problems.extend(exc.problems)

    schedule = None
    given = answers.get("schedule")
    if given is not None:
        if not isinstance(given, Mapping):
            problems.append("schedule: must be {daily: 'HH:MM'} or {cron: '...'}, with timezone")
        else:
            problems += [
                unknown_key("schedule.", k, SCHEDULE_KEYS) for k in given if k not in SCHEDULE_KEYS
            ]
            enabled = given.get("enabled", True)
            if not isinstance(enabled, bool):
                problems.append("schedule.enabled: must be true or false")
            schedule = ScheduleRequest(
                daily=_text(given.get("daily")),
                cron=_text(given.get("cron")),
                timezone=_text(given.get("timezone")),
                enabled=bool(enabled),
            )
            if schedule.daily is None and schedule.cron is None:
                problems.append("schedule: give daily: 'HH:MM' or cron: '...'")

    exclusions = None
    if "exclusions" in answers:
        given = answers["exclusions"]
        if given is None:
            exclusions = ()
        elif not isinstance(given, list) or not all(isinstance(c, str) for c in given):
            problems.append("exclusions: must be a list of categories, e.g. [parking]")
        else:
            exclusions = tuple(given)

    flags = {}
    for name, default in (("accept_warnings", False), ("activate", True)):
        flags[name] = answers.get(name, default)
        if not isinstance(flags[name], bool):
            problems.append(f"{name}: must be true or false")

    return SetupRequest(
        values=values,
        mapping=mapping,
        accept_warnings=flags["accept_warnings"] is True,
        schedule=schedule,
        exclusions=exclusions,
        activate=flags["activate"] is True,
        problems=tuple(problems),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _read_mapping(
    adapter_type: type[Adapter], given: Any, mapping_dir: Path | None
) -> MappingDocument:
    if adapter_type.default_mapping is None:
        raise InvalidInput(f"mapping: {adapter_type.display_name} maps no fields; leave it out")
    if given == "default":
        return load_template(adapter_type.default_mapping)
    if isinstance(given, Mapping):
        return parse_mapping(dict(given))
    if isinstance(given, str) and mapping_dir is not None:
        path = Path(given)
        return load_mapping_file(path if path.is_absolute() else mapping_dir / path)
    raise InvalidInput(
        "mapping: give 'default' (the type's template) or a mapping document"
        + (" or a file's path" if mapping_dir is not None else "")
    )


def _problem_count(problems: list[str]) -> str:
    count = len(problems)
    return f"the setup has {count} problem{'' if count == 1 else 's'}; nothing was changed"


# -- what a setup changes --------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One thing a setup changes, as people read it: ``base_url: a -> b``."""

    what: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.what}: {self.before} -> {self.after}"


@dataclass
class _Plan:
    """A setup checked whole, not stored: what :func:`apply` tests and then stores."""

    organisation: Organisation
    row: Integration  # as stored, or a draft without an id
    adapter_type: type[Adapter]
    configuration: ConfigurationChange
    mapping: MappingDocument | None
    accept_warnings: bool
    schedule: tuple[str, str, bool] | None
    exclusions: list[str] | None
    activate: bool

    @property
    def target(self) -> str:
        return self.adapter_type.display_name


def _plan(org_slug: str, type_key: str, request: SetupRequest, actor: Actor) -> _Plan:
    """Check the whole setup; every problem at once, nothing stored."""
    organisation, row = wizard.planned(org_slug, type_key, actor)
    actor.check_change(organisation.id or 0)
    adapter_type = config.integration_type(type_key)
    problems: list[str] = list(request.problems)
    change = None
    try:
        change = config.check_configuration(row, dict(request.values), actor)
    except InvalidInput as exc:
        if str(exc) not in exc.problems and str(exc) != "the configuration is not valid":
            problems.append(str(exc))  # it says more than its problems (a moved endpoint)
        problems.extend(exc.problems)

    if request.mapping is not None:
        if adapter_type.default_mapping is None:
            problems.append(f"mapping: {adapter_type.display_name} maps no fields; leave it out")
        else:  # its own errors now; its codes once the connection works
            problems += [
                f"mapping: {p.field}: {p.message}"
                for p in config.mapping_problems(type_key, request.mapping, None)
                if p.severity is Severity.ERROR
            ]
    elif (
        request.activate
        and adapter_type.default_mapping is not None
        and _stored_mapping_version(row) is None
    ):  # a setup file says `mapping: default` for the type's template
        problems.append("save a field mapping before activating the integration")

    schedule = None
    if request.schedule is not None:
        wanted = request.schedule
        try:
            cron, zone = scheduler.planned_schedule(
                row, daily=wanted.daily, cron=wanted.cron, timezone=wanted.timezone
            )
            schedule = (cron, zone, wanted.enabled)
        except InvalidInput as exc:
            problems.extend(exc.problems)  # they say what they are about (and translate)

    exclusions = None
    if request.exclusions is not None:
        try:
            exclusions = config.check_exclusions(row, list(request.exclusions))
        except InvalidInput as exc:
            problems.extend(exc.problems)

    if problems or change is None:
        raise InvalidInput(_problem_count(problems), problems)
    return _Plan(
        organisation=organisation,
        row=row,
        adapter_type=adapter_type,
        configuration=change,
        mapping=request.mapping,
        accept_warnings=request.accept_warnings,
        schedule=schedule,
        exclusions=exclusions,
        activate=request.activate,
    )


def _stored_mapping_version(row: Integration) -> int | None:
    if row.id is None:
        return None
    with hub_session() as session:
        stored = latest_mapping(session, row.id)
        return stored.version if stored else None


def _unchanged_mapping(row: Integration, document: MappingDocument) -> int | None:
    if row.id is None:
        return None
    with hub_session() as session:
        return config.unchanged_mapping_version(session, row, document)


def _changes(plan: _Plan) -> list[Change]:
    """What storing ``plan`` would change (secrets only as "replaced")."""
    row, change = plan.row, plan.configuration
    model = plan.adapter_type.config_model
    changes = [
        Change(name, _shown(change.before.get(name)), _shown(change.settings.get(name)))
        for name in model.setting_fields()
        if change.before.get(name) != change.settings.get(name)
    ]
    stored = _secret_names(row)
    changes += [
        Change(name, "stored", SECRET_REPLACED)
        if name in stored
        else Change(name, "not set", "entered")
        for name in sorted(change.new_secrets)
    ]
    if plan.mapping is not None:
        version = _stored_mapping_version(row)
        if version is None:
            changes.append(Change("field mapping", "none", "version 1"))
        elif _unchanged_mapping(row, plan.mapping) is None:
            changes.append(Change("field mapping", f"version {version}", f"version {version + 1}"))
    current = config.get_schedule(row) if row.id is not None else None
    if plan.schedule is not None:
        cron, zone, enabled = plan.schedule
        wanted = SyncSchedule(integration_id=row.id or 0, cron=cron, timezone=zone, enabled=enabled)
        if current is None or (current.cron, current.timezone, current.enabled) != plan.schedule:
            changes.append(
                Change("schedule", _schedule_text(current) or "none", _schedule_text(wanted))
            )
    if plan.exclusions is not None:
        before = config.list_exclusions(row) if row.id is not None else []
        if before != plan.exclusions:
            changes.append(
                Change(
                    "excluded categories",
                    ", ".join(before) or "none",
                    ", ".join(plan.exclusions) or "none",
                )
            )
    if plan.activate and row.status != IntegrationStatus.ACTIVE:
        changes.append(Change("status", row.status if row.id else "not set up", "active"))
    return changes


def _secret_names(row: Integration) -> set[str]:
    if row.id is None:
        return set()
    with hub_session() as session:
        return set(CredentialVault.masked(session, integration_id=row.id))


def _shown(value: Any) -> str:
    return "not set" if value in (None, "") else str(value)


def _schedule_text(schedule: SyncSchedule | None) -> str | None:
    if schedule is None:
        return None
    text = scheduler.describe(schedule)
    return text if schedule.enabled else f"{text}, switched off"


# -- testing the new configuration -------------------------------------------------------------
def _candidate(plan: _Plan, actor: Actor, purpose: str) -> Adapter:
    """The adapter of the plan's configuration (not stored); a configuration that cannot make
    one raises :class:`IntegrationNotConfigured`."""
    change = plan.configuration
    with hub_session() as session:
        return build_candidate_adapter(
            session,
            plan.row,
            change.settings,
            change.new_secrets,
            purpose=purpose,
            actor=actor.name,
        )


def _test(plan: _Plan, actor: Actor) -> tuple[ConnectionResult, Adapter | None]:
    """The connection test of the plan's configuration, within 10 seconds. No alert is sent
    when it fails: nothing live failed, and the person who asked is reading the answer."""
    try:
        adapter = _candidate(plan, actor, "setup connection test")
    except IntegrationNotConfigured as exc:
        return ConnectionResult(ConnectionStatus.BAD_CREDENTIALS, str(exc)), None
    result = adapter.check_connection()
    if not result.ok:
        adapter.close()
        return result, None
    return result, adapter


def _live_mapping_problems(plan: _Plan, adapter: Adapter) -> list[Problem]:
    """The plan's mapping against the target's codes, read through the tested connection."""
    if plan.mapping is None:
        return []
    codes: list[ReferenceCode] | None = None
    error = None
    if isinstance(adapter, RecordAdapter):
        try:
            codes = adapter.reference_codes()
        except Exception as exc:  # the connection works; the check says it could not look
            error = config._short_error(exc)
    return config.mapping_problems(plan.adapter_type.key, plan.mapping, codes, error)


# -- applying ------------------------------------------------------------------------------------
@dataclass
class SetupOutcome:
    """What :func:`apply` stored, for the CLI's lines, the pages and the API."""

    integration: Integration
    target: str
    organisation: str
    created: bool
    connection: ConnectionResult
    changes: list[Change]
    fields: list[dict[str, Any]]
    maps_fields: bool
    mapping_version: int | None
    mapping_saved: bool
    mapping_problems: list[Problem]
    scheduled: bool
    schedule: SyncSchedule | None
    exclusions: list[str]
    not_pushed: str | None

    @property
    def status(self) -> str:
        return self.integration.status

    def lines(self) -> list[str]:
        """The setup's report, a line a step; secrets only as masks."""
        lines = [f"{self.target} for {self.organisation}: credentials saved (shown masked)"]
        lines += [f"  {f['name']}: {f['value']}" for f in self.fields]
        result = self.connection
        lines.append(f"connection test: {result.status} in {result.elapsed_ms} ms: {result.detail}")
        lines += [f"  warning: {warning}" for warning in result.warnings]
        if not self.maps_fields:
            lines.append(f"field mapping: none ({self.target} needs no mapping)")
        elif self.mapping_saved:
            lines.append(f"field mapping saved as version {self.mapping_version}")
        elif self.mapping_version is not None:
            lines.append(f"field mapping: version {self.mapping_version}, unchanged")
        lines += [f"  {p}" for p in self.mapping_problems]
        if self.scheduled and self.schedule is not None:
            lines.append(f"schedule: {_schedule_text(self.schedule)}")
            if self.not_pushed:
                lines.append(
                    f"  not in Prefect yet ({self.not_pushed}); `integrations serve` pushes it"
                )
        lines.append(f"excluded categories: {', '.join(self.exclusions) or 'none'}")
        lines.append(f"status: {self.status}")
        return lines

    def summary(self) -> str:
        """One line saying what happened."""
        count = len(self.changes)
        if self.created:
            what = "set up"
        elif count:
            what = f"updated ({count} change{'' if count == 1 else 's'})"
        else:
            what = "unchanged"
        return f"{self.target} for {self.organisation} is {what} and {self.status}."


def apply(
    org_slug: str,
    type_key: str,
    request: SetupRequest,
    actor: Actor,
    *,
    discard_staged: bool = False,
) -> SetupOutcome:
    """Check the whole setup, test its connection, then store it all in one transaction and
    push the schedule. Nothing is stored when a check or the test fails.

    ``discard_staged``: the request is the integration's staged change, whose row goes in the
    same transaction."""
    plan = _plan(org_slug, type_key, request, actor)
    changes = _changes(plan)
    result, adapter = _test(plan, actor)
    if adapter is None:
        raise ConnectionTestFailed(plan.target, result)
    with adapter:
        problems = _live_mapping_problems(plan, adapter)
    warnings: list[str] = []
    if plan.mapping is not None:
        if has_errors(problems):
            raise InvalidInput(
                "the mapping has errors; nothing was changed",
                [f"mapping: {p}" for p in problems if p.severity is Severity.ERROR],
            )
        warnings = warnings_of(problems)
        if warnings and not plan.accept_warnings:
            raise InvalidInput(
                "the mapping has warnings; nothing was changed: look at them, then confirm "
                "with accept_warnings: true",
                [f"mapping: warning: {w}" for w in warnings],
            )
    row, created, mapping_version, mapping_saved = _store(
        plan, result, warnings, changes, actor, discard_staged=discard_staged
    )
    forget_reference_codes(row.id)
    not_pushed = None
    if plan.adapter_type.runs_on_schedule and (plan.schedule is not None or plan.activate):
        try:
            scheduler.push(row.id or 0)
        except scheduler.PrefectUnavailable as exc:
            not_pushed = str(exc)
    stored = config.reload(row)
    return SetupOutcome(
        integration=stored,
        target=plan.target,
        organisation=plan.organisation.slug,
        created=created,
        connection=result,
        changes=changes,
        fields=config.credential_form(stored, actor),
        maps_fields=plan.adapter_type.default_mapping is not None,
        mapping_version=mapping_version,
        mapping_saved=mapping_saved,
        mapping_problems=problems,
        scheduled=plan.adapter_type.runs_on_schedule,
        schedule=config.get_schedule(stored),
        exclusions=config.list_exclusions(stored),
        not_pushed=not_pushed,
    )


def _store(
    plan: _Plan,
    result: ConnectionResult,
    warnings: list[str],
    changes: list[Change],
    actor: Actor,
    *,
    discard_staged: bool,
) -> tuple[Integration, bool, int | None, bool]:
    """Everything in one transaction: (the row, created now, mapping version, saved now)."""
    created = plan.row.id is None
    with hub_session() as session:
        if created:
            row = Integration(organisation_id=plan.organisation.id or 0, type_key=plan.row.type_key)
            session.add(row)
            session.flush()
            audit(session, actor, "integration.created", row)
        else:
            row = session.get(Integration, plan.row.id)
            if row is None:
                raise NotFound(f"integration {plan.row.id} no longer exists")
        if plan.configuration.changed or created:
            config.apply_configuration(session, row, plan.configuration, actor)
        row.last_test_status = result.status.value
        row.last_test_detail = result.detail[:500]
        row.last_test_at = utcnow()
        audit(
            session,
            actor,
            "integration.connection_tested",
            row,
            status=result.status.value,
            elapsed_ms=result.elapsed_ms,
        )
        stored = latest_mapping(session, row.id or 0)
        version, saved = (stored.version if stored else None), False
        if plan.mapping is not None and (
            config.unchanged_mapping_version(session, row, plan.mapping) is None
        ):
            version = config.add_mapping_version(session, row, plan.mapping, warnings, actor)
            saved = True
        if plan.schedule is not None:
            config.store_schedule(session, row, *plan.schedule, actor)
        if plan.exclusions is not None:
            config.store_exclusions(session, row, plan.exclusions, actor)
        if plan.activate:
            if row.status != IntegrationStatus.ACTIVE:
                audit(session, actor, "integration.status", row, status="active")
            row.status = IntegrationStatus.ACTIVE.value
            row.setup_step = None
        elif created:
            row.setup_step = wizard.steps_for(row.type_key)[-1]  # all done but activating
        row.updated_at = utcnow()
        session.add(row)
        if discard_staged:
            _delete_stage(session, row)
        audit(session, actor, "setup.applied", row, changes=[str(c) for c in changes])
        session.flush()
        session.refresh(row)
        session.expunge(row)
    return row, created, version, saved


def try_setup(
    org_slug: str, type_key: str, request: SetupRequest, actor: Actor
) -> tuple[ConnectionResult, list[Problem]]:
    """What :func:`apply` would find, storing nothing: the connection test of the request's
    configuration and, when it passes, its mapping's problems against the target's codes. The
    interactive setup shows these at its steps 2 and 3, before the whole is applied."""
    plan = _plan(org_slug, type_key, request, actor)
    result, adapter = _test(plan, actor)
    if adapter is None:
        return result, []
    with adapter:
        return result, _live_mapping_problems(plan, adapter)


def activate(row: Integration, actor: Actor) -> SetupOutcome:
    """The wizard's and the API's activation of a draft: the last step must have passed its
    connection test (the wizard's rule), and the setup is then applied as a whole, which tests
    the connection again before the integration goes active."""
    actor.check_change(row.organisation_id)
    if config.reload(row).last_test_status != "ok":
        raise InvalidInput("test the connection successfully before activating")
    org = _organisation_of(row, actor)
    return apply(org.slug, row.type_key, SetupRequest(activate=True), actor)


def _organisation_of(row: Integration, actor: Actor) -> Organisation:
    for organisation in config.list_organisations(actor):
        if organisation.id == row.organisation_id:
            return organisation
    raise NotFound(f"integration {row.id} belongs to no organisation you can see")


def change_configuration(row: Integration, values: dict[str, Any], actor: Actor) -> None:
    """The credential form's values. A draft being set up step by step stores them at once
    (its connection test is the wizard's next step); a finished setup, which runs, changes
    only after the new values pass the connection test (:func:`apply` of just them)."""
    if row.status == IntegrationStatus.DRAFT:
        config.save_configuration(row, values, actor)
        return
    org = _organisation_of(row, actor)
    apply(org.slug, row.type_key, SetupRequest(values=values, activate=False), actor)


# -- staged changes ------------------------------------------------------------------------------
def stages_changes(row: Integration) -> bool:
    """Whether the wizard stages changes to ``row``: a finished setup (active or paused), which
    keeps running as it is until a staged change is confirmed."""
    return row.id is not None and row.setup_step is None and row.status != IntegrationStatus.DRAFT


def staged_of(row: Integration) -> Integration | None:
    """The row holding ``row``'s staged change, if there is one."""
    with hub_session() as session:
        found = _stage_row(session, row)
        if found is not None:
            session.expunge(found)
        return found


def _stage_row(session: Session, row: Integration, *, create: bool = False) -> Integration | None:
    found = session.exec(
        select(Integration).where(
            Integration.organisation_id == row.organisation_id,
            Integration.type_key == STAGED_PREFIX + row.type_key,
        )
    ).first()
    if found is None and create:
        found = Integration(
            organisation_id=row.organisation_id, type_key=STAGED_PREFIX + row.type_key
        )
        session.add(found)
        session.flush()
    return found


def _delete_stage(session: Session, row: Integration) -> bool:
    staged = _stage_row(session, row)
    if staged is None:
        return False
    for credential in session.exec(
        select(Credential).where(Credential.integration_id == staged.id)
    ).all():
        session.delete(credential)
    session.flush()
    session.delete(staged)
    return True


def _stage(row: Integration, actor: Actor, part: str, **data: Any) -> Integration:
    """Store ``data`` in ``row``'s staged change (made when there is none)."""
    actor.check_change(row.organisation_id)
    with hub_session() as session:
        staged = _stage_row(session, row, create=True)
        assert staged is not None
        staged.settings = {**staged.settings, **data}
        staged.updated_at = utcnow()
        session.add(staged)
        audit(session, actor, "setup.staged", row, part=part)
        session.flush()
        session.expunge(staged)
    return staged


@dataclass(frozen=True)
class StagedChange:
    """A staged change as the wizard shows it."""

    settings: dict[str, Any]
    secret_masks: dict[str, str]
    mapping: MappingDocument | None
    schedule: dict[str, Any] | None
    exclusions: list[str] | None
    test: ConnectionResult | None
    tested_at: Any


def staged_change(row: Integration) -> StagedChange | None:
    """``row``'s staged change (settings as they would be, masks of the staged secrets), or
    None."""
    staged = staged_of(row)
    if staged is None:
        return None
    data = staged.settings
    with hub_session() as session:
        masks = CredentialVault.masked(session, integration_id=staged.id or 0)
    mapping = data.get("mapping")
    test = None
    if staged.last_test_status is not None:
        test = ConnectionResult(
            ConnectionStatus(staged.last_test_status), staged.last_test_detail or ""
        )
    return StagedChange(
        settings=dict(data.get("settings", row.settings)),
        secret_masks=masks,
        mapping=parse_mapping(mapping) if mapping is not None else None,
        schedule=data.get("schedule"),
        exclusions=data.get("exclusions"),
        test=test,
        tested_at=staged.last_test_at,
    )


def stage_configuration(row: Integration, values: dict[str, Any], actor: Actor) -> None:
    """Check the credential form's values against the staged change and stage them; the live
    configuration is not touched. A new secret is stored in the vault for the staged row,
    bound to the staged endpoint."""
    actor.check_change(row.organisation_id)
    staged = staged_of(row)
    with hub_session() as session:
        stored = set(CredentialVault.masked(session, integration_id=row.id or 0))
        if staged is not None:
            stored |= set(CredentialVault.masked(session, integration_id=staged.id or 0))
    base = staged.settings.get("settings", row.settings) if staged else row.settings
    change = config.check_configuration(row, values, actor, base=dict(base), stored_secrets=stored)
    vault = CredentialVault.from_settings()
    with hub_session() as session:
        stage = _stage_row(session, row, create=True)
        assert stage is not None
        if change.changed:
            stage.last_test_status = stage.last_test_detail = stage.last_test_at = None
        stage.settings = {**stage.settings, "settings": change.settings}
        stage.updated_at = utcnow()
        session.add(stage)
        store_secrets(session, vault, stage, change.new_secrets, actor, change.endpoint)
        audit(
            session,
            actor,
            "setup.staged",
            row,
            part="credentials",
            secrets_replaced=sorted(change.new_secrets),
        )


def stage_mapping(
    row: Integration,
    document: MappingDocument,
    actor: Actor,
    *,
    accept_warnings: bool = False,
    shown_warnings: Collection[str] = (),
) -> SaveOutcome:
    """The wizard's mapping step for a finished setup: check ``document`` against the target
    of the staged configuration and stage it (the live mapping stays in use). As
    :func:`mapping_editor.save`: errors refuse, and warnings need the person's confirmation of
    every warning shown to them; ``version`` is the version it will be saved as."""
    actor.check_change(row.organisation_id)
    request = staged_request(row, actor, "check the staged mapping")
    plan = dataclasses.replace(_plan_of_stage(row, request, actor), mapping=document)
    try:
        with _candidate(plan, actor, "check the staged mapping") as adapter:
            problems = _live_mapping_problems(plan, adapter)
    except IntegrationNotConfigured as exc:
        problems = config.mapping_problems(row.type_key, document, None, str(exc))
    outcome = SaveOutcome(
        errors=[p for p in problems if p.severity is Severity.ERROR],
        warnings=[p for p in problems if p.severity is Severity.WARNING],
    )
    unseen = [w for w in outcome.warnings if str(w) not in set(shown_warnings)]
    if outcome.errors or (outcome.warnings and (not accept_warnings or unseen)):
        return outcome
    _stage(
        row,
        actor,
        "mapping",
        mapping=document.model_dump(mode="json", exclude_none=True),
        accept_warnings=bool(outcome.warnings),
    )
    same = _unchanged_mapping(row, document)
    outcome.version = same or (_stored_mapping_version(row) or 0) + 1
    outcome.unchanged = same is not None
    return outcome


def mapping_in_wizard(row: Integration) -> MappingDocument:
    """The mapping the wizard's mapping step shows: a staged one, else the saved one (or the
    template)."""
    staged = staged_change(row) if stages_changes(row) else None
    if staged is not None and staged.mapping is not None:
        return staged.mapping
    return config.current_mapping(row)[1]


def stage_schedule(
    row: Integration,
    actor: Actor,
    *,
    daily: str | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    enabled: bool = True,
) -> None:
    """Check a schedule as :func:`scheduler.set_schedule` does and stage it."""
    actor.check_change(row.organisation_id)
    cron, timezone = scheduler.planned_schedule(row, daily=daily, cron=cron, timezone=timezone)
    _stage(
        row, actor, "schedule", schedule={"cron": cron, "timezone": timezone, "enabled": enabled}
    )


def stage_exclusions(row: Integration, categories: list[str], actor: Actor) -> None:
    """Check categories as :func:`configuration.set_exclusions` does and stage them."""
    actor.check_change(row.organisation_id)
    _stage(row, actor, "exclusions", exclusions=config.check_exclusions(row, categories))


STAGED_SECRET_STANDIN = "staged-secret-not-revealed"
"""What stands in for a staged secret where only its presence matters (the review)."""


def staged_request(row: Integration, actor: Actor, purpose: str | None) -> SetupRequest:
    """``row``'s staged change as a :class:`SetupRequest` (nothing staged: the live setup as
    it is). The staged secrets are read from the vault for ``purpose`` (audited), to be tested
    or, on confirmation, stored for the live integration; with ``purpose`` None they are not
    read, a stand-in marks them (to review what would change)."""
    staged = staged_of(row)
    data = staged.settings if staged is not None else {}
    values: dict[str, Any] = dict(data.get("settings", {}))
    if staged is not None:
        model = config.integration_type(row.type_key).config_model
        vault = CredentialVault.from_settings()
        endpoint = binding(model, data.get("settings", row.settings))
        with hub_session() as session:
            for name in CredentialVault.masked(session, integration_id=staged.id or 0):
                values[name] = (
                    STAGED_SECRET_STANDIN
                    if purpose is None
                    else vault.reveal(
                        session,
                        organisation_id=row.organisation_id,
                        integration_id=staged.id or 0,
                        field=name,
                        purpose=purpose,
                        actor=actor.name,
                        endpoint=endpoint,
                    )
                )
    schedule = data.get("schedule")
    return SetupRequest(
        values=values,
        mapping=parse_mapping(data["mapping"]) if data.get("mapping") is not None else None,
        accept_warnings=bool(data.get("accept_warnings", False)),
        schedule=ScheduleRequest(
            cron=schedule["cron"], timezone=schedule["timezone"], enabled=schedule["enabled"]
        )
        if schedule
        else None,
        exclusions=tuple(data["exclusions"]) if data.get("exclusions") is not None else None,
        activate=row.status == IntegrationStatus.ACTIVE,  # a paused one stays paused
    )


def _plan_of_stage(row: Integration, request: SetupRequest, actor: Actor) -> _Plan:
    org = _organisation_of(row, actor)
    return _plan(org.slug, row.type_key, request, actor)


def check_staged_connection(row: Integration, actor: Actor) -> ConnectionResult:
    """The connection test of the staged configuration (the live one keeps running); the
    answer is kept with the staged change for the review step."""
    actor.check_change(row.organisation_id)
    request = staged_request(row, actor, "staged setup connection test")
    try:
        plan = _plan_of_stage(row, request, actor)
    except InvalidInput as exc:
        result = ConnectionResult(ConnectionStatus.BAD_CREDENTIALS, "; ".join(exc.problems))
    else:
        result, adapter = _test(plan, actor)
        if adapter is not None:
            adapter.close()
    with hub_session() as session:
        stage = _stage_row(session, row, create=True)
        assert stage is not None
        remember_connection_test(session, stage, result, actor, audited=row, staged=True)
    return result


@dataclass(frozen=True)
class StagedReview:
    """What confirming the staged change would change, or why it cannot be confirmed yet."""

    changes: list[Change]
    problems: list[str]
    staged: StagedChange | None
    readable: bool = True
    """False for someone who may read the integration but not change it (an operator): the
    changes are checked as a change, which only the organisation's admins may make."""


def review_staged(row: Integration, actor: Actor) -> StagedReview:
    """The review step of a staged change: each change (old -> new, secrets as "replaced")
    and the problems that would refuse it. Reads the staged secrets only to compare
    shapes, never to send them."""
    actor.check(row.organisation_id)
    staged = staged_change(row)
    if staged is None:
        return StagedReview([], [], None)
    request = staged_request(row, actor, None)
    try:
        plan = _plan_of_stage(row, request, actor)
    except InvalidInput as exc:
        return StagedReview([], list(exc.problems), staged)
    except Forbidden:
        return StagedReview([], [], staged, readable=False)
    return StagedReview(_changes(plan), [], staged)


def confirm_staged(row: Integration, actor: Actor) -> SetupOutcome:
    """Apply the staged change as a whole (checked, tested again, stored in one transaction
    with the staged row removed); refused or failed, the live setup and the staged change stay
    as they were."""
    actor.check_change(row.organisation_id)
    if staged_of(row) is None:
        raise InvalidInput("there is no staged change to apply")
    request = staged_request(row, actor, "apply the staged change")
    org = _organisation_of(row, actor)
    return apply(org.slug, row.type_key, request, actor, discard_staged=True)


def discard_staged(row: Integration, actor: Actor) -> bool:
    """Forget the staged change (its secrets too); False when there was none."""
    actor.check_change(row.organisation_id)
    with hub_session() as session:
        removed = _delete_stage(session, row)
        if removed:
            audit(session, actor, "setup.discarded", row)
    return removed


def staged_masks(row: Integration) -> dict[str, str]:
    """The masks of the staged secrets (``••••••3f9a``)."""
    staged = staged_of(row)
    if staged is None:
        return {}
    with hub_session() as session:
        return CredentialVault.masked(session, integration_id=staged.id or 0)
