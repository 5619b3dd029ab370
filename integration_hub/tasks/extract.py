"""Extract: approved claims from the volunteer app's database, as one typed DataFrame.

Then the two reasons a claim is not sent even though it is approved: the organisation excluded
its category, or an earlier version already went out (changing a posted voucher is a person's job).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from integration_hub.mappings.resolver import FAILURE_COLUMNS
from integration_hub.models import Chapter, ClaimStatus, ExpenseClaim, Volunteer

ID_BATCH = 5000
"""Record ids per query when extracting given claims (keeps IN lists within every database's
parameter limits)."""
BOOKKEEPING_ZONE = ZoneInfo("Europe/Oslo")
"""Dates (windows, posting dates) are Norwegian calendar days."""

CATEGORY_LABELS = {
    "mileage": "Kjøregodtgjørelse",
    "travel": "Reise",
    "meals": "Kost",
    "materials": "Materiell",
    "parking": "Parkering",
    "toll": "Bompenger",
}

CLAIM_COLUMNS = {
    "claim_id": "int64",
    "version": "int64",
    "volunteer_id": "int64",
    "category": "string",
    "amount_ore": "int64",
    "distance_km": "string",
    "description": "string",
    "expense_date": "string",
    "approved_date": "string",
    "volunteer_name": "string",
    "employee_number": "string",
    "supplier_number": "string",
    "chapter_code": "string",
    "chapter_name": "string",
}


def claims_query(  # type: ignore[no-untyped-def]
    organisation_id: int,
    since: date | None,
    until: date | None,
    record_ids: list[int] | None = None,
):
    claim, volunteer, chapter = (
        ExpenseClaim.__table__,
        Volunteer.__table__,
        Chapter.__table__,
    )
    query = (
        select(
            claim.c.id.label("claim_id"),
            claim.c.version,
            claim.c.volunteer_id,
            claim.c.category,
            claim.c.amount_ore,
            claim.c.distance_km,
            claim.c.description,
            claim.c.expense_date,
            claim.c.approved_at,
            volunteer.c.name.label("volunteer_name"),
            volunteer.c.employee_number,
            volunteer.c.supplier_number,
            chapter.c.code.label("chapter_code"),
            chapter.c.name.label("chapter_name"),
        )
        .join(volunteer, volunteer.c.id == claim.c.volunteer_id)
        .join(chapter, chapter.c.id == claim.c.chapter_id)
        .where(
            claim.c.organisation_id == organisation_id,
            claim.c.status == ClaimStatus.APPROVED.value,
            claim.c.approved_at.is_not(None),
        )
        .order_by(claim.c.id)
    )
    if record_ids is not None:
        query = query.where(claim.c.id.in_(record_ids))
    if since is not None:
        query = query.where(
            claim.c.approved_at >= datetime.combine(since, time.min, BOOKKEEPING_ZONE)
        )
    if until is not None:
        query = query.where(
            claim.c.approved_at
            < datetime.combine(until + timedelta(days=1), time.min, BOOKKEEPING_ZONE)
        )
    return query


def extract_claims(
    engine: Engine,
    organisation_id: int,
    since: date | None = None,
    until: date | None = None,
    record_ids: list[int] | None = None,
) -> pd.DataFrame:
    """Approved claims whose approval date is within [since, until] (either end open), and
    among ``record_ids`` when given (a retry: the current versions of those claims only)."""
    if record_ids is None:
        batches: list[list[int] | None] = [None]
    else:
        ids = sorted(set(record_ids))
        batches = [ids[i : i + ID_BATCH] for i in range(0, len(ids), ID_BATCH)] or [[]]
    with engine.connect() as connection:
        frames = [
            pd.read_sql(
                claims_query(organisation_id, since, until, batch), connection, coerce_float=False
            )
            for batch in batches
        ]
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    approved = pd.to_datetime(frame.pop("approved_at"), utc=True, format="mixed")
    frame["approved_date"] = approved.dt.tz_convert(BOOKKEEPING_ZONE).dt.strftime("%Y-%m-%d")
    frame["expense_date"] = pd.to_datetime(frame["expense_date"]).dt.strftime("%Y-%m-%d")
    frame["distance_km"] = frame["distance_km"].map(
        lambda v: None if v is None or v != v else str(v)
    )
    frame = frame.astype(CLAIM_COLUMNS)[list(CLAIM_COLUMNS)]
    frame["category_label"] = (
        frame["category"].map(CATEGORY_LABELS).fillna(frame["category"]).astype("string")
    )
    return frame


def _skipped(claims: pd.DataFrame, reasons: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": claims["claim_id"].astype("int64"),
            "record_version": claims["version"].astype("int64"),
            "reason": reasons.astype("string"),
        }
    )[FAILURE_COLUMNS]


def apply_exclusions(
    claims: pd.DataFrame,
    excluded_categories: set[str],
    ignored: Mapping[tuple[int, int], str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(claims to send, skipped claims with why).

    ``ignored`` maps (record id, version) to why an admin ignored that version
    (:func:`integration_hub.tasks.context.ignored_reason`). Only that version is skipped: a
    claim corrected in the app (a new version) goes out again. A claim of an excluded category
    says so, whether or not it is also ignored.
    """
    excluded = claims["category"].isin(sorted(excluded_categories))
    reasons = ("category '" + claims["category"] + "' is excluded from export").where(excluded)
    if ignored:
        pairs = zip(claims["claim_id"], claims["version"], strict=True)
        marked = pd.Series(
            [ignored.get((int(i), int(v))) for i, v in pairs], index=claims.index, dtype="string"
        )
        reasons = reasons.fillna(marked)
        excluded = excluded | marked.notna()
    return claims[~excluded], _skipped(claims[excluded], reasons[excluded])


