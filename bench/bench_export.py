"""Benchmark: export N approved expense claims to the Xledger sandbox, by stage and end to end.

For every size N (``--claims 10000 100000`` by default), each pass on its own fresh SQLite
app/hub database in a temp dir, seeded with N approved claims (bulk insert) and configured for
Xledger through the same service calls as the setup wizard:

1. stage pass (timed): extract, map, validate, load, record through the plain functions the
   Prefect tasks call, in the flow's order, so the figures carry no Prefect overhead;
2. flow pass (timed): the real Prefect flow ``export_expense_claims`` under one
   ``prefect_test_harness`` shared by all sizes (its start-up and a 10-claim warm-up run are
   reported apart);
3. tracemalloc pass (memory only, skipped with ``--no-tracemalloc``): the stage pass again with
   tracemalloc on, which slows it several times over, hence its own untimed pass, run last so
   that its bookkeeping does not inflate the RSS figures of the other two.

The Xledger sandbox runs in this process (uvicorn in a thread) and is reached over real HTTP on
127.0.0.1; it keeps every posted line in memory, which shows in the memory figures.

Each pass is checked: every claim exported, the sandbox holds exactly 2*N lines, no extIdentifier
more than twice, every voucher balances. The script prints PASS/FAIL and exits 1 on FAIL. Nothing
here asserts on time: the figures are printed, not judged. Progress goes to stderr.

Run: ``.venv/bin/python bench/bench_export.py --claims 10000 100000`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import resource
import secrets
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from pathlib import Path
from typing import Any

DEFAULT_SIZES = (10_000, 100_000)
STAGES = ("extract", "map", "validate", "load", "record")
CATEGORIES = (  # a mix, weighted roughly like real claims
    ("mileage", 4),
    ("travel", 3),
    ("meals", 2),
    ("materials", 1),
    ("parking", 1),
    ("toll", 1),
)
DESCRIPTIONS = {
    "mileage": "Kjøring til medlemsmøte",
    "travel": "Tog til regionsamling",
    "meals": "Servering på likepersonsmøte",
    "materials": "Materiell til kurs",
    "parking": "Parkering ved kurssted",
    "toll": "Bompenger til regionsmøte",
}
CHAPTERS = (("OSL", "Oslo"), ("BGO", "Bergen"), ("TRD", "Trondheim"), ("SVG", "Stavanger"))
FIRST = ("Kari", "Ola", "Ingrid", "Per", "Sigrid", "Lars", "Astrid", "Nils", "Ragnhild", "Odd")
LAST = ("Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Berg", "Haugen", "Dahl")
CLAIMS_PER_VOLUNTEER = 20
MILEAGE_RATE_ORE = 350
TODAY = date(2026, 3, 1)
SLUG = "benchorg"
LINES_PER_REQUEST = 500  # Xledger's limit per addGLImportItems
INSERT_CHUNK = 10_000

_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """A line on stderr so that long sizes show they are alive."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def rss_high_water_mib() -> float:
    """getrusage's RSS high-water mark of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PassPeak:
    """The RSS peak of one pass: Linux's VmHWM after resetting it through /proc/self/clear_refs.

    getrusage's ru_maxrss never goes down, so on its own it cannot tell one pass from the one
    before. The reset lowers it too, so the whole-process figure is kept here as the highest
    ru_maxrss read just before each reset (and at the end). Without /proc this falls back to
    the cumulative ru_maxrss.
    """

    process_mib = 0.0  # getrusage high-water mark of the whole process, across resets

    def __init__(self) -> None:
        PassPeak.note_process()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.start_mib = self._status("VmRSS")

    @classmethod
    def note_process(cls) -> float:
        cls.process_mib = max(cls.process_mib, rss_high_water_mib())
        return cls.process_mib

    @staticmethod
    def _status(name: str) -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(f"{name}:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
        return float("nan")

    def peak_mib(self) -> float:
        return self._status("VmHWM") if self.reset else rss_high_water_mib()


# =============================================================================================
# environment: must be set before prefect or anything reading settings is imported
# =============================================================================================


def prepare_environment(root: Path) -> None:
    prefect_home = root / "prefect"
    prefect_home.mkdir()
    os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.pop("PREFECT_API_URL", None)
    # A developer's shell must not point the benchmark at real data or keys.
    for name in (
        "INTEGRATIONS_APP_DATABASE_URL",
        "INTEGRATIONS_VAULT_KEYS",
        "INTEGRATIONS_VAULT_KEY_FILE",
    ):
        os.environ.pop(name, None)


def fresh_database(var_dir: Path) -> None:
    """Point the hub (and the app side, same file) at a new SQLite database, migrated, keyed."""
    from integration_hub import db, settings
    from integration_hub.adapters.factory import forget_reference_codes
    from integration_hub.vault import init_key_file

    var_dir.mkdir(parents=True)
    os.environ["INTEGRATIONS_VAR_DIR"] = str(var_dir)
    # The local sandboxes listen on 127.0.0.1, as an operator allows them.
    os.environ["INTEGRATIONS_ALLOWED_HOSTS"] = "127.0.0.1"
    os.environ["INTEGRATIONS_DATABASE_URL"] = f"sqlite:///{var_dir / 'hub.db'}"
    db.dispose_engines()
    settings.reset_settings()
    forget_reference_codes()
    init_key_file(settings.get_settings().key_file)
    db.upgrade("hub")
    db.upgrade("app")


def release_database() -> None:
    from integration_hub import db, settings

    db.dispose_engines()
    settings.reset_settings()


# =============================================================================================
# seeding (SQLAlchemy core, bulk) and configuration (the wizard's service calls)
# =============================================================================================


@dataclass
class Seeded:
    organisation_id: int
    employees: list[dict[str, Any]]
    total_ore: int


def _claim_rows(
    n: int, organisation_id: int, volunteers: list[tuple[int, int]], rng: random.Random
) -> Iterator[dict[str, Any]]:
    from integration_hub.money import mileage_ore

    names = [c for c, _ in CATEGORIES]
    weights = [w for _, w in CATEGORIES]
    for number in range(n):
        volunteer_id, chapter_id = volunteers[number % len(volunteers)]
        category = rng.choices(names, weights)[0]
        distance = rate = None
        if category == "mileage":
            tenths = rng.randint(50, 3000)
            distance, rate = Decimal(tenths) / 10, MILEAGE_RATE_ORE
            amount = mileage_ore(tenths, rate)
        else:
            amount = rng.randint(2_000, 150_000)
        expense_date = TODAY - timedelta(days=rng.randint(5, 90))
        approved_at = datetime.combine(
            expense_date + timedelta(days=3), clock(rng.randint(8, 16)), tzinfo=UTC
        )
        yield {
            "organisation_id": organisation_id,
            "chapter_id": chapter_id,
            "volunteer_id": volunteer_id,
            "category": category,
            "amount_ore": amount,
            "distance_km": distance,
            "rate_ore_per_km": rate,
            "expense_date": expense_date,
            "status": "approved",
            "approved_at": approved_at,
            "description": DESCRIPTIONS[category],
            "version": 1,
        }


def seed(n: int, rng: random.Random) -> Seeded:
    """One organisation, a few chapters, N/20 volunteers (all with employee numbers), N claims."""
    from sqlalchemy import func, insert, select

    from integration_hub.db import app_engine
    from integration_hub.models import Chapter, ExpenseClaim, Organisation, Volunteer

    organisations, chapters = Organisation.__table__, Chapter.__table__
    volunteers, claims = Volunteer.__table__, ExpenseClaim.__table__
    with app_engine().begin() as connection:
        organisation_id = connection.execute(
            insert(organisations).values(
                slug=SLUG, name="Benchmark-forbundet", org_number="999000111"
            )
        ).inserted_primary_key[0]
        connection.execute(
            insert(chapters),
            [
                {
                    "organisation_id": organisation_id,
                    "code": code,
                    "name": f"{name} lokallag",
                    "municipality_number": "0301",
                }
                for code, name in CHAPTERS
            ],
        )
        chapter_ids = list(
            connection.scalars(
                select(chapters.c.id).where(chapters.c.organisation_id == organisation_id)
            )
        )
        count = max(40, n // CLAIMS_PER_VOLUNTEER)
        connection.execute(
            insert(volunteers),
            [
                {
                    "organisation_id": organisation_id,
                    "chapter_id": chapter_ids[i % len(chapter_ids)],
                    "name": f"{FIRST[i % len(FIRST)]} {LAST[(i // len(FIRST)) % len(LAST)]} {i}",
                    "email": f"frivillig{i}@example.org",
                    "employee_number": str(100_001 + i),
                }
                for i in range(count)
            ],
        )
        people = connection.execute(
            select(
                volunteers.c.id,
                volunteers.c.chapter_id,
                volunteers.c.employee_number,
                volunteers.c.name,
            ).where(volunteers.c.organisation_id == organisation_id)
        ).all()
        pairs = [(p.id, p.chapter_id) for p in people]
        batch: list[dict[str, Any]] = []
        for row in _claim_rows(n, organisation_id, pairs, rng):
            batch.append(row)
            if len(batch) == INSERT_CHUNK:
                connection.execute(insert(claims), batch)
                batch = []
        if batch:
            connection.execute(insert(claims), batch)
        total = connection.execute(
            select(func.count(), func.sum(claims.c.amount_ore)).where(
                claims.c.organisation_id == organisation_id
            )
        ).one()
    if total[0] != n:
        raise RuntimeError(f"seeded {total[0]} claims, expected {n}")
    employees = [
        {"dbId": 50_000 + p.id, "code": p.employee_number, "description": p.name} for p in people
    ]
    return Seeded(int(organisation_id), employees, int(total[1]))


def configure_xledger(url: str, token: str) -> int:
    """Xledger for the seeded organisation, through the setup wizard's service calls."""
    from integration_hub.adapters.registry import feature_flag
    from integration_hub.mappings.spec import load_template
    from integration_hub.services import configuration as config

    who = config.Actor("bench")
    org = config.organisation(SLUG)
    config.set_feature_flag(org.id or 0, feature_flag("xledger"), True, config.OPERATOR)
    row = config.integration(org, "xledger", who, create=True)
    config.save_configuration(row, {"base_url": f"{url}/graphql", "api_token": token}, who)
    mapping = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    config.save_mapping(row, mapping, who, accept_warnings=True)
    config.set_exclusions(row, [], who)
    return row.id or 0


