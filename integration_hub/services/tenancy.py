"""Tenancy: the organisations the hub serves and the integration types each is offered.

What the operators' CLI (``integrations orgs``, ``integrations flags``) and the operators' page
call. Who may is decided once, by :attr:`Actor.manages_tenancy`: the hub's operators and its
command line, never an organisation's admin. Every change is written to the audit log.

Organisations live in the volunteer app's ``organisations`` table, the one the exports read
claims by (``app_session``); the audit log and the feature flags are the hub's. Adding an
organisation commits it there first and then audits it in the hub's database: the two may be
different databases, so they cannot share one transaction, and SQLite would lock if both
sessions wrote at once when they are the same file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import select

from integration_hub.adapters.registry import all_types, feature_flag
from integration_hub.db import app_session, hub_session
from integration_hub.models import Integration, Organisation
from integration_hub.services.configuration import (
    Actor,
    audit,
    enabled_flags,
    integration_type,
    list_organisations,
    organisation,
    set_feature_flag,
)
from integration_hub.services.errors import Forbidden, InvalidInput

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG, MAX_NAME = 64, 200
"""The columns' lengths (models/app.py ``Organisation``)."""
ORG_NUMBER_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)
"""Brønnøysundregistrene's modulus-11 weights for the first eight digits of an
organisasjonsnummer; the ninth is the check digit."""


@dataclass(frozen=True)
class Offer:
    """One integration type as offered (or not) to one organisation, and its integration's
    status when one has been set up (switching an offer off leaves the integration as it is)."""

    key: str
    name: str
    offered: bool
    status: str | None = None


@dataclass(frozen=True)
class Tenant:
    """An organisation and every integration type the hub knows, offered or not."""

    organisation: Organisation
    offers: tuple[Offer, ...]

    @property
    def offered(self) -> list[Offer]:
        return [offer for offer in self.offers if offer.offered]


@dataclass(frozen=True)
class OfferChange:
    """What switching one offer did; ``still_set_up`` names the status of an integration that
    stays as it was although it is no longer offered (its admins no longer see it)."""

    key: str
    name: str
    offered: bool
    still_set_up: str | None = None


def check_manages(actor: Actor) -> None:
    """Refuse everyone but the hub's operators (and its command line)."""
    if not actor.manages_tenancy:
        raise Forbidden("only the hub's operators manage organisations and what they are offered")


# -- reading -----------------------------------------------------------------------------------
def tenants(actor: Actor) -> list[Tenant]:
    """Every organisation with every integration type, offered or not (by slug)."""
    check_manages(actor)
    organisations = list_organisations(actor)
    return [_tenant(org) for org in organisations]


def tenant(slug: str, actor: Actor) -> Tenant:
    check_manages(actor)
    return _tenant(organisation(slug, actor))


def _tenant(org: Organisation) -> Tenant:
    flags = enabled_flags(org.id or 0)
    with hub_session() as session:
        statuses = {
            row.type_key: row.status
            for row in session.exec(
                select(Integration).where(Integration.organisation_id == org.id)
            ).all()
        }
    offers = tuple(
        Offer(
            key=adapter_type.key,
            name=adapter_type.display_name,
            offered=feature_flag(adapter_type.key) in flags,
            status=statuses.get(adapter_type.key),
        )
        for adapter_type in all_types()
    )
    return Tenant(org, offers)


# -- organisations -----------------------------------------------------------------------------
def normal_org_number(text: str) -> str:
    """``"974 760 673"`` -> ``"974760673"``; spaces and dots as people write them are dropped."""
    return re.sub(r"[\s.]", "", text or "")


def org_number_problem(number: str) -> str | None:
    """Why ``number`` (normalised) is not an organisasjonsnummer, or None: nine digits whose
    last is the modulus-11 check digit, so a mistyped digit is caught here, not by Bufdir."""
    if not re.fullmatch(r"\d{9}", number):
        return "org_number: an organisation number has nine digits, such as 974 760 673"
    total = sum(
        int(digit) * weight for digit, weight in zip(number[:8], ORG_NUMBER_WEIGHTS, strict=True)
    )
    check = (11 - total % 11) % 11
    if check == 10 or check != int(number[8]):
        return "org_number: this is not a valid organisation number; check the digits"
    return None


def _name_problem(name: str) -> str | None:
    if not name:
        return "name: give the organisation's name"
    if len(name) > MAX_NAME:
        return f"name: at most {MAX_NAME} characters"
    return None


