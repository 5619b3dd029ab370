"""The sync scheduler: DST days, pushing schedules to Prefect, drift repair, and the CLI.

Run times come from Prefect's own server-side cron schedule; pushes go to the session's Prefect
test server, on which a module fixture registers the export deployment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from factories import seed_organisation
from typer.testing import CliRunner

from integration_hub.adapters.registry import feature_flag
from integration_hub.cli import app
from integration_hub.deployments import EXPORT_EXPENSE_CLAIMS
from integration_hub.models import IntegrationStatus
from integration_hub.services import configuration as config
from integration_hub.services import scheduler
from integration_hub.services.errors import InvalidInput

OSLO = ZoneInfo("Europe/Oslo")
runner = CliRunner()


# -- run times (no database, no server) ----------------------------------------------------------
def _runs_per_local_day(cron: str, first: date, days: int) -> Counter[date]:
    start = datetime.combine(first, datetime.min.time(), OSLO)
    runs = scheduler.next_runs(cron, "Europe/Oslo", n=days + 5, after=start)
    end = first + timedelta(days=days)
    return Counter(r.date() for r in runs if r.date() < end)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # Autumn: 02:00-02:59 happens twice (CEST, then CET). One run, the first 02:00.
        (date(2026, 10, 25), datetime(2026, 10, 25, 2, 0, tzinfo=OSLO)),
        # Spring: 02:00-02:59 does not exist. One run, at 03:00 CEST.
        (date(2027, 3, 28), datetime(2027, 3, 28, 3, 0, tzinfo=OSLO)),
    ],
    ids=["autumn-2026-10-25", "spring-2027-03-28"],
)
def test_daily_0200_runs_exactly_once_on_the_days_clocks_change(
    day: date, expected: datetime
) -> None:
    cron = config.parse_daily("02:00")
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), OSLO)
    runs = scheduler.next_runs(cron, "Europe/Oslo", n=3, after=start)
    assert [r.date() for r in runs] == [day - timedelta(days=1), day, day + timedelta(days=1)]
    on_the_day = [r for r in runs if r.date() == day]
    assert len(on_the_day) == 1
    assert on_the_day[0] == expected
    assert on_the_day[0].utcoffset() == timedelta(hours=2)  # CEST on both days
    assert all(r.tzinfo is not None and r.tzinfo.key == "Europe/Oslo" for r in runs)  # type: ignore[union-attr]
    # And in a whole month around each change, one run on every day.
    per_day = _runs_per_local_day(cron, day - timedelta(days=14), 28)
    assert set(per_day.values()) == {1} and len(per_day) == 28


def test_run_times_are_24_hours_apart_except_across_a_change() -> None:
    runs = scheduler.next_runs(
        "0 2 * * *", "Europe/Oslo", n=4, after=datetime(2026, 10, 23, 12, tzinfo=OSLO)
    )
    instants = [r.astimezone(UTC) for r in runs]  # same-zone subtraction ignores the change
    gaps = [(b - a).total_seconds() / 3600 for a, b in pairwise(instants)]
    assert gaps == [24, 25, 24]  # the night of 25 October is an hour longer


def test_a_schedule_in_another_zone_shows_its_own_local_times() -> None:
    runs = scheduler.next_runs(
        "30 6 * * 1-5", "America/New_York", after=datetime(2026, 3, 6, tzinfo=UTC)
    )
    assert [r.strftime("%a %H:%M %Z") for r in runs] == [
        "Fri 06:30 EST",
        "Mon 06:30 EDT",  # New York moves its clocks on 8 March 2026
        "Tue 06:30 EDT",
    ]


def test_bad_cron_and_unknown_zone_are_both_reported() -> None:
    with pytest.raises(InvalidInput) as caught:
        scheduler.check_schedule("61 * * * *", "Europe/Olso")
    problems = caught.value.problems
    assert any("unknown time zone 'Europe/Olso'" in p for p in problems)
    assert any("'61 * * * *' is not a valid cron expression" in p for p in problems)


def test_describe_names_the_daily_preset() -> None:
    from integration_hub.models import SyncSchedule

    daily = SyncSchedule(integration_id=1, cron="5 2 * * *", timezone="Europe/Oslo")
    assert scheduler.describe(daily) == "daily at 02:05 (Europe/Oslo)"
    weekdays = SyncSchedule(integration_id=1, cron="0 6 * * 1-5", timezone="UTC")
    assert scheduler.describe(weekdays) == "cron '0 6 * * 1-5' (UTC)"


# -- pushing to Prefect --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_deployment(prefect_harness: Any) -> Any:
    """The export deployment on the session's test server (as ``serve`` registers it)."""
    return EXPORT_EXPENSE_CLAIMS.to_runner_deployment().apply()


@pytest.fixture
def prefect_schedules(export_deployment: Any) -> Iterator[Any]:
    """A function returning the export deployment's schedules by slug; starts and ends empty."""
    from prefect.client.orchestration import get_client

    def clear() -> None:
        with get_client(sync_client=True) as client:
            for schedule in client.read_deployment_schedules(export_deployment):
                client.delete_deployment_schedule(export_deployment, schedule.id)

    def read() -> dict[str, Any]:
        with get_client(sync_client=True) as client:
            return {s.slug: s for s in client.read_deployment_schedules(export_deployment)}

    clear()
    yield read
    clear()


