"""ignored records: record versions an admin chose not to export, with who and why

Why: one claim that can never go through (a test claim, one settled by hand) failed every night
and kept its integration "failing" for ever. An admin now ignores that version with a note; later
runs skip it with the reason, and un-ignoring deletes the row (both audited).

Revision ID: hub_0008
Revises: hub_0007
Create Date: 2026-12-03 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import integration_hub.models.types

revision: str = "hub_0008"
down_revision: str | Sequence[str] | None = "hub_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = integration_hub.models.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "hub_ignored_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("record_type", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("record_version", sa.Integer(), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("ignored_by", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC_TS(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["integration_id"], ["hub_integrations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration_id", "record_type", "record_id", "record_version"),
    )
    op.create_index(
        "ix_hub_ignored_records_integration_id", "hub_ignored_records", ["integration_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_hub_ignored_records_integration_id", table_name="hub_ignored_records")
    op.drop_table("hub_ignored_records")
