"""Activities -> a Bufdir grant report: extract, exclude, check, aggregate, write (no Prefect).

Every activity of the reporting period ends in exactly one of three places: counted in the
aggregate, skipped (an excluded category, with why) or failed (with a reason a person can act
on in the volunteer app).

Counting rules (what the report's columns mean):

- ``activities``: number of counted activities.
- ``participants``: sum of the activities' participant counts (a person at two activities counts
  twice; the app records counts, not people).
- ``participant_days``: participants x activity days, where an activity lasts
  ``ceil(duration_minutes / 1440)`` days and at least 1 (a two-hour meeting is one day, a
  30-hour weekend course two days, a 49-hour camp three).
- ``volunteer_minutes``: volunteer_count x duration_minutes, exact integers; the report shows
  volunteer hours as ``minutes / 60`` rounded half-up to two decimals only when written.
- ``participants_under_26``: sum of the under-26 counts (an empty under-26 count counts as 0).

The municipality of an activity is its own ``municipality_number``, or its chapter's when the
activity has none; it must be a 4-digit kommunenummer, or the activity fails.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
from sqlalchemy import Engine, select

from integration_hub.adapters.bufdir import (
    EXCLUDE_DRAFT,
    EXCLUDE_NO_PARTICIPANTS,
    TYPE_PREFIX,
)
from integration_hub.models import Activity, ActivityStatus, Chapter
from integration_hub.untrusted import csv_text, markdown_text

MINUTES_PER_DAY = 24 * 60

ACTIVITY_COLUMNS: dict[str, str] = {
    "record_id": "int64",
    "record_version": "int64",
    "chapter_id": "int64",
    "chapter_code": "string",
    "chapter_name": "string",
    "activity_type": "string",
    "activity_date": "object",
    "duration_minutes": "int64",
    "participants": "Int64",
    "participants_under_26": "Int64",
    "volunteer_count": "int64",
    "municipality_number": "string",
    "status": "string",
}
AGGREGATE_COLUMNS = [
    "chapter_code",
    "chapter_name",
    "municipality_number",
    "activities",
    "participants",
    "participant_days",
    "volunteer_minutes",
    "participants_under_26",
]
CSV_COLUMNS = [
    "chapter_code",
    "chapter_name",
    "municipality_number",
    "activities",
    "participants",
    "participant_days",
    "volunteer_hours",
    "participants_under_26",
]


# -- the reporting period ------------------------------------------------------------------------
class PeriodError(ValueError):
    """The period is malformed or not over yet; the message says what to pass instead."""


@dataclass(frozen=True)
class Period:
    label: str  # "2026" or "2026-H1"
    start: date
    end: date  # inclusive

    def closed(self, today: date) -> bool:
        return self.end < today


_PERIOD = re.compile(r"^(\d{4})(?:-H([12]))?$")


def parse_period(text: str) -> Period:
    """``"2026"`` (the calendar year) or ``"2026-H1"`` / ``"2026-H2"`` (a half-year)."""
    match = _PERIOD.match(text.strip().upper())
    if not match:
        raise PeriodError(
            f"reporting period {text!r} is not a year like 2026 or a half-year like 2026-H1"
        )
    year, half = int(match.group(1)), match.group(2)
    if year < 2000:
        raise PeriodError(f"reporting period {text!r} is before 2000")
    if half is None:
        return Period(str(year), date(year, 1, 1), date(year, 12, 31))
    if half == "1":
        return Period(f"{year}-H1", date(year, 1, 1), date(year, 6, 30))
    return Period(f"{year}-H2", date(year, 7, 1), date(year, 12, 31))


def closed_period(text: str, today: date | None = None) -> Period:
    """The parsed period, refused while it is still open (its last day is today or later)."""
    period = parse_period(text)
    today = today or date.today()
    if not period.closed(today):
        raise PeriodError(
            f"reporting period {period.label} is not over yet (it ends {period.end.isoformat()}); "
            "a grant report covers a closed period only"
        )
    return period


# -- extract -------------------------------------------------------------------------------------
def empty_activities() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in ACTIVITY_COLUMNS.items()})


def activities_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows shaped like :data:`ACTIVITY_COLUMNS` -> a typed frame."""
    rows = list(rows)
    if not rows:
        return empty_activities()
    frame = pd.DataFrame(rows)
    for column in ACTIVITY_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[list(ACTIVITY_COLUMNS)].astype(ACTIVITY_COLUMNS)