def _integrations(*type_keys: str, org_slug: str = "bf") -> list[Any]:
    """Integrations of a new organisation ``org_slug`` (one per type key), draft status."""
    from integration_hub.db import hub_session
    from integration_hub.models import Integration

    organisation_id = seed_organisation(org_slug, [])
    rows = []
    with hub_session() as session:
        for type_key in type_keys:
            row = Integration(organisation_id=organisation_id, type_key=type_key)
            session.add(row)
            session.flush()
            rows.append(row)
    return rows


def test_push_creates_updates_and_removes_one_integrations_schedule(
    hub_env: str, prefect_schedules: Any
) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    (row,) = _integrations("xledger")
    slug = f"integration-{row.id}"

    change = scheduler.set_schedule(row, config.OPERATOR, cron="0 2 * * *")
    assert change.pushed is not None and change.pushed.created == [row.id]
    created = prefect_schedules()[slug]
    assert created.schedule == CronSchedule(cron="0 2 * * *", timezone="Europe/Oslo")
    assert created.parameters == {"integration_id": row.id, "trigger": "schedule"}
    assert created.active

    change = scheduler.set_schedule(row, config.OPERATOR, cron="30 5 * * 1-5", timezone="UTC")
    assert change.pushed is not None and change.pushed.updated == [row.id]
    updated = prefect_schedules()[slug]
    assert updated.id == created.id  # the same schedule, changed in place
    assert updated.schedule == CronSchedule(cron="30 5 * * 1-5", timezone="UTC")

    assert scheduler.push(row.id).unchanged == [row.id]

    change = scheduler.set_schedule(row, config.OPERATOR, enabled=False)
    assert change.pushed is not None and change.pushed.removed == [row.id]
    assert slug not in prefect_schedules()
    stored = config.get_schedule(row)
    assert stored is not None and not stored.enabled and stored.cron == "30 5 * * 1-5"


def test_sync_all_creates_missing_fixes_drift_and_deletes_stale(
    hub_env: str, prefect_schedules: Any, export_deployment: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    # Types exported on a schedule (Bufdir is not), so two organisations for four integrations.
    missing, drifted = _integrations("xledger", "dynamics")
    disabled, paused = _integrations("xledger", "dynamics", org_slug="bf2")
    for row in (missing, drifted, paused):
        config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, config.OPERATOR)
    config.set_schedule(disabled, "0 3 * * *", "Europe/Oslo", False, config.OPERATOR)
    config.set_status(paused, IntegrationStatus.PAUSED, config.OPERATOR)

    def create(slug: str, schedule: Any, active: bool = True, **parameters: Any) -> None:
        with get_client(sync_client=True) as client:
            client.create_deployment_schedules(
                export_deployment,
                [
                    DeploymentScheduleCreate(
                        schedule=schedule, active=active, parameters=parameters, slug=slug
                    )
                ],
            )

    # Drift: someone paused it in the Prefect UI and it carries an old time and trigger.
    create(
        f"integration-{drifted.id}",
        CronSchedule(cron="0 4 * * *", timezone="UTC"),
        active=False,
        integration_id=drifted.id,
        trigger="manual",
    )
    stale_cron = CronSchedule(cron="0 3 * * *", timezone="Europe/Oslo")
    create(f"integration-{disabled.id}", stale_cron, integration_id=disabled.id)
    create(f"integration-{paused.id}", stale_cron, integration_id=paused.id)
    create("integration-999", stale_cron, integration_id=999)  # integration deleted
    foreign = IntervalSchedule(interval=timedelta(hours=6))
    create("warehouse-refresh", foreign)  # not ours: left alone

    report = scheduler.sync_all()
    assert report.created == [missing.id]
    assert report.updated == [drifted.id]
    assert sorted(report.removed) == sorted([disabled.id, paused.id, 999])
    assert report.changed

    schedules = prefect_schedules()
    assert set(schedules) == {
        f"integration-{missing.id}",
        f"integration-{drifted.id}",
        "warehouse-refresh",
    }
    repaired = schedules[f"integration-{drifted.id}"]
    assert repaired.active
    assert repaired.schedule == CronSchedule(cron="0 2 * * *", timezone="Europe/Oslo")
    assert repaired.parameters == {"integration_id": drifted.id, "trigger": "schedule"}
    assert scheduler.prefect_state(drifted.id) == "in sync"

    again = scheduler.sync_all()
    assert not again.changed
    assert sorted(again.unchanged) == sorted([missing.id, drifted.id])
    assert str(again) == "schedules in Prefect: 2 unchanged"


