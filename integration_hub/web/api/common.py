"""What the API's routes share: path parameters with their constraints, the integration a path
names, and the error body every refusal carries (documented in the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path
from pydantic import BaseModel

from integration_hub.adapters.registry import all_types
from integration_hub.models import Integration
from integration_hub.services.api_support import find_integration
from integration_hub.web.security import ApiActor

BASE = "/organisations/{org}/integrations/{type}"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


OrgSlug = Annotated[
    str,
    Path(
        description="The organisation's slug, e.g. `hlf`",
        pattern=SLUG_PATTERN,
        min_length=1,
        max_length=64,
    ),
]
TypeKey = Annotated[
    str,
    Path(
        description="The integration type (an organisation's feature flags decide which it is "
        "offered); the document lists the types this hub knows",
        pattern=SLUG_PATTERN,
        min_length=1,
        max_length=64,
    ),
]
"""Checked by the services against the registry (an unknown type is a 404), and listed as an
enum in the OpenAPI document by :func:`document_types`: the registry is the one list of types."""


def document_types(app: FastAPI) -> None:
    """Make the app's OpenAPI document list the registry's types for every ``{type}`` path
    parameter, read when the document is first asked for (a type registered later is in it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            keys = [adapter_type.key for adapter_type in all_types()]
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        if parameter.get("in") == "path" and parameter.get("name") == "type":
                            parameter["schema"]["enum"] = keys
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


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
    return find_integration(org, type, actor)


CurrentIntegration = Annotated[Integration, Depends(current_integration)]
