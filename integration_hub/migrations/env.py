"""Alembic environment: one script directory, two branches (``hub`` and ``app``).

The branch being migrated decides which tables autogenerate may see, so the hub never emits DDL
for the volunteer app's tables and vice versa.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import integration_hub.models  # noqa: F401  (registers every table on SQLModel.metadata)
from integration_hub.db import engine_for
from integration_hub.models import APP_TABLES, HUB_TABLES

config = context.config
side = config.attributes.get("side", "hub")
tables = HUB_TABLES if side == "hub" else APP_TABLES


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    if type_ == "table":
        return name in tables
    table = getattr(obj, "table", None)
    return table is None or table.name in tables


with engine_for(config.attributes["url"]).connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        include_object=include_object,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
