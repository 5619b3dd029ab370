"""pandera schemas for what is sent, and the turn from schema failures into per-record reasons.

Validation is lazy (every failure collected), and any failing line fails its whole record: half a
voucher is never sent.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import pandera.pandas as pa

from integration_hub.mappings.resolver import ACCOUNT_TYPES, FAILURE_COLUMNS, empty_failures

ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


def gl_lines_schema(
    *, accounts: Iterable[str], text_max_length: int, target_name: str
) -> pa.DataFrameSchema:
    """Lines ready to post: known accounts, exact non-zero øre, balanced vouchers, dated, short."""
    known = sorted(set(accounts))
    return pa.DataFrameSchema(
        {
            "record_id": pa.Column("int64"),
            "record_version": pa.Column("int64"),
            "idempotency_key": pa.Column(str, pa.Check.str_length(1, 35, name="key_length")),
            "document_number": pa.Column(str, nullable=False),
            "line_no": pa.Column("int64"),
            "account_type": pa.Column(str, pa.Check.isin(list(ACCOUNT_TYPES))),
            "account": pa.Column(str, nullable=False),
            "counterparty": pa.Column(str, nullable=True),
            "dimension": pa.Column(str, nullable=True),
            "amount_ore": pa.Column(
                "int64", pa.Check.ne(0, name="amount_non_zero"), nullable=False
            ),
            "posting_date": pa.Column(
                str, pa.Check.str_matches(ISO_DATE, name="posting_date_iso"), nullable=False
            ),
            "text": pa.Column(
                str, pa.Check.str_length(0, text_max_length, name="text_length"), nullable=False
            ),
        },
        checks=[
            pa.Check(
                # Only G/L accounts are checked against the chart; employees and vendors are
                # the target's to resolve.
                lambda df: df["account"].isin(known) | df["account_type"].ne("gl"),
                name="account_exists",
            ),
            pa.Check(
                lambda df: df.groupby("idempotency_key")["amount_ore"].transform("sum").eq(0),
                name="voucher_balances",
            ),
        ],
        unique=["idempotency_key", "line_no"],
        coerce=False,
        strict=True,
    )


def _reason(
    check: str, column: str | None, value: object, target_name: str, text_max_length: int
) -> str:
    """A reason a person can act on, chosen by the column that failed."""
    if "account_exists" in check:
        return f"account {value} does not exist in {target_name}; fix the field mapping, then retry"
    if "voucher_balances" in check:
        return "the voucher does not balance to 0.00"
    if "unique" in check or "duplicate" in check.lower():
        return "the record appears twice in the batch"
    by_column = {
        "account": f"account {value} does not exist in {target_name}; "
        "fix the field mapping, then retry",
        "amount_ore": "the amount is 0.00; correct the claim in the volunteer app",
        "posting_date": f"posting date {value!r} is not a date (YYYY-MM-DD)",
        "text": f"the line text is longer than {text_max_length} characters",
        "idempotency_key": "the idempotency key is malformed",
    }
    if column in by_column and "null" not in check:
        return by_column[column]
    return f"{(column or 'record').replace('_', ' ')} failed {check} ({value})"


def validate_lines(
    lines: pd.DataFrame, schema: pa.DataFrameSchema, *, target_name: str, text_max_length: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid lines, failures with one reason per record). Dtypes are normalised first."""
    if lines.empty:
        return lines, empty_failures()
    prepared = lines.astype(
        {
            "record_id": "int64",
            "record_version": "int64",
            "line_no": "int64",
            "amount_ore": "int64",
        }
    )
    try:
        schema.validate(prepared, lazy=True)
        return prepared, empty_failures()
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    located = cases[cases["index"].notna()]
    unlocated = cases[cases["index"].isna()]
    if not unlocated.empty:
        # A schema-level failure without row positions (e.g. a missing column) is a bug here,
        # not a problem with any one record: fail loudly.
        raise ValueError(
            "GL lines do not fit the schema: "
            + "; ".join(
                f"{c} {k}" for c, k in zip(unlocated["column"], unlocated["check"], strict=True)
            )
        )
    reasons: dict[int, list[str]] = {}
    positions = located["index"].astype("int64")
    for position, check, column, value in zip(
        positions,
        located["check"].astype(str),
        located["column"],
        located["failure_case"],
        strict=True,
    ):
        record_id = int(prepared.at[position, "record_id"])
        if "account_exists" in check:  # a frame-wide check reports the row, not the value
            value = prepared.at[position, "account"]
        reason = _reason(
            check, column if isinstance(column, str) else None, value, target_name, text_max_length
        )
        bucket = reasons.setdefault(record_id, [])
        if reason not in bucket:
            bucket.append(reason)
    failed_mask = prepared["record_id"].isin(reasons)
    failed = prepared.loc[failed_mask].drop_duplicates("record_id")
    failures = pd.DataFrame(
        {
            "record_id": failed["record_id"].astype("int64"),
            "record_version": failed["record_version"].astype("int64"),
            "reason": pd.Series(
                ["; ".join(reasons[int(r)]) for r in failed["record_id"]],
                index=failed.index,
                dtype="string",
            ),
        }
    )[FAILURE_COLUMNS].reset_index(drop=True)
    return prepared.loc[~failed_mask].reset_index(drop=True), failures
