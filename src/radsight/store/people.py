"""Users, API tokens, web sessions and the audit trail.

Passwords are hashed with argon2id (``argon2-cffi``); tokens and session ids are random
(``secrets``) and only their SHA-256 is stored, so a copy of the database signs nobody in.

Who may see what is one rule, :meth:`Principal.organisation_ids`: a platform ``admin``
token sees every organisation; a ``supervisor`` with a region sees that region's
organisations; everyone else sees their own organisation only.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from radsight.errors import Conflict, InvalidInput, NotAuthenticated, NotFound
from radsight.store.clock import utcnow
from radsight.store.tables import (
    ApiTokenRow,
    AuditEventRow,
    OrganisationRow,
    UserRow,
    WebSessionRow,
)

#: roles a person can have
USER_ROLES = ("radiologist", "org_admin", "supervisor")
#: roles a token can have: a person's, or ``admin`` (platform-wide, e.g. the operator's CLI)
TOKEN_ROLES = (*USER_ROLES, "admin")
MIN_PASSWORD_LENGTH = 10
TOKEN_PREFIX = "rst_"

_hasher = PasswordHasher()
#: verified against when a username is unknown, so that both cases take the same time
_DUMMY_HASH = _hasher.hash("radsight-no-such-user")
#: write last_used_at / last_seen_at at most this often (not on every request)
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in person or a token."""

    kind: str  # user | token
    name: str  # username or token name (for the audit trail)
    role: str
    organisation_id: int | None  # None only for a platform admin token
    user_id: int | None = None
    region_id: int | None = None
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def organisation_ids(self, s: Session) -> list[int] | None:
        """The organisations this principal may see; ``None`` means all of them."""
        if self.is_admin:
            return None
        if self.role == "supervisor" and self.region_id is not None:
            return list(
                s.scalars(
                    select(OrganisationRow.id).where(OrganisationRow.region_id == self.region_id)
                )
            )
        return [self.organisation_id] if self.organisation_id is not None else []

    def may_see(self, s: Session, organisation_id: int) -> bool:
        ids = self.organisation_ids(s)
        return ids is None or organisation_id in ids


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


# --- users ------------------------------------------------------------------------------


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
    if s.scalar(select(UserRow).where(UserRow.username == username)):
        raise Conflict(f"user {username!r} already exists")
    now = utcnow()
    row = UserRow(
        organisation_id=organisation_id,
        region_id=region_id,
        username=username,
        display_name=display_name or username,
        role=role,
        password_hash=hash_password(password),
        created_at=now,
        password_changed_at=now,
    )
    s.add(row)
    s.flush()
    return row


def get_user(s: Session, username: str) -> UserRow:
    row = s.scalar(select(UserRow).where(UserRow.username == username))
    if row is None:
        raise NotFound(f"user {username!r} does not exist")
    return row


def list_users(s: Session, organisation_id: int | None = None) -> list[UserRow]:
    q = select(UserRow).order_by(UserRow.id)
    if organisation_id is not None:
        q = q.where(UserRow.organisation_id == organisation_id)
    return list(s.scalars(q))


def set_password(s: Session, user: UserRow, password: str) -> None:
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    # a new password ends every session that the old one opened
    for sess in s.scalars(
        select(WebSessionRow).where(
            WebSessionRow.user_id == user.id, WebSessionRow.ended_at.is_(None)
        )
    ):
        sess.ended_at = utcnow()


def authenticate(s: Session, username: str, password: str) -> UserRow:
    """The user with this password, or :class:`NotAuthenticated` (same message either way)."""
    user = s.scalar(select(UserRow).where(UserRow.username == username.strip()))
    wrong = NotAuthenticated("wrong username or password")
    if user is None:
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


def principal_for_user(user: UserRow) -> Principal:
    return Principal(
        kind="user",
        name=user.username,
        role=user.role,
        organisation_id=user.organisation_id,
        user_id=user.id,
        region_id=user.region_id,
    )


# --- tokens -----------------------------------------------------------------------------


def create_token(
    s: Session,
    name: str,
    role: str,
    organisation_id: int | None,
    user_id: int | None = None,
    ttl_days: float | None = None,
) -> tuple[ApiTokenRow, str]:
    """A new token; the plain text is returned once and never stored."""
    if role not in TOKEN_ROLES:
        raise InvalidInput(f"role must be one of {', '.join(TOKEN_ROLES)}, not {role!r}")
    if role == "admin" and organisation_id is not None:
        raise InvalidInput("an admin token is platform-wide: give it no organisation")
    if role != "admin" and organisation_id is None:
        raise InvalidInput(f"a {role} token belongs to an organisation")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiTokenRow(
        organisation_id=organisation_id,
        user_id=user_id,
        name=name,
        prefix=plain[: len(TOKEN_PREFIX) + 6],
        token_hash=_sha256(plain),
        role=role,
        created_at=now,
        expires_at=now + timedelta(days=ttl_days) if ttl_days else None,
    )
    s.add(row)
    s.flush()
    return row, plain


