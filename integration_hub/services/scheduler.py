"""Sync scheduler: the hub database's schedules, pushed to Prefect as deployment schedules.

The hub's ``SyncSchedule`` rows (cron + IANA time zone + enabled) are the source of truth; an
admin changes them through :func:`set_schedule`. Each enabled schedule of an integration that is
not paused becomes one cron schedule on the export deployment, with the stable slug
``integration-<id>`` and parameters that carry only the integration id and the trigger. Prefect's
server then creates the runs (DST handled by Prefect's own cron schedule, which
:func:`next_runs` also uses, so what we show is what Prefect will do). Any schedule under our
slug prefix that does not match the hub is drift: :func:`sync_all` repairs it. Schedules with
other slugs belong to someone else and are left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlmodel import select

from integration_hub.adapters.registry import UnknownIntegrationType, get_type
from integration_hub.db import hub_session
from integration_hub.deployments import EXPORT_EXPENSE_CLAIMS
from integration_hub.models import Integration, IntegrationStatus, SyncSchedule
from integration_hub.services import configuration as config
from integration_hub.services.errors import InvalidInput, ServiceError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import DeploymentSchedule

SLUG_PREFIX = "integration-"
SCHEDULE_TRIGGER = "schedule"
HEALTH_TIMEOUT_SECONDS = 3.0
DAILY = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* \*$")


class PrefectUnavailable(ServiceError):
    """No Prefect API to push to; the hub keeps the schedule and ``serve`` pushes it later."""


# -- what the hub wants ------------------------------------------------------------------------
@dataclass(frozen=True)
class WantedSchedule:
    """One integration's schedule as Prefect should hold it."""

    integration_id: int
    cron: str
    timezone: str

    @property
    def slug(self) -> str:
        return slug_for(self.integration_id)

    @property
    def parameters(self) -> dict[str, Any]:
        return {"integration_id": self.integration_id, "trigger": SCHEDULE_TRIGGER}


def slug_for(integration_id: int) -> str:
    """The stable slug of an integration's schedule on the export deployment."""
    return f"{SLUG_PREFIX}{integration_id}"


def is_ours(slug: str | None) -> bool:
    return bool(slug) and re.fullmatch(rf"{SLUG_PREFIX}\d+", slug or "") is not None


def wanted_schedules(integration_id: int | None = None) -> dict[str, WantedSchedule]:
    """Enabled schedules of integrations that are not paused, by slug."""
    with hub_session() as session:
        query = select(SyncSchedule, Integration).where(
            SyncSchedule.integration_id == Integration.id,
            SyncSchedule.enabled,
            Integration.status != IntegrationStatus.PAUSED.value,
        )
        if integration_id is not None:
            query = query.where(SyncSchedule.integration_id == integration_id)
        rows = session.exec(query).all()
    wanted = [
        WantedSchedule(s.integration_id, s.cron, s.timezone)
        for s, row in rows
        if _runs_on_schedule(row.type_key)
    ]
    return {w.slug: w for w in wanted}


def _runs_on_schedule(type_key: str) -> bool:
    """A schedule stored for a type that is not exported on one is never pushed."""
    try:
        return get_type(type_key).runs_on_schedule
    except UnknownIntegrationType:
        return False


# -- schedules as Prefect computes them --------------------------------------------------------
def check_schedule(cron: str, timezone: str) -> None:
    """Refuse what the hub or Prefect would not accept (every problem at once)."""
    config.validate_schedule(cron, timezone)
    from pydantic import ValidationError

    try:
        _server_cron(cron, timezone)
    except ValidationError as exc:
        problems = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]
        raise InvalidInput("; ".join(problems), problems) from None


def _server_cron(cron: str, timezone: str) -> Any:
    from prefect.server.schemas.schedules import CronSchedule

    return CronSchedule(cron=cron, timezone=timezone)