@dataclass
class Prepared:
    integration_id: int
    company: Any
    seed_s: float
    configure_s: float
    total_ore: int


def prepare(n: int, var_dir: Path, sandbox: Any, url: str, label: str) -> Prepared:
    fresh_database(var_dir)
    progress(f"{label}: seeding {n:,} approved claims")
    started = time.perf_counter()
    seeded = seed(n, random.Random(n))
    seed_s = time.perf_counter() - started
    token = secrets.token_hex(16)
    company = sandbox.add_company(token, employees=seeded.employees)
    started = time.perf_counter()
    integration_id = configure_xledger(url, token)
    configure_s = time.perf_counter() - started
    progress(
        f"{label}: seeded in {seed_s:.1f} s ({len(seeded.employees):,} volunteers), "
        f"configured in {configure_s:.1f} s"
    )
    return Prepared(integration_id, company, seed_s, configure_s, seeded.total_ore)


# =============================================================================================
# stage by stage: the plain functions the flow's tasks call, in the flow's order
# =============================================================================================


class StageClock:
    """Times named stages; with ``trace`` it also records tracemalloc's peak per stage."""

    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.seconds: dict[str, float] = {}
        self.peaks: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.trace:
            tracemalloc.reset_peak()
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        if self.trace:
            self.peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20


