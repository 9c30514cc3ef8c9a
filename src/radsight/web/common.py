"""What every page shares: templates, the signed-in user, the error page."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from radsight import page_system
from radsight.api.auth import get_principal
from radsight.api.deps import RuntimeDep
from radsight.api.problems import Problem
from radsight.auth import Principal
from radsight.dicom.study_types import STUDY_TYPE_LABELS
from radsight.errors import NotAuthenticated
from radsight.review.viewer import STATUS_LABELS

#: the one page system (radsight.page_system): autoescape on, the shared base template
templates = Jinja2Templates(env=page_system.environment)
#: who sees the audit trail and the supervisors' dashboard (the header links to them)
AUDIT_ROLES = ("org_admin", "supervisor", "admin")
DASHBOARD_ROLES = ("supervisor", "org_admin", "admin")
#: who sees the algorithm pages (an org_admin switches their organisation's algorithms;
#: supervisors and admins also change versions' states)
ALGORITHM_ROLES = ("supervisor", "org_admin", "admin")
templates.env.globals.update(status_labels=STATUS_LABELS, study_type_labels=STUDY_TYPE_LABELS)
assert templates.env.autoescape is True or callable(templates.env.autoescape)


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else ""


def fmt_person_name(value: str) -> str:
    """``FAMILY^GIVEN^MIDDLE`` as ``FAMILY, GIVEN MIDDLE`` (PS3.5 6.2.1); text stays text.

    Component groups (alphabetic, ideographic, phonetic) are separated by `` = ``.
    """

    def group(text: str) -> str:
        parts = text.split("^")
        family, rest = parts[0], " ".join(p for p in parts[1:] if p)
        return f"{family}, {rest}" if family and rest else (family or rest)

    return " = ".join(g for g in (group(x) for x in value.split("=")) if g)


def fmt_dicom_date(value: str) -> str:
    """A DA value (YYYYMMDD) as YYYY-MM-DD; anything else as it is."""
    return (
        f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value
    )


templates.env.filters.update(time=fmt_time, person_name=fmt_person_name, dicom_date=fmt_dicom_date)


class SignInRequired(Exception):
    """Shown as a redirect to the sign-in page."""

    def __init__(self, next_url: str, reason: str = "") -> None:
        super().__init__(reason)
        self.next_url = next_url
        self.reason = reason


async def page_principal(request: Request, rt: RuntimeDep) -> Principal:
    """The caller of an HTML page: signed in (or a token), else off to the sign-in page."""
    request.state.html_errors = True  # a page's errors are shown as the error page
    try:
        return await get_principal(request, rt)
    except NotAuthenticated as exc:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = "/worklist"
        reason = "expired" if "expired" in exc.message else ""
        raise SignInRequired(target, reason) from None


PagePrincipal = Annotated[Principal, Depends(page_principal)]


def _sso_name(request: Request) -> str:
    """ "Sign in with <this>" when single sign-on is configured, else ""."""
    settings = request.app.state.runtime.settings
    if not settings.oidc_issuer:
        return ""
    return settings.oidc_display_name or urlsplit(settings.oidc_issuer).hostname or "SSO"


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    principal = getattr(request.state, "principal", None)
    base = {
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "display_name": getattr(request.state, "display_name", ""),
        "principal": principal,
        "may_audit": principal is not None and principal.role in AUDIT_ROLES,
        "may_dashboard": principal is not None and principal.role in DASHBOARD_ROLES,
        "may_algorithms": principal is not None and principal.role in ALGORITHM_ROLES,
        "sso_name": _sso_name(request),
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def error_page(request: Request, problem: Problem) -> Response:
    """An error as a page: what went wrong, its status and its stable code."""
    context = {"message": problem.detail, "status": problem.status, "code": problem.code}
    return render(request, "error.html", context, status_code=problem.status)


def signin_redirect_url(exc: SignInRequired) -> str:
    url = "/signin?next=" + quote(exc.next_url, safe="")
    return url + ("&reason=expired" if exc.reason else "")
