"""API tokens: random (``secrets``), shown once; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from radsight.auth.principals import PLATFORM_ROLES, TOKEN_ROLES, Principal
from radsight.errors import InvalidInput, NotAuthenticated
from radsight.store import Session, people
from radsight.store.clock import utcnow
from radsight.store.tables import ApiTokenRow

TOKEN_PREFIX = "rst_"
#: write last_used_at / last_seen_at at most this often (not on every request)
TOUCH_EVERY = timedelta(minutes=1)


def sha256_hex(text: str) -> str:
    """What is stored of a token or a session id: a copy of the database signs nobody in."""
    return hashlib.sha256(text.encode()).hexdigest()


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
    if role in PLATFORM_ROLES and organisation_id is not None:
        raise InvalidInput(f"an {role} token is platform-wide: give it no organisation")
    if role not in PLATFORM_ROLES and organisation_id is None:
        raise InvalidInput(f"a {role} token belongs to an organisation")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = people.add_token(
        s,
        organisation_id=organisation_id,
        user_id=user_id,
        name=name,
        prefix=plain[: len(TOKEN_PREFIX) + 6],
        token_hash=sha256_hex(plain),
        role=role,
        expires_at=utcnow() + timedelta(days=ttl_days) if ttl_days else None,
    )
    return row, plain


def resolve_token(s: Session, plain: str) -> Principal:
    row = people.find_token(s, sha256_hex(plain))
    now = utcnow()
    if row is None:
        raise NotAuthenticated("unknown token")
    if row.revoked_at is not None:
        raise NotAuthenticated(f"token {row.prefix}… was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise NotAuthenticated(f"token {row.prefix}… expired at {row.expires_at:%Y-%m-%d %H:%M}Z")
    region_id = None
    if row.user_id is not None:
        user = people.get_user_by_id(s, row.user_id)
        if user is None or user.disabled:
            raise NotAuthenticated(f"the user of token {row.prefix}… is disabled")
        region_id = user.region_id
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
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
