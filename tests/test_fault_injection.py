"""A few seeds of the fault-injection driver (``scripts/fault_injection.py``) in the suite.

Why: "never post twice" is the hub's central promise, and only real faults at real moments test
it: a gateway error after the target committed, a reset, a truncated body, a hang, a commit that
lands after the client gave up, a sync SIGKILLed between the commit and its answer. The driver
runs the real ``integrations sync`` against the sandboxes through the seeded fault proxy and then
compares the target's own store with the hub's database. Two seeds per target, side by side,
take about a minute; the full check is ``scripts/fault_injection.py --seeds 50`` (see its
docstring).

Select it with ``-k fault_injection``. The fault rate is raised above the driver's default so
that two seeds of 60 claims still meet a good number of faults. The proxy's own tests come first
(a few seconds): each fault kind does to the wire and to the target what its name says, so a
finding of the driver is the hub's, not the instrument's.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration_hub.sandbox.fault_proxy import (
    ALL_KINDS,
    LATE_COMMIT,
    PRE_COMMIT_KINDS,
    FaultPlan,
    FaultProfile,
    FaultProxy,
    dynamics_is_write,
    xledger_is_write,
)

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "scripts" / "fault_injection.py"
FIGURES = ("duplicates", "lost", "wrong", "stuck", "outcome_mismatches", "ore_mismatch", "running")
"""What the driver counts; every one must be 0."""

DRIVER_TIMEOUT_S = 240
pytestmark = pytest.mark.timeout(330)

MUTATION = """mutation AddVouchers($inputs: [AddGLImportItemsInput!]!) {
  addGLImportItems(inputs: $inputs) { edges { clientId node { dbId extIdentifier } } }
}"""
ACCOUNTS = "query Accounts { accounts(first: 5) { edges { node { code } } } }"
CLIENT_TIMEOUT = httpx.Timeout(0.5, connect=2.0)

# What the hub's client meets for each kind, and whether the target holds the voucher afterwards.
EXPECTED = {
    "reset_before": ("error", False),
    "status_503_before": (503, False),
    "status_429_before": (429, False),
    "hang_before": ("timeout", False),
    "commit_then_502": (502, True),
    "commit_then_503": (503, True),
    "commit_then_504": (504, True),
    "commit_then_500": (500, True),
    "commit_then_reset": ("error", True),
    "commit_then_truncated": ("error", True),
    "commit_then_hang": ("timeout", True),
    "commit_then_graphql_error": (200, True),
    "late_commit": ("timeout", True),
}


def _voucher(key: str) -> list[dict[str, Any]]:
    line = {
        "transactionSource": {"code": "GL"},
        "trRegNumber": "1",
        "jobLevel": {"dbSubId": 1},
        "postedDate": "2026-01-05",
        "extIdentifier": key,
        "text": "fault proxy test",
    }
    return [
        {"clientId": f"{key}:1", "node": {**line, "account": {"code": "7100"}, "amount": "10.00"}},
        {
            "clientId": f"{key}:2",
            "node": {
                **line,
                "account": {"code": "2910"},
                "amount": "-10.00",
                "subledger": {"code": "1001"},
            },
        },
    ]


@pytest.fixture
def xledger_company(xledger_sandbox: Any) -> Iterator[tuple[Any, str]]:
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    company = state.add_company(token, employees=[{"code": "1001", "description": "Kari"}])
    yield company, server.url


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_fault_injection_proxy_kind(kind: str, xledger_company: tuple[Any, str]) -> None:
    """Each kind on a write: what the client sees, and whether the target committed."""
    company, upstream = xledger_company
    profile = FaultProfile(
        write_rate=1.0, write_weights={kind: 1.0}, late_commit_delay_s=0.5, hang_cap_s=10.0
    )
    proxy = FaultProxy(upstream, seed=1, is_write=xledger_is_write, profile=profile, graphql=True)
    key = f"FP-{kind}"
    answered: list[int] = []
    with proxy:
        proxy.enabled = True
        proxy.set_write_hook(answered.append)
        with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
            try:
                response = client.post(
                    f"{proxy.url}/graphql",
                    json={"query": MUTATION, "variables": {"inputs": _voucher(key)}},
                    headers={"Authorization": f"token {company.token}"},
                )
                seen: int | str = response.status_code
            except httpx.TimeoutException:
                seen = "timeout"
            except httpx.TransportError:
                seen = "error"
        held_when_client_gave_up = any(i["extIdentifier"] == key for i in company.ledger_snapshot())
        assert proxy.wait_idle(10.0)
        stats = proxy.stats()
    held = sum(1 for item in company.ledger_snapshot() if item["extIdentifier"] == key)
    expected_seen, commits = EXPECTED[kind]
    assert seen == expected_seen
    assert held == (2 if commits else 0)
    assert stats.faults == {kind: 1}
    assert stats.writes == 1 and stats.reads == 0
    if kind == LATE_COMMIT:
        assert not held_when_client_gave_up  # the commit landed only after the client left
        assert stats.late_commits == 1 and answered == []
    elif kind in PRE_COMMIT_KINDS:
        assert stats.writes_forwarded == 0 and answered == []
    else:
        assert stats.writes_forwarded == 1 and answered == [1]


def test_fault_injection_proxy_passes_through_when_disabled(
    xledger_company: tuple[Any, str],
) -> None:
    """Off, it is a plain reverse proxy: reads and writes on one kept-alive connection."""
    company, upstream = xledger_company
    profile = FaultProfile(write_rate=1.0, read_rate=1.0)
    headers = {"Authorization": f"token {company.token}"}
    with (
        FaultProxy(upstream, seed=3, is_write=xledger_is_write, profile=profile) as proxy,
        httpx.Client(timeout=CLIENT_TIMEOUT) as client,
    ):
        read = client.post(f"{proxy.url}/graphql", json={"query": ACCOUNTS}, headers=headers)
        write = client.post(
            f"{proxy.url}/graphql",
            json={"query": MUTATION, "variables": {"inputs": _voucher("FP-off")}},
            headers=headers,
        )
        stats = proxy.stats()
    assert read.status_code == 200 and read.json()["data"]["accounts"]["edges"]
    assert write.status_code == 200 and not write.json().get("errors")
    assert (stats.requests, stats.reads, stats.writes, stats.writes_forwarded) == (2, 1, 1, 1)
    assert not stats.faults


def test_fault_injection_plan_is_seeded() -> None:
    """The n-th write meets the same fault for the same seed; reads only meet pre-commit kinds
    and a GraphQL error only goes to a GraphQL target."""

    def draws(seed: int, *, write: bool, graphql: bool = True) -> list[str | None]:
        plan = FaultPlan(seed, FaultProfile(read_rate=0.45), graphql=graphql)
        return [plan.next_fault(write=write) for _ in range(400)]

    assert draws(7, write=True) == draws(7, write=True)
    assert draws(7, write=True) != draws(8, write=True)
    writes = draws(7, write=True)
    assert 0.35 < sum(f is not None for f in writes) / len(writes) < 0.55
    assert {f for f in draws(7, write=False) if f} <= set(PRE_COMMIT_KINDS)
    assert "commit_then_graphql_error" not in draws(7, write=True, graphql=False)


@pytest.mark.parametrize(
    ("method", "target", "body", "write"),
    [
        ("POST", "/v2.0/t/production/api/v2.0/$batch", b"{}", True),
        ("POST", "/v2.0/t/production/api/v2.0/companies(1)/journals(2)/journalLines", b"", True),
        ("GET", "/v2.0/t/production/api/v2.0/companies(1)/journals(2)/journalLines", b"", False),
        ("POST", "/t/oauth2/v2.0/token", b"grant_type=client_credentials", False),
    ],
)
def test_fault_injection_dynamics_writes(
    method: str, target: str, body: bytes, write: bool
) -> None:
    assert dynamics_is_write(method, target, body) is write


def test_fault_injection_xledger_writes() -> None:
    assert xledger_is_write("POST", "/graphql", json.dumps({"query": MUTATION}).encode())
    assert not xledger_is_write("POST", "/graphql", json.dumps({"query": ACCOUNTS}).encode())


def _run_driver(tmp_path: Path) -> tuple[dict[str, Any], str]:
    """Run the driver as its own process (it starts syncs, a Prefect server, sandboxes); its
    temporary hubs go under ``tmp_path``, where failing seeds are kept for a look."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATIONS_")}
    env.pop("PREFECT_API_URL", None)
    env["TMPDIR"] = str(tmp_path)
    command = [
        sys.executable,
        str(DRIVER),
        "--target",
        "both",
        "--seeds",
        "2",
        "--claims",
        "60",
        "--fault-rate",
        "0.6",
        "--faulty-runs",
        "3",
        "--jobs",
        "2",
        "--json",
    ]
    driver = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = driver.communicate(timeout=DRIVER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: the driver then stops its syncs, sandboxes and Prefect server.
        driver.terminate()
        stdout, stderr = driver.communicate(timeout=60)
        pytest.fail(f"the driver took over {DRIVER_TIMEOUT_S} s:\n{stderr[-3000:]}")
    try:
        summary = json.loads(stdout)
    except ValueError:
        pytest.fail(
            f"the driver printed no JSON summary (exit {driver.returncode}):\n"
            f"{stdout[-3000:]}\n{stderr[-3000:]}"
        )
    return summary, stderr


def test_fault_injection_two_seeds_per_target(tmp_path: Path) -> None:
    summary, progress = _run_driver(tmp_path)
    assert not summary["errors"], f"the driver could not run some seeds:\n{progress}"
    assert not summary["interrupted"]
    seeds = summary["seeds"]
    assert sorted((s["target"], s["seed"]) for s in seeds) == [
        ("dynamics", 1),
        ("dynamics", 2),
        ("xledger", 1),
        ("xledger", 2),
    ]
    found = {name: summary["totals"][name] for name in FIGURES}
    assert all(n == 0 for n in found.values()), (
        f"fault injection found {found}; per seed (kept under {tmp_path}):\n{progress}"
    )
    for seed in seeds:
        # every claim reached the target once, and the history says so, øre for øre
        assert seed["held"] == seed["claims"], seed
        assert seed["ore"]["target"] == seed["ore"]["outcomes"] == seed["ore"]["runs"], seed
    assert summary["ok"] is True
