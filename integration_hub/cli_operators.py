"""``integrations orgs`` and ``integrations flags``: the hub's operators add organisations and
decide which integration types each is offered (services/tenancy.py; every change audited).

``integrations orgs`` alone still lists the organisations, as it always has. Lines stay within
80 columns: a long organisation name is cut with an ellipsis, the slug never.
"""

from __future__ import annotations

import textwrap
from typing import Annotated, Any

import typer

from integration_hub.cli import actor, app, friendly_errors

orgs_app = typer.Typer(
    help="Organisations and the integration types each is offered (operators).",
    invoke_without_command=True,
)
flags_app = typer.Typer(
    help="Which integration types an organisation is offered (its feature flags).",
    no_args_is_help=True,
)
app.add_typer(orgs_app, name="orgs")
app.add_typer(flags_app, name="flags")

NAME_WIDTH = 24
"""A name is cut to this many characters in lists, so a line stays within 80 columns."""
LINE_WIDTH = 80


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _offered(tenant: Any) -> str:
    return ", ".join(offer.key for offer in tenant.offered) or "none"


def _print_changes(org: str, changes: list[Any]) -> None:
    from integration_hub.untrusted import safe_text

    for change in changes:
        typer.echo(f"{change.key}: {'offered' if change.offered else 'no longer offered'}")
        if change.still_set_up:
            typer.secho(
                safe_text(
                    f"  note: {org}'s {change.name} integration stays as it is "
                    f"({change.still_set_up}): its scheduled exports go on, but its admins no "
                    "longer see it; offer it again to give it back to them"
                ),
                fg=typer.colors.YELLOW,
            )


# -- organisations -----------------------------------------------------------------------------
@orgs_app.callback()
def orgs(ctx: typer.Context) -> None:
    """List organisations and the integration types each is offered; add or rename one."""
    if ctx.invoked_subcommand is None:
        orgs_list()


@orgs_app.command("list")
@friendly_errors
def orgs_list() -> None:
    """Every organisation: slug, name, organisation number and the types it is offered."""
    from integration_hub.services import tenancy
    from integration_hub.untrusted import safe_text

    everyone = tenancy.tenants(actor())
    if not everyone:
        typer.echo("no organisations yet; add one with `integrations orgs add SLUG --name NAME`")
        return
    typer.echo(f"{'SLUG':<16} {'NAME':<{NAME_WIDTH}} {'ORG NO.':<9}  OFFERED")
    for tenant in everyone:
        org = tenant.organisation
        line = f"{org.slug:<16} {_cut(org.name, NAME_WIDTH):<{NAME_WIDTH}} {org.org_number:<9}  "
        # The offered types wrap under their column rather than past the 80th.
        offered = textwrap.wrap(
            _offered(tenant), max(LINE_WIDTH - len(line), 20), break_on_hyphens=False
        ) or ["none"]
        typer.echo(safe_text(line + offered[0]))
        for more in offered[1:]:
            typer.echo(" " * len(line) + more)


@orgs_app.command("add")
@friendly_errors
def orgs_add(
    slug: Annotated[
        str, typer.Argument(help="Short name used in addresses and commands, e.g. hlf.")
    ],
    name: Annotated[str, typer.Option("--name", help="The organisation's name.")],
    org_number: Annotated[
        str, typer.Option("--org-number", help="Organisasjonsnummer, nine digits.")
    ],
    offer: Annotated[
        list[str] | None,
        typer.Option("--offer", metavar="TYPE", help="Offer this integration type (repeatable)."),
    ] = None,
) -> None:
    """Add an organisation (audited), optionally offered some integration types."""
    from integration_hub.services import tenancy
    from integration_hub.untrusted import safe_text

    added = tenancy.add_organisation(slug, name, org_number, actor(), offered=offer or ())
    org = added.organisation
    typer.echo(safe_text(f"added {org.slug}: {org.name} ({org.org_number})"))
    typer.echo(f"offered: {_offered(added)}")
    if not added.offered:
        typer.echo(f"offer a type with `integrations flags enable {org.slug} TYPE`")


@orgs_app.command("rename")
@friendly_errors
def orgs_rename(
    slug: str,
    name: Annotated[str, typer.Argument(help="The new name (the slug stays).")],
) -> None:
    """Give an organisation a new name (audited); its slug stays."""
    from integration_hub.services import tenancy
    from integration_hub.untrusted import safe_text

    changed = tenancy.rename_organisation(slug, name, actor())
    typer.echo(
        safe_text(f"{slug} is now called {name}" if changed else f"{slug} already has that name")
    )


# -- feature flags -----------------------------------------------------------------------------
@flags_app.command("list")
@friendly_errors
def flags_list(
    org: Annotated[str | None, typer.Argument(help="One organisation; all by default.")] = None,
) -> None:
    """Each integration type per organisation: offered or not, and set up or not."""
    from integration_hub.services import tenancy

    who = actor()
    chosen = [tenancy.tenant(org, who)] if org else tenancy.tenants(who)
    for tenant in chosen:
        typer.echo(tenant.organisation.slug)
        for offer in tenant.offers:
            state = "offered" if offer.offered else "not offered"
            set_up = f"  (integration: {offer.status})" if offer.status else ""
            typer.echo(f"  {offer.key:<12} {state:<12}{set_up}".rstrip())


def _switch(org: str, type_key: str, offered: bool) -> None:
    from integration_hub.services import tenancy

    change = tenancy.set_offered(org, type_key, offered, actor())
    if change is None:
        typer.echo(f"{type_key}: already {'offered' if offered else 'not offered'} to {org}")
        return
    _print_changes(org, [change])


@flags_app.command("enable")
@friendly_errors
def flags_enable(org: str, type_key: Annotated[str, typer.Argument(metavar="TYPE")]) -> None:
    """Offer integration type TYPE to ORG (audited)."""
    _switch(org, type_key, True)


@flags_app.command("disable")
@friendly_errors
def flags_disable(org: str, type_key: Annotated[str, typer.Argument(metavar="TYPE")]) -> None:
    """Stop offering TYPE to ORG (audited). An integration already set up is kept as it is."""
    _switch(org, type_key, False)
