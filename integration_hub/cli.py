"""``integrations``: the command line for operators and data engineers.

Heavy modules (prefect, pandas) are imported inside commands so ``--help`` stays instant.
Secrets are read from the environment, stdin or hidden prompts, never from arguments.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    help="Integration Hub: export volunteer-app data to Xledger, Business Central and Bufdir.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The hub database.", no_args_is_help=True)
vault_app = typer.Typer(help="The credential vault's keys.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Local stand-ins for the target systems.", no_args_is_help=True)
credentials_app = typer.Typer(help="Stored credentials (masked).", no_args_is_help=True)
mappings_app = typer.Typer(help="Field mappings.", no_args_is_help=True)
endpoints_app = typer.Typer(
    help="Hosts the hub may send to besides each service's own (operators only).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(vault_app, name="vault")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(credentials_app, name="credentials")
app.add_typer(mappings_app, name="mappings")
app.add_typer(endpoints_app, name="endpoints")
dynamics_app = typer.Typer(
    help="Business Central: the companies and journals to choose from.", no_args_is_help=True
)
app.add_typer(dynamics_app, name="dynamics")

F = TypeVar("F", bound=Callable[..., Any])
CLI_ACTOR_NAME = "cli:" + (os.environ.get("USER") or "operator")


@app.callback()
def keep_state_private() -> None:
    """Runs before every command (``serve`` and ``web`` included), so that everything the hub,
    the Prefect server and the flow runs it starts create is private to the hub's user; a
    ``var/`` left open by an older version is closed once, with a note (private_files.py)."""
    from integration_hub.private_files import make_private, restrict_new_files
    from integration_hub.settings import get_settings

    restrict_new_files()
    try:
        tightened = make_private(get_settings().var_dir)
    except OSError as exc:
        tightened = f"could not make {get_settings().var_dir} private: {exc.strerror or exc}"
    if tightened:
        typer.secho(f"Note: {tightened}", err=True, fg=typer.colors.YELLOW)


def echo_err(message: str) -> None:
    """An error on stderr; it may quote a target or the volunteer app, so control characters
    are replaced (``safe_text``)."""
    from integration_hub.untrusted import safe_text

    typer.secho(safe_text(message), err=True, fg=typer.colors.RED)


def friendly_errors(command: F) -> F:
    """Known problems become one clear message and exit code 2; nothing prints a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from integration_hub.adapters.factory import IntegrationNotConfigured
        from integration_hub.mappings.spec import MappingError
        from integration_hub.services.errors import InvalidInput, ServiceError
        from integration_hub.vault import VaultError

        try:
            return command(*args, **kwargs)
        except InvalidInput as exc:
            echo_err(f"Error: {exc}")
            for problem in exc.problems:
                if problem != str(exc):
                    echo_err(f"  - {problem}")
            raise typer.Exit(2) from None
        except MappingError as exc:
            echo_err("Error: the mapping cannot be used:")
            for problem in exc.problems:
                echo_err(f"  - {problem}")
            raise typer.Exit(2) from None
        except (ServiceError, VaultError, IntegrationNotConfigured) as exc:
            echo_err(f"Error: {exc}")
            raise typer.Exit(2) from None
        except Exception as exc:
            message = _database_hint(exc)
            if message is None:
                raise
            echo_err(f"Error: {message}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _database_hint(exc: Exception) -> str | None:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    if isinstance(exc, OperationalError | ProgrammingError):
        text = str(exc.orig) if getattr(exc, "orig", None) else str(exc)
        if "no such table" in text or "does not exist" in text:
            return "the database is not set up; run `integrations db upgrade`"
        return f"the database cannot be used: {text.splitlines()[0]}"
    return None


def actor() -> Any:
    from integration_hub.services.configuration import Actor

    return Actor(CLI_ACTOR_NAME)


def _integration(org_slug: str, type_key: str, create: bool = False) -> Any:
    from integration_hub.services import configuration as config

    org = config.organisation(org_slug, actor())
    return config.integration(org, type_key, actor(), create=create)


# -- database and organisations ---------------------------------------------------------------
@db_app.command("upgrade")
@friendly_errors
def db_upgrade() -> None:
    """Create or migrate the hub schema (and the app schema when it is the same database)."""
    from integration_hub.db import upgrade
    from integration_hub.settings import get_settings

    settings = get_settings()
    typer.echo(f"hub database: {upgrade('hub')} is at the newest schema")
    if settings.app_url == settings.hub_url:
        upgrade("app")
        typer.echo("volunteer-app tables (demo/local use) are at the newest schema")


@app.command("orgs")
@friendly_errors
def orgs() -> None:
    """List organisations and the integration types each is offered."""
    from integration_hub.services import configuration as config
    from integration_hub.untrusted import safe_text

    for org in config.list_organisations(actor()):
        offered = ", ".join(t.key for t in config.available_types(org)) or "none"
        typer.echo(safe_text(f"{org.slug:<20} {org.name:<40} offered: {offered}"))


@app.command("types")
@friendly_errors
def types(org: str) -> None:
    """Integration types ORG's feature flags offer, and whether each is set up."""
    from integration_hub.services import configuration as config
    from integration_hub.services.errors import NotFound

    organisation = config.organisation(org, actor())
    offered = config.available_types(organisation)
    if not offered:
        typer.echo(f"{organisation.name} is offered no integration types")
    for adapter_type in offered:
        try:
            row = config.integration(organisation, adapter_type.key, actor())
            state = row.status
        except NotFound:
            state = "not set up"
        typer.echo(f"{adapter_type.key:<12} {adapter_type.display_name:<35} {state}")


# -- setup -------------------------------------------------------------------------------------
ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _resolve_secret(name: str, value: Any) -> str:
    text = "" if value is None else str(value)
    match = ENV_REFERENCE.match(text.strip())
    if match:
        variable = match.group(1)
        if variable not in os.environ:
            raise typer.BadParameter(
                f"credentials.{name} refers to ${{{variable}}}, which is not set"
            )
        return os.environ[variable]
    if text == "-":
        return sys.stdin.readline().rstrip("\n")
    return text


@app.command("setup")
@friendly_errors
def setup(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="Answer the wizard from a YAML file.")
    ] = None,
) -> None:
    """The setup wizard: credentials, connection test, mapping, schedule, exclusions."""
    from integration_hub.services.errors import InvalidInput
    from integration_hub.untrusted import (
        MAX_YAML_BYTES,
        DocumentRefused,
        load_yaml,
        read_text_file,
        safe_text,
    )

    if from_file is not None:
        try:
            text = read_text_file(from_file, max_bytes=MAX_YAML_BYTES)
            answers = load_yaml(text, what=str(from_file)) or {}
        except DocumentRefused as exc:
            raise InvalidInput(f"the setup file cannot be used: {exc}") from None
        if not isinstance(answers, dict):
            raise InvalidInput(f"{from_file} must be a YAML mapping")
        summary = setup_from_answers(org, type_key, answers, base_dir=from_file.parent)
    else:
        summary = setup_interactive(org, type_key)
    typer.echo("")
    for line in summary:
        typer.echo(safe_text(line))


