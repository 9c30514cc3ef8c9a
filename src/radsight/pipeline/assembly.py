"""Study assembly and routing: a study is ready when its quiet period ends.

The assembler runs in one process (``radsight serve``); each tick it takes the studies
whose quiet period has passed, routes them with the rules, plans the versions of each
routed algorithm that may run for the study's organisation (admission: a bare name runs
the newest approved version in clinical mode and newer unapproved ones in shadow beside
it; an algorithm the organisation switched off does not run), and creates one analysis
job per (study, algorithm version), or records "not analysed: <reason>".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from radsight.admission import plan_versions
from radsight.algorithms.contract import Algorithm
from radsight.algorithms.registry import Registry, version_key
from radsight.pipeline.jobs import analyse_key
from radsight.pipeline.routing import InstanceInfo, Route, RuleSet, StudyInfo, route
from radsight.runtime import Runtime
from radsight.store import Session, tenants
from radsight.store import admission as admissionstore
from radsight.store import jobs as jobstore
from radsight.store import studies as studystore
from radsight.store.clock import utcnow
from radsight.store.tables import JobRow, StudyRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedAnalysis:
    """One (algorithm version, route) the rules and admission give a study."""

    algorithm: Algorithm
    route: Route
    #: clinical | shadow, as planned (for the record; the job decides when it runs)
    mode: str = "clinical"


@dataclass(frozen=True)
class StudyPlan:
    """What the rules in force make of one study: its analyses, or why it has none."""

    analyses: tuple[PlannedAnalysis, ...]
    #: why nothing is planned (no rule matches, or no routed algorithm may run)
    reason: str = ""
    #: why each routed algorithm that does not run does not (switched off, withdrawn, ...)
    skipped: tuple[str, ...] = ()


def plan_study(s: Session, registry: Registry, rules: RuleSet, study: StudyRow) -> StudyPlan:
    """Route one study with ``rules``: the (algorithm version, route) list, or the reason.

    Used by the assembler (a study whose quiet period ended) and by re-analysis (a study
    routed again with the rules and versions in force now).
    """
    org = tenants.get_organisation(s, study.organisation_id)
    instances = tuple(
        InstanceInfo(
            sop_instance_uid=i.sop_instance_uid,
            series_instance_uid=se.series_instance_uid,
            sop_class_uid=i.sop_class_uid,
            attributes=i.attributes,
            calling_ae_title=i.calling_ae_title,
        )
        for i, se in studystore.list_instances(s, study.id)
    )
    decision = route(rules, StudyInfo(org.name, study.study_type, instances))
    if not decision.routes:
        return StudyPlan((), decision.reason)
    planned, skipped = _plan_jobs(s, registry, study.organisation_id, decision.routes)
    return StudyPlan(tuple(planned), "" if planned else "; ".join(skipped), tuple(skipped))


def create_analysis_job(
    s: Session,
    rt: Runtime,
    study: StudyRow,
    planned: PlannedAnalysis,
    *,
    revision: int = 0,
    extra: dict[str, object] | None = None,
) -> tuple[JobRow, bool]:
    """The analysis job of one (study, algorithm version[, revision]); idempotent."""
    algorithm, r = planned.algorithm, planned.route
    return jobstore.create_job(
        s,
        dedup_key=analyse_key(study.id, algorithm.name, algorithm.version, revision),
        organisation_id=study.organisation_id,
        kind="analyse",
        queue=f"analyse.{study.study_type or 'other'}",
        study_id=study.id,
        algorithm_name=algorithm.name,
        algorithm_version=algorithm.version,
        max_attempts=rt.settings.job_max_attempts,
        time_limit_s=algorithm.time_limit_s,
        payload={
            "rule": r.rule,
            "sop_instance_uids": list(r.sop_instance_uids),
            "thresholds": r.thresholds,
            # as planned (for the record); the job decides its mode when it runs
            "mode": planned.mode,
            **(extra or {}),
        },
    )


def assemble_once(rt: Runtime, registry: Registry, rules: RuleSet) -> int:
    """Route every study whose quiet period has ended; return how many were handled."""
    handled = 0
    with rt.db.session() as s:
        due = studystore.studies_due(s)
        for study in due:
            plan = plan_study(s, registry, rules, study)
            if not plan.analyses:
                studystore.set_study_state(
                    s, study.id, "not_analysed", plan.reason, rules_version=rules.version
                )
                log.info("study %s not analysed: %s", study.study_instance_uid, plan.reason)
                handled += 1
                continue
            made = 0
            for planned in plan.analyses:
                _, created = create_analysis_job(s, rt, study, planned)
                made += created
            for reason in plan.skipped:
                log.info("study %s: %s", study.study_instance_uid, reason)
            studystore.set_study_state(
                s, study.id, "routed", routed_at=utcnow(), rules_version=rules.version
            )
            log.info(
                "study %s ready (%d instances): %d analysis jobs",
                study.study_instance_uid,
                study.num_instances,
                made,
            )
            handled += 1
    return handled


def _plan_jobs(
    s: Session, registry: Registry, organisation_id: int, routes: Sequence[Route]
) -> tuple[list[PlannedAnalysis], list[str]]:
    """The analysis jobs for one study's routes: the versions of each routed algorithm
    that may run for the organisation (``admission.plan_versions`` over every installed
    version) with their modes; and why each algorithm that does not run does not."""
    off = admissionstore.switched_off(s, organisation_id)
    jobs: list[PlannedAnalysis] = []
    skipped: list[str] = []
    for r in routes:
        name, _, version = r.algorithm.partition("@")
        if name in off:
            why = off[name].reason
            skipped.append(
                f"{name} is switched off for this organisation" + (f": {why}" if why else "")
            )
            continue
        installed = registry.versions(name)
        if not installed:  # rules are checked at start-up; a plug-in may break
            log.error("rule %r: algorithm %s is not registered", r.rule, name)
            skipped.append(f"algorithm {name} is not registered")
            continue
        states = admissionstore.states_for_organisation(s, name, installed, organisation_id)
        plan, why = plan_versions(version, states, version_key)
        if not plan:
            skipped.append(f"{name}: {why}")
        jobs += [PlannedAnalysis(registry.resolve(f"{name}@{p.version}"), r, p.mode) for p in plan]
    return jobs, skipped
