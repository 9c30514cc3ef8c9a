"""Calibration tests and thresholds against the store (the I/O side of ``monitor``)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from radsight.admission import conclusively_below
from radsight.algorithms.contract import Algorithm
from radsight.errors import ConfigError, NotFound
from radsight.monitor import alerting, calibration, metrics
from radsight.monitor.admission import acceptance_rule
from radsight.monitor.html import evaluation_report
from radsight.monitor.reference import read_reference
from radsight.monitor.suspension import Suspension, suspend_if_approved
from radsight.operating_points import STUDY, points_in_force
from radsight.runtime import Runtime
from radsight.store import Session, quality, tenants
from radsight.store.scope import Scope
from radsight.store.tables import EvaluationRow, ThresholdRow

log = logging.getLogger(__name__)

METHOD_NAMES = {
    "youden": "youden",
    "sensitivity": "target_sensitivity",
    "specificity": "target_specificity",
}


def report_key(evaluation_id: int) -> str:
    return f"quality/evaluations/{evaluation_id}/report.html"


def run_evaluation(
    rt: Runtime,
    algorithm: Algorithm,
    reference: Path,
    *,
    created_by: str,
    organisation: str | None = None,
    study_type: str | None = None,
    min_auroc: float | None = None,
    progress: bool = True,
) -> tuple[EvaluationRow, dict, str]:
    """Run, summarise, store (row + HTML report in the object store); raise an alert on fail."""
    ref = read_reference(reference)
    with rt.db.session() as s:
        org_id = tenants.get_organisation(s, organisation).id if organisation else None
        points = points_in_force(
            algorithm,
            stored=quality.stored_thresholds(s, algorithm.name, algorithm.version, org_id),
        )
        row = quality.create_evaluation(
            s, algorithm.name, algorithm.version, ref.name, created_by, organisation_id=org_id
        )
        evaluation_id = row.id
    bars = acceptance_rule(rt.settings)
    if min_auroc is not None:
        bars = dataclasses.replace(bars, min_auroc=min_auroc)
    try:
        results = calibration.run_cases(
            algorithm,
            ref.cases,
            points,
            study_type=study_type,
            progress=progress,
            total=len(ref.cases),
            max_frame_pixels=rt.settings.max_frame_pixels,
            max_instance_pixels=rt.settings.max_instance_pixels,
        )
        summary = calibration.summarise(
            algorithm.name,
            algorithm.version,
            ref.name,
            results,
            points,
            bars,
        )
        html = evaluation_report(summary, evaluation_id)
        key = report_key(evaluation_id)
        rt.files.put(key, html.encode())
    except Exception as exc:
        with rt.db.session() as s:
            quality.finish_evaluation(
                s,
                evaluation_id,
                summary={},
                passed=None,
                num_studies=0,
                error=f"{type(exc).__name__}: {exc}",
            )
        raise
    with rt.db.session() as s:
        row = quality.finish_evaluation(
            s,
            evaluation_id,
            summary=summary,
            passed=summary["passed"],
            num_studies=summary["num_studies"],
            report_key=key,
        )
    if not summary["passed"]:
        suspension = _suspend_on_failure(rt, algorithm, ref.name, evaluation_id, org_id, summary)
        summary["suspended"] = suspension.to_json() if suspension else None
        with rt.db.session() as s:
            row = quality.get_evaluation(s, evaluation_id, scope=Scope.ALL)
            row.summary = dict(summary)  # a new object: the JSON column sees the change
            alerting.raise_alert(
                rt,
                s,
                kind="calibration",
                severity="critical",
                key=f"calibration:{algorithm.name}:{algorithm.version}:{evaluation_id}",
                algorithm_name=algorithm.name,
                algorithm_version=algorithm.version,
                organisation_id=org_id,
                message=f"calibration test {evaluation_id} on {ref.name} failed: "
                + "; ".join(summary["failures"])
                + _suspension_text(rt, algorithm, summary, suspension),
                detail={
                    "evaluation_id": evaluation_id,
                    "auroc": summary.get("auroc"),
                    "suspended": summary["suspended"],
                },
            )
    alerting.send_pending_webhooks(rt)
    log.info(
        "evaluation %d of %s %s on %s: %s",
        evaluation_id,
        algorithm.name,
        algorithm.version,
        ref.name,
        "passed" if summary["passed"] else "failed",
    )
    return row, summary, html


def _suspend_on_failure(
    rt: Runtime,
    algorithm: Algorithm,
    reference_name: str,
    evaluation_id: int,
    organisation_id: int | None,
    summary: dict,
) -> Suspension | None:
    """Suspend the version at the evaluation's scope when the failure is conclusive (the
    AUROC's whole 95 % CI below the bar in force) and ``auto_suspend_on_calibration``."""
    rule = acceptance_rule(rt.settings)
    if not (rt.settings.auto_suspend_on_calibration and conclusively_below(summary, rule)):
        return None
    auroc = summary["auroc"]
    return suspend_if_approved(
        rt,
        algorithm.name,
        algorithm.version,
        organisation_id=organisation_id,
        why=f"calibration test {evaluation_id} on {reference_name}: "
        f"AUROC {auroc['value']:.3f} (95% CI {auroc['lower']:.3f}-{auroc['upper']:.3f}) "
        f"is wholly below the bar {rule.min_auroc:.2f}",
        evidence_id=evaluation_id,
    )


