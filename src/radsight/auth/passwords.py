"""People and their passwords: argon2id hashes (``argon2-cffi``), never the password."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from radsight.auth.principals import USER_ROLES
from radsight.errors import InvalidInput, NotAuthenticated
from radsight.store import Session, people
from radsight.store.clock import utcnow
from radsight.store.tables import UserRow

MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when a username is unknown, so that both cases take the same time.
    Made at the first sign-in of a process, not at import (every radsight process, CLI
    commands and workers included, imports this module; an argon2 hash costs ~0.2 s)."""
    return _hasher.hash("radsight-no-such-user")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


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


def authenticate(s: Session, username: str, password: str) -> UserRow:
    """The user with this password, or :class:`NotAuthenticated` (same message either way)."""
    dummy = _dummy_hash()  # before the look-up: a first sign-in costs the same either way
    user = people.find_user(s, username.strip())
    wrong = NotAuthenticated("wrong username or password")
    if user is None:
        try:
            _hasher.verify(dummy, password)
        except VerificationError:
            pass
        raise wrong
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise wrong from None
    if user.disabled:
        raise NotAuthenticated(f"user {username!r} is disabled")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user
