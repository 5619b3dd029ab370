"""The REST API under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``)."""

from fastapi import APIRouter

from integration_hub.web.api import me

router = APIRouter(prefix="/api/v1")
router.include_router(me.router)