def setup_from_answers(
    org: str, type_key: str, answers: dict[str, Any], base_dir: Path = Path(".")
) -> list[str]:
    """The wizard's steps without prompts (also what the demo uses)."""
    from integration_hub.adapters.registry import get_type
    from integration_hub.mappings.spec import load_mapping_file, load_template
    from integration_hub.models import IntegrationStatus
    from integration_hub.services import alerts
    from integration_hub.services import configuration as config
    from integration_hub.services.errors import InvalidInput, WarningsNotAcknowledged

    who = actor()
    row = _integration(org, type_key, create=True)
    adapter_type = get_type(type_key)
    model = adapter_type.config_model
    credentials = answers.get("credentials") or {}
    if not isinstance(credentials, dict):
        raise InvalidInput("credentials must be a mapping of field: value")
    values = {name: _resolve_secret(name, value) for name, value in credentials.items()}
    for name in model.setting_fields():
        if name in answers and answers[name] is not None:
            values[name] = str(answers[name])
    config.save_configuration(row, values, who)
    lines = [f"{adapter_type.display_name} for {org}: credentials saved (shown masked)"]
    for field in config.credential_form(row, who):
        lines.append(f"  {field['name']}: {field['value']}")

    result, _alert = alerts.check_connection(row, who)
    lines.append(f"connection test: {result.status} in {result.elapsed_ms} ms: {result.detail}")
    lines += [f"  warning: {warning}" for warning in result.warnings]

    mapping_answer = answers.get("mapping", "default")
    if adapter_type.default_mapping is None and mapping_answer in (None, "default"):
        lines.append(f"field mapping: none ({adapter_type.display_name} needs no mapping)")
    else:
        if mapping_answer in (None, "default"):
            document = load_template(adapter_type.default_mapping or "")
        else:
            path = Path(str(mapping_answer))
            document = load_mapping_file(path if path.is_absolute() else base_dir / path)
        accept = bool(answers.get("accept_warnings", False))
        try:
            version, problems = config.save_mapping(row, document, who, accept_warnings=accept)
        except WarningsNotAcknowledged as exc:
            raise InvalidInput(
                "the mapping was not saved: confirm the warnings with accept_warnings: true",
                exc.warnings,
            ) from None
        lines.append(f"field mapping saved as version {version}")
        lines += [f"  {p}" for p in problems]

    schedule = answers.get("schedule")
    if schedule:
        if not isinstance(schedule, dict):
            raise InvalidInput("schedule must be {daily: 'HH:MM'} or {cron: '...'}")
        cron = schedule.get("cron") or config.parse_daily(str(schedule.get("daily", "")))
        timezone = str(schedule.get("timezone", "Europe/Oslo"))
        config.set_schedule(row, cron, timezone, bool(schedule.get("enabled", True)), who)
        lines.append(f"schedule: {cron} ({timezone})")
    exclusions = answers.get("exclusions") or []
    config.set_exclusions(row, [str(e) for e in exclusions], who)
    lines.append(f"excluded categories: {', '.join(exclusions) or 'none'}")
    config.set_status(row, IntegrationStatus.ACTIVE, who)
    lines.append("status: active")
    return lines


