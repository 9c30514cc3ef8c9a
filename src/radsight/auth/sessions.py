"""Web sessions: a random cookie (only its SHA-256 stored) and a CSRF token per session.

A session ends at a fixed time after sign-in, after ``idle_timeout_s`` without a request,
at sign-out, and when the user's password changes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from radsight.auth.principals import Principal, principal_for_user
from radsight.auth.tokens import TOUCH_EVERY, sha256_hex
from radsight.errors import NotAuthenticated
from radsight.store import Session, people
from radsight.store.clock import utcnow
from radsight.store.tables import UserRow


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
    people.add_session(
        s,
        user_id=user.id,
        session_hash=sha256_hex(plain),
        csrf_token=csrf,
        created_at=now,
        expires_at=now + timedelta(seconds=lifetime_s),
        last_seen_at=now,
    )
    return plain, csrf


def resolve_session(s: Session, plain: str, idle_timeout_s: float) -> WebSession:
    """The live session for a cookie; sessions expire at a fixed time and when idle."""
    row = people.find_session(s, sha256_hex(plain))
    now = utcnow()
    if row is None or row.ended_at is not None:
        raise NotAuthenticated("not signed in")
    if row.expires_at <= now or now - row.last_seen_at > timedelta(seconds=idle_timeout_s):
        row.ended_at = now
        raise NotAuthenticated("your session expired: sign in again")
    user = people.get_user_by_id(s, row.user_id)
    if user is None or user.disabled:
        raise NotAuthenticated("this user is disabled")
    if now - row.last_seen_at > TOUCH_EVERY:
        row.last_seen_at = now
    return WebSession(principal_for_user(user), row.csrf_token, user.display_name)


def end_session(s: Session, plain: str) -> None:
    row = people.find_session(s, sha256_hex(plain))
    if row is not None and row.ended_at is None:
        row.ended_at = utcnow()
