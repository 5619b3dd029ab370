"""Scale-out check: two Prefect workers on one machine share the runs, none runs twice.

    .venv/bin/python scripts/scale_out_check.py [--runs 20] [--timeout 100]

It does what README "Scaling out" tells a team to do, on this machine: a Prefect server
(``prefect server start``, temporary PREFECT_HOME, a free port), the ``integration-hub``
process work pool, ``prefect deploy`` of this project's ``prefect.yaml``, two ``prefect worker
start`` processes. It then deploys a tiny probe flow to the same pool (same pull step), creates
``--runs`` flow runs of it, and checks, once all are final (bounded wait): every run completed,
each ran exactly once (each run appends its id and its worker's name to a file), Prefect counts
one run attempt each, and both workers took some. Prints the figures; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path

if __name__ == "__main__":  # before prefect is imported: its settings are read at import
    WORK = Path(tempfile.mkdtemp(prefix="hub-scale-out-"))
    os.environ["PREFECT_HOME"] = str(WORK / "prefect-home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect import flow

ROOT = Path(__file__).resolve().parent.parent
PROBE_ENTRYPOINT = "scripts/scale_out_check.py:scale_out_probe"
PROBE_DEPLOYMENT = "scale-out-probe"


@flow(name="scale-out-probe", log_prints=False)
def scale_out_probe(index: int, results: str) -> int:
    """Record which worker ran this flow run; one short line, appended atomically."""
    from prefect.runtime import flow_run

    worker = os.environ.get("SCALE_OUT_WORKER", "?")
    line = f"{flow_run.get_id()} {index} {worker} {os.getpid()}\n"
    fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    time.sleep(0.5)  # long enough that one poll cannot drain the queue alone
    return index


def _prefect(env: dict[str, str], *args: str, log: Path) -> None:
    """Run a ``prefect`` CLI command from the project root; its output goes to ``log``."""
    with log.open("ab") as out:
        out.write(f"\n$ prefect {' '.join(args)}\n".encode())
        out.flush()
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    if done.returncode != 0:
        raise SystemExit(f"`prefect {' '.join(args)}` failed; see {log}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=100.0, help="seconds to wait for runs")
    parser.add_argument("--limit", type=int, default=3, help="concurrent runs per worker")
    options = parser.parse_args()

    from integration_hub.deployments import DEPLOYABLE_FLOWS, WORK_POOL
    from integration_hub.serving import free_port, start_local_server

    work = WORK
    log = work / "commands.log"
    results = work / "results.txt"
    started = time.monotonic()
    server = start_local_server(free_port(), work / "prefect-home")
    print(f"Prefect server {server.api_url} (state and logs in {work})")
    env = {
        **os.environ,
        "PREFECT_API_URL": server.api_url,
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "INTEGRATION_HUB_HOME": str(ROOT),
    }
    workers: list[subprocess.Popen[bytes]] = []
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            _prefect(env, "work-pool", "create", WORK_POOL, "--type", "process", log=log)
            missing = [spec.name for spec in DEPLOYABLE_FLOWS if not spec.is_available()]
            if missing:  # `--all` needs every flow module; deploy the ones that exist
                available = [spec.name for spec in DEPLOYABLE_FLOWS if spec.is_available()]
                deploy = ["deploy", *(arg for name in available for arg in ("-n", name))]
            else:
                deploy = ["deploy", "--all"]
            _prefect(env, "--no-prompt", *deploy, log=log)
            kept = _redeploy_keeps_pushed_schedules(env, deploy, log)
            _prefect(
                env,
                "--no-prompt",
                "deploy",
                PROBE_ENTRYPOINT,
                "-n",
                PROBE_DEPLOYMENT,
                "-p",
                WORK_POOL,
                log=log,
            )
            worker = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL]
            worker += ["--limit", str(options.limit)]
            for name in ("worker-a", "worker-b"):
                with (work / f"{name}.log").open("wb") as out:
                    workers.append(
                        subprocess.Popen(
                            [*worker, "--name", name],
                            env={**env, "SCALE_OUT_WORKER": name},
                            cwd=work,
                            stdin=subprocess.DEVNULL,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            return _check(options, results, missing, started, redeploy_kept_schedules=kept)
    finally:
        for worker in workers:
            with suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        server.stop()


def _redeploy_keeps_pushed_schedules(env: dict[str, str], deploy: list[str], log: Path) -> bool:
    """A schedule pushed by the hub (slug integration-<id>) survives `prefect deploy` again."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    from integration_hub.deployments import EXPORT_EXPENSE_CLAIMS

    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(EXPORT_EXPENSE_CLAIMS.full_name).id
        client.create_deployment_schedules(
            deployment_id,
            [
                DeploymentScheduleCreate(
                    schedule=CronSchedule(cron="0 2 * * *", timezone="Europe/Oslo"),
                    parameters={"integration_id": 1, "trigger": "schedule"},
                    slug="integration-1",
                )
            ],
        )
    _prefect(env, "--no-prompt", *deploy, log=log)
    with get_client(sync_client=True) as client:
        slugs = [s.slug for s in client.read_deployment_schedules(deployment_id)]
    print(f"schedules on {EXPORT_EXPENSE_CLAIMS.full_name} after deploying again: {slugs}")
    return slugs == ["integration-1"]


