"""The database layer on both backends: migrations, constraints, exact values and timestamps.

Every test runs as ``[sqlite]`` (the embedded default) and ``[postgresql]`` (production), because
the two must behave the same for the hub's guarantees to hold on either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from integration_hub import db
from integration_hub.models import (
    APP_TABLES,
    HUB_TABLES,
    Chapter,
    ExpenseClaim,
    ExportLedger,
    Integration,
    LedgerState,
    Organisation,
    Volunteer,
)

WRITES = re.compile(r"^\s*(CREATE|ALTER|DROP|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


def _table_names(url: str) -> set[str]:
    return set(inspect(db.engine_for(url)).get_table_names())


def _current_heads(url: str) -> set[str]:
    with db.engine_for(url).connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def _scripts(url: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(db._alembic_config(url, "hub"))


def _script_heads(url: str) -> set[str]:
    return set(_scripts(url).get_heads())


def _head_branches(url: str) -> set[str]:
    """Branch labels reaching the heads: both sides must be migrated, not just one."""
    scripts = _scripts(url)
    branches: set[str] = set()
    for head in scripts.get_heads():
        revision = scripts.get_revision(head)
        assert revision is not None
        branches |= set(revision.branch_labels)
    return branches


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """Collect every SQL statement the engine executes inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (the stored UTC wall clock); PostgreSQL aware ones."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _seed_claim(session: Session, **overrides: Any) -> ExpenseClaim:
    """An organisation, chapter and volunteer (the foreign keys are enforced) and one claim."""
    org = Organisation(slug="hlf", name="Hørselshemmedes Landsforbund", org_number="940049770")
    session.add(org)
    session.flush()
    assert org.id is not None
    chapter = Chapter(
        organisation_id=org.id, code="0301", name="HLF Oslo", municipality_number="0301"
    )
    session.add(chapter)
    session.flush()
    assert chapter.id is not None
    volunteer = Volunteer(organisation_id=org.id, chapter_id=chapter.id, name="Kari Nordmann")
    session.add(volunteer)
    session.flush()
    assert volunteer.id is not None
    values: dict[str, Any] = {
        "organisation_id": org.id,
        "chapter_id": chapter.id,
        "volunteer_id": volunteer.id,
        "category": "mileage",
        "amount_ore": 10_100,
        "distance_km": Decimal("28.5"),
        "rate_ore_per_km": 350,
        "expense_date": date(2026, 3, 28),
        "status": "approved",
        "description": "Kjøring til årsmøte på Lillehammer",
    }
    claim = ExpenseClaim(**(values | overrides))
    session.add(claim)
    session.flush()
    return claim


def _integration_id(session: Session, organisation_id: int = 1) -> int:
    integration = Integration(organisation_id=organisation_id, type_key="xledger")
    session.add(integration)
    session.flush()
    assert integration.id is not None
    return integration.id


def _ledger_row(integration_id: int, key: str, **overrides: Any) -> ExportLedger:
    values: dict[str, Any] = {
        "idempotency_key": key,
        "organisation_id": 1,
        "integration_id": integration_id,
        "record_type": "expense_claim",
        "record_id": 1,
        "record_version": 1,
        "amount_ore": 10_100,
    }
    return ExportLedger(**(values | overrides))


def test_db_url_is_a_fresh_empty_database(db_url: str) -> None:
    """Tests rely on starting from nothing, on either backend."""
    try:
        assert _table_names(db_url) == set()
    finally:
        db.dispose_engines()


def test_migrations_create_every_table_and_reach_head(hub_env: str) -> None:
    tables = _table_names(hub_env)

    assert tables >= HUB_TABLES | APP_TABLES | {"alembic_version"}
    assert _current_heads(hub_env) == _script_heads(hub_env)
    assert {"hub", "app"} <= _head_branches(hub_env)


