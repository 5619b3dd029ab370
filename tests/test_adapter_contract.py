"""The adapter contract: every fact about a type lives on its class or config model, and the
pages, the REST API, the pacing and the wizard read them from the registry; three small
contracts (checking, writing records, submitting reports); choices a target offers are picked
from a list on the credential pages."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from webworld import ADMIN_A, ORG_A

from integration_hub.adapters import registry
from integration_hub.adapters.base import (
    BatchResult,
    ConnectionResult,
    ConnectionStatus,
    IntegrationConfig,
    RateLimit,
    RecordAdapter,
    ReferenceCode,
    ReportAdapter,
    TargetField,
    endpoint_setting,
    secret,
    setting,
)
from integration_hub.adapters.bufdir import BufdirAdapter
from integration_hub.adapters.endpoints import EndpointUrl


# -- config declared once, secret flag per field -------------------------------------------------
def test_a_field_must_say_whether_it_is_secret() -> None:
    with pytest.raises(TypeError, match="declare it with setting"):

        class Undeclared(IntegrationConfig):
            region: str = "eu"

    with pytest.raises(TypeError, match="secret\\(\\) is for SecretStr"):

        class OptionalSecretAsSetting(IntegrationConfig):
            token: SecretStr | None = setting(None, label="Token")

    with pytest.raises(TypeError, match="secret\\(\\) is for SecretStr"):

        class PlainSecret(IntegrationConfig):
            token: str = secret(label="Token")


def test_an_optional_secret_is_a_secret_and_never_a_setting() -> None:
    class Optional(IntegrationConfig):
        region: str = setting("eu", label="Region")
        token: SecretStr | None = secret(None, label="Token")

    assert Optional.secret_fields() == ("token",)
    assert Optional.setting_fields() == ("region",)
    filled = Optional(token=SecretStr("s3cret-value"))
    assert filled.settings() == {"region": "eu"} and filled.secrets() == {"token": "s3cret-value"}
    assert Optional().secrets() == {}
    assert Optional.field_text("region") == ("Region", "")


# -- a fake type, seen everywhere ------------------------------------------------------------
class FakeLedgerConfig(IntegrationConfig):
    base_url: EndpointUrl = endpoint_setting("https://ledger.example.org/api")
    api_key: SecretStr = secret(label="Ledger API key", help="From the ledger's admin screen.")
    region: str = setting("eu", label="Ledger region", help="Where the ledger keeps the books.")


class FakeLedgerAdapter(RecordAdapter):
    key = "fakeledger"
    display_name = "Fake Ledger"
    config_model = FakeLedgerConfig
    rate_limit = RateLimit(3, 1.0)
    exclusion_choices = ("postage",)
    target_fields = (TargetField("account", "Account"),)

    def probe(self, deadline_s: float) -> ConnectionResult:
        return ConnectionResult(ConnectionStatus.OK, "fine")

    def reference_codes(self) -> list[ReferenceCode]:
        return [ReferenceCode("1000", "Cash")]

    def load(self, lines: Any) -> BatchResult:
        return BatchResult()

    def lookup(self, keys: list[str]) -> dict[str, str]:
        return {}


@pytest.fixture
def fake_type() -> Iterator[type[FakeLedgerAdapter]]:
    registry.register(FakeLedgerAdapter)
    try:
        yield FakeLedgerAdapter
    finally:
        registry._TYPES.pop(FakeLedgerAdapter.key, None)


def test_a_new_type_is_everywhere_the_registry_is_read(
    fake_type: type[FakeLedgerAdapter], web: Any
) -> None:
    from integration_hub.flows.pipeline import _pacer
    from integration_hub.services import configuration as config

    config.set_feature_flag(
        web.organisation_ids[ORG_A], registry.feature_flag("fakeledger"), True, config.OPERATOR
    )
    client = web.client(ADMIN_A)
    # The REST API's document lists it as a type.
    document = client.get("/api/v1/openapi.json").json()
    enums = [
        parameter["schema"].get("enum")
        for operations in document["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "type"
    ]
    assert enums and all(enum and "fakeledger" in enum and "xledger" in enum for enum in enums)
    # The wizard offers it, and its credential form shows its own labels and help.
    page = client.get(f"/orgs/{ORG_A}/integrations/fakeledger/setup/credentials")
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    assert "Ledger region" in text and "Where the ledger keeps the books." in text
    assert 'type="password"' in text and 'name="api_key"' in text
    # The API sets it up like any other type; an unknown type is a 404, not a crash.
    headers = {"X-CSRF-Token": web.csrf(client)}
    created = client.post(f"/api/v1/organisations/{ORG_A}/integrations/fakeledger", headers=headers)
    assert created.status_code in (200, 201), created.text
    unknown = client.get(f"/api/v1/organisations/{ORG_A}/integrations/nosuchtype")
    assert unknown.status_code == 404
    # Its exclusion choices and its rate limit are its own.
    row = config.integration(
        config.organisation(ORG_A, config.OPERATOR), "fakeledger", config.OPERATOR
    )
    assert config.exclusion_choices(row) == ["postage"]
    adapter = FakeLedgerAdapter(FakeLedgerConfig(api_key=SecretStr("k")))
    pacer = _pacer(adapter)
    assert pacer.limit == RateLimit(3, 1.0)


def test_the_three_contracts() -> None:
    """Bufdir submits reports: it has no record operations to refuse at runtime."""
    assert issubclass(BufdirAdapter, ReportAdapter)
    assert not issubclass(BufdirAdapter, RecordAdapter)
    for name in ("load", "lookup", "reference_codes"):
        assert not hasattr(BufdirAdapter, name)
    assert BufdirAdapter.runs_on_schedule is False and BufdirAdapter.default_mapping is None


def test_a_report_type_has_no_codes_to_pick(web: Any) -> None:
    from integration_hub.services import configuration as config
    from integration_hub.services import wizard

    admin = config.Actor(ADMIN_A, web.organisation_ids[ORG_A], "admin")
    wizard.start(ORG_A, "bufdir", admin)
    client = web.client(ADMIN_A)
    answer = client.get(f"/api/v1/organisations/{ORG_A}/integrations/bufdir/reference-codes")
    assert answer.status_code == 404
    assert "no codes" in answer.json()["error"] or "ingen koder" in answer.json()["error"]


# -- choosing the company and the journal from lists ------------------------------------------
def test_the_company_and_the_journal_are_picked_from_lists(
    web: Any, dynamics_sandbox: tuple[Any, Any]
) -> None:
    from integration_hub.services import configuration as config
    from integration_hub.services import wizard

    state, server = dynamics_sandbox
    made = state.provision(company_name="Hørselshemmedes Landsforbund")
    admin = config.Actor(ADMIN_A, web.organisation_ids[ORG_A], "admin")
    row = wizard.start(ORG_A, "dynamics", admin)
    client = web.client(ADMIN_A)
    url = f"/orgs/{ORG_A}/integrations/dynamics/credentials"
    # Before credentials, the fields are typed (nothing to ask the target with).
    assert '<select id="field-company_id"' not in client.get(url).text

    settings = {k: v for k, v in made.settings(server.url).items() if v is not None}
    settings.pop("company_id", None)
    settings.pop("journal_id", None)
    config.save_configuration(row, settings, admin)
    page = html.unescape(client.get(url).text)
    assert '<select id="field-company_id"' in page
    assert "Hørselshemmedes Landsforbund" in page
    assert re.search(rf'<option value="{made.company_id}"', page, re.IGNORECASE)
    # No company yet: the journal list says why it cannot be read, and the field stays typed.
    assert '<select id="field-journal_id"' not in page
    assert "no Business Central company is chosen yet" in page

    form = {"csrf_token": web.csrf(client), "company_id": made.company_id, "client_secret": ""}
    saved = client.post(url, data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    page = html.unescape(client.get(url).text)
    assert '<select id="field-journal_id"' in page and "UTLEGG" in page
    assert re.search(rf'<option value="{made.company_id}" selected', page, re.IGNORECASE)


def test_an_unreachable_target_leaves_the_fields_typed_with_why(web: Any) -> None:
    from integration_hub.services import configuration as config
    from integration_hub.services import wizard

    admin = config.Actor(ADMIN_A, web.organisation_ids[ORG_A], "admin")
    row = wizard.start(ORG_A, "dynamics", admin)
    closed = "http://127.0.0.1:9"  # discard: nothing listens
    config.save_configuration(
        row,
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "not-a-real-secret",
            "base_url": closed,
            "token_url": closed,
        },
        admin,
    )
    client = web.client(ADMIN_A)
    page = client.get(f"/orgs/{ORG_A}/integrations/dynamics/credentials")
    assert page.status_code == 200
    assert '<select id="field-company_id"' not in page.text
    assert 'id="field-company_id"' in page.text
    assert "Traceback" not in page.text
