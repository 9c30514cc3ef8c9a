"""Running jobs: the embedded runner (worker processes over the database queue).

``execute_job`` is the runner-independent body: given a claimed job it runs the analysis
or the delivery and raises a :mod:`radsight.errors` exception on failure. The embedded
runner below claims jobs from the database with a lease; a Celery runner (scale-out) can
call the same function from a task without touching the pipeline.

Time limits: each worker process reports the job it runs and when it started through
shared memory; the supervisor kills a worker that overruns its job's limit and fails the
job with ``time_limit_exceeded`` (retried, then dead-lettered). A worker that dies any
other way (the kernel's out-of-memory killer sends SIGKILL) has its job failed as
``worker_lost`` at once by the supervisor, or by the lease reaper where no supervisor saw it
(Celery); either way the attempt counts, so the job is dead-lettered after
``job_max_attempts`` tries instead of looping.

Memory: each worker process caps its own heap at ``worker_memory_limit_mb``
(:func:`limit_worker_memory`, ``RLIMIT_DATA``), so an allocation past it raises
``MemoryError`` in the job instead of growing until the kernel kills the process; the job
fails for good as ``memory_limit_exceeded`` (:class:`~radsight.errors.ResourceLimitExceeded`).
``RLIMIT_DATA`` (private writable memory: heap and anonymous mappings) rather than
``RLIMIT_AS`` (address space): ONNX Runtime's and OpenBLAS's threads reserve stacks and
malloc arenas they never touch, so address space grows with the number of cores (about
2.3 times the data size measured here with the CXR model on 2 cores) and ``RLIMIT_AS``
would fail jobs that use little memory.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.sharedctypes import Synchronized

from radsight.algorithms.registry import Registry
from radsight.config import Settings
from radsight.errors import AlgorithmTimeout, RadsightError, ResourceLimitExceeded, WorkerLost
from radsight.pipeline.analyse import close_study_if_done, run_analysis
from radsight.pipeline.deliver import run_delivery
from radsight.pipeline.jobs import after_failure
from radsight.runtime import Runtime
from radsight.store import jobs as jobstore
from radsight.store.tables import JobRow

log = logging.getLogger(__name__)

#: the code of a job that failed with an exception outside radsight.errors
INTERNAL_ERROR = "internal_error"


def limit_worker_memory(limit_mb: int) -> bool:
    """Cap this process's private writable memory at ``limit_mb`` MiB (0: no cap).

    Called first thing in a worker process (the embedded workers and each Celery pool
    process), never in the server: past the cap an allocation raises ``MemoryError``.
    Returns whether a cap was set.
    """
    if limit_mb <= 0:
        return False
    import resource

    limit = limit_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return True


def memory_limit_error(rt: Runtime) -> ResourceLimitExceeded:
    limit = rt.settings.worker_memory_limit_mb
    ceiling = f"the worker's ceiling of {limit} MiB" if limit else "the machine's memory"
    return ResourceLimitExceeded(
        f"the job ran out of memory ({ceiling}, setting worker_memory_limit_mb): "
        "the same input would do it again, so it is not retried"
    )


def execute_job(rt: Runtime, registry: Registry, job: JobRow) -> str:
    if job.kind == "analyse":
        return run_analysis(rt, registry, job).status
    if job.kind == "deliver":
        return f"sent {run_delivery(rt, job)}"
    raise RadsightError(f"unknown job kind {job.kind!r}")


def fail(rt: Runtime, job: JobRow, exc: BaseException, owner: str | None = None) -> str:
    """Record a failed attempt: retry with backoff, fail, or dead-letter.

    The job edge of :mod:`radsight.errors`: a :class:`RadsightError` fails with its code,
    retried when its class is ``retryable``; a caller's
    :class:`~radsight.errors.InvalidInput` or a
    :class:`~radsight.errors.StoredObjectUnreadable` fails for good (the same bytes give
    the same failure). Any other exception is a bug or a library's surprise:
    ``internal_error``, retried (it may be transient) and logged with its traceback.
    """
    if isinstance(exc, RadsightError):
        code, message, retryable = exc.code, exc.message, exc.retryable
    else:
        code, message, retryable = INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", True
    s_ = rt.settings
    max_attempts = job.max_attempts
    transition = after_failure(
        attempts=job.attempts,
        max_attempts=max_attempts,
        retryable=retryable,
        backoff_s=s_.job_backoff_s,
        backoff_max_s=s_.job_backoff_max_s,
    )
    with rt.db.session() as s:
        changed = jobstore.fail_job(
            s,
            job.id,
            state=transition.state,
            delay_s=transition.delay_s,
            error_code=code,
            error=message,
            owner=owner,
        )
        if changed and job.kind == "analyse" and transition.state in ("failed", "dead"):
            close_study_if_done(s, job.study_id, job.id)
    log.warning(
        "job %d (%s) attempt %d/%d failed: %s: %s -> %s",
        job.id,
        job.kind,
        job.attempts,
        max_attempts,
        code,
        message,
        transition.state,
        exc_info=exc if code == INTERNAL_ERROR else None,
    )
    return transition.state


def run_one(
    rt: Runtime,
    registry: Registry,
    owner: str,
    queues: list[str] | None = None,
    current: Synchronized | None = None,
    started: Synchronized | None = None,
) -> bool:
    """Claim the oldest runnable job and run it; return False when the queue was empty."""
    with rt.db.session() as s:
        job = jobstore.claim_job(s, owner, rt.settings.job_lease_s, queues)
    if job is None:
        return False
    if current is not None and started is not None:
        started.value = time.time()
        current.value = job.id
    try:
        run_claimed(rt, registry, job, owner)
    finally:
        if current is not None:
            current.value = 0
    return True


def run_claimed(
    rt: Runtime,
    registry: Registry,
    job: JobRow,
    owner: str,
    interruptions: tuple[type[BaseException], ...] = (),
) -> str:
    """Run a job this worker has claimed, keep its lease alive, record how it ended.

    Shared by the embedded workers and the Celery task. ``interruptions`` are exceptions
    a runner raises into the job to stop it (Celery's soft time limit): they fail the job
    with ``time_limit_exceeded``.
    """
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(rt, job.id, owner, stop), daemon=True)
    beat.start()
    t0 = time.perf_counter()
    try:
        outcome = execute_job(rt, registry, job)
    except interruptions:
        stop.set()
        timeout = AlgorithmTimeout(f"ran past its {job.time_limit_s:.0f} s limit")
        return fail(rt, job, timeout, owner)
    except MemoryError:  # past worker_memory_limit_mb: the memory is freed as it unwinds
        stop.set()
        return fail(rt, job, memory_limit_error(rt), owner)
    except Exception as exc:  # the job loop's one catch-all: record and go on
        stop.set()
        return fail(rt, job, exc, owner)
    stop.set()
    with rt.db.session() as s:
        jobstore.finish_job(s, job.id, owner)
    log.info(
        "job %d %s study=%d %s%s done in %.2f s: %s",
        job.id,
        job.kind,
        job.study_id,
        job.algorithm_name,
        f" dest={job.destination_id}" if job.destination_id else "",
        time.perf_counter() - t0,
        outcome,
    )
    return "done"


def _heartbeat(rt: Runtime, job_id: int, owner: str, stop: threading.Event) -> None:
    interval = rt.settings.job_lease_s / 3
    while not stop.wait(interval):
        try:
            with rt.db.session() as s:
                jobstore.renew_lease(s, job_id, owner, rt.settings.job_lease_s)
        except Exception:  # a missed beat is survivable; the next one may work
            log.exception("could not renew the lease of job %d", job_id)


def worker_main(
    settings: Settings,
    index: int,
    current: Synchronized,
    started: Synchronized,
    queues: list[str] | None = None,
) -> None:
    """Entry point of one worker process."""
    from radsight.logs import configure_logging

    configure_logging(settings)
    limit_worker_memory(settings.worker_memory_limit_mb)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    # Ctrl-C reaches the whole process group; the parent stops the workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rt = Runtime.open(settings, run_migrations=False)
    registry = Registry.from_entry_points()
    owner = f"{os.uname().nodename}:{os.getpid()}:w{index}"
    parent = os.getppid()
    log.info("worker %s started", owner)
    while True:
        if os.getppid() != parent:  # the server died without stopping us: do not linger
            log.warning("worker %s: the server process is gone, stopping", owner)
            return
        try:
            if not run_one(rt, registry, owner, queues, current, started):
                time.sleep(settings.poll_interval_s)
        except Exception:  # database gone for a moment: wait and go on
            log.exception("worker %s loop error", owner)
            time.sleep(1.0)


def reap_expired(rt: Runtime) -> int:
    """Requeue (or dead-letter) jobs whose worker died without finishing them."""
    n = 0
    with rt.db.session() as s:
        expired = jobstore.expired_jobs(s)
    for job in expired:
        fail(rt, job, WorkerLost(f"worker {job.lease_owner} stopped before finishing"))
        n += 1
    return n


class WorkerPool:
    """Worker processes supervised for time limits; restarts any that die."""

    def __init__(self, settings: Settings, rt: Runtime, size: int) -> None:
        self.settings = settings
        self.rt = rt
        self.size = size
        self.ctx = mp.get_context("spawn")
        self.slots: list[dict] = []

    def start(self) -> None:
        for i in range(self.size):
            self.slots.append(self._spawn(i))

    def _spawn(self, i: int) -> dict:
        current = self.ctx.Value("q", 0)
        started = self.ctx.Value("d", 0.0)
        proc = self.ctx.Process(
            target=worker_main,
            args=(self.settings, i, current, started),
            name=f"radsight-worker-{i}",
            daemon=True,
        )
        proc.start()
        return {"index": i, "proc": proc, "current": current, "started": started}

    def supervise(self) -> None:
        """Kill workers past their job's time limit; restart dead workers."""
        for n, slot in enumerate(self.slots):
            proc = slot["proc"]
            job_id = slot["current"].value
            if job_id and proc.is_alive():
                with self.rt.db.session() as s:
                    job = s.get(JobRow, job_id)
                    limit = job.time_limit_s if job is not None else None
                if limit and time.time() - slot["started"].value > limit:
                    log.error("job %d ran past its %.0f s limit: stopping worker", job_id, limit)
                    proc.kill()
                    proc.join(5)
                    if job is not None and job.state == "running":
                        fail(self.rt, job, AlgorithmTimeout(f"ran past its {limit:.0f} s limit"))
            if not proc.is_alive():
                if job_id:
                    self._fail_lost_job(job_id, slot["index"], proc)
                self.slots[n] = self._spawn(slot["index"])

    def _fail_lost_job(self, job_id: int, index: int, proc: mp.process.BaseProcess) -> None:
        """A worker died in a job: fail that attempt now (not after the lease), saying how."""
        code = proc.exitcode
        how = f"exit status {code}"
        if code is not None and code < 0:
            how = f"signal {signal.Signals(-code).name}"
            if -code == signal.SIGKILL:
                how += " (the kernel's out-of-memory killer sends it)"
        with self.rt.db.session() as s:
            job = s.get(JobRow, job_id)
        owner = f"{os.uname().nodename}:{proc.pid}:w{index}"
        if job is not None and job.state == "running" and job.lease_owner == owner:
            fail(self.rt, job, WorkerLost(f"worker {owner} died in the job: {how}"), owner)

    def stop(self) -> None:
        for slot in self.slots:
            slot["proc"].terminate()
        for slot in self.slots:
            slot["proc"].join(5)
            if slot["proc"].is_alive():
                slot["proc"].kill()
