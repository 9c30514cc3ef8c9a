"""Read-only queries behind quality monitoring and the dashboards (docs/quality.md).

Each returns plain tuples or dicts; the statistics live in :mod:`radsight.monitor`.
Every query of tenant rows takes the required ``scope`` (:class:`radsight.store.scope.Scope`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from radsight.errors import InvalidInput
from radsight.store.scope import Scope
from radsight.store.tables import (
    InstanceRow,
    JobRow,
    OrganisationRow,
    RegionRow,
    ResultRow,
    StudyRow,
    VerdictRow,
)


def _scoped(q: Any, column: Any, scope: Scope) -> Any:
    return q if scope.is_all else q.where(scope.where(column))


def organisation_names(s: Session, *, scope: Scope) -> dict[int, tuple[str, str]]:
    """organisation id -> (organisation name, region name)."""
    q = select(OrganisationRow.id, OrganisationRow.name, RegionRow.name).join(
        RegionRow, RegionRow.id == OrganisationRow.region_id
    )
    return {i: (o, r) for i, o, r in s.execute(_scoped(q, OrganisationRow.id, scope))}


def job_counts(
    s: Session, *, scope: Scope, since: datetime | None = None
) -> list[tuple[str, str, str, int, str, str, int]]:
    """(kind, algorithm, version, organisation, state, error_code, count) of jobs."""
    q = select(
        JobRow.kind,
        JobRow.algorithm_name,
        JobRow.algorithm_version,
        JobRow.organisation_id,
        JobRow.state,
        JobRow.error_code,
        func.count(),
    ).group_by(
        JobRow.kind,
        JobRow.algorithm_name,
        JobRow.algorithm_version,
        JobRow.organisation_id,
        JobRow.state,
        JobRow.error_code,
    )
    if since is not None:
        q = q.where(JobRow.created_at >= since)
    return [tuple(r) for r in s.execute(_scoped(q, JobRow.organisation_id, scope))]  # type: ignore[misc]


def delivery_failures(s: Session, *, scope: Scope, since: datetime | None = None) -> list[tuple]:
    """(algorithm, version, organisation, result id) of dead or failed delivery jobs; a
    delivery the admission gate stopped (``not_admitted``) is no technical failure."""
    r = aliased(ResultRow)
    q = (
        select(r.algorithm_name, r.algorithm_version, JobRow.organisation_id, JobRow.result_id)
        .join(r, r.id == JobRow.result_id)
        .where(
            JobRow.kind == "deliver",
            JobRow.state.in_(("dead", "failed")),
            JobRow.error_code != "not_admitted",
        )
    )
    if since is not None:
        q = q.where(JobRow.created_at >= since)
    return [tuple(x) for x in s.execute(_scoped(q, JobRow.organisation_id, scope))]


def analysed_results(
    s: Session, *, scope: Scope, since: datetime | None = None, limit: int = 5000
) -> list[dict[str, Any]]:
    """Recent analysed results with what the output checks and turnaround need."""
    delivered = (
        select(JobRow.result_id, func.max(JobRow.finished_at).label("delivered_at"))
        .where(JobRow.kind == "deliver", JobRow.state == "done")
        .group_by(JobRow.result_id)
        .subquery()
    )
    q = (
        select(ResultRow, StudyRow, delivered.c.delivered_at)
        .join(StudyRow, StudyRow.id == ResultRow.study_id)
        .outerjoin(delivered, delivered.c.result_id == ResultRow.id)
        .where(ResultRow.status == "analysed")
        .order_by(ResultRow.id.desc())
        .limit(limit)
    )
    if since is not None:
        q = q.where(ResultRow.created_at >= since)
    out = []
    for res, study, delivered_at in s.execute(_scoped(q, ResultRow.organisation_id, scope)):
        out.append(
            {
                "result_id": res.id,
                "organisation_id": res.organisation_id,
                "algorithm_name": res.algorithm_name,
                "algorithm_version": res.algorithm_version,
                "study_id": study.id,
                "study_instance_uid": study.study_instance_uid,
                "study_type": study.study_type,
                "objects": [{"role": o.role, "storage_key": o.storage_key} for o in res.objects],
                "study_score": res.study_score,
                "verdict": res.verdict,
                "received_at": study.first_received_at,
                "ready_at": study.ready_at,
                "analysed_at": res.created_at,
                "delivered_at": delivered_at,
            }
        )
    return out


def analysed_frames(s: Session, study_ids: list[int]) -> dict[tuple[int, str, str], int]:
    """(study, algorithm, version) -> frames its analysis job was given (SC expected)."""
    if not study_ids:
        return {}
    jobs = s.execute(
        select(
            JobRow.study_id, JobRow.algorithm_name, JobRow.algorithm_version, JobRow.payload
        ).where(JobRow.kind == "analyse", JobRow.study_id.in_(study_ids))
    ).all()
    frames = s.execute(
        select(
            InstanceRow.study_id, InstanceRow.sop_instance_uid, InstanceRow.number_of_frames
        ).where(InstanceRow.study_id.in_(study_ids))
    ).all()
    by_study: dict[int, dict[str, int]] = {}
    for sid, uid, n in frames:
        by_study.setdefault(sid, {})[uid] = n or 1
    out = {}
    for sid, name, version, payload in jobs:
        wanted = (payload or {}).get("sop_instance_uids") or list(by_study.get(sid, {}))
        out[(sid, name, version)] = sum(by_study.get(sid, {}).get(u, 1) for u in wanted)
    return out


def current_verdicts(
    s: Session, *, scope: Scope, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Verdicts not superseded by a newer one, joined with the results they judge.

    A ``study`` verdict (normal/abnormal) judges every analysed result of its study; a
    ``finding`` verdict (agree/disagree/unsure) judges its own result (or the study's
    result of its algorithm).
    """
    newer = aliased(VerdictRow)
    q = (
        select(VerdictRow, ResultRow, StudyRow.study_type)
        .join(StudyRow, StudyRow.id == VerdictRow.study_id)
        .join(
            ResultRow,
            and_(
                ResultRow.study_id == VerdictRow.study_id,
                ResultRow.status == "analysed",
            ),
        )
        .outerjoin(newer, newer.supersedes_id == VerdictRow.id)
        .where(newer.id.is_(None), VerdictRow.kind.in_(("study", "finding")))
    )
    if since is not None:
        q = q.where(VerdictRow.created_at >= since)
    out = []
    for v, r, study_type in s.execute(_scoped(q, VerdictRow.organisation_id, scope)):
        if v.kind == "finding":
            if v.result_id is not None and v.result_id != r.id:
                continue
            if v.result_id is None and v.algorithm_name and v.algorithm_name != r.algorithm_name:
                continue
        out.append(
            {
                "verdict_id": v.id,
                "kind": v.kind,
                "value": v.value,
                "finding_key": v.finding_key,
                "user_id": v.user_id,
                "created_at": v.created_at,
                "organisation_id": v.organisation_id,
                "study_id": v.study_id,
                "study_type": study_type,
                "algorithm_name": r.algorithm_name,
                "algorithm_version": r.algorithm_version,
                "ai_verdict": r.verdict,
            }
        )
    return out


