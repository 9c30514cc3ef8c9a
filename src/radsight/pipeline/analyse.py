"""The body of an analysis job: one (study, algorithm version) -> its outputs + JSON.

Called by whichever runner executes jobs (the embedded worker processes, or Celery
workers when scaled out): it takes the job row's keys and does the rest through the store.
A rerun (after a crash or a retry) produces byte-for-byte the same UIDs, and the result row
is unique per (study, algorithm version), so each study gets exactly one result. A
re-analysis job (payload ``revision``: n) replaces that result in place as revision n,
with new UIDs, and queues its deliveries again.

Admission decides here, when the job runs, how the version runs for the study's
organisation: ``clinical`` (approved: the result is delivered to the destinations and
shown to radiologists; it supersedes older clinical results of the same algorithm on the
study) or ``shadow`` (stored only, for supervisors and monitoring); a withdrawn version
does not run. The mode is stored on the result.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import pydicom

from radsight.admission import mode_of
from radsight.algorithms.contract import Algorithm
from radsight.algorithms.registry import Registry
from radsight.dicom.stored import read_stored
from radsight.errors import (
    AlgorithmError,
    EncodingError,
    InstanceRejected,
    NotAnalysable,
    RadsightError,
)
from radsight.operating_points import points_in_force
from radsight.pipeline.inputs import check_source, study_input_from
from radsight.pipeline.jobs import deliver_key
from radsight.results import AnalysisReport, ResultObject, encode_results, result_uids
from radsight.runtime import Runtime
from radsight.store import Session, tenants
from radsight.store import admission as admissionstore
from radsight.store import jobs as jobstore
from radsight.store import quality as qualitystore
from radsight.store import results as resultstore
from radsight.store import studies as studystore
from radsight.store import worklist as worklist_store
from radsight.store.files import safe_component
from radsight.store.scope import Scope
from radsight.store.tables import JobRow, ResultRow, StudyRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: str  # analysed | not_analysed | existing
    result_id: int
    reason: str = ""


def run_analysis(rt: Runtime, registry: Registry, job: JobRow) -> Outcome:
    algorithm = registry.resolve(f"{job.algorithm_name}@{job.algorithm_version}")
    # a re-analysis (radsight.pipeline.reanalysis) asks for the next revision of the result
    revision = int(job.payload.get("revision", 0))
    with rt.db.session() as s:
        study = studystore.get_study(s, job.study_id, scope=Scope.ALL)
        existing = resultstore.get_result_for(s, study.id, algorithm.name, algorithm.version)
        if existing is not None and existing.revision >= revision:
            if existing.mode == "clinical" and existing.status == "analysed":
                _queue_deliveries(
                    s,
                    rt,
                    existing.id,
                    existing.organisation_id,
                    existing.study_id,
                    revision=existing.revision,
                )
            close_study_if_done(s, study.id, job.id)
            return Outcome("existing", existing.id)
        # the mode is decided now, for the study's organisation, not when it was routed
        state, _ = admissionstore.state_for(
            s, algorithm.name, algorithm.version, study.organisation_id
        )
        mode = mode_of(state)
        switched_off = algorithm.name in admissionstore.switched_off(s, study.organisation_id)
        rows = studystore.list_instances(s, study.id)
        stored = qualitystore.stored_thresholds(
            s, algorithm.name, algorithm.version, study.organisation_id
        )
    if mode is None or switched_off:  # withdrawn or switched off since it was routed
        why = (
            f"{algorithm.name} is switched off for this organisation"
            if switched_off
            else f"{algorithm.name} {algorithm.version} is {state}"
        )
        return _save_not_analysed(rt, job, study, algorithm, why, revision)
    wanted = set(job.payload.get("sop_instance_uids") or [i.sop_instance_uid for i, _ in rows])
    datasets = []
    for inst, _series in rows:
        if inst.sop_instance_uid in wanted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # odd values were already checked at ingest
                datasets.append(read_stored(rt.files.get(inst.storage_key), inst.storage_key))
    t0 = time.perf_counter()
    try:
        datasets = [check_source(ds) for ds in datasets]
        study_input = study_input_from(
            datasets,
            study.study_type,
            max_frame_pixels=rt.settings.max_frame_pixels,
            max_instance_pixels=rt.settings.max_instance_pixels,
        )
        algorithm.check(study_input)
    except (NotAnalysable, InstanceRejected) as exc:
        return _save_not_analysed(rt, job, study, algorithm, exc.message, revision, mode)
    try:
        analysis = algorithm.analyse(study_input)
    except NotAnalysable as exc:  # an algorithm may decide late that it cannot answer
        return _save_not_analysed(rt, job, study, algorithm, exc.message, revision, mode)
    except (RadsightError, MemoryError):  # MemoryError: the runner fails it for good
        raise
    except Exception as exc:
        raise AlgorithmError(f"{algorithm.name} {algorithm.version} failed: {exc!r}") from exc
    seconds = time.perf_counter() - t0
    points = points_in_force(algorithm, routed=job.payload.get("thresholds"), stored=stored)
    try:
        report = AnalysisReport.from_analysis(algorithm, analysis, points)
    except ValueError as exc:
        raise EncodingError(str(exc)) from exc
    objects = _encode_and_store(rt, study, algorithm, report, datasets, revision)
    with rt.db.session() as s:
        row, new = resultstore.save_revision(
            s,
            revision=revision,
            organisation_id=study.organisation_id,
            study_id=study.id,
            algorithm_name=algorithm.name,
            algorithm_version=algorithm.version,
            status="analysed",
            study_score=report.study_score,
            verdict=report.verdict,
            urgent=report.urgent,
            report=report.to_json(),
            objects=objects,
            analysis_seconds=seconds,
            mode=mode,
        )
        if row.mode == "clinical":  # shadow results are stored only
            resultstore.supersede_older(s, row)
            _queue_deliveries(s, rt, row.id, study.organisation_id, study.id, revision=row.revision)
        else:  # a revision made in shadow no longer stands in for older clinical results
            resultstore.release_superseded(s, row.id)
        worklist_store.refresh_study_priority(s, study.id)
        close_study_if_done(s, study.id, job.id)
    log.info(
        "analysed study %s with %s %s (%s): score %.3f verdict %s in %.2f s",
        study.study_instance_uid,
        algorithm.name,
        algorithm.version,
        mode,
        report.study_score,
        report.verdict,
        seconds,
    )
    return Outcome("analysed" if new else "existing", row.id)


def _encode_and_store(
    rt: Runtime,
    study: StudyRow,
    algorithm: Algorithm,
    report: AnalysisReport,
    datasets: Sequence[pydicom.Dataset],
    revision: int = 0,
) -> list[ResultObject]:
    """Run every registered encoder and store its objects; return them in encoder order."""
    uid = result_uids(
        study.organisation_id,
        study.study_instance_uid,
        algorithm.name,
        algorithm.version,
        revision,
    )
    try:
        encoded = encode_results(
            datasets,
            report,
            uid,
            max_frame_pixels=rt.settings.max_frame_pixels,
            max_instance_pixels=rt.settings.max_instance_pixels,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise EncodingError(f"could not encode results: {exc}") from exc
    base = "/".join(
        (
            "results",
            str(study.organisation_id),
            safe_component(study.study_instance_uid),
            safe_component(f"{algorithm.name}-{algorithm.version}"),
        )
    )
    if revision > 0:  # the files of the revision before may still be queued for delivery
        base = f"{base}/r{revision}"
    objects = []
    for obj in encoded:
        buf = io.BytesIO()
        obj.dataset.save_as(buf, enforce_file_format=True)
        key = f"{base}/{obj.file_name}"
        rt.files.put(key, buf.getvalue())
        objects.append(obj.stored_as(key))
    return objects


def _save_not_analysed(
    rt: Runtime,
    job: JobRow,
    study: StudyRow,
    algorithm: Algorithm,
    reason: str,
    revision: int,
    mode: str | None = None,
) -> Outcome:
    with rt.db.session() as s:
        row, _ = resultstore.save_revision(
            s,
            revision=revision,
            organisation_id=study.organisation_id,
            study_id=study.id,
            algorithm_name=algorithm.name,
            algorithm_version=algorithm.version,
            status="not_analysed",
            reason=reason,
            # a withdrawn version's refusal is no clinical result either
            mode=mode or "shadow",
        )
        # a revision that is not analysed stands in for nothing any more
        resultstore.release_superseded(s, row.id)
        worklist_store.refresh_study_priority(s, study.id)
        close_study_if_done(s, study.id, job.id)
    log.info(
        "study %s not analysed by %s %s: %s",
        study.study_instance_uid,
        algorithm.name,
        algorithm.version,
        reason,
    )
    return Outcome("not_analysed", row.id, reason)


def _queue_deliveries(
    s: Session,
    rt: Runtime,
    result_id: int,
    organisation_id: int,
    study_id: int,
    *,
    revision: int = 0,
) -> None:
    scope = Scope.of(organisation_id)  # the destinations of the result's organisation
    for dest in tenants.list_destinations(s, scope=scope, enabled_only=True):
        jobstore.create_job(
            s,
            dedup_key=deliver_key(result_id, dest.id, revision),
            organisation_id=organisation_id,
            kind="deliver",
            queue="delivery",
            study_id=study_id,
            result_id=result_id,
            destination_id=dest.id,
            # the revision it sends: a later re-analysis makes this job send nothing
            payload={"revision": revision},
            max_attempts=rt.settings.delivery_max_attempts,
            time_limit_s=max(60.0, rt.settings.dimse_timeout_s * 4),
        )


def queue_deliveries(s: Session, rt: Runtime, result: ResultRow) -> None:
    """Queue one delivery of ``result``'s current revision to each enabled destination
    (a promoted or re-analysed result; idempotent)."""
    _queue_deliveries(
        s, rt, result.id, result.organisation_id, result.study_id, revision=result.revision
    )


def close_study_if_done(s: Session, study_id: int, ending_job_id: int) -> None:
    """Set the study's final state once no other analysis job of it is queued or running.

    analysed: some algorithm produced a clinical result (one a radiologist sees);
    not_analysed: every one refused the input, or only versions in shadow mode analysed
    it (the reason names them: their results are for supervisors); failed: every job
    failed or was dead-lettered (the reasons are the jobs' errors).
    """
    open_jobs = [
        j
        for j in jobstore.list_jobs(s, scope=Scope.ALL, study_id=study_id, kind="analyse")
        if j.state in ("queued", "running") and j.id != ending_job_id
    ]
    if open_jobs:
        return
    results = resultstore.list_results(s, scope=Scope.ALL, study_id=study_id)
    if any(r.status == "analysed" and r.mode == "clinical" for r in results):
        studystore.set_study_state(s, study_id, "analysed")
    elif results:
        shadow = sorted(
            f"{r.algorithm_name} {r.algorithm_version}"
            for r in results
            if r.status == "analysed" and r.mode == "shadow"
        )
        reasons = [r.reason for r in results if r.reason]
        if shadow:
            reasons.insert(
                0,
                "no approved algorithm analysed this study: "
                + ", ".join(shadow)
                + " ran in shadow mode (results for supervisors)",
            )
        studystore.set_study_state(s, study_id, "not_analysed", "; ".join(reasons))
    else:
        errors = "; ".join(
            f"{j.algorithm_name} {j.algorithm_version}: {j.error_code}"
            for j in jobstore.list_jobs(s, scope=Scope.ALL, study_id=study_id, kind="analyse")
            if j.state in ("failed", "dead")
        )
        studystore.set_study_state(s, study_id, "failed", errors)