def run_stages(integration_id: int, *, trace: bool, label: str) -> tuple[StageClock, dict, Any]:
    """extract -> map -> validate -> load -> record, exactly as the flow's tasks do it."""
    import pandas as pd

    from integration_hub.adapters.factory import build_adapter, cached_reference_codes
    from integration_hub.adapters.registry import get_type
    from integration_hub.db import app_engine, hub_session
    from integration_hub.ledger import Ledger
    from integration_hub.mappings.resolver import map_claims
    from integration_hub.models import Integration, OutcomeStatus
    from integration_hub.schemas import gl_lines_schema, validate_lines
    from integration_hub.tasks import extract as extract_step
    from integration_hub.tasks.context import load_context
    from integration_hub.tasks.load import RetryPolicy, load_lines
    from integration_hub.tasks.record import finish_run, outcome_frame, start_run

    def adapter_for(purpose: str) -> tuple[Any, Any]:
        with hub_session() as session:
            integration = session.get(Integration, integration_id)
            assert integration is not None
            return build_adapter(session, integration, purpose=purpose), integration

    context = load_context(integration_id)
    assert context.mapping is not None
    adapter_type = get_type(context.type_key)
    ledger = Ledger(
        hub_session,
        organisation_id=context.organisation_id,
        integration_id=integration_id,
        record_type=adapter_type.record_type,
    )
    run_id = start_run(
        integration_id=integration_id,
        organisation_id=context.organisation_id,
        trigger="manual",
        since=None,
        until=None,
        dry_run=False,
        flow_run_id="",
        mapping_version=context.mapping_version,
    )
    timer = StageClock(trace)

    with timer.stage("extract"):
        claims = extract_step.extract_claims(app_engine(), context.organisation_id, None, None)
        extracted = len(claims)
        claims, changed = extract_step.drop_already_exported(claims, ledger.exported_versions())
        claims, excluded = extract_step.apply_exclusions(claims, set(context.excluded))
        skipped = pd.concat([changed, excluded], ignore_index=True)
    progress(f"{label}: extract {timer.seconds['extract']:.2f} s ({extracted:,} claims)")

    with timer.stage("map"):
        required = {f.name: f.label for f in adapter_type.target_fields if f.required}
        lines, map_failures = map_claims(
            claims,
            context.mapping,
            required_fields=required,
            text_max_length=adapter_type.text_max_length,
            organisation_id=context.organisation_id,
            integration_id=integration_id,
        )
    progress(f"{label}: map {timer.seconds['map']:.2f} s ({len(lines):,} lines)")

    with timer.stage("validate"):
        adapter, integration = adapter_for("read reference codes for validation")
        codes = cached_reference_codes(adapter, integration)
        schema = gl_lines_schema(
            accounts=[c.code for c in codes if c.postable],
            text_max_length=adapter.text_max_length,
            target_name=adapter.display_name,
        )
        valid, invalid = validate_lines(
            lines,
            schema,
            target_name=adapter.display_name,
            text_max_length=adapter.text_max_length,
        )
    progress(f"{label}: validate {timer.seconds['validate']:.2f} s ({len(invalid)} invalid)")

    ticker = Ticker(label, "load")
    with timer.stage("load"):
        adapter, _ = adapter_for("export expense claims")
        report = load_lines(
            adapter, valid, ledger=ledger, run_id=run_id, policy=RetryPolicy(), progress=ticker
        )
    progress(f"{label}: load {timer.seconds['load']:.2f} s ({report.requests} requests)")

    with timer.stage("record"):
        frames = [outcome_frame(OutcomeStatus.SKIPPED, skipped)]
        frames += [
            outcome_frame(OutcomeStatus.FAILED, f) for f in (map_failures, invalid) if not f.empty
        ]
        frames.append(report.frame())
        outcomes = pd.concat([f for f in frames if not f.empty] or frames, ignore_index=True)
        summary = finish_run(
            run_id,
            integration_id=integration_id,
            outcomes=outcomes,
            details=claims.rename(columns={"claim_id": "record_id"}),
            extracted=extracted,
            requests_sent=report.requests,
            error=report.aborted,
        )
    progress(f"{label}: record {timer.seconds['record']:.2f} s")
    return timer, summary, set(valid["idempotency_key"])


