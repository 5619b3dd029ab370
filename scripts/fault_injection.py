"""Fault injection: does the hub post every claim exactly once when the network misbehaves?

    .venv/bin/python scripts/fault_injection.py [--target xledger|dynamics|both] [--seeds 50]
        [--first-seed 1] [--claims 500] [--jobs 2] [--json]

Why: the README promises "never post twice", and the load engine's tests use the sandboxes'
count-down fault switches, which fire where the test expects them. This script measures the
promise the way production breaks it. Per seed it builds a fresh hub (its own var dir and SQLite
database, migrated, a vault key) and a fresh sandbox server with its own company or tenant in
this process, puts the seeded fault proxy (:mod:`integration_hub.sandbox.fault_proxy`) in
between, seeds claims whose volunteers exist as employees at the target and whose accounts exist
(so without faults every claim would be exported), and sets the integration up through the
wizard's own code path (``setup_from_answers``, as ``integrations setup --from-file`` and the
demo do). Then it runs ``integrations sync`` as a subprocess ``--faulty-runs`` times with faults
on; before each of those syncs the volunteer app approves the next wave of claims, so every
faulty sync has something new to send. Some syncs are SIGKILLed: once the target has answered
the sync's n-th write but before the sync hears the answer, or at a random moment. Then the
faults go off, the settle time passes, and syncs run until one changes nothing (at most
``--final-runs``). Last, the target's own store (read in-process from the sandbox state) is
compared with the hub's database (``hub_export_ledger``, ``hub_record_outcomes``,
``hub_sync_runs``) and the claims:

* duplicates: claims booked more than once at the target;
* lost: claims the hub says are exported that the target does not hold;
* wrong: bookings whose amount, account, counterparty or posting date differ from the claim,
  and bookings no claim explains;
* stuck: claims neither at the target nor finally failed with a reason, or with a ledger row
  that is still not ``exported``;
* outcomes: each claim the target holds must have exactly one ``exported`` outcome over all
  runs (none otherwise), and the øre totals of target, outcomes and runs must agree;
* runs left ``running``.

It exits 0 only when every figure is zero (1 with findings, 130 when interrupted). One Prefect
server serves every sync of the whole driver run (an embedded one per sync costs ~10 s).
``--jobs`` runs seeds side by side, each with its own hub, sandbox and proxy. Each sync's output
goes to a log file in its seed's directory; seed directories with findings are kept (``--keep``).

One thing the driver does to the hub's database: after it SIGKILLs a sync it moves that run's
export lease's expiry into the past. A killed run's lease would otherwise block the next sync for
its 120 s TTL; expiring it is what 120 s of waiting would do, only sooner.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from zoneinfo import ZoneInfo

TARGETS = ("xledger", "dynamics")
ORG_SLUG = "fault-injection"
CATEGORIES = ("mileage", "travel", "meals", "materials", "parking", "toll")
CHAPTERS = (("OSL", "Oslo", "0301"), ("BGO", "Bergen", "4601"), ("TRD", "Trondheim", "5001"))
VOLUNTEERS = tuple((str(3001 + n), f"Frivillig {n + 1:02d}") for n in range(25))
"""(employee number, name): every volunteer exists as an employee at the target."""
BOOKKEEPING_ZONE = ZoneInfo("Europe/Oslo")
MAX_LINES_PER_REQUEST = {"xledger": 500, "dynamics": 100}
"""The adapters' request sizes: how many writes a run makes, to pick a write to kill at."""
HUB_ENV_UNSET = (
    "INTEGRATIONS_APP_DATABASE_URL",
    "INTEGRATIONS_VAULT_KEYS",
    "INTEGRATIONS_VAULT_KEY_FILE",
    "PREFECT_API_URL",
)
"""Variables a developer's shell may carry that would point a seed at real data or keys."""


# =============================================================================================
# options
# =============================================================================================
@dataclass(frozen=True)
class Options:
    targets: tuple[str, ...]
    seeds: int
    first_seed: int
    claims: int
    json: bool
    fault_rate: float
    read_fault_rate: float
    kinds: tuple[str, ...]
    weights: dict[str, float]
    faulty_runs: int
    waves: int
    jobs: int
    kill_rate: float
    kill_window_s: float
    final_runs: int
    read_timeout_s: float
    settle_s: float
    late_commit_delay_s: float
    sync_timeout_s: float
    keep: str
    prefect_api_url: str | None


