"""Monitoring against the store: technical, clinical and drift reports, and the alerts
they raise (:func:`run_checks`). Monitoring reads the store; it never blocks the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from radsight.algorithms.registry import Registry
from radsight.errors import RadsightError
from radsight.monitor import alerting, clinical, drift, technical
from radsight.monitor.admission import PLATFORM
from radsight.monitor.suspension import suspend_if_approved
from radsight.runtime import Runtime
from radsight.store import Session, monitoring, quality
from radsight.store import admission as admissionstore
from radsight.store.clock import utcnow
from radsight.store.scope import Scope

log = logging.getLogger(__name__)


#: role -> (the check of one stored object of that role, the defect when it is unreadable);
#: a new output type adds its check here (a role without one is stored but not checked)
OBJECT_CHECKS: dict[str, tuple[Callable[[bytes, str], list[str]], str]] = {
    "sr": (technical.check_sr, "sr_invalid"),
    "sc": (technical.check_sc_header, "sc_invalid"),
}


def output_defects(rt: Runtime, s: Session, results: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Read back each result's objects, check each by its role, and count what is wrong.

    A result without an SR is ``sr_invalid``; one whose SC count differs from the frames
    its analysis job was given is ``sc_count_mismatch``.
    """
    frames = monitoring.analysed_frames(s, sorted({r["study_id"] for r in results}))
    defects: dict[int, list[str]] = {}
    for row in results:
        found: list[str] = []
        objects = row["objects"]
        if not any(o["role"] == "sr" for o in objects):
            found.append("sr_invalid")
        for obj in objects:
            if obj["role"] not in OBJECT_CHECKS:
                continue
            check, unreadable = OBJECT_CHECKS[obj["role"]]
            try:
                bad = check(rt.files.get(obj["storage_key"]), row["study_instance_uid"])
            except RadsightError:  # the object is gone from the store
                bad = [unreadable]
            found += [d for d in bad if d not in found]
        expected = frames.get((row["study_id"], row["algorithm_name"], row["algorithm_version"]))
        captures = sum(o["role"] == "sc" for o in objects)
        if objects and expected is not None and captures != expected:
            found.append("sc_count_mismatch")
        if found:
            defects[row["result_id"]] = found
    return defects


def technical_report(
    rt: Runtime, scope: Scope, days: float = 1.0, check_outputs: bool = True
) -> dict[str, Any]:
    since = utcnow() - timedelta(days=days)
    with rt.db.session() as s:
        results = monitoring.analysed_results(s, scope=scope, since=since)
        defects = output_defects(rt, s, results) if check_outputs else {}
        report = technical.summarise(
            results,
            defects,
            monitoring.job_counts(s, scope=scope, since=since),
            monitoring.delivery_failures(s, scope=scope, since=since),
            rt.settings.turnaround_budget_s,
            monitoring.organisation_names(s, scope=scope),
        )
    report["window_days"] = days
    report["defective_results"] = {str(k): v for k, v in sorted(defects.items())}
    return report


def clinical_report(
    rt: Runtime,
    scope: Scope,
    days: float | None = None,
    group_by: Sequence[str] = ("algorithm_name", "algorithm_version", "organisation_id"),
    period: str = "all",
) -> dict[str, Any]:
    days = days or rt.settings.clinical_window_days
    with rt.db.session() as s:
        since = utcnow() - timedelta(days=days)
        verdicts = monitoring.current_verdicts(s, scope=scope, since=since)
    rows = clinical.figures(verdicts, group_by, period)
    for row in rows:
        row["below_bar"] = [
            name for name, _, _ in clinical.below_bar(row, rt.settings.clinical_bars)
        ]
    return {
        "window_days": days,
        "bars": rt.settings.clinical_bars,
        "group_by": list(group_by),
        "period": period,
        "groups": rows,
    }


