"""What a run needs to know about its integration, read once from the hub database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlmodel import select

from integration_hub.adapters.registry import get_type
from integration_hub.db import hub_session
from integration_hub.mappings.spec import MappingDocument, parse_mapping
from integration_hub.models import Exclusion, FieldMapping, IgnoredRecord, Integration


class IntegrationNotFound(LookupError):
    pass


class ExportNotReady(RuntimeError):
    """The integration cannot export yet (no mapping, not configured); says what to do."""


def ignored_reason(ignored_by: str, note: str) -> str:
    """Why an ignored record is skipped, as its outcome says: who decided it, and their note."""
    return f"ignored by {ignored_by}: {note}"


@dataclass(frozen=True)
class RunContext:
    integration: Integration
    mapping: MappingDocument | None
    mapping_version: int | None
    excluded: frozenset[str]
    ignored: Mapping[tuple[int, int], str] = field(default_factory=dict, hash=False)
    """(record id, version) -> why it is not exported: record versions an admin ignored."""

    @property
    def integration_id(self) -> int:
        return self.integration.id or 0

    @property
    def organisation_id(self) -> int:
        return self.integration.organisation_id

    @property
    def type_key(self) -> str:
        return self.integration.type_key

    @property
    def display_name(self) -> str:
        return get_type(self.type_key).display_name


def latest_mapping(session, integration_id: int) -> FieldMapping | None:  # type: ignore[no-untyped-def]
    return session.exec(
        select(FieldMapping)
        .where(FieldMapping.integration_id == integration_id)
        .order_by(FieldMapping.version.desc())  # type: ignore[attr-defined]
        .limit(1)
    ).first()


def load_context(integration_id: int) -> RunContext:
    with hub_session() as session:
        integration = session.get(Integration, integration_id)
        if integration is None:
            raise IntegrationNotFound(f"integration {integration_id} does not exist")
        stored = latest_mapping(session, integration_id)
        excluded = frozenset(
            session.exec(
                select(Exclusion.category).where(Exclusion.integration_id == integration_id)
            ).all()
        )
        ignored = {
            (row.record_id, row.record_version): ignored_reason(row.ignored_by, row.note)
            for row in session.exec(
                select(IgnoredRecord).where(
                    IgnoredRecord.integration_id == integration_id,
                    IgnoredRecord.record_type == get_type(integration.type_key).record_type,
                )
            ).all()
        }
    mapping = parse_mapping(stored.document) if stored else None
    return RunContext(integration, mapping, stored.version if stored else None, excluded, ignored)