def drop_already_exported(
    claims: pd.DataFrame, exported: dict[int, tuple[int, str | None]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave out claims already exported; a claim changed since is skipped with why."""
    if not exported or claims.empty:
        return claims, _skipped(claims.iloc[0:0], pd.Series(dtype="string"))
    exported_version = claims["claim_id"].map(lambda i: exported.get(int(i), (None, None))[0])
    same = exported_version.eq(claims["version"]).fillna(False).astype(bool)
    changed = exported_version.notna() & ~same
    references = claims.loc[changed, "claim_id"].map(lambda i: exported[int(i)][1] or "?")
    reasons = (
        "changed in the app after version "
        + exported_version[changed].astype("Int64").astype("string")
        + " was exported ("
        + references.astype("string")
        + "); correct the posted voucher by hand"
    )
    return claims[~same & ~changed], _skipped(claims[changed], reasons)


def not_resent(
    requested: list[tuple[int, int]],
    extracted: pd.DataFrame,
    kept: pd.DataFrame,
    exported: dict[int, tuple[int, str | None]],
) -> pd.DataFrame:
    """For a retry: why a requested record is not sent again, so each one gets an outcome.

    Either it went out meanwhile (a later run or an earlier attempt of this one), or it is no
    longer an approved claim in the volunteer app.
    """
    extracted_ids = {int(i) for i in extracted["claim_id"]}
    kept_ids = {int(i) for i in kept["claim_id"]}
    current = dict(
        zip(extracted["claim_id"].astype(int), extracted["version"].astype(int), strict=True)
    )
    rows = []
    for record_id, version in requested:
        if record_id in kept_ids:
            continue
        if record_id not in extracted_ids:
            rows.append((record_id, version, "no longer an approved claim in the volunteer app"))
        elif exported.get(record_id, (None, None))[0] == current[record_id]:
            rows.append((record_id, current[record_id], "already exported by an earlier run"))
    frame = pd.DataFrame(rows, columns=["record_id", "record_version", "reason"])
    return frame.astype({"record_id": "int64", "record_version": "int64", "reason": "string"})[
        FAILURE_COLUMNS
    ]
