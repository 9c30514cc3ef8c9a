"""``radsight user ...`` and ``radsight token ...`` as an operator uses them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from radsight import auth
from radsight.cli.main import cli
from radsight.config import load_settings
from radsight.errors import NotAuthenticated
from radsight.runtime import Runtime
from radsight.store import people
from radsight.store.scope import Scope


@pytest.fixture
def run(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    for key in [k for k in __import__("os").environ if k.startswith("RADSIGHT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RADSIGHT_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args), input=stdin)

    assert invoke("org", "add", "City", "--region", "North").exit_code == 0
    return invoke


def _runtime(tmp_path) -> Runtime:  # type: ignore[no-untyped-def]
    return Runtime.open(load_settings(None, data_dir=tmp_path / "data"), run_migrations=False)


def test_users(run, tmp_path):
    res = run("user", "add", "alice", "--org", "City", "--role", "radiologist",
              "--password-stdin", stdin="a long password\n")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "user 1 'alice' (radiologist) of 'City' added" in res.output
    res = run("user", "add", "alice", "--org", "City", "--role", "radiologist",
              "--password-stdin", stdin="a long password\n")  # fmt: skip
    assert res.exit_code == 1 and "error[conflict]: user 'alice' already exists" in res.output
    res = run("user", "add", "bob", "--org", "City", "--role", "radiologist",
              "--password-stdin", stdin="short\n")  # fmt: skip
    assert res.exit_code == 1 and "at least 10 characters" in res.output
    res = run("user", "add", "carol", "--org", "Nowhere", "--role", "radiologist",
              "--password-stdin", stdin="a long password\n")  # fmt: skip
    assert res.exit_code == 1 and "organisation 'Nowhere' does not exist" in res.output
    # the prompt asks twice and hides what is typed
    res = run("user", "add", "dan", "--org", "City", "--role", "org_admin",
              stdin="dans password\ndans password\n")  # fmt: skip
    assert res.exit_code == 0 and "dans password" not in res.output
    listing = run("user", "list").output
    assert "alice" in listing and "org_admin" in listing and "password" not in listing
    assert (
        run("user", "passwd", "alice", "--password-stdin", stdin="another password\n").exit_code
        == 0
    )
    assert run("user", "disable", "dan").exit_code == 0
    rt = _runtime(tmp_path)
    assert auth.authenticate(rt.db, rt.settings, "alice", "another password").username == "alice"
    with pytest.raises(NotAuthenticated, match="wrong username or password"):
        auth.authenticate(rt.db, rt.settings, "dan", "dans password")
    with rt.db.session() as s:
        actions = [e.action for e in people.list_audit(s, scope=Scope.ALL)]
    rt.close()
    assert {"user.create", "user.password", "user.disable"} <= set(actions)


def test_a_locked_user_is_listed_and_unlocked(run, tmp_path):
    """Five wrong passwords lock an account (the default); the operator lifts the lock."""
    res = run("user", "add", "erin", "--org", "City", "--role", "radiologist",
              "--password-stdin", stdin="erins password\n")  # fmt: skip
    assert res.exit_code == 0, res.output
    rt = _runtime(tmp_path)
    for _ in range(rt.settings.signin_max_failures_per_account):
        with pytest.raises(NotAuthenticated):
            auth.authenticate(rt.db, rt.settings, "erin", "not her password", "10.0.0.7")
    with pytest.raises(NotAuthenticated, match="wrong username"):
        auth.authenticate(rt.db, rt.settings, "erin", "erins password", "10.0.0.8")
    listing = run("user", "list").output.splitlines()
    (erin,) = [line for line in listing if "erin" in line]
    assert "until 20" in erin  # locked until <UTC time> (signin_lockout_s)

    res = run("user", "unlock", "erin")
    assert res.exit_code == 0 and "user 'erin' unlocked" in res.output
    assert run("user", "unlock", "erin").output.strip() == "user 'erin' was not locked"
    assert auth.authenticate(rt.db, rt.settings, "erin", "erins password").username == "erin"
    with rt.db.session() as s:
        events = people.list_audit(s, scope=Scope.ALL)
        locks = [(e.action, e.actor, e.detail.get("reason")) for e in events if "lock" in e.action]
    rt.close()
    assert locks[0][:2] == ("user.unlock", f"cli:{__import__('getpass').getuser()}")
    assert locks[1][0] == "user.locked"
    assert (
        "until 20" not in [ln for ln in run("user", "list").output.splitlines() if "erin" in ln][0]
    )


def test_tokens(run, tmp_path):
    res = run("token", "add", "--name", "ohif", "--role", "radiologist", "--org", "City",
              "--days", "30")  # fmt: skip
    assert res.exit_code == 0, res.output
    token = res.stdout.strip().splitlines()[-1]
    assert token.startswith("rst_") and len(token) > 40
    admin = run("token", "add", "--name", "ops", "--role", "admin").stdout.strip().splitlines()[-1]
    listing = run("token", "list").output
    assert "ohif" in listing and token[:10] in listing and token not in listing
    for args, message in [
        (("--name", "x", "--role", "radiologist"), "belongs to an organisation"),
        (("--name", "x", "--role", "admin", "--org", "City"), "platform-wide"),
        (("--name", "x", "--role", "admin", "--days", "0"), "--days must be positive"),
        (("--name", "x", "--role", "radiologist", "--user", "nobody"), "does not exist"),
    ]:
        res = run("token", "add", *args)
        assert res.exit_code != 0 and message in res.output, (args, res.output)
    rt = _runtime(tmp_path)
    with rt.db.session() as s:
        principal = auth.resolve_token(s, token)
        assert principal.role == "radiologist" and auth.scope_of(s, principal) == Scope.of(1)
        assert auth.scope_of(s, auth.resolve_token(s, admin)) is Scope.ALL
    assert run("token", "revoke", "1").exit_code == 0
    assert "error[not_found]" in run("token", "revoke", "99").output
    with rt.db.session() as s:
        with pytest.raises(NotAuthenticated, match="revoked"):
            auth.resolve_token(s, token)
        audit = [
            (e.action, e.actor.startswith("cli:")) for e in people.list_audit(s, scope=Scope.ALL)
        ]
    rt.close()
    assert ("token.create", True) in audit and ("token.revoke", True) in audit


def test_a_users_token_has_the_users_role(run):
    run("user", "add", "erin", "--org", "City", "--role", "radiologist", "--password-stdin",
        stdin="erins password\n")  # fmt: skip
    res = run("token", "add", "--name", "e", "--role", "org_admin", "--user", "erin")
    assert res.exit_code == 1 and "is a radiologist: their token has that role" in res.output
    res = run("token", "add", "--name", "e", "--role", "radiologist", "--user", "erin")
    assert res.exit_code == 0
