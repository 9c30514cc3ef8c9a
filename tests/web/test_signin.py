"""Sign-in throttling and lockout (issue 16, finding 5), as a browser and an admin see it.

Before: 77 of 77 wrong passwords were checked, none refused. Now an account locks after
``signin_max_failures_per_account`` failures, an address is answered 429 without any
password being hashed after ``signin_max_failures_per_address``, unknown usernames count
for their address, and the answers never tell which accounts exist. In-process
(FastAPI's TestClient, one client address per ``TestClient``) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.auth import hashing, signin
from radsight.errors import TooManyAttempts
from radsight.pipeline.routing import load_rules
from radsight.store import people, tenants
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.web import create_app

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True)
def _no_remembered_addresses(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(signin._ThrottledAddresses, "_until", {})


@pytest.fixture
def site(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    """Two organisations with a radiologist and an org admin each; an app; a clock."""
    with runtime.db.session() as s:
        a = tenants.create_organisation(s, "General Hospital", "North").id
        b = tenants.create_organisation(s, "Other Clinic", "South").id
        auth.create_user(s, a, "dr.ames", PASSWORD, "radiologist")
        admin = auth.create_user(s, a, "it.admin", PASSWORD, "org_admin")
        other = auth.create_user(s, b, "it.other", PASSWORD, "org_admin")
        tokens = {
            "admin": auth.create_token(s, "t", "org_admin", a, user_id=admin.id)[1],
            "other": auth.create_token(s, "t", "org_admin", b, user_id=other.id)[1],
        }
    clock = Clock()
    monkeypatch.setattr(signin, "utcnow", clock)
    checked: list[str] = []  # hashes argon2 verified: the user's own, or the dummy
    real_verify = signin.verify_password

    def counting_verify(stored_hash: str, password: str, gate: hashing.HashGate) -> bool:
        checked.append("dummy" if stored_hash == hashing.dummy_hash() else "user")
        return real_verify(stored_hash, password, gate)

    monkeypatch.setattr(signin, "verify_password", counting_verify)
    registry = Registry.from_entry_points()
    app = create_app(runtime, registry, load_rules(known_algorithms=registry.refs()))

    def browser(address: str) -> TestClient:
        return TestClient(app, client=(address, 50000), follow_redirects=False)

    return {"rt": runtime, "browser": browser, "clock": clock, "checked": checked, **tokens}


def sign_in(c: TestClient, username: str, password: str):  # type: ignore[no-untyped-def]
    page = c.get("/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    return c.post("/signin", data={"username": username, "password": password,
                                   "csrf_token": token})  # fmt: skip


def error_of(r) -> str:  # type: ignore[no-untyped-def]
    return re.search(r'id="signin-error">([^<]*)<', r.text)[1]  # type: ignore[index]


def audit(rt, action: str) -> list:  # type: ignore[no-untyped-def]
    with rt.db.session() as s:
        return [(e.detail, e.remote_addr) for e in people.list_audit(
            s, scope=Scope.ALL, action=action)]  # fmt: skip


def test_twenty_wrong_passwords_lock_the_account_until_an_admin_unlocks_it(site):
    rt, checked = site["rt"], site["checked"]
    # 20 wrong passwords from 20 addresses (each address stays under its own limit)
    answers = [sign_in(site["browser"](f"10.0.1.{i}"), "dr.ames", f"guess {i}") for i in range(20)]
    assert {r.status_code for r in answers} == {401}
    # only the first five were checked against the account; then it was locked
    assert checked.count("user") == rt.settings.signin_max_failures_per_account == 5
    assert checked.count("dummy") == 15  # the same argon2 cost, so the same time

    # the right password is refused now, with the very answer of a wrong one ...
    browser = site["browser"]("10.0.2.1")
    refused = sign_in(browser, "dr.ames", PASSWORD)
    unknown = sign_in(site["browser"]("10.0.2.2"), "dr.nobody", PASSWORD)
    assert refused.status_code == unknown.status_code == 401
    assert error_of(refused) == error_of(unknown) == error_of(answers[0])
    assert "wrong username or password" in error_of(refused) and "locked" in error_of(refused)
    # ... while the record says what happened
    ((locked, addr),) = audit(rt, "user.locked")
    assert (locked["username"], locked["failures"], addr) == ("dr.ames", 5, "10.0.1.4")
    reasons = [d["reason"] for d, _ in audit(rt, "signin.failed")]
    assert reasons.count("locked") == 16 and reasons.count("unknown_user") == 1
    listed = site["browser"]("10.0.3.1").get(
        "/api/users", headers={"Authorization": f"Bearer {site['admin']}"}
    )
    (ames,) = [u for u in listed.json() if u["username"] == "dr.ames"]
    assert ames["locked"].startswith("until 20") and ames["failed_sign_ins"] == 5

    # another organisation's admin cannot see or unlock the user: 404, as if absent
    admin = site["browser"]("10.0.3.1")
    r = admin.post(
        "/api/users/dr.ames/unlock", headers={"Authorization": f"Bearer {site['other']}"}
    )
    assert r.status_code == 404
    r = admin.post(
        "/api/users/dr.ames/unlock", headers={"Authorization": f"Bearer {site['admin']}"}
    )
    assert r.status_code == 200 and r.json()["locked"] == "" and r.json()["failed_sign_ins"] == 0
    ((unlock, _),) = audit(rt, "user.unlock")
    assert unlock == {"username": "dr.ames", "reason": "admin"}
    r = sign_in(browser, "dr.ames", PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/worklist"


def test_a_lock_ends_after_signin_lockout_s_and_0_means_until_unlocked(site):
    rt, clock = site["rt"], site["clock"]
    for lockout, locked_after_a_day in ((600.0, False), (0.0, True)):
        rt.settings = rt.settings.model_copy(update={"signin_lockout_s": lockout})
        browser = site["browser"](f"10.0.4.{int(lockout)}")
        for i in range(5):
            assert sign_in(browser, "dr.ames", f"guess {i}").status_code == 401
        assert sign_in(browser, "dr.ames", PASSWORD).status_code == 401
        clock.now += timedelta(days=1)
        r = sign_in(browser, "dr.ames", PASSWORD)
        assert (r.status_code == 401) is locked_after_a_day
    # a success cleared the count: four failures later the account is still open
    with rt.db.session() as s:
        auth.unlock_user(s, people.get_user(s, "dr.ames"), auth.Principal(
            kind="cli", name="cli:test", role="admin", organisation_id=None))  # fmt: skip
    browser = site["browser"]("10.0.4.99")
    assert sign_in(browser, "dr.ames", PASSWORD).status_code == 303
    for i in range(4):
        sign_in(browser, "dr.ames", f"guess {i}")
    assert sign_in(browser, "dr.ames", PASSWORD).status_code == 303
    for i in range(4):
        sign_in(browser, "dr.ames", f"guess {i}")
    assert sign_in(browser, "dr.ames", PASSWORD).status_code == 303


def test_an_address_is_throttled_without_hashing_and_unknown_users_count(site):
    rt, checked = site["rt"], site["checked"]
    attacker = site["browser"]("192.0.2.66")
    # unknown usernames (a dictionary attack on names) count for the address
    for i in range(rt.settings.signin_max_failures_per_address):
        assert sign_in(attacker, f"user{i}", "password123").status_code == 401
    assert len(checked) == 20
    r = sign_in(attacker, "dr.ames", PASSWORD)  # even the right password: not checked
    assert r.status_code == 429 and len(checked) == 20
    retry_after = int(r.headers["retry-after"])
    assert 0 < retry_after <= rt.settings.signin_window_s
    assert (
        error_of(r) == f"too many failed sign-ins from your address: try again in {retry_after} s"
    )
    ((throttled, addr),) = audit(rt, "signin.throttled")
    assert addr == "192.0.2.66" and throttled["failures"] == 20
    # the throttled attempts are not recorded one by one (no row flood)
    assert len(audit(rt, "signin.failed")) == 20
    # nobody else is affected, and after the window the address may try again
    assert sign_in(site["browser"]("192.0.2.67"), "dr.ames", PASSWORD).status_code == 303
    site["clock"].now += timedelta(seconds=rt.settings.signin_window_s + 1)
    assert sign_in(attacker, "dr.ames", PASSWORD).status_code == 303


def test_a_full_hashing_queue_answers_at_once(monkeypatch):
    """password_hash_concurrency slots, 4 waiters per slot; the next caller gets 429."""
    monkeypatch.setattr(hashing, "WAIT_S", 5.0)
    gate = hashing.HashGate(1)
    held, release = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def holder() -> None:
        with gate.slot():
            held.set()
            release.wait(10)

    def waiter() -> None:
        with gate.slot():
            outcomes.append("hashed")

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    assert held.wait(5)
    threads += [threading.Thread(target=waiter) for _ in range(gate.max_waiting)]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 5
    while gate._waiting < gate.max_waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(TooManyAttempts, match="sign-in is busy") as refused:
        with gate.slot():
            pass
    assert refused.value.retry_after_s == hashing.BUSY_RETRY_S
    release.set()
    for t in threads:
        t.join(10)
    assert outcomes == ["hashed"] * 4
