"""Who is calling, and which organisations they may see (the one rule of tenancy).

:func:`scope_of` is the only way from a principal to a :class:`~radsight.store.scope.Scope`:

- the platform-wide role ``admin`` (a token, e.g. the operator's) sees ``Scope.ALL``;
- a ``supervisor`` with a region sees that region's organisations;
- everyone else sees their own organisation (and a principal without one sees nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from radsight.store import Session, tenants
from radsight.store.scope import Scope
from radsight.store.tables import UserRow

#: roles a person can have
USER_ROLES = ("radiologist", "org_admin", "supervisor")
#: roles that see every organisation: tokens (``radsight token add``) and people signed in
#: through single sign-on whose provider maps them to ``admin``
PLATFORM_ROLES = ("admin",)
#: roles a token can have: a person's, or a platform-wide one
TOKEN_ROLES = (*USER_ROLES, *PLATFORM_ROLES)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in person or a token."""

    kind: str  # user | token
    name: str  # username or token name (for the audit trail)
    role: str
    organisation_id: int | None  # None only for a platform-wide token
    user_id: int | None = None
    region_id: int | None = None
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role in PLATFORM_ROLES


def scope_of(s: Session, principal: Principal) -> Scope:
    """The organisations this principal may see: ``Scope.ALL`` only for a platform role."""
    if principal.role in PLATFORM_ROLES:
        return Scope.ALL
    if principal.role == "supervisor" and principal.region_id is not None:
        return Scope.orgs(tenants.organisation_ids_in_region(s, principal.region_id))
    if principal.organisation_id is None:
        return Scope.orgs(())
    return Scope.of(principal.organisation_id)


def principal_for_user(user: UserRow) -> Principal:
    return Principal(
        kind="user",
        name=user.username,
        role=user.role,
        # a platform-wide admin (single sign-on only) belongs to no organisation
        organisation_id=None if user.role in PLATFORM_ROLES else user.organisation_id,
        user_id=user.id,
        region_id=user.region_id,
    )