def parse_options(argv: list[str] | None = None) -> Options:
    from integration_hub.sandbox.fault_proxy import ALL_KINDS

    parser = argparse.ArgumentParser(
        description="Fault injection between the hub and the sandboxes: duplicates, lost, "
        "wrong and stuck claims across seeds.",
    )
    parser.add_argument("--target", choices=[*TARGETS, "both"], default="both")
    parser.add_argument("--seeds", type=int, default=50, help="seeds per target (default 50)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--claims", type=int, default=500, help="approved claims per seed")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument("--fault-rate", type=float, default=0.45, help="share of faulty writes")
    parser.add_argument("--read-fault-rate", type=float, default=0.10, help="share for reads")
    parser.add_argument(
        "--kinds",
        default=",".join(ALL_KINDS),
        help="comma-separated fault kinds to inject (default: all): " + ", ".join(ALL_KINDS),
    )
    parser.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="KIND=W",
        help="relative weight of a fault kind (default 1 each); repeatable",
    )
    parser.add_argument("--faulty-runs", type=int, default=4, help="syncs with faults on")
    parser.add_argument(
        "--waves",
        type=int,
        default=None,
        help="the claims are approved in this many waves, one before each faulty sync (default: "
        "as many as faulty syncs; 1 approves all before the first)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="seeds run side by side (each its own hub and sandbox)"
    )
    parser.add_argument(
        "--kill-rate", type=float, default=0.4, help="share of faulty syncs that are SIGKILLed"
    )
    parser.add_argument(
        "--kill-window",
        type=float,
        default=1.5,
        help="a random-moment kill lands within this many seconds of the run's first request",
    )
    parser.add_argument("--final-runs", type=int, default=5, help="at most this many final syncs")
    parser.add_argument("--read-timeout", type=float, default=1.5, help="the hub's, in seconds")
    parser.add_argument("--late-commit-delay", type=float, default=0.5, help="seconds")
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="the hub's settle seconds (default: late-commit delay + 2 s)",
    )
    parser.add_argument("--sync-timeout", type=float, default=300.0, help="per sync, seconds")
    parser.add_argument(
        "--keep",
        choices=["none", "failing", "all"],
        default="failing",
        help="which seed directories (databases, sync logs) to keep",
    )
    parser.add_argument(
        "--prefect-api-url", default=None, help="use this Prefect server instead of starting one"
    )
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        parser.error(f"unknown fault kind(s): {', '.join(unknown)}")
    weights: dict[str, float] = {}
    for item in args.weight:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            parser.error(f"--weight {item!r}: expected KIND=NUMBER")
        if not sep or name.strip() not in ALL_KINDS:
            parser.error(f"--weight {item!r}: expected KIND=NUMBER with a known kind")
    for name, value in (("--seeds", args.seeds), ("--claims", args.claims)):
        if value < 1:
            parser.error(f"{name} must be at least 1")
    for name, rate in (
        ("--fault-rate", args.fault_rate),
        ("--read-fault-rate", args.read_fault_rate),
        ("--kill-rate", args.kill_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            parser.error(f"{name} must be between 0 and 1")
    settle = args.late_commit_delay + 2.0 if args.settle is None else args.settle
    faulty_runs = max(0, args.faulty_runs)
    waves = max(1, faulty_runs) if args.waves is None else args.waves
    if waves < 1 or args.jobs < 1:
        parser.error("--waves and --jobs must be at least 1")
    if settle <= args.late_commit_delay:
        parser.error("--settle must be longer than --late-commit-delay")
    return Options(
        targets=TARGETS if args.target == "both" else (args.target,),
        seeds=args.seeds,
        first_seed=args.first_seed,
        claims=args.claims,
        json=args.json,
        fault_rate=args.fault_rate,
        read_fault_rate=args.read_fault_rate,
        kinds=kinds,
        weights=weights,
        faulty_runs=faulty_runs,
        waves=min(waves, args.claims),
        jobs=args.jobs,
        kill_rate=args.kill_rate,
        kill_window_s=max(0.0, args.kill_window),
        final_runs=max(1, args.final_runs),
        read_timeout_s=args.read_timeout,
        settle_s=settle,
        late_commit_delay_s=args.late_commit_delay,
        sync_timeout_s=args.sync_timeout,
        keep=args.keep,
        prefect_api_url=args.prefect_api_url,
    )


def fault_profile(options: Options) -> Any:
    from integration_hub.sandbox.fault_proxy import PRE_COMMIT_KINDS, FaultProfile

    weight = {kind: options.weights.get(kind, 1.0) for kind in options.kinds}
    return FaultProfile(
        write_rate=options.fault_rate,
        read_rate=options.read_fault_rate,
        write_weights=weight,
        read_weights={k: w for k, w in weight.items() if k in PRE_COMMIT_KINDS},
        late_commit_delay_s=options.late_commit_delay_s,
        # Nothing in the hub waits longer than its read timeout; a hang that outlives it is a
        # bug, and the cap keeps such a bug from stalling the driver.
        hang_cap_s=max(30.0, options.read_timeout_s * 10),
    )


# =============================================================================================
# output
# =============================================================================================
class Console:
    """Progress goes to stdout, or to stderr when stdout carries the JSON summary."""

    def __init__(self, json_mode: bool) -> None:
        self.stream = sys.stderr if json_mode else sys.stdout

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)


def command_line() -> str:
    """How this run was started, as a shell line a person can paste."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path.cwd())
    return shlex.join([str(python), str(script), *sys.argv[1:]])


# =============================================================================================
# the world of one seed: claims in the volunteer app
# =============================================================================================
@dataclass(frozen=True)
class Employee:
    number: str
    name: str


@dataclass(frozen=True)
class ClaimFacts:
    """What the target must hold for a claim, worked out here, not by the hub."""

    claim_id: int
    key: str
    amount_ore: int
    account: str
    approved_at: datetime
    employee: str

    @property
    def posting_date(self) -> str:
        """The approval day in Norway: what the default mappings post on."""
        return self.approved_at.astimezone(BOOKKEEPING_ZONE).date().isoformat()


@dataclass
class World:
    organisation_id: int
    employees: list[Employee]
    claims: list[ClaimFacts] = field(default_factory=list)


SETUP_LOCK = threading.Lock()
"""The hub's settings and engines are per process: one seed at a time sets its hub up here."""


@contextlib.contextmanager
def hub_environment(env: dict[str, str]) -> Iterator[None]:
    """Point this process's hub code at one seed's hub (settings and engines are cached per
    process, so both are reset on the way in and out)."""
    from integration_hub import db, settings

    with SETUP_LOCK:
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        settings.reset_settings()
        db.dispose_engines()
        try:
            yield
        finally:
            db.dispose_engines()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            settings.reset_settings()


def seed_volunteer_app(rng: random.Random, claims: int, today: date) -> tuple[int, list[Any]]:
    """An organisation with chapters, volunteers (all with employee numbers) and ``claims``
    submitted claims, each with the moment it will be approved; returns the organisation id and
    (id, version, amount, category, approval moment, employee number) per claim."""
    from integration_hub.db import app_session
    from integration_hub.models import Chapter, ClaimStatus, ExpenseClaim, Organisation, Volunteer

    with app_session() as session:
        org = Organisation(slug=ORG_SLUG, name="Fault Injection Forening", org_number="970000001")
        session.add(org)
        session.flush()
        chapters = [
            Chapter(
                organisation_id=org.id or 0,
                code=code,
                name=f"{name} lokallag",
                municipality_number=municipality,
            )
            for code, name, municipality in CHAPTERS
        ]
        session.add_all(chapters)
        session.flush()
        volunteers = [
            Volunteer(
                organisation_id=org.id or 0,
                chapter_id=chapters[n % len(chapters)].id or 0,
                name=name,
                email=f"{name.lower().replace(' ', '.')}@example.org",
                employee_number=number,
            )
            for n, (number, name) in enumerate(VOLUNTEERS)
        ]
        session.add_all(volunteers)
        session.flush()
        rows = []
        planned: list[datetime] = []
        for n in range(claims):
            volunteer = volunteers[rng.randrange(len(volunteers))]
            expense_date = today - timedelta(days=rng.randint(5, 60))
            approved_at = datetime.combine(
                expense_date + timedelta(days=rng.randint(1, 4)), clock_time(9), tzinfo=UTC
            ) + timedelta(minutes=rng.randint(0, 600))
            rows.append(
                ExpenseClaim(
                    organisation_id=org.id or 0,
                    chapter_id=volunteer.chapter_id,
                    volunteer_id=volunteer.id or 0,
                    category=CATEGORIES[n % len(CATEGORIES)],
                    amount_ore=rng.randint(2000, 150000),
                    expense_date=expense_date,
                    status=ClaimStatus.SUBMITTED.value,
                    description=f"Utlegg {n + 1}",
                )
            )
            planned.append(approved_at)
        session.add_all(rows)
        session.flush()
        employee_of = {v.id: v.employee_number for v in volunteers}
        facts = [
            (
                row.id,
                row.version,
                row.amount_ore,
                row.category,
                approved_at,
                employee_of[row.volunteer_id],
            )
            for row, approved_at in zip(rows, planned, strict=True)
        ]
    return org.id or 0, facts


# =============================================================================================
# targets
# =============================================================================================
@dataclass(frozen=True)
class Line:
    """One line as the target stores it, normalised for comparison."""

    key: str
    amount_ore: int
    account: str
    counterparty: str
    posting_date: str


class Target(Protocol):
    key: str
    url: str

    def answers(self, proxy_url: str) -> dict[str, Any]: ...
    def lines(self) -> list[Line]: ...
    def stop(self) -> None: ...


def _ore(amount: Any) -> int:
    return int((Decimal(str(amount)) * 100).to_integral_value())


class XledgerTarget:
    """A fresh Xledger sandbox (its own server and company) for one seed."""

    key = "xledger"
    graphql = True

    def __init__(self, employees: list[Employee]) -> None:
        from integration_hub.sandbox.server import start_server
        from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app

        self.token = secrets.token_hex(20)
        state = XledgerSandboxState()
        self.company = state.add_company(
            self.token, employees=[{"code": e.number, "description": e.name} for e in employees]
        )
        self.server = start_server(create_xledger_app(state))
        self.url = self.server.url

    def answers(self, proxy_url: str) -> dict[str, Any]:
        return {
            "base_url": f"{proxy_url}/graphql",
            "credentials": {"api_token": self.token},
            "mapping": "default",
            "exclusions": [],
            "accept_warnings": True,
        }

    def lines(self) -> list[Line]:
        return [
            Line(
                key=str(item.get("extIdentifier") or "").upper(),
                amount_ore=_ore(item["amount"]),
                account=str(item.get("account_code") or ""),
                counterparty=str(item.get("subledger_code") or ""),
                posting_date=str(item.get("postedDate") or ""),
            )
            for item in self.company.ledger_snapshot()
        ]

    def stop(self) -> None:
        self.server.stop()


class DynamicsTarget:
    """A fresh Business Central sandbox (its own server and tenant) for one seed."""

    key = "dynamics"
    graphql = False

    def __init__(self, employees: list[Employee]) -> None:
        from integration_hub.sandbox.dynamics import DynamicsSandboxState, create_dynamics_app
        from integration_hub.sandbox.server import start_server

        state = DynamicsSandboxState()
        self.provisioned = state.provision(
            company_name="Fault Injection",
            employees=[{"number": e.number, "displayName": e.name} for e in employees],
        )
        self.server = start_server(create_dynamics_app(state))
        self.url = self.server.url

    def answers(self, proxy_url: str) -> dict[str, Any]:
        settings = self.provisioned.settings(proxy_url)
        secret = settings.pop("client_secret")
        return {
            **settings,
            "credentials": {"client_secret": secret},
            "mapping": "default",
            "exclusions": [],
            "accept_warnings": True,
        }

    def lines(self) -> list[Line]:
        company = self.provisioned.company
        lines = [
            Line(
                key=str(line.get("externalDocumentNumber") or "").upper(),
                amount_ore=_ore(line["amount"]),
                account=str(line.get("accountNumber") or "")
                if line.get("accountType") == "G/L Account"
                else "",
                counterparty=str(line.get("accountNumber") or "")
                if line.get("accountType") == "Employee"
                else "",
                posting_date=str(line.get("postingDate") or ""),
            )
            for line in company.journal_lines()
        ]
        # The driver never posts the journal; posted entries would carry no external number.
        lines += [
            Line(f"POSTED:{e.get('documentNumber')}", 0, "", "", "") for e in company.gl_entries
        ]
        return lines

    def stop(self) -> None:
        self.server.stop()


def start_target(key: str, employees: list[Employee]) -> XledgerTarget | DynamicsTarget:
    return XledgerTarget(employees) if key == "xledger" else DynamicsTarget(employees)


def expected_lines(target: str, claim: ClaimFacts) -> tuple[Line, Line]:
    """The debit and credit line the default mapping makes of a claim at ``target``."""
    key = claim.key.upper()
    debit = Line(key, claim.amount_ore, claim.account, "", claim.posting_date)
    if target == "xledger":
        credit = Line(key, -claim.amount_ore, "2910", claim.employee, claim.posting_date)
    else:
        credit = Line(key, -claim.amount_ore, "", claim.employee, claim.posting_date)
    return debit, credit


# =============================================================================================
# one seed's hub
# =============================================================================================
class SeedHub:
    """A fresh hub for one seed: its own directory, SQLite database and vault key."""

    def __init__(self, directory: Path, options: Options, target: str, prefect: SharedPrefect):
        self.directory = directory
        self.var_dir = directory / "var"
        self.var_dir.mkdir(parents=True)
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.database_url = f"sqlite:///{directory / 'hub.db'}"
        self.target = target
        self.integration_id = 0
        self.org_id = 0
        upper = target.upper()
        self.env = {
            "INTEGRATIONS_VAR_DIR": str(self.var_dir),
            "INTEGRATIONS_DATABASE_URL": self.database_url,
            f"INTEGRATIONS_TARGETS__{upper}__SETTLE_SECONDS": f"{options.settle_s:g}",
            f"INTEGRATIONS_TARGETS__{upper}__READ_TIMEOUT_SECONDS": f"{options.read_timeout_s:g}",
            # The proxy and the sandboxes listen on this machine, as an operator allows them.
            "INTEGRATIONS_ALLOWED_HOSTS": "127.0.0.1",
        }
        self.sync_env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith("INTEGRATIONS_") and not k.startswith("PREFECT_")
            },
            **self.env,
            **prefect.client_env,
        }
        self._engine: Any = None

    def prepare(
        self, rng: random.Random, claims: int, today: date
    ) -> tuple[World, list[tuple[Any, ...]]]:
        """Migrate, make a vault key, seed the volunteer app, offer the type."""
        from integration_hub import db
        from integration_hub.adapters.registry import feature_flag
        from integration_hub.services.configuration import OPERATOR, set_feature_flag
        from integration_hub.settings import get_settings
        from integration_hub.vault import init_key_file

        with hub_environment(self.env):
            db.upgrade("hub")
            db.upgrade("app")
            init_key_file(get_settings().key_file)
            org_id, rows = seed_volunteer_app(rng, claims, today)
            set_feature_flag(org_id, feature_flag(self.target), True, OPERATOR)
        self.org_id = org_id
        return World(org_id, [Employee(number, name) for number, name in VOLUNTEERS]), rows

    def set_up_integration(self, answers: dict[str, Any]) -> list[str]:
        """The setup wizard's steps, as ``integrations setup --from-file`` and the demo run
        them; returns the wizard's lines."""
        from integration_hub.adapters.factory import forget_reference_codes
        from integration_hub.cli import setup_from_answers
        from integration_hub.services.configuration import OPERATOR, integration, organisation

        forget_reference_codes()
        with hub_environment(self.env):
            lines = setup_from_answers(ORG_SLUG, self.target, answers)
            row = integration(organisation(ORG_SLUG, OPERATOR), self.target, OPERATOR)
            self.integration_id = row.id or 0
        return lines

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            self._engine = create_engine(
                self.database_url, poolclass=NullPool, connect_args={"timeout": 30}
            )
        return self._engine

    def rows(self, sql: str) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as connection:
            return list(connection.execute(text(sql), {"i": self.integration_id}))

    def approve(self, claims: list[ClaimFacts]) -> None:
        """The volunteer app approves these claims (one wave): status and approval moment."""
        from sqlalchemy import bindparam, update

        from integration_hub.models import ClaimStatus, ExpenseClaim

        table = ExpenseClaim.__table__
        statement = (
            update(table)
            .where(table.c.id == bindparam("claim"))
            .values(status=ClaimStatus.APPROVED.value, approved_at=bindparam("at"))
        )
        if claims:
            with self.engine.begin() as connection:
                connection.execute(
                    statement, [{"claim": c.claim_id, "at": c.approved_at} for c in claims]
                )

    def expire_lease(self) -> int:
        """What 120 s of waiting does to a killed run's lease, now (see the module docstring)."""
        from sqlalchemy import update

        from integration_hub.models import ExportLease

        table = ExportLease.__table__
        past = datetime.now(UTC) - timedelta(seconds=1)
        with self.engine.begin() as connection:
            result = connection.execute(
                update(table)
                .where(table.c.integration_id == self.integration_id)
                .values(expires_at=past)
            )
        return int(result.rowcount or 0)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


