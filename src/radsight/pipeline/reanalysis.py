"""Re-analysis: route chosen studies again with the rules and versions in force now.

``radsight reanalyse`` and ``POST /api/reanalyses`` select studies (by Study Instance UID,
or by organisation and received date range, optionally narrowed to one algorithm or
version), route each one again with the current rules (:func:`plan_study`, the assembler's
routing), and decide per (study, algorithm version):

==============  ===========================================================================
action          when, and what happens
==============  ===========================================================================
``analyse``     no result of that version yet (a newly installed or approved version, a
                rule that now routes the study): a new analysis job.
``reanalyse``   a result exists but the route gives instances it did not analyse (they
                arrived later, or a rule changed), or ``force``:
                a job for the next revision; the result is replaced in place with new
                UIDs and delivered again (:func:`radsight.pipeline.analyse.run_analysis`).
``promote``     a shadow result whose version is now approved for the organisation: it
                becomes clinical and is delivered now; no job runs.
``pending``     the job that would be created is already queued or running.
``up_to_date``  nothing changed: nothing to do.
``skipped``     the study is still receiving, is not routed by the rules now, or the
                rules do not route it to the chosen algorithm.
==============  ===========================================================================

One result per (study, algorithm version) still holds: a re-analysis of the same version
is a new revision of that result, and a new version's clinical result supersedes the
older clinical results of the algorithm on the study.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from radsight.admission import mode_of
from radsight.algorithms.registry import Registry
from radsight.errors import InvalidInput, NotFound
from radsight.pipeline.analyse import close_study_if_done, queue_deliveries
from radsight.pipeline.assembly import PlannedAnalysis, create_analysis_job, plan_study
from radsight.pipeline.jobs import analyse_key
from radsight.pipeline.routing import RuleSet
from radsight.runtime import Runtime
from radsight.store import Session, people, tenants
from radsight.store import admission as admissionstore
from radsight.store import jobs as jobstore
from radsight.store import results as resultstore
from radsight.store import studies as studystore
from radsight.store import worklist as worklist_store
from radsight.store.clock import utcnow
from radsight.store.people import Actor
from radsight.store.scope import Scope
from radsight.store.tables import JobRow, ResultRow, StudyRow

log = logging.getLogger(__name__)

ACTIONS = ("analyse", "reanalyse", "promote", "pending", "up_to_date", "skipped")
#: states of a study the assembler has routed (a receiving one is routed when it is due)
_ROUTED_STATES = ("routed", "analysed", "not_analysed", "failed")


@dataclass(frozen=True)
class Selection:
    """Which studies to re-analyse, and with what."""

    study_instance_uids: tuple[str, ...] = ()
    organisation: str | None = None
    #: first received at or after this time
    since: datetime | None = None
    #: first received before this time
    until: datetime | None = None
    #: ``NAME`` or ``NAME@VERSION``: only that algorithm (version)
    algorithm: str | None = None
    #: re-analyse results even when their input has not changed
    force: bool = False
    #: refuse a selection of more studies than this
    limit: int = 10000

    def check(self) -> None:
        if not self.study_instance_uids and not self.organisation:
            raise InvalidInput("select studies: give Study Instance UIDs or an organisation")
        if (self.since or self.until) and not self.organisation:
            raise InvalidInput("a received date range needs an organisation")
        if self.since and self.until and self.until <= self.since:
            raise InvalidInput("the date range is empty: 'until' must be after 'since'")
        if self.limit < 1:
            raise InvalidInput("the limit must be at least 1")

    def describe(self) -> dict[str, object]:
        """The selection as the audit trail keeps it."""
        return {
            "study_instance_uids": list(self.study_instance_uids),
            "organisation": self.organisation,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "algorithm": self.algorithm,
            "force": self.force,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class Decision:
    """What re-analysis does (or, in a dry run, would do) for one (study, version)."""

    study_id: int
    study_instance_uid: str
    action: str
    reason: str
    algorithm_name: str = ""
    algorithm_version: str = ""
    #: the result revision the job makes (``reanalyse``) or the result has
    revision: int = 0
    job_id: int | None = None
    result_id: int | None = None


@dataclass
class Summary:
    """The outcome of one re-analysis request."""

    dry_run: bool
    studies: int = 0
    decisions: list[Decision] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        seen = Counter(d.action for d in self.decisions)
        return {action: seen.get(action, 0) for action in ACTIONS}

    @property
    def job_ids(self) -> list[int]:
        return [d.job_id for d in self.decisions if d.job_id is not None]


def reanalyse(
    rt: Runtime,
    registry: Registry,
    rules: RuleSet,
    selection: Selection,
    *,
    scope: Scope,
    actor: Actor,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    remote_addr: str = "",
) -> Summary:
    """Re-analyse the selected studies the caller may see (``scope``); see the module.

    ``progress(done, total)`` is called after each study. Every request that is not a dry run
    leaves one audit row ``reanalyse`` with the selection, the counts and who asked.
    """
    selection.check()
    only = _only(registry, selection.algorithm)
    with rt.db.session() as s:
        org_id = None
        if selection.organisation:
            org = tenants.get_organisation(s, selection.organisation)
            if not scope.includes(org.id):  # another tenant's reads as one that does not exist
                raise NotFound(f"organisation {selection.organisation!r} does not exist")
            org_id = org.id
        studies, total = studystore.find_studies(
            s,
            scope=scope,
            study_instance_uids=selection.study_instance_uids,
            organisation_id=org_id,
            received_since=selection.since,
            received_until=selection.until,
            limit=selection.limit,
        )
        if total > selection.limit:
            raise InvalidInput(
                f"{total} studies match, more than the limit of {selection.limit}: narrow "
                "the selection (a shorter date range) or raise the limit"
            )
        if selection.study_instance_uids and not studies:
            raise NotFound("no study with the given Study Instance UIDs")
        study_ids = [st.id for st in studies]
    summary = Summary(dry_run=dry_run, studies=len(study_ids))
    error = ""
    try:
        for done, study_id in enumerate(study_ids, 1):
            with rt.db.session() as s:
                study = studystore.get_study(s, study_id, scope=scope)
                summary.decisions.extend(
                    _reanalyse_study(s, rt, registry, rules, study, selection, only, dry_run)
                )
            if progress is not None:
                progress(done, len(study_ids))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        # the audit row records what was done even when a study stopped the run midway
        if not dry_run:
            with rt.db.session() as s:
                people.record_audit(
                    s,
                    actor,
                    "reanalyse",
                    organisation_id=org_id,
                    detail={
                        "selection": selection.describe(),
                        "studies": summary.studies,
                        "counts": summary.counts(),
                        "job_ids": summary.job_ids,
                        **({"stopped_by": error} if error else {}),
                    },
                    remote_addr=remote_addr,
                )
    counts = summary.counts()
    log.info(
        "re-analysis%s of %d studies by %s: %s",
        " (dry run)" if dry_run else "",
        summary.studies,
        actor.name,
        ", ".join(f"{k} {v}" for k, v in counts.items() if v),
    )
    return summary


def _only(registry: Registry, ref: str | None) -> tuple[str, str] | None:
    """(name, version or "") of ``--algorithm``; a version must be installed."""
    if not ref:
        return None
    name, _, version = ref.partition("@")
    registry.resolve(ref)  # NotFound when that algorithm (version) is not installed
    return name, version


def _reanalyse_study(
    s: Session,
    rt: Runtime,
    registry: Registry,
    rules: RuleSet,
    study: StudyRow,
    selection: Selection,
    only: tuple[str, str] | None,
    dry_run: bool,
) -> list[Decision]:
    def skipped(reason: str, name: str = "") -> list[Decision]:
        return [Decision(study.id, study.study_instance_uid, "skipped", reason, name)]

    if study.state not in _ROUTED_STATES:
        return skipped(f"the study is still {study.state}; it is routed when it is complete")
    plan = plan_study(s, registry, rules, study)
    analyses = list(plan.analyses)
    if only is not None:
        name, version = only
        analyses = [p for p in analyses if p.algorithm.name == name]
        if not analyses:
            return skipped(f"the rules in force do not route this study to {name}", name)
        if version:
            analyses = [PlannedAnalysis(registry.resolve(f"{name}@{version}"), analyses[0].route)]
    if not analyses:
        return skipped(f"the rules in force do not route this study: {plan.reason}")
    decisions = [_decide(s, rt, study, planned, selection.force, dry_run) for planned in analyses]
    if dry_run:
        return decisions
    if any(d.action in ("analyse", "reanalyse") for d in decisions):
        # back to routed while its jobs run; the last job closes it (close_study_if_done)
        studystore.set_study_state(
            s, study.id, "routed", routed_at=utcnow(), rules_version=rules.version
        )
    elif any(d.action == "promote" for d in decisions):
        worklist_store.refresh_study_priority(s, study.id)
        if not _open_analysis_jobs(s, study.id):
            close_study_if_done(s, study.id, ending_job_id=0)
    return decisions


def _decide(
    s: Session,
    rt: Runtime,
    study: StudyRow,
    planned: PlannedAnalysis,
    force: bool,
    dry_run: bool,
) -> Decision:
    algorithm = planned.algorithm
    existing = resultstore.get_result_for(s, study.id, algorithm.name, algorithm.version)

    def decision(action: str, reason: str, **kw: object) -> Decision:
        return Decision(
            study.id,
            study.study_instance_uid,
            action,
            reason,
            algorithm.name,
            algorithm.version,
            **kw,  # type: ignore[arg-type]
        )

    if existing is None:
        return _job(s, rt, study, planned, 0, dry_run, decision, "no result of this version yet")
    late = _new_input(s, study, planned, existing)
    if late or force:
        why = f"{late} instance(s) not in the analysed input" if late else "re-analysis forced"
        return _job(s, rt, study, planned, existing.revision + 1, dry_run, decision, why)
    if existing.mode == "shadow" and existing.status == "analysed" and _approved(s, existing):
        if not dry_run:
            existing.mode = "clinical"
            s.flush()
            resultstore.supersede_older(s, existing)
            queue_deliveries(s, rt, existing)
        return decision(
            "promote",
            "a shadow result of a version now approved for the organisation: delivered now",
            revision=existing.revision,
            result_id=existing.id,
        )
    return decision(
        "up_to_date",
        "the result covers every instance of the study",
        revision=existing.revision,
        result_id=existing.id,
    )


def _job(
    s: Session,
    rt: Runtime,
    study: StudyRow,
    planned: PlannedAnalysis,
    revision: int,
    dry_run: bool,
    decision: Callable[..., Decision],
    reason: str,
) -> Decision:
    action = "reanalyse" if revision > 0 else "analyse"
    algorithm = planned.algorithm
    job = jobstore.get_job_by_key(
        s, analyse_key(study.id, algorithm.name, algorithm.version, revision)
    )
    if job is not None and job.state in ("queued", "running"):
        return decision("pending", f"job {job.id} is already {job.state}", job_id=job.id)
    if dry_run:
        return decision(action, reason, revision=revision)
    if job is not None:  # it failed before: try again (an operator's decision, like retry)
        job = jobstore.retry_job(s, job.id, scope=Scope.ALL)
    else:
        extra: dict[str, object] | None = (
            {"reanalysis": True, "revision": revision} if revision > 0 else None
        )
        job, _ = create_analysis_job(s, rt, study, planned, revision=revision, extra=extra)
    return decision(action, reason, revision=revision, job_id=job.id)


def _new_input(s: Session, study: StudyRow, planned: PlannedAnalysis, result: ResultRow) -> int:
    """How many instances the route gives now that the result did not analyse.

    The analysed instances are those of the job that made the result's revision; a result
    without that job (made before jobs kept their input) counts the instances received
    after it was made.
    """
    algorithm = planned.algorithm
    job = jobstore.get_job_by_key(
        s, analyse_key(study.id, algorithm.name, algorithm.version, result.revision)
    )
    if job is not None and job.payload.get("sop_instance_uids"):
        analysed = set(job.payload["sop_instance_uids"])
        return len(set(planned.route.sop_instance_uids) - analysed)
    return sum(
        1 for i, _ in studystore.list_instances(s, study.id) if i.received_at > result.created_at
    )


def _approved(s: Session, result: ResultRow) -> bool:
    state, _ = admissionstore.state_for(
        s, result.algorithm_name, result.algorithm_version, result.organisation_id
    )
    return mode_of(state) == "clinical"


def _open_analysis_jobs(s: Session, study_id: int) -> Sequence[JobRow]:
    return [
        j
        for j in jobstore.list_jobs(s, scope=Scope.ALL, study_id=study_id, kind="analyse")
        if j.state in ("queued", "running")
    ]