def next_runs(
    cron: str, timezone: str, n: int = 3, *, after: datetime | None = None
) -> list[datetime]:
    """The next ``n`` run times, computed by Prefect's server-side cron schedule (the one its
    scheduler uses, DST included), in the schedule's own time zone."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    zone = ZoneInfo(timezone)
    start = after or datetime.now(UTC)
    dates = run_coro_as_sync(_server_cron(cron, timezone).get_dates(n=n, start=start)) or []
    return [datetime.fromtimestamp(d.timestamp(), zone) for d in dates]


def next_runs_of(
    schedule: SyncSchedule, n: int = 3, *, after: datetime | None = None
) -> list[datetime]:
    """:func:`next_runs` of a stored schedule; none while it is disabled."""
    if not schedule.enabled:
        return []
    return next_runs(schedule.cron, schedule.timezone, n, after=after)


def daily_time(cron: str) -> str | None:
    """``"02:00"`` when ``cron`` is the daily preset (``0 2 * * *``), else None."""
    match = DAILY.match(cron)
    if match and int(match.group(1)) < 60 and int(match.group(2)) < 24:
        return f"{int(match.group(2)):02d}:{int(match.group(1)):02d}"
    return None


def describe(schedule: SyncSchedule) -> str:
    """``daily at 02:00 (Europe/Oslo)`` for the daily preset, the cron expression otherwise."""
    hhmm = daily_time(schedule.cron)
    when = f"daily at {hhmm}" if hhmm else f"cron {schedule.cron!r}"
    return f"{when} ({schedule.timezone})"


# -- talking to Prefect ------------------------------------------------------------------------
def prefect_api_url() -> str | None:
    """The Prefect API the hub pushes to: PREFECT_API_URL (or the active Prefect profile)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url).rstrip("/") if url else None


def unreachable_reason() -> str | None:
    """None when a Prefect API is configured and answers its health check, else why not.

    Never lets Prefect start a temporary server: without PREFECT_API_URL there is nothing to
    push to, and ``integrations serve`` pushes everything when it starts.
    """
    import httpx

    url = prefect_api_url()
    if url is None:
        return "PREFECT_API_URL is not set"
    try:
        response = httpx.get(f"{url}/health", timeout=HEALTH_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return f"the Prefect API at {url} does not answer ({type(exc).__name__})"
    if response.status_code != 200:
        return f"the Prefect API at {url} answered {response.status_code}"
    return None


def _client() -> SyncPrefectClient:
    reason = unreachable_reason()
    if reason is not None:
        raise PrefectUnavailable(reason)
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _export_deployment_id(client: SyncPrefectClient) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(EXPORT_EXPENSE_CLAIMS.full_name).id
    except ObjectNotFound:
        raise PrefectUnavailable(
            f"Prefect has no deployment {EXPORT_EXPENSE_CLAIMS.full_name!r} yet; "
            "`integrations serve` creates it (or `prefect deploy --all` for workers)"
        ) from None


def _matches(existing: DeploymentSchedule, wanted: WantedSchedule) -> bool:
    from prefect.client.schemas.schedules import CronSchedule

    schedule = existing.schedule
    return (
        isinstance(schedule, CronSchedule)
        and schedule.cron == wanted.cron
        and schedule.timezone == wanted.timezone
        and bool(schedule.day_or)
        and existing.parameters == wanted.parameters
        and existing.active
    )


@dataclass
class SyncReport:
    """What one sync changed in Prefect, by integration id."""

    api_url: str = ""
    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)

    def __str__(self) -> str:
        parts = [
            f"{len(ids)} {label}"
            for label, ids in (
                ("created", self.created),
                ("updated", self.updated),
                ("removed", self.removed),
                ("unchanged", self.unchanged),
            )
            if ids
        ]
        return f"schedules in Prefect: {', '.join(parts) or 'none'}"


def _reconcile(only_integration: int | None = None) -> SyncReport:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    wanted = wanted_schedules(only_integration)
    report = SyncReport(api_url=prefect_api_url() or "")
    with _client() as client:
        deployment_id = _export_deployment_id(client)
        existing: dict[str, list[DeploymentSchedule]] = {}
        for schedule in client.read_deployment_schedules(deployment_id):
            if is_ours(schedule.slug):
                existing.setdefault(schedule.slug or "", []).append(schedule)
        slugs = set(wanted) | set(existing)
        if only_integration is not None:
            slugs &= {slug_for(only_integration)}
        for slug in sorted(slugs, key=lambda s: int(s.removeprefix(SLUG_PREFIX))):
            integration_id = int(slug.removeprefix(SLUG_PREFIX))
            target, found = wanted.get(slug), existing.get(slug, [])
            for extra in found[1 if target else 0 :]:  # duplicates, or no longer wanted
                client.delete_deployment_schedule(deployment_id, extra.id)
            if target is None:
                if found:
                    report.removed.append(integration_id)
                continue
            cron = CronSchedule(cron=target.cron, timezone=target.timezone)
            if not found:
                client.create_deployment_schedules(
                    deployment_id,
                    [
                        DeploymentScheduleCreate(
                            schedule=cron, active=True, parameters=target.parameters, slug=slug
                        )
                    ],
                )
                report.created.append(integration_id)
            elif not _matches(found[0], target):
                client.update_deployment_schedule(
                    deployment_id,
                    found[0].id,
                    active=True,
                    schedule=cron,
                    parameters=target.parameters,
                )
                report.updated.append(integration_id)
            else:
                report.unchanged.append(integration_id)
    return report


