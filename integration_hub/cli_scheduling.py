"""CLI commands for running on schedule: ``schedule``, ``sync-schedules`` and ``serve``.

Imported at the end of :mod:`integration_hub.cli`; heavy modules are imported inside the
commands so ``integrations --help`` stays instant.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from integration_hub.cli import _integration, actor, app, friendly_errors


def _show(row: Any, *, check_prefect: bool = True) -> None:
    from integration_hub.services import configuration as config
    from integration_hub.services import scheduler

    stored = config.get_schedule(row)
    label = f"{row.type_key} (integration {row.id})"
    if stored is None:
        typer.echo(f"{label}: no schedule; set one with --daily 02:00 or --cron EXPRESSION")
        return
    state = "enabled" if stored.enabled else "disabled"
    typer.echo(f"{label}: {scheduler.describe(stored)}, {state}")
    if row.status == "paused":
        typer.secho("  the integration is paused: no scheduled runs", fg=typer.colors.YELLOW)
    elif stored.enabled:
        typer.echo("  next runs:")
        for when in scheduler.next_runs_of(stored, 3):
            typer.echo(f"    {when:%a %Y-%m-%d %H:%M %Z (UTC%z)}")
    if check_prefect:
        typer.echo(f"  in Prefect: {scheduler.prefect_state(row.id or 0)}")


@app.command("schedule")
@friendly_errors
def schedule(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    daily: Annotated[
        str | None, typer.Option("--daily", metavar="HH:MM", help="Run every day at HH:MM.")
    ] = None,
    cron: Annotated[
        str | None, typer.Option("--cron", metavar="EXPR", help="A cron expression.")
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone", metavar="ZONE", help="IANA time zone (default: kept, or Europe/Oslo)."
        ),
    ] = None,
    disable: Annotated[bool, typer.Option("--disable", help="Stop scheduled runs.")] = False,
) -> None:
    """Show or set the export schedule; without options, shows it and its next three runs.

    The hub stores it and pushes it to Prefect when a Prefect API is reachable; otherwise
    `integrations serve` pushes it when it starts.
    """
    from integration_hub.prefect_env import configure_prefect
    from integration_hub.services import configuration as config
    from integration_hub.services import scheduler
    from integration_hub.services.errors import InvalidInput

    configure_prefect()
    row = _integration(org, type_key)
    if daily is not None and cron is not None:
        raise InvalidInput("give either --daily or --cron, not both")
    if disable and (daily is not None or cron is not None):
        raise InvalidInput("--disable keeps the stored schedule; give it without --daily/--cron")
    if daily is None and cron is None and timezone is None and not disable:
        _show(row)
        return
    if disable and config.get_schedule(row) is None:
        typer.echo(f"{org} {type_key} has no schedule; nothing to disable")
        return
    change = scheduler.set_schedule(
        row, actor(), daily=daily, cron=cron, timezone=timezone, enabled=not disable
    )
    typer.secho("schedule saved", fg=typer.colors.GREEN)
    _show(row, check_prefect=False)
    if change.pushed is not None:
        report = change.pushed
        done = (
            "added to"
            if report.created
            else "updated in"
            if report.updated
            else "removed from"
            if report.removed
            else "already so in"
        )
        typer.echo(f"  {done} Prefect at {report.api_url}")
    else:
        typer.echo(
            f"  not pushed to Prefect now ({change.not_pushed}); it is stored, and "
            "`integrations serve` pushes it when it starts"
        )


@app.command("sync-schedules")
@friendly_errors
def sync_schedules() -> None:
    """Push every schedule in the hub to Prefect (needs PREFECT_API_URL); repairs drift."""
    from integration_hub.prefect_env import configure_prefect

    configure_prefect()
    from integration_hub.services import scheduler
    from integration_hub.services.errors import InvalidInput

    try:
        report = scheduler.sync_all()
    except scheduler.PrefectUnavailable as exc:
        raise InvalidInput(
            f"cannot push schedules: {exc}; `integrations serve` pushes them when it starts"
        ) from None
    typer.echo(f"{report} ({report.api_url})")


@app.command("serve")
@friendly_errors
def serve(
    port: Annotated[
        int, typer.Option(help="Port of the local Prefect server (and its UI) on 127.0.0.1.")
    ] = 4200,
    resync: Annotated[
        float,
        typer.Option(help="Seconds between pushes of the hub's schedules (0: only at start)."),
    ] = 60.0,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Prefect's logs.")] = False,
    web: Annotated[
        bool, typer.Option("--web/--no-web", help="Also serve the admin web app and REST API.")
    ] = True,
) -> None:
    """Run exports on schedule: serve the deployments, push the hub's schedules, and serve the
    admin web app (INTEGRATIONS_WEB_HOST/PORT, default 127.0.0.1:8300).

    Starts a local Prefect server (state in var/prefect) unless PREFECT_API_URL is set, and
    prints where its UI is. Ctrl-C or SIGTERM stops it; schedules stay active.
    """
    from integration_hub.serving import serve as run_serve

    try:
        run_serve(port=port, verbose=verbose, resync_seconds=resync, web=web, echo=typer.echo)
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down: still a clean stop
        typer.echo("Stopped.")
