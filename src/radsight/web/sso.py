"""Single sign-on pages: ``/auth/oidc/login``, ``/auth/oidc/callback``, the sign-out hop.

Thin handlers over :mod:`radsight.auth.oidc` (the protocol) and
:mod:`radsight.auth.oidc_users` (claims -> user). A successful callback starts the same
web session a password sign-in starts (:func:`radsight.auth.create_session`: the same
cookie, CSRF token and lifetime); a refusal is a page saying why, with its status, and a
``signin.failed`` line in the audit trail (``detail.method = "oidc"`` and the reason).
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from radsight import auth
from radsight.api.audit import client_address
from radsight.api.auth import SESSION_COOKIE
from radsight.api.deps import RuntimeDep, SessionDep
from radsight.api.problems import mark_html_errors
from radsight.auth.oidc import PENDING_TTL_S, Identity, OidcClient
from radsight.auth.oidc_users import claim, sign_in_user
from radsight.errors import IdentityProviderUnavailable, NotFound, SignInRefused
from radsight.runtime import Runtime
from radsight.store import Session, people, tenants
from radsight.web.common import render
from radsight.web.pages import _safe_next, _set_cookie

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_html_errors)])

#: the pending sign-in (state, nonce, PKCE verifier): sent back only to the callback. Lax,
#: not Strict: the provider's redirect to the callback is a navigation from another site
PENDING_COOKIE = "radsight_oidc"
PENDING_PATH = "/auth/oidc"
_lock = threading.Lock()


def oidc_client(request: Request, rt: Runtime) -> OidcClient:
    """The app's one relying party (its discovery cache and cookie key), or 404 when off."""
    if not rt.settings.oidc_issuer:
        raise NotFound("single sign-on is not configured (RADSIGHT_OIDC_ISSUER)")
    with _lock:
        client: OidcClient | None = getattr(request.app.state, "oidc", None)
        if client is None:
            client = request.app.state.oidc = OidcClient(rt.settings)
    return client


def _base_url(request: Request, rt: Runtime) -> str:
    return (rt.settings.public_url or str(request.base_url)).rstrip("/")


def _refused(
    request: Request,
    s: Session,
    exc: SignInRefused | IdentityProviderUnavailable,
    identity: Identity | None = None,
    organisation_claim: str = "",
) -> Response:
    """The refusal page, and its line in the audit trail."""
    reason = exc.reason if isinstance(exc, SignInRefused) else "provider_unreachable"
    detail: dict[str, Any] = {"method": "oidc", "reason": reason, "message": exc.message[:300]}
    organisation_id = None
    if identity is not None:
        detail["subject"] = identity.subject[:255]
        for key in ("preferred_username", "email"):
            if isinstance(identity.claims.get(key), str):
                detail["username"] = identity.claims[key][:64]
                break
        name = claim(identity.claims, organisation_claim)
        if isinstance(name, str):
            org = tenants.find_organisation_by_name(s, name)
            organisation_id = org.id if org is not None else None
    people.record_audit(
        s,
        None,
        "signin.failed",
        organisation_id=organisation_id,
        detail=detail,
        remote_addr=client_address(request),
    )
    response = render(
        request,
        "signin_refused.html",
        {"message": exc.message, "code": exc.code, "status": exc.http_status, "reason": reason},
        status_code=exc.http_status,
    )
    response.delete_cookie(PENDING_COOKIE, path=PENDING_PATH)
    return response


@router.get("/auth/oidc/login")
def oidc_login(
    request: Request, rt: RuntimeDep, s: SessionDep, next: str = "/worklist"
) -> Response:
    client = oidc_client(request, rt)
    try:
        url, pending = client.begin(
            _base_url(request, rt) + "/auth/oidc/callback", _safe_next(next)
        )
    except IdentityProviderUnavailable as exc:
        return _refused(request, s, exc)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        PENDING_COOKIE,
        pending,
        max_age=int(PENDING_TTL_S),
        path=PENDING_PATH,
        httponly=True,
        samesite="lax",
        secure=rt.settings.cookies_secure,
    )
    return response


@router.get("/auth/oidc/callback")
def oidc_callback(request: Request, rt: RuntimeDep, s: SessionDep) -> Response:
    client = oidc_client(request, rt)
    identity: Identity | None = None
    try:
        pending = client.read_pending(request.cookies.get(PENDING_COOKIE, ""))
        identity = client.finish(
            pending, request.query_params, _base_url(request, rt) + "/auth/oidc/callback"
        )
        user, changed = sign_in_user(s, rt.settings, identity)
    except (SignInRefused, IdentityProviderUnavailable) as exc:
        return _refused(request, s, exc, identity, rt.settings.oidc_organisation_claim)
    cookie, _csrf = auth.create_session(s, user, rt.settings.session_lifetime_s)
    people.record_audit(
        s,
        auth.principal_for_user(user),
        "signin",
        detail={"method": "oidc", "subject": identity.subject[:255], **changed},
        remote_addr=client_address(request),
    )
    # a page, not a redirect: this request came from the provider's site, so a browser
    # would not send the (SameSite=Strict) session cookie along a redirect from here
    response = render(request, "signin_continue.html", {"next": pending.next_url})
    _set_cookie(response, rt, SESSION_COOKIE, cookie, int(rt.settings.session_lifetime_s))
    response.delete_cookie(PENDING_COOKIE, path=PENDING_PATH)
    return response


@router.get("/auth/oidc/signed-out")
def oidc_signed_out(request: Request, rt: RuntimeDep) -> Response:
    """After a local sign-out of a single sign-on user: sign out at the provider too."""
    signed_out = "/signin?reason=signed_out"
    url = oidc_client(request, rt).logout_url(_base_url(request, rt) + signed_out)
    if url is None:
        return RedirectResponse(signed_out, status_code=303)
    return render(request, "signin_continue.html", {"next": url, "signing_out": True})
