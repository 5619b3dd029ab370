"""The admin web app and its REST API: ``create_app()`` for uvicorn, tests and ``serve``.

Pages (``web/pages``) and the API (``web/api``, under ``/api/v1``) only translate HTTP into calls
of the services and back; who may do what is decided there.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from integration_hub.settings import get_settings
from integration_hub.web import errors
from integration_hub.web.limits import BodyLimit
from integration_hub.web.security import SecurityHeaders

STATIC_DIR = Path(__file__).parent / "static"


def create_app() -> FastAPI:
    from integration_hub.services.accounts import check_identity_provider
    from integration_hub.web import api_docs
    from integration_hub.web.api import router as api_router
    from integration_hub.web.api.common import document_types
    from integration_hub.web.pages import routers as page_routers

    check_identity_provider()  # a half-configured identity provider stops startup, with why
    app = FastAPI(
        title="Integration Hub",
        version="1",
        summary="Exports volunteer-app expense claims and activities to Xledger, "
        "Business Central and Bufdir.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # Swagger UI needs a CDN: api_docs.py renders the reference instead
        redoc_url=None,
    )
    # The last added is the outermost: every answer, a refused body included, gets the headers.
    app.add_middleware(BodyLimit, max_bytes=get_settings().web_max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    errors.install(app)
    app.include_router(api_router)
    api_docs.install(app)
    document_types(app)
    for router in page_routers:
        app.include_router(router)
    return app