def sync_all() -> SyncReport:
    """Make Prefect hold exactly the hub's schedules: create missing ones, fix drifted ones,
    delete ours whose integration no longer has an enabled schedule."""
    return _reconcile()


def push(integration_id: int) -> SyncReport:
    """Create, update or remove one integration's schedule in Prefect to match the hub."""
    return _reconcile(integration_id)


def prefect_state(integration_id: int) -> str:
    """How Prefect's copy compares with the hub's: in sync, missing, drifted, or why unknown."""
    try:
        with _client() as client:
            deployment_id = _export_deployment_id(client)
            found = [
                s
                for s in client.read_deployment_schedules(deployment_id)
                if s.slug == slug_for(integration_id)
            ]
    except PrefectUnavailable as exc:
        return f"not checked ({exc})"
    target = wanted_schedules(integration_id).get(slug_for(integration_id))
    if target is None:
        return "absent, as it should be" if not found else "still present (run a sync)"
    if not found:
        return "missing (run `integrations sync-schedules`, or it is pushed when serve starts)"
    return "in sync" if _matches(found[0], target) else "drifted (repaired at the next sync)"


# -- what the CLI and pages call ---------------------------------------------------------------
@dataclass
class ScheduleChange:
    """A stored schedule and what happened in Prefect (``pushed`` or why it was not)."""

    schedule: SyncSchedule
    pushed: SyncReport | None
    not_pushed: str | None = None


def set_schedule(
    integration: Integration,
    actor: config.Actor,
    *,
    daily: str | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    enabled: bool = True,
) -> ScheduleChange:
    """Store a schedule, daily at ``HH:MM`` or a cron expression, in a time zone, then push it
    to Prefect when an API is reachable. The one entry for the CLI, pages and API: every
    problem is reported at once and nothing changes when one is found. ``None`` keeps the
    stored value; an empty text is a problem."""
    actor.check_change(integration.organisation_id)
    cron, timezone = planned_schedule(integration, daily=daily, cron=cron, timezone=timezone)
    stored = config.set_schedule(integration, cron, timezone, enabled, actor)
    try:
        return ScheduleChange(stored, push(integration.id or 0))
    except PrefectUnavailable as exc:
        return ScheduleChange(stored, None, str(exc))


def planned_schedule(
    integration: Integration,
    *,
    daily: str | None = None,
    cron: str | None = None,
    timezone: str | None = None,
) -> tuple[str, str]:
    """The cron expression and time zone :func:`set_schedule` would store, checked as the hub
    and Prefect check them; every problem at once (:class:`InvalidInput`), nothing stored.
    The setup service checks a whole setup's schedule with it before storing anything."""
    config.check_schedulable(integration)
    current = config.get_schedule(integration) if integration.id is not None else None
    problems: list[str] = []
    if daily is not None and cron is not None:
        problems.append("give either daily or cron, not both")
    elif daily is not None:
        try:
            cron = config.parse_daily(daily)
        except InvalidInput as exc:
            problems.extend(exc.problems)
    elif cron is not None and not cron.strip():
        problems.append("Write a cron expression, for example 0 2 * * *.")
    if timezone is not None and not timezone.strip():
        problems.append("Choose a time zone.")
    cron = cron or (current.cron if current else None)
    timezone = timezone or (current.timezone if current else "Europe/Oslo")
    if cron is None and not problems:
        raise InvalidInput(
            "there is no schedule to change yet; give --daily HH:MM or --cron EXPRESSION"
        )
    try:  # with a refused time, the zone is still checked (against any valid expression)
        check_schedule(cron or "0 2 * * *", timezone)
    except InvalidInput as exc:
        problems.extend(exc.problems)
    if problems or cron is None:
        raise InvalidInput("; ".join(problems), problems)
    return cron, timezone
