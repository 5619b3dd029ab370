"""The field mapping editor: real account codes to pick from, warnings shown before saving and
saved only after an explicit confirmation, uploads, tenancy, and the setup wizard's mapping step.
Also the editor's plain service functions (services/mapping_editor.py), without HTTP."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
import yaml
from webworld import ADMIN_A, ADMIN_B, OPERATOR, ORG_A

URL = f"/orgs/{ORG_A}/integrations/xledger/mapping"
WIZARD_URL = f"/orgs/{ORG_A}/integrations/xledger/setup/mapping"
CATEGORIES = ("mileage", "travel", "meals", "materials", "parking", "toll")


# -- helpers -----------------------------------------------------------------------------------
class Page(HTMLParser):
    """The bits of a rendered page the tests look at: the mapping's selects (not the header's
    language choice), inputs, labels, ids and the h1."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.selects: dict[str, dict[str, Any]] = {}
        self.inputs: list[dict[str, str | None]] = []
        self.labels: dict[str, str] = {}
        self.ids: set[str] = set()
        self.h1: list[str] = []
        self._select: str | None = None
        self._option: dict[str, Any] | None = None
        self._label: str | None = None
        self._h1 = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag == "select" and (a.get("name") or "").startswith("map."):
            self._select = a.get("name") or ""
            self.selects[self._select] = {"attrs": a, "options": []}
        elif tag == "option" and self._select is not None:
            self._option = {"value": a.get("value"), "selected": "selected" in a, "text": ""}
            self.selects[self._select]["options"].append(self._option)
        elif tag == "input":
            self.inputs.append(a)
        elif tag == "label":
            self._label = a.get("for") or ""
            self.labels[self._label] = ""
        elif tag == "h1":
            self._h1 = True
            self.h1.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "option":
            self._option = None
        elif tag == "label":
            self._label = None
        elif tag == "h1":
            self._h1 = False

    def handle_data(self, data: str) -> None:
        if self._option is not None:
            self._option["text"] += data
        if self._label is not None:
            self.labels[self._label] += data
        if self._h1:
            self.h1[-1] += data

    def selected(self, name: str) -> str | None:
        chosen = [o["value"] for o in self.selects[name]["options"] if o["selected"]]
        return chosen[0] if chosen else None

    def option_text(self, name: str, value: str) -> str:
        return next(o["text"] for o in self.selects[name]["options"] if o["value"] == value)

    def values(self, name: str) -> list[str]:
        return [i.get("value") or "" for i in self.inputs if i.get("name") == name]


def configure(web: Any, slug: str = ORG_A, *, base_url: str | None = None, **company: Any) -> Any:
    """An Xledger integration for ``slug`` pointed at a fresh sandbox company (no mapping yet)."""
    from integration_hub.services import configuration as config

    token = web.xledger_company(slug, **company)
    who = config.Actor("test")
    row = config.integration(config.organisation(slug), "xledger", who, create=True)
    config.save_configuration(
        row, {"base_url": base_url or f"{web.sandbox_url}/graphql", "api_token": token}, who
    )
    return row


def stored_versions(row: Any) -> list[Any]:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import FieldMapping

    with hub_session() as session:
        found = session.exec(
            select(FieldMapping).where(FieldMapping.integration_id == row.id)
        ).all()
        return sorted(
            ((m.version, m.document, list(m.acknowledged_warnings), m.created_by) for m in found),
            key=lambda m: m[0],
        )


def choices(**overrides: str) -> dict[str, str]:
    """The template's expense accounts as form fields, with ``overrides`` per category."""
    accounts = {
        "mileage": "7100",
        "travel": "7140",
        "meals": "7160",
        "materials": "6800",
        "parking": "7140",
        "toll": "7140",
    }
    accounts.update(overrides)
    return {f"map.expense_accounts.{k}": v for k, v in accounts.items()}


def template_document() -> dict[str, Any]:
    from integration_hub.mappings.spec import load_template

    return load_template("xledger_expense_claims.yaml").model_dump(mode="json", exclude_none=True)


def account(code: str, text: str, posting: bool = True) -> dict[str, Any]:
    return {"dbId": 90000 + len(code) * 1000 + int(code), "code": code, "description": text,
            "posting": posting}  # fmt: skip


