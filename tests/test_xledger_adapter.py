"""The Xledger adapter over real HTTP: connection tests, paging, batching, faults, no duplicates."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import claims_frame
from pydantic import SecretStr

from integration_hub.adapters.base import ConnectionStatus
from integration_hub.adapters.xledger import XledgerAdapter, XledgerConfig
from integration_hub.db import hub_session
from integration_hub.ledger import Ledger
from integration_hub.mappings.resolver import map_claims
from integration_hub.mappings.spec import load_template
from integration_hub.models import Integration
from integration_hub.tasks.load import RetryPolicy, load_lines

REQUIRED = {f.name: f.label for f in XledgerAdapter.target_fields if f.required}
NO_WAIT = RetryPolicy(attempts=4, base_delay_s=0.0, sleep=lambda _s: None)
EMPLOYEES = [{"code": "1001", "description": "Kari Nordmann"}]


@pytest.fixture
def company(xledger_sandbox: Any) -> Iterator[tuple[Any, str]]:
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    yield state.add_company(token, employees=EMPLOYEES), server.url
    # companies are per token; nothing to clean


def _adapter(url: str, token: str, read_timeout: float | None = None) -> XledgerAdapter:
    adapter = XledgerAdapter(XledgerConfig(base_url=f"{url}/graphql", api_token=SecretStr(token)))
    if read_timeout is not None:
        adapter.read_timeout_s = read_timeout  # type: ignore[misc]
    return adapter


def _lines(count: int, first_id: int = 1) -> Any:
    claims = claims_frame(
        [{"claim_id": i, "amount_ore": 10_000 + i} for i in range(first_id, first_id + count)]
    )
    lines, failures = map_claims(
        claims,
        load_template("xledger_expense_claims.yaml"),
        required_fields=REQUIRED,
        text_max_length=255,
        organisation_id=1,
        integration_id=1,
    )
    assert failures.empty
    return lines


@pytest.fixture
def ledger(hub_env: str) -> Ledger:
    with hub_session() as session:
        row = Integration(organisation_id=1, type_key="xledger")
        session.add(row)
        session.flush()
        integration_id = row.id or 0
    return Ledger(
        hub_session, organisation_id=1, integration_id=integration_id, record_type="expense_claim"
    )


# -- connection tests: classified, always within 10 s --------------------------------------------
def test_connection_ok(company: Any) -> None:
    found, url = company
    result = _adapter(url, found.token).check_connection()
    assert result.status is ConnectionStatus.OK
    assert found.token not in result.detail


def test_wrong_token_is_bad_credentials(company: Any) -> None:
    _, url = company
    result = _adapter(url, "not-the-token").check_connection()
    assert result.status is ConnectionStatus.BAD_CREDENTIALS


def test_burst_limit_is_throttled_and_5xx_unexpected(company: Any) -> None:
    found, url = company
    found.set_faults(burst_limit=1)
    assert _adapter(url, found.token).check_connection().status is ConnectionStatus.THROTTLED
    found.set_faults(fail_5xx=1)
    result = _adapter(url, found.token).check_connection()
    assert result.status is ConnectionStatus.UNEXPECTED_RESPONSE


def test_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _adapter(f"http://127.0.0.1:{port}", "x").check_connection()
    assert result.status is ConnectionStatus.UNREACHABLE


class RawServer:
    """A TCP server on 127.0.0.1 that misbehaves on purpose: ``hang`` accepts and never
    answers; ``trickle`` sends a valid header then one byte per second; ``throttle`` answers 429
    with a Retry-After of an hour."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            if self.mode == "throttle":
                conn.sendall(
                    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\n"
                    b"Content-Length: 0\r\n\r\n"
                )
            elif self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                while not self.stop.is_set():
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        return
                    time.sleep(1)
            self.stop.wait(30)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("hang", ConnectionStatus.TIMED_OUT),
        ("trickle", ConnectionStatus.TIMED_OUT),
        ("throttle", ConnectionStatus.THROTTLED),
    ],
)
def test_connection_test_answers_within_ten_seconds(mode: str, expected: ConnectionStatus) -> None:
    server = RawServer(mode)
    try:
        started = time.monotonic()
        result = _adapter(f"http://127.0.0.1:{server.port}", "x").check_connection()
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert result.status is expected
    assert elapsed < 10.5  # the product's promise, not a speed target


# -- reference codes and loading ------------------------------------------------------------------
def test_reference_codes_follow_every_page(company: Any) -> None:
    found, url = company
    chart = [{"code": str(10000 + i), "description": f"Konto {i}"} for i in range(2300)]
    found.set_accounts([*chart, {"code": "2910", "description": "Gjeld", "posting": True}])
    adapter = _adapter(url, found.token)
    codes = adapter.reference_codes()
    assert len(codes) == 2301
    assert adapter.requests_sent == 3  # 1,000 per page