def setup_interactive(org: str, type_key: str) -> list[str]:
    """Prompt for each step; secrets are typed hidden and never echoed."""
    from integration_hub.adapters.registry import get_type
    from integration_hub.mappings.spec import load_mapping_file
    from integration_hub.services import alerts
    from integration_hub.services import configuration as config
    from integration_hub.untrusted import safe_text

    who = actor()
    row = _integration(org, type_key, create=True)
    adapter_type = get_type(type_key)
    typer.secho(f"Set up {adapter_type.display_name} for {org}", bold=True)
    typer.echo("Step 1/5 credentials (press Enter to keep a stored value)")
    values: dict[str, str] = {}
    for field in config.credential_form(row, who):
        shown = f" [{field['value']}]" if field["value"] else ""
        values[field["name"]] = typer.prompt(
            f"  {field['name']}{shown}",
            default="",
            show_default=False,
            hide_input=field["secret"],
        )
    config.save_configuration(row, {k: v for k, v in values.items() if v}, who)
    typer.echo("Step 2/5 connection test ...")
    result, _alert = alerts.check_connection(row, who)
    typer.echo(safe_text(f"  {result.status} in {result.elapsed_ms} ms: {result.detail}"))
    for warning in result.warnings:
        typer.secho(safe_text(f"  warning: {warning}"), fg=typer.colors.YELLOW)
    typer.echo("Step 3/5 field mapping")
    if adapter_type.default_mapping is None:
        typer.echo(f"  none needed for {adapter_type.display_name}")
    else:
        _, document = config.current_mapping(row)
        path = typer.prompt(
            "  mapping file (Enter for the current/default one)", default="", show_default=False
        )
        if path:
            document = load_mapping_file(Path(path))
        problems = config.check_mapping(row, document, who)
        for problem in problems:
            typer.secho(safe_text(f"  {problem}"), fg=typer.colors.YELLOW)
        accept = not problems or typer.confirm("  save the mapping despite these warnings?")
        if accept:
            version, _ = config.save_mapping(row, document, who, accept_warnings=True)
            typer.echo(f"  saved as version {version}")
    typer.echo("Step 4/5 schedule")
    if not adapter_type.runs_on_schedule:
        typer.echo(f"  none: {adapter_type.display_name} is reported per closed period")
    elif daily := typer.prompt(
        "  run daily at (HH:MM, Enter for none)", default="", show_default=False
    ):
        timezone = typer.prompt("  time zone", default="Europe/Oslo")
        config.set_schedule(row, config.parse_daily(daily), timezone, True, who)
    typer.echo("Step 5/5 excluded categories")
    choices = config.exclusion_choices(row)
    current = ",".join(config.list_exclusions(row))
    answer = typer.prompt(f"  comma-separated, from {', '.join(choices)}", default=current)
    config.set_exclusions(row, [c.strip() for c in answer.split(",") if c.strip()], who)
    return [
        f"{adapter_type.display_name} for {org} is configured; run "
        f"`integrations sync {org} {type_key}` to export now."
    ]