def test_without_a_reachable_prefect_the_schedule_is_stored_and_not_pushed(
    hub_env: str, prefect_schedules: Any
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from integration_hub.serving import free_port

    (row,) = _integrations("xledger")
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        change = scheduler.set_schedule(row, config.OPERATOR, cron="0 2 * * *")
    assert change.pushed is None and "does not answer" in (change.not_pushed or "")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        change = scheduler.set_schedule(row, config.OPERATOR, cron="0 1 * * *")
        assert scheduler.prefect_state(row.id).startswith("not checked (PREFECT_API_URL")
    assert change.not_pushed == "PREFECT_API_URL is not set"
    stored = config.get_schedule(row)
    assert stored is not None and stored.cron == "0 1 * * *"
    assert prefect_schedules() == {}
    assert scheduler.sync_all().created == [row.id]  # what serve does when it starts


def test_an_organisation_admin_cannot_schedule_another_organisations_export(
    hub_env: str,
) -> None:
    from integration_hub.services.errors import Forbidden

    (row,) = _integrations("xledger")
    with pytest.raises(Forbidden):
        scheduler.set_schedule(
            row, config.Actor("admin@other", organisation_id=2), cron="0 2 * * *"
        )
    assert config.get_schedule(row) is None


# -- the CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def bf(hub_env: str, prefect_schedules: Any) -> Any:
    """Organisation ``bf`` with an Xledger integration (not configured: scheduling needs none)."""
    org_id = seed_organisation("bf", [])
    config.set_feature_flag(org_id, feature_flag("xledger"), True, config.OPERATOR)
    org = config.organisation("bf")
    return config.integration(org, "xledger", config.OPERATOR, create=True)


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_cli_sets_shows_and_disables_a_daily_schedule(bf: Any, prefect_schedules: Any) -> None:
    result = invoke("schedule", "bf", "xledger")
    assert result.exit_code == 0
    assert "no schedule; set one with --daily 02:00" in result.output

    result = invoke("schedule", "bf", "xledger", "--daily", "02:00", "--timezone", "Europe/Oslo")
    assert result.exit_code == 0, result.output
    assert "schedule saved" in result.output
    assert f"xledger (integration {bf.id}): daily at 02:00 (Europe/Oslo), enabled" in result.output
    assert "added to Prefect at http://127.0.0.1:" in result.output
    assert f"integration-{bf.id}" in prefect_schedules()

    shown = invoke("schedule", "bf", "xledger")
    assert shown.exit_code == 0
    times = [line.strip() for line in shown.output.splitlines() if line.startswith("    ")]
    expected = scheduler.next_runs("0 2 * * *", "Europe/Oslo", 3)
    assert times == [f"{t:%a %Y-%m-%d %H:%M %Z (UTC%z)}" for t in expected]
    assert all(" 02:00 CE" in t for t in times)  # local time, CET or CEST
    assert "in Prefect: in sync" in shown.output

    disabled = invoke("schedule", "bf", "xledger", "--disable")
    assert disabled.exit_code == 0
    assert "daily at 02:00 (Europe/Oslo), disabled" in disabled.output
    assert "next runs" not in disabled.output
    assert "removed from Prefect at" in disabled.output
    assert prefect_schedules() == {}

    enabled = invoke("schedule", "bf", "xledger", "--cron", "15 1 * * 1-5")
    assert "cron '15 1 * * 1-5' (Europe/Oslo), enabled" in enabled.output  # zone kept
    assert prefect_schedules()[f"integration-{bf.id}"].schedule.cron == "15 1 * * 1-5"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--cron", "61 * * * *"), "'61 * * * *' is not a valid cron expression"),
        (("--daily", "02:00", "--timezone", "Europe/Olso"), "unknown time zone 'Europe/Olso'"),
        (("--daily", "25:00"), "'25:00' is not a time of day like 02:00"),
        (("--daily", "02:00", "--cron", "0 2 * * *"), "either --daily or --cron, not both"),
        (("--disable", "--daily", "03:00"), "--disable keeps the stored schedule"),
    ],
    ids=["bad-cron", "unknown-zone", "bad-time", "both", "disable-and-set"],
)
def test_cli_refuses_a_bad_schedule_and_changes_nothing(
    bf: Any, prefect_schedules: Any, args: tuple[str, ...], message: str
) -> None:
    assert invoke("schedule", "bf", "xledger", "--daily", "02:00").exit_code == 0
    before = prefect_schedules()[f"integration-{bf.id}"]

    result = invoke("schedule", "bf", "xledger", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    stored = config.get_schedule(bf)
    assert stored is not None
    assert (stored.cron, stored.timezone, stored.enabled) == ("0 2 * * *", "Europe/Oslo", True)
    assert prefect_schedules()[f"integration-{bf.id}"].schedule == before.schedule


def test_cli_without_prefect_says_the_schedule_is_stored_for_serve(
    bf: Any, prefect_schedules: Any
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = invoke("schedule", "bf", "xledger", "--daily", "03:30")
    assert result.exit_code == 0, result.output
    assert "not pushed to Prefect now (PREFECT_API_URL is not set)" in result.output
    assert "`integrations serve` pushes it when it starts" in result.output
    assert prefect_schedules() == {}

    synced = invoke("sync-schedules")
    assert synced.exit_code == 0
    assert "schedules in Prefect: 1 created" in synced.output
    assert f"integration-{bf.id}" in prefect_schedules()