# -- the editor shows the target's real accounts -----------------------------------------------
def test_each_category_offers_the_targets_real_accounts_with_the_current_one_chosen(
    web: Any,
) -> None:
    from integration_hub.sandbox.xledger import default_accounts

    configure(web, accounts=[*default_accounts(), account("7199", "Frivillige utlegg")])
    client = web.client(ADMIN_A)
    response = client.get(URL)
    assert response.status_code == 200
    page = Page(response.text)
    assert page.h1 == ["Feltkobling for Xledger"]
    assert set(page.selects) == {f"map.expense_accounts.{c}" for c in CATEGORIES}
    mileage = "map.expense_accounts.mileage"
    offered = [o["value"] for o in page.selects[mileage]["options"]]
    assert "7199" in offered and "7100" in offered and "2910" in offered
    assert "19" not in offered  # a group heading cannot be posted to
    assert page.option_text(mileage, "7199") == "7199 – Frivillige utlegg"
    assert page.selected(mileage) == "7100"
    assert page.selected("map.expense_accounts.materials") == "6800"
    # Every select is labelled by its category (in bokmål) through <label for>.
    select_id = page.selects[mileage]["attrs"]["id"]
    assert page.labels[select_id] == "Kjøregodtgjørelse"
    assert page.labels[page.selects["map.expense_accounts.toll"]["attrs"]["id"]] == "Bompenger"
    assert '<th scope="row">' in response.text and "<caption>" in response.text
    assert "Utgiftskonto (debet) for hver utgiftskategori" in response.text
    assert "Ingen kobling er lagret ennå" in response.text
    # The YAML for engineers, and no inline style or script (the CSP forbids them).
    assert "<summary>Vis YAML</summary>" in response.text
    assert "expense_accounts:" in response.text and "value_map: expense_accounts" in response.text
    assert "style=" not in response.text and "<script>" not in response.text
    assert f'href="{URL}" aria-current="page"' in response.text
    assert page.ids >= {f"map-expense_accounts-{c}" for c in CATEGORIES}


def test_a_saved_code_the_target_lacks_is_still_offered_and_marked(web: Any) -> None:
    from integration_hub.services import configuration as config

    row = configure(web)
    document = template_document()
    document["value_maps"]["expense_accounts"]["parking"] = "4321"
    config.save_mapping(row, document, config.Actor("someone@hlf.test"), accept_warnings=True)
    response = web.client(ADMIN_A).get(URL)
    page = Page(response.text)
    parking = "map.expense_accounts.parking"
    assert page.selected(parking) == "4321"
    assert page.option_text(parking, "4321").strip() == "4321 (finnes ikke i Xledger)"
    assert "Versjon 1, lagret av someone@hlf.test" in response.text


def test_an_unreachable_target_falls_back_to_typing_the_codes(web: Any) -> None:
    configure(web, base_url="http://127.0.0.1:9/graphql")
    response = web.client(ADMIN_A).get(URL)
    assert response.status_code == 200
    page = Page(response.text)
    assert page.selects == {}
    assert page.values("map.expense_accounts.toll") == ["7140"]
    assert "Kunne ikke hente kontoene fra Xledger" in response.text
    toll = next(i for i in page.inputs if i.get("name") == "map.expense_accounts.toll")
    assert page.labels[toll["id"] or ""] == "Bompenger"