def drift_inputs(
    s: Session,
    algorithm_name: str,
    algorithm_version: str,
    since: datetime,
    *,
    scope: Scope,
    limit: int = 20000,
) -> list[dict[str, Any]]:
    """Recent analysed results of one version with their first image's characteristics."""
    first = (
        select(InstanceRow.study_id, func.min(InstanceRow.id).label("iid"))
        .group_by(InstanceRow.study_id)
        .subquery()
    )
    q = (
        select(
            ResultRow.study_score,
            StudyRow.patient_birth_date,
            StudyRow.study_date,
            InstanceRow.attributes,
        )
        .join(StudyRow, StudyRow.id == ResultRow.study_id)
        .join(first, first.c.study_id == ResultRow.study_id)
        .join(InstanceRow, InstanceRow.id == first.c.iid)
        .where(
            ResultRow.algorithm_name == algorithm_name,
            ResultRow.algorithm_version == algorithm_version,
            ResultRow.status == "analysed",
            ResultRow.created_at >= since,
        )
        .order_by(ResultRow.id.desc())
        .limit(limit)
    )
    q = _scoped(q, ResultRow.organisation_id, scope)
    return [
        {"score": score, "birth_date": birth, "study_date": date, "attributes": attrs or {}}
        for score, birth, date, attrs in s.execute(q)
    ]


