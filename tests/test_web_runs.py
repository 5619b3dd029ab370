"""Runs and what is done with them, in the web app and its REST API (issue 12 §5 web half, §6):

- "sync now", "dry run" and "retry" submit a run (a Prefect deployment run when Prefect can run
  it, else a background thread of the web app) and never run the flow inside the request; the
  health page shows the run's progress until it finishes;
- any run, record by record: every outcome paged and filtered, failures grouped by reason;
- "ignore this record" with a note: recorded, audited, reversible; the next export skips it and
  it no longer keeps the integration failing;
- a run that did not finish is told by its kind (the target unreachable is no record failure);
- the audit log, and pausing and resuming the schedule;
- operators read (and retry), they get no form that would be refused.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import configure_xledger, record_run
from fastapi.testclient import TestClient
from sqlmodel import func, select
from test_web_health import tables, text_of
from webworld import ADMIN_A, ADMIN_B, OPERATOR, ORG_A, ORG_B, PASSWORD

from integration_hub.db import hub_session
from integration_hub.models import (
    AuditEntry,
    IgnoredRecord,
    IntegrationStatus,
    RecordOutcome,
    SyncRun,
    SyncSchedule,
)
from integration_hub.services import submit

BASE = f"/orgs/{ORG_A}/integrations/xledger"
HEALTH = f"{BASE}/health"
API = f"/api/v1/organisations/{ORG_A}/integrations/xledger"
TEMPLATES = Path(__file__).parents[1] / "integration_hub" / "web" / "templates"
LITERAL = re.compile(r"""\b_\(\s*(?P<q>["'])(?P<text>(?:(?!(?P=q)).)+)(?P=q)""")
"""A text a template translates, quoted either way (as tests/test_web_i18n.py reads them)."""
T0 = datetime(2026, 3, 2, 1, 0, 3, tzinfo=UTC)
TOLL_REASON = "account 7145 does not exist in Xledger; fix the field mapping, then retry"
NUMBER_REASON = (
    "volunteer Ola Nordmann has no employee number in the volunteer app; add it there, then retry"
)


# -- helpers -----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_submissions() -> Iterator[None]:
    """Submissions live in the web app's memory; each test starts and ends with none."""
    submit.forget()
    yield
    submit.forget()


@pytest.fixture
def run_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Submitted runs go to a background thread of the web app, whatever Prefect the session's
    other tests left behind (the Prefect route has its own test)."""
    monkeypatch.setattr(submit, "deployment_for", lambda spec: None)


@pytest.fixture
def hlf_xledger(web: Any) -> Any:
    return configure_xledger(ORG_A, web.sandbox_url, web.xledger_company(ORG_A))


def sign_in(web: Any, email: str, language: str = "en") -> TestClient:
    client = web.client()
    client.cookies.set("ih_lang", language)
    response = client.post("/sign-in", data={"email": email, "password": PASSWORD})
    assert response.status_code == 303, response.text
    return client


def api_client(web: Any, email: str) -> TestClient:
    client = web.client(email)
    client.headers["X-CSRF-Token"] = web.csrf(client)
    return client


def add_outcomes(row: Any, run_id: int, status: str, ids: range, **fields: Any) -> None:
    """Outcomes of ``status`` for records ``ids`` of a run written by ``record_run``."""
    with hub_session() as session:
        for record_id in ids:
            session.add(
                RecordOutcome(
                    run_id=run_id,
                    integration_id=row.id,
                    record_type="expense_claim",
                    record_id=record_id,
                    record_version=1,
                    status=status,
                    amount_ore=fields.get("amount_ore", 10_000),
                    reason=fields.get("reason"),
                    target_reference=fields.get("target_reference"),
                    summary={"category": "travel", "volunteer_name": "Kari Nordmann"},
                )
            )


def failed_run(row: Any, **fields: Any) -> int:
    """A run with three failures, two of them for the same reason, and its other outcomes."""
    run_id = record_run(
        row.id,
        row.organisation_id,
        started_at=fields.pop("started_at", T0),
        failures=[
            {"record_id": 41, "reason": TOLL_REASON, "category": "toll", "amount_ore": 4_400},
            {"record_id": 42, "reason": NUMBER_REASON, "category": "travel", "amount_ore": 1_000},
            {"record_id": 43, "reason": TOLL_REASON, "category": "toll", "amount_ore": 2_950},
        ],
        exported=5,
        skipped=2,
        **fields,
    )
    add_outcomes(row, run_id, "exported", range(1, 6), target_reference="GL-1")
    add_outcomes(
        row, run_id, "skipped", range(6, 8), reason="category 'parking' is excluded from export"
    )
    return run_id


def audit_actions(organisation_id: int) -> list[str]:
    with hub_session() as session:
        return list(
            session.exec(
                select(AuditEntry.action)
                .where(AuditEntry.organisation_id == organisation_id)
                .order_by(AuditEntry.id)  # type: ignore[arg-type]
            ).all()
        )


def run_count() -> int:
    with hub_session() as session:
        return int(session.exec(select(func.count()).select_from(SyncRun)).one())


def submission_id(location: str) -> str:
    found = re.search(r"[?&]submitted=([0-9a-f]{32})$", location)
    assert found, location
    return found.group(1)


# -- one run, record by record -----------------------------------------------------------------
def test_a_run_page_groups_failures_by_reason_and_lists_every_record_failed_first(
    web: Any, hlf_xledger: Any
) -> None:
    older = failed_run(hlf_xledger)
    record_run(hlf_xledger.id, hlf_xledger.organisation_id, started_at=T0 + timedelta(days=1))
    page = sign_in(web, ADMIN_A).get(f"{BASE}/runs/{older}")  # any run, not only the last
    assert page.status_code == 200, page.text
    found, text = tables(page.text), text_of(page.text)
    assert f"<h1>Run {older} of Xledger</h1>" in page.text
    assert "Exported 5 (kr 1 234,56)" in text and "Failed 3 (kr 83,50)" in text

    groups = found["failure-groups"]
    assert groups[0] == ["Reason", "Records", "Amount", "Ignored"]
    assert groups[1] == [TOLL_REASON, "2", "kr 73,50", "0"]  # the largest group first
    assert groups[2] == [NUMBER_REASON, "1", "kr 10,00", "0"]

    outcomes = found["outcomes"]
    assert outcomes[0][:4] == ["Record", "Outcome", "Amount", "Reason"]
    statuses = [row[1] for row in outcomes[1:]]
    assert statuses == ["Failed"] * 3 + ["Skipped"] * 2 + ["Exported"] * 5
    assert [row[0] for row in outcomes[1:4]] == ["41", "42", "43"]
    assert outcomes[4][3] == "category 'parking' is excluded from export"
    assert 'id="record-42"' in page.text
    assert "All (10)" in text and "Failed (3)" in text and "Exported (5)" in text
    # every failed record can be ignored by the admin, from here
    assert page.text.count(f"{BASE}/runs/{older}/ignore?record=") == 3
    assert f'action="{HEALTH}/retry"' in page.text  # retry this run's failures from its page

    only_skipped = sign_in(web, ADMIN_A).get(f"{BASE}/runs/{older}?status=skipped")
    rows = tables(only_skipped.text)["outcomes"][1:]
    assert [row[0] for row in rows] == ["6", "7"]
    assert f"Skipped records of run {older}" in only_skipped.text


def test_a_long_run_is_paged(web: Any, hlf_xledger: Any) -> None:
    run_id = record_run(hlf_xledger.id, hlf_xledger.organisation_id, exported=120)
    add_outcomes(hlf_xledger, run_id, "exported", range(1, 121))
    client = sign_in(web, ADMIN_A)
    first = client.get(f"{BASE}/runs/{run_id}")
    rows = tables(first.text)["outcomes"][1:]
    assert [row[0] for row in rows] == [str(i) for i in range(1, 51)]
    assert "page 1 of 3" in text_of(first.text)
    assert f'href="{BASE}/runs/{run_id}?page=2" rel="next"' in first.text
    last = client.get(f"{BASE}/runs/{run_id}?page=3")
    assert [row[0] for row in tables(last.text)["outcomes"][1:]] == [
        str(i) for i in range(101, 121)
    ]
    assert 'rel="next"' not in last.text and 'rel="prev"' in last.text
    assert client.get(f"{BASE}/runs/{run_id}?status=nonsense").status_code == 422


def test_another_organisations_run_is_not_found_and_unknown_runs_are_404(
    web: Any, hlf_xledger: Any
) -> None:
    run_id = failed_run(hlf_xledger)
    other = sign_in(web, ADMIN_B)
    assert other.get(f"{BASE}/runs/{run_id}").status_code in (403, 404)
    configure_xledger(ORG_B, web.sandbox_url, web.xledger_company(ORG_B))
    own = f"/orgs/{ORG_B}/integrations/xledger/runs/{run_id}"
    response = other.get(own)
    assert response.status_code == 404 and "Kari Nordmann" not in response.text
    admin = sign_in(web, ADMIN_A)
    assert admin.get(f"{BASE}/runs/{run_id + 99}").status_code == 404
    assert admin.get(f"{BASE}/runs/{2**40}").status_code == 422


# -- ignoring a record -------------------------------------------------------------------------
def test_ignoring_a_failed_record_needs_a_note_is_audited_and_stops_the_failing(
    web: Any, hlf_xledger: Any
) -> None:
    from integration_hub.services import configuration as config

    config.set_status(hlf_xledger, IntegrationStatus.ACTIVE, config.Actor("test"))
    run_id = record_run(
        hlf_xledger.id,
        hlf_xledger.organisation_id,
        failures=[{"record_id": 42, "reason": NUMBER_REASON, "amount_ore": 1_000}],
    )
    client = sign_in(web, ADMIN_A)
    before = text_of(client.get(HEALTH).text)
    assert "Status: Failing" in before and "the last run has 1 failed record(s)" in before
    assert "Failing" in text_of(client.get(f"/orgs/{ORG_A}").text)  # the dashboard

    form = client.get(f"{BASE}/runs/{run_id}/ignore?record=42&version=1")
    assert form.status_code == 200
    assert "Ignore record 42" in form.text and NUMBER_REASON in text_of(form.text)
    empty = client.post(
        f"{BASE}/runs/{run_id}/ignore",
        data={"record": 42, "version": 1, "note": "  ", "csrf_token": web.csrf(client)},
    )
    assert empty.status_code == 422
    assert "write a note saying why the record is ignored" in empty.text
    assert 'aria-invalid="true"' in empty.text and 'id="error-summary"' in empty.text

    done = client.post(
        f"{BASE}/runs/{run_id}/ignore",
        data={
            "record": 42,
            "version": 1,
            "note": "settled by hand in Xledger",
            "csrf_token": web.csrf(client),
        },
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"{BASE}/runs/{run_id}?ignored=42#record-42"
    page = client.get(done.headers["location"].split("#")[0])
    assert "Record 42 is ignored" in text_of(page.text)
    assert f"Ignored by {ADMIN_A}: settled by hand in Xledger" in text_of(page.text)
    assert tables(page.text)["failure-groups"][1][3] == "1"  # ignored
    again = client.post(
        f"{BASE}/runs/{run_id}/ignore",
        data={"record": 42, "version": 1, "note": "twice", "csrf_token": web.csrf(client)},
    )
    assert again.status_code == 409 and "is already ignored" in again.text

    health = client.get(HEALTH)
    after = text_of(health.text)
    assert "Status: Active" in after and "No problems found." in after
    assert "1 of them are ignored" in after
    assert f"Ignored by {ADMIN_A}: settled by hand in Xledger" in after
    assert "/health/retry" not in health.text  # nothing left a retry should send
    dashboard = text_of(client.get(f"/orgs/{ORG_A}").text)
    assert "Failing" not in dashboard
    with hub_session() as session:
        stored = session.exec(select(IgnoredRecord)).one()
    assert (stored.record_id, stored.record_version, stored.ignored_by, stored.run_id) == (
        42,
        1,
        ADMIN_A,
        run_id,
    )

    undone = client.post(
        f"{BASE}/runs/{run_id}/unignore",
        data={"record": 42, "version": 1, "csrf_token": web.csrf(client)},
    )
    assert undone.status_code == 303
    assert "Record 42 is no longer ignored" in text_of(client.get(undone.headers["location"]).text)
    assert "the last run has 1 failed record(s)" in text_of(client.get(HEALTH).text)
    assert audit_actions(hlf_xledger.organisation_id)[-2:] == ["record.ignored", "record.unignored"]
    stale = client.post(
        f"{BASE}/runs/{run_id}/unignore",
        data={"record": 42, "version": 1, "csrf_token": web.csrf(client)},
    )
    assert stale.status_code == 409


def test_only_a_record_that_failed_can_be_ignored(web: Any, hlf_xledger: Any) -> None:
    run_id = failed_run(hlf_xledger)
    client = sign_in(web, ADMIN_A)
    exported = client.get(f"{BASE}/runs/{run_id}/ignore?record=1&version=1")
    assert exported.status_code == 200 and "Only a failed record can be ignored." in exported.text
    assert 'name="note"' not in exported.text
    refused = client.post(
        f"{BASE}/runs/{run_id}/ignore",
        data={"record": 999, "version": 1, "note": "x", "csrf_token": web.csrf(client)},
    )
    assert refused.status_code == 404
    with hub_session() as session:
        assert session.exec(select(IgnoredRecord)).all() == []


def test_the_next_export_skips_an_ignored_record_and_exports_a_corrected_version(
    web: Any, quick_flow_runs: None
) -> None:
    from integration_hub.db import app_session
    from integration_hub.flows.export_expense_claims import export_expense_claims
    from integration_hub.models import ExpenseClaim
    from integration_hub.services import configuration as config
    from integration_hub.services import ignored

    token = web.xledger_company(ORG_A)
    row = configure_xledger(ORG_A, web.sandbox_url, token, toll_account="7145")
    first = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert (first["exported"], first["failed"]) == (2, 3)
    toll = sorted(f["record_id"] for f in first["failures"])
    admin = config.Actor(ADMIN_A, row.organisation_id, "admin")
    ignored.ignore(row, admin, record_id=toll[0], record_version=1, note="paid in cash")

    second = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert (second["exported"], second["failed"], second["skipped"]) == (0, 2, 1)
    assert second["skipped_reasons"] == {f"ignored by {ADMIN_A}: paid in cash": 1}
    assert sorted(f["record_id"] for f in second["failures"]) == toll[1:]

    # corrected in the app (a new version): no longer ignored, so it is tried again
    with app_session() as session:
        claim = session.get(ExpenseClaim, toll[0])
        assert claim is not None
        claim.version += 1
        session.add(claim)
    third = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert third["skipped"] == 0 and third["failed"] == 3
    assert len(web.sandbox_state.company(token).ledger) == 2 * 2  # nothing more was posted


def test_apply_exclusions_skips_exactly_the_ignored_versions() -> None:
    from factories import claims_frame

    from integration_hub.tasks.context import ignored_reason
    from integration_hub.tasks.extract import apply_exclusions

    claims = claims_frame(
        [
            {"claim_id": 1, "category": "parking"},
            {"claim_id": 2},
            {"claim_id": 3, "version": 2},
            {"claim_id": 4, "category": "parking"},
        ]
    )
    reason = ignored_reason("kari@hlf.test", "settled by hand")
    kept, skipped = apply_exclusions(
        claims, {"parking"}, {(2, 1): reason, (3, 1): "x", (4, 1): "y"}
    )
    assert kept["claim_id"].tolist() == [3]  # version 2 of claim 3 is not the ignored one
    assert skipped.to_dict("records") == [
        {
            "record_id": 1,
            "record_version": 1,
            "reason": "category 'parking' is excluded from export",
        },
        {
            "record_id": 2,
            "record_version": 1,
            "reason": "ignored by kari@hlf.test: settled by hand",
        },
        {
            "record_id": 4,
            "record_version": 1,
            "reason": "category 'parking' is excluded from export",
        },
    ]
    unchanged, none = apply_exclusions(claims, set(), {})
    assert len(unchanged) == 4 and none.empty


# -- submitting runs ---------------------------------------------------------------------------
def test_sync_now_is_submitted_not_run_in_the_request_and_the_page_follows_it(
    web: Any, hlf_xledger: Any, run_here: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service function the CLI uses runs in a background thread; the request returns at
    once, the page says the run waits or runs (and reloads itself), a second submission is
    refused while it runs, and the page shows the result when it is done."""
    from integration_hub.services import sync

    started, release = threading.Event(), threading.Event()
    calls: list[dict[str, Any]] = []

    def slow_export(org: str, type_key: str, actor: Any, **options: Any) -> dict[str, Any]:
        calls.append({"org": org, "type": type_key, "actor": actor.name, **options})
        run_id = record_run(
            hlf_xledger.id,
            hlf_xledger.organisation_id,
            trigger="manual",
            status="running",
            finished_at=None,
            started_at=datetime.now(UTC),
        )
        started.set()
        assert release.wait(30), "the test never released the run"
        with hub_session() as session:
            run = session.get(SyncRun, run_id)
            assert run is not None
            run.status, run.finished_at = "succeeded", datetime.now(UTC)
            session.add(run)
        return {"run_id": run_id}

    monkeypatch.setattr(sync, "run_export", slow_export)
    client = sign_in(web, ADMIN_A)
    page = client.get(HEALTH)
    assert 'action="/orgs/hlf/integrations/xledger/health/sync"' in page.text
    assert "Sync now" in page.text and "Dry run" in page.text

    response = client.post(f"{HEALTH}/sync", data={"mode": "sync", "csrf_token": web.csrf(client)})
    assert response.status_code == 303  # back at once: the run is still held by the test
    location = response.headers["location"]
    assert location.startswith(f"{HEALTH}?submitted=")
    assert not release.is_set()
    assert started.wait(30)
    running = client.get(location)
    assert running.headers.get("refresh") == "3"
    assert re.search(r"Run \d+ is running", text_of(running.text))
    assert "/health/sync" not in running.text  # no second start while it runs
    busy = client.post(f"{HEALTH}/sync", data={"mode": "sync", "csrf_token": web.csrf(client)})
    assert busy.status_code == 409 and "has not finished yet" in text_of(busy.text)

    release.set()
    assert submit.wait(submission_id(location), timeout=30)
    finished = client.get(location)
    assert "refresh" not in finished.headers
    text = text_of(finished.text)
    assert re.search(r"Run \d+ has finished: 10 record\(s\) exported, 0 failed, 0 skipped", text)
    assert calls == [
        {"org": ORG_A, "type": "xledger", "actor": ADMIN_A, "dry_run": False, "trigger": "manual"}
    ]


def test_sync_now_and_a_dry_run_through_the_real_flow(
    web: Any, quick_flow_runs: None, run_here: None
) -> None:
    token = web.xledger_company(ORG_A)
    configure_xledger(ORG_A, web.sandbox_url, token, toll_account="7145")
    client = sign_in(web, ADMIN_A)

    dry = client.post(f"{HEALTH}/sync", data={"mode": "dry_run", "csrf_token": web.csrf(client)})
    assert dry.status_code == 303
    assert submit.wait(submission_id(dry.headers["location"]), timeout=60)
    text = text_of(client.get(dry.headers["location"]).text)
    assert re.search(r"The dry run \(run \d+\) has finished; nothing was sent\.", text)
    assert "2 record(s) would be exported." in text
    assert "3 record(s) would fail and 0 are skipped." in text
    assert web.sandbox_state.company(token).ledger == []

    real = client.post(f"{HEALTH}/sync", data={"mode": "sync", "csrf_token": web.csrf(client)})
    assert submit.wait(submission_id(real.headers["location"]), timeout=60)
    after = client.get(real.headers["location"])
    text = text_of(after.text)
    assert re.search(r"Run (\d+) has finished: 2 record\(s\) exported, 3 failed, 0 skipped", text)
    assert "the last run has 3 failed record(s)" in text
    assert len(web.sandbox_state.company(token).ledger) == 2 * 2
    with hub_session() as session:
        runs = session.exec(select(SyncRun).order_by(SyncRun.id)).all()  # type: ignore[arg-type]
    assert [(r.trigger, r.dry_run) for r in runs] == [("manual", True), ("manual", False)]


def test_a_refused_submission_says_why_on_the_page(
    web: Any, hlf_xledger: Any, run_here: None
) -> None:
    client = sign_in(web, ADMIN_A)
    clean = record_run(hlf_xledger.id, hlf_xledger.organisation_id)
    before = run_count()
    response = client.post(
        f"{HEALTH}/retry", data={"run_id": clean, "csrf_token": web.csrf(client)}
    )
    assert response.status_code == 422 and "Nothing was retried." in response.text
    bufdir = client.post(
        f"/orgs/{ORG_A}/integrations/bufdir/health/sync",
        data={"mode": "sync", "csrf_token": web.csrf(client)},
    )
    assert bufdir.status_code in (404, 422)
    missing = client.get(f"{HEALTH}?submitted={'0' * 32}")
    assert missing.status_code == 200
    assert "does not know that run request" in text_of(missing.text)
    assert run_count() == before


def test_prefect_runs_a_submitted_sync_when_it_serves_the_deployment(
    web: Any, hlf_xledger: Any, prefect_harness: Path
) -> None:
    """With a Prefect API and the export deployment served (a Runner polled it), "sync now"
    creates a deployment flow run with the integration's parameters and returns; the page
    waits for it, and shows the hub run once the flow run has recorded one."""
    from prefect.client.orchestration import get_client

    from integration_hub.deployments import EXPORT_EXPENSE_CLAIMS

    deployment_id = EXPORT_EXPENSE_CLAIMS.to_runner_deployment().apply()
    with get_client(sync_client=True) as prefect:
        prefect.get_scheduled_flow_runs_for_deployments([deployment_id])  # as a Runner polls
    try:
        client = sign_in(web, ADMIN_A)
        response = client.post(
            f"{HEALTH}/sync", data={"mode": "sync", "csrf_token": web.csrf(client)}
        )
        assert response.status_code == 303
        submitted = submit.progress(
            submission_id(response.headers["location"]), hlf_xledger, _admin(hlf_xledger)
        )
        assert submitted["via"] == "prefect" and submitted["phase"] == "queued"
        with get_client(sync_client=True) as prefect:
            flow_run = prefect.read_flow_run(uuid.UUID(submitted["flow_run_id"]))
        assert flow_run.deployment_id == deployment_id
        assert flow_run.parameters == {
            "integration_id": hlf_xledger.id,
            "dry_run": False,
            "trigger": "manual",
        }
        assert run_count() == 0  # nothing ran here
        waiting = client.get(response.headers["location"])
        assert waiting.headers.get("refresh") == "3"
        assert re.search(r"Prefect runs it \(now: (Scheduled|Late)\)", text_of(waiting.text))
        again = client.post(f"{HEALTH}/sync", data={"mode": "sync", "csrf_token": web.csrf(client)})
        assert again.status_code == 409

        run_id = record_run(  # what the flow run records when a worker has run it
            hlf_xledger.id,
            hlf_xledger.organisation_id,
            trigger="manual",
            flow_run_id=str(flow_run.id),
        )
        done = text_of(client.get(response.headers["location"]).text)
        assert f"Run {run_id} has finished: 10 record(s) exported, 0 failed, 0 skipped." in done
    finally:
        with get_client(sync_client=True) as prefect:
            prefect.pause_deployment(deployment_id)  # nobody serves it for the next tests


def _admin(row: Any) -> Any:
    from integration_hub.services.configuration import Actor

    return Actor(ADMIN_A, row.organisation_id, "admin")


# -- a run that did not finish -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("failure", "minutes", "sentence"),
    [
        (
            "unreachable",
            12,
            "Xledger could not be reached; the hub retried for 12 minutes and will try again "
            "at the next run",
        ),
        (
            "unreachable",
            0.5,
            "Xledger could not be reached; the hub retried for 30 seconds and will try again "
            "at the next run",
        ),
        (
            "refused",
            1,
            "Xledger refused the last run; an admin must act on its reason, then run it again",
        ),
        (
            "cancelled",
            1,
            "a person stopped the last run before it finished; running it again continues "
            "where it stopped",
        ),
    ],
)
def test_a_run_that_did_not_finish_is_told_by_its_kind_not_as_record_failures(
    web: Any, hlf_xledger: Any, failure: str, minutes: float, sentence: str
) -> None:
    run_id = record_run(
        hlf_xledger.id,
        hlf_xledger.organisation_id,
        status="failed",
        failure=failure,
        error="Xledger could not be reached (ConnectError); the hub tried again for 12 min "
        "and gave up. Nothing was lost: the next run sends what this one could not",
        exported=0,
        failed=0,
        finished_at=T0 + timedelta(minutes=minutes),
    )
    client = sign_in(web, ADMIN_A)
    text = text_of(client.get(HEALTH).text)
    assert f"Needs attention {sentence}" in text
    assert f"Why it stopped {sentence}" in text
    assert "No record of the last run failed." in text
    run_page = text_of(client.get(f"{BASE}/runs/{run_id}").text)
    assert sentence in run_page and "No record of this run failed." in run_page
    detail = api_client(web, ADMIN_A).get(f"/api/v1/runs/{run_id}").json()
    assert (detail["failure"], detail["stopped"]) == (failure, sentence)


def test_an_unreachable_target_reads_in_bokmal(web: Any, hlf_xledger: Any) -> None:
    record_run(
        hlf_xledger.id,
        hlf_xledger.organisation_id,
        status="failed",
        failure="unreachable",
        error="x",
        failed=0,
        finished_at=T0 + timedelta(minutes=30),
    )
    text = text_of(sign_in(web, ADMIN_A, "nb").get(HEALTH).text)
    assert (
        "Xledger kunne ikke nås; huben prøvde igjen i 30 minutter og prøver på nytt ved neste "
        "kjøring" in text
    )
    assert "could not be reached" not in text and "Sync now" not in text
    assert "Eksporter nå" in text and "Prøvekjøring" in text


# -- pausing the schedule, the audit log -------------------------------------------------------
def test_pause_and_resume_the_schedule_from_the_health_page(web: Any, hlf_xledger: Any) -> None:
    from integration_hub.services import configuration as config

    config.set_schedule(hlf_xledger, "0 2 * * *", "Europe/Oslo", True, config.Actor("test"))
    client = sign_in(web, ADMIN_A)
    assert "Pause scheduled runs" in client.get(HEALTH).text
    paused = client.post(
        f"{HEALTH}/schedule", data={"enabled": "false", "csrf_token": web.csrf(client)}
    )
    assert paused.status_code == 303
    assert paused.headers["location"].startswith(f"{HEALTH}?schedule=paused")
    page = text_of(client.get(paused.headers["location"]).text)
    assert "Scheduled runs are paused" in page
    assert "Next scheduled run Scheduled runs are switched off" in page
    assert "Resume scheduled runs" in page
    with hub_session() as session:
        stored = session.exec(select(SyncSchedule)).one()
    assert (stored.enabled, stored.cron, stored.timezone) == (False, "0 2 * * *", "Europe/Oslo")

    resumed = client.post(
        f"{HEALTH}/schedule", data={"enabled": "true", "csrf_token": web.csrf(client)}
    )
    assert "Scheduled runs are resumed." in text_of(client.get(resumed.headers["location"]).text)
    with hub_session() as session:
        assert session.exec(select(SyncSchedule)).one().enabled is True
    audit = client.get(f"/orgs/{ORG_A}/audit")
    entries = tables(audit.text)["audit"]
    assert [row[1] for row in entries[1:3]] == ["Schedule saved", "Schedule saved"]
    assert "enabled: True" in entries[1][4] and "enabled: False" in entries[2][4]


def test_the_audit_log_is_the_organisations_own_newest_first_and_paged(
    web: Any, hlf_xledger: Any
) -> None:
    from integration_hub.services import configuration as config

    client = sign_in(web, ADMIN_A)  # signing in is audited too: done first
    api = api_client(web, ADMIN_A)
    with hub_session() as session:
        for i in range(55):
            config.audit(
                session, config.Actor(ADMIN_A), "exclusions.set", hlf_xledger, categories=[str(i)]
            )
        config.audit(session, config.Actor("run"), "credential.used", hlf_xledger, field="t")
    first = client.get(f"/orgs/{ORG_A}/audit")
    assert first.status_code == 200
    rows = tables(first.text)["audit"]
    assert rows[0] == ["When", "What", "Who", "Integration", "Details"]
    assert len(rows) == 1 + 50
    assert rows[1][1:4] == ["Excluded categories saved", ADMIN_A, "Xledger"]
    assert rows[1][4] == "categories: 54"  # the newest first
    assert "Stored secret used" not in first.text  # each use is left out by default
    assert "Also show each use of a stored secret (1)" in text_of(first.text)
    second = client.get(f"/orgs/{ORG_A}/audit?page=2")
    older = tables(second.text)["audit"][1:]
    assert older[0][4] == "categories: 4" and 'rel="prev"' in second.text
    with_uses = client.get(f"/orgs/{ORG_A}/audit?uses=true")
    assert "Stored secret used" in with_uses.text

    assert sign_in(web, ADMIN_B).get(f"/orgs/{ORG_A}/audit").status_code == 403
    assert sign_in(web, OPERATOR).get(f"/orgs/{ORG_A}/audit").status_code == 200
    body = api.get(f"/api/v1/organisations/{ORG_A}/audit?per_page=5").json()
    assert (body["per_page"], len(body["entries"]), body["uses_total"]) == (5, 5, 1)
    assert body["entries"][0]["details"] == {"categories": ["54"]}
    assert api_client(web, ADMIN_B).get(f"/api/v1/organisations/{ORG_A}/audit").status_code == 403


# -- operators read ----------------------------------------------------------------------------
def test_operators_read_and_retry_but_get_no_form_that_would_be_refused(
    web: Any, hlf_xledger: Any
) -> None:
    from integration_hub.services import configuration as config

    config.set_schedule(hlf_xledger, "0 2 * * *", "Europe/Oslo", True, config.Actor("test"))
    run_id = failed_run(hlf_xledger)
    operator = sign_in(web, OPERATOR)
    health = operator.get(HEALTH)
    assert health.status_code == 200
    assert "/health/sync" not in health.text and "/health/schedule" not in health.text
    assert "/health/retry" in health.text  # operators may retry runs
    run_page = operator.get(f"{BASE}/runs/{run_id}")
    assert run_page.status_code == 200
    assert "/ignore?" not in run_page.text and "/unignore" not in run_page.text
    assert operator.get(f"{BASE}/runs/{run_id}/ignore?record=41&version=1").status_code == 403
    csrf = web.csrf(operator)
    for path, data in [
        (f"{BASE}/runs/{run_id}/ignore", {"record": 41, "version": 1, "note": "x"}),
        (f"{HEALTH}/sync", {"mode": "sync"}),
        (f"{HEALTH}/schedule", {"enabled": "false"}),
    ]:
        assert operator.post(path, data={**data, "csrf_token": csrf}).status_code == 403, path
    with hub_session() as session:
        assert session.exec(select(IgnoredRecord)).all() == []
        assert session.exec(select(SyncSchedule)).one().enabled is True
    assert run_count() == 1


def test_changes_without_the_csrf_token_are_refused(web: Any, hlf_xledger: Any) -> None:
    run_id = failed_run(hlf_xledger)
    client = sign_in(web, ADMIN_A)
    for path, data in [
        (f"{BASE}/runs/{run_id}/ignore", {"record": 41, "version": 1, "note": "x"}),
        (f"{HEALTH}/sync", {"mode": "sync"}),
        (f"{HEALTH}/schedule", {"enabled": "false"}),
    ]:
        assert client.post(path, data=data).status_code == 403, path
    with hub_session() as session:
        assert session.exec(select(IgnoredRecord)).all() == []
    assert run_count() == 1


# -- the REST API ------------------------------------------------------------------------------
def test_the_api_pages_a_runs_outcomes_and_groups_its_failures(web: Any, hlf_xledger: Any) -> None:
    run_id = failed_run(hlf_xledger)
    client = api_client(web, ADMIN_A)
    detail = client.get(f"/api/v1/runs/{run_id}")
    assert detail.status_code == 200
    groups = detail.json()["failure_groups"]
    assert [(g["reason"], g["count"], g["amount_ore"]) for g in groups] == [
        (TOLL_REASON, 2, 7_350),
        (NUMBER_REASON, 1, 1_000),
    ]
    page = client.get(f"/api/v1/runs/{run_id}/outcomes?per_page=4&page=1").json()
    assert (page["total"], page["pages"], page["counts"]) == (
        10,
        3,
        {"failed": 3, "waiting": 0, "skipped": 2, "exported": 5},
    )
    assert [(i["record_id"], i["status"]) for i in page["items"]] == [
        (41, "failed"),
        (42, "failed"),
        (43, "failed"),
        (6, "skipped"),
    ]
    assert page["items"][0]["amount"] == "kr 44,00"
    exported = client.get(f"/api/v1/runs/{run_id}/outcomes?status=exported").json()
    assert [i["target_reference"] for i in exported["items"]] == ["GL-1"] * 5
    assert client.get(f"/api/v1/runs/{run_id}/outcomes?status=lost").status_code == 422
    other = api_client(web, ADMIN_B)
    assert other.get(f"/api/v1/runs/{run_id}").status_code == 404
    assert other.get(f"/api/v1/runs/{run_id}/outcomes").status_code == 404
    assert api_client(web, OPERATOR).get(f"/api/v1/runs/{run_id}").status_code == 200


def test_the_api_ignores_and_unignores_a_record(web: Any, hlf_xledger: Any) -> None:
    failed_run(hlf_xledger)
    client = api_client(web, ADMIN_A)
    body = {"record_id": 42, "record_version": 1, "note": "settled by hand"}
    created = client.post(f"{API}/ignored", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["ignored_by"] == ADMIN_A
    assert client.post(f"{API}/ignored", json=body).status_code == 409
    assert client.post(f"{API}/ignored", json={**body, "note": ""}).status_code == 422
    assert client.post(f"{API}/ignored", json={**body, "record_id": 1}).status_code == 404
    assert [i["record_id"] for i in client.get(f"{API}/ignored").json()] == [42]
    assert api_client(web, OPERATOR).post(f"{API}/ignored", json=body).status_code == 403
    assert api_client(web, ADMIN_B).delete(f"{API}/ignored/42/1").status_code in (403, 404)
    removed = client.delete(f"{API}/ignored/42/1")
    assert removed.status_code == 200 and removed.json()["note"] == "settled by hand"
    assert client.delete(f"{API}/ignored/42/1").status_code == 404
    assert client.get(f"{API}/ignored").json() == []
    assert audit_actions(hlf_xledger.organisation_id)[-2:] == ["record.ignored", "record.unignored"]


def test_the_api_submits_a_dry_run_and_follows_it(
    web: Any, quick_flow_runs: None, run_here: None
) -> None:
    token = web.xledger_company(ORG_A)
    configure_xledger(ORG_A, web.sandbox_url, token)
    client = api_client(web, ADMIN_A)
    answer = client.post(f"{API}/runs", json={"dry_run": True})
    assert answer.status_code == 202, answer.text
    submitted = answer.json()
    assert (submitted["kind"], submitted["via"]) == ("dry_run", "web")
    assert submitted["phase"] in ("queued", "running", "finished")
    assert submit.wait(submitted["id"], timeout=60)
    followed = client.get(f"{API}/submissions", params={"id": submitted["id"]}).json()
    assert (followed["phase"], followed["done"], followed["would_export"]) == ("finished", True, 5)
    assert followed["run"]["dry_run"] is True and followed["run"]["status"] == "succeeded"
    assert web.sandbox_state.company(token).ledger == []
    assert api_client(web, OPERATOR).post(f"{API}/runs", json={}).status_code == 403
    assert api_client(web, ADMIN_B).get(
        f"{API}/submissions", params={"id": submitted["id"]}
    ).status_code in (403, 404)
    assert client.get(f"{API}/submissions", params={"id": "f" * 32}).status_code == 404


# -- the schema and the words ------------------------------------------------------------------
def test_hub_0008_matches_the_models_and_downgrades_cleanly(hub_env: str) -> None:
    from alembic import command
    from sqlalchemy import inspect
    from test_migration_hub_0002 import _differences

    from integration_hub import db

    assert _differences(hub_env) == []
    command.downgrade(db._alembic_config(hub_env, "hub"), "hub_0007")
    assert "hub_ignored_records" not in inspect(db.engine_for(hub_env)).get_table_names()
    db.upgrade("hub")
    assert _differences(hub_env) == []


def test_every_text_of_the_run_pages_has_a_bokmal_entry() -> None:
    from integration_hub.web import i18n
    from integration_hub.web.pages.audit import ACTION_LABELS

    catalogue = i18n.catalogue()
    texts = set()
    for name in ("run.html", "ignore.html", "audit.html", "_submission.html", "health.html"):
        source = (TEMPLATES / name).read_text(encoding="utf-8")
        texts |= {m.group("text") for m in LITERAL.finditer(source)}
    assert len(texts) > 100
    assert sorted(t for t in texts if t not in catalogue) == []
    assert [t for t in ACTION_LABELS.values() if t not in catalogue] == []


def test_the_run_page_speaks_bokmal(web: Any, hlf_xledger: Any) -> None:
    run_id = failed_run(hlf_xledger)
    text = text_of(sign_in(web, ADMIN_A, "nb").get(f"{BASE}/runs/{run_id}").text)
    assert f"Kjøring {run_id} til Xledger" in text
    assert "Feil etter årsak" in text and "Alle postene" in text
    assert "konto 7145 finnes ikke i Xledger" in text
    assert "Ignorer …" in text
    assert "Failures by reason" not in text and "does not exist" not in text


def test_the_api_submits_a_retry_of_a_runs_failures(
    web: Any, quick_flow_runs: None, run_here: None
) -> None:
    from integration_hub.flows.export_expense_claims import export_expense_claims
    from integration_hub.mappings.spec import load_template
    from integration_hub.services import configuration as config

    token = web.xledger_company(ORG_A)
    row = configure_xledger(ORG_A, web.sandbox_url, token, toll_account="7145")
    first = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert first["failed"] == 3
    mapping = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    mapping["value_maps"]["expense_accounts"]["toll"] = "7140"
    config.save_mapping(row, mapping, config.Actor("test"))

    operator = api_client(web, OPERATOR)  # operators may retry runs
    answer = operator.post(f"{API}/runs", json={"retry_of_run_id": first["run_id"]})
    assert answer.status_code == 202, answer.text
    assert (answer.json()["kind"], answer.json()["retry_of_run_id"]) == ("retry", first["run_id"])
    assert submit.wait(answer.json()["id"], timeout=60)
    done = operator.get(f"{API}/submissions", params={"id": answer.json()["id"]}).json()
    assert done["phase"] == "finished"
    assert (done["run"]["trigger"], done["run"]["exported"], done["run"]["failed"]) == (
        "retry",
        3,
        0,
    )
    assert len(web.sandbox_state.company(token).ledger) == 2 * 5

    admin = api_client(web, ADMIN_A)
    again = admin.post(f"{API}/runs", json={"retry_of_run_id": done["run"]["run_id"]})
    assert again.status_code == 422  # the retry left nothing to retry
    assert admin.post(f"{API}/runs", json={"retry_of_run_id": 999}).status_code == 404
    configure_xledger(ORG_B, web.sandbox_url, web.xledger_company(ORG_B))
    other = api_client(web, ADMIN_B).post(
        f"/api/v1/organisations/{ORG_B}/integrations/xledger/runs",
        json={"retry_of_run_id": first["run_id"]},
    )
    assert other.status_code == 404  # not a run of their integration
