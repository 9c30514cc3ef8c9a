"""The job state machine, and the durable queue on a real database."""

from __future__ import annotations

import pytest

from radsight.pipeline.jobs import after_failure, analyse_key, backoff_delay
from radsight.store import jobs as jobstore
from radsight.store.clock import utcnow
from radsight.store.scope import Scope


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "retryable", "state", "delay"),
    [
        (1, 3, True, "queued", 2.0),
        (2, 3, True, "queued", 4.0),
        (3, 3, True, "dead", 0.0),
        (1, 3, False, "failed", 0.0),
        (9, 10, True, "queued", 300.0),  # capped
    ],
)
def test_after_failure(attempts, max_attempts, retryable, state, delay):
    t = after_failure(
        attempts=attempts,
        max_attempts=max_attempts,
        retryable=retryable,
        backoff_s=2.0,
        backoff_max_s=300.0,
    )
    assert (t.state, t.delay_s) == (state, delay)


def test_backoff_doubles():
    assert [backoff_delay(n, 1.0, 100.0) for n in range(1, 6)] == [1, 2, 4, 8, 16]


def make_job(runtime, study_id: int, name: str = "algo"):  # type: ignore[no-untyped-def]
    with runtime.db.session() as s:
        return jobstore.create_job(
            s,
            dedup_key=analyse_key(study_id, name, "1"),
            organisation_id=1,
            kind="analyse",
            study_id=study_id,
            algorithm_name=name,
            algorithm_version="1",
            max_attempts=2,
        )


def test_creating_a_job_twice_is_idempotent(runtime, study_id):
    job, created = make_job(runtime, study_id)
    again, created_again = make_job(runtime, study_id)
    assert created and not created_again and again.id == job.id


def test_claim_is_exclusive_and_leased(runtime, study_id):
    make_job(runtime, study_id)
    with runtime.db.session() as s:
        first = jobstore.claim_job(s, "w1", 10)
    with runtime.db.session() as s:
        second = jobstore.claim_job(s, "w2", 10)
    assert first is not None and first.state == "running" and first.attempts == 1
    assert first.lease_owner == "w1"
    assert second is None, "a running job is not handed out twice"


def test_expired_lease_is_reaped_then_dead_lettered(runtime, study_id):
    from radsight.pipeline.runner import reap_expired

    make_job(runtime, study_id)
    for attempt in (1, 2):
        with runtime.db.session() as s:
            job = jobstore.claim_job(s, f"w{attempt}", lease_s=-1)  # already expired
        assert job is not None and job.attempts == attempt
        assert reap_expired(runtime) == 1
        with runtime.db.session() as s:
            job = jobstore.get_job(s, job.id, scope=Scope.ALL)
            s.execute(__import__("sqlalchemy").update(type(job)).values(run_after=utcnow()))
    with runtime.db.session() as s:
        job = jobstore.get_job(s, job.id, scope=Scope.ALL)
    assert job.state == "dead"
    assert job.error_code == "worker_lost"


def test_finish_only_by_lease_owner(runtime, study_id):
    make_job(runtime, study_id)
    with runtime.db.session() as s:
        job = jobstore.claim_job(s, "w1", 10)
    with runtime.db.session() as s:
        assert not jobstore.finish_job(s, job.id, "someone-else")
        assert jobstore.finish_job(s, job.id, "w1")
        assert jobstore.get_job(s, job.id, scope=Scope.ALL).state == "done"


def test_operator_can_retry_a_dead_job(runtime, study_id):
    from radsight.errors import Conflict

    job, _ = make_job(runtime, study_id)
    with runtime.db.session() as s:
        with pytest.raises(Conflict):
            jobstore.retry_job(s, job.id, scope=Scope.ALL)
    with runtime.db.session() as s:
        jobstore.claim_job(s, "w", 10)
        jobstore.fail_job(s, job.id, state="dead", error_code="x", error="boom")
    with runtime.db.session() as s:
        assert jobstore.retry_job(s, job.id, scope=Scope.ALL).state == "queued"


def test_study_whose_every_job_died_is_marked_failed(runtime, study_id):
    from radsight.errors import AlgorithmError
    from radsight.pipeline.runner import fail
    from radsight.store import studies as studystore

    make_job(runtime, study_id, "a")
    make_job(runtime, study_id, "b")
    for owner in ("w1", "w2"):
        with runtime.db.session() as s:
            job = jobstore.claim_job(s, owner, 10)
        with runtime.db.session() as s:
            s.execute(__import__("sqlalchemy").update(type(job)).values(max_attempts=1))
        job.max_attempts = 1
        assert fail(runtime, job, AlgorithmError("boom"), owner) == "dead"
        with runtime.db.session() as s:
            state = studystore.get_study(s, study_id, scope=Scope.ALL).state
        assert state == ("failed" if owner == "w2" else "receiving")
    with runtime.db.session() as s:
        reason = studystore.get_study(s, study_id, scope=Scope.ALL).state_reason
    assert "a 1: algorithm_error" in reason and "b 1: algorithm_error" in reason
