"""The dashboard: an organisation's integrations at a glance; operators first pick one."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from integration_hub.services import overview
from integration_hub.services.configuration import list_organisations
from integration_hub.web.rendering import render
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)


@router.get("/orgs")
def organisations(request: Request, signed_in: PageSession) -> Response:
    return render(
        request, "organisations.html", {"organisations": list_organisations(signed_in.actor)}
    )


@router.get("/orgs/{org}")
def dashboard(request: Request, org: str, signed_in: PageSession) -> Response:
    return render(request, "dashboard.html", overview.dashboard(org, signed_in.actor))
