"""Rows of users, API tokens, web sessions and the audit trail (SQL only).

What these rows mean (password hashing, minting tokens, session rules, who may see what)
is :mod:`radsight.auth`; this module only reads and writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from radsight.errors import Conflict, NotFound

# the audit trail's one write path and its chain: radsight.store.audit (re-exported here)
from radsight.store.audit import Actor as Actor
from radsight.store.audit import list_audit as list_audit
from radsight.store.audit import record_audit as record_audit
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import ApiTokenRow, SignInFailureRow, UserRow, WebSessionRow

# --- users ------------------------------------------------------------------------------


def add_user(
    s: Session,
    *,
    organisation_id: int | None,
    username: str,
    display_name: str,
    role: str,
    password_hash: str,
    region_id: int | None = None,
    auth_provider: str = "local",
    external_subject: str | None = None,
) -> UserRow:
    if find_user(s, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    now = utcnow()
    row = UserRow(
        organisation_id=organisation_id,
        region_id=region_id,
        username=username,
        display_name=display_name,
        role=role,
        password_hash=password_hash,
        created_at=now,
        password_changed_at=now,
        auth_provider=auth_provider,
        external_subject=external_subject,
    )
    s.add(row)
    s.flush()
    return row


def find_user(s: Session, username: str) -> UserRow | None:
    return s.scalar(select(UserRow).where(UserRow.username == username))


def find_user_by_subject(s: Session, external_subject: str) -> UserRow | None:
    """The single sign-on user of this issuer and subject (``"<iss>|<sub>"``)."""
    return s.scalar(select(UserRow).where(UserRow.external_subject == external_subject))


def get_user(s: Session, username: str) -> UserRow:
    row = find_user(s, username)
    if row is None:
        raise NotFound(f"user {username!r} does not exist")
    return row


def get_user_by_id(s: Session, user_id: int) -> UserRow | None:
    return s.get(UserRow, user_id)


def list_users(s: Session, *, scope: Scope) -> list[UserRow]:
    q = select(UserRow).order_by(UserRow.id).where(scope.where(UserRow.organisation_id))
    return list(s.scalars(q))


def end_user_sessions(s: Session, user_id: int) -> None:
    for row in s.scalars(
        select(WebSessionRow).where(
            WebSessionRow.user_id == user_id, WebSessionRow.ended_at.is_(None)
        )
    ):
        row.ended_at = utcnow()


def ping(s: Session) -> None:
    """A round trip to the database (``/health``: up means the database answers)."""
    s.execute(text("SELECT 1"))


# --- sign-in failures (the throttle's memory, shared by every gateway) -----------------


def add_sign_in_failure(s: Session, *, username: str, remote_addr: str, at: datetime) -> None:
    """One failed sign-in; ``username`` is empty when no such user exists."""
    s.add(SignInFailureRow(username=username[:64], remote_addr=remote_addr[:64], created_at=at))
    s.flush()


def count_sign_in_failures(
    s: Session, *, since: datetime, username: str | None = None, remote_addr: str | None = None
) -> tuple[int, datetime | None]:
    """Failures since ``since`` of one account or from one address: (count, the oldest)."""
    q = select(func.count(), func.min(SignInFailureRow.created_at)).where(
        SignInFailureRow.created_at >= since
    )
    if username is not None:
        q = q.where(SignInFailureRow.username == username)
    if remote_addr is not None:
        q = q.where(SignInFailureRow.remote_addr == remote_addr)
    n, oldest = s.execute(q).one()
    return int(n), oldest


def forget_account_failures(s: Session, username: str) -> None:
    """An account's failures stop counting against it (they still count for their address)."""
    s.execute(
        update(SignInFailureRow).where(SignInFailureRow.username == username).values(username="")
    )


def purge_sign_in_failures(s: Session, before: datetime) -> None:
    s.execute(delete(SignInFailureRow).where(SignInFailureRow.created_at < before))


# --- tokens -----------------------------------------------------------------------------


def add_token(s: Session, **fields: Any) -> ApiTokenRow:
    row = ApiTokenRow(created_at=utcnow(), **fields)
    s.add(row)
    s.flush()
    return row


def find_token(s: Session, token_hash: str) -> ApiTokenRow | None:
    return s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash))


def list_tokens(s: Session, *, scope: Scope) -> list[ApiTokenRow]:
    """Tokens of the scope's organisations (platform admin tokens only in ``Scope.ALL``)."""
    q = select(ApiTokenRow).order_by(ApiTokenRow.id)
    return list(s.scalars(q.where(scope.where(ApiTokenRow.organisation_id))))


def revoke_token(s: Session, token_id: int, *, scope: Scope) -> ApiTokenRow:
    row = s.get(ApiTokenRow, token_id)
    if row is None or not scope.includes(row.organisation_id):
        raise NotFound(f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


# --- web sessions -----------------------------------------------------------------------


def add_session(s: Session, **fields: Any) -> WebSessionRow:
    row = WebSessionRow(**fields)
    s.add(row)
    s.flush()
    return row


def find_session(s: Session, session_hash: str) -> WebSessionRow | None:
    return s.scalar(select(WebSessionRow).where(WebSessionRow.session_hash == session_hash))
