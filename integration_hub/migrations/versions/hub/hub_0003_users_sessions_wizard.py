"""users, web sessions, sign-in throttle, the wizard's resume point

Revision ID: hub_0003
Revises: hub_0002
Create Date: 2026-11-24 20:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import integration_hub.models.types

revision: str = "hub_0003"
down_revision: str | Sequence[str] | None = "hub_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = integration_hub.models.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "hub_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
        sa.Column("display_name", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC_TS(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_index("ix_hub_users_organisation_id", "hub_users", ["organisation_id"])
    op.create_table(
        "hub_web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=5), nullable=False),
        sa.Column("created_at", UTC_TS(timezone=True), nullable=False),
        sa.Column("expires_at", UTC_TS(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["hub_users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_hub_web_sessions_user_id", "hub_web_sessions", ["user_id"])
    op.create_table(
        "hub_sign_in_throttle",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", UTC_TS(timezone=True), nullable=False),
        sa.Column("locked_until", UTC_TS(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("hub_integrations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("setup_step", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("hub_integrations", schema=None) as batch_op:
        batch_op.drop_column("setup_step")
    op.drop_table("hub_sign_in_throttle")
    op.drop_index("ix_hub_web_sessions_user_id", table_name="hub_web_sessions")
    op.drop_table("hub_web_sessions")
    op.drop_index("ix_hub_users_organisation_id", table_name="hub_users")
    op.drop_table("hub_users")