def drift_report(
    rt: Runtime, algorithm_name: str, algorithm_version: str, *, scope: Scope
) -> dict[str, Any]:
    """A version's live inputs and scores in ``scope`` against its calibration baseline.

    The platform's monitoring (``run_checks``) looks at every organisation; a principal sees
    the drift of the studies of the organisations it may see.
    """
    st = rt.settings
    with rt.db.session() as s:
        ev = quality.drift_baseline(s, algorithm_name, algorithm_version)
        live = monitoring.drift_inputs(
            s,
            algorithm_name,
            algorithm_version,
            utcnow() - timedelta(days=st.drift_window_days),
            scope=scope,
        )
        ev_id, cases = (ev.id, list(ev.summary.get("cases", []))) if ev else (None, [])
    out: dict[str, Any] = {
        "algorithm_name": algorithm_name,
        "algorithm_version": algorithm_version,
        "baseline_evaluation_id": ev_id,
        "current_studies": len(live),
        "features": [],
        "status": "",
    }
    if ev_id is None:
        out["status"] = (
            "no baseline: run a calibration test of this version on a reference set "
            "(shipped evidence has no input features)"
        )
        return out
    if len(live) < st.drift_min_studies:
        out["status"] = f"too few studies ({len(live)} < {st.drift_min_studies}) to compare"
        return out
    base = [drift.baseline_features(c) for c in cases if c.get("score") is not None]
    out["features"] = drift.compare(
        base, [drift.live_features(r) for r in live], st.drift_psi_alert, st.drift_ks_p
    )
    out["status"] = "drift" if any(f["drift"] for f in out["features"]) else "stable"
    return out


def run_checks(rt: Runtime, registry: Registry | None = None) -> dict[str, Any]:
    """One monitoring pass over every organisation: raise new alerts, resolve cleared ones."""
    summary: dict[str, Any] = {"raised": [], "resolved": 0}
    keys: dict[str, set[str]] = {"technical": set(), "clinical": set(), "drift": set()}

    def alert(kind: str, key: str, amend: bool = False, **fields: Any) -> None:
        """Raise (or keep open) an alert; ``amend``: an open one is told what changed."""
        keys[kind].add(key)
        with rt.db.session() as s:
            row, new = alerting.raise_alert(rt, s, kind=kind, key=key, **fields)
            if new:
                summary["raised"].append({"id": row.id, "kind": kind, "message": row.message})
            elif amend:
                quality.amend_alert(
                    s,
                    row,
                    message=fields["message"],
                    detail=fields["detail"],
                    webhook=bool(rt.settings.alert_webhook_url),
                )

    tech = technical_report(rt, Scope.ALL)
    for g in tech["groups"]:
        for figure in (*technical.DEFECTS, "failed", "dead", "time_limit"):
            if g[figure]:
                alert(
                    "technical",
                    f"technical:{figure}:{g['algorithm_name']}:{g['algorithm_version']}:"
                    f"{g['organisation_id']}",
                    severity="critical" if figure in ("wrong_study", "sr_invalid") else "warning",
                    algorithm_name=g["algorithm_name"],
                    algorithm_version=g["algorithm_version"],
                    organisation_id=g["organisation_id"],
                    message=f"{g[figure]} {figure.replace('_', ' ')} in the last "
                    f"{tech['window_days']:g} day(s) ({g['rates'][figure]:.1%})",
                    detail={"figure": figure, "count": g[figure], "rate": g["rates"][figure]},
                )
    clin = clinical_report(rt, Scope.ALL)
    for g in clin["groups"]:
        for name, bar, est in clinical.below_bar(g, rt.settings.clinical_bars):
            message = (
                f"{name} {est['value']:.3f} (95% CI {est['lower']:.3f}-{est['upper']:.3f},"
                f" n={est['n']}) is below its bar {bar:.2f}"
            )
            suspension = None
            if (
                rt.settings.auto_suspend_on_clinical
                and g["organisation_id"] is not None
                and not _decided_within_window(rt, g)
            ):
                # the whole CI is below the bar (below_bar): conclusive, as a suspension needs
                suspension = suspend_if_approved(
                    rt,
                    g["algorithm_name"],
                    g["algorithm_version"],
                    organisation_id=g["organisation_id"],
                    why=f"clinical monitoring: {message}",
                )
            if suspension is not None:
                message += (
                    f". {g['algorithm_name']} {g['algorithm_version']} is suspended for "
                    f"{suspension.scope} (automatic suspension; a supervisor reinstates it)"
                )
            alert(
                "clinical",
                f"clinical:{name}:{g['algorithm_name']}:{g['algorithm_version']}:"
                f"{g['organisation_id']}",
                amend=suspension is not None,
                severity="critical",
                algorithm_name=g["algorithm_name"],
                algorithm_version=g["algorithm_version"],
                organisation_id=g["organisation_id"],
                message=message,
                detail={
                    "figure": name,
                    "bar": bar,
                    "estimate": est,
                    "suspended": suspension.to_json() if suspension else None,
                },
            )
    since = utcnow() - timedelta(days=rt.settings.drift_window_days)
    with rt.db.session() as s:
        versions = monitoring.versions_in_use(s, scope=Scope.ALL, since=since)
    summary["drift"] = []
    for name, version in versions:
        rep = drift_report(rt, name, version, scope=Scope.ALL)
        summary["drift"].append({"algorithm": f"{name}@{version}", "status": rep["status"]})
        for f in rep["features"]:
            if f["drift"]:
                alert(
                    "drift",
                    f"drift:{f['feature']}:{name}:{version}",
                    algorithm_name=name,
                    algorithm_version=version,
                    message=f"{f['feature']} has shifted from the calibration baseline "
                    f"(PSI {f['psi']:.2f}"
                    + (f", KS p {f['ks_p']:.2g})" if f["ks_p"] is not None else ")"),
                    detail=f,
                )
    with rt.db.session() as s:
        for kind, open_keys in keys.items():
            summary["resolved"] += quality.resolve_alerts_except(s, kind, open_keys)
    summary["webhook"] = alerting.send_pending_webhooks(rt)
    summary["technical_totals"] = tech["totals"]
    log.info(
        "monitoring pass: %d alerts raised, %d resolved",
        len(summary["raised"]),
        summary["resolved"],
    )
    return summary


