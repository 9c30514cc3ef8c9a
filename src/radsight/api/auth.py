"""Who is calling: a bearer token (systems, scripts, DICOMweb clients) or a web session.

Every route except ``/health`` and the sign-in page depends on :data:`PrincipalDep`.

- ``Authorization: Bearer rst_...``: a token made with ``radsight token add`` or by an
  organisation admin; no cookie, so no CSRF check.
- the ``radsight_session`` cookie set at sign-in: a state-changing request (POST, PUT,
  PATCH, DELETE) must also carry the session's CSRF token, in the ``X-CSRF-Token`` header
  or a ``csrf_token`` form field.

Which organisations the caller may see is :data:`ScopeDep`, from the one rule
:func:`radsight.auth.scope_of`; every store read of tenant rows requires that scope.

Failures are :class:`NotAuthenticated` (401) or :class:`Forbidden` (403), turned into
problem+json by the one handler in :mod:`radsight.api.app`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from radsight import auth
from radsight.api.deps import RuntimeDep, SessionDep
from radsight.auth import Principal
from radsight.errors import Forbidden, NotAuthenticated, NotFound
from radsight.runtime import Runtime
from radsight.store import tenants
from radsight.store.scope import Scope

SESSION_COOKIE = "radsight_session"
CSRF_HEADER = "X-CSRF-Token"
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


# the database calls run in the thread pool: blocking the event loop while another request
# holds SQLite's write lock would stall that request's commit too (a deadlock until timeout)
def _resolve_token(rt: Runtime, plain: str) -> Principal:
    with rt.db.session() as s:
        return auth.resolve_token(s, plain)


def _resolve_session(rt: Runtime, cookie: str) -> auth.WebSession:
    with rt.db.session() as s:
        return auth.resolve_session(s, cookie, rt.settings.session_idle_s)


async def get_principal(request: Request, rt: RuntimeDep) -> Principal:
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise NotAuthenticated("use 'Authorization: Bearer <token>'")
        principal = await run_in_threadpool(_resolve_token, rt, credentials.strip())
    elif cookie := request.cookies.get(SESSION_COOKIE):
        web = await run_in_threadpool(_resolve_session, rt, cookie)
        if request.method in _UNSAFE:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent and "form" in request.headers.get("content-type", ""):
                sent = str((await request.form()).get("csrf_token", ""))
            if not sent or not secrets.compare_digest(sent, web.csrf_token):
                raise Forbidden("missing or wrong CSRF token: reload the page and try again")
        request.state.csrf_token = web.csrf_token
        request.state.display_name = web.display_name
        principal = web.principal
    else:
        raise NotAuthenticated("sign in, or send 'Authorization: Bearer <token>'")
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_role(*roles: str) -> Callable[..., Principal]:
    """A dependency that lets through only these roles (``admin`` always passes)."""

    def check(principal: PrincipalDep) -> Principal:
        if principal.role != "admin" and principal.role not in roles:
            raise Forbidden(f"this needs the role {' or '.join(roles)}; you are {principal.role}")
        return principal

    return check


AdminDep = Annotated[Principal, Depends(require_role())]
OrgAdminDep = Annotated[Principal, Depends(require_role("org_admin"))]
SupervisorDep = Annotated[Principal, Depends(require_role("supervisor", "org_admin"))]


def ensure_org_admin(principal: Principal, organisation_id: int) -> None:
    """Managing an organisation (AE titles, destinations, users): admin or its org_admin."""
    if principal.is_admin:
        return
    if principal.role != "org_admin" or principal.organisation_id != organisation_id:
        raise Forbidden(
            "this needs the role org_admin of this organisation (or a platform admin token)"
        )


def get_scope(principal: PrincipalDep, s: SessionDep) -> Scope:
    """The organisations the caller may see (:func:`radsight.auth.scope_of`)."""
    return auth.scope_of(s, principal)


ScopeDep = Annotated[Scope, Depends(get_scope)]


def scope_for(s: SessionDep, scope: Scope, organisation: str | None = None) -> Scope:
    """The organisations a list may show: the caller's, narrowed to ``organisation``.

    Another tenant's organisation answers 404, exactly as one that does not exist.
    """
    if not organisation:
        return scope
    narrowed = scope.narrow(tenants.get_organisation(s, organisation).id)
    if narrowed is None:
        raise NotFound(f"organisation {organisation!r} does not exist")
    return narrowed
