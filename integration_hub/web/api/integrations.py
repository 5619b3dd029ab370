"""Organisations and their integrations: the dashboard, setting one up, its credentials, its
connection test, the companies and journals to choose from (Business Central) and its status."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response, status
from pydantic import BaseModel, Field

from integration_hub.models import IntegrationStatus
from integration_hub.services import alerts, api_support, overview
from integration_hub.services import configuration as config
from integration_hub.services import setup as setup_service
from integration_hub.web import i18n
from integration_hub.web.api.common import (
    BASE,
    CHANGE_ERRORS,
    READ_ERRORS,
    CurrentIntegration,
    OrgSlug,
    TypeKey,
)
from integration_hub.web.api.me import OrganisationOut
from integration_hub.web.api.models import (
    ChoiceOut,
    ConnectionTestOut,
    CredentialFormOut,
    CredentialsIn,
    DashboardOut,
    IntegrationOut,
    StatusIn,
)
from integration_hub.web.rendering import language_of
from integration_hub.web.security import ApiActor

router = APIRouter()


@router.get(
    "/organisations",
    response_model=list[OrganisationOut],
    responses=READ_ERRORS,
    tags=["organisations"],
    summary="The organisations the caller may see",
)
def organisations(actor: ApiActor) -> list[OrganisationOut]:
    return [OrganisationOut(slug=o.slug, name=o.name) for o in config.list_organisations(actor)]


@router.get(
    "/organisations/{org}/integrations",
    response_model=DashboardOut,
    responses=READ_ERRORS,
    tags=["organisations"],
    summary="The dashboard: each offered integration type with status, last and next run",
)
def dashboard(org: OrgSlug, actor: ApiActor) -> DashboardOut:
    return DashboardOut.model_validate(overview.dashboard(org, actor))


@router.post(
    BASE,
    response_model=IntegrationOut,
    status_code=status.HTTP_201_CREATED,
    responses={**CHANGE_ERRORS, 200: {"model": IntegrationOut, "description": "It existed"}},
    tags=["setup"],
    summary="Start setting up an integration (201 when created, 200 when it existed)",
)
def start_setup(org: OrgSlug, type: TypeKey, actor: ApiActor, response: Response) -> IntegrationOut:
    row, created = api_support.start_setup(org, type, actor)
    if not created:
        response.status_code = status.HTTP_200_OK
    return IntegrationOut.model_validate(api_support.integration_view(row, actor))


@router.get(
    BASE,
    response_model=IntegrationOut,
    responses=READ_ERRORS,
    tags=["integrations"],
    summary="Status, setup step, settings (no secrets) and the last connection test",
)
def get_integration(row: CurrentIntegration, actor: ApiActor) -> IntegrationOut:
    return IntegrationOut.model_validate(api_support.integration_view(row, actor))


@router.get(
    f"{BASE}/credentials",
    response_model=CredentialFormOut,
    responses=READ_ERRORS,
    tags=["credentials"],
    summary="The credential form: settings, and secrets only as masks",
)
def get_credentials(row: CurrentIntegration, actor: ApiActor) -> CredentialFormOut:
    return CredentialFormOut.model_validate({"fields": config.credential_form(row, actor)})


@router.put(
    f"{BASE}/credentials",
    response_model=CredentialFormOut,
    responses=CHANGE_ERRORS,
    tags=["credentials"],
    summary="Store settings and secrets (a blank secret or its mask keeps the stored one); "
    "an integration that runs changes only after the new values pass the connection test",
)
def put_credentials(
    row: CurrentIntegration, body: CredentialsIn, actor: ApiActor
) -> CredentialFormOut:
    setup_service.change_configuration(row, body.values, actor)
    return CredentialFormOut.model_validate({"fields": config.credential_form(row, actor)})


class SetupOut(BaseModel):
    """A whole setup, applied: the integration as it is now, what changed and the connection
    test that let it be stored."""

    integration: IntegrationOut
    changes: list[str] = Field(
        description="What changed, as `field: old -> new` (a secret only as `replaced`)"
    )
    connection_test: ConnectionTestOut
    mapping_version: int | None = Field(description="The mapping version in use")
    schedule_not_pushed: str | None = Field(
        description="Why the schedule is not in Prefect yet (`integrations serve` pushes it)"
    )


SETUP_BODY_EXAMPLE = {
    "base_url": "https://www.xledger.net/graphql",
    "credentials": {"api_token": "the token"},
    "mapping": "default",
    "schedule": {"daily": "02:00", "timezone": "Europe/Oslo"},
    "exclusions": ["parking"],
    "accept_warnings": False,
    "activate": True,
}


@router.put(
    f"{BASE}/setup",
    response_model=SetupOut,
    responses=CHANGE_ERRORS,
    tags=["setup"],
    summary="Set the integration up as one whole: checked whole, tested, then stored",
    description=(
        "The keys of a setup file (README: the setup file): the type's settings, "
        "`credentials` (secrets; a blank one or its mask keeps the stored one), `mapping` "
        "(`default` or a mapping document; left out: the saved one), `schedule` "
        "(`daily` or `cron`, `timezone`, `enabled`), `exclusions`, `accept_warnings`, "
        "`activate` (default true). Every problem is answered at once (422, unknown keys with "
        "what was probably meant); then the connection is tested with the new settings (409 "
        "when it fails); only then is everything stored, in one transaction, and the schedule "
        "pushed to Prefect. A refused or failed setup changes nothing."
    ),
)
def put_setup(
    request: Request,
    org: OrgSlug,
    type: TypeKey,
    actor: ApiActor,
    body: Annotated[
        dict[str, Any], Body(description="The whole setup", examples=[SETUP_BODY_EXAMPLE])
    ],
) -> SetupOut:
    outcome = api_support.apply_setup(org, type, body, actor)
    result = outcome.connection
    language = language_of(request)
    return SetupOut(
        integration=IntegrationOut.model_validate(
            api_support.integration_view(outcome.integration, actor)
        ),
        changes=[str(change) for change in outcome.changes],
        connection_test=ConnectionTestOut(
            ok=result.ok,
            status=result.status.value,
            detail=i18n.translate(result.detail, language),
            elapsed_ms=result.elapsed_ms,
            warnings=[i18n.translate(w, language) for w in result.warnings],
        ),
        mapping_version=outcome.mapping_version,
        schedule_not_pushed=outcome.not_pushed,
    )


@router.post(
    f"{BASE}/connection-test",
    response_model=ConnectionTestOut,
    responses=CHANGE_ERRORS,
    tags=["setup"],
    summary="Test the connection with the stored credentials (answers within 10 s)",
)
def connection_test(
    request: Request, row: CurrentIntegration, actor: ApiActor
) -> ConnectionTestOut:
    """``detail`` is in the caller's language (the setup page shows it as it is)."""
    result, _alert = alerts.check_connection(row, actor)
    return ConnectionTestOut(
        ok=result.ok,
        status=result.status.value,
        detail=i18n.translate(result.detail, language_of(request)),
        elapsed_ms=result.elapsed_ms,
        warnings=[i18n.translate(w, language_of(request)) for w in result.warnings],
    )


