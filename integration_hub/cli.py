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


EXIT_CODES = """Exit codes: 0 done; 1 the run finished but some records failed or wait to be
confirmed; 2 nothing was done (bad input, setup not finished, another export running); 3 the
run stopped (the target could not be reached or refused, recorded with the reason); 4 an
unexpected error (details in var/logs/cli.log); 130 stopped with Ctrl-C."""

EXIT_STOPPED = 3
EXIT_UNEXPECTED = 4
EXIT_INTERRUPTED = 130


def friendly_errors(command: F) -> F:
    """Every way a command can end becomes one clear last line and a documented exit code
    (:data:`EXIT_CODES`); nothing prints a traceback (an unexpected one goes to
    ``var/logs/cli.log``, and to the screen only with ``--verbose``)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from typer.exceptions import TyperException

        from integration_hub.adapters.factory import IntegrationNotConfigured
        from integration_hub.mappings.spec import MappingError
        from integration_hub.services.errors import InvalidInput, RunFailed, ServiceError
        from integration_hub.vault import VaultError

        try:
            return command(*args, **kwargs)
        except (typer.Exit, TyperException):  # typer's own: usage errors, aborts, exits
            raise
        except KeyboardInterrupt:
            echo_err(
                "Stopped (Ctrl-C). A run that had started is recorded as cancelled; what it "
                "sent is recorded and nothing is sent twice. Run the command again to continue."
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except RunFailed as exc:
            echo_err(f"Run {exc.run_id} stopped: {exc}")
            if exc.failure == "cancelled":
                raise typer.Exit(EXIT_INTERRUPTED) from None
            nothing_done = exc.failure in ("configuration", "busy")
            raise typer.Exit(2 if nothing_done else EXIT_STOPPED) from None
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
        except BrokenPipeError:
            # The reader went away (``| head``): nothing to say, and nobody to say it to.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except OSError as exc:
            echo_err(f"Error: {_os_problem(exc)}")
            raise typer.Exit(2) from None
        except Exception as exc:
            message = _database_hint(exc)
            if message is not None:
                echo_err(f"Error: {message}")
                raise typer.Exit(2) from None
            where = _log_unexpected(exc)
            echo_err(
                f"Error: an unexpected error in the hub ({type(exc).__name__}: "
                f"{str(exc)[:300]}); {where}. Tell the hub's operators."
            )
            raise typer.Exit(EXIT_UNEXPECTED) from None

    return wrapper  # type: ignore[return-value]


def _os_problem(exc: OSError) -> str:
    """A file system problem (a read-only or full ``var/``, a missing key file) in one line."""
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    advice = {
        errno.ENOSPC: "the disk is full; free some space",
        errno.EROFS: "the file system is read-only; the hub needs to write under var/",
        errno.EACCES: "permission denied; run as the hub's user, or fix the permissions",
        errno.ENOENT: "a file or folder is missing",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return f"{advice}{where}"


def _log_unexpected(exc: BaseException) -> str:
    """Write the traceback to ``var/logs/cli.log`` (private); say where, or that it could not."""
    import traceback
    from datetime import UTC, datetime

    from integration_hub.private_files import open_private_append
    from integration_hub.settings import get_settings

    path = get_settings().var_dir / "logs" / "cli.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open_private_append(path) as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            text = "".join(traceback.format_exception(exc))
            log.write(f"--- {stamp} {' '.join(sys.argv)}\n{text}".encode())
    except OSError:
        return "its details could not be written to a log"
    if os.environ.get("INTEGRATIONS_CLI_VERBOSE"):
        import traceback as tb

        tb.print_exception(exc)
    return f"the details are in {path}"


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


# ``integrations orgs`` (list, add, rename) and ``integrations flags``: cli_operators.py


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
    """A setup file's credential: ``${VARIABLE}`` from the environment, ``-`` a line of stdin,
    anything else as written. An unset variable is a problem reported with the others."""
    from integration_hub.services.errors import InvalidInput

    text = "" if value is None else str(value)
    match = ENV_REFERENCE.match(text.strip())
    if match:
        variable = match.group(1)
        if variable not in os.environ:
            raise InvalidInput(f"credentials.{name} refers to ${{{variable}}}, which is not set")
        return os.environ[variable]
    if text == "-":
        return sys.stdin.readline().rstrip("\n")
    return text


SETUP_EXIT_APPLIED, SETUP_EXIT_TEST_FAILED, SETUP_EXIT_REFUSED = 0, 1, 2
"""``integrations setup``: 0 applied, 1 the connection test failed, 2 invalid or refused (for
1 and 2 nothing was changed)."""


@app.command("setup")
@friendly_errors
def setup(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="Answer the wizard from a YAML file.")
    ] = None,
) -> None:
    """The setup wizard: credentials, connection test, mapping, schedule, exclusions.

    The whole setup is checked first (every problem listed), then the connection is tested
    with the new settings, and only then is everything stored, in one go. Exit 0 applied,
    1 the connection test failed, 2 invalid input; on 1 and 2 nothing was changed."""
    from integration_hub.services.errors import InvalidInput
    from integration_hub.services.setup import ConnectionTestFailed
    from integration_hub.untrusted import (
        MAX_YAML_BYTES,
        DocumentRefused,
        load_yaml,
        read_text_file,
        safe_text,
    )

    try:
        if from_file is not None:
            try:
                text = read_text_file(from_file, max_bytes=MAX_YAML_BYTES)
                answers = load_yaml(text, what=str(from_file)) or {}
            except DocumentRefused as exc:
                raise InvalidInput(f"the setup file cannot be used: {exc}") from None
            if not isinstance(answers, dict):
                raise InvalidInput(f"{from_file} must be a YAML mapping")
            outcome = _apply_answers(org, type_key, answers, from_file.parent)
            lines, last = outcome.lines(), _setup_done(outcome, org, type_key)
        else:
            lines, last = setup_interactive(org, type_key)
    except InvalidInput as exc:
        for problem in exc.problems:
            echo_err(f"  - {problem}")
        what = "the setup file" if from_file is not None else "the setup"
        count = len(exc.problems)
        echo_err(
            f"Nothing was changed: {what} has {count} problem{'' if count == 1 else 's'} "
            "(listed above); fix them and run the command again."
        )
        raise typer.Exit(SETUP_EXIT_REFUSED) from None
    except ConnectionTestFailed as exc:
        for warning in exc.result.warnings:
            echo_err(f"  warning: {warning}")
        echo_err(
            f"Nothing was changed: the connection test with the new settings failed "
            f"({exc.result.status.value}: {exc.result.detail}); the stored configuration "
            "is kept."
        )
        raise typer.Exit(SETUP_EXIT_TEST_FAILED) from None
    typer.echo("")
    for line in lines:
        typer.echo(safe_text(line))
    typer.echo(safe_text(last))


def _setup_done(outcome: Any, org: str, type_key: str) -> str:
    """The one line that ends a setup that was applied."""
    line = outcome.summary()
    if outcome.status == "active" and outcome.scheduled:
        line += f" Run `integrations sync {org} {type_key}` to export now."
    elif outcome.status != "active":
        line += " Activate it with `activate: true` in the setup file."
    return line


def _apply_answers(org: str, type_key: str, answers: dict[str, Any], base_dir: Path) -> Any:
    from integration_hub.services import setup as setup_service

    request = setup_service.read_setup(
        type_key, answers, secret=_resolve_secret, mapping_dir=base_dir
    )
    return setup_service.apply(org, type_key, request, actor())


def setup_from_answers(
    org: str, type_key: str, answers: dict[str, Any], base_dir: Path = Path(".")
) -> list[str]:
    """A setup file's answers applied as one whole through the setup service (also what the
    demo's callers and the fault-injection script use); returns the setup's lines. Raises
    :class:`InvalidInput` (nothing changed) or ``ConnectionTestFailed`` (nothing changed)."""
    return _apply_answers(org, type_key, answers, base_dir).lines()


def setup_interactive(org: str, type_key: str) -> tuple[list[str], str]:
    """Prompt for each step; secrets are typed hidden and never echoed. The connection is
    tested (step 2) and the mapping checked (step 3) with what was typed before anything is
    stored; the whole is then applied at once, as a setup file is."""
    from integration_hub.mappings.spec import load_mapping_file, load_template
    from integration_hub.services import configuration as config
    from integration_hub.services import setup as setup_service
    from integration_hub.services import wizard
    from integration_hub.services.errors import InvalidInput
    from integration_hub.services.setup import ConnectionTestFailed, ScheduleRequest, SetupRequest
    from integration_hub.untrusted import safe_text

    who = actor()
    _organisation, row = wizard.planned(org, type_key, who)
    adapter_type = config.integration_type(type_key)
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
    values = {k: v for k, v in values.items() if v}
    typer.echo("Step 2/5 connection test ...")
    result, _ = setup_service.try_setup(
        org, type_key, SetupRequest(values=values, activate=False), who
    )
    typer.echo(safe_text(f"  {result.status} in {result.elapsed_ms} ms: {result.detail}"))
    for warning in result.warnings:
        typer.secho(safe_text(f"  warning: {warning}"), fg=typer.colors.YELLOW)
    if not result.ok:
        raise ConnectionTestFailed(adapter_type.display_name, result)

    typer.echo("Step 3/5 field mapping")
    document = None
    accept = False
    if adapter_type.default_mapping is None:
        typer.echo(f"  none needed for {adapter_type.display_name}")
    else:
        version, _current = config.current_mapping(row) if row.id else (None, None)
        path = typer.prompt(
            "  mapping file (Enter for the current/default one)", default="", show_default=False
        )
        if path:
            document = load_mapping_file(Path(path))
        elif version is None:
            document = load_template(adapter_type.default_mapping)
        if document is not None:
            _, problems = setup_service.try_setup(
                org,
                type_key,
                SetupRequest(values=values, mapping=document, activate=False),
                who,
            )
            for problem in problems:
                typer.secho(safe_text(f"  {problem}"), fg=typer.colors.YELLOW)
            accept = not problems or typer.confirm("  save the mapping despite these warnings?")
            if not accept:
                raise InvalidInput(
                    "the mapping's warnings were not accepted",
                    [f"mapping: warning: {p}" for p in problems],
                )

    typer.echo("Step 4/5 schedule")
    schedule = None
    if not adapter_type.runs_on_schedule:
        typer.echo(f"  none: {adapter_type.display_name} is reported per closed period")
    elif daily := typer.prompt(
        "  run daily at (HH:MM, Enter for none)", default="", show_default=False
    ):
        timezone = typer.prompt("  time zone", default="Europe/Oslo")
        schedule = ScheduleRequest(daily=daily, timezone=timezone)
    typer.echo("Step 5/5 excluded categories")
    choices = config.exclusion_choices(row)
    current = ",".join(config.list_exclusions(row)) if row.id else ""
    answer = typer.prompt(f"  comma-separated, from {', '.join(choices)}", default=current)
    request = SetupRequest(
        values=values,
        mapping=document,
        accept_warnings=accept,
        schedule=schedule,
        exclusions=tuple(c.strip() for c in answer.split(",") if c.strip()),
        activate=True,
    )
    outcome = setup_service.apply(org, type_key, request, who)
    return outcome.lines(), _setup_done(outcome, org, type_key)


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


MAPPING_EXIT_CODES = """Exit codes: 0 no problems (or only warnings, with --allow-warnings);
1 warnings: the mapping can be used, but an account is missing, cannot be posted to, is of the
wrong kind or could not be checked; 2 errors: the mapping cannot be used, or it could not be read
(a bad file, an unknown organisation or type); 4 an unexpected error."""

MAPPING_WARNINGS = 1
MAPPING_ERRORS = 2


@mappings_app.command("validate", epilog=MAPPING_EXIT_CODES)
@friendly_errors
def mappings_validate(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    file: Annotated[Path | None, typer.Option("--file", help="A mapping YAML to check.")] = None,
    allow_warnings: Annotated[
        bool,
        typer.Option("--allow-warnings", help="Exit 0 when there are warnings but no errors."),
    ] = False,
) -> None:
    """Check the saved mapping (or FILE) against the target's live codes: accounts it lacks,
    accounts that cannot be posted to, accounts of the wrong kind (an expense on an income or
    balance sheet account) where the target says the kind, categories without an account.
    Warnings fail the check (exit 1) unless --allow-warnings."""
    from integration_hub.mappings.spec import load_mapping_file
    from integration_hub.mappings.validator import has_errors, warnings_of
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
    if has_errors(problems):
        typer.secho(f"{label}: errors; the mapping cannot be used", fg=typer.colors.RED)
        raise typer.Exit(MAPPING_ERRORS)
    count = len(warnings_of(problems))
    if count and not allow_warnings:
        typer.secho(
            f"{label}: {count} warning(s); fix them, or pass --allow-warnings to accept them",
            fg=typer.colors.YELLOW,
        )
        raise typer.Exit(MAPPING_WARNINGS)
    raise typer.Exit(0)


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


@app.command("sync", epilog=EXIT_CODES)
@friendly_errors
def sync(
    org: str,
    type_key: Annotated[str, typer.Argument(metavar="TYPE")],
    since: Annotated[str | None, typer.Option(help="First approval date, YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option(help="Last approval date, YYYY-MM-DD")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, send nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Prefect's logs.")] = False,
) -> None:
    """Export now. A target that cannot be reached is tried again for
    INTEGRATIONS_MANUAL_RUN_RETRY_SECONDS (60 s) before the run stops."""
    from integration_hub.prefect_env import configure_prefect
    from integration_hub.services.sync import run_export
    from integration_hub.tasks.failures import announcements

    configure_prefect(verbose=verbose, shared_server=True)
    with announcements(announce):
        summary = run_export(
            org,
            type_key,
            actor(),
            since=_date(since, "--since"),
            until=_date(until, "--until"),
            dry_run=dry_run,
        )
    print_summary(summary)
    raise typer.Exit(summary_exit_code(summary))


def announce(message: str) -> None:
    """What a run waits for, as it happens (e.g. a target that cannot be reached yet)."""
    from integration_hub.untrusted import safe_text

    typer.secho(safe_text(message), err=True, fg=typer.colors.YELLOW)


def summary_exit_code(summary: dict[str, Any]) -> int:
    """0 succeeded, 1 some records failed or wait, 3 the run stopped (see EXIT_CODES)."""
    if summary["status"] == "succeeded":
        return 0
    return EXIT_STOPPED if summary["status"] == "failed" else 1


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
    out.print(runs_table(history, title=f"Export history of {type_key} for {org}", width=out.width))
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
@friendly_errors
def sandbox_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8085,
    token: Annotated[
        str | None, typer.Option(help="Env var holding a token to register.", metavar="ENV")
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Serve every sandbox `make demo` set up, with its data, where the "
            "integrations expect them (so sync, report and the web app work after the demo).",
        ),
    ] = False,
) -> None:
    """Serve the Xledger sandbox on 127.0.0.1 until Ctrl-C (or, with --demo, the demo's)."""
    from integration_hub.sandbox.server import serve_forever
    from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app

    if demo:
        _serve_demo_sandboxes()
        return

    state = XledgerSandboxState()
    if token:
        value = os.environ.get(token)
        if not value:
            echo_err(f"Error: ${token} is not set")
            raise typer.Exit(2)
        state.add_company(value)
    typer.echo(f"Xledger sandbox on http://127.0.0.1:{port}/graphql (control: /_sandbox)")
    serve_forever(create_xledger_app(state), "127.0.0.1", port)


def _serve_demo_sandboxes() -> None:
    import threading

    from integration_hub.demo import demo_sandboxes
    from integration_hub.sandbox.server import start_server
    from integration_hub.services.errors import InvalidInput

    sandboxes = demo_sandboxes()
    if not sandboxes:
        raise InvalidInput("no integration points at a local sandbox; run `make demo` first")
    running = []
    try:
        for sandbox_port, (what, asgi) in sorted(sandboxes.items()):
            try:
                running.append(start_server(asgi, "127.0.0.1", sandbox_port))
            except OSError:
                raise InvalidInput(
                    f"port {sandbox_port} for the {what} sandbox is in use; stop what uses "
                    "it, or run `make demo` again (it picks free ports)"
                ) from None
            typer.echo(f"{what} sandbox on http://127.0.0.1:{sandbox_port} (demo data)")
        typer.echo("Ctrl-C stops them.")
        threading.Event().wait()
    except KeyboardInterrupt:
        typer.echo("Stopped the sandboxes.")
    finally:
        for server in running:
            server.stop()


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
from integration_hub import cli_operations, cli_operators, cli_scheduling, cli_web  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    app()
