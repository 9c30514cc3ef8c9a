"""Monitoring: technical, clinical and drift figures as JSON, and Prometheus ``/metrics``.

``GET /metrics`` takes ``Authorization: Bearer <metrics_token>`` when the setting
``metrics_token`` is set (what a Prometheus scrape job sends); otherwise, or with another
token, it needs a signed-in principal and shows that principal's organisations only.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.api.auth import PrincipalDep, SupervisorDep, get_principal
from radsight.api.deps import RegistryDep, RuntimeDep
from radsight.auth import Principal
from radsight.monitor import checks, dashboard, technical
from radsight.monitor.versions import list_versions
from radsight.runtime import Runtime
from radsight.store import jobs as jobstore
from radsight.store import monitoring as monitoringstore
from radsight.store import quality
from radsight.store.scope import Scope

router = APIRouter(tags=["monitoring"])

Days = Annotated[float, Query(gt=0, le=366)]
#: /metrics figures are at most this old (Prometheus scrapes every 15-60 s)
METRICS_TTL_S = 30.0


def _scope(rt: Runtime, principal: Principal) -> Scope:
    with rt.db.session() as s:
        return auth.scope_of(s, principal)


@router.get("/api/monitoring/technical")
def technical_figures(rt: RuntimeDep, principal: PrincipalDep, days: Days = 1.0) -> dict:
    """Turnaround per stage, failed / dead jobs, time-limit breaches, output defects."""
    return checks.technical_report(rt, _scope(rt, principal), days)


@router.get("/api/monitoring/clinical")
def clinical_figures(
    rt: RuntimeDep,
    principal: PrincipalDep,
    days: Days = 30.0,
    group_by: str = "algorithm_name,algorithm_version,organisation_id",
    period: str = "all",
) -> dict:
    """Sensitivity, specificity, PPV, NPV and agreement against radiologists' verdicts."""
    keys = [k.strip() for k in group_by.split(",") if k.strip()]
    return checks.clinical_report(rt, _scope(rt, principal), days, keys, period)


@router.get("/api/monitoring/drift")
def drift_figures(rt: RuntimeDep, principal: PrincipalDep, algorithm: str, version: str) -> dict:
    """Score and input drift of one algorithm version against its calibration test, over the
    studies of the organisations the caller may see."""
    return checks.drift_report(rt, algorithm, version, scope=_scope(rt, principal))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, rt: RuntimeDep) -> Response:
    token = rt.settings.metrics_token.get_secret_value()
    sent = request.headers.get("authorization", "")
    if token and secrets.compare_digest(sent, f"Bearer {token}"):
        scope = Scope.ALL
    else:
        principal = await get_principal(request, rt)
        scope = await run_in_threadpool(_scope, rt, principal)
    key = None if scope.organisation_ids is None else tuple(sorted(scope.organisation_ids))
    cache: dict[tuple[int, ...] | None, tuple[float, bytes]] = getattr(
        request.app.state, "metrics_cache", {}
    )
    request.app.state.metrics_cache = cache
    cached = cache.get(key)
    if cached is None or time.monotonic() - cached[0] > METRICS_TTL_S:
        # reading back the day's SRs is not free: one render per scope per TTL
        body = await run_in_threadpool(render_metrics, rt, scope)
        cached = cache[key] = (time.monotonic(), body)
    return Response(cached[1], media_type=CONTENT_TYPE_LATEST)


