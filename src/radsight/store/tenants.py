"""Regions, organisations, calling AE titles and result destinations."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radsight.errors import Conflict, InvalidInput, NotFound
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import (
    ApplicationEntityRow,
    DestinationRow,
    OrganisationRow,
    RegionRow,
)


def get_or_create_region(s: Session, name: str) -> RegionRow:
    row = s.scalar(select(RegionRow).where(RegionRow.name == name))
    if row is None:
        row = RegionRow(name=name)
        s.add(row)
        s.flush()
    return row


def get_region(s: Session, name: str) -> RegionRow:
    row = s.scalar(select(RegionRow).where(RegionRow.name == name))
    if row is None:
        raise NotFound(f"region {name!r} does not exist")
    return row


def create_organisation(s: Session, name: str, region: str) -> OrganisationRow:
    if s.scalar(select(OrganisationRow).where(OrganisationRow.name == name)):
        raise Conflict(f"organisation {name!r} already exists")
    region_row = get_or_create_region(s, region)
    row = OrganisationRow(name=name, region_id=region_row.id, created_at=utcnow())
    s.add(row)
    s.flush()
    return row


def get_organisation(s: Session, name_or_id: str | int) -> OrganisationRow:
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        row = s.get(OrganisationRow, int(name_or_id))
    else:
        row = s.scalar(select(OrganisationRow).where(OrganisationRow.name == name_or_id))
    if row is None:
        raise NotFound(f"organisation {name_or_id!r} does not exist")
    return row


def find_organisation_by_name(s: Session, name: str) -> OrganisationRow | None:
    """By name only (a name of digits is a name, not an id): single sign-on's claim."""
    return s.scalar(select(OrganisationRow).where(OrganisationRow.name == name))


def list_organisations(s: Session, *, scope: Scope) -> list[tuple[OrganisationRow, RegionRow]]:
    q = select(OrganisationRow, RegionRow).join(RegionRow).order_by(OrganisationRow.id)
    return [(o, r) for o, r in s.execute(q.where(scope.where(OrganisationRow.id)))]


def organisation_ids_in_region(s: Session, region_id: int) -> list[int]:
    """The organisations of one region (what a regional supervisor sees)."""
    q = select(OrganisationRow.id).where(OrganisationRow.region_id == region_id)
    return list(s.scalars(q.order_by(OrganisationRow.id)))


def create_application_entity(
    s: Session,
    organisation_id: int,
    ae_title: str,
    description: str = "",
    *,
    allowed_hosts: Iterable[str] = (),
    tls_client_subject: str = "",
    shown_to: Scope | None = None,
) -> ApplicationEntityRow:
    """Register a calling AE title; AE titles are unique on the platform.

    A title already taken is a :class:`Conflict` that says "already registered"; it names
    the organisation that has it only when that organisation is within ``shown_to`` (a
    platform admin's ``Scope.ALL``): an organisation's admin learns nothing of another's.
    """
    ae_title = validate_ae_title(ae_title)
    taken = s.scalar(select(ApplicationEntityRow).where(ApplicationEntityRow.ae_title == ae_title))
    if taken is not None:
        raise _ae_title_taken(s, ae_title, taken.organisation_id, shown_to)
    row = ApplicationEntityRow(
        organisation_id=organisation_id,
        ae_title=ae_title,
        description=description,
        allowed_hosts=validate_allowed_hosts(allowed_hosts),
        tls_client_subject=tls_client_subject.strip(),
    )
    s.add(row)
    try:
        s.flush()
    except IntegrityError as exc:  # registered at the same moment by another request
        raise _ae_title_taken(s, ae_title, None, shown_to) from exc
    return row


def update_application_entity(
    s: Session,
    organisation_id: int,
    ae_title: str,
    *,
    description: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    tls_client_subject: str | None = None,
) -> ApplicationEntityRow:
    """Change what is given (None: keep); an empty ``allowed_hosts`` means any address."""
    row = s.scalar(
        select(ApplicationEntityRow).where(
            ApplicationEntityRow.organisation_id == organisation_id,
            ApplicationEntityRow.ae_title == validate_ae_title(ae_title),
        )
    )
    if row is None:
        raise NotFound(f"AE title {ae_title!r} is not registered for this organisation")
    if description is not None:
        row.description = description
    if allowed_hosts is not None:
        row.allowed_hosts = validate_allowed_hosts(allowed_hosts)
    if tls_client_subject is not None:
        row.tls_client_subject = tls_client_subject.strip()
    s.flush()
    return row


