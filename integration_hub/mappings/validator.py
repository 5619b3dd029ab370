"""Checks a mapping against the target's live codes, returning every problem at once.

Errors make a mapping unusable; warnings (e.g. a code the target lacks, or an expense mapped to
an income or balance sheet account) are shown before saving and need an explicit
acknowledgement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from integration_hub.adapters.base import AccountKind, ReferenceCode, TargetField
from integration_hub.mappings.spec import MappingDocument
from integration_hub.models.app import ClaimCategory


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


EXPECTED_KINDS: dict[str, AccountKind] = {
    "expense_account": AccountKind.EXPENSE,
    "payable_account": AccountKind.LIABILITY,
}
"""The kind of account each side of an expense claim's voucher belongs on: the expense (debit)
in the income statement's costs, what the organisation owes the volunteer (credit) among the
liabilities. An account of another kind books the claim as income, or moves it between balance
sheet accounts, and nothing reaches the costs. Checked only where the target states the kind."""

KIND_WORDS: dict[AccountKind, str] = {
    AccountKind.ASSET: "an asset account",
    AccountKind.LIABILITY: "a liability account",
    AccountKind.EQUITY: "an equity account",
    AccountKind.INCOME: "an income account",
    AccountKind.EXPENSE: "an expense account",
}
"""Each kind in a sentence (English source text; each message's whole shape is translated)."""


@dataclass(frozen=True)
class Problem:
    severity: Severity
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.field}: {self.message}"


def validate_mapping(
    mapping: MappingDocument,
    *,
    target_key: str,
    target_name: str,
    target_fields: Iterable[TargetField],
    reference_codes: list[ReferenceCode] | None,
    reference_label: str = "account",
    reference_error: str | None = None,
) -> list[Problem]:
    """Every problem with ``mapping`` for this target; ``reference_codes`` None = unchecked."""
    fields = {f.name: f for f in target_fields}
    problems: list[Problem] = []
    if mapping.target != target_key:
        problems.append(
            Problem(Severity.ERROR, "target", f"this mapping is for {mapping.target!r}")
        )
    for name in mapping.fields:
        if name not in fields:
            problems.append(Problem(Severity.ERROR, name, f"{target_name} has no field {name!r}"))
    for field in fields.values():
        if field.required and field.name not in mapping.fields:
            problems.append(Problem(Severity.ERROR, field.name, f"{field.label} is not mapped"))

    for field in fields.values():
        rule = mapping.fields.get(field.name)
        if rule is None or not rule.value_map or rule.source != "category":
            continue
        mapped = mapping.value_maps.get(rule.value_map, {})
        for category in ClaimCategory:
            if category.value not in mapped:
                problems.append(
                    Problem(
                        Severity.WARNING,
                        f"{field.name}[{category.value}]",
                        f"no {reference_label} for category {category.value!r}: "
                        f"{category.value} claims will fail until one is added",
                    )
                )

    if reference_codes is None:
        if any(f.reference for f in fields.values()):
            why = f" ({reference_error})" if reference_error else ""
            problems.append(
                Problem(
                    Severity.WARNING,
                    "*",
                    f"could not check {reference_label} codes against {target_name}{why}",
                )
            )
        return problems

    known = {code.code: code for code in reference_codes}
    for field in fields.values():
        rule = mapping.fields.get(field.name)
        if rule is None or not field.reference:
            continue
        if rule.constant is not None:
            uses = {f"{field.name}": rule.constant}
        elif rule.value_map:
            uses = {
                f"{field.name}[{value}]": code
                for value, code in mapping.value_maps.get(rule.value_map, {}).items()
            }
        else:
            continue
        for where, code in uses.items():
            reference = known.get(code)
            if reference is None:
                problems.append(
                    Problem(
                        Severity.WARNING, where, f"{target_name} has no {reference_label} {code}"
                    )
                )
                continue
            if not reference.postable:
                note = f" ({reference.note})" if reference.note else ""
                problems.append(
                    Problem(
                        Severity.WARNING,
                        where,
                        f"{target_name} {reference_label} {code} cannot be posted to{note}",
                    )
                )
            expected = EXPECTED_KINDS.get(field.name)
            if expected and reference.kind and reference.kind != expected:
                actual = KIND_WORDS[AccountKind(reference.kind)]
                problems.append(
                    Problem(
                        Severity.WARNING,
                        where,
                        f"{target_name} {reference_label} {code} is {actual}, "
                        f"not {KIND_WORDS[expected]}",
                    )
                )
    return problems


def has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.severity is Severity.ERROR for p in problems)


def warnings_of(problems: Iterable[Problem]) -> list[str]:
    return [str(p) for p in problems if p.severity is Severity.WARNING]
