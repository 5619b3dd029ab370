"""The field mapping editor's work, kept out of the web routes: which value maps a person edits
(for Xledger and Business Central: an account per expense category), turning the submitted
choices or an uploaded file into a mapping document, and saving it only once every warning has
been shown and explicitly accepted.

Tenancy and roles are checked by :mod:`integration_hub.services.configuration`, which this
module calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from integration_hub.adapters.base import Adapter, ReferenceCode
from integration_hub.db import hub_session
from integration_hub.mappings.spec import (
    MAX_MAPPING_BYTES,
    MappingDocument,
    MappingError,
    parse_mapping,
)
from integration_hub.mappings.validator import Problem, Severity
from integration_hub.models import Integration, Organisation
from integration_hub.models.app import ClaimCategory
from integration_hub.services import configuration as config
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceError,
    WarningsNotAcknowledged,
)
from integration_hub.tasks.context import latest_mapping

CATEGORY_NAMES: dict[str, str] = {
    ClaimCategory.MILEAGE.value: "Mileage",
    ClaimCategory.TRAVEL.value: "Travel",
    ClaimCategory.MEALS.value: "Meals",
    ClaimCategory.MATERIALS.value: "Materials",
    ClaimCategory.PARKING.value: "Parking",
    ClaimCategory.TOLL.value: "Toll",
}
"""Expense categories as people read them (English source text; the catalogue has bokmål)."""

FORM_PREFIX = "map."
"""Form fields ``map.<value map>.<key>`` carry the chosen value of one value-map entry."""

MAX_VALUE_LENGTH = 100
_FIELD_KEY = re.compile(r"^(?P<field>[^\[\]]+)\[(?P<key>.+)\]$")
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class MapRow:
    key: str
    label: str
    """English source text: the category's name, or the key itself."""
    value: str
    """The chosen value ('' when the map has none for this key)."""
    element_id: str


@dataclass(frozen=True)
class EditableMap:
    """One value map as a table: a row per key (every expense category for a category map)."""

    name: str
    field_labels: tuple[str, ...]
    """The target fields that use this map, as their adapter labels them."""
    by_category: bool
    reference: bool
    """Its values are the target's codes (accounts), offered to pick from."""
    rows: tuple[MapRow, ...]


@dataclass(frozen=True)
class SavedVersion:
    version: int
    created_by: str
    created_at: datetime
    acknowledged_warnings: tuple[str, ...]


@dataclass(frozen=True)
class MappingTarget:
    organisation: Organisation
    integration: Integration
    adapter_type: type[Adapter]


@dataclass
class SaveOutcome:
    """``version`` is set when a version was saved, or when ``unchanged``: the document equals
    the saved version ``version``, so nothing was saved; otherwise the problems say why not."""

    version: int | None = None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    unchanged: bool = False


# -- what is being edited ----------------------------------------------------------------------
def mapping_target(org_slug: str, type_key: str, actor: Actor) -> MappingTarget:
    """The organisation's integration of ``type_key``, when that type maps fields at all."""
    org = config.organisation(org_slug, actor)
    adapter_type = config.integration_type(type_key)
    if adapter_type.default_mapping is None:
        raise NotFound(f"{adapter_type.display_name} maps no fields")
    row = config.integration(org, type_key, actor)
    return MappingTarget(org, row, adapter_type)


def may_change(row: Integration, actor: Actor) -> bool:
    try:
        actor.check_change(row.organisation_id)
    except Forbidden:
        return False
    return True


def saved_version(row: Integration) -> SavedVersion | None:
    """Who saved the current mapping version, and when (None while the template is in use)."""
    with hub_session() as session:
        stored = latest_mapping(session, row.id or 0)
        if stored is None:
            return None
        return SavedVersion(
            stored.version,
            stored.created_by,
            stored.created_at,
            tuple(stored.acknowledged_warnings or ()),
        )


