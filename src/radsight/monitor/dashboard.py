"""The supervisors' dashboard (pure): aggregate activity rows, draw the charts, write CSV.

The page itself is the template ``dashboard.html`` of the page system (:mod:`radsight.page_system`),
served by :mod:`radsight.web.dashboard`.

Activity rows come from :func:`radsight.store.monitoring.activity`: (period, organisation,
study type, algorithm, studies, flagged, urgent). "Flagged" is a study the algorithm called
abnormal (a sign found); a study analysed by two algorithms counts once per algorithm.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from typing import Any

from radsight.monitor import charts

CSV_COLUMNS = (
    "period",
    "region",
    "organisation",
    "study_type",
    "algorithm",
    "studies",
    "flagged",
    "urgent",
)


def aggregate(rows: list[tuple], org_names: dict[int, tuple[str, str]]) -> dict[str, Any]:
    detail = []
    by: dict[str, dict[str, list[int]]] = {
        k: defaultdict(lambda: [0, 0, 0])
        for k in ("period", "region", "organisation", "study_type", "algorithm")
    }
    for period, org, study_type, algorithm, n, flagged, urgent in rows:
        org_name, region = org_names.get(org, (str(org), ""))
        rec = {
            "period": period,
            "region": region,
            "organisation": org_name,
            "study_type": study_type or "other",
            "algorithm": algorithm,
            "studies": int(n),
            "flagged": int(flagged or 0),
            "urgent": int(urgent or 0),
        }
        detail.append(rec)
        for key in by:
            acc = by[key][rec[key]]
            acc[0] += rec["studies"]
            acc[1] += rec["flagged"]
            acc[2] += rec["urgent"]
    totals = {
        "studies": sum(r["studies"] for r in detail),
        "flagged": sum(r["flagged"] for r in detail),
        "urgent": sum(r["urgent"] for r in detail),
    }
    return {
        "totals": totals,
        **{
            f"by_{key}": [
                {key: k, "studies": v[0], "flagged": v[1], "urgent": v[2]}
                for k, v in sorted(vals.items())
            ]
            for key, vals in by.items()
        },
        "rows": detail,
    }


def to_csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    w.writeheader()
    for row in data["activity"]["rows"]:
        w.writerow({k: row[k] for k in CSV_COLUMNS})
    return buf.getvalue()


#: the dashboard's charts: (title, activity breakdown, its key)
CHARTS = (
    ("Studies and signs flagged per period", "by_period", "period"),
    ("Per organisation", "by_organisation", "organisation"),
)
#: the dashboard's breakdown tables: (key, column label)
BREAKDOWNS = (
    ("region", "Region"),
    ("organisation", "Organisation"),
    ("study_type", "Study type"),
    ("algorithm", "Algorithm"),
)


def chart_images(data: dict[str, Any]) -> list[dict[str, str]]:
    """The dashboard's bar charts as PNG data URIs, each with its title.

    Parameters
    ----------
    data
        What :func:`radsight.monitor.checks.dashboard_data` returns.

    Returns
    -------
    list of dict
        ``{"title": ..., "src": "data:image/png;base64,..."}`` per chart that has data.
    """
    images = []
    for title, breakdown, key in CHARTS:
        items = data["activity"][breakdown]
        if not items:
            continue
        png = charts.bar_png(
            title,
            [str(i[key]) for i in items],
            {
                "studies": [i["studies"] for i in items],
                "signs flagged": [i["flagged"] for i in items],
            },
        )
        images.append({"title": title, "src": charts.data_uri(png)})
    return images


def figure_tables(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's tables, in page order, each with its heading.

    Parameters
    ----------
    data
        What :func:`radsight.monitor.checks.dashboard_data` returns.

    Returns
    -------
    list of dict
        ``{"id", "heading", "level", "head", "rows"}``: ``level`` is the heading level (2 or
        3), ``head`` the column names, ``rows`` the cells (``None`` shows as "-").
    """
    act = data["activity"]
    tables = [
        {
            "id": f"by-{key.replace('_', '-')}",
            "heading": f"By {label.lower()}",
            "level": 3,
            "head": [label, "studies", "flagged", "urgent"],
            "rows": [[r[key], r["studies"], r["flagged"], r["urgent"]] for r in act[f"by_{key}"]],
        }
        for key, label in BREAKDOWNS
    ]
    tables.append(
        {
            "id": "turnaround",
            "heading": f"Turnaround (seconds, last {data['turnaround_days']:g} days)",
            "level": 2,
            "head": ["stage", "studies", "median", "p95", "max"],
            "rows": [
                [stage.replace("_", " "), q["n"], q["median"], q["p95"], q["max"]]
                for stage, q in data["turnaround_s"].items()
            ],
        }
    )
    tables.append(
        {
            "id": "quality",
            "heading": "Quality status per algorithm",
            "level": 2,
            "head": [
                "algorithm",
                "version",
                "calibration test",
                "AUROC",
                "sensitivity (verdicts)",
                "specificity (verdicts)",
                "drift",
                "open alerts",
                "status",
            ],
            "rows": [
                [
                    q["algorithm_name"],
                    q["algorithm_version"],
                    q["evaluation"],
                    q["auroc"],
                    q["sensitivity"],
                    q["specificity"],
                    q["drift"],
                    q["open_alerts"],
                    q["status"],
                ]
                for q in data["quality"]
            ],
        }
    )
    tables.append(
        {
            "id": "alerts",
            "heading": "Open alerts",
            "level": 2,
            "head": ["raised", "kind", "severity", "algorithm", "message"],
            "rows": [
                [a["created_at"], a["kind"], a["severity"], a["algorithm"], a["message"]]
                for a in data["alerts"]
            ],
        }
    )
    return tables


