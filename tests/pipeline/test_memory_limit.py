"""A worker's memory ceiling: past it a job fails for good, recorded; a dead worker's job
is counted and dead-lettered, never a retry loop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import SimpleNamespace

from radsight.algorithms.registry import Registry
from radsight.pipeline import runner
from radsight.pipeline.jobs import analyse_key
from radsight.store import jobs as jobstore
from radsight.store.tables import JobRow, StudyRow


def _job(runtime, study_id: int, max_attempts: int = 3) -> int:
    with runtime.db.session() as s:
        org_id = s.get(StudyRow, study_id).organisation_id
        row, _ = jobstore.create_job(
            s,
            dedup_key=analyse_key(study_id, "algo", "1"),
            organisation_id=org_id,
            kind="analyse",
            study_id=study_id,
            algorithm_name="algo",
            algorithm_version="1",
            max_attempts=max_attempts,
        )
        return row.id


def test_a_memory_error_fails_the_job_for_good(runtime, study_id, monkeypatch):
    job_id = _job(runtime, study_id)

    def explode(*_args):  # what numpy raises past RLIMIT_DATA
        raise MemoryError("Unable to allocate 15.6 GiB for an array")

    monkeypatch.setattr(runner, "execute_job", explode)
    with runtime.db.session() as s:
        job = jobstore.claim_job(s, "w", 10)
    assert runner.run_claimed(runtime, Registry([]), job, "w") == "failed"
    with runtime.db.session() as s:
        row = s.get(JobRow, job_id)
    assert (row.state, row.error_code, row.attempts) == ("failed", "memory_limit_exceeded", 1)
    limit = runtime.settings.worker_memory_limit_mb
    assert f"{limit} MiB" in row.error and "worker_memory_limit_mb" in row.error
    with runtime.db.session() as s:  # not queued again
        assert jobstore.claim_job(s, "w", 10) is None


def test_the_ceiling_turns_a_huge_allocation_into_memory_error():
    code = (
        "from radsight.pipeline.runner import limit_worker_memory\n"
        "import numpy as np\n"
        "assert limit_worker_memory(512)\n"
        "try:\n"
        "    np.ones(4 << 30, np.uint8)\n"
        "except MemoryError:\n"
        "    print('refused')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "refused"


def test_a_killed_worker_is_counted_and_dead_lettered(runtime, study_id):
    """A job that kills its worker every time (the OOM killer) ends dead after
    max_attempts, each attempt recorded as worker_lost: no retry loop."""
    job_id = _job(runtime, study_id, max_attempts=3)
    states = []
    for _ in range(5):
        with runtime.db.session() as s:
            s.query(JobRow).filter(JobRow.id == job_id).update({"run_after": JobRow.created_at})
            job = jobstore.claim_job(s, "w", 0.01)
        if job is None:
            break
        time.sleep(0.05)  # the worker died: its lease runs out
        runner.reap_expired(runtime)
        with runtime.db.session() as s:
            states.append(s.get(JobRow, job_id).state)
    assert states == ["queued", "queued", "dead"]
    with runtime.db.session() as s:
        row = s.get(JobRow, job_id)
    assert (row.attempts, row.error_code) == (3, "worker_lost")


def test_the_supervisor_fails_a_dead_workers_job_at_once(runtime, study_id):
    job_id = _job(runtime, study_id)
    pool = runner.WorkerPool(runtime.settings, runtime, 0)
    proc = SimpleNamespace(pid=4242, exitcode=-signal.SIGKILL)
    owner = f"{__import__('os').uname().nodename}:4242:w0"
    with runtime.db.session() as s:
        jobstore.claim_job(s, owner, 600)
    pool._fail_lost_job(job_id, 0, proc)  # type: ignore[arg-type]
    with runtime.db.session() as s:
        row = s.get(JobRow, job_id)
    assert (row.state, row.error_code) == ("queued", "worker_lost")
    assert "SIGKILL" in row.error and "out-of-memory" in row.error