def _check(
    options: argparse.Namespace,
    results: Path,
    missing: list[str],
    started: float,
    *,
    redeploy_kept_schedules: bool,
) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from integration_hub.deployments import DEPLOYABLE_FLOWS, WORK_POOL

    with get_client(sync_client=True) as client:
        for spec in DEPLOYABLE_FLOWS:
            if spec.name in missing:
                print(f"deployment {spec.full_name}: NOT DEPLOYED ({spec.module} missing)")
                continue
            deployment = client.read_deployment_by_name(spec.full_name)
            print(
                f"deployment {spec.full_name}: pool {deployment.work_pool_name}, "
                f"queue {deployment.work_queue_name}"
            )
            assert deployment.work_pool_name == WORK_POOL
        probe = client.read_deployment_by_name(f"scale-out-probe/{PROBE_DEPLOYMENT}")
        created_at = time.monotonic()
        ids = {
            client.create_flow_run_from_deployment(
                probe.id, parameters={"index": i, "results": str(results)}
            ).id
            for i in range(options.runs)
        }
        print(f"created {len(ids)} flow runs of {probe.name}; two workers, limit {options.limit}")

        deadline = created_at + options.timeout
        runs = []
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[probe.id]))
            )
            if len(runs) == len(ids) and all(r.state and r.state.is_final() for r in runs):
                break
            time.sleep(0.5)
        waited = time.monotonic() - created_at

    lines = results.read_text().splitlines() if results.exists() else []
    executions = Counter(line.split()[0] for line in lines)
    by_worker = Counter(line.split()[2] for line in lines)
    states = Counter(r.state.name if r.state else "?" for r in runs)
    run_counts = Counter(r.run_count for r in runs)
    twice = [run_id for run_id, count in executions.items() if count > 1]
    checks = {
        "every run is final and Completed": states == Counter({"Completed": len(ids)}),
        "every run executed exactly once": {str(i) for i in ids} == set(executions) and not twice,
        "Prefect counts one attempt per run": run_counts == Counter({1: len(ids)}),
        "both workers ran some": len(by_worker) == 2 and min(by_worker.values()) > 0,
        "deploying again keeps the schedules the hub pushed": redeploy_kept_schedules,
    }
    print(f"flow runs: {len(runs)}; states: {dict(states)}; run_count: {dict(run_counts)}")
    print(f"executions recorded: {len(lines)} for {len(executions)} distinct runs; "
          f"executed twice: {len(twice)}")  # fmt: skip
    for worker, count in sorted(by_worker.items()):
        print(f"  {worker}: {count} runs")
    print(f"all runs final after {waited:.1f} s; whole check {time.monotonic() - started:.1f} s")
    for label, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {label}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
