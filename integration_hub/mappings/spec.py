"""The mapping document: which claim field (or constant, or template) fills each target field.

Stored as JSON in ``hub_field_mappings`` with a version, edited as YAML. Parsing collects every
problem at once so an admin fixes a file in one round.
"""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from integration_hub.untrusted import DocumentRefused, load_yaml, read_text_file

MAX_MAPPING_BYTES = 256 * 1024

SOURCE_FIELDS: dict[str, str] = {
    "claim_id": "The claim's id in the volunteer app",
    "category": "Expense category (mileage, travel, meals, materials, parking, toll)",
    "category_label": "The category in words (Kjøregodtgjørelse, Reise, …)",
    "description": "The volunteer's description",
    "expense_date": "The day the expense was incurred",
    "approved_date": "The day the claim was approved",
    "volunteer_name": "The volunteer's name",
    "employee_number": "The volunteer's employee number",
    "supplier_number": "The volunteer's supplier number",
    "chapter_code": "The local chapter's code",
    "chapter_name": "The local chapter's name",
    "distance_km": "Kilometres driven (mileage)",
}


class MappingError(ValueError):
    """A mapping document that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class FieldRule(BaseModel):
    """Exactly one of ``source``, ``constant`` or ``template``; ``value_map`` translates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = None
    constant: str | None = None
    template: str | None = None
    value_map: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FieldRule:
        kinds = [k for k in ("source", "constant", "template") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of source, constant or template")
        if self.value_map and not self.source:
            raise ValueError("value_map needs a source field")
        return self

    def template_fields(self) -> list[str]:
        if self.template is None:
            return []
        return [name for _, name, _, _ in string.Formatter().parse(self.template) if name]

    def source_fields(self) -> list[str]:
        return [self.source] if self.source else self.template_fields()


class MappingDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str
    record_type: str = "expense_claim"
    fields: dict[str, FieldRule]
    value_maps: dict[str, dict[str, str]] = {}

    def value_map_for(self, field: str) -> dict[str, str]:
        rule = self.fields[field]
        return self.value_maps.get(rule.value_map or "", {})


def parse_mapping(data: Any) -> MappingDocument:
    """Parse and check a mapping (dict or YAML text); raises :class:`MappingError` with all
    problems found."""
    if isinstance(data, bytes | str):
        try:  # no anchors or aliases: an alias bomb would expand while the rules are checked
            data = load_yaml(data, max_bytes=MAX_MAPPING_BYTES, what="the mapping")
        except DocumentRefused as exc:
            raise MappingError([str(exc)]) from None
    if not isinstance(data, dict):
        raise MappingError(["a mapping is a YAML mapping with target, fields and value_maps"])
    # YAML reads 2910 as an int; account codes are text.
    data = _stringify_codes(data)
    try:
        document = MappingDocument.model_validate(data)
    except ValidationError as exc:
        raise MappingError(
            [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        ) from None
    problems = []
    for name, rule in document.fields.items():
        if rule.value_map and rule.value_map not in document.value_maps:
            problems.append(f"fields.{name}: value map {rule.value_map!r} is not defined")
        for source in rule.source_fields():
            if source not in SOURCE_FIELDS:
                problems.append(f"fields.{name}: unknown claim field {source!r}")
    if problems:
        raise MappingError(problems)
    return document


def _stringify_codes(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    fields = data.get("fields")
    if isinstance(fields, dict):
        data["fields"] = {
            name: {k: (str(v) if k == "constant" and v is not None else v) for k, v in rule.items()}
            if isinstance(rule, dict)
            else rule
            for name, rule in fields.items()
        }
    maps = data.get("value_maps")
    if isinstance(maps, dict):
        data["value_maps"] = {
            name: {str(k): str(v) for k, v in values.items()}
            if isinstance(values, dict)
            else values
            for name, values in maps.items()
        }
    return data


def load_template(file_name: str) -> MappingDocument:
    text = resources.files("integration_hub.mappings").joinpath(file_name).read_text("utf-8")
    return parse_mapping(text)


def load_mapping_file(path: Path) -> MappingDocument:
    """A mapping file named on the command line or in a setup file (read size-bounded)."""
    try:
        text = read_text_file(path, max_bytes=MAX_MAPPING_BYTES)
    except DocumentRefused as exc:
        raise MappingError([str(exc)]) from None
    return parse_mapping(text)
