"""Vectorised mapping: a DataFrame of claims in, balanced GL lines out, failures with reasons.

Plain functions over whole batches (never a row loop per claim): a nightly export can hold
100,000 claims.
"""

from __future__ import annotations

import hashlib
import string

import pandas as pd

from integration_hub.mappings.spec import MappingDocument

LINE_COLUMNS = [
    "record_id",
    "record_version",
    "idempotency_key",
    "document_number",
    "line_no",
    "account_type",
    "account",
    "counterparty",
    "dimension",
    "amount_ore",
    "posting_date",
    "text",
]
FAILURE_COLUMNS = ["record_id", "record_version", "reason"]
ACCOUNT_TYPES = ("gl", "employee", "vendor")
"""What a line's ``account`` names: a G/L account, or an employee or vendor (Business Central
balances a claim against the employee; Xledger against a G/L account with a subledger)."""

MISSING_SOURCE_HINTS = {
    "employee_number": "volunteer {volunteer_name} has no employee number in the volunteer app; "
    "add it there, then retry",
    "supplier_number": "volunteer {volunteer_name} has no supplier number in the volunteer app; "
    "add it there, then retry",
    "approved_date": "the claim has no approval date",
    "chapter_code": "the claim's chapter has no code",
}


def idempotency_key(
    organisation_id: int, integration_id: int, record_type: str, record_id: int, version: int
) -> str:
    """Deterministic, 32 characters: fits Business Central's 35-character external number."""
    material = f"{organisation_id}|{integration_id}|{record_type}|{record_id}|{version}"
    return "IH" + hashlib.sha256(material.encode()).hexdigest()[:30]


def idempotency_keys(
    organisation_id: int, integration_id: int, record_type: str, records: pd.DataFrame
) -> pd.Series:
    keys = [
        idempotency_key(organisation_id, integration_id, record_type, int(rid), int(ver))
        for rid, ver in zip(records["record_id"], records["record_version"], strict=True)
    ]
    return pd.Series(keys, index=records.index, dtype="string")


def empty_failures() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="int64" if c != "reason" else "string") for c in FAILURE_COLUMNS}
    )


def _as_text(series: pd.Series) -> pd.Series:
    text = series.astype("string")
    return text.mask(text.str.strip().eq(""))


def _render_template(template: str, claims: pd.DataFrame) -> pd.Series:
    result = pd.Series("", index=claims.index, dtype="string")
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        if literal:
            result = result + literal
        if name:
            result = result + claims[name].astype("string").fillna("")
    return result


def resolve_fields(claims: pd.DataFrame, mapping: MappingDocument) -> pd.DataFrame:
    """One column per target field, ``<NA>`` where the claim gives no value."""
    resolved = pd.DataFrame(index=claims.index)
    for name, rule in mapping.fields.items():
        if rule.constant is not None:
            column = pd.Series(rule.constant, index=claims.index, dtype="string")
        elif rule.template is not None:
            column = _render_template(rule.template, claims)
        else:
            column = _as_text(claims[rule.source])
            if rule.value_map:
                column = column.map(mapping.value_maps[rule.value_map]).astype("string")
        resolved[name] = column
    return resolved


def _missing_reason(
    mapping: MappingDocument, field: str, label: str, claims: pd.DataFrame, rows: pd.Index
) -> pd.Series:
    rule = mapping.fields[field]
    subset = claims.loc[rows]
    if rule.value_map and rule.source:
        values = subset[rule.source].astype("string").fillna("(empty)")
        return (
            f"{rule.source.replace('_', ' ')} '" + values + f"' has no {label.lower()} in the "
            f"field mapping (value map '{rule.value_map}'); add it, then retry"
        )
    if rule.source in MISSING_SOURCE_HINTS:
        hint = MISSING_SOURCE_HINTS[rule.source]
        return _render_template(hint, subset)
    return pd.Series(f"no value for {label}", index=rows, dtype="string")


def map_claims(
    claims: pd.DataFrame,
    mapping: MappingDocument,
    *,
    required_fields: dict[str, str],
    text_max_length: int,
    organisation_id: int,
    integration_id: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Claims -> (lines, failures). ``required_fields`` maps field name to a label for reasons."""
    if claims.empty:
        return pd.DataFrame(columns=LINE_COLUMNS), empty_failures()
    resolved = resolve_fields(claims, mapping)
    reasons = pd.Series(pd.NA, index=claims.index, dtype="string")
    for field, label in required_fields.items():
        if field not in resolved:
            continue
        missing = resolved.index[resolved[field].isna() & reasons.isna()]
        if len(missing):
            reasons.loc[missing] = _missing_reason(mapping, field, label, claims, missing)
    failed = reasons.notna()
    failures = pd.DataFrame(
        {
            "record_id": claims.loc[failed, "claim_id"].astype("int64"),
            "record_version": claims.loc[failed, "version"].astype("int64"),
            "reason": reasons[failed],
        }
    ).reset_index(drop=True)
    ok = claims.loc[~failed]
    fields = resolved.loc[~failed]
    if ok.empty:
        return pd.DataFrame(columns=LINE_COLUMNS), failures
    record = pd.DataFrame(
        {
            "record_id": ok["claim_id"].astype("int64"),
            "record_version": ok["version"].astype("int64"),
        }
    )
    record["idempotency_key"] = idempotency_keys(
        organisation_id, integration_id, mapping.record_type, record
    )
    text = fields["text"] if "text" in fields else pd.Series("", index=ok.index, dtype="string")
    too_long = text.str.len() > text_max_length
    text = text.where(~too_long, text.str.slice(0, text_max_length - 1) + "…")
    common = {
        "record_id": record["record_id"],
        "record_version": record["record_version"],
        "idempotency_key": record["idempotency_key"],
        "document_number": fields.get("document_number", record["idempotency_key"]),
        "posting_date": fields["posting_date"],
        "text": text,
    }
    amount = ok["amount_ore"].astype("int64")
    no_value = pd.Series(pd.NA, index=ok.index, dtype="string")
    debit = pd.DataFrame(
        {
            **common,
            "line_no": 1,
            "account_type": "gl",
            "account": fields["expense_account"],
            "counterparty": no_value,
            "dimension": fields.get("dimension", no_value),
            "amount_ore": amount,
        }
    )
    credit_type = fields.get("payable_account_type", pd.Series("gl", index=ok.index)).astype(
        "string"
    )
    on_ledger = credit_type.eq("gl")
    counterparty = fields.get("counterparty", no_value)
    credit = pd.DataFrame(
        {
            **common,
            "line_no": 2,
            "account_type": credit_type,
            # Against an employee or vendor, the counterparty *is* the account.
            "account": fields.get("payable_account", no_value).where(on_ledger, counterparty),
            "counterparty": counterparty.where(on_ledger, no_value),
            "dimension": no_value,
            "amount_ore": -amount,
        }
    )
    lines = (
        pd.concat([debit, credit])
        .sort_values(["record_id", "line_no"], kind="stable")
        .reset_index(drop=True)[LINE_COLUMNS]
    )
    lines["line_no"] = lines["line_no"].astype("int64")
    return lines, failures