# -- credentials, connection, mappings, exclusions -----------------------------------------------
@endpoints_app.command("list")
@friendly_errors
def endpoints_list() -> None:
    """Hosts allowed besides each service's own, and where each entry comes from."""
    from integration_hub.services import endpoints

    stored, from_env = endpoints.allowed_hosts()
    if not stored and not from_env:
        typer.echo("only the services' own hosts (https); nothing else is allowed")
    for entry in stored:
        typer.echo(f"{entry}  (var/operator.toml)")
    for entry in from_env:
        typer.echo(f"{entry}  (INTEGRATIONS_ALLOWED_HOSTS)")


@endpoints_app.command("allow")
@friendly_errors
def endpoints_allow(
    host: Annotated[str, typer.Argument(help="A host name, an IP address or a network.")],
) -> None:
    """Let integrations send to HOST (a local sandbox, an on-premises server), http included."""
    from integration_hub.services import endpoints

    hosts = endpoints.allow(host, actor())
    typer.echo(f"allowed: {', '.join(hosts)}")


@endpoints_app.command("disallow")
@friendly_errors
def endpoints_disallow(host: str) -> None:
    """Take HOST off the list; integrations pointing there stop sending to it."""
    from integration_hub.services import endpoints

    hosts = endpoints.disallow(host, actor())
    shown = ", ".join(hosts) or "only the services' own hosts"
    typer.echo(f"allowed: {shown}")


@credentials_app.command("show")
@friendly_errors
def credentials_show(org: str, type_key: Annotated[str, typer.Argument(metavar="TYPE")]) -> None:
    """Settings and masked secrets; plaintext is never shown."""
    from integration_hub.services import configuration as config

    for field in config.credential_form(_integration(org, type_key), actor()):
        kind = "secret " if field["secret"] else "setting"
        typer.echo(f"{kind}  {field['name']:<16} {field['value'] or '(not set)'}")


@app.command("test-connection")
@friendly_errors
def test_connection(org: str, type_key: Annotated[str, typer.Argument(metavar="TYPE")]) -> None:
    """Check the stored credentials against the target (answers within 10 seconds)."""
    from integration_hub.services import alerts
    from integration_hub.untrusted import safe_text

    result, alert = alerts.check_connection(_integration(org, type_key), actor())
    colour = typer.colors.GREEN if result.ok else typer.colors.RED
    typer.secho(safe_text(f"{result.status}: {result.detail} ({result.elapsed_ms} ms)"), fg=colour)
    for warning in result.warnings:  # the target's schema against what the hub sends
        typer.secho(safe_text(f"warning: {warning}"), fg=typer.colors.YELLOW)
    if alert and alert != "no webhook":
        typer.echo(safe_text(f"alert: {alert}"))
    raise typer.Exit(0 if result.ok else 1)


@dynamics_app.command("companies")
@friendly_errors
def dynamics_companies(org: str) -> None:
    """The companies the stored Business Central credentials can reach: save one's id as
    company_id (the setup form, or `integrations setup ORG dynamics --from-file`)."""
    from integration_hub.services import api_support
    from integration_hub.untrusted import safe_text

    choices = api_support.companies(_integration(org, "dynamics"), actor())
    for choice in choices:
        typer.echo(safe_text(f"{choice.id}  {choice.name}"))
    if not choices:
        typer.echo("no companies in this environment")