@router.get(
    f"{BASE}/companies",
    response_model=list[ChoiceOut],
    responses=CHANGE_ERRORS,
    tags=["setup"],
    summary="The target's companies to choose company_id from (Business Central)",
)
def companies(row: CurrentIntegration, actor: ApiActor) -> list[ChoiceOut]:
    return [ChoiceOut(**asdict(c)) for c in api_support.companies(row, actor)]


@router.get(
    f"{BASE}/journals",
    response_model=list[ChoiceOut],
    responses=CHANGE_ERRORS,
    tags=["setup"],
    summary="A company's journal batches to choose journal_id from (Business Central)",
)
def journals(
    row: CurrentIntegration,
    actor: ApiActor,
    company_id: Annotated[
        str | None,
        Query(description="The company (a GUID); the saved one when left out", max_length=36),
    ] = None,
) -> list[ChoiceOut]:
    return [ChoiceOut(**asdict(c)) for c in api_support.journals(row, actor, company_id)]


@router.put(
    f"{BASE}/status",
    response_model=IntegrationOut,
    responses=CHANGE_ERRORS,
    tags=["integrations"],
    summary="Activate (finishing the setup) or pause the integration",
)
def put_status(row: CurrentIntegration, body: StatusIn, actor: ApiActor) -> IntegrationOut:
    view = api_support.set_status(row, IntegrationStatus(body.status), actor)
    return IntegrationOut.model_validate(view)
