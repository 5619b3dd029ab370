"""pandera validation of GL lines turned into one actionable reason per record."""

from __future__ import annotations

import pandas as pd
from factories import claims_frame

from integration_hub.adapters.xledger import XledgerAdapter
from integration_hub.mappings.resolver import map_claims
from integration_hub.mappings.spec import load_template
from integration_hub.schemas import gl_lines_schema, validate_lines

TEMPLATE = load_template("xledger_expense_claims.yaml")
REQUIRED = {f.name: f.label for f in XledgerAdapter.target_fields if f.required}
SCHEMA = gl_lines_schema(
    accounts=["7100", "7140", "7160", "6800", "2910"], text_max_length=255, target_name="Xledger"
)


def _lines(rows):  # type: ignore[no-untyped-def]
    lines, failures = map_claims(
        claims_frame(rows),
        TEMPLATE,
        required_fields=REQUIRED,
        text_max_length=255,
        organisation_id=1,
        integration_id=1,
    )
    assert failures.empty
    return lines


def _check(lines):  # type: ignore[no-untyped-def]
    return validate_lines(lines, SCHEMA, target_name="Xledger", text_max_length=255)


def test_valid_lines_pass_untouched() -> None:
    lines = _lines([{"claim_id": 1}, {"claim_id": 2, "category": "meals"}])
    valid, failures = _check(lines)
    assert failures.empty
    assert len(valid) == 4


def test_unknown_account_fails_only_its_record_with_a_reason() -> None:
    lines = _lines([{"claim_id": 1}, {"claim_id": 2, "category": "toll"}])
    lines.loc[lines["record_id"] == 2, "account"] = lines.loc[
        lines["record_id"] == 2, "account"
    ].replace({"7140": "7145"})
    valid, failures = _check(lines)
    assert set(valid["record_id"]) == {1}
    assert failures.to_dict("records") == [
        {
            "record_id": 2,
            "record_version": 1,
            "reason": "account 7145 does not exist in Xledger; fix the field mapping, then retry",
        }
    ]


def test_zero_amount_unbalanced_voucher_bad_date_and_long_text_each_have_reasons() -> None:
    lines = _lines([{"claim_id": i} for i in range(1, 6)])
    lines.loc[lines["record_id"] == 1, "amount_ore"] = 0
    lines.loc[(lines["record_id"] == 2) & (lines["line_no"] == 2), "amount_ore"] = -9999
    lines.loc[lines["record_id"] == 3, "posting_date"] = "12.01.2026"
    lines.loc[lines["record_id"] == 4, "text"] = "x" * 300
    valid, failures = _check(lines)
    assert set(valid["record_id"]) == {5}
    reasons = dict(zip(failures["record_id"], failures["reason"], strict=True))
    assert reasons[1] == "the amount is 0.00; correct the claim in the volunteer app"
    assert reasons[2] == "the voucher does not balance to 0.00"
    assert reasons[3] == "posting date '12.01.2026' is not a date (YYYY-MM-DD)"
    assert reasons[4] == "the line text is longer than 255 characters"


def test_duplicate_records_in_a_batch_fail() -> None:
    lines = _lines([{"claim_id": 1}])
    doubled = pd.concat([lines, lines], ignore_index=True)
    valid, failures = _check(doubled)
    assert valid.empty
    assert "appears twice" in failures["reason"].iloc[0]
