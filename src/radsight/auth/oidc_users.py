"""Single sign-on users: verified ID token claims -> a role, an organisation, a user row.

The one rule, applied at every sign-in (so a change at the provider takes effect at the
user's next sign-in, and their older sessions end):

- the role: the values of the claim ``oidc_roles_claim`` (a string or a list; a dotted
  name such as ``realm_access.roles`` reaches into nested claims) mapped through
  ``oidc_role_map``; several mapped roles: the first of :data:`ROLE_PRECEDENCE`; none:
  refused (``no_role``);
- the organisation: the claim ``oidc_organisation_claim``, an organisation's name as
  Radsight knows it; missing or unknown: refused (``unknown_organisation``). ``admin`` is
  platform-wide and needs none; a ``supervisor`` sees their organisation's region;
- the user: found by ``"<iss>|<sub>"`` (never by name: a local account of the same name
  is never taken over), created at the first sign-in with no password
  (``auth_provider = "oidc"``), refused when an administrator disabled them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from radsight.auth.oidc import Identity
from radsight.auth.principals import PLATFORM_ROLES
from radsight.config import Settings
from radsight.errors import SignInRefused
from radsight.store import Session, people, tenants
from radsight.store.tables import UserRow

#: when several claim values map to roles, the first of these wins
ROLE_PRECEDENCE = ("admin", "supervisor", "org_admin", "radiologist")
#: never matches an argon2 hash: a single sign-on user has no password here
NO_PASSWORD = "!oidc"


@dataclass(frozen=True)
class Mapped:
    """What the claims say: the role and organisation name (None for a platform admin)."""

    role: str
    organisation: str | None
    username: str
    display_name: str


def claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name; ``a.b`` is claim ``b`` inside the object claim ``a``."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def map_claims(settings: Settings, claims: dict[str, Any]) -> Mapped:
    """The role, organisation and names the claims give, or :class:`SignInRefused`."""
    values = _strings(claim(claims, settings.oidc_roles_claim))
    roles = {settings.oidc_role_map[v] for v in values if v in settings.oidc_role_map}
    if not roles:
        shown = ", ".join(repr(v) for v in values[:10]) or "none"
        raise SignInRefused(
            f"Your account has no Radsight role: the claim {settings.oidc_roles_claim!r} "
            f"holds {shown}, and none of these is mapped to a role. Ask your administrator "
            "for access to Radsight.",
            reason="no_role",
        )
    role = next(r for r in ROLE_PRECEDENCE if r in roles)
    organisation: str | None = None
    if role not in PLATFORM_ROLES:
        names = _strings(claim(claims, settings.oidc_organisation_claim))
        if len(names) != 1 or not names[0].strip():
            raise SignInRefused(
                f"Your account names no single organisation (claim "
                f"{settings.oidc_organisation_claim!r}): ask your administrator.",
                reason="unknown_organisation",
            )
        organisation = names[0].strip()
    username = next(
        (
            v.strip()
            for v in _strings(claim(claims, "preferred_username")) + _strings(claims.get("email"))
            if v.strip()
        ),
        str(claims["sub"]),
    )
    display_name = next(iter(_strings(claims.get("name"))), "") or username
    return Mapped(role, organisation, username[:64], display_name[:128])


def _subject_key(identity: Identity) -> str:
    """``"<iss>|<sub>"``; hashed when longer than the column (255)."""
    if len(identity.subject) <= 255:
        return identity.subject
    return "sha256:" + hashlib.sha256(identity.subject.encode()).hexdigest()


def _free_username(s: Session, wanted: str, subject: str, user: UserRow | None) -> str:
    """``wanted`` unless another user has it: then ``wanted`` with a short subject hash."""
    holder = people.find_user(s, wanted)
    if holder is None or (user is not None and holder.id == user.id):
        return wanted
    return f"{wanted[:56]}~{hashlib.sha256(subject.encode()).hexdigest()[:7]}"


def sign_in_user(
    s: Session, settings: Settings, identity: Identity
) -> tuple[UserRow, dict[str, Any]]:
    """The user these verified claims sign in, created or brought up to date.

    Returns the row and what changed (for the audit trail). Refusals are
    :class:`SignInRefused` with ``reason`` ``no_role``, ``unknown_organisation`` or
    ``disabled``.
    """
    mapped = map_claims(settings, identity.claims)
    organisation_id: int | None = None
    region_id: int | None = None
    if mapped.organisation is not None:
        org = tenants.find_organisation_by_name(s, mapped.organisation)
        if org is None:
            raise SignInRefused(
                f"Your account names the organisation {mapped.organisation[:128]!r}, which "
                "Radsight does not know: ask your administrator.",
                reason="unknown_organisation",
            )
        organisation_id = org.id
        region_id = org.region_id if mapped.role == "supervisor" else None
    subject = _subject_key(identity)
    user = people.find_user_by_subject(s, subject)
    if user is None:
        user = people.add_user(
            s,
            organisation_id=organisation_id,
            username=_free_username(s, mapped.username, subject, None),
            display_name=mapped.display_name,
            role=mapped.role,
            password_hash=NO_PASSWORD,
            region_id=region_id,
            auth_provider="oidc",
            external_subject=subject,
        )
        return user, {"created": True}
    if user.disabled:
        raise SignInRefused(
            f"User {user.username!r} is disabled in Radsight: ask your administrator.",
            reason="disabled",
        )
    changed: dict[str, Any] = {}
    for field, value in (
        ("role", mapped.role),
        ("organisation_id", organisation_id),
        ("region_id", region_id),
    ):
        if getattr(user, field) != value:
            changed[field] = [getattr(user, field), value]
            setattr(user, field, value)
    if changed:
        # what the provider says now holds from this sign-in on, in every browser
        people.end_user_sessions(s, user.id)
    user.display_name = mapped.display_name
    return user, changed
