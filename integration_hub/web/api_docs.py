"""The REST API's reference at ``/api/v1/docs``, rendered here from the app's own OpenAPI
document: no script, no stylesheet or font from a CDN, so it works offline and under the app's
own Content-Security-Policy (``default-src 'self'``, no inline script or style).

FastAPI's Swagger UI loads its JavaScript and CSS from a CDN, which is a blank page without
internet and refused by that policy anyway. Serving Swagger UI's assets locally would need a
new dependency and still ``style-src 'unsafe-inline'`` (Swagger UI 5 sets inline styles), so
the reference is a plain server-rendered page instead; tools read ``/api/v1/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from integration_hub.web.rendering import render

DOCS_PATH = "/api/v1/docs"
OPENAPI_PATH = "/api/v1/openapi.json"
METHODS = ("get", "post", "put", "patch", "delete")


def type_of(schema: dict[str, Any]) -> str:
    """A JSON schema as a short phrase: ``ScheduleIn``, ``list of RunOut``, ``string or null``,
    ``one of: daily, cron``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return "one of: " + ", ".join(str(value) for value in schema["enum"])
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            return " or ".join(type_of(part) for part in schema[combined])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {type_of(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"object of {type_of(extra) if isinstance(extra, dict) else 'any'}"
    return f"{kind} ({schema['format']})" if "format" in schema else str(kind)


def _content_type(content: dict[str, Any]) -> str:
    for media in content.values():
        if "schema" in media:
            return type_of(media["schema"])
    return ""


def operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The operations grouped by their first tag, in the document's order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            body = operation.get("requestBody", {})
            groups.setdefault((operation.get("tags") or ["other"])[0], []).append(
                {
                    "id": operation.get("operationId", f"{method}-{path}"),
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": [
                        {
                            "name": parameter["name"],
                            "where": parameter["in"],
                            "required": parameter.get("required", False),
                            "type": type_of(parameter.get("schema", {})),
                            "description": parameter.get("description", ""),
                        }
                        for parameter in operation.get("parameters", [])
                    ],
                    "body": _content_type(body.get("content", {})),
                    "responses": [
                        {
                            "status": status,
                            "description": answer.get("description", ""),
                            "type": _content_type(answer.get("content", {})),
                        }
                        for status, answer in sorted(operation.get("responses", {}).items())
                    ],
                }
            )
    return [{"tag": tag, "operations": found} for tag, found in groups.items()]


def schemas(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The request and response models with their fields."""
    found = []
    for name, schema in sorted(document.get("components", {}).get("schemas", {}).items()):
        required = set(schema.get("required", []))
        found.append(
            {
                "name": name,
                "description": schema.get("description", ""),
                "fields": [
                    {
                        "name": field,
                        "type": type_of(spec),
                        "required": field in required,
                        "description": spec.get("description", ""),
                    }
                    for field, spec in schema.get("properties", {}).items()
                ],
                "values": type_of(schema) if "enum" in schema else "",
            }
        )
    return found


def install(app: FastAPI) -> None:
    """A plain route, as FastAPI's own docs route is: not an operation of the API."""
    app.add_route(DOCS_PATH, api_docs, methods=["GET"], include_in_schema=False)


def api_docs(request: Request) -> Response:
    document = request.app.openapi()
    info = document.get("info", {})
    types = schemas(document)
    return render(
        request,
        "api_docs.html",
        {
            "title": info.get("title", ""),
            "summary": info.get("summary", ""),
            "version": info.get("version", ""),
            "openapi_url": OPENAPI_PATH,
            "groups": operations(document),
            "schemas": types,
            "schema_names": {schema["name"] for schema in types},
        },
    )