def extract_activities(engine: Engine, organisation_id: int, period: Period) -> pd.DataFrame:
    """Every activity of the organisation dated within the period, whatever its status."""
    a, c = Activity.__table__, Chapter.__table__
    query = (
        select(
            a.c.id.label("record_id"),
            a.c.version.label("record_version"),
            a.c.chapter_id,
            c.c.code.label("chapter_code"),
            c.c.name.label("chapter_name"),
            a.c.activity_type,
            a.c.activity_date,
            a.c.duration_minutes,
            a.c.participants,
            a.c.participants_under_26,
            a.c.volunteer_count,
            a.c.municipality_number.label("activity_municipality"),
            c.c.municipality_number.label("chapter_municipality"),
            a.c.status,
        )
        .join(c, c.c.id == a.c.chapter_id)
        .where(
            a.c.organisation_id == organisation_id,
            a.c.activity_date >= period.start,
            a.c.activity_date <= period.end,
        )
        .order_by(a.c.id)
    )
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(query)]
    for row in rows:
        own = (row.pop("activity_municipality") or "").strip()
        row["municipality_number"] = own or (row.pop("chapter_municipality") or "").strip()
        row.pop("chapter_municipality", None)
    return activities_frame(rows)


# -- exclusions and checks -----------------------------------------------------------------------
def _with_reason(frame: pd.DataFrame, reason: str | pd.Series) -> pd.DataFrame:
    out = frame.copy()
    out["reason"] = reason
    return out


