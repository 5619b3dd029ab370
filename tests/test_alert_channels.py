"""Alert channels: Slack, Microsoft Teams and the hub's JSON over real HTTP to a local receiver,
e-mail through a real (tiny) SMTP server on 127.0.0.1, set up from the web app and the CLI, a
link to the integration's health page, and no repeat of the same unresolved failure; on SQLite
and PostgreSQL."""

from __future__ import annotations

import base64
import secrets
import socketserver
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from factories import configure_xledger, record_run, seed_organisation
from sqlmodel import select
from typer.testing import CliRunner
from webworld import ADMIN_A, OPERATOR, ORG_A, ORG_B

from integration_hub.cli import app as cli_app
from integration_hub.db import hub_session
from integration_hub.models import AuditEntry, Credential, Integration
from integration_hub.services import alerts
from integration_hub.services import configuration as config
from integration_hub.services.errors import Forbidden, InvalidInput
from integration_hub.settings import reset_settings
from integration_hub.tasks import notify
from integration_hub.web import i18n

LOCAL = config.Actor("test")
PUBLIC = "https://hub.example.org"
TOLL_FAILS = "account 7145 does not exist in Xledger; fix the field mapping, then retry"
NO_NUMBER = "volunteer Frivillig uten nummer has no employee number in the volunteer app"


