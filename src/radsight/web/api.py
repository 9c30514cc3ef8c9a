"""JSON for the web app and for other readers: verdicts, audit, worklist, viewer frames.

Every route is scoped to the caller's organisations; another tenant's study answers 404.
Reads of patient data are recorded in the audit trail (:mod:`radsight.api.audit`); the
viewer's frames at most once per user, address and study a minute.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from radsight import auth
from radsight.api.audit import client_address, record_read
from radsight.api.auth import AdminDep, PrincipalDep, SupervisorDep
from radsight.api.deps import Id, IdQuery, Offset, RuntimeDep, SessionDep
from radsight.review.frames import read_display_frame
from radsight.review.verdicts import VerdictRequest, give_verdict, visible_study
from radsight.review.viewer import status_text
from radsight.store import audit as auditstore
from radsight.store import people
from radsight.store import verdicts as verdictstore
from radsight.store import worklist as worklist_store

router = APIRouter(tags=["review"])


class VerdictCreate(BaseModel):
    kind: Literal["finding", "study", "conclusion", "repeat"]
    value: str = Field("", max_length=16)
    text: str = Field("", max_length=20_000)
    finding_key: str = Field("", max_length=64)
    result_id: int | None = None


class VerdictRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    study_id: int
    result_id: int | None
    user_id: int
    username: str = ""
    algorithm_name: str
    algorithm_version: str
    kind: str
    finding_key: str
    value: str
    text: str
    supersedes_id: int | None
    superseded_by: int | None = None
    created_at: datetime


class AuditRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    organisation_id: int | None
    user_id: int | None
    actor: str
    action: str
    study_id: int | None
    detail: dict[str, Any]
    remote_addr: str
    created_at: datetime


class WorklistItem(BaseModel):
    id: int
    study_instance_uid: str
    study_type: str
    status: str
    status_text: str
    urgent: bool
    ai_score: float | None
    patient_name: str
    patient_id: str
    accession_number: str
    first_received_at: datetime


class WorklistRead(BaseModel):
    studies: list[WorklistItem]
    next_cursor: str


@router.get("/api/studies/{study_id}/verdicts", response_model=list[VerdictRead])
def list_study_verdicts(
    study_id: Id, request: Request, s: SessionDep, principal: PrincipalDep
) -> list:
    study = visible_study(s, principal, study_id)
    record_read(
        s,
        principal,
        request,
        "study.read",
        organisation_id=study.organisation_id,
        study_id=study.id,
        detail={"resource": "verdicts"},
    )
    return [
        VerdictRead.model_validate(e.row).model_copy(
            update={"username": e.username, "superseded_by": e.superseded_by}
        )
        for e in verdictstore.verdict_history(s, study_id)
    ]


@router.post("/api/studies/{study_id}/verdicts", response_model=VerdictRead, status_code=201)
def create_study_verdict(
    study_id: Id, body: VerdictCreate, request: Request, s: SessionDep, principal: PrincipalDep
) -> VerdictRead:
    row = give_verdict(
        s,
        principal,
        study_id,
        VerdictRequest(body.kind, body.value, body.text, body.finding_key, body.result_id),
        client_address(request),
    )
    # the user who gave it, as the history shows (a token acting for a user has its own name)
    user = people.get_user_by_id(s, row.user_id)
    username = user.username if user is not None else principal.name
    return VerdictRead.model_validate(row).model_copy(update={"username": username})


@router.get("/api/audit", response_model=list[AuditRead])
def list_audit(
    s: SessionDep,
    principal: SupervisorDep,
    study_id: IdQuery = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list:
    scope = auth.scope_of(s, principal)
    return people.list_audit(
        s, scope=scope, study_id=study_id, action=action, limit=limit, offset=offset
    )


class ChainRead(BaseModel):
    ok: bool
    events: int
    unchained: int
    first_id: int | None
    last_id: int | None
    head: str
    problems: list[str]


@router.get("/api/audit/verify", response_model=ChainRead)
def verify_audit(s: SessionDep, _: AdminDep) -> ChainRead:
    """Recompute the audit trail's hash chain (``radsight audit verify``); platform admins."""
    r = auditstore.verify_chain(s)
    return ChainRead(
        ok=r.ok,
        events=r.events,
        unchained=r.unchained,
        first_id=r.first_id,
        last_id=r.last_id,
        head=r.head,
        problems=r.problems[:100],
    )


@router.get("/api/worklist", response_model=WorklistRead)
def worklist(
    request: Request,
    s: SessionDep,
    principal: PrincipalDep,
    study_type: Annotated[str, Query(max_length=16)] = "",
    status: Annotated[str, Query(max_length=32)] = "",
    received_from: datetime | None = None,
    received_to: datetime | None = None,
    q: Annotated[str, Query(max_length=64)] = "",
    cursor: Annotated[str, Query(max_length=80)] = "",
    limit: Annotated[int, Query(ge=1, le=worklist_store.PAGE_SIZE_MAX)] = 50,
) -> WorklistRead:
    record_read(s, principal, request, "worklist.view", detail={"query": request.url.query})
    page = worklist_store.list_worklist(
        s,
        worklist_store.WorklistQuery(
            scope=auth.scope_of(s, principal),
            study_type=study_type,
            status=status,
            received_from=received_from,
            received_to=received_to,
            search=q,
            cursor=cursor,
            limit=limit,
        ),
    )
    return WorklistRead(
        studies=[
            WorklistItem(
                id=st.id,
                study_instance_uid=st.study_instance_uid,
                study_type=st.study_type,
                status=worklist_store.study_status(st),
                status_text=status_text(st),
                urgent=st.urgent,
                ai_score=st.ai_score,
                patient_name=st.patient_name,
                patient_id=st.patient_id,
                accession_number=st.accession_number,
                first_received_at=st.first_received_at,
            )
            for st in page.studies
        ],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/web/frames/{instance_id}/{frame_index}",
    include_in_schema=False,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def viewer_frame(
    instance_id: Id,
    frame_index: Id,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    """A frame as 16-bit values for the viewer's canvas (see :mod:`radsight.review.frames`)."""
    # a short unit of work: the database is not held while the frame is decoded
    with rt.db.session() as s:
        scope = auth.scope_of(s, principal)
        row = worklist_store.get_instance(s, instance_id, scope=scope)
        key = row.storage_key
        record_read(
            s,
            principal,
            request,
            "study.images",
            organisation_id=row.organisation_id,
            study_id=row.study_id,
            detail={"resource": "viewer frames", "via": "viewer"},
            throttle=True,
        )
    frame = read_display_frame(
        rt.files.get(key),
        frame_index,
        key,
        max_frame_pixels=rt.settings.max_frame_pixels,
        max_instance_pixels=rt.settings.max_instance_pixels,
        max_render_pixels=rt.settings.max_render_pixels,
    )
    return Response(
        frame.data,
        media_type="application/octet-stream",
        headers={
            "X-Rows": str(frame.rows),
            "X-Columns": str(frame.columns),
            "X-Slope": repr(frame.slope),
            "X-Intercept": repr(frame.intercept),
            "X-Window-Center": repr(frame.window_center),
            "X-Window-Width": repr(frame.window_width),
            "Cache-Control": "private, max-age=3600",
        },
    )
