"""Re-analysis over HTTP: ``POST /api/reanalyses`` (docs/operations.md, "Re-analysis").

The same request as ``radsight reanalyse``, as JSON. Supervisors (their region's
organisations), organisation admins (their own organisation) and platform admins may ask;
a study or organisation outside the caller's scope reads as one that does not exist. Each
request that is not a dry run leaves an audit row ``reanalyse`` naming who asked.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from radsight import auth
from radsight.api.audit import client_address
from radsight.api.auth import SupervisorDep
from radsight.api.deps import RegistryDep, RuntimeDep
from radsight.pipeline.reanalysis import Selection, reanalyse

router = APIRouter(prefix="/api", tags=["reanalyses"])


class ReanalysisCreate(BaseModel):
    study_instance_uids: list[str] = Field(
        default_factory=list, description="these studies (or an organisation)"
    )
    organisation: str | None = Field(None, description="every study of this organisation")
    since: datetime | None = Field(None, description="first received at or after (UTC)")
    until: datetime | None = Field(None, description="first received before (UTC)")
    algorithm: str | None = Field(None, description="only NAME or NAME@VERSION")
    force: bool = Field(False, description="re-analyse results whose input is unchanged")
    dry_run: bool = Field(False, description="say what would happen; change nothing")
    limit: int = Field(10000, ge=1, description="refuse a selection of more studies")


class DecisionRead(BaseModel):
    study_id: int
    study_instance_uid: str
    action: str
    reason: str
    algorithm_name: str
    algorithm_version: str
    revision: int
    job_id: int | None
    result_id: int | None


class ReanalysisRead(BaseModel):
    dry_run: bool
    studies: int
    #: analyse | reanalyse | promote | pending | up_to_date | skipped -> how many
    counts: dict[str, int]
    job_ids: list[int]
    decisions: list[DecisionRead]


def _naive_utc(when: datetime | None) -> datetime | None:
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(tz=None).replace(tzinfo=None)


@router.post("/reanalyses", response_model=ReanalysisRead)
def create_reanalysis(
    body: ReanalysisCreate,
    request: Request,
    rt: RuntimeDep,
    registry: RegistryDep,
    principal: SupervisorDep,
) -> ReanalysisRead:
    # not ScopeDep: its request-long session would hold SQLite's write lock while the
    # re-analysis writes in sessions of its own
    with rt.db.session() as s:
        scope = auth.scope_of(s, principal)
    selection = Selection(
        study_instance_uids=tuple(body.study_instance_uids),
        organisation=body.organisation,
        since=_naive_utc(body.since),
        until=_naive_utc(body.until),
        algorithm=body.algorithm,
        force=body.force,
        limit=body.limit,
    )
    summary = reanalyse(
        rt,
        registry,
        request.app.state.rules,  # the rules in force (they may be reloaded while serving)
        selection,
        scope=scope,
        actor=principal,
        dry_run=body.dry_run,
        remote_addr=client_address(request),
    )
    return ReanalysisRead(
        dry_run=summary.dry_run,
        studies=summary.studies,
        counts=summary.counts(),
        job_ids=summary.job_ids,
        decisions=[DecisionRead.model_validate(d, from_attributes=True) for d in summary.decisions],
    )
