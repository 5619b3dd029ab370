"""sync runs: why a run did not finish (unreachable, refused, configuration, cancelled, ...)

Why: the health monitor tells "the target was unreachable" (wait, it retries) from "the target
refused" or a setup problem (an admin must act), instead of parsing the error text.

Revision ID: hub_0007
Revises: hub_0006
Create Date: 2026-12-02 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "hub_0007"
down_revision: str | Sequence[str] | None = "hub_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hub_sync_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failure", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("hub_sync_runs", schema=None) as batch_op:
        batch_op.drop_column("failure")
