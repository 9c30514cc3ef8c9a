"""Users, tokens, sessions (radsight.auth) and their rows and the audit trail
(radsight.store.people) on both databases."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from radsight import auth
from radsight.errors import Conflict, NotAuthenticated, NotFound
from radsight.store import people, tenants
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import ApiTokenRow, UserRow


@pytest.fixture
def orgs(runtime):  # type: ignore[no-untyped-def]
    with runtime.db.session() as s:
        a = tenants.create_organisation(s, "A", "North")
        b = tenants.create_organisation(s, "B", "North")
        c = tenants.create_organisation(s, "C", "South")
        return a.id, b.id, c.id


class Clock:
    """utcnow() as the store and radsight.auth see it, moved forward by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    for module in (people, auth.passwords, auth.tokens, auth.sessions):
        monkeypatch.setattr(module, "utcnow", c)
    return c


def test_passwords_are_hashed_and_checked(runtime, orgs):
    a, _b, _c = orgs
    with runtime.db.session() as s:
        user = auth.create_user(s, a, "alice", "correct horse 1", "radiologist")
        assert user.password_hash.startswith("$argon2id$")
        assert "correct horse" not in user.password_hash
    db, settings = runtime.db, runtime.settings
    assert auth.authenticate(db, settings, "alice", "correct horse 1").username == "alice"
    with pytest.raises(NotAuthenticated, match="wrong username or password"):
        auth.authenticate(db, settings, "alice", "correct horse 2")
    with pytest.raises(NotAuthenticated, match="wrong username or password"):
        auth.authenticate(db, settings, "mallory", "correct horse 1")


@pytest.mark.parametrize(
    ("username", "password", "role", "error"),
    [
        ("bob", "short", "radiologist", "at least 10 characters"),
        ("bob", "long enough pw", "surgeon", "role must be one of"),
        ("", "long enough pw", "radiologist", "1 to 64 characters"),
    ],
)
def test_bad_users_are_refused(runtime, orgs, username, password, role, error):
    with runtime.db.session() as s, pytest.raises(ValueError, match=error):
        auth.create_user(s, orgs[0], username, password, role)


def test_duplicate_and_disabled_users(runtime, orgs):
    a, _b, _c = orgs
    with runtime.db.session() as s:
        auth.create_user(s, a, "carol", "carol-password", "org_admin")
    with runtime.db.session() as s, pytest.raises(Conflict):
        auth.create_user(s, a, "carol", "another-password", "radiologist")
    with runtime.db.session() as s:
        people.get_user(s, "carol").disabled = True
    # a disabled account answers as a wrong password (the right one is no oracle); the
    # audit trail says why
    with pytest.raises(NotAuthenticated, match="wrong username"):
        auth.authenticate(runtime.db, runtime.settings, "carol", "carol-password")
    with runtime.db.session() as s:
        (event,) = people.list_audit(s, scope=Scope.ALL, action="signin.failed")
        assert event.detail == {"username": "carol", "reason": "disabled"}


def test_tokens_expire_and_are_revoked(runtime, orgs, clock):
    a, _b, _c = orgs
    with runtime.db.session() as s:
        row, plain = auth.create_token(s, "pacs", "radiologist", a, ttl_days=1)
        token_id = row.id
        stored = s.get(ApiTokenRow, token_id)
        assert plain.startswith("rst_") and plain not in (stored.token_hash, stored.prefix)
    with runtime.db.session() as s:
        principal = auth.resolve_token(s, plain)
        assert (principal.role, principal.organisation_id, principal.name) == (
            "radiologist",
            a,
            "pacs",
        )
        with pytest.raises(NotAuthenticated, match="unknown token"):
            auth.resolve_token(s, plain + "x")
    clock.advance(days=1, seconds=1)
    with runtime.db.session() as s, pytest.raises(NotAuthenticated, match="expired"):
        auth.resolve_token(s, plain)

    with runtime.db.session() as s:
        _row, forever = auth.create_token(s, "script", "org_admin", a)
    with runtime.db.session() as s:
        people.revoke_token(s, _row.id, scope=Scope.ALL)
    with runtime.db.session() as s, pytest.raises(NotAuthenticated, match="revoked"):
        auth.resolve_token(s, forever)
    with runtime.db.session() as s, pytest.raises(NotFound):
        people.revoke_token(s, 999_999, scope=Scope.ALL)


def test_token_rules(runtime, orgs):
    a, _b, _c = orgs
    with runtime.db.session() as s:
        with pytest.raises(ValueError, match="platform-wide"):
            auth.create_token(s, "x", "admin", a)
        with pytest.raises(ValueError, match="belongs to an organisation"):
            auth.create_token(s, "x", "radiologist", None)
        _row, admin = auth.create_token(s, "ops", "admin", None)
        user = auth.create_user(s, a, "dave", "dave-password", "radiologist")
        _row, personal = auth.create_token(s, "dave's", "radiologist", a, user.id)
    with runtime.db.session() as s:
        assert auth.scope_of(s, auth.resolve_token(s, admin)) is Scope.ALL
        s.get(UserRow, user.id).disabled = True
    with runtime.db.session() as s, pytest.raises(NotAuthenticated, match="disabled"):
        auth.resolve_token(s, personal)


