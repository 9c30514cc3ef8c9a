"""Admission against the store: register installed versions with their shipped evidence,
change a version's lifecycle state (evidence-gated approval), switch algorithms on and off
for an organisation. The policy itself is :mod:`radsight.admission` (pure).

Every change is a new row of ``algorithm_states`` / ``algorithm_switches`` and a line of
the audit trail (``algorithm.<state>``, ``algorithm.enable``, ``algorithm.disable``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from radsight.admission import (
    STATES,
    AcceptanceRule,
    can_move,
    evidence_problems,
    in_force,
)
from radsight.algorithms.registry import Registry
from radsight.config import Settings
from radsight.errors import AdmissionRefused, InvalidInput, NotFound
from radsight.runtime import Runtime
from radsight.store import Session, quality, tenants, worklist
from radsight.store import admission as admissionstore
from radsight.store import results as resultstore
from radsight.store.people import Actor, record_audit
from radsight.store.scope import Scope
from radsight.store.tables import AlgorithmStateRow, EvaluationRow

log = logging.getLogger(__name__)

#: the actor of changes the platform makes itself (first registration, auto-suspension)
PLATFORM = "radsight"
#: a reason shorter than this is not a reason (an override, a suspension, a withdrawal)
MIN_REASON = 10


def acceptance_rule(settings: Settings) -> AcceptanceRule:
    """The acceptance rule in force: one rule for approval and for calibration tests."""
    return AcceptanceRule(
        min_auroc=settings.acceptance_min_auroc,
        min_studies=settings.acceptance_min_studies,
        min_class_fraction=settings.acceptance_min_class_fraction,
        min_pointing_game=settings.acceptance_min_pointing_game,
    )


@dataclass(frozen=True)
class _System:
    """The platform as an actor in the audit trail."""

    name: str = PLATFORM
    organisation_id: int | None = None
    user_id: int | None = None


SYSTEM: Actor = _System()


def built_in(algorithm: object) -> bool:
    """An algorithm of Radsight's own package (its evidence was measured and reviewed with
    the platform's code); a plug-in's class lives in the vendor's package."""
    return type(algorithm).__module__.startswith("radsight.")


def register_installed(rt: Runtime, registry: Registry) -> list[AlgorithmStateRow]:
    """Give every installed version that has no recorded state its first one.

    A version that ships evidence has it stored as an evaluation (``created_by``
    "shipped with the package"); a built-in version starts ``approved`` platform-wide when
    that evidence passes the acceptance rule in force, else ``shadow``. A plug-in's passing
    evidence approves nothing by itself (a vendor's file is a claim): it starts
    ``registered`` with the evaluation named for a supervisor to approve on. A version
    with no evidence starts ``registered``. Idempotent: a version with any recorded state
    is left alone (so a supervisor's decisions survive restarts and upgrades).
    """
    rule = acceptance_rule(rt.settings)
    made = []
    with rt.db.session() as s:
        known = admissionstore.known_versions(s)
        for algorithm in registry.all():
            key = (algorithm.name, algorithm.version)
            if key in known:
                continue
            evidence = algorithm.shipped_evidence()
            if evidence is None:
                row = admissionstore.record_state(
                    s,
                    *key,
                    "registered",
                    reason="installed; it ships no evidence: run `radsight evaluate` on a "
                    "reference set, then approve it or put it in shadow",
                    actor=PLATFORM,
                )
            else:
                problems = evidence_problems(evidence, rule)
                ev = quality.create_evaluation(
                    s,
                    algorithm.name,
                    algorithm.version,
                    str(evidence.get("reference") or "shipped evidence"),
                    "shipped with the package",
                )
                quality.finish_evaluation(
                    s,
                    ev.id,
                    summary={**evidence, "shipped": True, "failures": problems},
                    passed=not problems,
                    num_studies=int(evidence.get("num_studies") or 0),
                )
                if problems:
                    state = "shadow"
                    reason = "its shipped evidence does not pass the acceptance rule: " + (
                        "; ".join(problems)
                    )
                elif not built_in(algorithm):
                    # a plug-in's own claim approves nothing by itself: a person decides
                    state = "registered"
                    reason = (
                        f"its package ships evidence that passes the acceptance rule "
                        f"(evaluation {ev.id}); a plug-in is approved by a supervisor, not by "
                        f"its own file: `radsight algorithm approve {algorithm.name}@"
                        f"{algorithm.version} --evidence {ev.id}`"
                    )
                else:
                    state = "approved"
                    reason = "its shipped evidence passes the acceptance rule in force"
                row = admissionstore.record_state(
                    s, *key, state, reason=reason, actor=PLATFORM, evidence_id=ev.id
                )
            record_audit(
                s,
                SYSTEM,
                f"algorithm.{row.state}",
                detail=_audit_detail(row),
            )
            log.info("algorithm %s %s registered: %s (%s)", *key, row.state, row.reason)
            made.append(row)
    return made