# -- warnings need an explicit confirmation ----------------------------------------------------
def test_a_code_the_target_lacks_is_warned_about_and_nothing_is_saved(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    form = {"csrf_token": web.csrf(client), "action": "save", **choices(toll="9999")}
    response = client.post(URL, data=form)
    assert response.status_code == 409
    assert stored_versions(row) == []
    assert 'class="warning-summary" role="alert"' in response.text
    assert "Sjekk før du lagrer" in response.text
    assert "Xledger har ingen konto 9999" in response.text
    page = Page(response.text)
    confirm = next(i for i in page.inputs if i.get("name") == "accept_warnings")
    assert "required" in confirm and confirm["type"] == "checkbox"
    assert page.labels[confirm["id"] or ""] == "Jeg har lest advarslene og vil lagre likevel"
    assert "Lagre likevel" in response.text
    # What the person chose is kept, the unknown code marked.
    toll = "map.expense_accounts.toll"
    assert page.selected(toll) == "9999"
    assert "(finnes ikke i Xledger)" in page.option_text(toll, "9999")
    assert page.selected("map.expense_accounts.meals") == "7160"
    # Posting again without ticking the box saves nothing either.
    again = {**form, "shown_warning": page.values("shown_warning")}
    assert client.post(URL, data=again).status_code == 409
    assert stored_versions(row) == []


def test_confirming_the_warnings_saves_a_version_that_records_them(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    form = {"csrf_token": web.csrf(client), "action": "save", **choices(toll="9999")}
    shown = Page(client.post(URL, data=form).text).values("shown_warning")
    assert shown == ["warning: expense_account[toll]: Xledger has no account 9999"]
    response = client.post(URL, data={**form, "accept_warnings": "yes", "shown_warning": shown})
    assert response.status_code == 303
    assert response.headers["location"] == f"{URL}?saved=1"
    [(version, document, acknowledged, who)] = stored_versions(row)
    assert version == 1 and who == ADMIN_A
    assert document["value_maps"]["expense_accounts"]["toll"] == "9999"
    assert document["fields"] == template_document()["fields"]
    assert acknowledged == shown
    page = client.get(response.headers["location"])
    assert "Lagret koblingen som versjon 1" in page.text
    assert f"Versjon 1, lagret av {ADMIN_A}" in page.text


def test_a_confirmation_covers_only_the_warnings_that_were_shown(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    form = {"csrf_token": web.csrf(client), "action": "save", **choices(toll="9999")}
    shown = Page(client.post(URL, data=form).text).values("shown_warning")
    # The person changes another category to a missing code and confirms the old warnings.
    changed = {**form, **choices(toll="9999", meals="8888")}
    response = client.post(URL, data={**changed, "accept_warnings": "yes", "shown_warning": shown})
    assert response.status_code == 409
    assert "Xledger har ingen konto 8888" in response.text
    assert stored_versions(row) == []


def test_a_clean_mapping_saves_at_once(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    form = {"csrf_token": web.csrf(client), "action": "save", **choices(toll="7130")}
    response = client.post(URL, data=form)
    assert response.status_code == 303
    [(version, document, acknowledged, _)] = stored_versions(row)
    assert (version, acknowledged) == (1, [])
    assert document["value_maps"]["expense_accounts"]["toll"] == "7130"


def test_check_lists_every_problem_and_saves_nothing(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    form = {"csrf_token": web.csrf(client), "action": "check", **choices(toll="9999", meals="")}
    response = client.post(URL, data=form)
    assert response.status_code == 200
    assert "Xledger har ingen konto 9999" in response.text
    assert "ingen konto for kategorien &#39;meals&#39;" in response.text
    assert "accept_warnings" not in response.text  # checking never asks to confirm
    assert stored_versions(row) == []
    clean = client.post(URL, data={**form, **choices()})
    assert "Fant ingen problemer. Ingenting er lagret ennå." in clean.text
    # Errors and warnings together: both are listed.
    document = template_document()
    del document["fields"]["posting_date"]
    both = client.post(
        URL, data={**form, "uploaded_document": json.dumps(document), **choices(toll="9999")}
    )
    assert both.status_code == 200
    assert 'class="error-summary" role="alert"' in both.text
    assert "Posting date er ikke koblet" in both.text
    assert 'class="warning-summary" role="alert"' in both.text
    assert "Xledger har ingen konto 9999" in both.text
    assert stored_versions(row) == []


def test_english_shows_the_validators_own_words(web: Any) -> None:
    configure(web)
    client = web.client(ADMIN_A)
    csrf = web.csrf(client)
    chosen = client.post("/language", data={"csrf_token": csrf, "language": "en", "next": URL})
    assert chosen.status_code == 303
    form = {"csrf_token": csrf, "action": "save", **choices(toll="9999")}
    response = client.post(URL, data=form)
    assert "Check before saving" in response.text
    assert "Xledger has no account 9999" in response.text
    assert "I have read the warnings and want to save anyway" in response.text


# -- errors and bad input refuse, and change nothing --------------------------------------------
def test_choices_outside_the_editor_are_refused(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    form = {
        "csrf_token": web.csrf(client),
        "action": "save",
        **choices(),
        "map.no_such_map.x": "1",
        "map.expense_accounts.bribes": "7100",
    }
    response = client.post(URL, data=form)
    assert response.status_code == 422
    assert "koblingen har ingen verditabell &#39;no_such_map&#39;" in response.text
    assert (
        "verditabellen &#39;expense_accounts&#39; har ingen rad &#39;bribes&#39;" in response.text
    )
    assert stored_versions(row) == []


def test_a_mapping_with_errors_is_refused_with_every_problem(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    document = template_document()
    document["target"] = "dynamics"
    del document["fields"]["payable_account"]
    upload = {"mapping_file": ("mapping.json", json.dumps(document).encode(), "application/json")}
    response = client.post(
        URL, data={"csrf_token": web.csrf(client), "action": "upload"}, files=upload
    )
    assert response.status_code == 422
    assert 'class="error-summary" role="alert"' in response.text
    assert "denne koblingen er for &#39;dynamics&#39;" in response.text
    assert "Payable account (credit) er ikke koblet" in response.text
    assert "Ingenting ble lagret." in response.text
    assert stored_versions(row) == []


def test_an_oversized_upload_is_refused_before_it_is_parsed(web: Any) -> None:
    from integration_hub.mappings.spec import MAX_MAPPING_BYTES

    row = configure(web)
    client = web.client(ADMIN_A)
    huge = b"\xff" * (MAX_MAPPING_BYTES + 1)  # not even text: the size is what is reported
    response = client.post(
        URL,
        data={"csrf_token": web.csrf(client), "action": "upload"},
        files={"mapping_file": ("big.yaml", huge, "application/yaml")},
    )
    assert response.status_code == 422
    assert "Filen ble ikke brukt, og ingenting ble lagret" in response.text
    assert "filen er større enn 256 KiB" in response.text
    assert "UTF-8" not in response.text
    assert stored_versions(row) == []


def test_a_malformed_upload_lists_every_problem_and_changes_nothing(web: Any) -> None:
    from integration_hub.services import configuration as config

    row = configure(web)
    config.save_mapping(row, template_document(), config.Actor("test"))
    client = web.client(ADMIN_A)
    csrf = web.csrf(client)
    broken = client.post(
        URL,
        data={"csrf_token": csrf, "action": "upload"},
        files={"mapping_file": ("m.yaml", b"target: xledger\nfields: [unclosed", "text/yaml")},
    )
    assert broken.status_code == 422
    assert "ikke gyldig YAML" in broken.text
    document = template_document()
    document["fields"]["text"] = {"source": "shoe_size"}
    document["fields"]["expense_account"]["value_map"] = "nowhere"
    wrong = client.post(
        URL,
        data={"csrf_token": csrf, "action": "upload"},
        files={"mapping_file": ("m.yaml", yaml.safe_dump(document).encode(), "text/yaml")},
    )
    assert wrong.status_code == 422
    assert "fields.text: ukjent felt i utlegget: &#39;shoe_size&#39;" in wrong.text
    assert "fields.expense_account: verditabellen &#39;nowhere&#39; finnes ikke" in wrong.text
    no_file = client.post(
        URL,
        data={"csrf_token": csrf, "action": "upload"},
        files={"mapping_file": ("", b"", "application/octet-stream")},
    )
    assert no_file.status_code == 422
    assert [v for v, *_ in stored_versions(row)] == [1]


def test_a_valid_upload_saves(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    document = template_document()
    document["value_maps"]["expense_accounts"]["toll"] = "7130"
    response = client.post(
        URL,
        data={"csrf_token": web.csrf(client), "action": "upload"},
        files={"mapping_file": ("m.json", json.dumps(document).encode(), "application/json")},
    )
    assert response.status_code == 303
    [(version, saved, acknowledged, who)] = stored_versions(row)
    assert (version, acknowledged, who) == (1, [], ADMIN_A)
    assert saved == document


def test_an_upload_with_warnings_is_saved_as_uploaded_only_after_confirmation(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    csrf = web.csrf(client)
    document = template_document()
    del document["fields"]["dimension"]  # something the tables cannot express
    document["value_maps"]["expense_accounts"]["toll"] = "9999"
    response = client.post(
        URL,
        data={"csrf_token": csrf, "action": "upload"},
        files={"mapping_file": ("m.yaml", yaml.safe_dump(document).encode(), "text/yaml")},
    )
    assert response.status_code == 409
    assert "Xledger har ingen konto 9999" in response.text
    assert stored_versions(row) == []
    page = Page(response.text)
    [uploaded] = page.values("uploaded_document")
    form = {
        "csrf_token": csrf,
        "action": "save",
        "uploaded_document": uploaded,
        "shown_warning": page.values("shown_warning"),
        "accept_warnings": "yes",
        **{name: page.selected(name) or "" for name in page.selects},
    }
    assert client.post(URL, data=form).status_code == 303
    [(_, saved, acknowledged, _)] = stored_versions(row)
    assert "dimension" not in saved["fields"]
    assert saved["value_maps"]["expense_accounts"]["toll"] == "9999"
    assert acknowledged == ["warning: expense_account[toll]: Xledger has no account 9999"]


# -- who may see and change it --------------------------------------------------------------------
def test_another_organisations_admin_can_neither_see_nor_change_it(web: Any) -> None:
    row = configure(web)
    other = web.client(ADMIN_B)
    for url in (URL, WIZARD_URL):
        assert other.get(url).status_code in (403, 404)
        form = {"csrf_token": web.csrf(other), "action": "save", **choices()}
        assert other.post(url, data=form).status_code in (403, 404)
        upload = other.post(
            url,
            data={"csrf_token": web.csrf(other), "action": "upload"},
            files={"mapping_file": ("m.json", json.dumps(template_document()).encode())},
        )
        assert upload.status_code in (403, 404)
    assert stored_versions(row) == []


def test_an_operator_reads_but_cannot_save(web: Any) -> None:
    row = configure(web)
    operator = web.client(OPERATOR)
    page = operator.get(URL)
    assert page.status_code == 200
    assert "Du kan lese denne koblingen, men ikke endre den." in page.text
    assert Page(page.text).selects == {} and "7100 – Bilgodtgjørelse" in page.text
    form = {"csrf_token": web.csrf(operator), "action": "save", **choices(toll="7130")}
    assert operator.post(URL, data=form).status_code == 403
    assert operator.post(WIZARD_URL, data=form).status_code == 403
    assert stored_versions(row) == []


def test_types_without_a_mapping_and_unknown_types_are_not_found(web: Any) -> None:
    from integration_hub.services import configuration as config

    org = config.organisation(ORG_A)
    config.integration(org, "bufdir", config.Actor("test"), create=True)
    client = web.client(ADMIN_A)
    assert client.get(f"/orgs/{ORG_A}/integrations/bufdir/mapping").status_code == 404
    assert client.get(f"/orgs/{ORG_A}/integrations/bufdir/setup/mapping").status_code == 404
    assert client.get(f"/orgs/{ORG_A}/integrations/nonsense/mapping").status_code == 404
    form = {"csrf_token": web.csrf(client), "action": "save"}
    assert client.post(f"/orgs/{ORG_A}/integrations/bufdir/mapping", data=form).status_code == 404


def test_a_post_without_the_csrf_token_is_refused(web: Any) -> None:
    row = configure(web)
    client = web.client(ADMIN_A)
    response = client.post(URL, data={"action": "save", **choices(toll="7130")})
    assert response.status_code == 403
    assert stored_versions(row) == []


# -- the setup wizard's mapping step -------------------------------------------------------------
def test_the_wizard_step_saves_and_moves_the_wizard_on_to_the_schedule(web: Any) -> None:
    from integration_hub.db import hub_session
    from integration_hub.models import Integration
    from integration_hub.services import accounts, wizard

    row = configure(web)
    client = web.client(ADMIN_A)
    actor = accounts.session_for(client.cookies.get("ih_session")).actor  # type: ignore[union-attr]
    wizard.complete(row, "credentials", actor)
    wizard.complete(row, "test", actor)
    with hub_session() as session:
        assert session.get(Integration, row.id).setup_step == "mapping"  # type: ignore[union-attr]
    page = client.get(WIZARD_URL)
    assert page.status_code == 200
    assert [" ".join(h.split()) for h in Page(page.text).h1] == ["Feltkobling – Sett opp Xledger"]
    assert "Trinn 3 av 6" in page.text and 'aria-current="step"' in page.text
    assert "Lagre og gå videre" in page.text
    assert f'action="{WIZARD_URL}"' in page.text
    form = {"csrf_token": web.csrf(client), "action": "save", **choices(toll="9999")}
    warned = client.post(WIZARD_URL, data=form)
    assert warned.status_code == 409  # the wizard shows warnings before saving too
    shown = Page(warned.text).values("shown_warning")
    done = client.post(WIZARD_URL, data={**form, "accept_warnings": "yes", "shown_warning": shown})
    assert done.status_code == 303
    assert done.headers["location"] == f"/orgs/{ORG_A}/integrations/xledger/setup/schedule"
    with hub_session() as session:
        assert session.get(Integration, row.id).setup_step == "schedule"  # type: ignore[union-attr]
    assert [v for v, *_ in stored_versions(row)] == [1]


def test_the_wizard_step_cannot_be_used_before_it_is_reached(web: Any) -> None:
    from integration_hub.db import hub_session
    from integration_hub.models import Integration
    from integration_hub.services import accounts, wizard

    client = web.client(ADMIN_A)
    actor = accounts.session_for(client.cookies.get("ih_session")).actor  # type: ignore[union-attr]
    row = wizard.start(ORG_A, "xledger", actor)
    assert row.setup_step == "credentials"
    credentials = f"/orgs/{ORG_A}/integrations/xledger/setup/credentials"
    shown = client.get(WIZARD_URL)
    assert (shown.status_code, shown.headers["location"]) == (303, credentials)
    form = {"csrf_token": web.csrf(client), "action": "save", **choices()}
    posted = client.post(WIZARD_URL, data=form)
    assert (posted.status_code, posted.headers["location"]) == (303, credentials)
    with hub_session() as session:
        assert session.get(Integration, row.id).setup_step == "credentials"  # type: ignore[union-attr]
    assert stored_versions(row) == []


# -- the service functions, without HTTP ---------------------------------------------------------
def test_apply_choices_changes_only_the_chosen_entries() -> None:
    from integration_hub.adapters.registry import get_type
    from integration_hub.mappings.spec import parse_mapping
    from integration_hub.services import mapping_editor as editor

    original = parse_mapping(template_document())
    changed = editor.apply_choices(
        original,
        {"expense_accounts": {"toll": " 7130 ", "parking": ""}},
        get_type("xledger"),
    )
    accounts = changed.value_maps["expense_accounts"]
    assert accounts["toll"] == "7130" and "parking" not in accounts
    assert accounts["mileage"] == "7100"
    assert changed.fields == original.fields
    assert original.value_maps["expense_accounts"]["parking"] == "7140"  # not modified


def test_apply_choices_refuses_everything_unknown_at_once() -> None:
    from integration_hub.adapters.registry import get_type
    from integration_hub.mappings.spec import parse_mapping
    from integration_hub.services import mapping_editor as editor
    from integration_hub.services.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        editor.apply_choices(
            parse_mapping(template_document()),
            {
                "nowhere": {"a": "1"},
                "expense_accounts": {"gifts": "7100", "toll": "7" * 101, "meals": "71\x0060"},
            },
            get_type("xledger"),
        )
    assert len(refused.value.problems) == 4


def test_choices_from_form_reads_only_the_map_fields() -> None:
    from integration_hub.services import mapping_editor as editor

    form = [("csrf_token", "x"), ("map.expense_accounts.toll", "7140"), ("map.bad", "1"),
            ("map.expense_accounts.meals", "7160")]  # fmt: skip
    assert editor.choices_from_form(form) == {"expense_accounts": {"toll": "7140", "meals": "7160"}}


def test_parse_upload_checks_the_size_first_then_the_text() -> None:
    from integration_hub.mappings.spec import MAX_MAPPING_BYTES
    from integration_hub.services import mapping_editor as editor
    from integration_hub.services.errors import InvalidInput

    with pytest.raises(InvalidInput) as big:
        editor.parse_upload(b"\xff" * (MAX_MAPPING_BYTES + 1))
    assert big.value.problems == ["the file is larger than 256 KiB"]
    with pytest.raises(InvalidInput) as binary:
        editor.parse_upload(b"\xff\xfe")
    assert binary.value.problems == ["the file is not UTF-8 text (YAML or JSON)"]
    with pytest.raises(InvalidInput):
        editor.parse_upload(b"  \n")
    document = editor.parse_upload(json.dumps(template_document()).encode())
    assert document.value_maps["expense_accounts"]["toll"] == "7140"


def test_every_text_of_the_editor_has_bokmal() -> None:
    import re
    from pathlib import Path

    from integration_hub.services.mapping_editor import CATEGORY_NAMES
    from integration_hub.web import i18n

    template = Path(i18n.__file__).parent / "templates" / "mapping.html"
    texts = set(re.findall(r'_\("([^"]+)"', template.read_text(encoding="utf-8")))
    texts |= set(CATEGORY_NAMES.values()) | {"Saved mapping version {version}"}
    assert len(texts) > 30
    missing = sorted(t for t in texts if t not in i18n.catalogue())
    assert missing == []
