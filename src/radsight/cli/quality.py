"""``radsight evaluate``, ``radsight threshold ...`` and ``radsight monitor ...``.

These run on the server's machine against its database (the operator's own access);
every threshold change records who (``cli:<login>``), when and why.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from radsight.cli.errors import fail_cleanly
from radsight.cli.tables import table

if TYPE_CHECKING:
    from radsight.store import Session


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _audit(s: Session, action: str, organisation_id: int | None, detail: dict[str, Any]) -> None:
    """The command line's one audit write path (:func:`radsight.cli.main._audit`)."""
    from radsight.cli.main import _audit as audit

    audit(s, action, organisation_id, detail)


def _org_id(s: Session, organisation: str | None) -> int | None:
    from radsight.store import tenants

    return tenants.get_organisation(s, organisation).id if organisation else None


def _fmt(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    return f"{e['value']:.3f} ({e['lower']:.3f}-{e['upper']:.3f})"


@click.command()
@click.option("--algorithm", "ref", required=True, help="NAME or NAME@VERSION")
@click.option(
    "--reference",
    required=True,
    type=click.Path(path_type=Path),
    help="folder with labels.csv and DICOM studies or PNG/JPEG images",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="also write report.html, summary.json and the plots here",
)
@click.option(
    "--organisation",
    help="test for this organisation: its thresholds, and a conclusive failure suspends the "
    "version there (default: platform-wide)",
)
@click.option("--study-type", help="study type to analyse as (default: the algorithm's first)")
@click.option("--min-auroc", type=float, help="acceptance bar (default: acceptance_min_auroc)")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.pass_obj
@fail_cleanly
def evaluate(
    obj: Any,
    ref: str,
    reference: Path,
    out_dir: Path | None,
    organisation: str | None,
    study_type: str | None,
    min_auroc: float | None,
    no_progress: bool,
) -> None:
    """Calibration test: run an algorithm version over a labelled reference set."""
    from radsight.algorithms.registry import Registry
    from radsight.monitor.service import run_evaluation

    algorithm = Registry.from_entry_points().resolve(ref)
    rt = obj.runtime()
    try:
        row, summary, html = run_evaluation(
            rt,
            algorithm,
            reference,
            created_by=_actor(),
            organisation=organisation,
            study_type=study_type,
            min_auroc=min_auroc,
            progress=not no_progress,
        )
    finally:
        rt.close()
    if out_dir is not None:
        from radsight.monitor import charts

        out_dir.mkdir(parents=True, exist_ok=True)
        from radsight.page_system import standalone

        # the file is opened from disk, where /static/app.css does not exist
        (out_dir / "report.html").write_text(standalone(html))
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        if "roc" in summary:
            (out_dir / "roc.png").write_bytes(charts.roc_png(summary))
            (out_dir / "calibration.png").write_bytes(charts.calibration_png(summary))
        if "localisation" in summary:
            (out_dir / "froc.png").write_bytes(charts.froc_png(summary))
    click.echo(
        f"evaluation {row.id}: {algorithm.name} {algorithm.version} on {row.reference_name}: "
        f"{summary['num_studies']} studies, {summary['num_analysed']} analysed"
    )
    click.echo(f"  AUROC       {_fmt(summary.get('auroc'))}  (DeLong 95% CI)")
    for k in ("sensitivity", "specificity", "ppv", "npv"):
        click.echo(f"  {k:<11} {_fmt(summary.get('at_threshold', {}).get(k))}")
    click.echo(f"  thresholds  {summary['thresholds']}")
    if "localisation" in summary:
        loc = summary["localisation"]
        click.echo(f"  pointing game {_fmt(loc['pointing_game'])}  (Wilson 95% CI)")
        for r in loc["froc"]["at_fp_rates"]:
            click.echo(
                f"  lesion sensitivity at {r['fp_per_case']:g} FP/case {_fmt(r['sensitivity'])}"
            )
    click.echo(f"  time/study  {summary['time_per_study_s']['mean']} s mean")
    for w in summary["warnings"]:
        click.echo(f"  warning: {w}")
    for f in summary["failures"]:
        click.echo(f"  failure: {f}")
    click.echo(
        f"  result: {'PASSED' if summary['passed'] else 'FAILED'}; report: "
        f"GET /api/evaluations/{row.id}/report.html"
        + (f" and {out_dir / 'report.html'}" if out_dir else "")
    )
    if summary.get("suspended"):
        click.echo(
            f"  suspended: {algorithm.name} {algorithm.version} for "
            f"{summary['suspended']['scope']} (automatic suspension; a supervisor reinstates it)"
        )
    if not summary["passed"]:
        sys.exit(2)


FINDING_OPTION = click.option(
    "--finding",
    "findings",
    multiple=True,
    help="study (default), a finding key, or 'all' (the study score and every finding); "
    "the verdict is abnormal when the study score or any finding reaches its threshold",
)


@click.group()
def threshold() -> None:
    """Operating thresholds per algorithm version (and organisation); every change recorded."""


@threshold.command("set")
@click.argument("ref")
@click.argument("value", type=float)
@FINDING_OPTION
@click.option("--organisation", help="only for this organisation (default: everyone)")
@click.option("--reason", required=True, help="why (kept in the history)")
@click.pass_obj
@fail_cleanly
def threshold_set(
    obj: Any,
    ref: str,
    value: float,
    findings: tuple[str, ...],
    organisation: str | None,
    reason: str,
) -> None:
    """Set the threshold of NAME@VERSION by hand; show the points then in force."""
    from radsight.algorithms.registry import Registry
    from radsight.monitor.service import finding_keys
    from radsight.operating_points import points_in_force
    from radsight.store import quality

    a = Registry.from_entry_points().resolve(ref)
    keys = finding_keys(a, findings)
    rt = obj.runtime()
    with rt.db.session() as s:
        org_id = _org_id(s, organisation)
        for key in keys:
            row = quality.set_threshold(
                s,
                algorithm_name=a.name,
                algorithm_version=a.version,
                value=value,
                method="manual",
                finding_key=key,
                organisation_id=org_id,
                reason=reason,
                created_by=_actor(),
            )
            s.flush()
            _audit(s, "threshold.set", org_id, quality.threshold_audit_detail(row))
            click.echo(
                f"threshold {row.id}: {a.name} {a.version} {key or 'study'} = {value} "
                f"({organisation or 'all organisations'})"
            )
        points = points_in_force(a, stored=quality.stored_thresholds(s, a.name, a.version, org_id))
    rt.close()
    click.echo(
        "  in force (routing rules' thresholds aside): "
        + ", ".join(f"{k} {v:g}" for k, v in points.items())
    )


@threshold.command("pick")
@click.argument("ref")
@click.option(
    "--method", "method_text", required=True, help="youden | sensitivity=0.95 | specificity=0.9"
)
@click.option(
    "--evaluation", "evaluation_id", type=int, required=True, help="the calibration test to pick on"
)
@FINDING_OPTION
@click.option("--organisation", help="only for this organisation")
@click.option("--reason", default="", help="why (kept in the history)")
@click.option("--dry-run", is_flag=True, help="show the choice, record nothing")
@click.pass_obj
@fail_cleanly
def threshold_pick(
    obj: Any,
    ref: str,
    method_text: str,
    evaluation_id: int,
    findings: tuple[str, ...],
    organisation: str | None,
    reason: str,
    dry_run: bool,
) -> None:
    """Pick the study threshold of NAME@VERSION on a calibration test and record it."""
    from radsight.algorithms.registry import Registry
    from radsight.monitor.service import finding_keys, pick_and_set_threshold

    a = Registry.from_entry_points().resolve(ref)
    rt = obj.runtime()
    with rt.db.session() as s:
        value, perf, rows = pick_and_set_threshold(
            s,
            a.name,
            a.version,
            method_text,
            evaluation_id,
            _org_id(s, organisation),
            reason,
            _actor(),
            dry_run=dry_run,
            finding_keys=finding_keys(a, findings),
        )
        ids = [r.id for r in rows]
        if not dry_run:
            from radsight.store.quality import threshold_audit_detail

            for r in rows:
                _audit(s, "threshold.set", r.organisation_id, threshold_audit_detail(r))
    rt.close()
    click.echo(f"{a.name} {a.version}: {method_text} on evaluation {evaluation_id} -> {value:.4f}")
    for k in ("sensitivity", "specificity", "ppv", "npv"):
        click.echo(f"  {k:<11} {_fmt(perf[k])}")
    click.echo(
        "  (dry run: nothing recorded)"
        if dry_run
        else f"  recorded as threshold {', '.join(map(str, ids))}"
    )


@threshold.command("list")
@click.argument("ref", required=False)
@click.pass_obj
@fail_cleanly
def threshold_list(obj: Any, ref: str | None) -> None:
    """Every threshold change, newest first."""
    from radsight.store import quality
    from radsight.store.scope import Scope

    name, _, version = (ref or "").partition("@")
    rt = obj.runtime()
    with rt.db.session() as s:
        rows = quality.list_thresholds(
            s, scope=Scope.ALL, algorithm_name=name or None, algorithm_version=version or None
        )
        out = [
            (
                r.id,
                f"{r.algorithm_name}@{r.algorithm_version}",
                r.finding_key or "study",
                r.organisation_id or "all",
                r.value,
                r.method + (f"={r.target}" if r.target else ""),
                r.evaluation_id or "",
                f"{r.created_at:%Y-%m-%d %H:%M}",
                r.created_by,
                r.reason,
            )
            for r in rows
        ]
    rt.close()
    table(
        [
            "id",
            "algorithm",
            "finding",
            "org",
            "value",
            "method",
            "evaluation",
            "when",
            "who",
            "why",
        ],
        out,
    )


@threshold.command("recalibrate")
@click.argument("ref")
@click.option("--from-version", required=True, help="the old version whose threshold to try")
@click.option(
    "--evaluation",
    "evaluation_id",
    type=int,
    required=True,
    help="a calibration test of the new version",
)
@click.option("--method", "method_text", default="youden", show_default=True)
@click.pass_obj
@fail_cleanly
def threshold_recalibrate(
    obj: Any, ref: str, from_version: str, evaluation_id: int, method_text: str
) -> None:
    """How the old version's threshold performs on the new version, against a fresh pick."""
    from radsight.algorithms.registry import Registry
    from radsight.monitor.service import recalibration_report

    reg = Registry.from_entry_points()
    new = reg.resolve(ref)
    old = reg.resolve(f"{new.name}@{from_version}")
    rt = obj.runtime()
    with rt.db.session() as s:
        rep = recalibration_report(s, old, new, evaluation_id, method_text)
    rt.close()
    click.echo(
        f"{new.name}: threshold of {old.version} on {new.version} (evaluation {evaluation_id})"
    )
    rows = []
    for label in ("old", "picked"):
        p = rep[label]
        rows.append(
            (
                label,
                f"{p['threshold']:.4f}",
                _fmt(p["sensitivity"]),
                _fmt(p["specificity"]),
                _fmt(p["ppv"]),
                _fmt(p["npv"]),
            )
        )
    table(["threshold", "value", "sensitivity", "specificity", "ppv", "npv"], rows)
    for line in rep["verdict"]:
        click.echo(f"  {line}")


@click.group()
def monitor() -> None:
    """Clinical, technical and drift monitoring; alerts."""


@monitor.command("run")
@click.pass_obj
@fail_cleanly
def monitor_run(obj: Any) -> None:
    """Run every check once: raise or resolve alerts, send pending webhooks."""
    from radsight.algorithms.registry import Registry
    from radsight.monitor.checks import run_checks

    rt = obj.runtime()
    try:
        report = run_checks(rt, Registry.from_entry_points())
    finally:
        rt.close()
    click.echo(json.dumps(report, indent=1, default=str))


@monitor.command("alerts")
@click.option("--all", "show_all", is_flag=True, help="also resolved alerts")
@click.pass_obj
@fail_cleanly
def monitor_alerts(obj: Any, show_all: bool) -> None:
    """Quality alerts, newest first."""
    from radsight.store import quality
    from radsight.store.scope import Scope

    rt = obj.runtime()
    with rt.db.session() as s:
        rows = [
            (
                r.id,
                r.kind,
                r.severity,
                f"{r.algorithm_name} {r.algorithm_version}".strip(),
                r.organisation_id or "",
                f"{r.created_at:%Y-%m-%d %H:%M}",
                "resolved" if r.resolved_at else "open",
                r.webhook_state or "-",
                r.message,
            )
            for r in quality.list_alerts(s, scope=Scope.ALL, open_only=not show_all)
        ]
    rt.close()
    table(
        ["id", "kind", "severity", "algorithm", "org", "raised", "state", "webhook", "message"],
        rows,
    )
