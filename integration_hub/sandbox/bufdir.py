"""A STAND-IN for a Bufdir reporting API: Bufdir publishes none (reports go through its portal).

It plays an Altinn-3-style instance API so the hub's API client has something real to talk to
over HTTP until Bufdir offers an endpoint:

- ``POST /maskinporten/token`` (form: client_id, client_secret, scope) -> bearer token
- ``GET  /{org}/{app}/api/v1/applicationmetadata``
- ``POST /{org}/{app}/instances`` (``{"instanceOwner": {"organisationNumber": ...}}``)
- ``POST /{org}/{app}/instances/{party}/{guid}/data?dataType=...`` (raw body)
- ``PUT  /{org}/{app}/instances/{party}/{guid}/process/next`` (submit)
- ``GET  /{org}/{app}/instances/{party}/{guid}``

Errors are ProblemDetails (``{"type", "title", "status", "detail"}``). Fault switches (counters
for the next N API requests): ``fail_5xx``, ``throttle_429`` (with ``retry_after``).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ALLOWED_DATA_TYPES = ("aktivitetsrapport", "sammendrag")


@dataclass
class BufdirSandboxState:
    clients: dict[str, str] = field(default_factory=dict)  # client id -> secret
    tokens: set[str] = field(default_factory=set)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, dict[str, bytes]] = field(default_factory=dict)
    fail_5xx: int = 0
    throttle_429: int = 0
    retry_after: float = 0.0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_client(self, client_id: str, secret: str) -> None:
        with self.lock:
            self.clients[client_id] = secret

    def set_faults(
        self, *, fail_5xx: int = 0, throttle_429: int = 0, retry_after: float = 0.0
    ) -> None:
        with self.lock:
            self.fail_5xx, self.throttle_429, self.retry_after = (
                fail_5xx,
                throttle_429,
                retry_after,
            )

    def _fault(self) -> JSONResponse | None:
        with self.lock:
            self.requests += 1
            if self.fail_5xx > 0:
                self.fail_5xx -= 1
                return _problem(503, "Service Unavailable", "the sandbox failed on purpose")
            if self.throttle_429 > 0:
                self.throttle_429 -= 1
                response = _problem(429, "Too Many Requests", "slow down")
                response.headers["Retry-After"] = str(self.retry_after)
                return response
        return None


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


def create_bufdir_app(state: BufdirSandboxState) -> Starlette:
    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and header[7:] in state.tokens

    def guard(request: Request) -> JSONResponse | None:
        fault = state._fault()
        if fault is not None:
            return fault
        if not authorised(request):
            return _problem(401, "Unauthorized", "missing or unknown bearer token")
        return None

    def instance_of(request: Request) -> dict[str, Any] | None:
        key = f"{request.path_params['party']}/{request.path_params['guid']}"
        return state.instances.get(key)

    async def token(request: Request) -> JSONResponse:
        fault = state._fault()
        if fault is not None:
            return fault
        form = dict(parse_qsl((await request.body()).decode("utf-8")))
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if not client_id or state.clients.get(client_id) != secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        value = uuid.uuid4().hex
        with state.lock:
            state.tokens.add(value)
        return JSONResponse(
            {"access_token": value, "token_type": "Bearer", "expires_in": 120, "scope": "x"}
        )

    async def metadata(request: Request) -> JSONResponse:
        if (refused := guard(request)) is not None:
            return refused
        app_id = f"{request.path_params['org']}/{request.path_params['app']}"
        return JSONResponse(
            {
                "id": app_id,
                "dataTypes": [{"id": t} for t in ALLOWED_DATA_TYPES],
                "note": "sandbox stand-in: Bufdir publishes no API",
            }
        )

    async def create_instance(request: Request) -> JSONResponse:
        if (refused := guard(request)) is not None:
            return refused
        body = await request.json()
        number = str((body.get("instanceOwner") or {}).get("organisationNumber") or "")
        if not (len(number) == 9 and number.isdigit()):
            return _problem(400, "Bad Request", "instanceOwner.organisationNumber must be 9 digits")
        party = str(500000 + int(number) % 100000)
        instance_id = f"{party}/{uuid.uuid4()}"
        instance = {
            "id": instance_id,
            "instanceOwner": {"partyId": party, "organisationNumber": number},
            "appId": f"{request.path_params['org']}/{request.path_params['app']}",
            "process": {"currentTask": {"elementId": "Task_1"}, "ended": None},
            "data": [],
        }
        with state.lock:
            state.instances[instance_id] = instance
            state.data[instance_id] = {}
        return JSONResponse(instance, status_code=201)

    async def upload(request: Request) -> JSONResponse:
        if (refused := guard(request)) is not None:
            return refused
        instance = instance_of(request)
        if instance is None:
            return _problem(404, "Not Found", "no such instance")
        if instance["process"]["ended"]:
            return _problem(409, "Conflict", "the instance is already submitted")
        data_type = request.query_params.get("dataType", "")
        if data_type not in ALLOWED_DATA_TYPES:
            return _problem(400, "Bad Request", f"unknown dataType {data_type!r}")
        content = await request.body()
        element = {
            "id": str(uuid.uuid4()),
            "dataType": data_type,
            "contentType": request.headers.get("content-type", ""),
            "size": len(content),
        }
        with state.lock:
            state.data[instance["id"]][data_type] = content
            instance["data"] = [d for d in instance["data"] if d["dataType"] != data_type]
            instance["data"].append(element)
        return JSONResponse(element, status_code=201)

    async def process_next(request: Request) -> JSONResponse:
        if (refused := guard(request)) is not None:
            return refused
        instance = instance_of(request)
        if instance is None:
            return _problem(404, "Not Found", "no such instance")
        if "aktivitetsrapport" not in {d["dataType"] for d in instance["data"]}:
            return _problem(409, "Conflict", "upload the aktivitetsrapport before submitting")
        with state.lock:
            instance["process"] = {"currentTask": None, "ended": "2026-01-01T00:00:00Z"}
        return JSONResponse(instance)

    async def get_instance(request: Request) -> JSONResponse:
        if (refused := guard(request)) is not None:
            return refused
        instance = instance_of(request)
        if instance is None:
            return _problem(404, "Not Found", "no such instance")
        return JSONResponse(instance)

    base = "/{org}/{app}"
    one = base + "/instances/{party}/{guid}"
    return Starlette(
        routes=[
            Route("/maskinporten/token", token, methods=["POST"]),
            Route(base + "/api/v1/applicationmetadata", metadata, methods=["GET"]),
            Route(base + "/instances", create_instance, methods=["POST"]),
            Route(one + "/data", upload, methods=["POST"]),
            Route(one + "/process/next", process_next, methods=["PUT"]),
            Route(one, get_instance, methods=["GET"]),
        ]
    )