@dynamics_app.command("journals")
@friendly_errors
def dynamics_journals(
    org: str,
    company: Annotated[
        str | None, typer.Option("--company", help="A company id; the saved one by default.")
    ] = None,
) -> None:
    """A company's general journal batches: save one's id as journal_id (or its code as
    journal_code). A note says why the hub cannot use a batch as it is."""
    from integration_hub.services import api_support
    from integration_hub.untrusted import safe_text

    choices = api_support.journals(_integration(org, "dynamics"), actor(), company)
    for choice in choices:
        note = f"  ({choice.note})" if choice.note else ""
        typer.echo(safe_text(f"{choice.id}  {choice.code:<10}  {choice.name}{note}"))
    if not choices:
        typer.echo("no journal batches in this company")


@mappings_app.command("validate")
@friendly_errors
def mappings_validate(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    file: Annotated[Path | None, typer.Option("--file", help="A mapping YAML to check.")] = None,
) -> None:
    """Check the saved mapping (or FILE) against the target's live codes."""
    from integration_hub.mappings.spec import load_mapping_file
    from integration_hub.mappings.validator import has_errors
    from integration_hub.services import configuration as config
    from integration_hub.untrusted import safe_text

    row = _integration(org, type_key)
    if file is not None:
        document, version = load_mapping_file(file), None
    else:
        version, document = config.current_mapping(row)
    problems = config.check_mapping(row, document, actor())
    label = str(file) if file else (f"version {version}" if version else "the default template")
    if not problems:
        typer.secho(f"{label}: no problems", fg=typer.colors.GREEN)
    for problem in problems:
        colour = typer.colors.RED if problem.severity == "error" else typer.colors.YELLOW
        typer.secho(safe_text(problem), fg=colour)
    raise typer.Exit(1 if has_errors(problems) else 0)


@mappings_app.command("show")
@friendly_errors
def mappings_show(org: str, type_key: Annotated[str, typer.Argument(metavar="TYPE")]) -> None:
    """Print the saved mapping as YAML."""
    import yaml

    from integration_hub.services import configuration as config

    version, document = config.current_mapping(_integration(org, type_key))
    typer.echo(f"# version {version or 'template (not saved)'}")
    typer.echo(
        yaml.safe_dump(
            document.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True
        )
    )


@app.command("exclusions")
@friendly_errors
def exclusions(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    action: Annotated[str | None, typer.Argument(help="add or remove")] = None,
    category: Annotated[str | None, typer.Argument()] = None,
) -> None:
    """Show, add or remove excluded data categories."""
    from integration_hub.services import configuration as config
    from integration_hub.services.errors import InvalidInput

    row = _integration(org, type_key)
    current = config.list_exclusions(row)
    if action is not None:
        if action not in ("add", "remove") or not category:
            raise InvalidInput("use: integrations exclusions ORG TYPE add|remove CATEGORY")
        wanted = set(current) | {category} if action == "add" else set(current) - {category}
        current = config.set_exclusions(row, sorted(wanted), actor())
    typer.echo(f"excluded: {', '.join(current) or 'none'}")
    typer.echo(f"choices:  {', '.join(config.exclusion_choices(row))}")


