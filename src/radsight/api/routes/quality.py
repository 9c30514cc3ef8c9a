"""Calibration tests, thresholds and alerts (docs/quality.md).

Evaluations concern algorithm versions, not patients: any signed-in principal may read
them. Thresholds and alerts are scoped by tenancy: a caller sees the default thresholds
and an alert without an organisation (e.g. a failed calibration test), and the rows of
their own organisations only. Default thresholds are set by a platform admin; an
organisation admin may set their own organisation's.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from radsight.api.audit import record_change
from radsight.api.auth import OrgAdminDep, ScopeDep
from radsight.api.deps import Id, RegistryDep, RuntimeDep, SessionDep
from radsight.errors import Forbidden, InvalidInput, NotFound
from radsight.monitor.service import pick_and_set_threshold, recalibration_report
from radsight.operating_points import points_in_force
from radsight.page_system import standalone
from radsight.store import quality, tenants

router = APIRouter(prefix="/api", tags=["quality"])


class EvaluationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    algorithm_name: str
    algorithm_version: str
    reference_name: str
    state: str
    num_studies: int
    passed: bool | None
    error: str
    created_by: str
    created_at: datetime
    finished_at: datetime | None


class EvaluationDetail(EvaluationRead):
    summary: dict


class ThresholdRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    algorithm_name: str
    algorithm_version: str
    organisation_id: int | None
    finding_key: str
    value: float
    method: str
    target: float | None
    evaluation_id: int | None
    reason: str
    created_by: str
    created_at: datetime


class ThresholdCreate(BaseModel):
    algorithm: str = Field(description="NAME@VERSION (or NAME for the newest version)")
    organisation: str | None = None
    finding_key: str = ""
    #: a value, or a method picked on an evaluation
    value: float | None = Field(None, ge=0, le=1)
    method: str | None = Field(None, description="youden | sensitivity=0.95 | specificity=0.9")
    evaluation_id: int | None = None
    reason: str = Field(min_length=1)


class AlertRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    severity: str
    key: str
    algorithm_name: str
    algorithm_version: str
    organisation_id: int | None
    message: str
    detail: dict
    created_at: datetime
    resolved_at: datetime | None
    webhook_state: str


@router.get("/evaluations", response_model=list[EvaluationRead])
def list_evaluations(
    s: SessionDep, scope: ScopeDep, algorithm: str | None = None, version: str | None = None
) -> list:
    return quality.list_evaluations(s, algorithm, version, scope=scope)


@router.get("/evaluations/{evaluation_id}", response_model=EvaluationDetail)
def get_evaluation(evaluation_id: Id, s: SessionDep, scope: ScopeDep) -> object:
    return quality.get_evaluation(s, evaluation_id, scope=scope)


@router.get("/evaluations/{evaluation_id}/report.html", response_class=HTMLResponse)
def evaluation_report(
    evaluation_id: Id, s: SessionDep, rt: RuntimeDep, scope: ScopeDep, download: bool = False
) -> Response:
    row = quality.get_evaluation(s, evaluation_id, scope=scope)
    if not row.report_key:
        raise NotFound(f"evaluation {evaluation_id} has no report ({row.state})")
    headers = {}
    body = rt.files.get(row.report_key).decode()
    if download:
        name = f"evaluation-{row.id}-{row.algorithm_name}-{row.algorithm_version}.html"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        body = standalone(body)  # opened from disk later, where /static/app.css is not
    return HTMLResponse(body, headers=headers)


@router.get("/evaluations/{evaluation_id}/recalibration")
def recalibration(
    evaluation_id: Id,
    from_version: str,
    s: SessionDep,
    registry: RegistryDep,
    scope: ScopeDep,
    method: str = "youden",
) -> dict:
    """How the threshold of ``from_version`` performs on this evaluation's version."""
    row = quality.get_evaluation(s, evaluation_id, scope=scope)
    new = registry.resolve(f"{row.algorithm_name}@{row.algorithm_version}")
    old = registry.resolve(f"{row.algorithm_name}@{from_version}")
    return recalibration_report(s, old, new, evaluation_id, method)


@router.get("/thresholds", response_model=list[ThresholdRead])
def list_thresholds(
    s: SessionDep, scope: ScopeDep, algorithm: str | None = None, version: str | None = None
) -> list:
    """Every threshold change, newest first (the history): defaults and the caller's own."""
    return quality.list_thresholds(
        s, scope=scope, algorithm_name=algorithm, algorithm_version=version
    )


@router.get("/thresholds/in-force")
def get_points_in_force(
    algorithm: str,
    s: SessionDep,
    registry: RegistryDep,
    scope: ScopeDep,
    organisation: str | None = None,
) -> dict:
    a = registry.resolve(algorithm)
    org_id = tenants.get_organisation(s, organisation).id if organisation else None
    if org_id is not None and not scope.includes(org_id):
        raise NotFound(f"organisation {organisation} does not exist")
    stored = quality.stored_thresholds(s, a.name, a.version, org_id)
    return {
        "algorithm": a.name,
        "version": a.version,
        "organisation_id": org_id,
        # a routing rule's thresholds (per route) apply on top of these, below the stored
        "thresholds": points_in_force(a, stored=stored),
        "set_in_store": sorted(stored),
    }


@router.post("/thresholds", response_model=ThresholdRead, status_code=201)
def set_threshold(
    body: ThresholdCreate,
    request: Request,
    s: SessionDep,
    registry: RegistryDep,
    principal: OrgAdminDep,
) -> object:
    a = registry.resolve(body.algorithm)
    if body.finding_key and body.finding_key not in {f.key for f in a.findings}:
        raise NotFound(f"{a.name} {a.version} declares no finding {body.finding_key!r}")
    org_id = tenants.get_organisation(s, body.organisation).id if body.organisation else None
    if not principal.is_admin and org_id != principal.organisation_id:
        raise Forbidden("an organisation admin sets thresholds for their own organisation only")
    if body.method:
        if body.evaluation_id is None:
            raise InvalidInput("a picked threshold needs evaluation_id")
        _, _, rows = pick_and_set_threshold(
            s,
            a.name,
            a.version,
            body.method,
            body.evaluation_id,
            org_id,
            body.reason,
            principal.name,
            finding_keys=(body.finding_key,),
        )
        for row in rows:
            detail = quality.threshold_audit_detail(row)
            record_change(s, principal, request, "threshold.set", org_id, detail)
        return rows[0]
    if body.value is None:
        raise InvalidInput("give a value, or a method and an evaluation_id")
    row = quality.set_threshold(
        s,
        algorithm_name=a.name,
        algorithm_version=a.version,
        value=body.value,
        method="manual",
        finding_key=body.finding_key,
        organisation_id=org_id,
        reason=body.reason,
        created_by=principal.name,
    )
    s.flush()
    record_change(
        s, principal, request, "threshold.set", org_id, quality.threshold_audit_detail(row)
    )
    return row


@router.get("/alerts", response_model=list[AlertRead])
def list_alerts(
    s: SessionDep, scope: ScopeDep, open_only: bool = False, kind: str | None = None
) -> list:
    return quality.list_alerts(s, scope=scope, open_only=open_only, kind=kind)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertRead)
def resolve_alert(
    alert_id: Id, request: Request, s: SessionDep, principal: OrgAdminDep, scope: ScopeDep
) -> object:
    row = quality.resolve_alert(s, alert_id, scope=scope)
    detail = {"alert_id": row.id, "kind": row.kind, "key": row.key}
    record_change(s, principal, request, "alert.resolve", row.organisation_id, detail)
    return row