def quality_row(
    name: str,
    version: str,
    evaluation: dict | None,
    clinical_row: dict | None,
    drift_status: str,
    open_alerts: int,
) -> dict[str, Any]:
    def fmt(e: dict | None) -> str:
        if not e or e.get("value") is None:
            return "-"
        return f"{e['value']:.3f} ({e['lower']:.3f}-{e['upper']:.3f}, n={e['n']})"

    if evaluation is None:
        ev_text, auroc, status = "none", "-", "not calibrated"
    else:
        ev_text = f"#{evaluation['id']} {'passed' if evaluation['passed'] else 'FAILED'}"
        auroc = fmt(evaluation.get("auroc"))
        status = "ok" if evaluation["passed"] else "failed calibration"
    if open_alerts and status == "ok":
        status = "attention"
    return {
        "algorithm_name": name,
        "algorithm_version": version,
        "evaluation": ev_text,
        "auroc": auroc,
        "sensitivity": fmt((clinical_row or {}).get("sensitivity")),
        "specificity": fmt((clinical_row or {}).get("specificity")),
        "drift": drift_status or "-",
        "open_alerts": open_alerts,
        "status": status,
    }


def admission_row(version: Any) -> dict[str, Any]:
    """A version's admission as the dashboard shows it: its state platform-wide, the
    organisations in view where it differs, and its evidence (the approval's, else the
    newest passing evaluation, else the newest one) with the link to its report.

    Parameters
    ----------
    version
        A :class:`radsight.monitor.versions.Version`.

    Returns
    -------
    dict
        ``algorithm_name``, ``algorithm_version``, ``state``, ``differs`` (organisation ->
        state), ``switched_off`` (organisation names), ``evidence`` (None or ``id``,
        ``passes``, ``num_studies``, ``auroc``, ``url``), ``shadow_results``.
    """
    ev = version.evidence
    return {
        "algorithm_name": version.name,
        "algorithm_version": version.version,
        "installed": version.installed,
        "state": version.platform_state,
        "differs": {
            o.organisation: o.state
            for o in version.organisations
            if o.state != version.platform_state
        },
        "switched_off": [o.organisation for o in version.organisations if o.switched_off],
        "evidence": None
        if ev is None
        else {
            "id": ev.evaluation_id,
            "passes": ev.passes,
            "num_studies": ev.num_studies,
            "auroc": ev.auroc_text,
            "url": ev.report_url or f"/api/evaluations/{ev.evaluation_id}",
        },
        "shadow_results": version.shadow_results,
    }