def _decided_within_window(rt: Runtime, g: dict[str, Any]) -> bool:
    """A person approved (or reinstated) the version for the organisation inside the
    clinical window: the verdicts that fail it may predate that decision, so monitoring
    does not overrule it (the alert stays open for the supervisor to see)."""
    since = utcnow() - timedelta(days=rt.settings.clinical_window_days)
    with rt.db.session() as s:
        state, row = admissionstore.state_for(
            s, g["algorithm_name"], g["algorithm_version"], g["organisation_id"]
        )
    return (
        state == "approved" and row is not None and row.actor != PLATFORM and row.created_at > since
    )


def dashboard_data(
    rt: Runtime, scope: Scope, since: Any = None, until: Any = None, period: str = "month"
) -> dict[str, Any]:
    """Everything the supervisors' dashboard shows, for the organisations in ``scope``."""
    from radsight.monitor import dashboard

    with rt.db.session() as s:
        names = monitoring.organisation_names(s, scope=scope)
        rows = monitoring.activity(s, scope=scope, since=since, until=until, period=period)
        alerts = quality.list_alerts(s, scope=scope, open_only=True, limit=200)
        versions = monitoring.versions_in_use(s, scope=scope, since=since)
        evaluations = {}
        for name, version in versions:
            ev = quality.latest_evaluation(s, name, version)
            if ev is not None:
                evaluations[(name, version)] = {
                    "id": ev.id,
                    "passed": ev.passed,
                    "auroc": ev.summary.get("auroc"),
                }
        alert_rows = [
            {
                "created_at": f"{a.created_at:%Y-%m-%d %H:%M}",
                "kind": a.kind,
                "severity": a.severity,
                "algorithm": f"{a.algorithm_name} {a.algorithm_version}".strip(),
                "organisation_id": a.organisation_id,
                "message": a.message,
            }
            for a in alerts
        ]
        open_by_version: dict[tuple[str, str], int] = {}
        for a in alerts:
            k = (a.algorithm_name, a.algorithm_version)
            open_by_version[k] = open_by_version.get(k, 0) + 1
    clin = {
        (g["algorithm_name"], g["algorithm_version"]): g
        for g in clinical_report(rt, scope, group_by=("algorithm_name", "algorithm_version"))[
            "groups"
        ]
    }
    days = max(1.0, (utcnow() - since).total_seconds() / 86400) if since else 30.0
    tech = technical_report(rt, scope, days=days, check_outputs=False)
    quality_rows = [
        dashboard.quality_row(
            n,
            v,
            evaluations.get((n, v)),
            clin.get((n, v)),
            drift_report(rt, n, v, scope=scope)["status"],
            open_by_version.get((n, v), 0),
        )
        for n, v in versions
    ]
    return {
        "since": since.isoformat() if since else "",
        "until": until.isoformat() if until else "",
        "period": period,
        "organisations": sorted(o for o, _ in names.values()),
        "activity": dashboard.aggregate(rows, names),
        "turnaround_s": tech["turnaround_s"],
        "turnaround_days": round(days, 1),
        "quality": quality_rows,
        "alerts": alert_rows,
    }
