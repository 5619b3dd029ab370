"""Starting exports: the one place pages and the CLI go through to run a flow."""

from __future__ import annotations

from datetime import date
from typing import Any

from integration_hub.services.configuration import Actor, integration, organisation
from integration_hub.services.errors import InvalidInput


def run_export(
    org_slug: str,
    type_key: str,
    actor: Actor,
    *,
    since: date | None = None,
    until: date | None = None,
    dry_run: bool = False,
    trigger: str = "manual",
) -> dict[str, Any]:
    """Run the export flow for one integration now and return its summary."""
    if since and until and since > until:
        raise InvalidInput(f"--since {since} is after --until {until}")
    org = organisation(org_slug, actor)
    row = integration(org, type_key, actor)
    from integration_hub.prefect_env import configure_prefect

    configure_prefect()
    from integration_hub.flows.export_expense_claims import export_expense_claims

    return export_expense_claims(
        integration_id=row.id or 0, since=since, until=until, dry_run=dry_run, trigger=trigger
    )
