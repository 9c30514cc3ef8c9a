"""The radiologist's pages: sign-in, worklist, viewer (with verdict forms), audit."""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from radsight import auth
from radsight.api.audit import client_address, record_read
from radsight.api.auth import SESSION_COOKIE
from radsight.api.deps import Id, RuntimeDep, SessionDep
from radsight.api.problems import mark_html_errors
from radsight.errors import Forbidden, InvalidInput, NotAuthenticated, TooManyAttempts
from radsight.review.verdicts import REVIEWER_ROLES, VerdictRequest, give_verdict, visible_study
from radsight.review.viewer import build_study_view, sees_shadow, status_text
from radsight.store import people
from radsight.store import worklist as worklist_store
from radsight.web.common import AUDIT_ROLES, PagePrincipal, render

#: an error on a page is shown as the error page (status and code), not as JSON
router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_html_errors)])

#: the sign-in form's CSRF token travels in this cookie and in the form (double submit)
SIGNIN_CSRF_COOKIE = "radsight_signin_csrf"


def _safe_next(url: str) -> str:
    """Only a path of this site: never an absolute or scheme-relative URL."""
    if not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/worklist"
    return url


@router.get("/")
def home() -> Response:
    return RedirectResponse("/worklist", status_code=303)


@router.get("/signin")
def signin_page(
    request: Request, rt: RuntimeDep, next: str = "/worklist", reason: str = ""
) -> Response:
    token = secrets.token_urlsafe(32)
    message = {
        "expired": "Your session expired. Sign in again.",
        "signed_out": "You are signed out.",
    }.get(reason, "")
    response = render(
        request,
        "signin.html",
        {"signin_csrf": token, "next": _safe_next(next), "message": message, "error": ""},
    )
    _set_cookie(response, rt, SIGNIN_CSRF_COOKIE, token, 600)
    return response


@router.post("/signin")
def signin(
    request: Request,
    rt: RuntimeDep,
    s: SessionDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/worklist",
) -> Response:
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf_token):
        raise Forbidden("The sign-in form expired or came from another site: reload it.")
    try:
        # not in the request's unit of work: the database is never held while argon2 runs
        user = auth.authenticate(rt.db, rt.settings, username, password, client_address(request))
    except NotAuthenticated as exc:  # the failure is recorded and audited by authenticate
        token = secrets.token_urlsafe(32)
        throttled = isinstance(exc, TooManyAttempts)
        response = render(
            request,
            "signin.html",
            {"signin_csrf": token, "next": _safe_next(next), "message": "", "error": exc.message},
            status_code=429 if throttled else 401,
        )
        if isinstance(exc, TooManyAttempts) and exc.retry_after_s is not None:
            response.headers["Retry-After"] = str(math.ceil(exc.retry_after_s))
        _set_cookie(response, rt, SIGNIN_CSRF_COOKIE, token, 600)
        return response
    cookie, _csrf = auth.create_session(s, user, rt.settings.session_lifetime_s)
    people.record_audit(
        s, auth.principal_for_user(user), "signin", remote_addr=client_address(request)
    )
    response = RedirectResponse(_safe_next(next), status_code=303)
    _set_cookie(response, rt, SESSION_COOKIE, cookie, int(rt.settings.session_lifetime_s))
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/")
    return response


@router.post("/signout")
def signout(request: Request, rt: RuntimeDep, s: SessionDep, principal: PagePrincipal) -> Response:
    if cookie := request.cookies.get(SESSION_COOKIE):
        auth.end_session(s, cookie)
    people.record_audit(s, principal, "signout", remote_addr=client_address(request))
    user = people.get_user_by_id(s, principal.user_id) if principal.user_id else None
    # a single sign-on user is also signed out at the provider (radsight.web.sso)
    sso = user is not None and user.auth_provider == "oidc" and rt.settings.oidc_issuer
    target = "/auth/oidc/signed-out" if sso else "/signin?reason=signed_out"
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _set_cookie(response: Response, rt: RuntimeDep, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=rt.settings.cookies_secure,
    )


