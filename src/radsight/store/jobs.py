"""Durable jobs: create idempotently, claim with a lease, finish, retry, dead-letter."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from radsight.errors import NotFound
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import JobRow


def create_job(s: Session, *, dedup_key: str, **fields: object) -> tuple[JobRow, bool]:
    """Create the job unless one with the same key exists; return (job, created)."""
    existing = s.scalar(select(JobRow).where(JobRow.dedup_key == dedup_key))
    if existing is not None:
        return existing, False
    now = utcnow()
    row = JobRow(dedup_key=dedup_key, created_at=now, run_after=now, state="queued", **fields)
    s.add(row)
    s.flush()
    return row, True


def get_job_by_key(s: Session, dedup_key: str) -> JobRow | None:
    return s.scalar(select(JobRow).where(JobRow.dedup_key == dedup_key))


def claim_job(
    s: Session, owner: str, lease_s: float, queues: list[str] | None = None
) -> JobRow | None:
    """Take the oldest runnable job: compare-and-set from queued to running, with a lease."""
    now = utcnow()
    q = (
        select(JobRow.id)
        .where(JobRow.state == "queued", JobRow.run_after <= now)
        .order_by(JobRow.run_after, JobRow.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if queues:
        q = q.where(JobRow.queue.in_(queues))
    job_id = s.scalar(q)
    if job_id is None:
        return None
    return claim_job_by_id(s, job_id, owner, lease_s)


def claim_job_by_id(s: Session, job_id: int, owner: str, lease_s: float) -> JobRow | None:
    """Take one named job if it is still queued and due (a runner was told to run it)."""
    now = utcnow()
    res = s.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.state == "queued", JobRow.run_after <= now)
        .values(
            state="running",
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempts=JobRow.attempts + 1,
            started_at=now,
        )
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = s.get(JobRow, job_id)
    s.refresh(row)
    return row


def jobs_to_dispatch(s: Session, redispatch_s: float, limit: int = 500) -> list[JobRow]:
    """Queued, due jobs that no runner has been told about since they became due."""
    now = utcnow()
    q = (
        select(JobRow)
        .where(JobRow.state == "queued", JobRow.run_after <= now)
        .where(
            (JobRow.dispatched_at.is_(None))
            | (JobRow.dispatched_at < JobRow.run_after)
            | (JobRow.dispatched_at < now - timedelta(seconds=redispatch_s))
        )
        .order_by(JobRow.run_after, JobRow.id)
        .limit(limit)
    )
    return list(s.scalars(q))


def mark_dispatched(s: Session, job_ids: list[int]) -> None:
    if job_ids:
        s.execute(update(JobRow).where(JobRow.id.in_(job_ids)).values(dispatched_at=utcnow()))


def renew_lease(s: Session, job_id: int, owner: str, lease_s: float) -> bool:
    res = s.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.state == "running", JobRow.lease_owner == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def finish_job(s: Session, job_id: int, owner: str | None = None) -> bool:
    q = update(JobRow).where(JobRow.id == job_id, JobRow.state == "running")
    if owner is not None:
        q = q.where(JobRow.lease_owner == owner)
    res = s.execute(
        q.values(
            state="done",
            finished_at=utcnow(),
            lease_owner="",
            lease_expires_at=None,
            error_code="",
            error="",
        )
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def fail_job(
    s: Session,
    job_id: int,
    *,
    state: str,
    delay_s: float = 0.0,
    error_code: str,
    error: str,
    owner: str | None = None,
) -> bool:
    """Move a running job to ``state`` (queued again after ``delay_s``, failed or dead).

    The state comes from the pure state machine, :func:`radsight.pipeline.jobs.after_failure`.
    """
    now = utcnow()
    values: dict[str, object] = {
        "state": state,
        "error_code": error_code,
        "error": error[:4000],
        "lease_owner": "",
        "lease_expires_at": None,
    }
    if state == "queued":
        values["run_after"] = now + timedelta(seconds=delay_s)
    else:
        values["finished_at"] = now
    q = update(JobRow).where(JobRow.id == job_id, JobRow.state == "running")
    if owner is not None:
        q = q.where(JobRow.lease_owner == owner)
    res = s.execute(q.values(**values))
    return res.rowcount == 1  # type: ignore[attr-defined]


def expired_jobs(s: Session) -> list[JobRow]:
    """Running jobs whose worker stopped renewing its lease (it died or hangs)."""
    return list(
        s.scalars(
            select(JobRow).where(JobRow.state == "running", JobRow.lease_expires_at < utcnow())
        )
    )


def get_job(s: Session, job_id: int, *, scope: Scope) -> JobRow:
    row = s.get(JobRow, job_id)
    if row is None or not scope.includes(row.organisation_id):
        raise NotFound(f"job {job_id} does not exist")
    return row


def list_jobs(
    s: Session,
    *,
    scope: Scope,
    state: str | None = None,
    study_id: int | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[JobRow]:
    q = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
    q = q.where(scope.where(JobRow.organisation_id))
    if state:
        q = q.where(JobRow.state == state)
    if study_id is not None:
        q = q.where(JobRow.study_id == study_id)
    if kind:
        q = q.where(JobRow.kind == kind)
    return list(s.scalars(q))


def count_by_state(s: Session, *, scope: Scope) -> dict[str, int]:
    q = select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state)
    q = q.where(scope.where(JobRow.organisation_id))
    return {f"{kind}.{state}": n for kind, state, n in s.execute(q)}


def retry_job(s: Session, job_id: int, *, scope: Scope) -> JobRow:
    """Put a failed or dead-lettered job back in the queue (an operator's decision)."""
    row = get_job(s, job_id, scope=scope)
    if row.state not in ("failed", "dead"):
        from radsight.errors import Conflict

        raise Conflict(f"job {job_id} is {row.state}; only failed or dead jobs can be retried")
    row.state = "queued"
    row.attempts = 0
    row.run_after = utcnow()
    row.finished_at = None
    s.flush()
    return row