# =============================================================================================
# syncs
# =============================================================================================
@dataclass(frozen=True)
class KillPlan:
    """``write``: SIGKILL once the upstream answered the run's n-th write, before the hub
    hears it. ``moment``: SIGKILL a random delay after the run's first request."""

    mode: str = "none"
    write: int = 0
    delay_s: float = 0.0

    def describe(self) -> str:
        if self.mode == "write":
            return f"kill at write {self.write}"
        if self.mode == "moment":
            return f"kill {self.delay_s:.2f} s after the first request"
        return "no kill"


@dataclass
class SyncRecord:
    phase: str
    plan: str
    exit_code: int | None
    killed: bool
    timed_out: bool
    seconds: float
    log: str


def sync_command() -> list[str]:
    script = Path(sys.executable).with_name("integrations")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from integration_hub.cli import app; app()"]


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the driver is stopping; no new sync starts."""


class Children:
    """Every sync subprocess now running (one per job), so Ctrl-C can end them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self.stopping = threading.Event()

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self.stopping.is_set():
                raise Interrupted
            process = subprocess.Popen(command, **kwargs)
            self._running.add(process)
            return process

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.discard(process)

    def stop_all(self) -> None:
        """No new sync starts, and every running one is SIGKILLed."""
        with self._lock:
            self.stopping.set()
            running = list(self._running)
        for process in running:
            kill_group(process)


