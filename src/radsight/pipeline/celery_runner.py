"""Running jobs on Celery workers over RabbitMQ (scale-out), with the same job rows.

The database stays the record of every job (state, attempts, errors); the broker only
carries "run job N" messages. Gateways (``radsight serve`` with ``job_runner = "celery"``)
dispatch due jobs to the queue named on the job row (``analyse.<study type>`` or
``delivery``); ``radsight worker`` processes consume them, claim the job in the database
(compare-and-set from queued to running) and run it with ``runner.run_claimed``, exactly
as the embedded workers do.

Delivery guarantees:

* ``task_acks_late`` with ``task_reject_on_worker_lost``: a worker killed mid-job does not
  lose the message. Its job stays ``running`` until the lease expires; the gateways' reaper
  then requeues it and it is dispatched again. A message for a job that is no longer
  queued (a duplicate, or already taken) is acknowledged and skipped, so a job runs once
  at a time and its result, keyed on (study, algorithm version), is made once.
* Time limits: Celery's soft limit is the job's own limit and fails it with
  ``time_limit_exceeded`` (retried, then dead-lettered); the hard limit, a little later,
  kills the worker child, and the lease reaper takes over.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from radsight.config import Settings
from radsight.dicom.study_types import STUDY_TYPES

log = logging.getLogger(__name__)

TASK = "radsight.run_job"
#: every queue a job can be on (JobRow.queue)
QUEUES = [f"analyse.{t}" for t in (*STUDY_TYPES, "other")] + ["delivery"]
#: seconds after the soft limit before Celery kills the worker child
HARD_LIMIT_GRACE_S = 15.0

_state: dict[str, Any] = {}


def make_app(settings: Settings) -> Celery:
    app = Celery("radsight", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue="delivery",
    )

    @app.task(name=TASK, bind=True)
    def run_job(self: Any, job_id: int) -> str:
        return run_job_by_id(settings, job_id)

    return app


def run_job_by_id(settings: Settings, job_id: int) -> str:
    """The task body: claim the named job if it is still waiting, then run it."""
    from radsight.algorithms.registry import Registry
    from radsight.pipeline.runner import limit_worker_memory, run_claimed
    from radsight.runtime import Runtime
    from radsight.store import jobs as jobstore

    if _state.get("pid") != os.getpid():  # one runtime per worker process
        limit_worker_memory(settings.worker_memory_limit_mb)
        _state.update(
            pid=os.getpid(),
            rt=Runtime.open(settings, run_migrations=False),
            registry=Registry.from_entry_points(),
        )
    rt, registry = _state["rt"], _state["registry"]
    owner = f"{socket.gethostname()}:{os.getpid()}:celery"
    with rt.db.session() as s:
        job = jobstore.claim_job_by_id(s, job_id, owner, settings.job_lease_s)
    if job is None:
        return "skipped: no longer queued"
    return run_claimed(rt, registry, job, owner, interruptions=(SoftTimeLimitExceeded,))


class Dispatcher:
    """Tells the workers about due jobs (called from the gateways' scheduler loop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_app(settings)

    def dispatch(self, rt: Any) -> int:
        from radsight.store import jobs as jobstore

        with rt.db.session() as s:
            due = [
                (j.id, j.queue, j.time_limit_s)
                for j in jobstore.jobs_to_dispatch(s, self.settings.redispatch_s)
            ]
        sent = []
        for job_id, queue, limit in due:
            self.app.send_task(
                TASK,
                args=[job_id],
                queue=queue,
                soft_time_limit=limit,
                time_limit=limit + HARD_LIMIT_GRACE_S,
            )
            sent.append(job_id)
        if sent:
            with rt.db.session() as s:
                jobstore.mark_dispatched(s, sent)
        return len(sent)


def run_worker(settings: Settings, queues: list[str], concurrency: int) -> None:
    """``radsight worker``: a Celery worker (prefork pool) on the given queues."""
    app = make_app(settings)
    argv = [
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        "--pool=prefork",
        f"--hostname=radsight-{os.getpid()}@{socket.gethostname()}",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    log.info("radsight worker on %s with %d processes", ",".join(queues), concurrency)
    app.worker_main(argv)
