"""``radsight user ...`` and ``radsight token ...``: people who sign in, and API tokens.

These run on the server's machine against its database (the operator's own access), so
they need no token themselves; each change is recorded in the audit trail with the actor
``cli:<login name>``. A token is printed once, alone on standard output, and only its
hash is kept::

    TOKEN=$(radsight token add --name ohif --role radiologist --org "City Hospital")
"""

from __future__ import annotations

import getpass
import sys
from typing import Any

import click

from radsight import auth
from radsight.auth import TOKEN_ROLES, USER_ROLES, Principal
from radsight.cli.errors import fail_cleanly
from radsight.cli.tables import table
from radsight.errors import InvalidInput
from radsight.store.scope import Scope


def _operator() -> Principal:
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        login = "unknown"
    return Principal(kind="cli", name=f"cli:{login}"[:128], role="admin", organisation_id=None)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise InvalidInput("no password on standard input")
        return line
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else ""


@click.group()
def user() -> None:
    """People who sign in to the web app (radiologists, organisation admins, supervisors)."""


@user.command("add")
@click.argument("username")
@click.option("--org", "organisation", required=True, help="organisation name or id")
@click.option("--role", required=True, type=click.Choice(USER_ROLES))
@click.option("--display-name", default="", help="shown in the web app (default: USERNAME)")
@click.option("--region", help="a supervisor sees every organisation of this region")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.pass_obj
@fail_cleanly
def user_add(
    c: Any,
    username: str,
    organisation: str,
    role: str,
    display_name: str,
    region: str | None,
    password_stdin: bool,
) -> None:
    """Add a user; the password is prompted for (or read with --password-stdin)."""
    from radsight.store import people, tenants

    if region and role != "supervisor":
        raise InvalidInput("--region is for supervisors only")
    password = _read_password(password_stdin)
    rt = c.runtime()
    with rt.db.session() as s:
        org = tenants.get_organisation(s, organisation)
        region_id = tenants.get_or_create_region(s, region).id if region else None
        row = auth.create_user(s, org.id, username, password, role, display_name, region_id)
        people.record_audit(
            s,
            _operator(),
            "user.create",
            organisation_id=org.id,
            detail={"username": row.username, "role": role},
        )
        click.echo(f"user {row.id} {row.username!r} ({role}) of {org.name!r} added")


@user.command("list")
@click.option("--org", "organisation", help="only this organisation's users")
@click.pass_obj
@fail_cleanly
def user_list(c: Any, organisation: str | None) -> None:
    """Users, their organisation, role and lock (after repeated failed sign-ins)."""
    from radsight.store import people, tenants

    rt = c.runtime()
    with rt.db.session() as s:
        scope = (
            Scope.of(tenants.get_organisation(s, organisation).id) if organisation else Scope.ALL
        )
        rows = people.list_users(s, scope=scope)
        table(
            ["id", "username", "organisation", "role", "disabled", "locked", "failures", "created"],
            [
                (
                    u.id,
                    u.username,
                    # a platform admin of single sign-on belongs to no organisation
                    "platform" if u.organisation_id is None else u.organisation_id,
                    u.role,
                    u.disabled,
                    auth.lock_state(u),
                    u.failed_sign_ins,
                    _when(u.created_at),
                )
                for u in rows
            ],
            none="",
        )


@user.command("disable")
@click.argument("username")
@click.pass_obj
@fail_cleanly
def user_disable(c: Any, username: str) -> None:
    """Stop a user from signing in; their sessions and tokens stop working at once."""
    from radsight.store import people

    rt = c.runtime()
    with rt.db.session() as s:
        row = people.get_user(s, username)
        row.disabled = True
        people.record_audit(
            s, _operator(), "user.disable", row.organisation_id, detail={"username": username}
        )
    click.echo(f"user {username!r} disabled")


@user.command("unlock")
@click.argument("username")
@click.pass_obj
@fail_cleanly
def user_unlock(c: Any, username: str) -> None:
    """Lift the lock that failed sign-ins put on a user, and clear the count."""
    from radsight.store import people

    rt = c.runtime()
    with rt.db.session() as s:
        row = people.get_user(s, username)
        was_locked = auth.unlock_user(s, row, _operator())
    click.echo(f"user {username!r} {'unlocked' if was_locked else 'was not locked'}")