def live_codes(row: Integration, actor: Actor) -> tuple[list[ReferenceCode] | None, str]:
    """The target's real codes, or (None, why not) when it cannot be reached or is not set up."""
    try:
        return config.reference_codes(row, actor), ""
    except (Forbidden, NotFound):
        raise
    except ServiceError as exc:
        return None, str(exc)
    except Exception as exc:  # unreachable, refused credentials, not configured yet, ...
        return None, str(exc) or type(exc).__name__


def element_id(map_name: str, key: str) -> str:
    return f"map-{_UNSAFE_ID.sub('_', map_name)}-{_UNSAFE_ID.sub('_', key)}"


def editable_maps(document: MappingDocument, adapter_type: type[Adapter]) -> list[EditableMap]:
    """Every value map of ``document``, in the order its fields use them."""
    target_fields = {f.name: f for f in adapter_type.target_fields}
    users: dict[str, list[tuple[str, bool, bool]]] = {}
    for name, rule in document.fields.items():
        if rule.value_map:
            target = target_fields.get(name)
            users.setdefault(rule.value_map, []).append(
                (
                    target.label if target else name,
                    rule.source == "category",
                    bool(target and target.reference),
                )
            )
    ordered = list(users) + [name for name in document.value_maps if name not in users]
    maps = []
    for map_name in ordered:
        values = document.value_maps.get(map_name, {})
        used_by = users.get(map_name, [])
        by_category = any(category for _, category, _ in used_by)
        keys = list(values)
        if by_category:
            keys = list(CATEGORY_NAMES) + [k for k in values if k not in CATEGORY_NAMES]
        rows = tuple(
            MapRow(
                key,
                CATEGORY_NAMES.get(key, key) if by_category else key,
                values.get(key, ""),
                element_id(map_name, key),
            )
            for key in keys
        )
        maps.append(
            EditableMap(
                map_name,
                tuple(label for label, _, _ in used_by),
                by_category,
                any(reference for _, _, reference in used_by),
                rows,
            )
        )
    return maps


def problem_element(problem: Problem, document: MappingDocument) -> tuple[str, str] | None:
    """(row label, element id) of the table row a problem is about, when it is about one."""
    found = _FIELD_KEY.match(problem.field)
    if not found or found["field"] not in document.fields:
        return None
    map_name = document.fields[found["field"]].value_map
    if not map_name:
        return None
    key = found["key"]
    return CATEGORY_NAMES.get(key, key), element_id(map_name, key)


def as_yaml(document: MappingDocument) -> str:
    return yaml.safe_dump(
        document.model_dump(mode="json", exclude_none=True),
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )


def as_json(document: MappingDocument) -> str:
    return json.dumps(
        document.model_dump(mode="json", exclude_none=True),
        ensure_ascii=False,
        separators=(",", ":"),
    )


# -- turning what was submitted into a document -------------------------------------------------
def choices_from_form(items: Iterable[tuple[str, Any]]) -> dict[str, dict[str, str]]:
    """``map.<value map>.<key>`` form fields as {value map: {key: value}}."""
    choices: dict[str, dict[str, str]] = {}
    for name, value in items:
        if not name.startswith(FORM_PREFIX) or not isinstance(value, str):
            continue
        map_name, dot, key = name[len(FORM_PREFIX) :].partition(".")
        if not dot or not map_name or not key:
            continue
        choices.setdefault(map_name, {})[key] = value
    return choices


