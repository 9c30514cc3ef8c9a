"""Regions, organisations, their calling AE titles and result destinations.

Everyone signed in sees the organisations they belong to (a platform admin: all); only a
platform admin creates organisations; an organisation's admin manages its AE titles and
destinations.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from radsight.api.audit import record_change
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
    body: OrganisationCreate, request: Request, s: SessionDep, principal: AdminDep
) -> OrganisationRead:
    org = tenants.create_organisation(s, body.name, body.region)
    detail = {"name": org.name, "region": body.region}
    record_change(s, principal, request, "organisation.create", org.id, detail)
    return OrganisationRead(id=org.id, name=org.name, region=body.region)


@router.get("/{org}/ae-titles", response_model=list[ApplicationEntityRead])
def list_ae_titles(org: str, s: SessionDep, scope: ScopeDep) -> list:
    o = _visible_org(s, scope, org)
    return tenants.list_application_entities(s, scope=Scope.of(o.id))


@router.post("/{org}/ae-titles", response_model=ApplicationEntityRead, status_code=201)
def add_ae_title(
    org: str,
    body: ApplicationEntityCreate,
    request: Request,
    s: SessionDep,
    principal: PrincipalDep,
    scope: ScopeDep,
) -> object:
    o = _visible_org(s, scope, org)
    ensure_org_admin(principal, o.id)
    row = tenants.create_application_entity(
        s,
        o.id,
        body.ae_title,
        body.description,
        allowed_hosts=body.allowed_hosts,
        tls_client_subject=body.tls_client_subject,
        shown_to=scope,
    )
    detail = {
        "ae_title": row.ae_title,
        "description": row.description,
        "allowed_hosts": row.allowed_hosts,
        "tls_client_subject": row.tls_client_subject,
    }
    record_change(s, principal, request, "ae_title.create", o.id, detail)
    return row


@router.patch("/{org}/ae-titles/{ae_title}", response_model=ApplicationEntityRead)
def update_ae_title(
    org: str,
    ae_title: str,
    body: ApplicationEntityUpdate,
    request: Request,
    s: SessionDep,
    principal: PrincipalDep,
    scope: ScopeDep,
) -> object:
    o = _visible_org(s, scope, org)
    ensure_org_admin(principal, o.id)
    row = tenants.update_application_entity(
        s,
        o.id,
        ae_title,
        description=body.description,
        allowed_hosts=body.allowed_hosts,
        tls_client_subject=body.tls_client_subject,
    )
    detail = {
        "ae_title": row.ae_title,
        "changed": body.model_dump(exclude_none=True),
    }
    record_change(s, principal, request, "ae_title.update", o.id, detail)
    return row


@router.get("/{org}/destinations", response_model=list[DestinationRead])
def list_destinations(org: str, s: SessionDep, scope: ScopeDep) -> list:
    o = _visible_org(s, scope, org)
    return tenants.list_destinations(s, scope=Scope.of(o.id))


@router.post("/{org}/destinations", response_model=DestinationRead, status_code=201)
def add_destination(
    org: str,
    body: DestinationCreate,
    request: Request,
    s: SessionDep,
    principal: PrincipalDep,
    scope: ScopeDep,
) -> object:
    o = _visible_org(s, scope, org)
    ensure_org_admin(principal, o.id)
    row = tenants.create_destination(
        s,
        o.id,
        body.name,
        body.ae_title,
        body.host,
        body.port,
        tls=body.tls,
        tls_server_name=body.tls_server_name,
    )
    detail = {
        "name": row.name,
        "ae_title": row.ae_title,
        "host": row.host,
        "port": row.port,
        "tls": row.tls,
        "tls_server_name": row.tls_server_name,
    }
    record_change(s, principal, request, "destination.create", o.id, detail)
    return row


@router.patch("/{org}/destinations/{name}", response_model=DestinationRead)
def update_destination(
    org: str,
    name: str,
    body: DestinationUpdate,
    request: Request,
    s: SessionDep,
    principal: PrincipalDep,
    scope: ScopeDep,
) -> object:
    o = _visible_org(s, scope, org)
    ensure_org_admin(principal, o.id)
    row = tenants.update_destination(
        s,
        o.id,
        name,
        enabled=body.enabled,
        tls=body.tls,
        tls_server_name=body.tls_server_name,
    )
    detail = {"name": row.name, **body.model_dump(exclude_none=True)}
    record_change(s, principal, request, "destination.update", o.id, detail)
    return row
