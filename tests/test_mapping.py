"""Mapping documents, the vectorised resolver and the validator, without Prefect or HTTP."""

from __future__ import annotations

import pandas as pd
import pytest
from factories import claims_frame

from integration_hub.adapters.base import ReferenceCode
from integration_hub.adapters.xledger import XledgerAdapter
from integration_hub.mappings.resolver import idempotency_key, map_claims
from integration_hub.mappings.spec import MappingError, load_template, parse_mapping
from integration_hub.mappings.validator import Severity, has_errors, validate_mapping

TEMPLATE = load_template("xledger_expense_claims.yaml")
REQUIRED = {f.name: f.label for f in XledgerAdapter.target_fields if f.required}
CHART = [ReferenceCode(c, c) for c in ("7100", "7140", "7160", "6800", "2910")] + [
    ReferenceCode("1000", "Sum", postable=False, note="a sum account")
]


def _map(claims, mapping=TEMPLATE):  # type: ignore[no-untyped-def]
    return map_claims(
        claims,
        mapping,
        required_fields=REQUIRED,
        text_max_length=255,
        organisation_id=1,
        integration_id=2,
    )


def test_each_claim_becomes_a_balanced_voucher() -> None:
    claims = claims_frame(
        [
            {"claim_id": 1, "category": "mileage", "amount_ore": 43225},
            {"claim_id": 2, "category": "meals", "amount_ore": 15050},
        ]
    )
    lines, failures = _map(claims)
    assert failures.empty
    assert len(lines) == 4
    assert lines.groupby("record_id")["amount_ore"].sum().eq(0).all()
    first = lines[lines["record_id"] == 1].set_index("line_no")
    assert first.loc[1, "account"] == "7100"
    assert first.loc[1, "amount_ore"] == 43225
    assert first.loc[2, "account"] == "2910"
    assert first.loc[2, "counterparty"] == "1001"
    assert first.loc[1, "document_number"] == "UTL-1"
    assert first.loc[1, "text"] == "Kjøregodtgjørelse 2026-01-10: Tog til samling (Kari Nordmann)"
    assert first.loc[1, "idempotency_key"] == idempotency_key(1, 2, "expense_claim", 1, 1)
    assert str(lines["amount_ore"].dtype) == "int64"


def test_idempotency_key_is_deterministic_and_fits_business_central() -> None:
    key = idempotency_key(1, 2, "expense_claim", 3, 4)
    assert key == idempotency_key(1, 2, "expense_claim", 3, 4)
    assert key != idempotency_key(1, 2, "expense_claim", 3, 5)
    assert key != idempotency_key(9, 2, "expense_claim", 3, 4)
    assert len(key) <= 35


def test_missing_values_fail_their_record_with_an_actionable_reason() -> None:
    claims = claims_frame(
        [
            {"claim_id": 1},
            {"claim_id": 2, "employee_number": None, "volunteer_name": "Odd Dahl"},
            {"claim_id": 3, "category": "sauna"},
        ]
    )
    lines, failures = _map(claims)
    assert set(lines["record_id"]) == {1}
    reasons = dict(zip(failures["record_id"], failures["reason"], strict=True))
    assert "Odd Dahl has no employee number" in reasons[2]
    assert "category 'sauna' has no expense account" in reasons[3]


def test_long_text_is_shortened_not_failed() -> None:
    claims = claims_frame([{"claim_id": 1, "description": "x" * 400}])
    lines, failures = map_claims(
        claims,
        TEMPLATE,
        required_fields=REQUIRED,
        text_max_length=60,
        organisation_id=1,
        integration_id=1,
    )
    assert failures.empty
    assert lines["text"].str.len().max() == 60
    assert lines["text"].iloc[0].endswith("…")