def apply_choices(
    document: MappingDocument,
    choices: dict[str, dict[str, str]],
    adapter_type: type[Adapter],
) -> MappingDocument:
    """``document`` with the chosen value-map entries (a blank choice removes the entry).

    Only the entries the editor shows can be chosen; anything else is refused with every
    problem listed, and nothing else of the document changes.
    """
    problems = []
    value_maps = {name: dict(values) for name, values in document.value_maps.items()}
    shown = {m.name: [row.key for row in m.rows] for m in editable_maps(document, adapter_type)}
    for map_name, entries in choices.items():
        if map_name not in value_maps:
            problems.append(f"the mapping has no value map {map_name!r}")
            continue
        for key, raw in entries.items():
            value = raw.strip()
            if key not in shown.get(map_name, []):
                problems.append(f"value map {map_name!r} has no entry {key!r}")
            elif len(value) > MAX_VALUE_LENGTH:
                problems.append(f"{key}: a code is at most {MAX_VALUE_LENGTH} characters long")
            elif any(not ch.isprintable() for ch in value):
                problems.append(f"{key}: the code contains characters that cannot be used")
            elif value:
                value_maps[map_name][key] = value
            else:
                value_maps[map_name].pop(key, None)
    if problems:
        raise InvalidInput("the chosen values cannot be used", problems)
    for map_name, values in value_maps.items():  # keep the editor's row order
        order = shown.get(map_name, [])
        value_maps[map_name] = {
            key: values[key] for key in sorted(values, key=lambda k: _position(order, k))
        }
    data = document.model_dump(mode="json", exclude_none=True)
    data["value_maps"] = value_maps
    return parse_mapping(data)


def _position(order: list[str], key: str) -> int:
    return order.index(key) if key in order else len(order)


def parse_upload(data: bytes) -> MappingDocument:
    """A mapping file (YAML or JSON): the size is checked before anything is parsed."""
    if len(data) > MAX_MAPPING_BYTES:
        raise InvalidInput(
            "the mapping file cannot be used",
            [f"the file is larger than {MAX_MAPPING_BYTES // 1024} KiB"],
        )
    if not data.strip():
        raise InvalidInput("the mapping file cannot be used", ["the file is empty"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(
            "the mapping file cannot be used", ["the file is not UTF-8 text (YAML or JSON)"]
        ) from None
    return parse_document(text)


def parse_document(text: str) -> MappingDocument:
    """A mapping document from YAML or JSON text; InvalidInput lists every problem."""
    if len(text.encode("utf-8")) > MAX_MAPPING_BYTES:
        raise InvalidInput(
            "the mapping file cannot be used",
            [f"the file is larger than {MAX_MAPPING_BYTES // 1024} KiB"],
        )
    try:
        return parse_mapping(text)
    except MappingError as exc:
        raise InvalidInput("the mapping file cannot be used", list(exc.problems)) from None


# -- checking and saving ------------------------------------------------------------------------
def check(row: Integration, document: MappingDocument, actor: Actor) -> SaveOutcome:
    """Every problem with ``document`` (errors and warnings); nothing is saved."""
    problems = config.check_mapping(row, document, actor)
    return SaveOutcome(
        errors=[p for p in problems if p.severity is Severity.ERROR],
        warnings=[p for p in problems if p.severity is Severity.WARNING],
    )


def save(
    row: Integration,
    document: MappingDocument,
    actor: Actor,
    *,
    accept_warnings: bool = False,
    shown_warnings: Collection[str] = (),
) -> SaveOutcome:
    """Save ``document`` as a new version, unless it has errors or unaccepted warnings.

    Warnings count as accepted only when the person confirmed and every current warning was
    among those shown to them (``shown_warnings``, as ``str(problem)``): a warning that appeared
    since is shown first. A document equal to the saved version saves nothing and asks for no
    confirmation: the outcome says ``unchanged``.
    """
    actor.check_change(row.organisation_id)
    outcome = check(row, document, actor)
    if outcome.errors:
        return outcome
    with hub_session() as session:
        same = config.unchanged_mapping_version(session, row, document)
    if same is not None:
        return SaveOutcome(version=same, warnings=outcome.warnings, unchanged=True)
    unseen = [w for w in outcome.warnings if str(w) not in set(shown_warnings)]
    if outcome.warnings and (not accept_warnings or unseen):
        return outcome
    try:
        saved = config.save_mapping(row, document, actor, accept_warnings=bool(outcome.warnings))
    except (InvalidInput, WarningsNotAcknowledged):  # the target changed in between
        return check(row, document, actor)
    return SaveOutcome(version=saved.version, warnings=outcome.warnings, unchanged=saved.unchanged)
