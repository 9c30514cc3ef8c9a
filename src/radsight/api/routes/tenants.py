"""Regions, organisations, their calling AE titles and result destinations.

Everyone signed in sees the organisations they belong to (a platform admin: all); only a
platform admin creates organisations; an organisation's admin manages its AE titles and
destinations.
"""

from __future__ import annotations

from fastapi import APIRouter

from radsight.api.auth import AdminDep, PrincipalDep, ensure_org_admin, ensure_visible
from radsight.api.deps import SessionDep
from radsight.api.schemas import (
    ApplicationEntityCreate,
    ApplicationEntityRead,
    DestinationCreate,
    DestinationRead,
    DestinationUpdate,
    OrganisationCreate,
    OrganisationRead,
)
from radsight.store import tenants
from radsight.store.people import Principal
from radsight.store.tables import OrganisationRow

router = APIRouter(prefix="/api/organisations", tags=["organisations"])


def _visible_org(s: SessionDep, principal: Principal, org: str) -> OrganisationRow:
    o = tenants.get_organisation(s, org)
    ensure_visible(principal, s, o.id, f"organisation {org!r}")
    return o


@router.get("", response_model=list[OrganisationRead])
def list_organisations(s: SessionDep, principal: PrincipalDep) -> list[OrganisationRead]:
    ids = principal.organisation_ids(s)
    return [
        OrganisationRead(id=o.id, name=o.name, region=r.name)
        for o, r in tenants.list_organisations(s)
        if ids is None or o.id in ids
    ]


@router.post("", response_model=OrganisationRead, status_code=201)
def create_organisation(
    body: OrganisationCreate, s: SessionDep, principal: AdminDep
) -> OrganisationRead:
    org = tenants.create_organisation(s, body.name, body.region)
    return OrganisationRead(id=org.id, name=org.name, region=body.region)


@router.get("/{org}/ae-titles", response_model=list[ApplicationEntityRead])
def list_ae_titles(org: str, s: SessionDep, principal: PrincipalDep) -> list:
    return tenants.list_application_entities(s, _visible_org(s, principal, org).id)


@router.post("/{org}/ae-titles", response_model=ApplicationEntityRead, status_code=201)
def add_ae_title(
    org: str, body: ApplicationEntityCreate, s: SessionDep, principal: PrincipalDep
) -> object:
    o = _visible_org(s, principal, org)
    ensure_org_admin(principal, o.id)
    return tenants.create_application_entity(s, o.id, body.ae_title, body.description)


@router.get("/{org}/destinations", response_model=list[DestinationRead])
def list_destinations(org: str, s: SessionDep, principal: PrincipalDep) -> list:
    return tenants.list_destinations(s, _visible_org(s, principal, org).id)


@router.post("/{org}/destinations", response_model=DestinationRead, status_code=201)
def add_destination(
    org: str, body: DestinationCreate, s: SessionDep, principal: PrincipalDep
) -> object:
    o = _visible_org(s, principal, org)
    ensure_org_admin(principal, o.id)
    return tenants.create_destination(s, o.id, body.name, body.ae_title, body.host, body.port)


@router.patch("/{org}/destinations/{name}", response_model=DestinationRead)
def update_destination(
    org: str, name: str, body: DestinationUpdate, s: SessionDep, principal: PrincipalDep
) -> object:
    o = _visible_org(s, principal, org)
    ensure_org_admin(principal, o.id)
    return tenants.set_destination_enabled(s, o.id, name, body.enabled)
