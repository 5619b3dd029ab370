"""``integrations web`` (the admin web app and REST API) and ``integrations users``."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from integration_hub.cli import CLI_ACTOR_NAME, actor, app, friendly_errors

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
    web_app = create_app()  # refuses a half-configured identity provider before listening
    typer.echo(f"Integration Hub web app: http://{host}:{port}/  (API docs: /api/v1/docs)")
    # proxy_headers=False: the app itself decides whose X-Forwarded-For to believe.
    uvicorn.run(web_app, host=host, port=port, log_level="warning", proxy_headers=False)


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


Email = Annotated[str, typer.Argument(help="The account's e-mail address (its sign-in).")]


@users_app.command("disable")
@friendly_errors
def users_disable(email: Email) -> None:
    """Stop a sign-in from working and sign it out everywhere.

    The account and its audit trail stay; `users enable` undoes it."""
    from integration_hub.services import accounts

    ended = accounts.set_disabled(email, True, actor=actor())
    typer.echo(f"Disabled {email.strip().lower()}; ended {ended} session(s).")


@users_app.command("enable")
@friendly_errors
def users_enable(email: Email) -> None:
    """Let a disabled sign-in work again (its old sessions stay ended)."""
    from integration_hub.services import accounts

    accounts.set_disabled(email, False, actor=actor())
    typer.echo(f"Enabled {email.strip().lower()}.")


@users_app.command("reset-password")
@friendly_errors
def users_reset_password(email: Email) -> None:
    """Give an account a new password and sign it out everywhere.

    The password comes from a hidden prompt, stdin or INTEGRATIONS_NEW_PASSWORD, never from the
    command line."""
    from integration_hub.services import accounts

    ended = accounts.reset_password(email, _read_password(), actor=actor())
    typer.echo(f"New password set for {email.strip().lower()}; ended {ended} session(s).")


@users_app.command("revoke-sessions")
@friendly_errors
def users_revoke_sessions(email: Email) -> None:
    """Sign an account out everywhere (a lost laptop, a shared computer)."""
    from integration_hub.services import accounts

    ended = accounts.revoke_sessions(email, actor=actor())
    typer.echo(f"Ended {ended} session(s) of {email.strip().lower()}.")
