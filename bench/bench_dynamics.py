"""Business Central line of the benchmark: N claims through map -> validate -> load.

Requests per 1,000 claims against the floor of 20 (two journal lines per claim, 100
operations per ``$batch``), claims per second per stage, and a correctness check: every claim
exported once, the sandbox's journal holds exactly 2*N lines that sum to zero.

    .venv/bin/python bench/bench_dynamics.py [--claims 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

EMPLOYEES = 50
CATEGORIES = ["mileage", "travel", "meals", "materials", "parking", "toll"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, nargs="+", default=[10_000])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-bc-"))
    os.environ["INTEGRATIONS_VAR_DIR"] = str(workdir / "var")
    # The local sandboxes listen on 127.0.0.1, as an operator allows them.
    os.environ["INTEGRATIONS_ALLOWED_HOSTS"] = "127.0.0.1"
    ok = True
    print("Business Central: claims -> journal lines over $batch (sandbox in this process)")
    print(
        f"{'claims':>8} {'map/s':>10} {'validate/s':>11} {'load/s':>9} "
        f"{'requests':>9} {'per 1,000':>10} {'floor':>6}  check"
    )
    for size in args.claims:
        ok &= run(size, workdir / f"n{size}")
    return 0 if ok else 1


def run(size: int, directory: Path) -> bool:
    import pandas as pd

    from integration_hub import db, settings
    from integration_hub.adapters.dynamics import DynamicsAdapter, DynamicsConfig
    from integration_hub.ledger import Ledger
    from integration_hub.mappings.resolver import map_claims
    from integration_hub.mappings.spec import load_template
    from integration_hub.models import Integration
    from integration_hub.sandbox.dynamics import DynamicsSandboxState, create_dynamics_app
    from integration_hub.sandbox.server import start_server
    from integration_hub.schemas import gl_lines_schema, validate_lines
    from integration_hub.tasks.extract import CATEGORY_LABELS, CLAIM_COLUMNS
    from integration_hub.tasks.load import RetryPolicy, load_lines

    directory.mkdir(parents=True)
    os.environ["INTEGRATIONS_DATABASE_URL"] = f"sqlite:///{directory / 'hub.db'}"
    settings.reset_settings()
    db.dispose_engines()
    db.upgrade("hub")
    with db.hub_session() as session:
        row = Integration(organisation_id=1, type_key="dynamics")
        session.add(row)
        session.flush()
        integration_id = row.id or 0
    ledger = Ledger(
        db.hub_session,
        organisation_id=1,
        integration_id=integration_id,
        record_type="expense_claim",
    )

    claims = pd.DataFrame(
        {
            "claim_id": range(1, size + 1),
            "version": 1,
            "volunteer_id": [i % EMPLOYEES + 1 for i in range(size)],
            "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(size)],
            "amount_ore": [1_000 + (i * 37) % 150_000 for i in range(size)],
            "distance_km": None,
            "description": "Tog til samling",
            "expense_date": "2026-03-01",
            "approved_date": "2026-03-04",
            "volunteer_name": [f"Frivillig {i % EMPLOYEES}" for i in range(size)],
            "employee_number": [str(1001 + i % EMPLOYEES) for i in range(size)],
            "supplier_number": None,
            "chapter_code": "OSL",
            "chapter_name": "Oslo",
        }
    ).astype(CLAIM_COLUMNS)
    claims["category_label"] = claims["category"].map(CATEGORY_LABELS).astype("string")

    state = DynamicsSandboxState()
    made = state.provision(
        employees=[
            {"number": str(1001 + i), "displayName": f"Frivillig {i}"} for i in range(EMPLOYEES)
        ]
    )
    with start_server(create_dynamics_app(state)) as server:
        adapter = DynamicsAdapter(DynamicsConfig(**made.settings(server.url)))
        required = {f.name: f.label for f in adapter.target_fields if f.required}

        started = time.perf_counter()
        lines, failures = map_claims(
            claims,
            load_template(adapter.default_mapping or ""),
            required_fields=required,
            text_max_length=adapter.text_max_length,
            organisation_id=1,
            integration_id=integration_id,
        )
        mapped = time.perf_counter()
        codes = [c.code for c in adapter.reference_codes() if c.postable]
        schema = gl_lines_schema(
            accounts=codes,
            text_max_length=adapter.text_max_length,
            target_name=adapter.display_name,
        )
        valid, invalid = validate_lines(
            lines, schema, target_name=adapter.display_name, text_max_length=adapter.text_max_length
        )
        validated = time.perf_counter()
        print(f"[{size:,}] loading {len(valid):,} lines ...", file=sys.stderr)
        adapter.requests_sent = 0
        report = load_lines(
            adapter,
            valid,
            ledger=ledger,
            run_id=None,
            policy=RetryPolicy(attempts=5, base_delay_s=0.1),
        )
        loaded = time.perf_counter()
        journal = made.company.journal_lines()
        batches = made.tenant.batches

    statuses = Counter(o["status"] for o in report.outcomes)
    per_key = Counter(line["externalDocumentNumber"] for line in journal)
    correct = (
        failures.empty
        and invalid.empty
        and statuses == {"exported": size}
        and len(journal) == 2 * size
        and set(per_key.values()) == {2}
        and sum((Decimal(str(line["amount"])) for line in journal), Decimal(0)) == 0
    )
    per_thousand = report.requests * 1000 / size
    print(
        f"{size:>8,} {size / (mapped - started):>10,.0f} {size / (validated - mapped):>11,.0f} "
        f"{size / (loaded - validated):>9,.0f} {report.requests:>9,} {per_thousand:>10.2f} "
        f"{20:>6}  {'PASS' if correct else 'FAIL'} ({batches} $batch requests at the sandbox)"
    )
    return correct


if __name__ == "__main__":
    sys.exit(main())
