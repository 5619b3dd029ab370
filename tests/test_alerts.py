"""Alert webhooks without Prefect: kept in the vault, delivered to a real local receiver, never
carrying secrets or record contents, and never failing what triggered them."""

from __future__ import annotations

import logging
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest
from factories import configure_xledger, seed_organisation
from sqlmodel import select

from integration_hub.db import hub_session
from integration_hub.models import AuditEntry, Credential
from integration_hub.services import alerts
from integration_hub.services import configuration as config
from integration_hub.services.errors import Forbidden, InvalidInput
from integration_hub.tasks import notify
from integration_hub.vault import rotate_key_file

OPERATOR = config.Actor("test")


@pytest.fixture
def orgs(hub_env: str, vault_key: Path) -> tuple[int, int]:
    return seed_organisation("bf", []), seed_organisation("hlf", [])


def _audit(action: str) -> list[AuditEntry]:
    with hub_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)))


def test_the_webhook_is_kept_encrypted_shown_masked_and_delivered(
    orgs: tuple[int, int], webhook_receiver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    token = secrets.token_hex(16)
    url = f"{webhook_receiver.url}/hooks/{token}?sig={token}"
    mask = alerts.set_webhook("bf", url, OPERATOR)
    assert mask == "••••••" + url[-4:]
    with hub_session() as session:
        (stored,) = session.exec(select(Credential)).all()
    assert token.encode() not in stored.ciphertext and stored.field == "webhook_url"
    assert alerts.show_webhook("bf", OPERATOR)["webhook"] == mask

    rotated = rotate_key_file()  # the webhook is re-encrypted like every credential
    assert rotated.rotated == 1 and rotated.complete

    caplog.set_level(logging.DEBUG)
    assert alerts.send_test("bf", OPERATOR) == "delivered"
    (call,) = webhook_receiver.received
    assert call["query"] == f"sig={token}" and call["json"]["event"] == "test"

    webhook_receiver.status = 503
    payload = notify.run_payload(
        {"run_id": 4, "failed": 2, "status": "partial", "flow_run_id": "abc"},
        organisation="bf",
        type_key="xledger",
        target="Xledger",
        event="export.failures",
    )
    assert notify.deliver(orgs[0], payload) == "failed: HTTP 503"
    shown = alerts.show_webhook("bf", OPERATOR)
    assert [e["result"] for e in shown["recent"]] == ["failed: HTTP 503", "delivered"]
    everything = caplog.text + repr(shown) + repr([e.details for e in _audit("alert.failed")])
    assert token not in everything


def test_a_dead_webhook_is_a_recorded_result_not_an_error(orgs: tuple[int, int]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    alerts.set_webhook("bf", f"http://127.0.0.1:{port}/hooks/x", OPERATOR)
    assert notify.deliver(orgs[0], {"event": "export.failed"}) == "failed: ConnectError"
    assert notify.deliver(orgs[1], {"event": "export.failed"}) == "no webhook"
    (entry,) = _audit("alert.failed")
    assert entry.details == {
        "event": "export.failed",
        "run_id": None,
        "result": "failed: ConnectError",
    }
    assert alerts.remove_webhook("bf", OPERATOR) is True
    assert alerts.show_webhook("bf", OPERATOR)["webhook"] is None


def test_webhook_urls_are_checked_without_being_repeated(orgs: tuple[int, int]) -> None:
    for bad, why in (
        ("http://hooks.example.org/t0ps3cret", "must use https"),
        ("ftp://hooks.example.org/t0ps3cret", "must be an https:// URL"),
        ("https://user:t0ps3cret@hooks.example.org/", "not in user:password@"),
        ("••••••cret", "mask"),
    ):
        with pytest.raises(InvalidInput, match=why) as refused:
            alerts.set_webhook("bf", bad, OPERATOR)
        assert "t0ps3cret" not in str(refused.value)
    admin_of_hlf = config.Actor("hlf-admin", organisation_id=orgs[1])
    with pytest.raises(Forbidden):
        alerts.set_webhook("bf", "https://hooks.example.org/x", admin_of_hlf)
    with pytest.raises(Forbidden):
        alerts.show_webhook("bf", admin_of_hlf)


def test_a_failed_connection_test_alerts_with_its_status_only(
    orgs: tuple[int, int], xledger_sandbox: Any, webhook_receiver: Any
) -> None:
    from integration_hub.adapters.registry import feature_flag

    _, server = xledger_sandbox
    config.set_feature_flag(orgs[0], feature_flag("xledger"), True, config.OPERATOR)
    wrong_token = "wrong-" + secrets.token_hex(12)
    row = configure_xledger("bf", server.url, wrong_token)
    alerts.set_webhook("bf", f"{webhook_receiver.url}/hooks/abc", OPERATOR)

    result, alerted = alerts.check_connection(row, OPERATOR)
    assert result.status == "bad_credentials" and alerted == "delivered"
    (call,) = webhook_receiver.received
    assert call["json"]["event"] == "connection_test.failed"
    assert call["json"]["status"] == "bad_credentials"
    assert wrong_token not in call["body"] and "refused" not in call["body"]
