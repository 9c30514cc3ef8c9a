"""Studies, their results, jobs and rejections: each caller sees its organisations only.

Another tenant's study, result or job answers 404, like one that does not exist. Each
read of a study or a result, and each search, is recorded in the audit trail
(:mod:`radsight.api.audit`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from radsight.api.audit import record_change, record_read
from radsight.api.auth import PrincipalDep, ScopeDep, require_role, scope_for
from radsight.api.deps import Id, Offset, RuntimeDep, SessionDep
from radsight.api.schemas import (
    InstanceRead,
    JobRead,
    RejectionRead,
    ResultRead,
    StudyDetail,
    StudyRead,
)
from radsight.auth import Principal
from radsight.errors import NotFound
from radsight.review.viewer import sees_shadow
from radsight.store import Session
from radsight.store import jobs as jobstore
from radsight.store import results as resultstore
from radsight.store import studies as studystore
from radsight.store.scope import Scope
from radsight.store.tables import ResultRow

router = APIRouter(prefix="/api", tags=["studies"])

Limit = Annotated[int, Query(ge=1, le=1000)]
#: retrying a job is an operator's act: an organisation admin (or a platform admin)
OperatorDep = Annotated[Principal, Depends(require_role("org_admin"))]


@router.get("/studies", response_model=list[StudyRead])
def list_studies(
    request: Request,
    s: SessionDep,
    scope: ScopeDep,
    principal: PrincipalDep,
    organisation: str | None = None,
    state: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list:
    scope = scope_for(s, scope, organisation)
    record_read(s, principal, request, "study.search", detail={"query": request.url.query})
    return studystore.list_studies(s, scope=scope, state=state, limit=limit, offset=offset)


def _clinical_only(principal: Principal) -> bool:
    """A radiologist's view: clinical, current results only (see review.viewer)."""
    return not sees_shadow(principal.role)


def _visible_result(s: Session, result_id: int, scope: Scope, principal: Principal) -> ResultRow:
    result = resultstore.get_result(s, result_id, scope=scope)
    hidden = result.mode != "clinical" or result.superseded_by_id is not None
    if hidden and _clinical_only(principal):  # like another tenant's: it does not exist
        raise NotFound(f"result {result_id} does not exist")
    return result


def _read(
    s: Session,
    principal: Principal,
    request: Request,
    action: str,
    organisation_id: int,
    study_id: int,
    detail: dict[str, Any] | None = None,
) -> None:
    record_read(
        s,
        principal,
        request,
        action,
        organisation_id=organisation_id,
        study_id=study_id,
        detail=detail,
    )


@router.get("/studies/{study_id}", response_model=StudyDetail)
def get_study(
    study_id: Id, request: Request, s: SessionDep, scope: ScopeDep, principal: PrincipalDep
) -> StudyDetail:
    study = studystore.get_study(s, study_id, scope=scope)
    _read(s, principal, request, "study.read", study.organisation_id, study.id)
    instances = [
        InstanceRead(
            sop_instance_uid=i.sop_instance_uid,
            sop_class_uid=i.sop_class_uid,
            series_instance_uid=se.series_instance_uid,
            transfer_syntax_uid=i.transfer_syntax_uid,
            size=i.size,
            received_at=i.received_at,
        )
        for i, se in studystore.list_instances(s, study.id)
    ]
    return StudyDetail(
        **StudyRead.model_validate(study).model_dump(),
        instances=instances,
        results=[
            ResultRead.model_validate(r)
            for r in resultstore.list_results(
                s, scope=scope, study_id=study.id, clinical_only=_clinical_only(principal)
            )
        ],
        jobs=[
            JobRead.model_validate(j) for j in jobstore.list_jobs(s, scope=scope, study_id=study.id)
        ],
    )


@router.get("/studies/{study_id}/results", response_model=list[ResultRead])
def study_results(
    study_id: Id, request: Request, s: SessionDep, scope: ScopeDep, principal: PrincipalDep
) -> list:
    """The study's results: a radiologist's the clinical, current ones; a supervisor's
    and an admin's also the shadow and superseded ones (``mode``, ``superseded_by_id``)."""
    study = studystore.get_study(s, study_id, scope=scope)
    _read(s, principal, request, "result.read", study.organisation_id, study.id)
    return resultstore.list_results(
        s, scope=scope, study_id=study_id, clinical_only=_clinical_only(principal)
    )


@router.get("/results", response_model=list[ResultRead])
def list_results(
    request: Request,
    s: SessionDep,
    scope: ScopeDep,
    principal: PrincipalDep,
    organisation: str | None = None,
    limit: Limit = 100,
) -> list:
    record_read(s, principal, request, "result.search", detail={"query": request.url.query})
    return resultstore.list_results(
        s,
        scope=scope_for(s, scope, organisation),
        limit=limit,
        clinical_only=_clinical_only(principal),
    )


@router.get("/results/{result_id}", response_model=ResultRead)
def get_result(
    result_id: Id, request: Request, s: SessionDep, scope: ScopeDep, principal: PrincipalDep
) -> object:
    result = _visible_result(s, result_id, scope, principal)
    detail = {"result_id": result.id}
    _read(s, principal, request, "result.read", result.organisation_id, result.study_id, detail)
    return result


@router.get(
    "/results/{result_id}/files/{index}",
    responses={200: {"content": {"application/dicom": {}}}},
)
def get_result_file(
    result_id: Id,
    index: Id,
    request: Request,
    s: SessionDep,
    rt: RuntimeDep,
    scope: ScopeDep,
    principal: PrincipalDep,
) -> Response:
    """One of the result's DICOM objects, in the order of its ``outputs`` (each one's
    ``url``); the role of each is in ``outputs[index].role``."""
    result = _visible_result(s, result_id, scope, principal)
    if not 0 <= index < len(result.objects):
        raise NotFound(f"result {result_id} has no file {index}")
    obj = result.objects[index]
    detail = {"result_id": result.id, "file": index, "role": obj.role}
    _read(s, principal, request, "result.download", result.organisation_id, result.study_id, detail)
    return Response(rt.files.get(result.objects[index].storage_key), media_type="application/dicom")


@router.get("/jobs", response_model=list[JobRead])
def list_jobs(
    s: SessionDep,
    scope: ScopeDep,
    organisation: str | None = None,
    state: str | None = None,
    kind: str | None = None,
    limit: Limit = 100,
) -> list:
    scope = scope_for(s, scope, organisation)
    return jobstore.list_jobs(s, scope=scope, state=state, kind=kind, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobRead)
def get_job(job_id: Id, s: SessionDep, scope: ScopeDep) -> object:
    return jobstore.get_job(s, job_id, scope=scope)


@router.post("/jobs/{job_id}/retry", response_model=JobRead)
def retry_job(
    job_id: Id, request: Request, s: SessionDep, principal: OperatorDep, scope: ScopeDep
) -> object:
    was = jobstore.get_job(s, job_id, scope=scope).state
    job = jobstore.retry_job(s, job_id, scope=scope)
    detail = {"job_id": job.id, "kind": job.kind, "was": was}
    record_change(s, principal, request, "job.retry", job.organisation_id, detail)
    return job


@router.get("/rejections", response_model=list[RejectionRead])
def list_rejections(
    s: SessionDep, scope: ScopeDep, organisation: str | None = None, limit: Limit = 100
) -> list:
    # rejections from unknown callers have no organisation: only a platform admin sees them
    return studystore.list_rejections(s, scope=scope_for(s, scope, organisation), limit=limit)
