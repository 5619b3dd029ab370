"""Business Central: a stored ``balancing_account_number`` setting moves into the field mapping

Why: the G/L balancing mode lives in the mapping alone (``payable_account_type: gl`` with
``payable_account``), and a stored setting is refused by the configuration model, which left an
integration that had one unable to export or to be saved. This carries the setting over as a
new mapping version (what the hub did with it before: every claim credited to that G/L account)
and drops it from the settings, so nothing changes in what is booked and nobody is stuck.

Revision ID: hub_0006
Revises: hub_0005
Create Date: 2026-12-02 23:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from integration_hub.models.types import UTCDateTime

revision: str = "hub_0006"
down_revision: str | Sequence[str] | None = "hub_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEGACY = "balancing_account_number"
MIGRATED_BY = "migration hub_0006"

integrations = sa.table(
    "hub_integrations",
    sa.column("id", sa.Integer),
    sa.column("type_key", sa.String),
    sa.column("settings", sa.JSON),
)
mappings = sa.table(
    "hub_field_mappings",
    sa.column("id", sa.Integer),
    sa.column("integration_id", sa.Integer),
    sa.column("version", sa.Integer),
    sa.column("document", sa.JSON),
    sa.column("acknowledged_warnings", sa.JSON),
    sa.column("created_by", sa.String),
    sa.column("created_at", UTCDateTime(timezone=True)),
)


def _template() -> dict[str, Any]:
    from integration_hub.mappings.spec import load_template

    return load_template("dynamics_expense_claims.yaml").model_dump(mode="json", exclude_none=True)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(integrations.c.id, integrations.c.settings).where(
            integrations.c.type_key == "dynamics"
        )
    ).all()
    for integration_id, settings in rows:
        settings = dict(settings or {})
        if LEGACY not in settings:
            continue
        account = settings.pop(LEGACY)
        if account not in (None, ""):
            latest = bind.execute(
                sa.select(mappings.c.version, mappings.c.document, mappings.c.acknowledged_warnings)
                .where(mappings.c.integration_id == integration_id)
                .order_by(mappings.c.version.desc())
                .limit(1)
            ).first()
            version, document, acknowledged = latest or (0, _template(), [])
            document = dict(document)
            fields = dict(document.get("fields") or {})
            fields["payable_account_type"] = {"constant": "gl"}
            fields["payable_account"] = {"constant": str(account)}
            document["fields"] = fields
            bind.execute(
                mappings.insert().values(
                    integration_id=integration_id,
                    version=version + 1,
                    document=document,
                    acknowledged_warnings=list(acknowledged or []),
                    created_by=MIGRATED_BY,
                    created_at=datetime.now(UTC),
                )
            )
        bind.execute(
            integrations.update()
            .where(integrations.c.id == integration_id)
            .values(settings=settings)
        )


def downgrade() -> None:
    """The mapping versions stay (they are history, and say the same thing)."""