def add_organisation(
    slug: str, name: str, org_number: str, actor: Actor, offered: Iterable[str] = ()
) -> Tenant:
    """Add an organisation, offered the types ``offered`` (keys). Every problem is reported at
    once and nothing is stored unless all is well."""
    check_manages(actor)
    slug, name, number = slug.strip(), " ".join(name.split()), normal_org_number(org_number)
    wanted = sorted(set(offered))
    problems = []
    if not SLUG.fullmatch(slug) or len(slug) > MAX_SLUG:
        problems.append(
            "slug: use lowercase letters a-z, digits and single dashes, such as hlf or "
            f"norges-blindeforbund (at most {MAX_SLUG} characters)"
        )
    elif any(o.slug == slug for o in list_organisations(actor)):
        problems.append(f"slug: there is already an organisation {slug}")
    problems += [p for p in (_name_problem(name), org_number_problem(number)) if p]
    problems += _unknown_types(wanted)
    if problems:
        raise InvalidInput("the organisation was not added", problems)
    with app_session() as session:
        row = Organisation(slug=slug, name=name, org_number=number)
        session.add(row)
        session.flush()
        session.expunge(row)
    with hub_session() as session:
        audit(
            session,
            actor,
            "organisation.added",
            organisation_id=row.id,
            slug=slug,
            name=name,
            org_number=number,
        )
    for key in wanted:
        set_feature_flag(row.id or 0, feature_flag(key), True, actor)
    return _tenant(row)


def rename_organisation(slug: str, name: str, actor: Actor) -> bool:
    """Give the organisation a new display name (its slug stays: addresses, commands and
    deployments use it). Returns whether anything changed."""
    check_manages(actor)
    org = organisation(slug, actor)
    name = " ".join(name.split())
    if (problem := _name_problem(name)) is not None:
        raise InvalidInput("the organisation was not renamed", [problem])
    if name == org.name:
        return False
    with app_session() as session:
        row = session.get(Organisation, org.id)
        assert row is not None
        row.name = name
        session.add(row)
    with hub_session() as session:
        audit(
            session, actor, "organisation.renamed", organisation_id=org.id, old=org.name, new=name
        )
    return True


def update_organisation(
    slug: str, name: str, offered: Iterable[str], actor: Actor
) -> tuple[bool, list[OfferChange]]:
    """The operators' page's save of one organisation: its name and exactly the types it is
    offered, all checked before anything is written. Returns (renamed, offer changes)."""
    check_manages(actor)
    wanted = set(offered)
    problems = [p for p in (_name_problem(" ".join(name.split())),) if p]
    problems += _unknown_types(wanted)
    if problems:
        raise InvalidInput("the changes were not saved", problems)
    renamed = rename_organisation(slug, name, actor)
    return renamed, set_offers(slug, wanted, actor)


# -- what an organisation is offered -----------------------------------------------------------
def _unknown_types(keys: Iterable[str]) -> list[str]:
    known = {adapter_type.key for adapter_type in all_types()}
    unknown = sorted(set(keys) - known)
    if not unknown:
        return []
    return [f"unknown integration type {', '.join(unknown)} (known: {', '.join(sorted(known))})"]


def set_offered(slug: str, type_key: str, offered: bool, actor: Actor) -> OfferChange | None:
    """Offer one integration type to an organisation, or stop offering it; None when it already
    was so (nothing written, nothing audited)."""
    check_manages(actor)
    integration_type(type_key)  # an unknown key is a NotFound that lists the known ones
    changes = _apply(tenant(slug, actor), {type_key: offered}, actor)
    return changes[0] if changes else None


def set_offers(slug: str, type_keys: Iterable[str], actor: Actor) -> list[OfferChange]:
    """Offer exactly ``type_keys`` (the operators' page sends the whole choice); only the types
    whose offer changes are written and audited."""
    check_manages(actor)
    wanted = set(type_keys)
    if problems := _unknown_types(wanted):
        raise InvalidInput("the offers were not changed", problems)
    current = tenant(slug, actor)
    return _apply(current, {offer.key: offer.key in wanted for offer in current.offers}, actor)


def _apply(current: Tenant, wanted: dict[str, bool], actor: Actor) -> list[OfferChange]:
    changes = []
    for offer in current.offers:
        if offer.key not in wanted or wanted[offer.key] == offer.offered:
            continue
        set_feature_flag(
            current.organisation.id or 0, feature_flag(offer.key), wanted[offer.key], actor
        )
        changes.append(
            OfferChange(
                key=offer.key,
                name=offer.name,
                offered=wanted[offer.key],
                still_set_up=offer.status if not wanted[offer.key] else None,
            )
        )
    return changes