def apply_exclusions(
    activities: pd.DataFrame, excluded: set[str] | frozenset[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, skipped with why). Categories: ``draft`` (draft and cancelled activities),
    ``no_participants`` (no participant count) and ``type:<activity type>``."""
    skipped: list[pd.DataFrame] = []
    kept = activities
    if EXCLUDE_DRAFT in excluded:
        mask = kept["status"].isin([ActivityStatus.DRAFT.value, ActivityStatus.CANCELLED.value])
        reasons = "excluded category 'draft': the activity is " + kept.loc[mask, "status"]
        skipped.append(_with_reason(kept[mask], reasons.astype("string")))
        kept = kept[~mask]
    if EXCLUDE_NO_PARTICIPANTS in excluded:
        mask = kept["participants"].isna()
        skipped.append(
            _with_reason(
                kept[mask], "excluded category 'no_participants': no participant count recorded"
            )
        )
        kept = kept[~mask]
    types = {e.removeprefix(TYPE_PREFIX) for e in excluded if e.startswith(TYPE_PREFIX)}
    if types:
        mask = kept["activity_type"].isin(sorted(types))
        reasons = "excluded category 'type:" + kept.loc[mask, "activity_type"] + "'"
        skipped.append(_with_reason(kept[mask], reasons.astype("string")))
        kept = kept[~mask]
    skipped_frame = (
        pd.concat(skipped, ignore_index=True) if skipped else _with_reason(activities.iloc[:0], "")
    )
    return kept.reset_index(drop=True), skipped_frame


_KOMMUNENUMMER = re.compile(r"^\d{4}$")


def _problem(row: Any) -> str | None:
    """Why one activity cannot be counted, phrased for the person who fixes it in the app."""
    municipality = "" if pd.isna(row.municipality_number) else str(row.municipality_number)
    if not _KOMMUNENUMMER.match(municipality):
        shown = repr(municipality) if municipality else "(missing)"
        return (
            f"municipality number {shown} is not a 4-digit kommunenummer; fix it in the app "
            f"(activity or chapter {row.chapter_code})"
        )
    if pd.isna(row.participants):
        return (
            "no participant count recorded; enter it in the app, or exclude the category "
            "'no_participants'"
        )
    if int(row.participants) < 0:
        return f"participant count {int(row.participants)} is negative; fix it in the app"
    under_26 = 0 if pd.isna(row.participants_under_26) else int(row.participants_under_26)
    if under_26 < 0 or under_26 > int(row.participants):
        return (
            f"participants under 26 ({under_26}) must be between 0 and the participant count "
            f"({int(row.participants)}); fix it in the app"
        )
    if int(row.duration_minutes) <= 0:
        return f"duration {int(row.duration_minutes)} minutes is not positive; fix it in the app"
    if int(row.volunteer_count) < 0:
        return f"volunteer count {int(row.volunteer_count)} is negative; fix it in the app"
    return None


def check_activities(activities: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(countable, failed with why)."""
    problems = [_problem(row) for row in activities.itertuples(index=False)]
    reasons = pd.Series(problems, index=activities.index, dtype="object")
    bad = reasons.notna()
    failed = _with_reason(activities[bad], reasons[bad].astype("string"))
    return activities[~bad].reset_index(drop=True), failed.reset_index(drop=True)


# -- aggregate -----------------------------------------------------------------------------------
def activity_days(duration_minutes: int) -> int:
    """Calendar-free activity days: ``ceil(minutes / 1440)``, at least 1."""
    return max(1, math.ceil(int(duration_minutes) / MINUTES_PER_DAY))


def aggregate_schema() -> pa.DataFrameSchema:
    count = {"dtype": "int64", "checks": pa.Check.ge(0), "nullable": False}
    return pa.DataFrameSchema(
        {
            "chapter_code": pa.Column("string", nullable=False),
            "chapter_name": pa.Column("string", nullable=False),
            "municipality_number": pa.Column(
                "string", pa.Check.str_matches(r"^\d{4}$"), nullable=False
            ),
            "activities": pa.Column(**count),
            "participants": pa.Column(**count),
            "participant_days": pa.Column(**count),
            "volunteer_minutes": pa.Column(**count),
            "participants_under_26": pa.Column(**count),
        },
        checks=[
            pa.Check(
                lambda df: df["participants_under_26"] <= df["participants"],
                error="participants under 26 exceed participants",
            )
        ],
        strict=True,
        unique=["chapter_code", "municipality_number"],
    )


def aggregate(countable: pd.DataFrame) -> pd.DataFrame:
    """One row per chapter and municipality, validated by :func:`aggregate_schema`."""
    if countable.empty:
        frame = pd.DataFrame(
            {
                c: pd.Series(dtype="string" if i < 3 else "int64")
                for i, c in enumerate(AGGREGATE_COLUMNS)
            }
        )
        return aggregate_schema().validate(frame)
    work = pd.DataFrame(
        {
            "chapter_code": countable["chapter_code"],
            "chapter_name": countable["chapter_name"],
            "municipality_number": countable["municipality_number"],
            "activities": 1,
            "participants": countable["participants"].astype("int64"),
            "participant_days": countable["participants"].astype("int64")
            * countable["duration_minutes"].map(activity_days).astype("int64"),
            "volunteer_minutes": countable["volunteer_count"].astype("int64")
            * countable["duration_minutes"].astype("int64"),
            "participants_under_26": countable["participants_under_26"].fillna(0).astype("int64"),
        }
    )
    frame = (
        work.groupby(["chapter_code", "municipality_number"], as_index=False, sort=True)
        .agg(
            chapter_name=("chapter_name", "first"),
            activities=("activities", "sum"),
            participants=("participants", "sum"),
            participant_days=("participant_days", "sum"),
            volunteer_minutes=("volunteer_minutes", "sum"),
            participants_under_26=("participants_under_26", "sum"),
        )
        .astype({c: "int64" for c in AGGREGATE_COLUMNS[3:]})
        .astype({c: "string" for c in AGGREGATE_COLUMNS[:3]})
    )
    return aggregate_schema().validate(frame[AGGREGATE_COLUMNS])


def volunteer_hours(minutes: int) -> Decimal:
    """Exact minutes -> hours with two decimals, rounded half-up (e.g. 130 -> 2.17)."""
    return (Decimal(int(minutes)) / Decimal(60)).quantize(Decimal("0.01"), ROUND_HALF_UP)


@dataclass(frozen=True)
class ActivityReport:
    """What a period's activities came to: the aggregate and every activity's fate."""

    period: Period
    aggregate: pd.DataFrame
    counted: pd.DataFrame
    skipped: pd.DataFrame  # with reason
    failed: pd.DataFrame  # with reason

    @property
    def extracted(self) -> int:
        return len(self.counted) + len(self.skipped) + len(self.failed)

    def outcomes(self) -> pd.DataFrame:
        """(record_id, record_version, status, reason): one row per activity."""
        parts = []
        for status, frame in (
            ("exported", self.counted),
            ("skipped", self.skipped),
            ("failed", self.failed),
        ):
            parts.append(
                pd.DataFrame(
                    {
                        "record_id": frame["record_id"].astype("int64"),
                        "record_version": frame["record_version"].astype("int64"),
                        "status": status,
                        "reason": frame.get("reason"),
                    }
                )
            )
        return pd.concat(parts, ignore_index=True).sort_values("record_id", ignore_index=True)


def build_report(
    activities: pd.DataFrame, period: Period, excluded: set[str] | frozenset[str]
) -> ActivityReport:
    kept, skipped = apply_exclusions(activities, excluded)
    countable, failed = check_activities(kept)
    return ActivityReport(period, aggregate(countable), countable, skipped, failed)


# -- the report files ----------------------------------------------------------------------------
def report_csv(frame: pd.DataFrame) -> bytes:
    """Semicolon-separated UTF-8 with a header, one row per chapter and municipality.

    The text columns (chapter code and name, municipality) come from the volunteer app and go
    through ``csv_text``: a chapter named ``=HYPERLINK(...)`` must not become a formula when
    the file is opened in a spreadsheet. The number columns are the hub's own counts and hours,
    written as numbers: a ``'`` would turn them into text, and validation keeps them >= 0.
    """
    lines = [";".join(CSV_COLUMNS)]
    for row in frame.itertuples(index=False):
        values = [
            csv_text(row.chapter_code),
            csv_text(row.chapter_name),
            csv_text(row.municipality_number),
            row.activities,
            row.participants,
            row.participant_days,
            volunteer_hours(row.volunteer_minutes),
            row.participants_under_26,
        ]
        lines.append(";".join(_csv_field(v) for v in values))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _csv_field(value: object) -> str:
    text = str(value)
    if any(ch in text for ch in ';"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def report_summary(
    report: ActivityReport, *, organisation: str, org_number: str, csv_name: str, checksum: str
) -> str:
    """The human-readable companion of the CSV (markdown). Everything from the volunteer app
    (names, codes, and the reasons that quote them) goes through ``markdown_text``, so a chapter
    called ``[click](https://...)`` stays text where the summary is rendered."""
    md = markdown_text
    agg = report.aggregate
    totals = {c: int(agg[c].sum()) for c in AGGREGATE_COLUMNS[3:]}
    lines = [
        f"# Bufdir activity report: {md(organisation)} ({md(org_number)}), {report.period.label}",
        "",
        f"Period {report.period.start.isoformat()} to {report.period.end.isoformat()}. "
        f"File `{csv_name}`, SHA-256 `{checksum}`.",
        "",
        f"- activities counted: {len(report.counted)}; skipped: {len(report.skipped)}; "
        f"failed: {len(report.failed)}",
        f"- activities: {totals['activities']}, participants: {totals['participants']}, "
        f"participant days: {totals['participant_days']}, volunteer hours: "
        f"{volunteer_hours(totals['volunteer_minutes'])}, participants under 26: "
        f"{totals['participants_under_26']}",
        "",
        "| chapter | municipality | activities | participants | participant days "
        "| volunteer hours | under 26 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in agg.itertuples(index=False):
        lines.append(
            f"| {md(row.chapter_code)} {md(row.chapter_name)} | {md(row.municipality_number)} "
            f"| {row.activities} | {row.participants} | {row.participant_days} "
            f"| {volunteer_hours(row.volunteer_minutes)} | {row.participants_under_26} |"
        )
    if not report.failed.empty:
        lines += ["", "## Not counted: fix in the app and submit again", ""]
        lines += [f"- activity {r.record_id}: {md(r.reason)}" for r in report.failed.itertuples()]
    if not report.skipped.empty:
        lines += ["", "## Skipped (excluded categories)", ""]
        for reason, n in report.skipped["reason"].value_counts().sort_index().items():
            lines.append(f"- {md(reason)}: {n}")
    lines += [
        "",
        "Participant days = participants x activity days; an activity lasts "
        "ceil(duration / 24 h) days, at least 1. Volunteer hours = volunteers x duration.",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReportFiles:
    csv_path: Path
    summary_path: Path
    sha256: str  # of the CSV
    summary_sha256: str
    csv_bytes: bytes
    summary_text: str


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_report(
    report: ActivityReport,
    *,
    var_dir: Path,
    organisation_slug: str,
    organisation_name: str,
    org_number: str,
    run_id: int,
) -> ReportFiles:
    """Write ``var/reports/<org>/<period>/bufdir-<period>-run<id>.csv`` and ``.md``; earlier
    runs' files stay, so the export history keeps every file with its checksum."""
    folder = var_dir / "reports" / organisation_slug / report.period.label
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"bufdir-activities-{organisation_slug}-{report.period.label}-run{run_id}"
    data = report_csv(report.aggregate)
    checksum = sha256(data)
    csv_path = folder / f"{stem}.csv"
    csv_path.write_bytes(data)
    summary = report_summary(
        report,
        organisation=organisation_name,
        org_number=org_number,
        csv_name=csv_path.name,
        checksum=checksum,
    )
    summary_path = folder / f"{stem}.md"
    summary_path.write_text(summary, encoding="utf-8")
    return ReportFiles(
        csv_path, summary_path, checksum, sha256(summary.encode("utf-8")), data, summary
    )
