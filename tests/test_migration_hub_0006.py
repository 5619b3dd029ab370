"""hub_0006: a Business Central integration that stored ``balancing_account_number`` (a setting
the configuration model now refuses) gets it carried into a new mapping version, G/L balancing
to the same account, and can be opened and saved again. SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlmodel import select

from integration_hub import db
from integration_hub.adapters.dynamics import DynamicsConfig
from integration_hub.db import hub_session
from integration_hub.models import FieldMapping, Integration

SETTINGS = {
    "tenant_id": "contoso.onmicrosoft.com",
    "client_id": "11111111-2222-3333-4444-555555555555",
    "environment": "production",
    "base_url": "https://api.businesscentral.dynamics.com",
    "token_url": "https://login.microsoftonline.com",
}


def test_hub_0006_moves_the_balancing_account_into_the_mapping(hub_env: str) -> None:
    command.downgrade(db._alembic_config(hub_env, "hub"), "hub_0005")
    with hub_session() as session:
        legacy = Integration(
            organisation_id=1,
            type_key="dynamics",
            settings={**SETTINGS, "balancing_account_number": "2910"},
        )
        unset = Integration(
            organisation_id=2,
            type_key="dynamics",
            settings={**SETTINGS, "balancing_account_number": None},
        )
        other = Integration(organisation_id=1, type_key="xledger", settings={"voucher_type": "GL"})
        session.add_all([legacy, unset, other])
        session.flush()
        session.add(
            FieldMapping(
                integration_id=legacy.id or 0,
                version=3,
                document={
                    "target": "dynamics",
                    "record_type": "expense_claim",
                    "fields": {
                        "expense_account": {"constant": "7100"},
                        "payable_account_type": {"constant": "employee"},
                        "counterparty": {"source": "employee_number"},
                    },
                },
                acknowledged_warnings=["a warning seen before"],
            )
        )
        ids = (legacy.id, unset.id, other.id)
    db.upgrade("hub")

    with hub_session() as session:
        rows = {row.id: row for row in session.exec(select(Integration)).all()}
        mappings = session.exec(
            select(FieldMapping)
            .where(FieldMapping.integration_id == ids[0])
            .order_by(FieldMapping.version)
        ).all()
        unset_mappings = session.exec(
            select(FieldMapping).where(FieldMapping.integration_id == ids[1])
        ).all()
    assert "balancing_account_number" not in rows[ids[0]].settings
    assert "balancing_account_number" not in rows[ids[1]].settings
    assert rows[ids[2]].settings == {"voucher_type": "GL"}
    assert [m.version for m in mappings] == [3, 4]
    moved = mappings[-1]
    assert moved.document["fields"]["payable_account_type"] == {"constant": "gl"}
    assert moved.document["fields"]["payable_account"] == {"constant": "2910"}
    assert moved.document["fields"]["counterparty"] == {"source": "employee_number"}
    assert moved.acknowledged_warnings == ["a warning seen before"]
    assert moved.created_by == "migration hub_0006"
    assert unset_mappings == []  # nothing to carry: no mapping version made up
    # Both integrations' settings are valid again.
    DynamicsConfig.model_validate({**rows[ids[0]].settings, "client_secret": "x"})