def _date(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise InvalidInput(f"{name}: give a date as YYYY-MM-DD, not {value[:20]!r}") from None


@router.get("/worklist")
def worklist_page(
    request: Request,
    s: SessionDep,
    principal: PagePrincipal,
    study_type: Annotated[str, Query(max_length=16)] = "",
    status: Annotated[str, Query(max_length=32)] = "",
    received_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    received_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    q: Annotated[str, Query(max_length=64)] = "",
    cursor: Annotated[str, Query(max_length=80)] = "",
) -> Response:
    if status and status not in worklist_store.STATUSES:
        raise InvalidInput(f"unknown status {status[:32]!r}")
    record_read(s, principal, request, "worklist.view", detail={"query": request.url.query})
    day_to = _date(received_to, "to")
    query = worklist_store.WorklistQuery(
        scope=auth.scope_of(s, principal),
        study_type=study_type,
        status=status,
        received_from=_date(received_from, "from"),
        received_to=day_to + timedelta(days=1) if day_to else None,
        search=q,
        cursor=cursor,
        limit=50,
    )
    page = worklist_store.list_worklist(s, query)
    best = _best_results(s, [st.id for st in page.studies])
    rows = [
        {
            "study": st,
            "status": worklist_store.study_status(st),
            "status_text": status_text(st),
            "result": best.get(st.id),
        }
        for st in page.studies
    ]
    filters = {
        "study_type": study_type,
        "status": status,
        "from": received_from,
        "to": received_to,
        "q": q,
    }
    return render(
        request,
        "worklist.html",
        {
            "rows": rows,
            "next_cursor": page.next_cursor,
            "filters": filters,
            "is_first_page": not cursor,
            "statuses": worklist_store.STATUSES,
            "may_audit": principal.role in AUDIT_ROLES,
        },
    )


def _best_results(s: SessionDep, study_ids: list[int]) -> dict[int, dict[str, object]]:
    """Per study, its analysed result with the highest score: algorithm and threshold."""
    return {
        study_id: {
            "algorithm": f"{r.algorithm_name} {r.algorithm_version}",
            "threshold": (r.report or {}).get("study_threshold"),
            "score": r.study_score,
        }
        for study_id, r in worklist_store.top_results(s, study_ids).items()
    }


@router.get("/studies/{study_id}")
def viewer_page(
    request: Request, study_id: Id, s: SessionDep, principal: PagePrincipal
) -> Response:
    study = visible_study(s, principal, study_id)
    record_read(
        s,
        principal,
        request,
        "study.open",
        organisation_id=study.organisation_id,
        study_id=study.id,
        detail={"via": "viewer"},
    )
    view = build_study_view(s, study, with_shadow=sees_shadow(principal.role))
    return render(
        request,
        "viewer.html",
        {
            "view": view,
            "may_review": principal.role in REVIEWER_ROLES and principal.user_id is not None,
            "error": request.query_params.get("error", "")[:300],
        },
    )


@router.post("/studies/{study_id}/verdicts")
def verdict_form(
    request: Request,
    study_id: Id,
    s: SessionDep,
    principal: PagePrincipal,
    kind: Annotated[str, Form(max_length=16)],
    value: Annotated[str, Form(max_length=16)] = "",
    text: Annotated[str, Form(max_length=20_000)] = "",
    finding_key: Annotated[str, Form(max_length=64)] = "",
    result_id: Annotated[int | None, Form()] = None,
) -> Response:
    req = VerdictRequest(kind, value, text, finding_key, result_id)
    try:
        give_verdict(s, principal, study_id, req, client_address(request))
    except InvalidInput as exc:  # shown on the form; other errors are the error page
        s.rollback()
        return RedirectResponse(
            f"/studies/{study_id}?error={quote(exc.message)}#verdicts", status_code=303
        )
    return RedirectResponse(f"/studies/{study_id}#verdicts", status_code=303)


@router.get("/audit")
def audit_page(
    request: Request,
    s: SessionDep,
    principal: PagePrincipal,
    study: Annotated[str, Query(alias="study_id", max_length=12)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    if study and not study.isdigit():
        raise InvalidInput(f"study: give a study number, not {study!r}")
    study_id = int(study) if study else None
    if principal.role not in AUDIT_ROLES:
        raise Forbidden(
            f"the audit trail is for organisation admins and supervisors; you are {principal.role}"
        )
    per_page = 100
    events = people.list_audit(
        s,
        scope=auth.scope_of(s, principal),
        study_id=study_id,
        action=action or None,
        limit=per_page + 1,
        offset=(page - 1) * per_page,
    )
    return render(
        request,
        "audit.html",
        {
            "events": events[:per_page],
            "page": page,
            "has_next": len(events) > per_page,
            "study_id": study_id,
            "action": action,
            "may_audit": True,
        },
    )