def validate_allowed_hosts(hosts: Iterable[str]) -> list[str]:
    """Addresses or CIDR networks (IPv4 or IPv6), normalised: ``10.1.2.0/24``, ``::1``."""
    out: list[str] = []
    for host in hosts:
        for part in str(host).replace(",", " ").split():
            try:
                net = ipaddress.ip_network(part, strict=False)
            except ValueError as exc:
                raise InvalidInput(
                    f"allowed host {part!r} is not an IP address or network (10.1.2.0/24)"
                ) from exc
            text = str(net.network_address) if net.num_addresses == 1 else str(net)
            if text not in out:
                out.append(text)
    return out


def _ae_title_taken(
    s: Session, ae_title: str, owner_id: int | None, shown_to: Scope | None
) -> Conflict:
    message = f"AE title {ae_title!r} is already registered: choose another AE title"
    if owner_id is not None and shown_to is not None and shown_to.includes(owner_id):
        owner = s.get(OrganisationRow, owner_id)
        if owner is not None:
            message = f"AE title {ae_title!r} is already registered to {owner.name!r}"
    return Conflict(message)


def list_application_entities(s: Session, *, scope: Scope) -> list[ApplicationEntityRow]:
    q = select(ApplicationEntityRow).order_by(ApplicationEntityRow.id)
    return list(s.scalars(q.where(scope.where(ApplicationEntityRow.organisation_id))))


def create_destination(
    s: Session,
    organisation_id: int,
    name: str,
    ae_title: str,
    host: str,
    port: int,
    *,
    tls: bool = False,
    tls_server_name: str = "",
) -> DestinationRow:
    ae_title = validate_ae_title(ae_title)
    if not 0 < port < 65536:
        raise InvalidInput(f"port must be 1-65535, got {port}")
    if not host.strip():
        raise InvalidInput("host must not be empty")
    exists = s.scalar(
        select(DestinationRow).where(
            DestinationRow.organisation_id == organisation_id, DestinationRow.name == name
        )
    )
    if exists:
        raise Conflict(f"destination {name!r} already exists for this organisation")
    row = DestinationRow(
        organisation_id=organisation_id,
        name=name,
        ae_title=ae_title,
        host=host,
        port=port,
        tls=tls,
        tls_server_name=_server_name(tls_server_name),
    )
    s.add(row)
    s.flush()
    return row


def list_destinations(
    s: Session, *, scope: Scope, enabled_only: bool = False
) -> list[DestinationRow]:
    q = select(DestinationRow).order_by(DestinationRow.id)
    q = q.where(scope.where(DestinationRow.organisation_id))
    if enabled_only:
        q = q.where(DestinationRow.enabled.is_(True))
    return list(s.scalars(q))


def set_destination_enabled(
    s: Session, organisation_id: int, name: str, enabled: bool
) -> DestinationRow:
    return update_destination(s, organisation_id, name, enabled=enabled)


def update_destination(
    s: Session,
    organisation_id: int,
    name: str,
    *,
    enabled: bool | None = None,
    tls: bool | None = None,
    tls_server_name: str | None = None,
) -> DestinationRow:
    """Change what is given (None: unchanged)."""
    row = s.scalar(
        select(DestinationRow).where(
            DestinationRow.organisation_id == organisation_id, DestinationRow.name == name
        )
    )
    if row is None:
        raise NotFound(f"destination {name!r} does not exist for this organisation")
    if enabled is not None:
        row.enabled = enabled
    if tls is not None:
        row.tls = tls
    if tls_server_name is not None:
        row.tls_server_name = _server_name(tls_server_name)
    s.flush()
    return row


def _server_name(name: str) -> str:
    """A host name (or address) a certificate can name: no spaces or control characters."""
    value = name.strip()
    if len(value) > 255 or any(c.isspace() or ord(c) < 32 for c in value):
        raise InvalidInput(f"TLS server name must be a host name, got {name!r}")
    return value


def validate_ae_title(ae_title: str) -> str:
    """PS3.5 AE VR: 1-16 characters, no backslash or control characters, not all spaces."""
    value = ae_title.strip()
    if not value or len(value) > 16:
        raise InvalidInput(f"AE title must be 1-16 characters, got {ae_title!r}")
    if any(ord(c) < 32 or ord(c) > 126 or c == "\\" for c in value):
        raise InvalidInput(f"AE title {ae_title!r} has characters the AE VR does not allow")
    return value