def test_sessions_expire_when_idle_and_at_their_end(runtime, orgs, clock):
    a, _b, _c = orgs
    with runtime.db.session() as s:
        user = auth.create_user(s, a, "erin", "erin-password", "radiologist")
        cookie, csrf = auth.create_session(s, user, lifetime_s=3600)
    with runtime.db.session() as s:
        web = auth.resolve_session(s, cookie, idle_timeout_s=600)
        assert web.csrf_token == csrf and web.principal.name == "erin"
    # active every 9 minutes: the idle timeout never ends it, the lifetime does
    for _ in range(6):
        clock.advance(minutes=9)
        with runtime.db.session() as s:
            auth.resolve_session(s, cookie, idle_timeout_s=600)
    clock.advance(minutes=9)
    with runtime.db.session() as s, pytest.raises(NotAuthenticated, match="expired"):
        auth.resolve_session(s, cookie, idle_timeout_s=600)
    with runtime.db.session() as s, pytest.raises(NotAuthenticated, match="not signed in"):
        auth.resolve_session(s, cookie, idle_timeout_s=600)  # ended, stays ended

    with runtime.db.session() as s:
        cookie2, _csrf = auth.create_session(s, people.get_user(s, "erin"), lifetime_s=3600)
    clock.advance(minutes=11)
    with runtime.db.session() as s, pytest.raises(NotAuthenticated, match="expired"):
        auth.resolve_session(s, cookie2, idle_timeout_s=600)

    with runtime.db.session() as s:
        cookie3, _csrf = auth.create_session(s, people.get_user(s, "erin"), lifetime_s=3600)
    with runtime.db.session() as s:
        auth.set_password(s, people.get_user(s, "erin"), "a new password")
    with runtime.db.session() as s, pytest.raises(NotAuthenticated):
        auth.resolve_session(s, cookie3, idle_timeout_s=600)


def test_who_sees_which_organisations(runtime, orgs):
    a, b, c = orgs
    with runtime.db.session() as s:
        north = tenants.get_organisation(s, a).region_id
        supervisor = auth.create_user(
            s, a, "frank", "frank-password", "supervisor", region_id=north
        )
        local = auth.create_user(s, a, "gina", "gina-password", "supervisor")
        radiologist = auth.create_user(s, c, "hana", "hana-password", "radiologist")
        regional = auth.principal_for_user(supervisor)
        assert auth.scope_of(s, regional) == Scope.orgs([a, b])
        assert auth.scope_of(s, regional).includes(b)
        assert not auth.scope_of(s, regional).includes(c)
        assert auth.scope_of(s, auth.principal_for_user(local)) == Scope.of(a)
        assert auth.scope_of(s, auth.principal_for_user(radiologist)) == Scope.of(c)


def test_audit_trail(runtime, orgs):
    a, b, _c = orgs
    with runtime.db.session() as s:
        user = auth.create_user(s, a, "ivan", "ivan-password", "radiologist")
        p = auth.principal_for_user(user)
        people.record_audit(s, p, "study.retrieve", study_id=None, detail={"resource": "study"})
        people.record_audit(s, p, "verdict.create", organisation_id=b)
    with runtime.db.session() as s:
        assert [e.action for e in people.list_audit(s, scope=Scope.of(a))] == ["study.retrieve"]
        assert [e.action for e in people.list_audit(s, scope=Scope.ALL)] == [
            "verdict.create",
            "study.retrieve",
        ]
        (only,) = people.list_audit(s, scope=Scope.ALL, action="study.retrieve")
        assert only.actor == "ivan" and only.detail == {"resource": "study"}


@pytest.mark.parametrize("role", [*auth.USER_ROLES, *auth.TOKEN_ROLES])
def test_only_a_platform_role_sees_every_organisation(runtime, orgs, role):  # type: ignore[no-untyped-def]
    a, _b, _c = orgs
    platform = role in auth.PLATFORM_ROLES
    with runtime.db.session() as s:
        north = tenants.get_organisation(s, a).region_id
        _row, plain = auth.create_token(s, f"t-{role}", role, None if platform else a)
    with runtime.db.session() as s:
        principal = auth.resolve_token(s, plain)
        # even with a region, a non-platform role never reaches Scope.ALL
        regional = auth.Principal("token", "r", role, None if platform else a, region_id=north)
        assert (auth.scope_of(s, principal) is Scope.ALL) == platform
        assert (auth.scope_of(s, regional) is Scope.ALL) == platform
        assert auth.scope_of(s, principal).includes(None) == platform


def test_a_principal_without_an_organisation_sees_nothing(runtime, orgs):  # type: ignore[no-untyped-def]
    a, b, c = orgs
    with runtime.db.session() as s:
        nobody = auth.Principal("token", "stray", "radiologist", None)
        scope = auth.scope_of(s, nobody)
        assert scope == Scope.orgs([]) and not any(scope.includes(o) for o in (a, b, c))