def _audit_detail(row: AlgorithmStateRow) -> dict[str, Any]:
    return {
        "algorithm": row.algorithm_name,
        "version": row.algorithm_version,
        "state": row.state,
        "scope": _scope_text(row.organisation_id, row.region_id),
        "organisation_id": row.organisation_id,
        "region_id": row.region_id,
        "reason": row.reason,
        "evidence_id": row.evidence_id,
        "override": row.override,
        "state_id": row.id,
    }


def _scope_text(organisation_id: int | None, region_id: int | None) -> str:
    if organisation_id is not None:
        return f"organisation {organisation_id}"
    if region_id is not None:
        return f"region {region_id}"
    return "platform"


def current_state(
    s: Session,
    name: str,
    version: str,
    *,
    organisation_id: int | None = None,
    region_id: int | None = None,
) -> str:
    """The state in force at a scope: for an organisation as it applies to it; for a
    region or the platform, the newest record at exactly that scope (else what the wider
    scope says)."""
    if organisation_id is not None:  # the one rule for an organisation: the store's
        org = tenants.get_organisation(s, organisation_id)
        return admissionstore.state_for(s, name, version, org.id)[0]
    rows = admissionstore.state_history(s, name, version, scope=Scope.ALL)
    current = in_force(admissionstore.records(rows))
    if any(
        r.state == "withdrawn" and r.organisation_id is None and r.region_id is None
        for r in current
    ):
        return "withdrawn"  # final everywhere below the platform too
    exact = [r for r in current if r.organisation_id is None and r.region_id == region_id]
    if exact:
        return exact[0].state
    platform = [r for r in current if r.organisation_id is None and r.region_id is None]
    return platform[0].state if platform else "registered"


def change_state(
    rt: Runtime,
    actor: Actor,
    name: str,
    version: str,
    new_state: str,
    *,
    organisation: str | int | None = None,
    region: str | None = None,
    reason: str = "",
    evidence_id: int | None = None,
    override: bool = False,
    registry: Registry | None = None,
    remote_addr: str = "",
) -> AlgorithmStateRow:
    """Move a version to ``new_state`` at a scope (one organisation, a region, or the
    platform when neither is given), or refuse with :class:`AdmissionRefused` saying why.

    Approval needs evidence: ``evidence_id`` names an evaluation of exactly this version
    that passes the acceptance rule in force; without one, the newest passing evaluation
    of the version is used. ``override`` approves without passing evidence and needs a
    written ``reason`` (the audit trail keeps it). Suspending and withdrawing need a reason
    too. Permissions are the caller's to check (the CLI is the operator; the API allows
    supervisors within their region and platform admins).
    """
    if new_state not in STATES:
        raise InvalidInput(f"unknown state {new_state!r}; one of {', '.join(STATES)}")
    reason = reason.strip()
    with rt.db.session() as s:
        if registry is not None:
            installed = {(a.name, a.version) for a in registry.all()}
            if (name, version) not in installed | admissionstore.known_versions(s):
                raise NotFound(f"algorithm {name} version {version} is not installed")
        elif (name, version) not in admissionstore.known_versions(s):
            raise NotFound(f"algorithm {name} version {version} is not registered")
        org_id = region_id = None
        where = "the platform"
        if organisation is not None:
            org = tenants.get_organisation(s, organisation)
            org_id, where = org.id, f"organisation {org.name}"
        elif region is not None:
            region_id = tenants.get_region(s, region).id
            where = f"region {region}"
        current = current_state(s, name, version, organisation_id=org_id, region_id=region_id)
        if current == new_state:
            raise AdmissionRefused(f"{name} {version} is already {new_state} for {where}")
        if not can_move(current, new_state):
            raise AdmissionRefused(
                f"{name} {version} is {current} for {where}; it cannot become {new_state}"
                + (" (withdrawn is final)" if current == "withdrawn" else "")
            )
        if new_state in ("suspended", "withdrawn") and len(reason) < MIN_REASON:
            raise AdmissionRefused(f"say why {name} {version} is {new_state} (a written reason)")
        evidence: EvaluationRow | None = None
        if new_state == "approved":
            evidence, problems = _evidence(s, rt.settings, name, version, evidence_id)
            if problems and not override:
                raise AdmissionRefused(
                    f"{name} {version} cannot be approved: "
                    + "; ".join(problems)
                    + ". Run `radsight evaluate` on a reference set that meets the acceptance "
                    "rule, or approve with an override and a written reason"
                )
            if problems and len(reason) < MIN_REASON:
                raise AdmissionRefused(
                    f"an override needs a written reason (at least {MIN_REASON} characters)"
                )
            override = bool(problems)
        elif evidence_id is not None:  # what a suspension rests on (a failed evaluation)
            evidence = quality.get_evaluation(s, evidence_id, scope=Scope.ALL)
            if (evidence.algorithm_name, evidence.algorithm_version) != (name, version):
                raise AdmissionRefused(
                    f"evaluation {evidence.id} tested {evidence.algorithm_name} "
                    f"{evidence.algorithm_version}, not {name} {version}"
                )
        row = admissionstore.record_state(
            s,
            name,
            version,
            new_state,
            organisation_id=org_id,
            region_id=region_id,
            reason=reason,
            actor=actor.name,
            evidence_id=evidence.id if evidence is not None else None,
            override=override and new_state == "approved",
            detail={"from": current},
        )
        retracted = _retract_where_not_approved(s, name, version) if new_state != "approved" else {}
        record_audit(
            s,
            actor,
            f"algorithm.{new_state}",
            organisation_id=org_id,
            detail={**_audit_detail(row), "from": current, "retracted_studies": retracted},
            remote_addr=remote_addr,
        )
        log.info(
            "algorithm %s %s: %s -> %s for %s by %s%s",
            name,
            version,
            current,
            new_state,
            where,
            actor.name,
            " (override)" if row.override else "",
        )
        return row


