"""People and their passwords: argon2id hashes (``argon2-cffi``), never the password.

Only local users (``auth_provider == "local"``) sign in with a password; a single sign-on
user (:mod:`radsight.auth.oidc`) is refused here as an unknown name would be.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from radsight.auth.principals import USER_ROLES
from radsight.errors import InvalidInput, NotAuthenticated
from radsight.store import Session, people
from radsight.store.clock import utcnow
from radsight.store.tables import UserRow

MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()
#: verified against when a username is unknown, so that both cases take the same time
_DUMMY_HASH = _hasher.hash("radsight-no-such-user")


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
    user = people.find_user(s, username.strip())
    wrong = NotAuthenticated("wrong username or password")
    # a single sign-on user has no password here: refused exactly as an unknown name
    if user is None or user.auth_provider != "local":
        try:
            _hasher.verify(_DUMMY_HASH, password)
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