class Ticker:
    """load_lines' progress callback: a stderr line at most every 10 seconds."""

    def __init__(self, label: str, stage: str) -> None:
        self.label, self.stage = label, stage
        self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last >= 10.0 or done == total:
            self.last = now
            progress(f"{self.label}: {self.stage} sent {done:,} of {total:,} claims")


# =============================================================================================
# checks
# =============================================================================================


def verify(
    n: int,
    summary: dict[str, Any],
    company: Any,
    integration_id: int,
    total_ore: int,
    expected_keys: set[str] | None = None,
) -> list[str]:
    """Every claim exported once: sandbox, run summary and the hub's ledger agree."""
    from sqlalchemy import func, select

    from integration_hub.db import hub_session
    from integration_hub.models import ExportLedger, RecordOutcome

    problems = []
    counts = {k: summary.get(k) for k in ("extracted", "exported", "failed", "skipped")}
    if counts != {"extracted": n, "exported": n, "failed": 0, "skipped": 0}:
        problems.append(f"run summary counts {counts}, expected {n} extracted and exported")
    if summary.get("status") != "succeeded":
        problems.append(f"run status {summary.get('status')!r} ({summary.get('error')})")
    if summary.get("exported_amount_ore") != total_ore:
        problems.append(f"exported {summary.get('exported_amount_ore')} øre, seeded {total_ore}")
    items = company.ledger  # the server is idle now; read in place, no 2N-dict copy
    if len(items) != 2 * n:
        problems.append(f"sandbox ledger holds {len(items):,} lines, expected {2 * n:,}")
    per_key = Counter(item.get("extIdentifier") for item in items)
    over = [k for k, c in per_key.items() if c > 2]
    if over:
        problems.append(f"{len(over)} extIdentifier(s) appear more than twice, e.g. {over[0]}")
    if len(per_key) != n or set(per_key.values()) != {2}:
        shapes = dict(sorted(Counter(per_key.values()).items()))
        problems.append(
            f"{len(per_key):,} vouchers in the sandbox (lines per voucher: count {shapes}), "
            f"expected {n:,} of exactly 2 lines"
        )
    if expected_keys is not None and set(per_key) != expected_keys:
        problems.append("the sandbox's extIdentifiers differ from the mapped idempotency keys")
    balance: dict[str, Decimal] = {}
    for item in items:
        key = item.get("extIdentifier")
        balance[key] = balance.get(key, Decimal(0)) + Decimal(item["amount"])
    unbalanced = sum(1 for v in balance.values() if v != 0)
    if unbalanced:
        problems.append(f"{unbalanced} voucher(s) in the sandbox do not balance")
    with hub_session() as session:
        ledger_rows = session.execute(
            select(ExportLedger.state, func.count())
            .where(ExportLedger.integration_id == integration_id)
            .group_by(ExportLedger.state)
        ).all()
        outcome_rows = session.execute(
            select(RecordOutcome.status, func.count())
            .where(RecordOutcome.run_id == summary.get("run_id"))
            .group_by(RecordOutcome.status)
        ).all()
    if dict(ledger_rows) != {"exported": n}:
        problems.append(f"hub export ledger states {dict(ledger_rows)}, expected {n} exported")
    if dict(outcome_rows) != {"exported": n}:
        problems.append(f"hub record outcomes {dict(outcome_rows)}, expected {n} exported")
    return problems


