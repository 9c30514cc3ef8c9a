"""Sign-in with a password: throttled per client address, locked per account.

The rules (docs/security.md, "Sign-in"), with the ``signin_*`` settings:

1. An address with ``signin_max_failures_per_address`` failures within ``signin_window_s``
   is refused (:class:`TooManyAttempts`, 429 with ``Retry-After``) before anything else:
   no user is looked up and no password is hashed.
2. Unknown, locked and disabled accounts cost the same argon2 verification as a known one
   (against a dummy hash) and get the same answer as a wrong password: the caller cannot
   tell which usernames exist, nor whether a password of a locked account was right.
   The failure row, the log and the audit trail say what happened (``reason``).
3. ``signin_max_failures_per_account`` failures of one account within the window lock it
   for ``signin_lockout_s`` (0: until an admin unlocks it, :func:`unlock_user`); the lock
   and its end are audit events.
4. A success clears the account's count.

Failures are rows of ``sign_in_failures`` in the database, so several gateways on one
database share them. Hashing goes through :mod:`radsight.auth.hashing`'s bounded gate.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import datetime, timedelta
from typing import ClassVar

from radsight.auth.hashing import dummy_hash, gate, hash_password, needs_rehash, verify_password
from radsight.config import Settings
from radsight.errors import NotAuthenticated, TooManyAttempts
from radsight.store import Session, people
from radsight.store.clock import utcnow
from radsight.store.db import Database
from radsight.store.tables import UserRow

log = logging.getLogger(__name__)

#: the one answer to a failed sign-in, whatever the reason (no user enumeration)
WRONG = (
    "wrong username or password (after repeated failures an account is locked: "
    "ask your administrator to unlock it)"
)


def authenticate(
    db: Database, settings: Settings, username: str, password: str, remote_addr: str = ""
) -> UserRow:
    """The user with this password (a detached row), or :class:`NotAuthenticated`
    (:data:`WRONG`); :class:`TooManyAttempts` when ``remote_addr`` has failed too often, or
    when too many sign-ins are being hashed at once.

    The database is read and written in short units of work around the hash, never
    held while argon2 runs: on SQLite every unit of work holds the write lock, so a
    sign-in that hashed inside one would hold up every other request (finding 5).
    """
    hash_gate = gate(settings.password_hash_concurrency)
    hash_gate.check()
    _ThrottledAddresses.check(remote_addr)
    dummy = dummy_hash()  # before the look-up: a process's first sign-in costs the same
    throttled: TooManyAttempts | None = None
    user: UserRow | None = None
    with db.session() as s:
        throttled = _address_throttle(s, settings, remote_addr)
        if throttled is None:
            user = people.find_user(s, username.strip())
            if user is not None and user.auth_provider != "local":
                user = None  # single sign-on users have no password: as an unknown name
            if user is not None and user.locked and lock_expired(user):
                _unlock(s, user, actor=None, why="expired")
    if throttled is not None:
        raise throttled
    # unknown and locked accounts cost the same argon2 work (a locked account's password
    # is never checked: the answer would tell whether it was right)
    stored = user.password_hash if user is not None and not user.locked else dummy
    matches = verify_password(stored, password, hash_gate)
    reason = ""
    if user is None:
        reason = "unknown_user"
    elif user.locked:
        reason = "locked"
    elif not matches:
        reason = "wrong_password"
    elif user.disabled:
        reason = "disabled"
    if reason:
        with db.session() as s:
            current = s.get(UserRow, user.id) if user is not None else None
            _record_failure(s, settings, current, username, remote_addr, reason, utcnow())
        raise NotAuthenticated(WRONG)
    assert user is not None
    new_hash = hash_password(password, hash_gate) if needs_rehash(user.password_hash) else None
    with db.session() as s:
        current = s.get(UserRow, user.id)
        assert current is not None
        if current.failed_sign_ins:
            current.failed_sign_ins = 0
            people.forget_account_failures(s, current.username)
        if new_hash is not None:
            current.password_hash = new_hash
    return current


def _address_throttle(s: Session, settings: Settings, remote_addr: str) -> TooManyAttempts | None:
    """Refused at once: ``remote_addr`` failed too often within the window."""
    if not remote_addr:
        return None
    now = utcnow()
    window = timedelta(seconds=settings.signin_window_s)
    n, oldest = people.count_sign_in_failures(s, since=now - window, remote_addr=remote_addr)
    if n < settings.signin_max_failures_per_address or oldest is None:
        return None
    until = oldest + window
    _ThrottledAddresses.remember(remote_addr, until)
    return _throttled(until - now)


def _throttled(wait: timedelta) -> TooManyAttempts:
    retry = max(1, math.ceil(wait.total_seconds()))
    return TooManyAttempts(
        f"too many failed sign-ins from your address: try again in {retry} s", retry_after_s=retry
    )


class _ThrottledAddresses:
    """Addresses this process found throttled, until when: a flood from one of them is
    answered from memory, without a database round trip (the database stays the truth
    that gateways share; a process that has not seen the address asks it)."""

    MAX = 10_000
    _until: ClassVar[dict[str, datetime]] = {}
    _lock = threading.Lock()

    @classmethod
    def remember(cls, remote_addr: str, until: datetime) -> None:
        with cls._lock:
            if len(cls._until) >= cls.MAX:
                now = utcnow()
                for addr in [a for a, u in cls._until.items() if u <= now] or list(cls._until):
                    del cls._until[addr]
            cls._until[remote_addr] = until

    @classmethod
    def check(cls, remote_addr: str) -> None:
        until = cls._until.get(remote_addr) if remote_addr else None
        if until is None:
            return
        now = utcnow()
        if until > now:
            raise _throttled(until - now)
        with cls._lock:
            cls._until.pop(remote_addr, None)


def lock_expired(user: UserRow, now: datetime | None = None) -> bool:
    return user.locked_until is not None and user.locked_until <= (now or utcnow())


def lock_state(user: UserRow) -> str:
    """How a listing shows the lock: '', 'until 2026-12-07 22:15Z' or 'until unlocked'."""
    if not user.locked or lock_expired(user):
        return ""
    if user.locked_until is None:
        return "until unlocked"
    return f"until {user.locked_until:%Y-%m-%d %H:%M}Z"


def unlock_user(s: Session, user: UserRow, actor: people.Actor, remote_addr: str = "") -> bool:
    """An admin lifts the lock and clears the count; False when it was not locked."""
    was_locked = user.locked and not lock_expired(user)
    _unlock(s, user, actor, "admin", remote_addr)
    return was_locked


def _unlock(
    s: Session, user: UserRow, actor: people.Actor | None, why: str, remote_addr: str = ""
) -> None:
    was_locked = user.locked
    user.locked, user.locked_until, user.failed_sign_ins = False, None, 0
    people.forget_account_failures(s, user.username)
    if was_locked:
        people.record_audit(
            s,
            actor,
            "user.unlock",
            organisation_id=user.organisation_id,
            detail={"username": user.username, "reason": why},
            remote_addr=remote_addr,
        )


def _record_failure(
    s: Session,
    settings: Settings,
    user: UserRow | None,
    typed: str,
    remote_addr: str,
    reason: str,
    now: datetime,
) -> None:
    since = now - timedelta(seconds=settings.signin_window_s)
    people.purge_sign_in_failures(s, since)
    people.add_sign_in_failure(
        s, username=user.username if user else "", remote_addr=remote_addr, at=now
    )
    people.record_audit(
        s,
        None,
        "signin.failed",
        organisation_id=user.organisation_id if user else None,
        detail={"username": typed.strip()[:64], "reason": reason},
        remote_addr=remote_addr,
        at=now,
    )
    log.info("sign-in failed: %s from %s", reason, remote_addr or "?")
    if user is not None and not user.locked:
        n, _ = people.count_sign_in_failures(s, since=since, username=user.username)
        user.failed_sign_ins = n
        if n >= settings.signin_max_failures_per_account:
            lockout = settings.signin_lockout_s
            user.locked = True
            user.locked_until = now + timedelta(seconds=lockout) if lockout else None
            until = f"{user.locked_until:%Y-%m-%d %H:%M:%S}Z" if user.locked_until else ""
            people.record_audit(
                s,
                None,
                "user.locked",
                organisation_id=user.organisation_id,
                detail={"username": user.username, "failures": n, "until": until},
                remote_addr=remote_addr,
                at=now,
            )
            log.warning(
                "user %d locked %s after %d failed sign-ins",
                user.id,
                f"until {until}" if until else "until an admin unlocks it",
                n,
            )
    if remote_addr:
        n, _ = people.count_sign_in_failures(s, since=since, remote_addr=remote_addr)
        if n == settings.signin_max_failures_per_address:
            people.record_audit(
                s,
                None,
                "signin.throttled",
                detail={"failures": n, "window_s": settings.signin_window_s},
                remote_addr=remote_addr,
                at=now,
            )
            log.warning("sign-in from %s throttled after %d failures", remote_addr, n)
