"""What the API's routes share: path parameters with their constraints, the integration a path
names, and the error body every refusal carries (documented in the OpenAPI document)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Path
from pydantic import BaseModel

from integration_hub.models import Integration
from integration_hub.services.api_support import find_integration
from integration_hub.web.security import ApiActor

BASE = "/organisations/{org}/integrations/{type}"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class IntegrationType(StrEnum):
    """The integration types the hub knows (an organisation's feature flags decide which it is
    offered)."""

    bufdir = "bufdir"
    dynamics = "dynamics"
    xledger = "xledger"


OrgSlug = Annotated[
    str,
    Path(
        description="The organisation's slug, e.g. `hlf`",
        pattern=SLUG_PATTERN,
        min_length=1,
        max_length=64,
    ),
]
TypeKey = Annotated[IntegrationType, Path(description="The integration type")]


class ErrorOut(BaseModel):
    """A refusal: what is wrong, and every problem or warning to fix in one round."""

    error: str
    problems: list[str] | None = None
    warnings: list[str] | None = None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "The body could not be parsed as JSON; nothing was changed",
        401: "Not signed in, or the bearer token is not valid",
        403: "Not allowed (another organisation, a role that may not change things, or a "
        "session request without the X-CSRF-Token header)",
        404: "No such organisation, integration or run",
        409: "The current state refuses the request (e.g. unacknowledged warnings)",
        422: "The request is not valid; nothing was changed",
    }
    return {
        code: {"model": ErrorOut, "description": text}
        for code, text in descriptions.items()
        if code in codes
    }


READ_ERRORS = _errors(400, 401, 403, 404, 422)
CHANGE_ERRORS = _errors(400, 401, 403, 404, 409, 422)


def current_integration(org: OrgSlug, type: TypeKey, actor: ApiActor) -> Integration:
    """The integration ``/organisations/{org}/integrations/{type}`` names, if the caller may
    see it."""
    return find_integration(org, type.value, actor)


CurrentIntegration = Annotated[Integration, Depends(current_integration)]