# =============================================================================================
# passes
# =============================================================================================

WARM_UP_CLAIMS = 10


@dataclass
class SizeResult:
    n: int
    seed_s: float = 0.0
    configure_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    stage_requests_sent: int = 0
    stage_mutations: int = 0
    stage_rss: tuple[float, float] = (float("nan"), float("nan"))  # (at start, peak)
    flow_s: float = 0.0
    flow_requests_sent: int = 0
    flow_mutations: int = 0
    flow_requests_all: int = 0
    flow_rss: tuple[float, float] = (float("nan"), float("nan"))
    traced_peak_mib: dict[str, float] = field(default_factory=dict)
    sandbox_traced_mib: float = float("nan")
    rss_high_water_mib: float = float("nan")
    problems: list[str] = field(default_factory=list)


def _finish(label: str, sandbox: Any, problems: list[str]) -> None:
    progress(f"{label}: {'PASS' if not problems else 'FAIL: ' + '; '.join(problems)}")
    sandbox.reset()  # forget the company and its 2N ledger lines before the next pass
    release_database()
    gc.collect()


def stage_pass(n: int, root: Path, sandbox: Any, url: str, result: SizeResult) -> None:
    """Timed, without tracemalloc."""
    label = f"{n:,} stages"
    prepared = prepare(n, root / f"n{n}-stages", sandbox, url, label)
    result.seed_s, result.configure_s = prepared.seed_s, prepared.configure_s
    company = prepared.company
    mutations = company.mutations
    gc.collect()
    peak = PassPeak()
    timer, summary, keys = run_stages(prepared.integration_id, trace=False, label=label)
    result.stage_rss = (peak.start_mib, peak.peak_mib())
    result.stage_s = timer.seconds
    result.stage_requests_sent = int(summary["requests_sent"])
    result.stage_mutations = company.mutations - mutations
    problems = verify(n, summary, company, prepared.integration_id, prepared.total_ore, keys)
    result.problems += [f"stage pass: {p}" for p in problems]
    _finish(label, sandbox, problems)