def test_parse_mapping_collects_every_problem() -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping(
            {
                "target": "xledger",
                "fields": {
                    "expense_account": {"source": "category", "value_map": "nope"},
                    "text": {"template": "{no_such_field}"},
                },
            }
        )
    assert caught.value.problems == [
        "fields.expense_account: value map 'nope' is not defined",
        "fields.text: unknown claim field 'no_such_field'",
    ]


def test_a_rule_needs_exactly_one_kind() -> None:
    with pytest.raises(MappingError, match="exactly one of source, constant or template"):
        parse_mapping(
            {
                "target": "xledger",
                "fields": {"payable_account": {"constant": "2910", "source": "category"}},
            }
        )


def test_oversized_or_malformed_yaml_is_refused() -> None:
    with pytest.raises(MappingError, match="larger than"):
        parse_mapping("a: " + "x" * 300_000)
    with pytest.raises(MappingError, match="not valid YAML"):
        parse_mapping("fields: [unclosed")


def test_yaml_numbers_become_account_codes() -> None:
    doc = parse_mapping(
        "target: xledger\nfields:\n  payable_account: {constant: 2910}\n"
        "value_maps:\n  m: {mileage: 7100}\n"
    )
    assert doc.fields["payable_account"].constant == "2910"
    assert doc.value_maps["m"] == {"mileage": "7100"}


def _validate(mapping, codes=CHART):  # type: ignore[no-untyped-def]
    return validate_mapping(
        mapping,
        target_key="xledger",
        target_name="Xledger",
        target_fields=XledgerAdapter.target_fields,
        reference_codes=codes,
    )


def test_template_is_clean_against_a_chart_that_has_its_codes() -> None:
    assert _validate(TEMPLATE) == []


def test_unknown_and_unpostable_codes_are_warnings_before_saving() -> None:
    data = TEMPLATE.model_dump(mode="json")
    data["value_maps"]["expense_accounts"]["toll"] = "9999"
    data["fields"]["payable_account"] = {"constant": "1000"}
    problems = _validate(parse_mapping(data))
    assert not has_errors(problems)
    messages = {p.field: p.message for p in problems}
    assert messages["expense_account[toll]"] == "Xledger has no account 9999"
    assert "cannot be posted to" in messages["payable_account"]
    assert all(p.severity is Severity.WARNING for p in problems)


def test_unmapped_categories_and_required_fields_are_reported_together() -> None:
    data = TEMPLATE.model_dump(mode="json")
    del data["value_maps"]["expense_accounts"]["parking"]
    del data["fields"]["posting_date"]
    problems = _validate(parse_mapping(data))
    assert has_errors(problems)
    fields = {p.field for p in problems}
    assert {"posting_date", "expense_account[parking]"} <= fields


def test_unreachable_target_is_a_warning_not_a_silent_pass() -> None:
    problems = _validate(TEMPLATE, codes=None)
    assert [p.severity for p in problems] == [Severity.WARNING]
    assert "could not check" in problems[0].message


def test_balancing_against_an_employee_puts_the_employee_on_the_credit_line() -> None:
    from integration_hub.schemas import gl_lines_schema, validate_lines

    data = TEMPLATE.model_dump(mode="json")
    data["fields"]["payable_account_type"] = {"constant": "employee"}
    del data["fields"]["payable_account"]
    mapping = parse_mapping(data)
    required = {k: v for k, v in REQUIRED.items() if k != "payable_account"}
    lines, failures = map_claims(
        claims_frame([{"claim_id": 1}]),
        mapping,
        required_fields=required,
        text_max_length=255,
        organisation_id=1,
        integration_id=2,
    )
    assert failures.empty
    credit = lines[lines["line_no"] == 2].iloc[0]
    assert (credit["account_type"], credit["account"]) == ("employee", "1001")
    assert credit["counterparty"] is pd.NA
    schema = gl_lines_schema(accounts=["7140"], text_max_length=255, target_name="BC")
    valid, problems = validate_lines(lines, schema, target_name="BC", text_max_length=255)
    assert problems.empty and len(valid) == 2  # employees are not checked against the chart
