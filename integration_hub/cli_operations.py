"""CLI commands for operating exports: ``health``, ``retry``, ``backfill`` and ``alerts``.

Heavy modules (prefect, pandas, rich) are imported inside the commands so ``--help`` stays
instant. Times are shown in Europe/Oslo, the organisations' own time.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from integration_hub.cli import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_STOPPED,
    _date,
    _integration,
    actor,
    announce,
    app,
    friendly_errors,
    print_summary,
    summary_exit_code,
)

SHOWN_ZONE = ZoneInfo("Europe/Oslo")


def console() -> Any:
    """A rich console on stdout; wide enough that tables stay whole when piped."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def when(iso: str | None) -> str:
    """``2026-03-02 02:00:03`` in Oslo time, from a stored ISO timestamp."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone(SHOWN_ZONE).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def window(run: dict[str, Any]) -> str:
    start, end = run.get("window") or (None, None)
    if not start and not end:
        return "all"
    return f"{start or '…'} .. {end or '…'}"


def trigger(run: dict[str, Any]) -> str:
    if run.get("retry_of_run_id"):
        return f"retry of #{run['retry_of_run_id']}"
    return str(run["trigger"])


STATUS_STYLE = {
    "succeeded": "green",
    "partial": "yellow",
    "failed": "red",
    "interrupted": "red",
    "running": "cyan",
}


def status(run: dict[str, Any]) -> str:
    text = str(run["status"]) + (" (dry run)" if run.get("dry_run") else "")
    return f"[{STATUS_STYLE.get(run['status'], 'white')}]{text}[/]"


WIDE_TABLE_COLUMNS = 120
"""Below this many columns (an 80-column terminal), run tables keep what matters: the run, when,
its status and counts; the rest (trigger, window, amounts failed, requests, duration) is in
``--json`` and on the health page."""


def runs_table(runs: list[dict[str, Any]], title: str | None = None, width: int = 200) -> Any:
    """The export history as a table: one row per run, as wide as ``width`` allows."""
    from rich.table import Table

    from integration_hub.money import format_nok

    wide = width >= WIDE_TABLE_COLUMNS
    columns: list[tuple[str, str, Any]] = [
        ("run", "right", lambda r: f"#{r['run_id']}"),
        (
            "started",
            "left",
            lambda r: when(r["started_at"])[0 if wide else 5 : None if wide else 16],
        ),
        ("trigger", "left", trigger),
        ("window", "left", window),
        ("status", "left", status),
        ("exported", "right", lambda r: str(r["exported"])),
        ("failed", "right", lambda r: str(r["failed"])),
        ("skipped", "right", lambda r: str(r["skipped"])),
        ("amount exported", "right", lambda r: format_nok(r["exported_amount_ore"])),
        ("amount failed", "right", lambda r: format_nok(r["failed_amount_ore"])),
        ("requests", "right", lambda r: str(r["requests_sent"])),
        ("duration", "right", lambda r: duration(r["duration_s"])),
    ]
    if not wide:
        narrow = ("run", "started", "status", "exported", "failed", "amount exported")
        columns = [c for c in columns if c[0] in narrow]
        columns[-1] = ("amount", *columns[-1][1:])
    table = Table(title=title, title_justify="left", show_lines=False)
    for name, justify, _value in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    for run in runs:
        table.add_row(*(value(run) for _name, _justify, value in columns))
    return table


# -- health ------------------------------------------------------------------------------------
@app.command("health")
@friendly_errors
def health(
    org: Annotated[str | None, typer.Argument(help="Only this organisation.")] = None,
    type_key: Annotated[str | None, typer.Argument(metavar="[TYPE]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """How each integration is doing: last run, failures and why, connection, next run.

    Exit 0 when every integration shown is healthy, 1 when one needs attention.
    """
    from integration_hub.services import health as health_service

    reports = health_service.check(actor(), org, type_key)
    if as_json:
        typer.echo(json.dumps(reports, indent=2, default=str))
    else:
        out = console()
        if not reports:
            out.print("no integrations are set up yet")
        for report in reports:
            _print_health(out, report)
    raise typer.Exit(0 if all(r["healthy"] for r in reports) else 1)


def _print_health(out: Any, report: dict[str, Any]) -> None:
    """One integration's health. Text from the volunteer app or a target (names, reasons,
    errors) goes through ``rich_text``: control characters replaced, rich markup escaped."""
    from rich.table import Table

    from integration_hub.untrusted import rich_text as safe

    verdict = "[green]healthy[/]" if report["healthy"] else "[yellow]needs attention[/]"
    out.print(
        f"\n[bold]{safe(report['target'])} for {safe(report['organisation'])}[/] "
        f"({report['status']}): {verdict}"
    )
    for problem in report["problems"]:
        out.print(f"  [yellow]•[/] {safe(problem)}")
    last = report["last_run"]
    if last is None:
        out.print("  no export has run yet")
    else:
        out.print(runs_table([last], title="Last run", width=out.width))
        if last.get("error"):
            out.print(f"  [red]stopped:[/] {safe(last['error'])}")
    if report["failures"]:
        table = Table(title=f"Failures of run #{last['run_id']}", title_justify="left")
        for name in ("record", "category", "amount", "volunteer", "attempts", "reason"):
            table.add_column(name, justify="right" if name in ("amount", "attempts") else "left")
        for failure in report["failures"]:
            table.add_row(
                safe(failure["record"]),
                safe(failure["category"]),
                safe(failure["amount"]),
                safe(failure["volunteer"]),
                str(failure["attempt"]),
                safe(failure["reason"]),
            )
        out.print(table)
        more = report["failures_total"] - len(report["failures"])
        if more > 0:
            out.print(f"  … and {more} more (integrations health --json shows them)")
    if report.get("waiting"):
        out.print(
            f"  waiting to be confirmed: {report['waiting']} record(s) sent whose answer was "
            "lost; a run after their settle time looks them up before sending anything again"
        )
    test = report["last_connection_test"]
    if test:
        colour = "green" if test["status"] == "ok" else "red"
        out.print(
            f"  connection test: [{colour}]{test['status']}[/] at {when(test['at'])}: "
            f"{safe(test['detail'])}"
        )
    else:
        out.print("  connection test: never run (integrations test-connection ORG TYPE)")
    schedule = report["schedule"]
    if schedule is None:
        out.print("  schedule: none")
    elif not schedule["enabled"]:
        out.print(f"  schedule: disabled ({safe(schedule['cron'])}, {safe(schedule['timezone'])})")
    else:
        out.print(
            f"  next run: {when(schedule['next_run'])} "
            f"({safe(schedule['cron'])}, {safe(schedule['timezone'])})"
        )
    if report["running"]:
        running = report["running"]
        out.print(
            f"  running now: run #{running['run_id']} since {when(running['started_at'])} "
            f"on {running['owner']}"
        )
    if last and last.get("link"):
        out.print(f"  Prefect flow run: {last['link']}")
    elif last and last.get("flow_run_id"):
        out.print(f"  Prefect flow run id: {last['flow_run_id']} (set PREFECT_UI_URL for a link)")
    if report["retry"]:
        out.print(f"  retry the failures: [bold]{report['retry']}[/]")


# -- retry -------------------------------------------------------------------------------------
@app.command("retry", epilog=EXIT_CODES)
@friendly_errors
def retry(
    run_id: Annotated[int | None, typer.Argument(help="The run whose failures to re-send.")] = None,
    integration: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--integration",
            metavar="ORG TYPE",
            help="Instead of RUN_ID: the latest run of ORG's TYPE integration with failures.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Prefect's logs.")] = False,
) -> None:
    """Re-send only the failed records of a run, as a new run (trigger retry)."""
    from integration_hub.prefect_env import configure_prefect
    from integration_hub.services import sync
    from integration_hub.services.errors import InvalidInput
    from integration_hub.tasks.failures import announcements

    if (run_id is None) == (integration is None):
        raise InvalidInput("give either RUN_ID or --integration ORG TYPE")
    configure_prefect(verbose=verbose, shared_server=True)
    if integration is not None:
        run_id = sync.latest_failed_run(_integration(*integration), actor())
    assert run_id is not None
    typer.echo(f"retrying the failed records of run {run_id}")
    with announcements(announce):
        summary = sync.retry_run(run_id, actor())
    print_summary(summary)
    raise typer.Exit(summary_exit_code(summary))


# -- backfill ----------------------------------------------------------------------------------
@app.command("backfill", epilog=EXIT_CODES)
@friendly_errors
def backfill(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    start: Annotated[
        str, typer.Option("--from", help="First approval date, YYYY-MM-DD.", show_default=False)
    ],
    end: Annotated[
        str, typer.Option("--to", help="Last approval date, YYYY-MM-DD.", show_default=False)
    ],
    chunk: Annotated[str, typer.Option(help="month, week or day: one run per chunk.")] = "month",
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Prefect's logs.")] = False,
) -> None:
    """Export a date range chunk by chunk; stop any time and run it again to continue.

    Claims already exported are never sent again and finished chunks are skipped.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from integration_hub.prefect_env import configure_prefect
    from integration_hub.services import sync
    from integration_hub.tasks.failures import announcements

    first, last = _date(start, "--from"), _date(end, "--to")
    assert first is not None and last is not None
    plan = sync.backfill_plan(first, last, chunk)
    configure_prefect(verbose=verbose, shared_server=True)
    out = console()
    done: list[dict[str, Any]] = []
    with Progress(
        TextColumn("[bold]backfill[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=out,
        transient=False,
    ) as progress:
        task = progress.add_task(f"{plan[0][0]} .. {plan[0][1]}", total=len(plan))

        def on_chunk(entry: dict[str, Any]) -> None:
            done.append(entry)
            label = f"{entry['window'][0]} .. {entry['window'][1]}: {entry['status']}"
            if entry["status"] != "already done":
                label += f", exported {entry['exported']}, failed {entry['failed']}"
            progress.update(task, advance=1, description=label)

        try:
            with announcements(lambda message: progress.console.print(message, markup=False)):
                result = sync.run_backfill(
                    org, type_key, actor(), start=first, end=last, chunk=chunk, on_chunk=on_chunk
                )
        except KeyboardInterrupt:
            progress.stop()
            typer.secho(
                f"Stopped (Ctrl-C) after {len(done)} of {len(plan)} chunks; run the same command "
                "again to continue (finished chunks are skipped, nothing is sent twice).",
                fg=typer.colors.YELLOW,
                err=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    _print_backfill(out, result)
    if result["status"] == "succeeded":
        raise typer.Exit(0)
    raise typer.Exit(EXIT_STOPPED if result.get("chunks_done", 0) < len(plan) else 1)


def _print_backfill(out: Any, result: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from integration_hub.money import format_nok
    from integration_hub.untrusted import safe_text

    table = Table(
        title=f"Backfill {result['window'][0]} .. {result['window'][1]} by {result['chunk']}: "
        f"{result['status']}",
        title_justify="left",
    )
    for name in (
        "window",
        "run",
        "status",
        "already exported",
        "exported",
        "failed",
        "skipped",
        "amount exported",
    ):
        table.add_column(name, justify="left" if name in ("window", "status") else "right")
    for c in result["chunks"]:
        table.add_row(
            f"{c['window'][0]} .. {c['window'][1]}",
            f"#{c['run_id']}" if c.get("run_id") else "",
            c["status"],
            str(c["already_exported"]),
            str(c["exported"]),
            str(c["failed"]),
            str(c["skipped"]),
            format_nok(c["exported_amount_ore"]),
        )
    out.print(table)
    out.print(
        f"{result['chunks_done']} of {result['chunks_total']} chunks done "
        f"({result['chunks_skipped']} already done before); "
        f"{result['already_exported']} already exported earlier, exported {result['exported']} "
        f"({format_nok(result['exported_amount_ore'])}), failed {result['failed']}, "
        f"skipped {result['skipped']}, requests {result['requests_sent']}"
    )
    if result.get("error"):
        out.print(f"[red]stopped:[/] {escape(safe_text(result['error']))}")
        out.print("run the same command again later to continue; finished chunks are skipped")
    elif result["failed"]:
        out.print("retry the failures per run: integrations retry RUN_ID (see integrations health)")


# -- alerts ------------------------------------------------------------------------------------
@app.command("alerts")
@friendly_errors
def alerts(
    org: str,
    webhook_from_env: Annotated[
        str | None,
        typer.Option(
            "--webhook-from-env",
            metavar="VAR",
            help="Register the webhook URL held by environment variable VAR (kept in the vault).",
        ),
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            "--kind", help="What the webhook takes: webhook (the hub's JSON), slack or teams."
        ),
    ] = "webhook",
    email_to: Annotated[
        list[str] | None,
        typer.Option(
            "--email-to",
            metavar="ADDRESS",
            help="E-mail alerts to ADDRESS (repeat for more); needs --smtp-host, --email-from.",
        ),
    ] = None,
    email_from: Annotated[
        str | None, typer.Option("--email-from", metavar="ADDRESS", help="The sender.")
    ] = None,
    smtp_host: Annotated[str | None, typer.Option("--smtp-host", help="The SMTP server.")] = None,
    smtp_port: Annotated[int, typer.Option("--smtp-port", help="Its port.")] = 587,
    smtp_security: Annotated[
        str, typer.Option("--smtp-security", help="starttls, tls or none.")
    ] = "starttls",
    smtp_user: Annotated[
        str | None, typer.Option("--smtp-user", help="The SMTP user name, if it needs one.")
    ] = None,
    smtp_password_from_env: Annotated[
        str | None,
        typer.Option(
            "--smtp-password-from-env",
            metavar="VAR",
            help="The SMTP password held by environment variable VAR (kept in the vault).",
        ),
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Forget the alert channel.")] = False,
    test: Annotated[bool, typer.Option("--test", help="Send a test alert now.")] = False,
) -> None:
    """ORG's alert channel: told when a run ends with failures, a backfill ends with failures
    or a connection test fails; the same unresolved failure is not repeated every night.

    A webhook (the hub's JSON, Slack or Microsoft Teams: --webhook-from-env VAR --kind KIND)
    or e-mail through SMTP (--email-to, --email-from, --smtp-host ...). Without options, shows
    the channel (secrets masked) and the last alerts. The URL and the SMTP password are read
    from the environment, never from an argument, and never shown again. The admin web app's
    Alerts page sets up the same channel. Exit 1 when --test was not delivered.
    """
    from integration_hub.services import alerts as alert_service
    from integration_hub.services.errors import InvalidInput
    from integration_hub.untrusted import safe_text

    def secret_from(variable: str) -> str:
        value = os.environ.get(variable, "")
        if not value:
            raise InvalidInput(f"${variable} is not set")
        return value

    if sum(bool(x) for x in (webhook_from_env, email_to, remove)) > 1:
        raise InvalidInput("give one of --webhook-from-env, --email-to or --remove")
    if webhook_from_env:
        values = {"kind": kind, "webhook_url": secret_from(webhook_from_env)}
        view = alert_service.configure_channel(org, values, actor())
        typer.echo(f"alert {view['kind']} for {org} saved: {view['webhook']}")
    if email_to:
        values = {
            "kind": "email",
            "smtp_host": smtp_host or "",
            "smtp_port": smtp_port,
            "smtp_security": smtp_security,
            "smtp_username": smtp_user or "",
            "smtp_password": secret_from(smtp_password_from_env) if smtp_password_from_env else "",
            "sender": email_from or "",
            "recipients": email_to,
        }
        view = alert_service.configure_channel(org, values, actor())
        typer.echo(f"alert e-mail for {org} saved: {len(email_to)} recipient(s)")
    if remove:
        was = "e-mail" if alert_service.channel_view(org, actor())["kind"] == "email" else "webhook"
        removed = alert_service.remove_channel(org, actor())
        typer.echo(f"alert {was} removed" if removed else f"{org} has no alert channel")
    if test:
        result = alert_service.send_test(org, actor())
        colour = typer.colors.GREEN if result == "delivered" else typer.colors.RED
        typer.secho(safe_text(f"test event: {result}"), fg=colour)
        if result != "delivered":
            raise typer.Exit(1)
    if not (webhook_from_env or email_to or remove or test):
        view = alert_service.channel_view(org, actor())
        settings = view["settings"]
        if not view["configured"]:
            typer.echo(f"alert webhook for {org}: none (no webhook or e-mail is set up)")
        elif view["kind"] == "email":
            login = f", user {settings.smtp_username}" if settings.smtp_username else ""
            typer.echo(
                safe_text(
                    f"alert channel for {org}: e-mail from {settings.sender} to "
                    f"{', '.join(settings.recipients)} via {settings.smtp_host}:"
                    f"{settings.smtp_port} ({settings.smtp_security}{login})"
                )
            )
        else:
            typer.echo(f"alert channel for {org}: {view['kind']} webhook {view['webhook']}")
        if not view["links_to_health_page"]:
            typer.echo(
                "  alerts carry no link to the health page: set INTEGRATIONS_PUBLIC_BASE_URL"
            )
        for entry in view["recent"]:
            run = f" run {entry['run_id']}" if entry.get("run_id") else ""
            typer.echo(safe_text(f"  {when(entry['at'])} {entry['event']}{run}: {entry['result']}"))


# -- Bufdir report -----------------------------------------------------------------------------
@app.command("report", epilog=EXIT_CODES)
@friendly_errors
def report(
    org: str,
    period: Annotated[
        str,
        typer.Option(
            "--period", help="A closed year (2025) or half-year (2026-H1).", show_default=False
        ),
    ],
    deliver: Annotated[
        str, typer.Option("--deliver", help="file (upload in Bufdir's portal) or api (stand-in).")
    ] = "file",
    resubmit: Annotated[
        bool, typer.Option("--resubmit", help="Send a period that was already reported again.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Prefect's logs.")] = False,
) -> None:
    """The Bufdir activity report for a closed period: file, or the stand-in API.

    Some activities failing (exit 1): fix them in the app and send again with --resubmit.
    """
    from integration_hub.prefect_env import configure_prefect
    from integration_hub.services.sync import run_activity_report

    configure_prefect(verbose=verbose, shared_server=True)
    summary = run_activity_report(org, actor(), period=period, deliver=deliver, resubmit=resubmit)
    print_report(console(), summary)
    raise typer.Exit(summary_exit_code(summary))


def report_failures(summary: dict[str, Any]) -> list[tuple[str, list[int]]]:
    """Failed activities grouped by reason: (reason, record ids)."""
    grouped: dict[str, list[int]] = {}
    for failure in summary.get("failures", []):
        grouped.setdefault(str(failure["reason"]), []).append(int(failure["record_id"]))
    return list(grouped.items())


def print_report(out: Any, summary: dict[str, Any]) -> None:
    """A Bufdir report run; reasons and municipalities come from the volunteer app, so they go
    through ``rich_text`` (control characters replaced, markup escaped)."""
    from rich.table import Table

    from integration_hub.untrusted import rich_text as safe

    delivered = summary["report"]
    out.print(
        f"[bold]Bufdir report {delivered['period']} ({delivered['deliver']}): run "
        f"{summary['run_id']}[/] {status(summary)}"
        + (" (resubmission)" if delivered.get("resubmission_of") else "")
    )
    out.print(
        f"  activities: counted {summary['exported']}, skipped {summary['skipped']}, "
        f"failed {summary['failed']} (of {summary['extracted']})"
    )
    for reason, count in summary.get("skipped_reasons", {}).items():
        out.print(f"  skipped {count} x {safe(str(reason))}")
    for reason, ids in report_failures(summary):
        shown = ", ".join(str(i) for i in ids[:10]) + (" …" if len(ids) > 10 else "")
        out.print(f"  [yellow]failed {len(ids)} x[/] {safe(reason)} (activities {shown})")
    totals = summary.get("municipalities") or []
    if totals:
        table = Table(title="Per municipality", title_justify="left")
        for name in (
            "municipality",
            "activities",
            "participants",
            "participant days",
            "volunteer hours",
            "under 26",
        ):
            table.add_column(name, justify="left" if name == "municipality" else "right")
        for row in totals:
            table.add_row(
                safe(row["municipality_number"]),
                str(row["activities"]),
                str(row["participants"]),
                str(row["participant_days"]),
                str(row["volunteer_hours"]),
                str(row["participants_under_26"]),
            )
        out.print(table)
    else:
        out.print("  no activity was counted: the report has no rows")
    out.print(f"  file:    {delivered['csv_path']}")
    out.print(f"  SHA-256: {delivered['sha256']}")
    out.print(f"  summary: {delivered['summary_path']}")
    if delivered.get("instance_id"):
        out.print(
            f"  sent through the API stand-in: instance {delivered['instance_id']} "
            f"({delivered.get('instance_status', '')})"
        )
    else:
        out.print("  upload the file in Bufdir's portal")
    if summary.get("failed"):
        out.print("  fix the failed activities in the app, then send again with --resubmit")
