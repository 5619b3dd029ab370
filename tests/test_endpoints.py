"""A stored secret only ever goes to the endpoint it was entered for, and the hub connects to no
private or metadata address an operator did not allow (issue: "trust").

A listener on 127.0.0.1 plays the admin's own server: after every attempt to move an endpoint
without the secret (web form, REST API, CLI setup file, interactive wizard, and the database
edited behind the services' back) it must have received nothing at all.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiworld import configured_xledger, integration_url
from factories import stored_secret
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner
from webworld import ADMIN_A, ORG_A

from integration_hub import settings
from integration_hub.adapters.base import ConnectionStatus, OutcomeUnknown
from integration_hub.adapters.endpoints import EndpointRefused, check_addresses, check_endpoint
from integration_hub.adapters.xledger import XledgerAdapter, XledgerConfig
from integration_hub.cli import app
from integration_hub.db import hub_session
from integration_hub.models import AuditEntry, Integration
from integration_hub.services import alerts
from integration_hub.services import configuration as config
from integration_hub.services.errors import InvalidInput

XL = f"/orgs/{ORG_A}/integrations/xledger"


class Listener:
    """The admin's own server: records every byte it is sent, answers a bland 200."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.received = b""
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1.0)
                try:
                    self.received += conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def thief() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


def _settings_of(row: Any) -> dict[str, Any]:
    with hub_session() as session:
        stored = session.get(Integration, row.id)
        assert stored is not None
        return dict(stored.settings)


def test_moving_an_endpoint_without_the_secret_is_refused_on_every_path(
    web: Any, thief: Listener, tmp_path: Path
) -> None:
    row, token = configured_xledger(web, ORG_A)
    before = _settings_of(row)

    # The services (what every path below calls).
    with pytest.raises(InvalidInput, match="enter api_token again"):
        config.save_configuration(row, {"base_url": thief.url}, config.Actor("admin"))

    # The web form, with the mask posted back as the browser does.
    client = web.client(ADMIN_A)
    mask = config.credential_form(row, config.OPERATOR)[1]["value"]
    page = client.post(
        f"{XL}/credentials",
        data={"csrf_token": web.csrf(client), "base_url": thief.url, "api_token": mask},
    )
    assert page.status_code == 422
    assert "skriv den inn på nytt sammen med den nye adressen" in page.text

    # The REST API.
    api = web.client(ADMIN_A)
    api.headers["X-CSRF-Token"] = web.csrf(api)
    answer = api.put(
        f"{integration_url(ORG_A)}/credentials", json={"values": {"base_url": thief.url}}
    )
    assert answer.status_code == 422
    assert "skriv inn api_token på nytt" in answer.text

    # The CLI: a setup file without the token, and the interactive wizard keeping it.
    runner = CliRunner()
    setup_file = tmp_path / "moved.yaml"
    setup_file.write_text(f"base_url: {thief.url}\nmapping: default\naccept_warnings: true\n")
    result = runner.invoke(app, ["setup", ORG_A, "xledger", "--from-file", str(setup_file)])
    assert result.exit_code == 2 and "enter api_token again" in result.output
    # Enter keeps the stored token and the voucher settings as they are.
    result = runner.invoke(app, ["setup", ORG_A, "xledger"], input=f"{thief.url}\n\n\n\n\n")
    assert result.exit_code == 2 and "enter api_token again" in result.output

    assert _settings_of(row) == before
    assert stored_secret(row.organisation_id, row.id, "api_token") == token
    # What would have sent the secret: a connection test and a nightly export's first read.
    assert config.test_connection(row, config.OPERATOR).ok
    assert thief.connections == 0 and token.encode() not in thief.received


def test_a_secret_is_not_sent_where_the_database_was_pointed_behind_the_services(
    web: Any, thief: Listener
) -> None:
    """Defence in depth: the endpoint is in the ciphertext's associated data."""
    row, token = configured_xledger(web, ORG_A)
    with hub_session() as session:
        stored = session.get(Integration, row.id)
        assert stored is not None
        stored.settings = {**stored.settings, "base_url": thief.url}
        session.add(stored)
    result = config.test_connection(row, config.OPERATOR)
    assert result.status is ConnectionStatus.BAD_CREDENTIALS
    assert "was entered for base_url=http://127.0.0.1" in result.detail
    assert thief.connections == 0 and token.encode() not in thief.received