def list_tokens(s: Session, organisation_id: int | None = None) -> list[ApiTokenRow]:
    q = select(ApiTokenRow).order_by(ApiTokenRow.id)
    if organisation_id is not None:
        q = q.where(ApiTokenRow.organisation_id == organisation_id)
    return list(s.scalars(q))


def revoke_token(s: Session, token_id: int, organisation_id: int | None = None) -> ApiTokenRow:
    row = s.get(ApiTokenRow, token_id)
    if row is None or (organisation_id is not None and row.organisation_id != organisation_id):
        raise NotFound(f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def resolve_token(s: Session, plain: str) -> Principal:
    row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == _sha256(plain)))
    now = utcnow()
    if row is None:
        raise NotAuthenticated("unknown token")
    if row.revoked_at is not None:
        raise NotAuthenticated(f"token {row.prefix}… was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise NotAuthenticated(f"token {row.prefix}… expired at {row.expires_at:%Y-%m-%d %H:%M}Z")
    region_id = None
    if row.user_id is not None:
        user = s.get(UserRow, row.user_id)
        if user is None or user.disabled:
            raise NotAuthenticated(f"the user of token {row.prefix}… is disabled")
        region_id = user.region_id
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        row.last_used_at = now
    return Principal(
        kind="token",
        name=row.name,
        role=row.role,
        organisation_id=row.organisation_id,
        user_id=row.user_id,
        region_id=region_id,
        token_id=row.id,
    )


# --- web sessions -----------------------------------------------------------------------


@dataclass(frozen=True)
class WebSession:
    principal: Principal
    csrf_token: str
    display_name: str


def create_session(s: Session, user: UserRow, lifetime_s: float) -> tuple[str, str]:
    """A new session for a signed-in user: (cookie value, CSRF token)."""
    plain = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    s.add(
        WebSessionRow(
            user_id=user.id,
            session_hash=_sha256(plain),
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(seconds=lifetime_s),
            last_seen_at=now,
        )
    )
    s.flush()
    return plain, csrf


def resolve_session(s: Session, plain: str, idle_timeout_s: float) -> WebSession:
    """The live session for a cookie; sessions expire at a fixed time and when idle."""
    row = s.scalar(select(WebSessionRow).where(WebSessionRow.session_hash == _sha256(plain)))
    now = utcnow()
    if row is None or row.ended_at is not None:
        raise NotAuthenticated("not signed in")
    if row.expires_at <= now or now - row.last_seen_at > timedelta(seconds=idle_timeout_s):
        row.ended_at = now
        raise NotAuthenticated("your session expired: sign in again")
    user = s.get(UserRow, row.user_id)
    if user is None or user.disabled:
        raise NotAuthenticated("this user is disabled")
    if now - row.last_seen_at > _TOUCH_EVERY:
        row.last_seen_at = now
    return WebSession(principal_for_user(user), row.csrf_token, user.display_name)


def end_session(s: Session, plain: str) -> None:
    row = s.scalar(select(WebSessionRow).where(WebSessionRow.session_hash == _sha256(plain)))
    if row is not None and row.ended_at is None:
        row.ended_at = utcnow()


# --- audit ------------------------------------------------------------------------------


def record_audit(
    s: Session,
    principal: Principal | None,
    action: str,
    organisation_id: int | None = None,
    study_id: int | None = None,
    detail: dict[str, Any] | None = None,
    remote_addr: str = "",
    at: datetime | None = None,
) -> AuditEventRow:
    """One line of the audit trail (opened a study, gave a verdict, signed in, ...)."""
    row = AuditEventRow(
        organisation_id=organisation_id
        if organisation_id is not None
        else (principal.organisation_id if principal else None),
        user_id=principal.user_id if principal else None,
        actor=principal.name if principal else "",
        action=action,
        study_id=study_id,
        detail=detail or {},
        remote_addr=remote_addr[:64],
        created_at=at or utcnow(),
    )
    s.add(row)
    s.flush()
    return row


def list_audit(
    s: Session,
    organisation_ids: list[int] | None,
    study_id: int | None = None,
    action: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEventRow]:
    q = select(AuditEventRow).order_by(AuditEventRow.id.desc())
    if organisation_ids is not None:
        q = q.where(AuditEventRow.organisation_id.in_(organisation_ids))
    if study_id is not None:
        q = q.where(AuditEventRow.study_id == study_id)
    if action:
        q = q.where(AuditEventRow.action == action)
    return list(s.scalars(q.limit(limit).offset(offset)))
