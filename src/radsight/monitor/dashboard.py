"""The supervisors' dashboard (pure): aggregate activity rows, render HTML and CSV.

Activity rows come from :func:`radsight.store.monitoring.activity`: (period, organisation,
study type, algorithm, studies, flagged, urgent). "Flagged" is a study the algorithm called
abnormal (a sign found); a study analysed by two algorithms counts once per algorithm.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from html import escape
from typing import Any

from radsight.monitor import charts
from radsight.monitor.html import page, table

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


def _chart(title: str, items: list[dict], key: str) -> str:
    if not items:
        return ""
    png = charts.bar_png(
        title,
        [str(i[key]) for i in items],
        {"studies": [i["studies"] for i in items], "signs flagged": [i["flagged"] for i in items]},
    )
    return f"<img alt='{escape(title)}' src='{charts.data_uri(png)}'>"


def render(data: dict[str, Any]) -> str:
    act = data["activity"]
    t = act["totals"]
    parts = [
        "<h1>Radsight: studies, signs and quality</h1>",
        f"<p>{escape(data['since'] or 'all time')} to {escape(data['until'] or 'now')}, "
        f"by {escape(data['period'])}; organisations in view: "
        f"{escape(', '.join(data['organisations']))}. "
        "Export: <a href='/api/dashboard.csv'>CSV</a>, <a href='/api/dashboard'>JSON</a>.</p>",
        f"<h2>{t['studies']:,} studies analysed, {t['flagged']:,} with signs flagged "
        f"({t['urgent']:,} urgent)</h2>",
        _chart("Studies and signs flagged per period", act["by_period"], "period"),
        _chart("Per organisation", act["by_organisation"], "organisation"),
    ]
    for key, label in (
        ("region", "Region"),
        ("organisation", "Organisation"),
        ("study_type", "Study type"),
        ("algorithm", "Algorithm"),
    ):
        parts.append(f"<h3>By {label.lower()}</h3>")
        parts.append(
            table(
                [label, "studies", "flagged", "urgent"],
                [[r[key], r["studies"], r["flagged"], r["urgent"]] for r in act[f"by_{key}"]],
            )
        )
    parts.append(f"<h2>Turnaround (seconds, last {data['turnaround_days']:g} days)</h2>")
    parts.append(
        table(
            ["stage", "studies", "median", "p95", "max"],
            [
                [stage.replace("_", " "), q["n"], q["median"], q["p95"], q["max"]]
                for stage, q in data["turnaround_s"].items()
            ],
        )
    )
    parts.append("<h2>Quality status per algorithm</h2>")
    parts.append(
        table(
            [
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
            [
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
        )
    )
    parts.append("<h2>Open alerts</h2>")
    parts.append(
        table(
            ["raised", "kind", "severity", "algorithm", "message"],
            [
                [a["created_at"], a["kind"], a["severity"], a["algorithm"], a["message"]]
                for a in data["alerts"]
            ],
        )
    )
    return page("Radsight dashboard", "\n".join(p for p in parts if p))


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