# -- a tiny SMTP server ----------------------------------------------------------------------------
class SmtpSink:
    """An SMTP server on 127.0.0.1 (a free port) that keeps what it is sent. It speaks enough
    of RFC 5321 for smtplib: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT; STARTTLS never (so a
    client that insists on it must refuse to go on)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.logins: list[tuple[str, str]] = []
        self.password: str | None = None  # set: AUTH PLAIN is offered and checked
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 sink ESMTP")
                envelope: dict[str, Any] = {"from": None, "to": []}
                while line := self.rfile.readline():
                    command = line.decode().strip()
                    verb = command.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        if sink.password is not None:
                            self.reply("250-sink")
                            self.reply("250 AUTH PLAIN")
                        else:
                            self.reply("250 sink")
                    elif verb == "AUTH":
                        raw = command.split(" ", 2)[2] if command.count(" ") >= 2 else ""
                        _, user, password = base64.b64decode(raw).decode().split("\0")
                        sink.logins.append((user, password))
                        ok = password == sink.password
                        self.reply("235 ok" if ok else "535 authentication failed")
                    elif verb == "MAIL":
                        envelope["from"] = command.split(":", 1)[1].strip(" <>")
                        self.reply("250 ok")
                    elif verb == "RCPT":
                        envelope["to"].append(command.split(":", 1)[1].strip(" <>"))
                        self.reply("250 ok")
                    elif verb == "DATA":
                        self.reply("354 go ahead")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk
                        sink.messages.append({**envelope, "data": data})
                        envelope = {"from": None, "to": []}
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:  # STARTTLS included: not offered, not done
                        self.reply("502 not implemented")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def __enter__(self) -> SmtpSink:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def mail(self, index: int = -1) -> Any:
        return message_from_bytes(self.messages[index]["data"], policy=policy.default)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def orgs(hub_env: str, vault_key: Path) -> dict[str, int]:
    return {"bf": seed_organisation("bf", []), "hlf": seed_organisation("hlf", [])}


@pytest.fixture
def public_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("INTEGRATIONS_PUBLIC_BASE_URL", PUBLIC + "/")
    reset_settings()
    yield PUBLIC
    reset_settings()


def _email(smtp: SmtpSink, **changes: Any) -> dict[str, Any]:
    return {
        "kind": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": str(smtp.port),
        "smtp_security": "none",
        "sender": "alerts@bf.example.org",
        "recipients": "kasserer@bf.example.org, leder@bf.example.org",
        **changes,
    }


def _audit(action: str) -> list[AuditEntry]:
    with hub_session() as session:
        return list(
            session.exec(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
        )


def _failures_payload(run_id: int, row: Integration, failed: int) -> dict[str, Any]:
    return notify.run_payload(
        {"run_id": run_id, "integration_id": row.id, "status": "partial", "failed": failed},
        organisation="bf",
        type_key="xledger",
        target="Xledger",
        event="export.failures",
    )


# -- the shapes each channel takes -----------------------------------------------------------------
def test_slack_gets_text_and_blocks_naming_the_integration_and_linking_its_health_page(
    orgs: dict[str, int], webhook_receiver: Any, public_url: str
) -> None:
    alerts.configure_channel(
        "bf", {"kind": "slack", "webhook_url": f"{webhook_receiver.url}/hooks/slack"}, LOCAL
    )
    payload = notify.run_payload(
        {"run_id": 7, "status": "partial", "failed": 3, "exported": 2, "trigger": "schedule"},
        organisation="bf",
        type_key="xledger",
        target="Xledger <&> AS",
        event="export.failures",
    )
    assert notify.deliver(orgs["bf"], payload) == "delivered"
    (call,) = webhook_receiver.received
    body = call["json"]
    health = f"{public_url}/orgs/bf/integrations/xledger/health"
    assert body["text"] == (
        f"Xledger &lt;&amp;&gt; AS for bf: 3 record(s) failed in run 7 <{health}|Health page>"
    )
    header, facts, link = body["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "Xledger <&> AS for bf: 3 record(s) failed in run 7",
        },
    }
    assert {"type": "mrkdwn", "text": "*Failed*\n3"} in facts["fields"]
    assert len(facts["fields"]) <= 10  # Slack's limit for a section's fields
    assert link["text"] == {"type": "mrkdwn", "text": f"<{health}|Health page>"}


def test_teams_gets_an_adaptive_card_with_a_button_to_the_health_page(
    orgs: dict[str, int], webhook_receiver: Any, public_url: str
) -> None:
    alerts.configure_channel(
        "bf", {"kind": "teams", "webhook_url": f"{webhook_receiver.url}/hooks/teams"}, LOCAL
    )
    payload = notify.connection_payload(
        organisation="bf",
        type_key="dynamics",
        target="Business Central",
        integration_id=4,
        status="bad_credentials",
    )
    assert notify.deliver(orgs["bf"], payload) == "delivered"
    body = webhook_receiver.received[0]["json"]
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    title, facts = card["body"]
    assert title["text"] == "Business Central for bf: the connection test failed (bad_credentials)"
    assert {"title": "Integration", "value": "Business Central"} in facts["facts"]
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Health page",
            "url": f"{public_url}/orgs/bf/integrations/dynamics/health",
        }
    ]


def test_the_json_webhook_keeps_its_fields_and_adds_a_title_and_the_health_link(
    orgs: dict[str, int], webhook_receiver: Any, public_url: str
) -> None:
    alerts.set_webhook("bf", f"{webhook_receiver.url}/hooks/json", LOCAL)
    payload = notify.run_payload(
        {"run_id": 9, "status": "failed"},
        organisation="bf",
        type_key="xledger",
        target="Xledger",
        event="export.failed",
    )
    assert notify.deliver(orgs["bf"], payload) == "delivered"
    body = webhook_receiver.received[0]["json"]
    assert body["event"] == "export.failed" and body["run_id"] == 9
    assert body["title"] == "Xledger for bf: run 9 failed"
    assert body["health_link"] == f"{public_url}/orgs/bf/integrations/xledger/health"


def test_without_a_public_address_alerts_carry_no_health_link(
    orgs: dict[str, int], webhook_receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTEGRATIONS_PUBLIC_BASE_URL", raising=False)
    reset_settings()
    alerts.configure_channel(
        "bf", {"kind": "teams", "webhook_url": f"{webhook_receiver.url}/hooks/t"}, LOCAL
    )
    payload = _failures_payload(3, Integration(id=1, organisation_id=1, type_key="x"), 1)
    assert payload["health_link"] is None
    assert notify.deliver(orgs["bf"], payload) == "delivered"
    card = webhook_receiver.received[0]["json"]["attachments"][0]["content"]
    assert "actions" not in card
    assert alerts.channel_view("bf", LOCAL)["links_to_health_page"] is False
    monkeypatch.setenv("INTEGRATIONS_PUBLIC_BASE_URL", "javascript:alert(1)")
    reset_settings()
    assert notify.health_link("bf", "xledger") is None  # not an http(s) address: no link


# -- e-mail ----------------------------------------------------------------------------------------
def test_an_email_alert_goes_through_smtp_with_the_password_from_the_vault(
    orgs: dict[str, int], smtp: SmtpSink, public_url: str
) -> None:
    password = "pw-" + secrets.token_hex(8)
    smtp.password = password
    view = alerts.configure_channel(
        "bf", _email(smtp, smtp_username="hub", smtp_password=password), LOCAL
    )
    assert view["kind"] == "email" and view["smtp_password"] == "••••••" + password[-4:]
    with hub_session() as session:
        (stored,) = session.exec(select(Credential)).all()
    assert stored.field == "smtp_password" and password.encode() not in stored.ciphertext

    payload = notify.run_payload(
        {"run_id": 12, "status": "partial", "failed": 2, "exported": 40},
        organisation="bf",
        type_key="xledger",
        target="Xledger",
        event="export.failures",
    )
    assert notify.deliver(orgs["bf"], payload) == "delivered"
    assert smtp.logins == [("hub", password)]
    (sent,) = smtp.messages
    assert sent["from"] == "alerts@bf.example.org"
    assert sent["to"] == ["kasserer@bf.example.org", "leder@bf.example.org"]
    mail = smtp.mail()
    assert mail["Subject"] == "[Integration Hub] Xledger for bf: 2 record(s) failed in run 12"
    assert mail["To"] == "kasserer@bf.example.org, leder@bf.example.org"
    body = mail.get_content()
    assert "Integration: Xledger" in body and "Failed: 2" in body
    assert f"Health page: {public_url}/orgs/bf/integrations/xledger/health" in body
    assert password not in body and password not in repr(_audit("alert.delivered"))

    smtp.password = "changed-" + secrets.token_hex(4)  # the server no longer takes it
    assert alerts.send_test("bf", LOCAL) == (
        "failed: the SMTP server refused the user name or password"
    )


def test_starttls_is_never_skipped_and_plain_smtp_needs_an_allowed_host(
    orgs: dict[str, int], smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts.configure_channel("bf", _email(smtp, smtp_security="starttls"), LOCAL)
    assert alerts.send_test("bf", LOCAL) == "failed: SMTPNotSupportedError"
    assert smtp.messages == []  # a server without STARTTLS gets nothing in the clear

    monkeypatch.setenv("INTEGRATIONS_ALLOWED_HOSTS", "")
    reset_settings()
    try:
        with pytest.raises(InvalidInput) as refused:
            alerts.configure_channel("bf", _email(smtp), LOCAL)
        assert any(
            p.startswith("smtp_security: an SMTP server without") for p in refused.value.problems
        )
        assert any("smtp_host: the SMTP server is refused" in p for p in refused.value.problems)
        # and a channel stored earlier is refused at sending time, by the same guard
        assert alerts.send_test("bf", LOCAL).startswith("failed: the SMTP server's address")
    finally:
        monkeypatch.setenv("INTEGRATIONS_ALLOWED_HOSTS", "127.0.0.1")
        reset_settings()


def test_every_problem_of_an_email_channel_is_reported_at_once_and_nothing_changes(
    orgs: dict[str, int], webhook_receiver: Any
) -> None:
    alerts.set_webhook("bf", f"{webhook_receiver.url}/hooks/keep", LOCAL)
    with pytest.raises(InvalidInput) as refused:
        alerts.configure_channel(
            "bf",
            {
                "kind": "email",
                "smtp_host": "not a host",
                "smtp_port": "99999",
                "sender": "nobody",
                "recipients": "ok@example.org; broken@",
                "smtp_username": "hub",
            },
            LOCAL,
        )
    assert [p.split(":")[0] for p in refused.value.problems] == [
        "smtp_host",
        "smtp_port",
        "sender",
        "recipients",
        "smtp_password",
    ]
    view = alerts.channel_view("bf", LOCAL)
    assert view["kind"] == "webhook" and view["webhook"]  # the webhook is still the channel
    with pytest.raises(InvalidInput, match="not valid"):
        alerts.configure_channel("bf", {"kind": "pigeon"}, LOCAL)


def test_the_smtp_password_goes_only_to_the_server_it_was_entered_for(
    orgs: dict[str, int], smtp: SmtpSink
) -> None:
    smtp.password = "s3cret-" + secrets.token_hex(4)
    values = _email(smtp, smtp_username="hub", smtp_password=smtp.password)
    alerts.configure_channel("bf", values, LOCAL)
    mask = alerts.channel_view("bf", LOCAL)["smtp_password"]
    # Saved again with the mask (as the page posts it back): the password is kept.
    alerts.configure_channel("bf", {**values, "smtp_password": mask}, LOCAL)
    assert alerts.send_test("bf", LOCAL) == "delivered"
    # Another server (here: port) without the password again: refused, nothing changes.
    with pytest.raises(InvalidInput) as refused:
        alerts.configure_channel(
            "bf", {**values, "smtp_port": "2525", "smtp_password": mask}, LOCAL
        )
    assert refused.value.problems == [
        "smtp_password: enter the SMTP password again: it is kept only for the server it was "
        "entered for"
    ]
    assert alerts.send_test("bf", LOCAL) == "delivered"
    # A server changed behind the service's back: the vault refuses the password for it.
    with hub_session() as session:
        row = notify.channel(session, orgs["bf"])
        assert row is not None
        row.settings = {**row.settings, "smtp_port": 2525}
        session.add(row)
    assert alerts.send_test("bf", LOCAL) == "failed: VaultEndpointMismatch"
    assert len(smtp.messages) == 2


def test_switching_kinds_forgets_the_other_secret(
    orgs: dict[str, int], smtp: SmtpSink, webhook_receiver: Any
) -> None:
    alerts.set_webhook("bf", f"{webhook_receiver.url}/hooks/old", LOCAL)
    alerts.configure_channel("bf", _email(smtp), LOCAL)
    with hub_session() as session:
        assert session.exec(select(Credential)).all() == []
    assert alerts.send_test("bf", LOCAL) == "delivered"
    assert webhook_receiver.received == [] and len(smtp.messages) == 1
    with pytest.raises(InvalidInput, match="not valid") as refused:
        alerts.configure_channel("bf", {"kind": "slack"}, LOCAL)
    assert refused.value.problems == ["webhook_url: the webhook URL is required"]
    assert alerts.remove_channel("bf", LOCAL) is True
    assert alerts.channel_view("bf", LOCAL)["configured"] is False
    assert notify.deliver(orgs["bf"], notify.trial_payload("bf")) == "no webhook"


def test_only_the_organisations_own_admins_change_its_channel(orgs: dict[str, int]) -> None:
    admin_of_hlf = config.Actor("hlf-admin", organisation_id=orgs["hlf"])
    operator = config.Actor("ops", role="operator")
    with pytest.raises(Forbidden):
        alerts.configure_channel(
            "bf", {"kind": "slack", "webhook_url": "https://x.example"}, admin_of_hlf
        )
    with pytest.raises(Forbidden):
        alerts.channel_view("bf", admin_of_hlf)
    with pytest.raises(Forbidden):
        alerts.configure_channel(
            "bf", {"kind": "slack", "webhook_url": "https://x.example"}, operator
        )
    assert alerts.channel_view("bf", operator)["configured"] is False  # operators read


# -- not the same alert every night ----------------------------------------------------------------
def test_the_same_unresolved_failure_is_alerted_once_until_it_changes_or_is_resolved(
    orgs: dict[str, int], webhook_receiver: Any
) -> None:
    row = Integration(id=_integration_row(orgs["bf"]), organisation_id=orgs["bf"], type_key="x")
    alerts.configure_channel(
        "bf", {"kind": "slack", "webhook_url": f"{webhook_receiver.url}/hooks/s"}, LOCAL
    )
    stuck = [{"record_id": 301, "reason": TOLL_FAILS}, {"record_id": 304, "reason": NO_NUMBER}]

    def night(failures: list[dict[str, Any]], **fields: Any) -> str:
        run = record_run(row.id or 0, orgs["bf"], failures=failures, **fields)
        return notify.deliver(orgs["bf"], _failures_payload(run, row, len(failures)))

    first = night(stuck)
    assert first == "delivered"
    second = night(list(reversed(stuck)))  # the same failures, in another order
    assert second.startswith("not repeated: the same failure was alerted for run ")
    assert night(stuck) == second  # and the night after
    assert len(webhook_receiver.received) == 1

    changed = [*stuck, {"record_id": 305, "reason": TOLL_FAILS}]
    assert night(changed) == "delivered"  # a new failure: news
    assert night(changed).startswith("not repeated")
    assert night([{"record_id": 301, "reason": "Xledger: The period is closed"}]) == "delivered"
    assert night(stuck) == "delivered"  # back to the earlier failure: it changed again

    record_run(row.id or 0, orgs["bf"], dry_run=True)  # a dry run resolves nothing
    assert night(stuck).startswith("not repeated")
    record_run(row.id or 0, orgs["bf"])  # a run without failures: the failure was resolved
    assert night(stuck) == "delivered"  # it is back: told again
    assert len(webhook_receiver.received) == 5

    repeated = _audit("alert.repeated")
    assert len(repeated) == 4 and all(e.integration_id == row.id for e in repeated)
    signatures = [e.details["signature"] for e in _audit("alert.delivered")]
    assert len(signatures) == 5 and len(set(signatures)) == 3


def test_a_failed_delivery_is_not_counted_as_alerted(
    orgs: dict[str, int], webhook_receiver: Any
) -> None:
    row_id = _integration_row(orgs["bf"])
    row = Integration(id=row_id, organisation_id=orgs["bf"], type_key="xledger")
    alerts.configure_channel(
        "bf", {"kind": "webhook", "webhook_url": f"{webhook_receiver.url}/hooks/j"}, LOCAL
    )
    failures = [{"record_id": 1, "reason": TOLL_FAILS}]
    webhook_receiver.status = 503
    first = record_run(row_id, orgs["bf"], failures=failures)
    assert notify.deliver(orgs["bf"], _failures_payload(first, row, 1)) == "failed: HTTP 503"
    webhook_receiver.status = 200
    second = record_run(row_id, orgs["bf"], failures=failures)
    assert notify.deliver(orgs["bf"], _failures_payload(second, row, 1)) == "delivered"
    third = record_run(row_id, orgs["bf"], failures=failures)
    assert notify.deliver(orgs["bf"], _failures_payload(third, row, 1)) == (
        f"not repeated: the same failure was alerted for run {second}"
    )
    shown = alerts.channel_view("bf", LOCAL)["recent"]
    assert [r["result"] for r in shown][:3] == [
        f"not repeated: the same failure was alerted for run {second}",
        "delivered",
        "failed: HTTP 503",
    ]


def test_two_nights_with_the_same_failed_claims_alert_once_through_the_flow(
    quick_flow_runs: None,
    hub_env: str,
    vault_key: Path,
    xledger_sandbox: Any,
    webhook_receiver: Any,
    public_url: str,
) -> None:
    from integration_hub.flows.export_expense_claims import export_expense_claims

    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    state.add_company(token, employees=[{"code": "1001"}, {"code": "1002"}])
    seed_organisation("testorg", [{"category": "toll"}, {"category": "meals"}])
    row = configure_xledger("testorg", server.url, token, toll_account="7145")
    alerts.configure_channel(
        "testorg", {"kind": "slack", "webhook_url": f"{webhook_receiver.url}/hooks/n"}, LOCAL
    )

    first = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert (first["failed"], first["alert"]) == (1, "delivered")
    second = export_expense_claims(integration_id=row.id, trigger="schedule")
    assert second["failed"] == 1
    assert second["alert"] == (
        f"not repeated: the same failure was alerted for run {first['run_id']}"
    )
    (call,) = webhook_receiver.received
    assert call["json"]["text"] == (
        f"Xledger for testorg: 1 record(s) failed in run {first['run_id']} "
        f"<{public_url}/orgs/testorg/integrations/xledger/health|Health page>"
    )


def _integration_row(organisation_id: int) -> int:
    with hub_session() as session:
        row = Integration(organisation_id=organisation_id, type_key="xledger")
        session.add(row)
        session.flush()
        return row.id or 0


# -- the web page ----------------------------------------------------------------------------------
def test_an_admin_sets_up_slack_from_the_page_and_sends_a_test(
    web: Any, webhook_receiver: Any
) -> None:
    client = web.client(ADMIN_A)
    empty = client.get(f"/orgs/{ORG_A}/alerts")
    assert empty.status_code == 200
    assert "Ingen varslingskanal er satt opp" in empty.text
    url = f"{webhook_receiver.url}/hooks/{secrets.token_hex(12)}"
    saved = client.post(
        f"/orgs/{ORG_A}/alerts",
        data={"csrf_token": web.csrf(client), "kind": "slack", "webhook_url": url},
    )
    assert saved.status_code == 303 and saved.headers["location"] == f"/orgs/{ORG_A}/alerts?saved=1"
    page = client.get(saved.headers["location"])
    assert "Varslingskanalen er lagret." in page.text
    assert "Slack, til webhooken ••••••" + url[-4:] in page.text
    assert url not in page.text and url[-12:] not in page.text
    assert 'value="slack" checked' in page.text.replace('aria-describedby="hint-kind-slack" ', "")

    tested = client.post(f"/orgs/{ORG_A}/alerts/test", data={"csrf_token": web.csrf(client)})
    assert tested.status_code == 200 and "Testvarsel:</strong> Levert" in tested.text
    (call,) = webhook_receiver.received
    assert call["json"]["text"].startswith("Test from Integration Hub for hlf")
    assert "Testvarsel. Levert" in client.get(f"/orgs/{ORG_A}/alerts").text

    # Saved again with the mask posted back: the URL is kept.
    client.post(
        f"/orgs/{ORG_A}/alerts",
        data={"csrf_token": web.csrf(client), "kind": "teams", "webhook_url": "••••••" + url[-4:]},
    )
    assert alerts.channel_view(ORG_A, LOCAL)["kind"] == "teams"
    assert alerts.send_test(ORG_A, LOCAL) == "delivered"
    assert webhook_receiver.received[-1]["path"] == url.split(webhook_receiver.url)[1]


def test_the_page_lists_every_problem_beside_its_field_and_saves_nothing(web: Any) -> None:
    client = web.client(ADMIN_A)
    refused = client.post(
        f"/orgs/{ORG_A}/alerts",
        data={
            "csrf_token": web.csrf(client),
            "kind": "email",
            "smtp_host": "",
            "smtp_port": "25",
            "sender": "x",
            "recipients": "",
        },
    )
    assert refused.status_code == 422
    text = refused.text
    assert "Varslingskanalen ble ikke lagret" in text
    for field, message in (
        ("smtp_host", "SMTP-serveren må fylles ut"),
        ("sender", "avsenderen må være én e-postadresse"),
        ("recipients", "oppgi minst én mottaker"),
    ):
        assert f'href="#field-{field}">{message}' in text
        assert f'id="error-{field}">{message}' in text
    assert 'value="email" checked' in text.replace('aria-describedby="hint-kind-email" ', "")
    assert alerts.channel_view(ORG_A, LOCAL)["configured"] is False


def test_an_operator_reads_the_page_without_forms_and_cannot_post(
    web: Any, webhook_receiver: Any
) -> None:
    alerts.set_webhook(ORG_A, f"{webhook_receiver.url}/hooks/x", LOCAL)
    client = web.client(OPERATOR)
    page = client.get(f"/orgs/{ORG_A}/alerts")
    assert page.status_code == 200
    assert '<form method="post" action="/orgs/hlf/alerts' not in page.text
    assert "Du kan lese varslingsinnstillingene, men ikke endre dem" in page.text
    token = web.csrf(client)
    for path in ("", "/test", "/remove"):
        refused = client.post(f"/orgs/{ORG_A}/alerts{path}", data={"csrf_token": token})
        assert refused.status_code == 403, path
    assert webhook_receiver.received == []
    assert alerts.channel_view(ORG_A, LOCAL)["configured"] is True
    admin_b = web.client("admin@blind.test")
    assert admin_b.get(f"/orgs/{ORG_A}/alerts").status_code == 403
    assert admin_b.get(f"/orgs/{ORG_B}/alerts").status_code == 200


def test_the_dashboard_links_to_the_alerts_page(web: Any) -> None:
    page = web.client(ADMIN_A).get(f"/orgs/{ORG_A}")
    assert f'href="/orgs/{ORG_A}/alerts"' in page.text and ">Varsler<" in page.text


def test_every_text_of_the_alerts_page_has_bokmal() -> None:
    import re

    from integration_hub.web.pages import alerts as page

    template = Path(i18n.__file__).parent / "templates" / "alerts.html"
    texts = set(re.findall(r'_\("([^"]+)"', template.read_text(encoding="utf-8")))
    texts |= set(alerts.KIND_NAMES.values()) | set(alerts.SECURITY_NAMES.values())
    texts |= set(page.KIND_HINTS.values()) | set(page.EVENT_TEXT.values())
    assert len(texts) > 45
    missing = sorted(t for t in texts if t not in i18n.catalogue())
    assert missing == []
    for result in (
        "failed: HTTP 502",
        "not repeated: the same failure was alerted for run 4",
        "failed: the SMTP server refused the user name or password",
        "failed: the SMTP server refused 2 recipient(s)",
    ):
        assert i18n.translate(result, "nb") != result
    tr = lambda text, **kw: i18n.translate(text, "nb", **kw)  # noqa: E731
    assert page.result_text("failed: ConnectError", tr) == "Ikke levert: kanalen kunne ikke nås"


# -- the command line ------------------------------------------------------------------------------
def test_the_cli_sets_up_teams_and_email_from_the_environment(
    orgs: dict[str, int], smtp: SmtpSink, webhook_receiver: Any
) -> None:
    runner = CliRunner()
    url = f"{webhook_receiver.url}/hooks/{secrets.token_hex(12)}"
    teams = runner.invoke(
        cli_app,
        ["alerts", "bf", "--webhook-from-env", "HOOK", "--kind", "teams"],
        env={"HOOK": url},
    )
    assert teams.exit_code == 0, teams.output
    assert "alert teams for bf saved: ••••••" + url[-4:] in teams.output
    assert runner.invoke(cli_app, ["alerts", "bf", "--test"]).exit_code == 0
    assert webhook_receiver.received[0]["json"]["type"] == "message"

    smtp.password = "pw-" + secrets.token_hex(6)
    args = ["alerts", "bf", "--email-to", "a@bf.example.org", "--email-to", "b@bf.example.org"]
    args += ["--email-from", "hub@bf.example.org", "--smtp-host", "127.0.0.1"]
    args += ["--smtp-port", str(smtp.port), "--smtp-security", "none", "--smtp-user", "hub"]
    args += ["--smtp-password-from-env", "SMTP_PW"]
    email = runner.invoke(cli_app, args, env={"SMTP_PW": smtp.password})
    assert email.exit_code == 0, email.output
    assert "alert e-mail for bf saved: 2 recipient(s)" in email.output
    tested = runner.invoke(cli_app, ["alerts", "bf", "--test"])
    assert tested.exit_code == 0 and "test event: delivered" in tested.output
    assert smtp.messages[-1]["to"] == ["a@bf.example.org", "b@bf.example.org"]
    shown = runner.invoke(cli_app, ["alerts", "bf"])
    assert "e-mail from hub@bf.example.org to a@bf.example.org, b@bf.example.org" in shown.output
    assert "set INTEGRATIONS_PUBLIC_BASE_URL" in shown.output
    for result in (teams, email, tested, shown):
        assert url not in result.output and smtp.password not in result.output
    bad = runner.invoke(cli_app, ["alerts", "bf", "--email-to", "nobody", "--smtp-host", "x.org"])
    assert bad.exit_code == 2 and "sender: the sender must be one e-mail address" in bad.output
