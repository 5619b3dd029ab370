"""The field mapping editor: the target's codes, the saved mapping, checking and saving it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from integration_hub.mappings.validator import Problem, has_errors, warnings_of
from integration_hub.services import api_support
from integration_hub.web.api.common import BASE, CHANGE_ERRORS, READ_ERRORS, CurrentIntegration
from integration_hub.web.api.models import (
    MappingCheckOut,
    MappingIn,
    MappingOut,
    MappingSavedOut,
    ProblemOut,
    ReferenceCodeOut,
)
from integration_hub.web.security import ApiActor

router = APIRouter(tags=["mapping"])


def _problems(problems: list[Problem]) -> list[ProblemOut]:
    return [
        ProblemOut(severity=p.severity.value, field=p.field, message=p.message) for p in problems
    ]


@router.get(
    f"{BASE}/reference-codes",
    response_model=list[ReferenceCodeOut],
    responses=CHANGE_ERRORS,
    summary="The target's codes (e.g. Xledger's accounts) to map to",
)
def reference_codes(row: CurrentIntegration, actor: ApiActor) -> list[ReferenceCodeOut]:
    return [
        ReferenceCodeOut(code=c.code, name=c.name, postable=c.postable, note=c.note)
        for c in api_support.reference_codes(row, actor)
    ]


@router.get(
    f"{BASE}/mapping",
    response_model=MappingOut,
    responses=READ_ERRORS,
    summary="The saved mapping (or the type's template, version null)",
)
def get_mapping(row: CurrentIntegration, actor: ApiActor) -> MappingOut:
    version, document = api_support.mapping_view(row, actor)
    return MappingOut(version=version, document=document)


@router.post(
    f"{BASE}/mapping/check",
    response_model=MappingCheckOut,
    responses=READ_ERRORS,
    summary="Check a mapping document against the target's real codes without saving it",
)
def check_mapping(
    row: CurrentIntegration,
    actor: ApiActor,
    document: dict[str, Any] = Body(description="The mapping document"),
) -> MappingCheckOut:
    problems = api_support.check_mapping(row, document, actor)
    return MappingCheckOut(
        problems=_problems(problems), errors=has_errors(problems), warnings=warnings_of(problems)
    )


@router.put(
    f"{BASE}/mapping",
    response_model=MappingSavedOut,
    responses=CHANGE_ERRORS,
    summary="Save a new mapping version (warnings need accept_warnings; errors refuse)",
)
def put_mapping(row: CurrentIntegration, body: MappingIn, actor: ApiActor) -> MappingSavedOut:
    saved = api_support.save_mapping(
        row, body.document, actor, accept_warnings=body.accept_warnings
    )
    return MappingSavedOut(
        version=saved.version, problems=_problems(saved.problems), unchanged=saved.unchanged
    )
