"""The supervisors' dashboard page: the figures of ``GET /api/dashboard`` with charts."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from starlette.responses import Response

from radsight.api.deps import RegistryDep, RuntimeDep
from radsight.api.routes.monitoring import Period, dashboard_for
from radsight.errors import Forbidden
from radsight.monitor import dashboard
from radsight.web.common import DASHBOARD_ROLES, PagePrincipal, render

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
def dashboard_page(
    request: Request,
    rt: RuntimeDep,
    registry: RegistryDep,
    principal: PagePrincipal,
    since: datetime | None = None,
    until: datetime | None = None,
    period: Period = "month",
) -> Response:
    """Studies, signs flagged, turnaround, quality status, algorithm versions' admission
    (each with a link to its evidence) and open alerts, with charts."""
    if principal.role not in DASHBOARD_ROLES:
        raise Forbidden(f"The dashboard is for supervisors; you are {principal.role}.")
    data = dashboard_for(rt, registry, principal, since, until, period)
    return render(
        request,
        "dashboard.html",
        {
            "data": data,
            "charts": dashboard.chart_images(data),
            "tables": dashboard.figure_tables(data),
        },
    )