def test_moving_an_endpoint_with_the_secret_again_binds_it_there_and_audits_both_hosts(
    web: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    row, _ = configured_xledger(web, ORG_A)
    monkeypatch.setenv("INTEGRATIONS_ALLOWED_HOSTS", "127.0.0.1,localhost")
    settings.reset_settings()
    new_token = web.xledger_company(ORG_A)
    moved = web.sandbox_url.replace("127.0.0.1", "localhost") + "/graphql"
    config.save_configuration(
        row, {"base_url": moved, "api_token": new_token}, config.Actor("admin")
    )
    assert stored_secret(row.organisation_id, row.id, "api_token") == new_token
    assert config.test_connection(row, config.OPERATOR).ok
    with hub_session() as session:
        entry = (
            session.query(AuditEntry)
            .filter(AuditEntry.action == "integration.configured")
            .order_by(AuditEntry.id.desc())  # type: ignore[union-attr]
            .first()
        )
    assert entry is not None
    assert entry.details["endpoints_changed"] == {
        "base_url": {"from": "127.0.0.1", "to": "localhost"}
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://evil.example/graphql", "not one of the service's own hosts"),
        ("http://www.xledger.net/graphql", "must use https://"),
        ("https://www.xledger.net.evil.example/graphql", "not one of the service's own hosts"),
        ("http://2130706433:8080/graphql", "not one of the service's own hosts"),
        ("http://169.254.169.254/latest/meta-data", "not one of the service's own hosts"),
    ],
)
def test_only_the_vendors_own_hosts_over_https_without_an_operator(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    monkeypatch.setenv("INTEGRATIONS_ALLOWED_HOSTS", "")
    monkeypatch.setenv("INTEGRATIONS_VAR_DIR", "/nonexistent-var-dir")
    settings.reset_settings()
    try:
        with pytest.raises(EndpointRefused, match=expected):
            check_endpoint(url, XledgerAdapter.vendor_hosts, "base_url")
        check_endpoint("https://demo.xledger.net/graphql", XledgerAdapter.vendor_hosts, "base_url")
    finally:
        settings.reset_settings()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://user:pw@www.xledger.net/graphql", "user name or password"),
        ("https://www.xledger.net/graphql#/evil", "fragment"),
        ("https://www.xledger.net/graphql?next=https://evil.example", "query"),
        ("ftp://www.xledger.net/graphql", "https://"),
        ("https:///graphql", "host"),
    ],
)
def test_endpoint_urls_are_parsed_strictly(url: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        XledgerConfig(base_url=url, api_token=SecretStr("t0ken-value-123"))


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f.0.0.1", "localhost", "169.254.169.254", "[::1]"]
)
def test_the_connect_time_guard_refuses_local_and_metadata_addresses(
    monkeypatch: pytest.MonkeyPatch, thief: Listener, host: str
) -> None:
    """Even an adapter built past the services (or a host that resolves differently by the
    time of the request) cannot open a socket to a private address."""
    monkeypatch.setenv("INTEGRATIONS_ALLOWED_HOSTS", "")
    monkeypatch.setenv("INTEGRATIONS_VAR_DIR", "/nonexistent-var-dir")
    settings.reset_settings()
    try:
        adapter = XledgerAdapter(
            XledgerConfig(
                base_url=f"http://{host}:{thief.port}/graphql",
                api_token=SecretStr("t0ken-value-123"),
            )
        )
        result = adapter.check_connection(deadline_s=3)
        assert result.status is ConnectionStatus.UNREACHABLE
        assert thief.connections == 0
        with pytest.raises(EndpointRefused):
            check_addresses(host.strip("[]"), thief.port)
    finally:
        settings.reset_settings()


@pytest.mark.parametrize(
    "url",
    ["https://169.254.169.254/hook", "http://10.0.0.7/hook", "https://127.0.0.1:9/hook"],
)
def test_webhooks_to_private_addresses_are_refused(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("INTEGRATIONS_ALLOWED_HOSTS", "")
    monkeypatch.setenv("INTEGRATIONS_VAR_DIR", "/nonexistent-var-dir")
    settings.reset_settings()
    try:
        with pytest.raises(InvalidInput):
            alerts.check_webhook_url(url)
    finally:
        settings.reset_settings()


def test_what_a_target_echoes_is_redacted_and_bounded_at_the_adapter_boundary() -> None:
    """A target that echoes the Authorization header: the token never leaves the adapter."""
    token = "xl-secret-token-0123456789"

    def echo(request: httpx.Request) -> httpx.Response:
        said = f"bad request from {request.headers['Authorization']} " + "x" * 5000
        if b"mutation" in request.content:
            body = {"data": None, "errors": [{"message": said, "code": "INTERNAL"}]}
        else:
            body = {"errors": [{"message": said, "code": said}]}
        return httpx.Response(200, json=body)

    adapter = XledgerAdapter(
        XledgerConfig(base_url="https://www.xledger.net/graphql", api_token=SecretStr(token)),
        transport=httpx.MockTransport(echo),
    )
    lines = _one_voucher()
    with pytest.raises(OutcomeUnknown) as caught:
        adapter.load(lines)
    assert token not in str(caught.value) and "[REDACTED]" in str(caught.value)
    assert len(str(caught.value)) <= 1000
    result = adapter.check_connection(deadline_s=3)
    assert token not in result.detail and len(result.detail) <= 300


def _one_voucher() -> Any:
    from factories import claims_frame

    from integration_hub.mappings.resolver import map_claims
    from integration_hub.mappings.spec import load_template

    lines, _ = map_claims(
        claims_frame([{"claim_id": 1}]),
        load_template("xledger_expense_claims.yaml"),
        required_fields={},
        text_max_length=255,
        organisation_id=1,
        integration_id=1,
    )
    return lines