def _suspension_text(
    rt: Runtime,
    algorithm: Algorithm,
    summary: dict,
    suspension: Suspension | None,
) -> str:
    """What the failure did to the version's state, for the alert's message."""
    if suspension is not None:
        return (
            f". {algorithm.name} {algorithm.version} is suspended for {suspension.scope} "
            "(automatic suspension; a supervisor reinstates it)"
        )
    rule = acceptance_rule(rt.settings)
    if not conclusively_below(summary, rule):
        return (
            f". Not conclusive (the AUROC's 95% CI reaches the bar {rule.min_auroc:.2f}): "
            "nothing is suspended"
        )
    if not rt.settings.auto_suspend_on_calibration:
        return ". Nothing is suspended (auto_suspend_on_calibration is off)"
    return ". Nothing is suspended: the version is not approved there"


def _evaluation_of(s: Session, name: str, version: str, evaluation_id: int) -> EvaluationRow:
    ev = quality.get_evaluation(s, evaluation_id, scope=Scope.ALL)
    if ev.state != "done":
        raise ConfigError(f"evaluation {evaluation_id} is {ev.state}, not done")
    if (ev.algorithm_name, ev.algorithm_version) != (name, version):
        raise ConfigError(
            f"evaluation {evaluation_id} tested {ev.algorithm_name} {ev.algorithm_version}, "
            f"not {name} {version}"
        )
    return ev


def pick_and_set_threshold(
    s: Session,
    name: str,
    version: str,
    method_text: str,
    evaluation_id: int,
    organisation_id: int | None,
    reason: str,
    created_by: str,
    *,
    dry_run: bool = False,
    finding_keys: tuple[str, ...] = ("",),
) -> tuple[float, dict, list[ThresholdRow]]:
    """Pick a threshold on an evaluation's study scores; record it (for the study score
    and the given findings) unless ``dry_run``."""
    method, target = metrics.parse_method(method_text)
    ev = _evaluation_of(s, name, version, evaluation_id)
    labels, scores = calibration.labels_and_scores(ev.summary)
    value = metrics.pick_threshold(labels, scores, method, target)
    perf = calibration.threshold_performance(ev.summary, value)
    rows = []
    for key in () if dry_run else finding_keys:
        rows.append(
            quality.set_threshold(
                s,
                algorithm_name=name,
                algorithm_version=version,
                value=value,
                method=METHOD_NAMES[method],
                target=target,
                evaluation_id=evaluation_id,
                organisation_id=organisation_id,
                created_by=created_by,
                finding_key=key,
                reason=reason or f"picked by {method_text} on evaluation {evaluation_id}",
            )
        )
    return value, perf, rows


def finding_keys(algorithm: Algorithm, names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``()`` / ``study`` -> the study score (""); ``all`` -> it and every finding."""
    declared = [f.key for f in algorithm.findings]
    keys: list[str] = []
    for name in names or ("study",):
        if name == "all":
            keys += ["", *declared]
        elif name == "study":
            keys.append("")
        elif name in declared:
            keys.append(name)
        else:
            raise NotFound(f"{algorithm.name} {algorithm.version} declares no finding {name!r}")
    return tuple(dict.fromkeys(keys))


def recalibration_report(
    s: Session, old: Algorithm, new: Algorithm, evaluation_id: int, method_text: str = "youden"
) -> dict:
    """The old version's study threshold on the new version's calibration test."""
    ev = _evaluation_of(s, new.name, new.version, evaluation_id)
    old_t = points_in_force(old, stored=quality.stored_thresholds(s, old.name, old.version))[STUDY]
    method, target = metrics.parse_method(method_text)
    labels, scores = calibration.labels_and_scores(ev.summary)
    picked_t = metrics.pick_threshold(labels, scores, method, target)
    old_perf = calibration.threshold_performance(ev.summary, old_t)
    new_perf = calibration.threshold_performance(ev.summary, picked_t)
    verdict = []
    for k in ("sensitivity", "specificity"):
        o, n = old_perf[k], new_perf[k]
        if o["value"] is None or n["value"] is None:
            continue
        if o["upper"] < n["lower"]:
            verdict.append(
                f"the old threshold is significantly worse in {k} "
                f"({o['value']:.3f} vs {n['value']:.3f}): do not reuse it"
            )
    if not verdict:
        verdict.append("the old threshold performs within the confidence intervals of a fresh pick")
    return {
        "algorithm": new.name,
        "old_version": old.version,
        "new_version": new.version,
        "evaluation_id": evaluation_id,
        "method": method_text,
        "old": old_perf,
        "picked": new_perf,
        "verdict": verdict,
    }