def trace_pass(n: int, root: Path, sandbox: Any, url: str, result: SizeResult) -> None:
    """The stage pass again on a fresh database under tracemalloc: memory only, not timed."""
    label = f"{n:,} tracemalloc"
    prepared = prepare(n, root / f"n{n}-trace", sandbox, url, label)
    gc.collect()
    PassPeak.note_process()  # before tracemalloc's own bookkeeping
    tracemalloc.start()
    try:
        timer, summary, keys = run_stages(prepared.integration_id, trace=True, label=label)
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*integration_hub/sandbox/*")]
        )
        result.sandbox_traced_mib = sum(s.size for s in snapshot.statistics("filename")) / 2**20
        del snapshot
    finally:
        tracemalloc.stop()
    result.traced_peak_mib = timer.peaks
    problems = verify(
        n, summary, prepared.company, prepared.integration_id, prepared.total_ore, keys
    )
    result.problems += [f"tracemalloc pass: {p}" for p in problems]
    _finish(label, sandbox, problems)


@contextmanager
def heartbeat(label: str, company: Any, every_s: float = 10.0) -> Iterator[None]:
    """While the flow runs (its own progress logs are quiet), say what the sandbox has seen."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            progress(
                f"{label}: flow running; the sandbox has had {company.mutations} mutations, "
                f"{len(company.ledger):,} lines"
            )

    thread = threading.Thread(target=beat, name="bench-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def flow_pass(n: int, root: Path, sandbox: Any, url: str, result: SizeResult) -> None:
    """The real Prefect flow on a fresh database; wall time of the flow call only."""
    from integration_hub.flows.export_expense_claims import export_expense_claims

    label = f"{n:,} flow"
    prepared = prepare(n, root / f"n{n}-flow", sandbox, url, label)
    company = prepared.company
    mutations, requests = company.mutations, company.requests
    gc.collect()
    progress(f"{label}: running export_expense_claims")
    peak = PassPeak()
    with heartbeat(label, company):
        started = time.perf_counter()
        summary = export_expense_claims(integration_id=prepared.integration_id)
        result.flow_s = time.perf_counter() - started
    result.flow_rss = (peak.start_mib, peak.peak_mib())
    result.flow_requests_sent = int(summary["requests_sent"])
    result.flow_mutations = company.mutations - mutations
    result.flow_requests_all = company.requests - requests
    progress(f"{label}: flow took {result.flow_s:.2f} s")
    problems = verify(n, summary, company, prepared.integration_id, prepared.total_ore)
    result.problems += [f"flow pass: {p}" for p in problems]
    _finish(label, sandbox, problems)


# =============================================================================================
# report
# =============================================================================================

Row = tuple[str, list[str] | None]  # a section heading has no values


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "-"


def _mib(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def render(groups: list[str], columns: list[str], rows: list[Row]) -> list[str]:
    """A plain text table: row names, then ``columns`` repeated under each group heading."""
    values = [v for _, v in rows if v is not None]
    count = len(groups) * len(columns)
    widths = [
        max(len(columns[i % len(columns)]), *(len(v[i]) for v in values)) for i in range(count)
    ]
    per_group = [
        sum(widths[g * len(columns) : (g + 1) * len(columns)]) + 2 * (len(columns) - 1)
        for g in range(len(groups))
    ]
    for g, group in enumerate(groups):  # widen the last column if the group heading is longer
        if len(group) > per_group[g]:
            widths[(g + 1) * len(columns) - 1] += len(group) - per_group[g]
            per_group[g] = len(group)
    name_width = max(len(name) for name, v in rows if v is not None)
    lines = [
        "  ".join([" " * name_width, *(g.rjust(w) for g, w in zip(groups, per_group, strict=True))])
    ]
    if len(columns) > 1 or columns[0]:
        heads = [columns[i % len(columns)].rjust(widths[i]) for i in range(count)]
        lines.append("  ".join([" " * name_width, *heads]))
    for name, cells in rows:
        if cells is None:
            lines.append(name)
        else:
            padded = (c.rjust(w) for c, w in zip(cells, widths, strict=True))
            lines.append("  ".join([name.ljust(name_width), *padded]))
    return lines


def print_report(
    results: list[SizeResult], harness_s: float, warm_up_s: float, trace: bool
) -> None:
    groups = [f"{r.n:,} claims" for r in results]
    totals = [sum(r.stage_s.values()) for r in results]

    speed: list[Row] = [("stage by stage: the plain functions the tasks call, no Prefect", None)]
    for stage in STAGES:
        cells = []
        for r in results:
            cells += [f"{r.stage_s[stage]:.2f}", _rate(r.n, r.stage_s[stage])]
        speed.append((f"  {stage}", cells))
    cells = []
    for r, total in zip(results, totals, strict=True):
        cells += [f"{total:.2f}", _rate(r.n, total)]
    speed.append(("  all five stages", cells))
    speed.append(("end to end: the Prefect flow export_expense_claims", None))
    cells = []
    for r in results:
        cells += [f"{r.flow_s:.2f}", _rate(r.n, r.flow_s)]
    speed.append(("  flow run, wall time", cells))
    cells = []
    for r, total in zip(results, totals, strict=True):
        cells += [f"{r.flow_s - total:+.2f}", ""]
    speed.append(("  flow minus the five stages", cells))

    def each(fmt: Callable[[SizeResult], str]) -> list[str]:
        return [fmt(r) for r in results]

    other: list[Row] = [
        ("setup, not in the timings above", None),
        ("  seed the claims, bulk insert (s)", each(lambda r: f"{r.seed_s:.2f}")),
        ("  configure through the services (s)", each(lambda r: f"{r.configure_s:.2f}")),
        # Per run, not per request: one import-error query after the last mutation, and the
        # schema check (the flow only; remembered for six hours per integration).
        ("requests to Xledger (floor: 4 per 1,000 claims, + 1 or 2 per run)", None),
        ("  stage pass: run summary requests_sent", each(lambda r: str(r.stage_requests_sent))),
        ("  stage pass: sandbox Company.mutations", each(lambda r: str(r.stage_mutations))),
        ("  flow: run summary requests_sent", each(lambda r: str(r.flow_requests_sent))),
        ("  flow: sandbox Company.mutations", each(lambda r: str(r.flow_mutations))),
        ("  flow: sandbox requests of any kind", each(lambda r: str(r.flow_requests_all))),
        (
            "  flow: mutations per 1,000 claims",
            each(lambda r: f"{r.flow_mutations * 1000 / r.n:.2f}"),
        ),
        (
            "  floor per 1,000 claims",
            each(lambda r: f"{math.ceil(2 * r.n / LINES_PER_REQUEST) * 1000 / r.n:.2f}"),
        ),
        ("RSS of this process (MiB; includes the in-process sandbox)", None),
        ("  stage pass: when the export starts", each(lambda r: _mib(r.stage_rss[0]))),
        ("  stage pass: peak (VmHWM, reset per pass)", each(lambda r: _mib(r.stage_rss[1]))),
        ("  flow pass: when the flow starts", each(lambda r: _mib(r.flow_rss[0]))),
        ("  flow pass: peak (VmHWM, reset per pass)", each(lambda r: _mib(r.flow_rss[1]))),
        (
            "  whole process so far (getrusage ru_maxrss)",
            each(lambda r: _mib(r.rss_high_water_mib)),
        ),
    ]
    if trace:
        other.append(("tracemalloc peak per stage (MiB; separate untimed pass)", None))
        for stage in STAGES:
            other.append(
                (f"  {stage}", each(lambda r, s=stage: _mib(r.traced_peak_mib.get(s, math.nan))))
            )
        other.append(
            ("  of it, held by the sandbox at the end", each(lambda r: _mib(r.sandbox_traced_mib)))
        )
    other += [
        ("correctness", None),
        ("  every claim exported exactly once", each(lambda r: "FAIL" if r.problems else "PASS")),
    ]

    lines = [
        "Integration Hub export benchmark: SQLite database, Xledger sandbox in this process "
        "over HTTP on 127.0.0.1",
        f"python {platform.python_version()}, {os.cpu_count()} CPUs. Not counted below: Prefect "
        f"test harness start-up {harness_s:.1f} s, warm-up flow run ({WARM_UP_CLAIMS} claims) "
        f"{warm_up_s:.1f} s.",
        "",
        *render(groups, ["seconds", "claims/s"], speed),
        "",
        *render(groups, [""], other),
        "",
        "Each pass has its own fresh database. Timings come from the stage pass (no tracemalloc)",
        "and the flow pass. RSS: resident memory of this one process (the Prefect test server is",
        "a child process, not counted); 'whole process so far' is getrusage's high-water mark",
        "since start, every pass included.",
    ]
    if trace:
        lines += [
            "tracemalloc: a third pass of the same stages on another fresh database; the peak of",
            "traced Python memory during each stage, i.e. all that is live then: earlier stages'",
            "frames and the sandbox thread's allocations too.",
        ]
    print("\n".join(lines))
    print()
    failures = [(r.n, p) for r in results for p in r.problems]
    if failures:
        print("FAIL")
        for n, problem in failures:
            print(f"  {n:,} claims: {problem}")
    else:
        print(
            "PASS: every claim exported in every pass; the sandbox held exactly 2*N balanced "
            "lines, no extIdentifier more than twice"
        )


# =============================================================================================
# main
# =============================================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--claims",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        metavar="N",
        help="sizes to run, in this order (default: 10000 100000)",
    )
    parser.add_argument(
        "--no-tracemalloc",
        action="store_true",
        help="skip the extra untimed pass that measures tracemalloc peaks (it is the slowest)",
    )
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.claims):
        parser.error("--claims takes positive numbers")
    return args


def run(args: argparse.Namespace, root: Path) -> int:
    from prefect.testing.utilities import prefect_test_harness

    from integration_hub.sandbox.server import start_server
    from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app

    trace = not args.no_tracemalloc
    sandbox = XledgerSandboxState()
    results: list[SizeResult] = []
    with start_server(create_xledger_app(sandbox)) as server:
        progress(f"Xledger sandbox on {server.url}; starting the Prefect test harness")
        started = time.perf_counter()
        with prefect_test_harness(server_startup_timeout=60):
            harness_s = time.perf_counter() - started
            progress(f"Prefect test harness up in {harness_s:.1f} s")
            warm_up = SizeResult(WARM_UP_CLAIMS)
            flow_pass(WARM_UP_CLAIMS, root / "warm-up", sandbox, server.url, warm_up)
            passes: list[Callable[[int, Path, Any, str, SizeResult], None]] = [
                stage_pass,
                flow_pass,
            ]
            if trace:  # last: tracemalloc's own bookkeeping must not inflate the RSS peaks
                passes.append(trace_pass)
            for n in args.claims:
                result = SizeResult(n)
                for one_pass in passes:
                    one_pass(n, root, sandbox, server.url, result)
                result.rss_high_water_mib = PassPeak.note_process()
                results.append(result)
    print_report(results, harness_s, warm_up.flow_s, trace)
    failed = warm_up.problems or any(r.problems for r in results)
    if warm_up.problems:
        print(f"FAIL in the warm-up run: {'; '.join(warm_up.problems)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        root = Path(tmp)
        prepare_environment(root)
        return run(args, root)


if __name__ == "__main__":
    sys.exit(main())