# -- exports -----------------------------------------------------------------------------------
def print_summary(summary: dict[str, Any]) -> None:
    """A run's outcome; text from the volunteer app or a target goes through ``safe_text``
    (a volunteer's name may carry escape sequences meant for the operator's terminal)."""
    from integration_hub.money import format_nok
    from integration_hub.untrusted import safe_text

    title = "Dry run" if summary.get("dry_run") else "Export"
    typer.secho(
        f"{title} to {summary.get('target', '')}: run {summary['run_id']} {summary['status']}",
        bold=True,
    )
    if summary.get("would_export") is not None:
        typer.echo(f"  would export {summary['would_export']} records; nothing was sent")
        for line in summary.get("preview", []):
            typer.echo(
                safe_text(
                    f"    {line['document']:<12} {line['account']:<6} "
                    f"{line['amount']:>12} {line['date']} {line['text'][:60]}"
                )
            )
    typer.echo(
        f"  extracted {summary['extracted']}, exported {summary['exported']} "
        f"({format_nok(summary['exported_amount_ore'])}), failed {summary['failed']}, "
        f"skipped {summary['skipped']}, requests {summary['requests_sent']}"
        + (f", waiting to be confirmed {summary['waiting']}" if summary.get("waiting") else "")
    )
    if summary.get("retry_of_run_id"):
        typer.echo(f"  retry of the failed records of run {summary['retry_of_run_id']}")
    if summary.get("error"):
        typer.secho(safe_text(f"  stopped: {summary['error']}"), fg=typer.colors.RED)
    for failure in summary.get("failures", []):
        who = failure.get("volunteer_name") or ""
        what = failure.get("category") or ""
        amount = format_nok(failure["amount_ore"]) if failure.get("amount_ore") else ""
        typer.secho(
            safe_text(
                f"  failed  claim {failure['record_id']} ({what}, {amount}, {who}), attempt "
                f"{failure['attempt']}: {failure['reason']}"
            ),
            fg=typer.colors.YELLOW,
        )
    for reason, count in summary.get("skipped_reasons", {}).items():
        typer.echo(safe_text(f"  skipped {count} x {reason}"))
    for reason, count in summary.get("waiting_reasons", {}).items():
        typer.secho(safe_text(f"  waiting {count} x {reason}"), fg=typer.colors.CYAN)
    if summary.get("alert") and summary["alert"] != "no webhook":
        typer.echo(safe_text(f"  alert webhook: {summary['alert']}"))
    if summary.get("failures") and not summary.get("dry_run"):
        typer.echo(f"  retry the failures: integrations retry {summary['run_id']}")


@app.command("sync")
@friendly_errors
def sync(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    since: Annotated[str | None, typer.Option(help="First approval date, YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option(help="Last approval date, YYYY-MM-DD")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, send nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Prefect's logs.")] = False,
) -> None:
    """Export now. Exit 0 when every record exported or skipped, 1 when some failed or wait
    to be confirmed."""
    from integration_hub.prefect_env import configure_prefect
    from integration_hub.services.sync import run_export

    configure_prefect(verbose=verbose)
    summary = run_export(
        org,
        type_key,
        actor(),
        since=_date(since, "--since"),
        until=_date(until, "--until"),
        dry_run=dry_run,
    )
    print_summary(summary)
    raise typer.Exit(0 if summary["status"] == "succeeded" else 1)


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r} is not a date like 2026-01-31") from None


@app.command("runs")
@friendly_errors
def runs(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    limit: Annotated[int, typer.Option(help="How many runs, newest first; 0 for all.")] = 20,
) -> None:
    """The export history: every run with trigger, window, counts, totals, requests, duration."""
    from integration_hub.cli_operations import console, runs_table
    from integration_hub.services.history import list_runs

    history = list_runs(_integration(org, type_key), actor(), limit=limit or None)
    if as_json:
        typer.echo(json.dumps(history, indent=2, default=str))
        return
    if not history:
        typer.echo("no runs yet")
        return
    out = console()
    out.print(runs_table(history, title=f"Export history of {type_key} for {org}"))
    if limit and len(history) == limit:
        out.print(f"the newest {limit} runs; --limit 0 shows all")


# -- vault, sandbox, demo ----------------------------------------------------------------------
def _backup_reminder() -> str:
    """Said after every change to the key ring: a ring that exists only on this disk is one
    failed disk away from every stored credential being lost."""
    from integration_hub.settings import get_settings
    from integration_hub.vault import keys_from_environment
    from integration_hub.vault.errors import display_path

    settings = get_settings()
    if keys_from_environment(settings):
        return (
            "The keys come from INTEGRATIONS_VAULT_KEYS: keep a backup of its current value "
            "apart from the database; without it the stored credentials cannot be read."
        )
    return (
        f"Back up {display_path(settings.key_file)} now, apart from the database: without it "
        "the stored credentials cannot be read."
    )


