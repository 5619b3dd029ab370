"""hub_0002 (export leases, rate limit slots, a run's retry link) on SQLite and PostgreSQL: the
migrated schema is exactly the models', and the revision downgrades and upgrades cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from integration_hub import db
from integration_hub.models import HUB_TABLES


def _include(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    if type_ == "table":
        return name in HUB_TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name in HUB_TABLES


def _differences(url: str) -> list[object]:
    with db.engine_for(url).connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_object": _include, "compare_type": True}
        )
        return compare_metadata(context, SQLModel.metadata)


def test_hub_0002_matches_the_models_and_downgrades_cleanly(hub_env: str) -> None:
    assert _differences(hub_env) == []
    config = db._alembic_config(hub_env, "hub")
    command.downgrade(config, "hub_0001")
    tables = set(inspect(db.engine_for(hub_env)).get_table_names())
    assert {"hub_export_leases", "hub_rate_limits"}.isdisjoint(tables)
    columns = {c["name"] for c in inspect(db.engine_for(hub_env)).get_columns("hub_sync_runs")}
    assert "retry_of_run_id" not in columns
    db.upgrade("hub")
    assert _differences(hub_env) == []
