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

from integration_hub.cli import _date, _integration, actor, app, friendly_errors, print_summary

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


def runs_table(runs: list[dict[str, Any]], title: str | None = None) -> Any:
    """The export history as a table: one row per run."""
    from rich.table import Table

    from integration_hub.money import format_nok

    table = Table(title=title, title_justify="left", show_lines=False)
    for name, justify in (
        ("run", "right"),
        ("started", "left"),
        ("trigger", "left"),
        ("window", "left"),
        ("status", "left"),
        ("exported", "right"),
        ("failed", "right"),
        ("skipped", "right"),
        ("amount exported", "right"),
        ("amount failed", "right"),
        ("requests", "right"),
        ("duration", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)
    for run in runs:
        table.add_row(
            f"#{run['run_id']}",
            when(run["started_at"]),
            trigger(run),
            window(run),
            status(run),
            str(run["exported"]),
            str(run["failed"]),
            str(run["skipped"]),
            format_nok(run["exported_amount_ore"]),
            format_nok(run["failed_amount_ore"]),
            str(run["requests_sent"]),
            duration(run["duration_s"]),
        )
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
        out.print(runs_table([last], title="Last run"))
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
@app.command("retry")
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
    """Re-send only the failed records of a run, as a new run (trigger retry).

    Exit 0 when every retried record was exported or skipped, 1 when some failed again.
    """
    from integration_hub.prefect_env import configure_prefect
    from integration_hub.services import sync
    from integration_hub.services.errors import InvalidInput

    if (run_id is None) == (integration is None):
        raise InvalidInput("give either RUN_ID or --integration ORG TYPE")
    configure_prefect(verbose=verbose)
    if integration is not None:
        run_id = sync.latest_failed_run(_integration(*integration), actor())
    assert run_id is not None
    typer.echo(f"retrying the failed records of run {run_id}")
    summary = sync.retry_run(run_id, actor())
    print_summary(summary)
    raise typer.Exit(0 if summary["status"] == "succeeded" else 1)


# -- backfill ----------------------------------------------------------------------------------
@app.command("backfill")
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

    Claims already exported are never sent again and finished chunks are skipped. Exit 0 when
    every chunk finished without failed records, 1 otherwise.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from integration_hub.prefect_env import configure_prefect
    from integration_hub.services import sync

    first, last = _date(start, "--from"), _date(end, "--to")
    assert first is not None and last is not None
    plan = sync.backfill_plan(first, last, chunk)
    configure_prefect(verbose=verbose)
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
            result = sync.run_backfill(
                org, type_key, actor(), start=first, end=last, chunk=chunk, on_chunk=on_chunk
            )
        except KeyboardInterrupt:
            progress.stop()
            typer.secho(
                f"stopped after {len(done)} of {len(plan)} chunks; run the same command again "
                "to continue (finished chunks are skipped, nothing is sent twice)",
                fg=typer.colors.YELLOW,
                err=True,
            )
            raise typer.Exit(130) from None
    _print_backfill(out, result)
    raise typer.Exit(0 if result["status"] == "succeeded" else 1)


def _print_backfill(out: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    from integration_hub.money import format_nok

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
    if result["failed"]:
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
    remove: Annotated[bool, typer.Option("--remove", help="Forget the webhook.")] = False,
    test: Annotated[bool, typer.Option("--test", help="Send a test event now.")] = False,
) -> None:
    """ORG's alert webhook: called when a run ends with failures or a connection test fails.

    Without options, shows it (masked) and the last deliveries. The URL is read from the
    environment, never from an argument, and never shown again.
    """
    from integration_hub.services import alerts as alert_service
    from integration_hub.services.errors import InvalidInput
    from integration_hub.untrusted import safe_text

    if webhook_from_env and remove:
        raise InvalidInput("give either --webhook-from-env or --remove")
    if webhook_from_env:
        url = os.environ.get(webhook_from_env, "")
        if not url:
            raise InvalidInput(f"${webhook_from_env} is not set")
        mask = alert_service.set_webhook(org, url, actor())
        typer.echo(f"alert webhook for {org} saved: {mask}")
    if remove:
        removed = alert_service.remove_webhook(org, actor())
        typer.echo("alert webhook removed" if removed else f"{org} has no alert webhook")
    if test:
        result = alert_service.send_test(org, actor())
        colour = typer.colors.GREEN if result == "delivered" else typer.colors.RED
        typer.secho(f"test event: {result}", fg=colour)
        if result != "delivered":
            raise typer.Exit(1)
    if not (webhook_from_env or remove or test):
        shown = alert_service.show_webhook(org, actor())
        typer.echo(f"alert webhook for {org}: {shown['webhook'] or 'none'}")
        for entry in shown["recent"]:
            run = f" run {entry['run_id']}" if entry.get("run_id") else ""
            typer.echo(safe_text(f"  {when(entry['at'])} {entry['event']}{run}: {entry['result']}"))


# -- Bufdir report -----------------------------------------------------------------------------
@app.command("report")
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

    Exit 0 when every activity was counted or skipped, 1 when some failed (fix them in the app
    and send again with --resubmit).
    """
    from integration_hub.prefect_env import configure_prefect
    from integration_hub.services.sync import run_activity_report

    configure_prefect(verbose=verbose)
    summary = run_activity_report(org, actor(), period=period, deliver=deliver, resubmit=resubmit)
    print_report(console(), summary)
    raise typer.Exit(0 if summary["status"] == "succeeded" else 1)


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