@vault_app.command("init")
@friendly_errors
def vault_init(
    discard_credentials: Annotated[
        bool,
        typer.Option(
            "--discard-credentials",
            help="Only when the old key ring is lost for good: delete the credentials stored "
            "under it (they must be entered again) and create a new ring.",
        ),
    ] = False,
) -> None:
    """Write a new vault key file (mode 0600). Refuses to overwrite one, and refuses while
    credentials encrypted under another key ring are stored."""
    from integration_hub.vault.lifecycle import init_key_ring

    path = init_key_ring(discard_credentials=discard_credentials, actor=CLI_ACTOR_NAME)
    typer.echo(f"wrote a new vault key to {path} (mode 0600)")
    typer.echo(_backup_reminder())


@vault_app.command("rotate")
@friendly_errors
def vault_rotate(
    new_key: Annotated[
        bool, typer.Option("--new-key/--no-new-key", help="Add a key version first.")
    ] = True,
) -> None:
    """Re-encrypt every credential under a new primary key. Safe to re-run. Exit 0 when every
    credential uses the primary key afterwards, 1 when some could not be re-encrypted."""
    from sqlalchemy.exc import SQLAlchemyError

    from integration_hub.services import configuration as config
    from integration_hub.settings import get_settings
    from integration_hub.vault import rotate_key_file

    report = rotate_key_file(get_settings(), new_key=new_key, actor=CLI_ACTOR_NAME)
    typer.echo(
        f"key version {report.primary_version} is the primary: {report.rotated} credential(s) "
        f"re-encrypted, {report.already_current} already used it"
    )
    if report.failed:
        try:
            names = {o.id: o.slug for o in config.list_organisations(actor())}
        except SQLAlchemyError:  # the volunteer app's database is down: ids will do
            names = {}
        typer.secho(
            f"{len(report.failed)} credential(s) could not be re-encrypted and still use their "
            "old key version:",
            fg=typer.colors.RED,
        )
        for failure in report.failed:
            label = failure.label(names.get(failure.organisation_id))
            typer.secho(f"  {label}: {failure.reason}", fg=typer.colors.RED)
        typer.echo(
            "Keep those key versions in the ring. Enter these credentials again (setup wizard "
            "or `integrations setup`), or restore the key ring they were encrypted with, then "
            "run `integrations vault rotate --no-new-key`."
        )
    typer.echo(_backup_reminder())
    raise typer.Exit(0 if report.complete else 1)


@vault_app.command("retire")
@friendly_errors
def vault_retire(
    version: Annotated[int, typer.Argument(min=1, help="The key version to remove.")],
) -> None:
    """Remove an old key version from the key ring once no credential uses it (after `vault
    rotate`). Restart `serve` and `web` after a rotation before retiring the old version."""
    from integration_hub.vault.lifecycle import retire_key_version

    retired = retire_key_version(version, actor=CLI_ACTOR_NAME)
    left = ", ".join(map(str, retired.remaining))
    if not retired.written:
        typer.echo(
            f"No stored credential uses key version {version}: remove it from "
            f"{retired.source} (keep versions {left}) and restart the hub's processes."
        )
        return
    typer.echo(f"removed key version {version} from {retired.source}; versions left: {left}")
    typer.echo(_backup_reminder())


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8085,
    token: Annotated[
        str | None, typer.Option(help="Env var holding a token to register.", metavar="ENV")
    ] = None,
) -> None:
    """Serve the Xledger sandbox on 127.0.0.1 until Ctrl-C."""
    from integration_hub.sandbox.server import serve_forever
    from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app

    state = XledgerSandboxState()
    if token:
        value = os.environ.get(token)
        if not value:
            echo_err(f"Error: ${token} is not set")
            raise typer.Exit(2)
        state.add_company(value)
    typer.echo(f"Xledger sandbox on http://127.0.0.1:{port}/graphql (control: /_sandbox)")
    serve_forever(create_xledger_app(state), "127.0.0.1", port)


@app.command("demo")
@friendly_errors
def demo(
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Prefect's logs.")] = False,
) -> None:
    """Seed two organisations, start the sandbox, set up Xledger and export. Safe to re-run."""
    from integration_hub.demo import run_demo

    run_demo(verbose=verbose)


# Command groups kept in their own modules register themselves on ``app`` when imported; they
# import heavy modules inside their commands so ``--help`` stays instant.
from integration_hub import cli_operations, cli_scheduling, cli_web  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    app()
