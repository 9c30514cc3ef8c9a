"""Users as their organisation's admin sees them, and lifting a sign-in lock.

An organisation admin sees and unlocks the users of their organisation; a platform admin
any user. Another tenant's user answers 404, exactly as one that does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from radsight import auth
from radsight.api.audit import client_address
from radsight.api.auth import OrgAdminDep, ScopeDep, ensure_org_admin
from radsight.api.deps import SessionDep
from radsight.api.schemas import UserRead
from radsight.errors import NotFound
from radsight.store import people
from radsight.store.tables import UserRow

router = APIRouter(prefix="/api/users", tags=["users"])


def _read(u: UserRow) -> UserRead:
    return UserRead(
        id=u.id,
        username=u.username,
        display_name=u.display_name,
        organisation_id=u.organisation_id,
        role=u.role,
        disabled=u.disabled,
        failed_sign_ins=u.failed_sign_ins,
        locked=auth.lock_state(u),
    )


@router.get("", response_model=list[UserRead])
def list_users(s: SessionDep, scope: ScopeDep, principal: OrgAdminDep) -> list[UserRead]:
    """The users of the caller's organisations, with their sign-in lock."""
    return [_read(u) for u in people.list_users(s, scope=scope)]


@router.post("/{username}/unlock", response_model=UserRead)
def unlock_user(
    username: str, request: Request, s: SessionDep, scope: ScopeDep, principal: OrgAdminDep
) -> UserRead:
    """Lift the lock that failed sign-ins put on a user (audited as ``user.unlock``)."""
    user = people.find_user(s, username)
    # a platform admin signed in through single sign-on has no organisation (and no password)
    if user is None or user.organisation_id is None or not scope.includes(user.organisation_id):
        raise NotFound(f"user {username!r} does not exist")
    ensure_org_admin(principal, user.organisation_id)
    auth.unlock_user(s, user, principal, remote_addr=client_address(request))
    return _read(user)