@user.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.pass_obj
@fail_cleanly
def user_passwd(c: Any, username: str, password_stdin: bool) -> None:
    """Set a user's password (ends the user's web sessions)."""
    from radsight.store import people

    password = _read_password(password_stdin)
    rt = c.runtime()
    with rt.db.session() as s:
        row = people.get_user(s, username)
        auth.set_password(s, row, password)
        people.record_audit(
            s, _operator(), "user.password", row.organisation_id, detail={"username": username}
        )
    click.echo(f"password of {username!r} changed")


@click.group()
def token() -> None:
    """API tokens for systems (a PACS, a viewer, a script) and for users."""


@token.command("add")
@click.option("--name", required=True, help="what the token is for (shown in listings)")
@click.option("--role", required=True, type=click.Choice(TOKEN_ROLES))
@click.option("--org", "organisation", help="organisation name or id (not for admin)")
@click.option("--user", "username", help="the token acts as this user")
@click.option("--days", type=float, help="expires after this many days (default: never)")
@click.pass_obj
@fail_cleanly
def token_add(
    c: Any,
    name: str,
    role: str,
    organisation: str | None,
    username: str | None,
    days: float | None,
) -> None:
    """Make a token and print it, once, on standard output."""
    from radsight.store import people, tenants

    if days is not None and days <= 0:
        raise InvalidInput("--days must be positive")
    rt = c.runtime()
    with rt.db.session() as s:
        org_id = tenants.get_organisation(s, organisation).id if organisation else None
        user_id = None
        if username:
            u = people.get_user(s, username)
            if org_id is not None and org_id != u.organisation_id:
                raise InvalidInput(f"user {username!r} is not of organisation {organisation!r}")
            if role != u.role:
                raise InvalidInput(f"user {username!r} is a {u.role}: their token has that role")
            org_id, user_id = u.organisation_id, u.id
        row, plain = auth.create_token(s, name, role, org_id, user_id, days)
        people.record_audit(
            s,
            _operator(),
            "token.create",
            organisation_id=org_id,
            detail={"token_id": row.id, "name": name, "role": role, "prefix": row.prefix},
        )
        expiry = f", expires {_when(row.expires_at)}Z" if row.expires_at else ""
        click.echo(f"token {row.id} {name!r} ({role}{expiry}); it is shown only now:", err=True)
    click.echo(plain)


@token.command("list")
@click.option("--org", "organisation", help="only this organisation's tokens")
@click.pass_obj
@fail_cleanly
def token_list(c: Any, organisation: str | None) -> None:
    """Tokens (never their secret): prefix, role, owner, expiry, last use."""
    from radsight.store import people, tenants

    rt = c.runtime()
    with rt.db.session() as s:
        scope = (
            Scope.of(tenants.get_organisation(s, organisation).id) if organisation else Scope.ALL
        )
        rows = people.list_tokens(s, scope=scope)
        table(
            [
                "id",
                "prefix",
                "name",
                "role",
                "org",
                "user",
                "created",
                "expires",
                "revoked",
                "last used",
            ],
            [
                (
                    t.id,
                    t.prefix + "…",
                    t.name,
                    t.role,
                    t.organisation_id,
                    t.user_id,
                    _when(t.created_at),
                    _when(t.expires_at),
                    _when(t.revoked_at),
                    _when(t.last_used_at),
                )
                for t in rows
            ],
            none="",
        )


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_obj
@fail_cleanly
def token_revoke(c: Any, token_id: int) -> None:
    """Revoke a token: requests with it are refused (401) from now on."""
    from radsight.store import people

    rt = c.runtime()
    with rt.db.session() as s:
        row = people.revoke_token(s, token_id, scope=Scope.ALL)
        people.record_audit(
            s,
            _operator(),
            "token.revoke",
            organisation_id=row.organisation_id,
            detail={"token_id": row.id, "name": row.name},
        )
    click.echo(f"token {token_id} ({row.name!r}) revoked")
