"""Ignoring a failed record: one claim that can never go through must not fail every night and
keep its integration "failing" for ever.

An admin ignores one version of a failed record with a note; later runs skip it with the reason
``ignored by <who>: <note>`` (the extract step reads the rows, see
:func:`integration_hub.tasks.context.load_context`), and the health monitor no longer counts its
failure. A version corrected in the volunteer app is a new version, so it is exported again.
Both ignoring and un-ignoring are audited; un-ignoring deletes the row (the audit log keeps who
ignored it, when and why).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.exc import IntegrityError

from integration_hub.db import hub_session
from integration_hub.models import (
    ExportLedger,
    IgnoredRecord,
    Integration,
    LedgerState,
    OutcomeStatus,
    RecordOutcome,
)
from integration_hub.services.configuration import Actor, audit
from integration_hub.services.errors import InvalidInput, NotFound, ServiceError

NOTE_MAX = 500


class AlreadyIgnored(ServiceError):
    """The record version is ignored already (a 409: the state refuses it)."""


def _entry(row: IgnoredRecord) -> dict[str, Any]:
    return {
        "record_type": row.record_type,
        "record_id": row.record_id,
        "record_version": row.record_version,
        "note": row.note,
        "ignored_by": row.ignored_by,
        "run_id": row.run_id,
        "ignored_at": row.created_at.isoformat() if row.created_at else None,
    }


def ignore(
    integration: Integration,
    actor: Actor,
    *,
    record_id: int,
    record_version: int,
    note: str,
    run_id: int | None = None,
) -> dict[str, Any]:
    """Ignore one failed record version of ``integration`` from now on (admins only).

    Refused: an empty note (the next person must know why), a record this integration never
    failed to send (nothing to ignore), one already exported, one already ignored.
    """
    actor.check_change(integration.organisation_id)
    note = " ".join(note.split())
    problems = []
    if not note:
        problems.append("write a note saying why the record is ignored")
    elif len(note) > NOTE_MAX:
        problems.append(f"the note is longer than {NOTE_MAX} characters")
    if problems:
        raise InvalidInput("; ".join(problems), problems)
    outcomes = RecordOutcome.__table__
    with hub_session() as session:
        failed = session.execute(
            select(outcomes.c.record_type, func.max(outcomes.c.run_id))
            .where(
                outcomes.c.integration_id == integration.id,
                outcomes.c.record_id == record_id,
                outcomes.c.record_version == record_version,
                outcomes.c.status == OutcomeStatus.FAILED.value,
            )
            .group_by(outcomes.c.record_type)
        ).first()
        if failed is None:
            raise NotFound(
                f"no run of this integration failed to send record {record_id} "
                f"version {record_version}"
            )
        record_type = str(failed[0])
        sent = session.scalar(
            select(func.count())
            .select_from(ExportLedger)
            .where(
                ExportLedger.integration_id == integration.id,  # type: ignore[arg-type]
                ExportLedger.record_type == record_type,  # type: ignore[arg-type]
                ExportLedger.record_id == record_id,  # type: ignore[arg-type]
                ExportLedger.record_version == record_version,  # type: ignore[arg-type]
                ExportLedger.state == LedgerState.EXPORTED.value,  # type: ignore[arg-type]
            )
        )
        if sent:
            raise InvalidInput(
                f"record {record_id} version {record_version} has been exported since; "
                "there is nothing to ignore"
            )
        existing = _find(session, integration.id or 0, record_type, record_id, record_version)
        if existing is not None:
            raise AlreadyIgnored(_already(existing))
        row = IgnoredRecord(
            integration_id=integration.id or 0,
            record_type=record_type,
            record_id=record_id,
            record_version=record_version,
            note=note,
            ignored_by=actor.name,
            run_id=run_id or int(failed[1]),
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:  # ignored at the same moment by someone else
            session.rollback()
            raise AlreadyIgnored(
                f"record {record_id} version {record_version} is already ignored"
            ) from None
        audit(
            session,
            actor,
            "record.ignored",
            integration,
            record_type=record_type,
            record_id=record_id,
            record_version=record_version,
            note=note,
            run_id=row.run_id,
        )
        return _entry(row)


def _already(row: IgnoredRecord) -> str:
    return (
        f"record {row.record_id} version {row.record_version} is already ignored "
        f"(by {row.ignored_by}: {row.note})"
    )


def _find(
    session: Any, integration_id: int, record_type: str | None, record_id: int, version: int
) -> IgnoredRecord | None:
    query = select(IgnoredRecord).where(
        IgnoredRecord.integration_id == integration_id,  # type: ignore[arg-type]
        IgnoredRecord.record_id == record_id,  # type: ignore[arg-type]
        IgnoredRecord.record_version == version,  # type: ignore[arg-type]
    )
    if record_type is not None:
        query = query.where(IgnoredRecord.record_type == record_type)  # type: ignore[arg-type]
    return session.scalars(query).first()


def unignore(
    integration: Integration, actor: Actor, *, record_id: int, record_version: int
) -> dict[str, Any]:
    """Export the record version again from the next run on (admins only); returns what was
    ignored."""
    actor.check_change(integration.organisation_id)
    with hub_session() as session:
        row = _find(session, integration.id or 0, None, record_id, record_version)
        if row is None:
            raise NotFound(f"record {record_id} version {record_version} is not ignored")
        entry = _entry(row)
        session.delete(row)
        audit(
            session,
            actor,
            "record.unignored",
            integration,
            record_type=row.record_type,
            record_id=record_id,
            record_version=record_version,
            note=row.note,
            ignored_by=row.ignored_by,
        )
    return entry


def list_ignored(integration: Integration, actor: Actor) -> list[dict[str, Any]]:
    """Every ignored record version of ``integration``, newest first."""
    actor.check(integration.organisation_id)
    with hub_session() as session:
        rows = session.scalars(
            select(IgnoredRecord)
            .where(IgnoredRecord.integration_id == integration.id)  # type: ignore[arg-type]
            .order_by(IgnoredRecord.id.desc())  # type: ignore[union-attr]
        ).all()
        return [_entry(r) for r in rows]


def ignored_among(
    integration_id: int, pairs: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], dict[str, Any]]:
    """(record id, version) -> what was ignored, for the given pairs (a page's worth)."""
    wanted = set(pairs)
    if not wanted:
        return {}
    ids = sorted({record_id for record_id, _ in wanted})
    found: dict[tuple[int, int], dict[str, Any]] = {}
    with hub_session() as session:
        for start in range(0, len(ids), 900):
            rows = session.scalars(
                select(IgnoredRecord).where(
                    IgnoredRecord.integration_id == integration_id,  # type: ignore[arg-type]
                    IgnoredRecord.record_id.in_(ids[start : start + 900]),  # type: ignore[attr-defined]
                )
            ).all()
            for row in rows:
                key = (row.record_id, row.record_version)
                if key in wanted:
                    found[key] = _entry(row)
    return found


def not_ignored_clause(outcomes: Any) -> Any:
    """A WHERE clause on ``hub_record_outcomes`` (``outcomes``, a table or alias): the outcome's
    record version is not ignored."""
    ignored = IgnoredRecord.__table__
    return ~exists().where(
        and_(
            ignored.c.integration_id == outcomes.c.integration_id,
            ignored.c.record_type == outcomes.c.record_type,
            ignored.c.record_id == outcomes.c.record_id,
            ignored.c.record_version == outcomes.c.record_version,
        )
    )


def open_failures(run_id: int) -> int:
    """How many of a run's failed records nobody ignored: what still needs a person."""
    outcomes = RecordOutcome.__table__
    with hub_session() as session:
        count = session.scalar(
            select(func.count())
            .select_from(outcomes)
            .where(
                outcomes.c.run_id == run_id,
                outcomes.c.status == OutcomeStatus.FAILED.value,
                not_ignored_clause(outcomes),
            )
        )
    return int(count or 0)