def versions_in_use(s: Session, *, scope: Scope, since: datetime | None) -> list[tuple[str, str]]:
    q = (
        select(ResultRow.algorithm_name, ResultRow.algorithm_version)
        .where(ResultRow.status == "analysed")
        .distinct()
    )
    if since is not None:
        q = q.where(ResultRow.created_at >= since)
    return sorted(tuple(r) for r in s.execute(_scoped(q, ResultRow.organisation_id, scope)))  # type: ignore[misc]


def activity(
    s: Session, *, scope: Scope, since: datetime | None, until: datetime | None, period: str
) -> list[tuple]:
    """(period, organisation, study type, algorithm, studies, flagged, urgent) per group.

    ``period`` is day, week or month (by when the result was made); a study analysed by two
    algorithms counts once per algorithm. Clinical, current results only: what radiologists
    were given (a shadow run or a superseded version's result does not count twice).
    """
    bucket = _period(s, ResultRow.created_at, period)
    flagged = func.sum(func.cast(ResultRow.verdict == "abnormal", type_=_int()))
    urgent = func.sum(func.cast(ResultRow.urgent, type_=_int()))
    q = (
        select(
            bucket.label("p"),
            ResultRow.organisation_id,
            StudyRow.study_type,
            ResultRow.algorithm_name,
            func.count(),
            flagged,
            urgent,
        )
        .join(StudyRow, StudyRow.id == ResultRow.study_id)
        .where(
            ResultRow.status == "analysed",
            ResultRow.mode == "clinical",
            ResultRow.superseded_by_id.is_(None),
        )
        .group_by("p", ResultRow.organisation_id, StudyRow.study_type, ResultRow.algorithm_name)
        .order_by("p")
    )
    if since is not None:
        q = q.where(ResultRow.created_at >= since)
    if until is not None:
        q = q.where(ResultRow.created_at < until)
    return [tuple(r) for r in s.execute(_scoped(q, ResultRow.organisation_id, scope))]


def _int() -> Any:
    from sqlalchemy import Integer

    return Integer


def _period(s: Session, column: Any, period: str) -> Any:
    if period not in ("day", "week", "month"):
        raise InvalidInput(f"period must be day, week or month, not {period!r}")
    if s.get_bind().dialect.name == "postgresql":
        return func.to_char(
            func.date_trunc(period, column), "YYYY-MM-DD" if period != "month" else "YYYY-MM"
        )
    if period == "week":  # the Monday of the week, as on PostgreSQL
        return func.date(column, "weekday 0", "-6 days")
    return func.strftime("%Y-%m-%d" if period == "day" else "%Y-%m", column)


def result_counts_by_mode(
    s: Session, *, scope: Scope, since: datetime | None
) -> dict[tuple[str, str, str], int]:
    """(algorithm name, version, mode) -> analysed results since ``since`` (shadow or
    clinical; the admission pages show how much a version has run in shadow)."""
    q = select(
        ResultRow.algorithm_name, ResultRow.algorithm_version, ResultRow.mode, func.count()
    ).where(ResultRow.status == "analysed")
    if since is not None:
        q = q.where(ResultRow.created_at >= since)
    q = _scoped(q, ResultRow.organisation_id, scope).group_by(
        ResultRow.algorithm_name, ResultRow.algorithm_version, ResultRow.mode
    )
    return {(n, v, m): int(c) for n, v, m, c in s.execute(q)}
