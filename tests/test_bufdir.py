"""Bufdir activity reporting: aggregation rules, exclusions, checks, the report file, the
stand-in API client over real HTTP, and the flow end to end on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from integration_hub.adapters.base import ConnectionStatus, RunAbort
from integration_hub.adapters.bufdir import BufdirAdapter, BufdirConfig, BufdirDeliveryError
from integration_hub.sandbox.bufdir import BufdirSandboxState, create_bufdir_app
from integration_hub.tasks import activities as steps

CLIENT_ID, SECRET = "hub-client", "s3cret-bufdir-key"


def activity(record_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "record_version": 1,
        "chapter_id": 1,
        "chapter_code": "OSL",
        "chapter_name": "Oslo",
        "activity_type": "møte",
        "activity_date": date(2025, 3, 1),
        "duration_minutes": 120,
        "participants": 10,
        "participants_under_26": 3,
        "volunteer_count": 2,
        "municipality_number": "0301",
        "status": "completed",
        **fields,
    }


HAND_MADE = [
    activity(1),  # 10 participants x 1 day; 2 volunteers x 120 min
    activity(2, activity_type="kurs", duration_minutes=1800, participants=5,
             participants_under_26=None, volunteer_count=1),  # 30 h -> 2 days
    activity(3, chapter_code="BRG", chapter_name="Bergen", municipality_number="4601",
             duration_minutes=2941, participants=4, participants_under_26=4,
             volunteer_count=3),  # 49 h 1 min -> 3 days
    activity(4, municipality_number="4601", duration_minutes=10, participants=1,
             participants_under_26=0, volunteer_count=1),  # Oslo chapter, met in Bergen
    activity(5, status="draft"),
    activity(6, status="cancelled", participants=None),
    activity(7, participants=None, participants_under_26=None),
    activity(8, activity_type="tur", participants=20),
    activity(9, municipality_number="301"),
    activity(10, municipality_number=None),
    activity(11, participants=2, participants_under_26=5),
]  # fmt: skip


def by_key(frame: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["chapter_code"], r["municipality_number"]): r for r in frame.to_dict("records")}


# -- plain functions ---------------------------------------------------------------------------
def test_aggregate_per_chapter_and_municipality_exact_numbers() -> None:
    frame = steps.activities_frame(HAND_MADE)
    report = steps.build_report(frame, steps.parse_period("2025"), {"draft", "no_participants"})
    rows = by_key(report.aggregate)
    assert set(rows) == {("OSL", "0301"), ("OSL", "4601"), ("BRG", "4601")}
    # OSL/0301 counts 1, 2 and 8 (tur is not excluded here)
    assert rows[("OSL", "0301")] == {
        "chapter_code": "OSL",
        "chapter_name": "Oslo",
        "municipality_number": "0301",
        "activities": 3,
        "participants": 10 + 5 + 20,
        "participant_days": 10 * 1 + 5 * 2 + 20 * 1,
        "volunteer_minutes": 2 * 120 + 1 * 1800 + 2 * 120,
        "participants_under_26": 3 + 0 + 3,
    }
    assert rows[("BRG", "4601")]["participant_days"] == 4 * 3
    assert rows[("BRG", "4601")]["volunteer_minutes"] == 3 * 2941
    assert rows[("OSL", "4601")]["participant_days"] == 1
    assert steps.volunteer_hours(3 * 2941) == Decimal("147.05")
    assert str(steps.volunteer_hours(10)) == "0.17"
    assert [steps.activity_days(m) for m in (1, 1440, 1441, 2880, 2881)] == [1, 1, 2, 2, 3]
    outcomes = report.outcomes().set_index("record_id")
    assert len(outcomes) == len(HAND_MADE)  # every activity ends somewhere
    assert outcomes["status"].value_counts().to_dict() == {
        "exported": 5,
        "skipped": 3,
        "failed": 3,
    }


def test_exclusions_say_why() -> None:
    frame = steps.activities_frame(HAND_MADE)
    kept, skipped = steps.apply_exclusions(frame, {"draft", "no_participants", "type:tur"})
    reasons = dict(zip(skipped["record_id"], skipped["reason"], strict=True))
    assert reasons == {
        5: "excluded category 'draft': the activity is draft",
        6: "excluded category 'draft': the activity is cancelled",
        7: "excluded category 'no_participants': no participant count recorded",
        8: "excluded category 'type:tur'",
    }
    assert 8 not in set(kept["record_id"])
    # Nothing excluded: a draft is counted, a missing count fails with what to do.
    report = steps.build_report(frame, steps.parse_period("2025"), set())
    failed = dict(zip(report.failed["record_id"], report.failed["reason"], strict=True))
    assert "no participant count recorded; enter it in the app" in failed[7]
    assert 5 in set(report.counted["record_id"])


def test_bad_municipality_and_inconsistent_counts_fail_with_reason() -> None:
    report = steps.build_report(
        steps.activities_frame(HAND_MADE), steps.parse_period("2025"), {"draft"}
    )
    failed = dict(zip(report.failed["record_id"], report.failed["reason"], strict=True))
    assert failed[9].startswith(
        "municipality number '301' is not a 4-digit kommunenummer; fix it in the app"
    )
    assert failed[10].startswith("municipality number (missing) is not a 4-digit kommunenummer")
    assert "participants under 26 (5) must be between 0 and the participant count (2)" in failed[11]


def test_the_activity_falls_back_to_its_chapters_municipality() -> None:
    # extract_activities fills a missing activity municipality from the chapter: covered by the
    # flow test (activity 104); here only the schema's own refusal.
    bad = pd.DataFrame(
        {
            "chapter_code": ["OSL"],
            "chapter_name": ["Oslo"],
            "municipality_number": ["03O1"],
            "activities": [1],
            "participants": [1],
            "participant_days": [1],
            "volunteer_minutes": [1],
            "participants_under_26": [2],
        }
    ).astype({"chapter_code": "string", "chapter_name": "string", "municipality_number": "string"})
    with pytest.raises(Exception, match=r"str_matches|participants under 26"):
        steps.aggregate_schema().validate(bad, lazy=True)


def test_periods_parse_and_an_open_period_is_refused() -> None:
    assert steps.parse_period("2025") == steps.Period("2025", date(2025, 1, 1), date(2025, 12, 31))
    assert steps.parse_period("2026-h1").end == date(2026, 6, 30)
    assert steps.parse_period("2026-H2").start == date(2026, 7, 1)
    for bad in ("26", "2026-H3", "2026-Q1", "1999"):
        with pytest.raises(steps.PeriodError):
            steps.parse_period(bad)
    assert steps.closed_period("2026-H1", today=date(2026, 7, 1)).label == "2026-H1"
    with pytest.raises(steps.PeriodError, match=r"not over yet .* ends 2026-06-30"):
        steps.closed_period("2026-H1", today=date(2026, 6, 30))
    with pytest.raises(steps.PeriodError, match="not over yet"):
        steps.closed_period("2026", today=date(2026, 11, 24))


def test_report_csv_summary_and_checksum(tmp_path: Path) -> None:
    report = steps.build_report(
        steps.activities_frame(HAND_MADE), steps.parse_period("2025"), {"draft"}
    )
    files = steps.write_report(
        report,
        var_dir=tmp_path,
        organisation_slug="hlf",
        organisation_name="HLF",
        org_number="999888777",
        run_id=7,
    )
    assert files.csv_path == tmp_path / "reports/hlf/2025/bufdir-activities-hlf-2025-run7.csv"
    data = files.csv_path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == files.sha256
    assert data.decode("utf-8").splitlines() == [
        "chapter_code;chapter_name;municipality_number;activities;participants;"
        "participant_days;volunteer_hours;participants_under_26",
        "BRG;Bergen;4601;1;4;12;147.05;4",
        "OSL;Oslo;0301;3;35;40;38.00;6",
        "OSL;Oslo;4601;1;1;1;0.17;0",
    ]
    summary = files.summary_path.read_text(encoding="utf-8")
    assert files.sha256 in summary and "2025" in summary
    assert "activity 9: municipality number '301'" in summary


# -- the API client against the sandbox over real HTTP ---------------------------------------
@pytest.fixture(scope="module")
def bufdir_sandbox() -> Iterator[tuple[BufdirSandboxState, str]]:
    from integration_hub.sandbox.server import start_server

    state = BufdirSandboxState()
    state.add_client(CLIENT_ID, SECRET)
    with start_server(create_bufdir_app(state)) as server:
        yield state, server.url


def client(url: str, secret: str = SECRET) -> BufdirAdapter:
    config = BufdirConfig(base_url=url, client_id=CLIENT_ID, client_secret=secret)
    return BufdirAdapter(config, sleep=lambda _s: None)


def test_client_creates_uploads_and_submits(bufdir_sandbox: tuple[BufdirSandboxState, str]) -> None:
    state, url = bufdir_sandbox
    state.set_faults()
    with client(url) as adapter:
        assert adapter.check_connection().status is ConnectionStatus.OK
        submission = adapter.submit_report("999888777", b"a;b\n1;2\n", "# summary\n")
        assert submission.status == "submitted"
        assert adapter.instance_status(submission.instance_id) == "submitted"
    assert submission.requests == 5  # token, instance, two uploads, submit
    assert state.data[submission.instance_id]["aktivitetsrapport"] == b"a;b\n1;2\n"
    instance = state.instances[submission.instance_id]
    assert instance["instanceOwner"]["organisationNumber"] == "999888777"
    # A report type: no record operations to refuse at runtime (tests/test_adapter_contract.py).
    assert not hasattr(adapter, "load") and not hasattr(adapter, "reference_codes")


def test_client_retries_5xx_and_429_then_reports(
    bufdir_sandbox: tuple[BufdirSandboxState, str],
) -> None:
    state, url = bufdir_sandbox
    state.set_faults(fail_5xx=2, throttle_429=1, retry_after=0)
    with client(url) as adapter:
        submission = adapter.submit_report("999888777", b"x\n", "s")
        assert submission.status == "submitted"
        assert submission.requests == 8  # 3 refused attempts + the 5 that worked
        state.set_faults(fail_5xx=10)
        with pytest.raises(BufdirDeliveryError, match=r"after 4 attempts .*HTTP 503"):
            adapter.create_instance("999888777")
    state.set_faults()


def test_client_wrong_secret(bufdir_sandbox: tuple[BufdirSandboxState, str]) -> None:
    state, url = bufdir_sandbox
    state.set_faults()
    with client(url, secret="wrong") as adapter:
        result = adapter.check_connection()
        assert result.status is ConnectionStatus.BAD_CREDENTIALS
        assert "wrong" not in result.detail
        with pytest.raises(RunAbort, match="check the client id and secret"):
            adapter.create_instance("999888777")


# -- the flow, end to end, on SQLite and PostgreSQL -------------------------------------------
def seed_activities() -> int:
    from integration_hub.db import app_session
    from integration_hub.models import Activity, Chapter, Organisation

    with app_session() as session:
        org = Organisation(slug="hlf", name="HLF", org_number="999888777")
        session.add(org)
        session.flush()
        oslo = Chapter(organisation_id=org.id or 0, code="OSL", name="Oslo",
                       municipality_number="0301")  # fmt: skip
        session.add(oslo)
        session.flush()
        rows = [
            (101, dict(participants=10, participants_under_26=3, volunteer_count=2)),
            (102, dict(participants=5, duration_minutes=1800, volunteer_count=1)),
            (103, dict(status="draft")),
            (104, dict(municipality_number=None)),  # falls back to the chapter's 0301
            (105, dict(municipality_number="12")),
            (106, dict(activity_date=date(2026, 1, 5))),  # outside the period
        ]
        for record_id, fields in rows:
            values = {
                "id": record_id,
                "organisation_id": org.id or 0,
                "chapter_id": oslo.id or 0,
                "activity_type": "møte",
                "activity_date": date(2025, 5, 5),
                "duration_minutes": 120,
                "participants": 4,
                "volunteer_count": 1,
                "municipality_number": "0301",
                **fields,
            }
            session.add(Activity(**values))
        return org.id or 0


def configure_bufdir(url: str) -> int:
    from integration_hub.adapters.registry import feature_flag
    from integration_hub.services import configuration as config

    who = config.Actor("test")
    org = config.organisation("hlf")
    config.set_feature_flag(org.id or 0, feature_flag("bufdir"), True, config.OPERATOR)
    row = config.integration(org, "bufdir", who, create=True)
    config.save_configuration(
        row, {"base_url": url, "client_id": CLIENT_ID, "client_secret": SECRET}, who
    )
    assert "no_participants" in config.exclusion_choices(row)
    config.set_exclusions(row, ["draft"], who)
    return row.id or 0


def test_flow_reports_records_and_refuses_an_accidental_resubmission(
    hub_env: str,
    vault_key: Path,
    quick_flow_runs: None,
    bufdir_sandbox: tuple[BufdirSandboxState, str],
) -> None:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.flows.bufdir_report import AlreadySubmitted, export_activities
    from integration_hub.models import AuditEntry, RecordOutcome, SyncRun

    state, url = bufdir_sandbox
    state.set_faults()
    seed_activities()
    integration_id = configure_bufdir(url)

    with pytest.raises(steps.PeriodError, match="not over yet"):
        export_activities(integration_id, "2026")

    summary = export_activities(integration_id, "2025", deliver="api")
    assert summary["status"] == "partial"
    assert (summary["exported"], summary["skipped"], summary["failed"]) == (3, 1, 1)
    report = summary["report"]
    csv = Path(report["csv_path"]).read_bytes()
    assert hashlib.sha256(csv).hexdigest() == report["sha256"]
    assert csv.decode().splitlines()[1] == "OSL;Oslo;0301;3;19;24;36.00;3"
    assert state.data[report["instance_id"]]["aktivitetsrapport"] == csv
    with hub_session() as session:
        outcomes = session.exec(
            select(RecordOutcome).where(RecordOutcome.run_id == summary["run_id"])
        ).all()
    by_id = {(o.record_type, o.record_id): o for o in outcomes}
    assert {k for k in by_id if k[0] == "activity"} == {
        ("activity", i) for i in (101, 102, 103, 104, 105)
    }
    assert by_id[("activity", 105)].status == "failed"
    assert "'12' is not a 4-digit kommunenummer" in (by_id[("activity", 105)].reason or "")
    assert by_id[("activity", 103)].status == "skipped"
    assert by_id[("activity", 101)].target_reference == report["instance_id"]
    assert by_id[("report", summary["run_id"])].summary["sha256"] == report["sha256"]

    with pytest.raises(AlreadySubmitted, match="resubmit=True"):
        export_activities(integration_id, "2025")

    again = export_activities(integration_id, "2025", resubmit=True)
    assert again["trigger"] == "resubmission"
    assert again["report"]["resubmission_of"] == [summary["run_id"]]
    assert again["report"]["sha256"] == report["sha256"]  # same data, same file content
    with hub_session() as session:
        runs = session.exec(select(SyncRun).where(SyncRun.integration_id == integration_id)).all()
        audit = session.exec(
            select(AuditEntry).where(AuditEntry.action == "bufdir.report.resubmitted")
        ).all()
    assert len(runs) == 2  # the refusals started no run
    assert [a.details["previous_run_ids"] for a in audit] == [[summary["run_id"]]]


# -- setup through the wizard's calls, and `integrations report` --------------------------------
def test_setup_without_a_mapping_and_the_report_command(
    hub_env: str,
    vault_key: Path,
    quick_flow_runs: None,
    bufdir_sandbox: tuple[BufdirSandboxState, str],
) -> None:
    from typer.testing import CliRunner

    from integration_hub.adapters.registry import feature_flag
    from integration_hub.cli import app, setup_from_answers
    from integration_hub.services import configuration as config

    state, url = bufdir_sandbox
    state.set_faults()
    org_id = seed_activities()
    config.set_feature_flag(org_id, feature_flag("bufdir"), True, config.OPERATOR)
    lines = setup_from_answers(
        "hlf",
        "bufdir",
        {
            "base_url": url,
            "client_id": CLIENT_ID,
            "credentials": {"client_secret": SECRET},
            "exclusions": ["draft", "no_participants"],
        },
    )
    assert "field mapping: none (Bufdir (tilskuddsrapportering) needs no mapping)" in lines
    assert lines[-1] == "status: active"
    assert not any(SECRET in line for line in lines)
    row = config.integration(config.organisation("hlf"), "bufdir", config.Actor("test"))
    assert row.status == "active"
    assert config.list_exclusions(row) == ["draft", "no_participants"]

    runner = CliRunner()
    first = runner.invoke(app, ["report", "hlf", "--period", "2025"])
    assert first.exit_code == 1, first.output  # activity 105 failed
    assert "counted 3, skipped 1, failed 1 (of 5)" in first.output
    assert "failed 1 x municipality number '12' is not a 4-digit kommunenummer" in first.output
    assert "(activities 105)" in first.output
    assert "0301" in first.output and "36.00" in first.output  # the per-municipality table
    files = [line.split("file:", 1)[1].strip() for line in first.output.splitlines()
             if line.strip().startswith("file:")]  # fmt: skip
    data = Path(files[0]).read_bytes()
    assert f"SHA-256: {hashlib.sha256(data).hexdigest()}" in first.output
    assert "upload the file in Bufdir's portal" in first.output

    refused = runner.invoke(app, ["report", "hlf", "--period", "2025"])
    assert refused.exit_code == 2
    assert "already delivered" in refused.output and "pass --resubmit" in refused.output
    assert "Traceback" not in refused.output

    again = runner.invoke(app, ["report", "hlf", "--period", "2025", "--resubmit"])
    assert again.exit_code == 1, again.output
    assert "(resubmission)" in again.output

    api = runner.invoke(
        app, ["report", "hlf", "--period", "2025", "--deliver", "api", "--resubmit"]
    )
    assert "sent through the API stand-in: instance " in api.output, api.output

    bad = runner.invoke(app, ["report", "hlf", "--period", "2026"])
    assert bad.exit_code == 2
    assert "not over yet" in bad.output
    wrong = runner.invoke(app, ["report", "hlf", "--period", "2025", "--deliver", "fax"])
    assert wrong.exit_code == 2 and "--deliver must be file or api" in wrong.output
