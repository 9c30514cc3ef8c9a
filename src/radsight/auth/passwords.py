"""People and their passwords: argon2id hashes (``argon2-cffi``), never the password.

Signing in with a password is :mod:`radsight.auth.signin` (throttled and locked).
"""

from __future__ import annotations

from radsight.auth import hashing
from radsight.auth.principals import USER_ROLES
from radsight.errors import InvalidInput
from radsight.store import Session, people
from radsight.store.clock import utcnow
from radsight.store.tables import UserRow

MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return hashing.hash_password(password)


def create_user(
    s: Session,
    organisation_id: int,
    username: str,
    password: str,
    role: str,
    display_name: str = "",
    region_id: int | None = None,
) -> UserRow:
    if role not in USER_ROLES:
        raise InvalidInput(f"role must be one of {', '.join(USER_ROLES)}, not {role!r}")
    username = username.strip()
    if not username or len(username) > 64:
        raise InvalidInput("a username has 1 to 64 characters")
    return people.add_user(
        s,
        organisation_id=organisation_id,
        username=username,
        display_name=display_name or username,
        role=role,
        password_hash=hash_password(password),
        region_id=region_id,
    )


def set_password(s: Session, user: UserRow, password: str) -> None:
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    # a new password ends every session that the old one opened
    people.end_user_sessions(s, user.id)