def test_second_upgrade_is_a_no_op(hub_env: str) -> None:
    """Re-running migrations (every CLI start may) changes nothing and writes nothing."""
    tables_before = _table_names(hub_env)
    heads_before = _current_heads(hub_env)

    with _statements(db.engine_for(hub_env)) as seen:
        db.upgrade("hub")
        db.upgrade("app")

    assert seen, "the listener saw nothing: alembic used another engine"
    assert [s for s in seen if WRITES.match(s)] == []
    assert _table_names(hub_env) == tables_before
    assert _current_heads(hub_env) == heads_before


def test_expense_claim_round_trip_is_exact(hub_env: str) -> None:
    with db.app_session() as session:
        claim_id = _seed_claim(session).id

    with db.app_session() as session:
        claim = session.get(ExpenseClaim, claim_id)
        assert claim is not None
        assert claim.amount_ore == 10_100
        assert isinstance(claim.amount_ore, int)
        assert claim.distance_km == Decimal("28.5")
        assert claim.expense_date == date(2026, 3, 28)
        assert claim.description == "Kjøring til årsmøte på Lillehammer"
        found = session.exec(select(ExpenseClaim).where(ExpenseClaim.status == "approved")).all()
        assert [c.id for c in found] == [claim_id]


def test_ledger_round_trip_and_duplicate_idempotency_key_is_rejected(hub_env: str) -> None:
    """Invariant 3 (never post twice) rests on this unique constraint, on both backends."""
    with db.hub_session() as session:
        integration_id = _integration_id(session)
        session.add(_ledger_row(integration_id, "hlf:xledger:expense_claim:1:v1"))

    with pytest.raises(IntegrityError), db.hub_session() as session:
        session.add(_ledger_row(integration_id, "hlf:xledger:expense_claim:1:v1", run_id=2))

    with db.hub_session() as session:
        session.add(_ledger_row(integration_id, "hlf:xledger:expense_claim:1:v2", record_version=2))

    with db.hub_session() as session:
        rows = session.exec(select(ExportLedger).order_by(ExportLedger.idempotency_key)).all()
        assert [(r.idempotency_key, r.run_id, r.state) for r in rows] == [
            ("hlf:xledger:expense_claim:1:v1", None, LedgerState.PENDING),
            ("hlf:xledger:expense_claim:1:v2", None, LedgerState.PENDING),
        ]


def test_timezone_aware_datetime_round_trip(hub_env: str) -> None:
    """UTC timestamps come back as the same instant (SQLite: the same naive UTC wall clock).

    The instant is just before Norway's spring-forward, where a local-time mix-up would show.
    """
    instant = datetime(2026, 3, 29, 0, 59, 58, 123_456, tzinfo=UTC)
    with db.app_session() as session:
        claim_id = _seed_claim(session, approved_at=instant).id
    with db.hub_session() as session:
        integration_id = _integration_id(session)
        row = _ledger_row(integration_id, "k1", confirmed_at=instant)
        session.add(row)
        session.flush()
        ledger_id = row.id

    with db.app_session() as session:
        claim = session.get(ExpenseClaim, claim_id)
        assert claim is not None and claim.approved_at is not None
        approved_at = claim.approved_at
    with db.hub_session() as session:
        ledger = session.get(ExportLedger, ledger_id)
        assert ledger is not None and ledger.confirmed_at is not None
        confirmed_at, created_at = ledger.confirmed_at, ledger.created_at

    for value in (approved_at, confirmed_at):
        assert _as_utc(value) == instant
        assert _as_utc(value).utcoffset() == timedelta(0)
    if hub_env.startswith("postgresql"):
        assert approved_at.tzinfo is not None
        assert confirmed_at.tzinfo is not None
        # A server or session in Norwegian time hands back the same instant, at +01:00.
        with db.engine_for(hub_env).connect() as conn:
            conn.execute(text("SET LOCAL TIME ZONE 'Europe/Oslo'"))
            oslo = conn.execute(
                text("SELECT approved_at FROM expense_claims WHERE id = :id"), {"id": claim_id}
            ).scalar_one()
        assert oslo == instant
        assert oslo.utcoffset() == timedelta(hours=1)
    assert abs(_as_utc(created_at) - datetime.now(UTC)) < timedelta(minutes=5)
