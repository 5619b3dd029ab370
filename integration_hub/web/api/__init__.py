"""The REST API under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``).

Routes translate HTTP into service calls and back; the services decide who may do what.
"""

from fastapi import APIRouter

from integration_hub.web.api import integrations, mapping, me, runs, schedule

router = APIRouter(prefix="/api/v1")
for module in (me, integrations, mapping, schedule, runs):
    router.include_router(module.router)
