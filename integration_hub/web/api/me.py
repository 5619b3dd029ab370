"""Who the caller is, and which organisations they may see."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from integration_hub.services.configuration import list_organisations
from integration_hub.web.security import ApiActor

router = APIRouter(tags=["me"])


class OrganisationOut(BaseModel):
    slug: str
    name: str


class MeOut(BaseModel):
    name: str
    role: str
    organisations: list[OrganisationOut]


@router.get("/me", response_model=MeOut)
def me(actor: ApiActor) -> MeOut:
    return MeOut(
        name=actor.name,
        role=actor.role,
        organisations=[
            OrganisationOut(slug=o.slug, name=o.name) for o in list_organisations(actor)
        ],
    )