def render_metrics(rt: Runtime, scope: Scope) -> bytes:
    reg = CollectorRegistry()
    jobs = Gauge(
        "radsight_jobs",
        "Jobs by kind, state and algorithm (all time)",
        ["kind", "state", "algorithm", "version", "organisation"],
        registry=reg,
    )
    errors = Gauge(
        "radsight_job_errors",
        "Failed or dead jobs by error code (all time)",
        ["kind", "error_code", "algorithm", "organisation"],
        registry=reg,
    )
    with rt.db.session() as s:
        names = monitoringstore.organisation_names(s, scope=scope)
        counts = monitoringstore.job_counts(s, scope=scope)
        open_alerts = quality.list_alerts(s, scope=scope, open_only=True, limit=10000)
        total_jobs = jobstore.count_by_state(s, scope=scope) if scope.is_all else {}
    agg: dict[tuple, int] = {}
    err: dict[tuple, int] = {}
    for kind, name, version, org, state, code, n in counts:
        org_name = names.get(org, (str(org), ""))[0]
        key = (kind, state, name, version, org_name)
        agg[key] = agg.get(key, 0) + n
        if state in ("failed", "dead") and code:
            ek = (kind, code, name, org_name)
            err[ek] = err.get(ek, 0) + n
    for key, n in agg.items():
        jobs.labels(*key).set(n)
    for key, n in err.items():
        errors.labels(*key).set(n)
    tech = checks.technical_report(rt, scope, days=1.0, check_outputs=True)
    defects = Gauge(
        "radsight_output_defects",
        "Output defects in the last 24 h",
        ["defect", "algorithm", "version", "organisation"],
        registry=reg,
    )
    results = Gauge(
        "radsight_results",
        "Analysed results in the last 24 h",
        ["algorithm", "version", "organisation"],
        registry=reg,
    )
    breaches = Gauge(
        "radsight_time_limit_breaches",
        "Time-limit breaches in the last 24 h",
        ["algorithm", "version", "organisation"],
        registry=reg,
    )
    for g in tech["groups"]:
        labels = (g["algorithm_name"], g["algorithm_version"], g["organisation"])
        results.labels(*labels).set(g["results"])
        breaches.labels(*labels).set(g["time_limit"])
        for d in technical.DEFECTS:
            defects.labels(d, *labels).set(g[d])
    turnaround = Gauge(
        "radsight_turnaround_seconds",
        "Turnaround per stage, last 24 h",
        ["stage", "quantile"],
        registry=reg,
    )
    for stage, q in tech["turnaround_s"].items():
        for name, label in (("median", "0.5"), ("p95", "0.95")):
            if q.get(name) is not None:
                turnaround.labels(stage, label).set(q[name])
    alerts = Gauge("radsight_alerts_open", "Open quality alerts", ["kind"], registry=reg)
    for kind in quality.ALERT_KINDS:
        alerts.labels(kind).set(sum(1 for a in open_alerts if a.kind == kind))
    if total_jobs:
        queue = Gauge(
            "radsight_jobs_by_state", "Jobs by state, platform-wide", ["state"], registry=reg
        )
        for state, n in total_jobs.items():
            queue.labels(state).set(n)
    return generate_latest(reg)


def dashboard_for(
    rt: Runtime,
    registry: Registry,
    principal: Principal,
    since: datetime | None,
    until: datetime | None,
    period: str,
) -> dict:
    """The dashboard's figures for what this principal may see (the JSON, CSV and page),
    with each algorithm version's admission state and its evidence."""
    scope = _scope(rt, principal)
    data = checks.dashboard_data(rt, scope, since, until, period)
    with rt.db.session() as s:
        versions = list_versions(s, rt.settings, registry, scope=scope)
    data["admission"] = [dashboard.admission_row(v) for v in versions]
    return data


Period = Annotated[str, Query(pattern="^(day|week|month)$")]


@router.get("/api/dashboard")
def dashboard_json(
    rt: RuntimeDep,
    registry: RegistryDep,
    principal: SupervisorDep,
    since: datetime | None = None,
    until: datetime | None = None,
    period: Period = "month",
) -> dict:
    """Studies processed and signs flagged by region, organisation, study type and period;
    turnaround; quality status per algorithm; each version's admission state and evidence;
    open alerts (supervisors and org admins)."""
    return dashboard_for(rt, registry, principal, since, until, period)


@router.get("/api/dashboard.csv", response_class=PlainTextResponse)
def dashboard_csv(
    rt: RuntimeDep,
    registry: RegistryDep,
    principal: SupervisorDep,
    since: datetime | None = None,
    until: datetime | None = None,
    period: Period = "month",
) -> Response:
    body = dashboard.to_csv(dashboard_for(rt, registry, principal, since, until, period))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="radsight-activity.csv"'},
    )
