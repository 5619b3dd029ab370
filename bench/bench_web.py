"""The admin web app under a year of history: page and API response times, sign-in cost.

Seeds one organisation with an Xledger integration (the sandbox in this process) and a history
of R runs over the last year, each with failed records, then serves the real app with
``integrations web`` in its own process on 127.0.0.1 and times GET requests of the main screens
and API routes from this process over HTTP (p50, p95, max), the Argon2id sign-in, and the
connection test through the API. A check: every answer is 200 and none contains the stored
token. (A client in the server's own process measures GIL hand-offs: ~40 ms a request more.)

    .venv/bin/python bench/bench_web.py [--runs 1000] [--failures 50] [--requests 30]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

PASSWORD = "bench password, not a real one"
EMAIL = "admin@bench.example"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs in the history")
    parser.add_argument("--failures", type=int, default=50, help="failed records per run")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per address")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hub-bench-web-"))
    os.environ["INTEGRATIONS_VAR_DIR"] = str(workdir / "var")
    # The local sandboxes listen on 127.0.0.1, as an operator allows them.
    os.environ["INTEGRATIONS_ALLOWED_HOSTS"] = "127.0.0.1"
    os.environ["INTEGRATIONS_DATABASE_URL"] = f"sqlite:///{workdir / 'hub.db'}"
    os.environ["PREFECT_HOME"] = str(workdir / "prefect")
    (workdir / "var").mkdir()

    from integration_hub import db, settings
    from integration_hub.prefect_env import configure_prefect
    from integration_hub.sandbox.server import start_server
    from integration_hub.sandbox.xledger import XledgerSandboxState, create_xledger_app
    from integration_hub.vault import init_key_file

    settings.reset_settings()
    db.dispose_engines()
    db.upgrade("hub")
    db.upgrade("app")
    init_key_file(settings.get_settings().key_file)
    configure_prefect()
    state = XledgerSandboxState()
    token = secrets.token_hex(16)
    state.add_company(token)
    with start_server(create_xledger_app(state)) as sandbox:
        integration_id, organisation_id = _seed(sandbox.url, token)
        started = time.perf_counter()
        _history(integration_id, organisation_id, args.runs, args.failures)
        print(
            f"seeded {args.runs} runs x {args.failures} failed records "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        with _web_process() as url:
            ok = _measure(url, token, args.requests)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


@contextmanager
def _web_process() -> Iterator[str]:
    """``integrations web`` on a free port, with this process's environment (the same hub)."""
    import httpx

    from integration_hub.serving import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "integrations"), "web", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/sign-in", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"integrations web did not start: {process.stderr!r}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _seed(sandbox_url: str, token: str) -> tuple[int, int]:
    from integration_hub.adapters.registry import feature_flag
    from integration_hub.db import app_session
    from integration_hub.mappings.spec import load_template
    from integration_hub.models import Organisation
    from integration_hub.services import accounts
    from integration_hub.services import configuration as config

    with app_session() as session:
        org = Organisation(slug="bench", name="Bench", org_number="999888777")
        session.add(org)
        session.flush()
        organisation_id = org.id or 0
    who = config.Actor("bench")
    config.set_feature_flag(organisation_id, feature_flag("xledger"), True, config.OPERATOR)
    row = config.integration(config.organisation("bench"), "xledger", who, create=True)
    config.save_configuration(row, {"base_url": f"{sandbox_url}/graphql", "api_token": token}, who)
    mapping = load_template("xledger_expense_claims.yaml").model_dump(mode="json")
    config.save_mapping(row, mapping, who, accept_warnings=True)
    config.set_schedule(row, "0 2 * * *", "Europe/Oslo", True, who)
    accounts.add_user(EMAIL, PASSWORD, organisation_slug="bench", actor=who)
    return row.id or 0, organisation_id


def _history(integration_id: int, organisation_id: int, runs: int, failures: int) -> None:
    """``runs`` finished runs spread over the last year, each with ``failures`` failed records."""
    from integration_hub.db import hub_session
    from integration_hub.models import RecordOutcome, SyncRun

    now = datetime.now(UTC)
    with hub_session() as session:
        for i in range(runs):
            started = now - timedelta(days=365 * (runs - i) / runs)
            run = SyncRun(
                integration_id=integration_id,
                organisation_id=organisation_id,
                trigger="schedule",
                status="partial",
                extracted=200,
                exported=200 - failures,
                failed=failures,
                exported_amount_ore=12_345_600,
                started_at=started,
                finished_at=started + timedelta(seconds=4),
            )
            session.add(run)
            session.flush()
            session.add_all(
                RecordOutcome(
                    run_id=run.id or 0,
                    integration_id=integration_id,
                    record_type="expense_claim",
                    record_id=i * failures + k,
                    record_version=1,
                    status="failed",
                    reason="account 7145 does not exist in Xledger; fix the field mapping",
                    attempt=1,
                    amount_ore=29_951,
                    summary={"category": "toll", "volunteer_name": "Ola Olsen"},
                )
                for k in range(failures)
            )


def _measure(base: str, token: str, requests: int) -> bool:
    import httpx

    ok = True
    with httpx.Client(base_url=base, timeout=30) as client:
        sign_ins = []
        for _ in range(5):
            client.cookies.clear()
            started = time.perf_counter()
            response = client.post("/sign-in", data={"email": EMAIL, "password": PASSWORD})
            sign_ins.append(time.perf_counter() - started)
            ok &= response.status_code == 303
        # The cookie is Secure; httpx only sends it over https, so pass it by hand.
        cookie = response.cookies.get("ih_session") or ""
        client.cookies.clear()
        headers = {"Cookie": f"ih_session={cookie}", "Accept-Language": "en"}
        from integration_hub.services.accounts import session_for

        csrf = session_for(cookie).csrf_token if session_for(cookie) else ""
        api = "/api/v1/organisations/bench/integrations/xledger"
        addresses = [
            "/orgs/bench",
            "/orgs/bench/integrations/xledger/health",
            "/orgs/bench/integrations/xledger/credentials",
            "/orgs/bench/integrations/xledger/schedule",
            "/orgs/bench/integrations/xledger/mapping",
            f"{api}/health",
            f"{api}/runs?limit=100",
            f"{api}/daily-counts?days=366",
        ]
        print(f"{'GET':<72} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'bytes':>8}")
        for address in addresses:
            times, size = [], 0
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get(address, headers=headers)
                times.append(time.perf_counter() - started)
                size = len(response.content)
                if response.status_code != 200 or token in response.text:
                    print(f"  {address}: HTTP {response.status_code}", file=sys.stderr)
                    ok = False
            _row(address, times, size)
        tests = []
        for _ in range(5):
            started = time.perf_counter()
            response = client.post(
                f"{api}/connection-test", headers={**headers, "X-CSRF-Token": csrf}
            )
            tests.append(time.perf_counter() - started)
            ok &= response.status_code == 200 and response.json()["ok"]
        print()
        _row("POST sign-in (Argon2id verify + session)", sign_ins, 0)
        _row("POST connection-test (API, sandbox in process)", tests, 0)
    return ok


def _row(label: str, seconds: list[float], size: int) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    print(
        f"{label:<72} {statistics.median(ms):>8.1f} {p95:>8.1f} {ms[-1]:>8.1f} "
        f"{size if size else '':>8}"
    )


if __name__ == "__main__":
    sys.exit(main())
