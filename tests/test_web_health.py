"""The health monitor page: last run, failures and their reasons, the retry button through the
real retry flow, the export history and the per-day chart (with its figures as a table)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from factories import configure_xledger, record_run
from fastapi.testclient import TestClient
from sqlmodel import func, select
from webworld import ADMIN_A, ADMIN_B, OPERATOR, ORG_A, ORG_B, PASSWORD

from integration_hub.db import hub_session
from integration_hub.models import SyncRun
from integration_hub.web.pages.health import chart_geometry

OSLO = ZoneInfo("Europe/Oslo")
HEALTH = f"/orgs/{ORG_A}/integrations/xledger/health"
TEMPLATES = Path(__file__).parents[1] / "integration_hub" / "web" / "templates"


# -- helpers -----------------------------------------------------------------------------------
class _Tables(HTMLParser):
    """Every table's rows (cell texts), by the table's id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or f"table-{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def text_of(html: str) -> str:
    """The page's text with tags dropped and whitespace folded (entities left as they are)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def sign_in(web: Any, email: str, language: str = "en") -> TestClient:
    client = web.client()
    client.cookies.set("ih_lang", language)
    response = client.post("/sign-in", data={"email": email, "password": PASSWORD})
    assert response.status_code == 303, response.text
    return client


def run_count() -> int:
    with hub_session() as session:
        return int(session.exec(select(func.count()).select_from(SyncRun)).one())


def at_noon(days_ago: int) -> datetime:
    today = datetime.now(OSLO).date()
    return datetime.combine(today - timedelta(days=days_ago), time(12), OSLO).astimezone(UTC)


# -- the chart's geometry, without HTTP --------------------------------------------------------
def _days(*counts: tuple[int, int]) -> list[dict[str, Any]]:
    first = date(2026, 3, 1)
    return [
        {"day": (first + timedelta(days=i)).isoformat(), "exported": e, "failed": f}
        for i, (e, f) in enumerate(counts)
    ]


def test_chart_bars_are_proportional_to_the_counts_and_the_tallest_fills_the_plot() -> None:
    chart = chart_geometry(_days((10, 0), (5, 2), (0, 0), (8, 10)), width=400, height=200)
    plot_height = chart["plot_bottom"] - chart["plot_top"]
    heights = [(d["exported"]["height"], d["failed"]["height"]) for d in chart["days"]]
    assert chart["peak"] == 10
    assert heights[0] == (pytest.approx(plot_height), 0)
    assert heights[1][0] == pytest.approx(plot_height / 2, abs=0.01)
    assert heights[1][1] == pytest.approx(plot_height / 5, abs=0.01)
    assert heights[2] == (0, 0)  # a day with nothing draws no bar
    assert heights[3] == (pytest.approx(plot_height * 0.8, abs=0.01), pytest.approx(plot_height))
    for day in chart["days"]:  # bars stand on the axis, exported left of failed, inside the plot
        for bar in (day["exported"], day["failed"]):
            assert bar["y"] + bar["height"] == pytest.approx(chart["plot_bottom"])
        assert day["exported"]["x"] + day["exported"]["width"] <= day["failed"]["x"] + 0.01
        assert chart["plot_left"] <= day["exported"]["x"]
        assert day["failed"]["x"] + day["failed"]["width"] <= chart["plot_right"]
    xs = [d["exported"]["x"] for d in chart["days"]]
    assert xs == sorted(xs) and len(set(xs)) == 4
    assert [t["value"] for t in chart["ticks"]] == [0, 5, 10]
    assert (chart["total_exported"], chart["total_failed"]) == (23, 12)
    assert [d["label"] for d in chart["days"]] == ["01.03", "02.03", "03.03", "04.03"]
    assert (chart["first"], chart["last"]) == ("2026-03-01", "2026-03-04")


def test_chart_of_all_zero_days_has_no_bars_and_no_division_by_zero() -> None:
    chart = chart_geometry(_days(*[(0, 0)] * 14))
    assert chart["peak"] == 0 and len(chart["days"]) == 14
    assert all(d["exported"]["height"] == d["failed"]["height"] == 0 for d in chart["days"])
    assert [t["value"] for t in chart["ticks"]] == [0]
    assert chart_geometry([])["days"] == []


def test_a_tiny_count_beside_a_large_one_stays_visible() -> None:
    chart = chart_geometry(_days((5000, 1)))
    (day,) = chart["days"]
    assert day["failed"]["height"] == 1.0  # 1/5000 of the plot would be invisible
    assert day["exported"]["height"] == pytest.approx(chart["plot_bottom"] - chart["plot_top"])


# -- the page, from runs written directly ------------------------------------------------------
@pytest.fixture
def hlf_xledger(web: Any) -> Any:
    token = web.xledger_company(ORG_A)
    return configure_xledger(ORG_A, web.sandbox_url, token)


def _three_runs(row: Any) -> dict[str, int]:
    org_id = row.organisation_id
    ids = {
        "old": record_run(row.id, org_id, started_at=at_noon(3), trigger="manual"),
        "yesterday": record_run(
            row.id,
            org_id,
            started_at=at_noon(1),
            failures=[
                {"record_id": 7, "reason": "the claim has no approval date"},
                {"record_id": 8, "reason": "the claim's chapter has no code"},
            ],
            exported=8,
        ),
    }
    ids["last"] = record_run(
        row.id,
        org_id,
        started_at=at_noon(0),
        failures=[
            {
                "record_id": 41,
                "reason": "account 7145 does not exist in Xledger; fix the field mapping, "
                "then retry",
                "category": "toll",
                "volunteer_name": "Kari Nordmann",
                "amount_ore": 4_400,
                "attempt": 1,
            },
            {
                "record_id": 42,
                "reason": "volunteer Ola Nordmann has no employee number in the volunteer app; "
                "add it there, then retry",
                "category": "travel",
                "volunteer_name": "Ola Nordmann",
                "amount_ore": 123_456,
                "attempt": 2,
            },
            {
                "record_id": 43,
                "reason": "Xledger: Account 7145 does not exist (fix the account in the field "
                "mapping, then retry)",
                "category": "toll",
                "volunteer_name": "Kari Nordmann",
                "amount_ore": 2_950,
                "attempt": 1,
            },
        ],
        exported_amount_ore=98_765,
    )
    return ids


def test_the_page_shows_the_last_run_each_failure_the_history_and_the_chart(
    web: Any, hlf_xledger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_UI_URL", "http://127.0.0.1:4200")
    ids = _three_runs(hlf_xledger)
    page = sign_in(web, ADMIN_A).get(HEALTH)
    assert page.status_code == 200, page.text
    html, text = page.text, text_of(page.text)
    found = tables(html)

    assert "<h1>Health of Xledger</h1>" in html
    assert "Status: Draft" in text  # configured, not activated yet
    assert "the last run has 3 failed record(s)" in text
    # the last run: when, how, status, duration, counts and amounts in kroner
    assert f"Run {ids['last']}" in text
    assert format_oslo(at_noon(0)) in text
    assert "How it started Scheduled" in text and "Duration 4.2 s" in text
    assert "Exported 7 (kr 987,65)" in text
    assert "Failed 3 (kr 1 308,06)" in text  # 44,00 + 1 234,56 + 29,50
    assert "3 record(s) of the last run failed." in text

    failures = found["failures"]
    assert failures[0] == ["Record", "Category", "Volunteer", "Amount", "Reason", "Attempt"]
    assert [row[0] for row in failures[1:]] == ["41", "42", "43"]
    assert failures[1][1:4] == ["Bompenger", "Kari Nordmann", "kr 44,00"]
    assert failures[2][3] == "kr 1 234,56"
    assert "account 7145 does not exist in Xledger" in failures[1][4]
    assert "Ola Nordmann has no employee number" in failures[2][4]
    assert "Xledger: Account 7145 does not exist" in failures[3][4]
    assert [row[5] for row in failures[1:]] == ["1", "2", "1"]
    assert f'<caption id="failures-caption">Failed records of run {ids["last"]}' in html

    # the retry button names the count and carries the CSRF token and the run
    assert "Retry the 3 failed records" in html
    form = re.search(
        r'<form method="post" action="([^"]+)" class="retry-form">(.*?)</form>', html, re.S
    )
    assert form and form.group(1) == f"{HEALTH}/retry"
    assert f'name="run_id" value="{ids["last"]}"' in form.group(2)
    assert 'name="csrf_token" value="' in form.group(2)

    # the history: every run newest first, with triggers, counts and amounts
    history = found["history"]
    assert history[0][:4] == ["Run", "Started", "How it started", "Status"]
    assert [row[0] for row in history[1:]] == [str(ids[k]) for k in ("last", "yesterday", "old")]
    assert [row[2] for row in history[1:]] == ["Scheduled", "Scheduled", "Started by hand"]
    assert [row[3] for row in history[1:]] == ["Partly done", "Partly done", "Succeeded"]
    assert [row[4:8] for row in history[1:]] == [
        ["10", "7", "3", "0"],
        ["10", "8", "2", "0"],
        ["10", "10", "0", "0"],
    ]
    assert history[3][8] == "kr 1 234,56"
    # The Prefect UI has no sign-in and shows every organisation's runs: operators only.
    link = "http://127.0.0.1:4200/runs/flow-run/6d1f7a4e-0000-4000-8000-000000000001"
    assert "Prefect" not in html and "127.0.0.1:4200" not in html
    operator_html = sign_in(web, OPERATOR).get(HEALTH).text
    assert operator_html.count(f'<a href="{link}">Prefect run') == 4  # last run + 3 in history

    # the chart: 14 days, its figures in a table, and an SVG a screen reader can name
    days = found["daily-counts"]
    assert days[0] == ["Day", "Exported", "Failed"]
    assert len(days) == 1 + 14
    counts = {row[0]: (int(row[1]), int(row[2])) for row in days[1:]}
    today = datetime.now(OSLO).date()
    assert counts[today.isoformat()] == (7, 3)
    assert counts[(today - timedelta(days=1)).isoformat()] == (8, 2)
    assert counts[(today - timedelta(days=3)).isoformat()] == (10, 0)
    assert sum(e + f for e, f in counts.values()) == 30
    svg = re.search(r"<svg [^>]*>(.*?)</svg>", html, re.S)
    assert (
        svg
        and 'role="img"' in svg.group(0)
        and 'aria-labelledby="chart-title chart-desc"' in svg.group(0)
    )
    assert "25 record(s) exported and 5 failed" in svg.group(1)
    assert len(re.findall(r'<rect class="bar-exported"', svg.group(1))) == 3
    assert len(re.findall(r'<rect class="bar-failed"', svg.group(1))) == 2
    assert 'fill="#1e6b34"' in svg.group(1) and 'fill="#a4161a"' in svg.group(1)
    assert "style=" not in html  # the CSP forbids inline styles
    assert "Exported (left bar of each day)" in html


def format_oslo(moment: datetime) -> str:
    return moment.astimezone(OSLO).strftime("%Y-%m-%d %H:%M")


def test_the_page_speaks_bokmal_including_the_failure_reasons(web: Any, hlf_xledger: Any) -> None:
    _three_runs(hlf_xledger)
    page = sign_in(web, ADMIN_A, "nb").get(HEALTH)
    assert page.status_code == 200
    text = text_of(page.text)
    assert "Helse for Xledger" in text
    assert "Prøv de 3 feilede postene på nytt" in text
    assert "konto 7145 finnes ikke i Xledger; rett feltkoblingen" in text
    assert "frivillig Ola Nordmann har ikke ansattnummer i frivilligappen" in text
    assert "Xledger: konto 7145 finnes ikke (rett kontoen i feltkoblingen" in text
    assert "siste kjøring har 3 feilede poster" in text
    assert "Eksporthistorikk" in text and "Eksporterte og feilede poster per dag" in text
    assert "Varighet 4,2 s" in text
    assert "does not exist" not in text and "Retry the" not in text


def test_every_text_of_the_health_templates_has_a_bokmal_entry() -> None:
    from integration_hub.web import i18n

    catalogue = i18n.catalogue()
    texts = set()
    for name in ("health.html", "_daily_chart.html"):
        source = (TEMPLATES / name).read_text(encoding="utf-8")
        texts |= set(re.findall(r'_\("((?:[^"\\]|\\.)*)"', source))
    assert len(texts) > 40
    assert sorted(t for t in texts if t not in catalogue) == []
    from integration_hub.web.pages.health import CONNECTION_LABELS, TRIGGER_LABELS

    labels = [*TRIGGER_LABELS.values(), *CONNECTION_LABELS.values()]
    assert [t for t in labels if t not in catalogue] == []


def test_an_integration_without_runs_shows_no_retry_and_an_empty_chart(
    web: Any, hlf_xledger: Any
) -> None:
    page = sign_in(web, ADMIN_A).get(HEALTH)
    assert page.status_code == 200
    text = text_of(page.text)
    assert "No export has run yet." in text
    assert "No records were exported or failed in the last 14 days." in text
    assert "/health/retry" not in page.text and "<rect" not in page.text


def test_a_clean_last_run_hides_the_retry_button(web: Any, hlf_xledger: Any) -> None:
    record_run(hlf_xledger.id, hlf_xledger.organisation_id, started_at=at_noon(0))
    page = sign_in(web, ADMIN_A).get(HEALTH)
    text = text_of(page.text)
    assert "No record of the last run failed." in text and "No problems found." in text
    assert "/health/retry" not in page.text and "Retry the" not in page.text


# -- who may see and retry ---------------------------------------------------------------------
def test_another_organisations_admin_can_neither_see_nor_retry(web: Any, hlf_xledger: Any) -> None:
    ids = _three_runs(hlf_xledger)
    before = run_count()
    other = sign_in(web, ADMIN_B)
    page = other.get(HEALTH)
    assert page.status_code in (403, 404)
    assert "Kari Nordmann" not in page.text and "7145" not in page.text
    refused = other.post(
        f"{HEALTH}/retry", data={"run_id": ids["last"], "csrf_token": web.csrf(other)}
    )
    assert refused.status_code in (403, 404)
    # nor through their own organisation's URL with hlf's run
    token_b = web.xledger_company(ORG_B)
    configure_xledger(ORG_B, web.sandbox_url, token_b)
    own_url = f"/orgs/{ORG_B}/integrations/xledger/health/retry"
    response = other.post(own_url, data={"run_id": ids["last"], "csrf_token": web.csrf(other)})
    assert response.status_code in (403, 404)
    assert run_count() == before


def test_the_operator_sees_every_organisations_health_page(web: Any, hlf_xledger: Any) -> None:
    _three_runs(hlf_xledger)
    page = sign_in(web, OPERATOR).get(HEALTH)
    assert page.status_code == 200
    assert "Retry the 3 failed records" in page.text


def test_retry_without_the_csrf_token_is_refused_and_runs_nothing(
    web: Any, hlf_xledger: Any
) -> None:
    ids = _three_runs(hlf_xledger)
    before = run_count()
    client = sign_in(web, ADMIN_A)
    response = client.post(f"{HEALTH}/retry", data={"run_id": ids["last"]})
    assert response.status_code == 403
    wrong = client.post(f"{HEALTH}/retry", data={"run_id": ids["last"], "csrf_token": "x" * 43})
    assert wrong.status_code == 403
    assert run_count() == before


def test_retrying_a_run_with_nothing_to_retry_says_so_and_runs_nothing(
    web: Any, hlf_xledger: Any
) -> None:
    clean = record_run(hlf_xledger.id, hlf_xledger.organisation_id, started_at=at_noon(0))
    before = run_count()
    client = sign_in(web, ADMIN_A)
    response = client.post(
        f"{HEALTH}/retry", data={"run_id": clean, "csrf_token": web.csrf(client)}
    )
    assert response.status_code == 422
    text = text_of(response.text)
    assert "Nothing was retried." in text
    assert f"run {clean} has no failed records to retry" in text
    assert 'role="alert"' in response.text
    assert run_count() == before
    missing = client.post(
        f"{HEALTH}/retry", data={"run_id": clean + 99, "csrf_token": web.csrf(client)}
    )
    assert missing.status_code == 404 and run_count() == before


# -- the retry button through the real retry flow ----------------------------------------------
@pytest.mark.parametrize("who", [ADMIN_A, OPERATOR], ids=["admin", "operator"])
def test_the_retry_button_turns_three_failures_into_exports(
    web: Any, quick_flow_runs: None, who: str
) -> None:
    from integration_hub.flows.export_expense_claims import export_expense_claims
    from integration_hub.mappings.spec import load_template
    from integration_hub.services import configuration as config

    token = web.xledger_company(ORG_A)
    row = configure_xledger(ORG_A, web.sandbox_url, token, toll_account="7145")
    first = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert (first["exported"], first["failed"]) == (2, 3)

    client = sign_in(web, who)
    page = client.get(HEALTH)
    assert page.status_code == 200
    assert "Retry the 3 failed records" in page.text
    assert len(tables(page.text)["failures"]) == 1 + 3
    run_id = re.search(r'name="run_id" value="(\d+)"', page.text)
    assert run_id and int(run_id.group(1)) == first["run_id"]

    # the admin fixes the mapping (Xledger has 7140 for toll), then presses the button
    mapping = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    mapping["value_maps"]["expense_accounts"]["toll"] = "7140"
    config.save_mapping(row, mapping, config.Actor("test"))
    response = client.post(
        f"{HEALTH}/retry", data={"run_id": run_id.group(1), "csrf_token": web.csrf(client)}
    )
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    # The retry is submitted, not run in the request (services/submit.py): wait for it here.
    assert location.startswith(f"{HEALTH}?submitted=")
    from integration_hub.services import submit

    assert submit.wait(location.rsplit("=", 1)[1], timeout=60)

    after = client.get(location)
    assert after.status_code == 200
    text = text_of(after.text)
    assert f"The retry of run {first['run_id']} exported 3 record(s); 0 still failed." in text
    assert "No record of the last run failed." in text
    assert "/health/retry" not in after.text and "Retry the" not in after.text
    history = tables(after.text)["history"]
    assert [row[2] for row in history[1:]] == [
        f"Retry (retry of run {first['run_id']})",
        "Scheduled",
    ]
    assert [row[4:8] for row in history[1:]] == [["3", "3", "0", "0"], ["5", "2", "3", "0"]]
    days = tables(after.text)["daily-counts"]
    today = datetime.now(OSLO).date().isoformat()
    assert [r[1:] for r in days if r[0] == today] == [["5", "3"]]
    assert run_count() == 2
