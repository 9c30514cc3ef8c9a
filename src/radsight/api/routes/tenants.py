"""Regions, organisations, their calling AE titles and result destinations."""

from __future__ import annotations

from fastapi import APIRouter

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

router = APIRouter(prefix="/api/organisations", tags=["organisations"])


@router.get("", response_model=list[OrganisationRead])
def list_organisations(s: SessionDep) -> list[OrganisationRead]:
    return [
        OrganisationRead(id=o.id, name=o.name, region=r.name)
        for o, r in tenants.list_organisations(s)
    ]


@router.post("", response_model=OrganisationRead, status_code=201)
def create_organisation(body: OrganisationCreate, s: SessionDep) -> OrganisationRead:
    org = tenants.create_organisation(s, body.name, body.region)
    return OrganisationRead(id=org.id, name=org.name, region=body.region)


@router.get("/{org}/ae-titles", response_model=list[ApplicationEntityRead])
def list_ae_titles(org: str, s: SessionDep) -> list:
    return tenants.list_application_entities(s, tenants.get_organisation(s, org).id)


@router.post("/{org}/ae-titles", response_model=ApplicationEntityRead, status_code=201)
def add_ae_title(org: str, body: ApplicationEntityCreate, s: SessionDep) -> object:
    o = tenants.get_organisation(s, org)
    return tenants.create_application_entity(s, o.id, body.ae_title, body.description)


@router.get("/{org}/destinations", response_model=list[DestinationRead])
def list_destinations(org: str, s: SessionDep) -> list:
    return tenants.list_destinations(s, tenants.get_organisation(s, org).id)


@router.post("/{org}/destinations", response_model=DestinationRead, status_code=201)
def add_destination(org: str, body: DestinationCreate, s: SessionDep) -> object:
    o = tenants.get_organisation(s, org)
    return tenants.create_destination(s, o.id, body.name, body.ae_title, body.host, body.port)


@router.patch("/{org}/destinations/{name}", response_model=DestinationRead)
def update_destination(org: str, name: str, body: DestinationUpdate, s: SessionDep) -> object:
    o = tenants.get_organisation(s, org)
    return tenants.set_destination_enabled(s, o.id, name, body.enabled)
