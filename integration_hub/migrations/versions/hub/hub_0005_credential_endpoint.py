"""credentials: the endpoints each secret was entered for

Why: a stored secret only ever goes to the endpoint it was entered for; the binding is also
in the ciphertext's associated data, and this column says what it is (for messages and audit).

Revision ID: hub_0005
Revises: hub_0004
Create Date: 2026-12-02 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "hub_0005"
down_revision: str | Sequence[str] | None = "hub_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hub_credentials", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("endpoint", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("hub_credentials", schema=None) as batch_op:
        batch_op.drop_column("endpoint")