def _retract_where_not_approved(s: Session, name: str, version: str) -> dict[str, int]:
    """After a version stops being approved somewhere, take its results off the
    radiologists' worklists and viewer in every organisation where it is no longer
    approved (they become shadow results; what the PACS received stays there); return
    organisation id -> studies touched."""
    touched: dict[str, int] = {}
    for org_id in sorted(resultstore.organisations_with_clinical(s, name, version)):
        if admissionstore.state_for(s, name, version, org_id)[0] == "approved":
            continue
        studies = resultstore.retract_clinical(s, name, version, org_id)
        for study_id in studies:
            worklist.refresh_study_priority(s, study_id)
        touched[str(org_id)] = len(studies)
        log.info(
            "%s %s is no longer approved for organisation %d: %d studies' results retracted",
            name,
            version,
            org_id,
            len(studies),
        )
    return touched


def _evidence(
    s: Session, settings: Settings, name: str, version: str, evidence_id: int | None
) -> tuple[EvaluationRow | None, list[str]]:
    """The evaluation that backs an approval and what it lacks ([] when it passes)."""
    rule = acceptance_rule(settings)
    if evidence_id is not None:
        ev = quality.get_evaluation(s, evidence_id, scope=Scope.ALL)
        if (ev.algorithm_name, ev.algorithm_version) != (name, version):
            raise AdmissionRefused(
                f"evaluation {ev.id} tested {ev.algorithm_name} {ev.algorithm_version}, "
                f"not {name} {version}: evidence must be of this exact version"
            )
        if ev.state != "done":
            return ev, [f"evaluation {ev.id} is {ev.state}"]
        return ev, [f"evaluation {ev.id}: {p}" for p in evidence_problems(ev.summary, rule)]
    done = [
        e for e in quality.list_evaluations(s, name, version, scope=Scope.ALL) if e.state == "done"
    ]
    if not done:
        return None, [f"no calibration test of {name} {version} has been run"]
    # the newest test speaks: an older passing one does not outvote a newer failure (a
    # version suspended on a failed test is not reinstated on its old evidence); to rely
    # on an older test, name it (--evidence ID) and it is judged on its own
    newest = done[0]
    return newest, [f"evaluation {newest.id}: {p}" for p in evidence_problems(newest.summary, rule)]


def set_enabled(
    rt: Runtime,
    actor: Actor,
    organisation: str | int,
    name: str,
    enabled: bool,
    *,
    reason: str = "",
    registry: Registry | None = None,
    remote_addr: str = "",
) -> None:
    """Switch an algorithm (all its versions) on or off for one organisation."""
    with rt.db.session() as s:
        if registry is not None and name not in registry.names():
            raise NotFound(f"algorithm {name} is not installed")
        org = tenants.get_organisation(s, organisation)
        admissionstore.set_switch(s, org.id, name, enabled, reason=reason.strip(), actor=actor.name)
        record_audit(
            s,
            actor,
            "algorithm.enable" if enabled else "algorithm.disable",
            organisation_id=org.id,
            detail={"algorithm": name, "organisation": org.name, "reason": reason.strip()},
            remote_addr=remote_addr,
        )