def kill_group(process: subprocess.Popen[bytes]) -> bool:
    """SIGKILL a sync's whole process group; True when it was still running."""
    if process.poll() is not None:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return True


CHILDREN = Children()


def pause(seconds: float) -> None:
    """Let time pass (the settle time is time, not an event), unless the driver is stopping."""
    if CHILDREN.stopping.wait(seconds):
        raise Interrupted


def run_sync(
    hub: SeedHub, proxy: Any, plan: KillPlan, *, phase: str, number: int, timeout_s: float
) -> SyncRecord:
    """One ``integrations sync`` subprocess, killed as ``plan`` says; output to a log file."""
    log_path = hub.logs / f"sync-{number:02d}-{phase}.log"
    command = [*sync_command(), "sync", ORG_SLUG, hub.target]
    before = proxy.stats()
    killed = threading.Event()
    started = time.monotonic()
    timed_out = False
    with log_path.open("wb") as log:
        log.write(f"$ {shlex.join(command)}\n# {phase}: {plan.describe()}\n".encode())
        log.flush()
        process = CHILDREN.start(
            command,
            env=hub.sync_env,
            cwd=hub.directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only the driver, which kills it
        )

    def kill_now() -> None:
        if kill_group(process):
            killed.set()

    watcher = threading.Thread(
        target=lambda: (process.wait(), proxy.poke()), name="sync-watcher", daemon=True
    )
    watcher.start()
    try:
        if plan.mode == "write":
            at = before.writes_answered + plan.write
            proxy.set_write_hook(lambda n: kill_now() if n == at else None)
        elif plan.mode == "moment":
            proxy.wait_for(
                lambda s: s.requests > before.requests or process.poll() is not None, timeout_s
            )
            try:
                process.wait(plan.delay_s)
            except subprocess.TimeoutExpired:
                kill_now()
        try:
            process.wait(max(0.0, timeout_s - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_now()
            process.wait()
    finally:
        proxy.set_write_hook(None)
        kill_group(process)
        process.wait()
        CHILDREN.forget(process)
        watcher.join(5)
    if CHILDREN.stopping.is_set():
        raise Interrupted
    return SyncRecord(
        phase=phase,
        plan=plan.describe(),
        exit_code=process.returncode,
        killed=killed.is_set(),
        timed_out=timed_out,
        seconds=round(time.monotonic() - started, 2),
        log=str(log_path),
    )


def choose_kill(rng: random.Random, options: Options, target: str, claims: int) -> KillPlan:
    """Whether and where to kill a faulty sync that has ``claims`` new claims to send."""
    if rng.random() >= options.kill_rate:
        return KillPlan()
    writes = max(1, math.ceil(claims * 2 / MAX_LINES_PER_REQUEST[target]))
    if rng.random() < 0.5:
        return KillPlan("write", write=rng.randint(1, writes))
    return KillPlan("moment", delay_s=round(rng.uniform(0.0, options.kill_window_s), 2))


# =============================================================================================
# checking
# =============================================================================================
@dataclass(frozen=True)
class Fingerprint:
    """What a sync can change: the target's lines, ledger rows by state, exported outcomes."""

    target_lines: int
    ledger: tuple[tuple[str, int], ...]
    exported_outcomes: int

    @property
    def unsettled(self) -> int:
        return sum(n for state, n in self.ledger if state != "exported")


def fingerprint(hub: SeedHub, target: Target) -> Fingerprint:
    states = Counter(
        str(r.state)
        for r in hub.rows("SELECT state FROM hub_export_ledger WHERE integration_id = :i")
    )
    exported = hub.rows(
        "SELECT COUNT(*) AS n FROM hub_record_outcomes WHERE integration_id = :i "
        "AND status = 'exported'"
    )[0].n
    return Fingerprint(len(target.lines()), tuple(sorted(states.items())), int(exported))


def check(hub: SeedHub, target: Target, world: World) -> dict[str, Any]:
    """Compare the target's own store with the hub's database; every figure should be 0."""
    by_key: dict[str, list[Line]] = {}
    for line in target.lines():
        by_key.setdefault(line.key, []).append(line)
    claims = {c.claim_id: c for c in world.claims}
    key_of = {c.key.upper(): c.claim_id for c in world.claims}

    ledger = hub.rows("SELECT record_id, state FROM hub_export_ledger WHERE integration_id = :i")
    outcomes = hub.rows(
        "SELECT id, run_id, record_id, status, reason, amount_ore FROM hub_record_outcomes "
        "WHERE integration_id = :i ORDER BY id"
    )
    runs = hub.rows(
        "SELECT id, status, exported, exported_amount_ore FROM hub_sync_runs "
        "WHERE integration_id = :i AND dry_run = 0"
    )

    bookings: dict[int, int] = {}
    wrong: set[int] = set()
    unknown_keys = 0
    target_ore = 0
    for key, lines in by_key.items():
        claim_id = key_of.get(key)
        debits = [line for line in lines if line.amount_ore > 0]
        target_ore += sum(line.amount_ore for line in debits)
        if claim_id is None:
            unknown_keys += 1
            continue
        bookings[claim_id] = len(debits)
        debit, credit = expected_lines(target.key, claims[claim_id])
        credits = [line for line in lines if line.amount_ore <= 0]
        if (
            len(credits) != len(debits)
            or any(line != debit for line in debits)
            or any(line != credit for line in credits)
        ):
            wrong.add(claim_id)
    held = {claim_id for claim_id, n in bookings.items() if n > 0}

    exported_outcomes: Counter[int] = Counter()
    outcome_ore = 0
    latest: dict[int, Any] = {}
    for row in outcomes:
        latest[int(row.record_id)] = row
        if row.status == "exported":
            exported_outcomes[int(row.record_id)] += 1
            outcome_ore += int(row.amount_ore or 0)
    ledger_exported = {int(r.record_id) for r in ledger if r.state == "exported"}
    unsettled = {int(r.record_id) for r in ledger if r.state != "exported"}
    finally_failed = {
        claim_id
        for claim_id, row in latest.items()
        if row.status == "failed" and (row.reason or "").strip()
    }

    duplicates = sorted(c for c, n in bookings.items() if n > 1)
    lost = sorted((ledger_exported | set(exported_outcomes)) - held)
    stuck = sorted({c for c in claims if c not in held and c not in finally_failed} | unsettled)
    mismatched = sorted(c for c in claims if exported_outcomes.get(c, 0) != (1 if c in held else 0))
    runs_ore = sum(int(r.exported_amount_ore or 0) for r in runs)
    ore_ok = target_ore == outcome_ore == runs_ore
    return {
        "duplicates": len(duplicates),
        "extra_bookings": sum(bookings[c] - 1 for c in duplicates),
        "lost": len(lost),
        "wrong": len(wrong) + unknown_keys,
        "stuck": len(stuck),
        "outcome_mismatches": len(mismatched),
        "ore_mismatch": 0 if ore_ok else 1,
        "running": sum(1 for r in runs if r.status == "running"),
        "held": len(held),
        "not_at_target": len(claims) - len(held),
        "unsettled_ledger_rows": sum(1 for r in ledger if r.state != "exported"),
        "ore": {"target": target_ore, "outcomes": outcome_ore, "runs": runs_ore},
        "run_statuses": dict(Counter(str(r.status) for r in runs)),
        "examples": {
            "duplicates": duplicates[:5],
            "lost": lost[:5],
            "wrong": sorted(wrong)[:5],
            "stuck": stuck[:5],
            "outcome_mismatches": mismatched[:5],
        },
    }


FIGURES = (
    "duplicates",
    "lost",
    "wrong",
    "stuck",
    "outcome_mismatches",
    "ore_mismatch",
    "running",
)
"""The figures that must all be zero."""


# =============================================================================================
# one seed
# =============================================================================================
class HarnessError(RuntimeError):
    """The driver could not build or run a seed (not a finding about the hub)."""


def run_seed(
    target_key: str, seed: int, options: Options, prefect: SharedPrefect, workdir: Path
) -> dict[str, Any]:
    from integration_hub.mappings.resolver import idempotency_key
    from integration_hub.mappings.spec import load_template
    from integration_hub.sandbox.fault_proxy import (
        FaultProxy,
        dynamics_is_write,
        xledger_is_write,
    )

    started = time.monotonic()
    rng = random.Random(f"fault-injection:{target_key}:{seed}")
    directory = workdir / f"{target_key}-seed-{seed}"
    hub = SeedHub(directory, options, target_key, prefect)
    target: XledgerTarget | DynamicsTarget | None = None
    proxy: FaultProxy | None = None
    syncs: list[SyncRecord] = []
    try:
        world, rows = hub.prepare(rng, options.claims, date.today())
        target = start_target(target_key, world.employees)
        proxy = FaultProxy(
            target.url,
            seed=seed,
            is_write=xledger_is_write if target_key == "xledger" else dynamics_is_write,
            profile=fault_profile(options),
            graphql=target.graphql,
        ).start()
        wizard = hub.set_up_integration(target.answers(proxy.url))
        test_line = next((line for line in wizard if line.startswith("connection test")), "")
        if not test_line.startswith("connection test: ok"):
            raise HarnessError(f"the integration could not be set up: {test_line or wizard}")
        template = load_template(f"{target_key}_expense_claims.yaml")
        accounts = template.value_maps["expense_accounts"]
        for claim_id, version, amount, category, approved_at, employee in rows:
            world.claims.append(
                ClaimFacts(
                    claim_id=claim_id,
                    key=idempotency_key(
                        world.organisation_id,
                        hub.integration_id,
                        "expense_claim",
                        claim_id,
                        version,
                    ),
                    amount_ore=amount,
                    account=accounts[category],
                    approved_at=approved_at,
                    employee=employee,
                )
            )
        # Claims are approved in waves, one before each faulty sync, so that every faulty sync
        # has new claims to send (a sync after everything went out sends nothing to spoil).
        size = math.ceil(len(world.claims) / options.waves)
        waves = [world.claims[i : i + size] for i in range(0, len(world.claims), size)]

        proxy.enabled = True
        for number in range(1, options.faulty_runs + 1):
            wave = waves.pop(0) if waves else []
            hub.approve(wave)
            plan = choose_kill(rng, options, target_key, len(wave))
            record = run_sync(
                hub, proxy, plan, phase="faulty", number=number, timeout_s=options.sync_timeout_s
            )
            syncs.append(record)
            if record.killed or record.timed_out:
                hub.expire_lease()
        proxy.enabled = False
        for wave in waves:
            hub.approve(wave)
        proxy.wait_idle(proxy.profile.hang_cap_s)  # late commits land before the final runs
        pause(options.settle_s)  # the settle time itself is what the hub must allow for

        previous = fingerprint(hub, target)
        for final in range(1, options.final_runs + 1):
            record = run_sync(
                hub,
                proxy,
                KillPlan(),
                phase="final",
                number=options.faulty_runs + final,
                timeout_s=options.sync_timeout_s,
            )
            syncs.append(record)
            if record.timed_out:
                hub.expire_lease()
            now = fingerprint(hub, target)
            changed, previous = now != previous, now
            if not changed:
                if now.unsettled == 0:
                    break
                pause(options.settle_s)  # records may be waiting to settle: give them time
        proxy.wait_idle(proxy.profile.hang_cap_s)
        figures = check(hub, target, world)
        stats = proxy.stats().as_dict()
    finally:
        if proxy is not None:
            proxy.stop()
        if target is not None:
            target.stop()
        hub.close()
    seconds = time.monotonic() - started
    findings = sum(figures[name] for name in FIGURES)
    return {
        "target": target_key,
        "seed": seed,
        "claims": options.claims,
        **figures,
        "findings": findings,
        "syncs": [record.__dict__ for record in syncs],
        "killed": sum(1 for r in syncs if r.killed),
        "timed_out": sum(1 for r in syncs if r.timed_out),
        "proxy": stats,
        "seconds": round(seconds, 1),
        "directory": str(directory),
    }


def seed_line(result: dict[str, Any]) -> str:
    syncs = result["syncs"]
    faulty = sum(1 for s in syncs if s["phase"] == "faulty")
    final = len(syncs) - faulty
    faults = sum(result["proxy"]["faults"].values())
    ore = "øre ok" if not result["ore_mismatch"] else "øre DIFFER"
    return (
        f"{result['target']:<8} seed {result['seed']:<4} claims {result['claims']:<5} "
        f"syncs {faulty}+{final} killed {result['killed']} faults {faults:<3} | "
        f"dup {result['duplicates']:<4} lost {result['lost']:<4} wrong {result['wrong']:<4} "
        f"stuck {result['stuck']:<4} outcomes≠ {result['outcome_mismatches']:<4} {ore:<10} "
        f"running {result['running']:<2} | {result['seconds']:5.1f} s"
    )


# =============================================================================================
# Prefect: one server for the whole driver run
# =============================================================================================
class SharedPrefect:
    """The Prefect server every sync of this driver run reports to."""

    def __init__(self, home: Path, api_url: str | None, console: Console) -> None:
        self.home = home
        self._server: Any = None
        self._console = console
        self.api_url = api_url or ""

    def __enter__(self) -> SharedPrefect:
        if not self.api_url:
            from integration_hub.serving import free_port, start_local_server

            started = time.monotonic()
            self._server = start_local_server(free_port(), self.home / "server")
            self.api_url = self._server.api_url
            self._console.line(
                f"Prefect server {self.api_url} started in {time.monotonic() - started:.1f} s "
                f"(log: {self.home / 'server' / 'server.log'})"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def client_env(self) -> dict[str, str]:
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home / "client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }


# =============================================================================================
# totals
# =============================================================================================
TABLE_COLUMNS = (
    ("seeds", "seeds"),
    ("dup", "duplicates"),
    ("extra", "extra_bookings"),
    ("lost", "lost"),
    ("wrong", "wrong"),
    ("stuck", "stuck"),
    ("outcomes≠", "outcome_mismatches"),
    ("øre≠", "ore_mismatch"),
    ("running", "running"),
    ("killed", "killed"),
    ("errors", "errors"),
    ("bad seeds", "seeds_with_findings"),
    ("s/seed", "seconds_per_seed"),
)


def totals(results: list[dict[str, Any]], errors: list[dict[str, Any]]) -> dict[str, Any]:
    summed: dict[str, Any] = {
        "seeds": len(results) + len(errors),
        "errors": len(errors),
        "seeds_with_findings": sum(1 for r in results if r["findings"]),
    }
    for name in (*FIGURES, "extra_bookings", "killed", "timed_out"):
        summed[name] = sum(int(r[name]) for r in results)
    seconds = [r["seconds"] for r in results]
    summed["seconds_per_seed"] = round(sum(seconds) / len(seconds), 1) if seconds else 0.0
    faults: Counter[str] = Counter()
    for result in results:
        faults.update(result["proxy"]["faults"])
    summed["faults"] = dict(sorted(faults.items()))
    return summed


def print_table(console: Console, rows: dict[str, dict[str, Any]]) -> None:
    headers = ["target", *(label for label, _ in TABLE_COLUMNS)]
    cells = [[name, *(str(row[key]) for _, key in TABLE_COLUMNS)] for name, row in rows.items()]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    console.line("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        console.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


# =============================================================================================
# main
# =============================================================================================
class Runner:
    """Runs the seeds, ``--jobs`` at a time, each in a worker thread; collects what they found."""

    def __init__(self, options: Options, workdir: Path, console: Console) -> None:
        self.options = options
        self.workdir = workdir
        self.console = console
        self.results: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.kept: list[str] = []
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def run(self, prefect: SharedPrefect) -> None:
        for target in self.options.targets:
            for seed in range(
                self.options.first_seed, self.options.first_seed + self.options.seeds
            ):
                self._queue.put((target, seed))
        self._threads = [
            threading.Thread(target=self._work, args=(prefect,), name=f"seeds-{n}", daemon=True)
            for n in range(self.options.jobs)
        ]
        for thread in self._threads:
            thread.start()
        self.wait()

    def wait(self) -> None:
        """Join the workers (a lock wait: Ctrl-C still interrupts it)."""
        for thread in self._threads:
            thread.join()

    def stop(self) -> None:
        """Kill every running sync, start no new one, and wait for the workers to tidy up
        (proxies, sandboxes); a second Ctrl-C meanwhile changes nothing."""
        while True:
            CHILDREN.stop_all()
            try:
                self.wait()
                return
            except KeyboardInterrupt:
                continue

    def _work(self, prefect: SharedPrefect) -> None:
        while not CHILDREN.stopping.is_set():
            try:
                target, seed = self._queue.get_nowait()
            except queue.Empty:
                return
            self._one(target, seed, prefect)

    def _one(self, target: str, seed: int, prefect: SharedPrefect) -> None:
        directory = self.workdir / f"{target}-seed-{seed}"
        try:
            result = run_seed(target, seed, self.options, prefect, self.workdir)
        except Interrupted:
            return
        except Exception as exc:  # a broken seed must not end the others
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "error.txt").write_text(traceback.format_exc())
            with self._lock:
                self.errors.append({"target": target, "seed": seed, "error": str(exc)})
                self.kept.append(str(directory))
            self.console.line(
                f"{target:<8} seed {seed:<4} HARNESS ERROR: {type(exc).__name__}: {exc} "
                f"(traceback in {directory / 'error.txt'})"
            )
            return
        keep = self.options.keep == "all" or (self.options.keep == "failing" and result["findings"])
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
        with self._lock:
            self.results.append(result)
            if keep:
                self.kept.append(str(directory))
        self.console.line(seed_line(result))


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    console = Console(options.json)
    command = command_line()
    console.line(f"$ {command}")
    for name in HUB_ENV_UNSET:
        os.environ.pop(name, None)
    workdir = Path(tempfile.mkdtemp(prefix="hub-fault-injection-"))
    # This process imports Prefect indirectly (hub services): keep its state in the work dir.
    os.environ["PREFECT_HOME"] = str(workdir / "prefect" / "driver")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    previous = signal.signal(signal.SIGTERM, _sigterm)
    console.line(
        f"faults: {options.fault_rate:.0%} of writes, {options.read_fault_rate:.0%} of reads; "
        f"kinds: {', '.join(options.kinds)}"
    )
    console.line(
        f"hub: read timeout {options.read_timeout_s:g} s, settle {options.settle_s:g} s; "
        f"late commits {options.late_commit_delay_s:g} s after the client gave up; "
        f"{options.faulty_runs} faulty syncs per seed ({options.kill_rate:.0%} killed), then "
        f"at most {options.final_runs} clean ones; work dir {workdir}"
    )
    started = time.monotonic()
    runner = Runner(options, workdir, console)
    try:
        with SharedPrefect(workdir / "prefect", options.prefect_api_url, console) as prefect:
            try:
                runner.run(prefect)
            except KeyboardInterrupt:  # the syncs go first, then Prefect, which they report to
                console.line("interrupted: stopping the syncs, proxies, sandboxes and Prefect")
                runner.stop()
    except KeyboardInterrupt:  # while Prefect was starting or stopping: it cleans up itself
        CHILDREN.stop_all()
    finally:
        signal.signal(signal.SIGTERM, previous)
    interrupted = CHILDREN.stopping.is_set()
    order = {target: n for n, target in enumerate(options.targets)}
    results = sorted(runner.results, key=lambda r: (order[r["target"]], r["seed"]))
    errors, kept = runner.errors, runner.kept

    by_target = {
        target: totals(
            [r for r in results if r["target"] == target],
            [e for e in errors if e["target"] == target],
        )
        for target in options.targets
    }
    overall = totals(results, errors)
    rows = {**by_target, "total": overall} if len(options.targets) > 1 else by_target
    ok = not interrupted and not errors and all(overall[name] == 0 for name in FIGURES)
    console.line("")
    print_table(console, rows)
    console.line("")
    faults = ", ".join(f"{kind} {n}" for kind, n in overall["faults"].items()) or "none"
    console.line(f"faults injected: {faults}")
    console.line(f"whole run {time.monotonic() - started:.1f} s; $ {command}")
    if kept:
        console.line(f"kept {len(kept)} seed directories (databases, sync logs) under {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    verdict = "ok, every figure is 0" if ok else "FINDINGS (see above)"
    console.line("result: " + ("interrupted" if interrupted else verdict))
    if options.json:
        summary = {
            "command": command,
            "ok": ok,
            "interrupted": interrupted,
            "options": {k: v for k, v in options.__dict__.items()},
            "totals": overall,
            "by_target": by_target,
            "seeds": results,
            "errors": errors,
            "kept": kept,
        }
        print(json.dumps(summary, indent=2, default=str), flush=True)
    if interrupted:
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
