"""``integrations web`` (the admin web app and REST API) and ``integrations users``."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from integration_hub.cli import CLI_ACTOR_NAME, app, friendly_errors

users_app = typer.Typer(help="Sign-ins for the admin web app.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@app.command("web")
@friendly_errors
def web(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Serve the admin web app and the REST API (/api/v1) until Ctrl-C."""
    import uvicorn

    from integration_hub.services import accounts
    from integration_hub.settings import get_settings
    from integration_hub.web.app import create_app

    settings = get_settings()
    host = host or settings.web_host
    port = port or settings.web_port
    # Reading the accounts first turns a database without the schema into one clear message.
    if not accounts.list_users():
        typer.echo("No sign-ins yet: create one with `integrations users add EMAIL --org ORG`.")
    typer.echo(f"Integration Hub web app: http://{host}:{port}/  (API docs: /api/v1/docs)")
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")


def _read_password() -> str:
    """From INTEGRATIONS_NEW_PASSWORD, stdin when piped, or a hidden prompt asked twice."""
    from_env = os.environ.get("INTEGRATIONS_NEW_PASSWORD")
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
@friendly_errors
def users_add(
    email: Annotated[str, typer.Argument(help="The person's e-mail address (their sign-in).")],
    org: Annotated[
        str | None, typer.Option("--org", help="The organisation an admin manages.")
    ] = None,
    role: Annotated[
        str, typer.Option(help="admin (one organisation) or operator (reads all, may retry).")
    ] = "admin",
    name: Annotated[str, typer.Option(help="Display name.")] = "",
) -> None:
    """Create a sign-in. The password comes from a hidden prompt, stdin or
    INTEGRATIONS_NEW_PASSWORD, never from the command line."""
    from integration_hub.services import accounts
    from integration_hub.services.configuration import Actor

    user = accounts.add_user(
        email,
        _read_password(),
        role=role,
        organisation_slug=org,
        display_name=name,
        actor=Actor(CLI_ACTOR_NAME),
    )
    where = f" of {org}" if org else ""
    typer.echo(f"Created {user.role} {user.email}{where}.")


@users_app.command("list")
@friendly_errors
def users_list() -> None:
    """Every sign-in with its role and organisation (never a password hash)."""
    from integration_hub.services import accounts

    for user in accounts.list_users():
        state = " (disabled)" if user.disabled else ""
        typer.echo(f"{user.email}\t{user.role}\torg {user.organisation_id or '-'}{state}")