def test_batches_of_500_lines_all_exported_once(company: Any, ledger: Ledger) -> None:
    found, url = company
    adapter = _adapter(url, found.token)
    report = load_lines(adapter, _lines(600), ledger=ledger, run_id=None, policy=NO_WAIT)
    assert Counter(o["status"] for o in report.outcomes) == {"exported": 600}
    assert report.requests == 3  # 1,200 lines at 500 per request
    assert found.mutations == 3
    assert len(found.ledger) == 1200
    keys = Counter(item["extIdentifier"] for item in found.ledger)
    assert set(keys.values()) == {2}  # two lines per voucher, never a voucher twice


class Clock:
    """The settle time passes when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _two_runs(found: Any, url: str, lines: Any, ledger: Ledger, read_timeout: float | None = None):  # type: ignore[no-untyped-def]
    """A run that meets the fault, then the next run after the settle time: both reports."""
    clock = Clock()
    adapter = _adapter(url, found.token, read_timeout)
    first = load_lines(adapter, lines, ledger=ledger, run_id=1, policy=NO_WAIT, clock=clock)
    clock.now += timedelta(seconds=adapter.read_timeout_s + adapter.settle_s)
    second = load_lines(
        _adapter(url, found.token), lines, ledger=ledger, run_id=2, policy=NO_WAIT, clock=clock
    )
    return first, second


@pytest.mark.parametrize(
    "fault",
    [
        {"commit_then_timeout": 1, "hang_seconds": 5},
        {"commit_then_drop": 1},
    ],
    ids=["commit-then-timeout", "commit-then-drop"],
)
def test_a_lost_answer_after_commit_waits_then_is_confirmed_once(
    company: Any, ledger: Ledger, fault: dict[str, Any]
) -> None:
    found, url = company
    found.set_faults(**fault)
    first, second = _two_runs(found, url, _lines(10), ledger, read_timeout=1.0)
    assert Counter(o["status"] for o in first.outcomes) == {"waiting": 10}
    assert Counter(o["status"] for o in second.outcomes) == {"exported": 10}
    assert second.reconciled == 10
    assert len(found.ledger) == 20
    assert found.mutations == 1  # confirmed by lookup, never posted again


@pytest.mark.parametrize("fault", [{"drop_connection": 1}, {"fail_5xx": 1}], ids=["dropped", "503"])
def test_no_clear_answer_before_commit_is_sent_again_after_the_settle_time(
    company: Any, ledger: Ledger, fault: dict[str, Any]
) -> None:
    """A 503 or a dropped connection may come after a commit (a gateway in front of the real
    service): never re-sent blindly, looked up first."""
    found, url = company
    found.set_faults(**fault)
    first, second = _two_runs(found, url, _lines(5), ledger)
    assert Counter(o["status"] for o in first.outcomes) == {"waiting": 5}
    assert Counter(o["status"] for o in second.outcomes) == {"exported": 5}
    assert len(found.ledger) == 10


def test_burst_limit_is_retried_in_the_same_run(company: Any, ledger: Ledger) -> None:
    found, url = company
    found.set_faults(burst_limit=1)
    report = load_lines(
        _adapter(url, found.token), _lines(3), ledger=ledger, run_id=None, policy=NO_WAIT
    )
    assert Counter(o["status"] for o in report.outcomes) == {"exported": 3}
    assert len(found.ledger) == 6


def test_rejected_vouchers_get_xledger_reasons(company: Any, ledger: Ledger) -> None:
    found, url = company
    lines = _lines(3)
    lines.loc[lines["record_id"] == 2, "counterparty"] = lines.loc[
        lines["record_id"] == 2, "counterparty"
    ].where(lambda s: s.isna(), "9999")
    report = load_lines(
        _adapter(url, found.token), lines, ledger=ledger, run_id=None, policy=NO_WAIT
    )
    failed = [o for o in report.outcomes if o["status"] == "failed"]
    assert [o["record_id"] for o in failed] == [2]
    assert "9999" in failed[0]["reason"] and "employee" in failed[0]["reason"]
    assert len(found.ledger) == 4


def test_bad_token_stops_the_run_with_a_reason(company: Any, ledger: Ledger) -> None:
    _, url = company
    report = load_lines(
        _adapter(url, "wrong"), _lines(3), ledger=ledger, run_id=None, policy=NO_WAIT
    )
    assert report.aborted and "token" in report.aborted
    assert Counter(o["status"] for o in report.outcomes) == {"failed": 3}
