"""export ledger: settle time and confirming run; runs: records waiting to be confirmed

Why: a request whose answer was lost is looked up at the target only after a settle time (a
commit can land after the client gave up), and each record confirmed at the target gets its
exported outcome in exactly one run: the one that confirmed it.

Revision ID: hub_0004
Revises: hub_0003
Create Date: 2026-12-02 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import integration_hub.models.types

revision: str = "hub_0004"
down_revision: str | Sequence[str] | None = "hub_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = integration_hub.models.types.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("hub_export_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmed_run_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("settle_after", UTC_TS(timezone=True), nullable=True))
    # Rows confirmed before this revision belong to the run that sent them.
    op.execute("UPDATE hub_export_ledger SET confirmed_run_id = run_id WHERE state = 'exported'")
    with op.batch_alter_table("hub_sync_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waiting", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("hub_sync_runs", schema=None) as batch_op:
        batch_op.drop_column("waiting")
    with op.batch_alter_table("hub_export_ledger", schema=None) as batch_op:
        batch_op.drop_column("settle_after")
        batch_op.drop_column("confirmed_run_id")
