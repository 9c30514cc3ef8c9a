"""Regions, organisations, their calling AE titles and result destinations.

Everyone signed in sees the organisations they belong to (a platform admin: all); only a
platform admin creates organisations; an organisation's admin manages its AE titles and
destinations.
"""

from __future__ import annotations

from fastapi import APIRouter

from radsight.api.auth import AdminDep, PrincipalDep, ScopeDep, ensure_org_admin
from radsight.api.deps import SessionDep
from radsight.api.schemas import (
    ApplicationEntityCreate,
    ApplicationEntityRead,
    ApplicationEntityUpdate,
    DestinationCreate,
    DestinationRead,
    DestinationUpdate,
    OrganisationCreate,
    OrganisationRead,
)
from radsight.errors import NotFound
from radsight.store import tenants
from radsight.store.scope import Scope
from radsight.store.tables import OrganisationRow

router = APIRouter(prefix="/api/organisations", tags=["organisations"])


def _visible_org(s: SessionDep, scope: Scope, org: str) -> OrganisationRow:
    """Another tenant's organisation answers 404, exactly as one that does not exist."""
    o = tenants.get_organisation(s, org)
    if not scope.includes(o.id):
        raise NotFound(f"organisation {org!r} does not exist")
    return o


@router.get("", response_model=list[OrganisationRead])
def list_organisations(s: SessionDep, scope: ScopeDep) -> list[OrganisationRead]:
    return [
        OrganisationRead(id=o.id, name=o.name, region=r.name)
        for o, r in tenants.list_organisations(s, scope=scope)
    ]


@router.post("", response_model=OrganisationRead, status_code=201)
def create_organisation(
    body: OrganisationCreate, s: SessionDep, principal: AdminDep
) -> OrganisationRead:
    org = tenants.create_organisation(s, body.name, body.region)
    return OrganisationRead(id=org.id, name=org.name, region=body.region)


@router.get("/{org}/ae-titles", response_model=list[ApplicationEntityRead])
def list_ae_titles(org: str, s: SessionDep, scope: ScopeDep) -> list:
    o = _visible_org(s, scope, org)
    return tenants.list_application_entities(s, scope=Scope.of(o.id))


@router.post("/{org}/ae-titles", response_model=ApplicationEntityRead, status_code=201)
def add_ae_title(
    org: str,
    body: ApplicationEntityCreate,
    s: SessionDep,
    principal: PrincipalDep,
    scope: ScopeDep,
) -> object:
    o = _visible_org(s, scope, org)
    ensure_org_admin(principal, o.id)
    return tenants.create_application_entity(
        s,
        o.id,
        body.ae_title,
        body.description,
        allowed_hosts=body.allowed_hosts,
        tls_client_subject=body.tls_client_subject,
        shown_to=scope,
    )


@router.patch("/{org}/ae-titles/{ae_title}", response_model=ApplicationEntityRead)
def update_ae_title(
    org: str,
    ae_title: str,
    body: ApplicationEntityUpdate,
    s: SessionDep,
    principal: PrincipalDep,
    scope: ScopeDep,
) -> object:
    o = _visible_org(s, scope, org)
    ensure_org_admin(principal, o.id)
    return tenants.update_application_entity(
        s,
        o.id,
        ae_title,
        description=body.description,
        allowed_hosts=body.allowed_hosts,
        tls_client_subject=body.tls_client_subject,
    )


@router.get("/{org}/destinations", response_model=list[DestinationRead])
def list_destinations(org: str, s: SessionDep, scope: ScopeDep) -> list:
    o = _visible_org(s, scope, org)
    return tenants.list_destinations(s, scope=Scope.of(o.id))


@router.post("/{org}/destinations", response_model=DestinationRead, status_code=201)
def add_destination(
    org: str, body: DestinationCreate, s: SessionDep, principal: PrincipalDep, scope: ScopeDep
) -> object:
    o = _visible_org(s, scope, org)
    ensure_org_admin(principal, o.id)
    return tenants.create_destination(s, o.id, body.name, body.ae_title, body.host, body.port)


@router.patch("/{org}/destinations/{name}", response_model=DestinationRead)
def update_destination(
    org: str,
    name: str,
    body: DestinationUpdate,
    s: SessionDep,
    principal: PrincipalDep,
    scope: ScopeDep,
) -> object:
    o = _visible_org(s, scope, org)
    ensure_org_admin(principal, o.id)
    return tenants.set_destination_enabled(s, o.id, name, body.enabled)
