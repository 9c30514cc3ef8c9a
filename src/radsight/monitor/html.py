"""Self-contained HTML pages (plots embedded as data URIs; no scripts, no CDN)."""

from __future__ import annotations

from html import escape
from typing import Any

from radsight.monitor import charts

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:0.9em}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
.pass{color:#1e7d32;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.warn{background:#fff8e1;border-left:4px solid #f9a825;padding:4px 8px;margin:4px 0}
img{border:1px solid #ddd;margin:4px}
"""


def _ci(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    lo, hi = e.get("lower"), e.get("upper")
    return f"{e['value']:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None else f"{e['value']:.3f}"


def table(head: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{escape(str(c))}</th>" for c in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('-' if c is None else str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def evaluation_report(summary: dict, evaluation_id: int | None = None) -> str:
    a = summary["algorithm"]
    title = f"Calibration test: {a['name']} {a['version']} on {summary['reference']}"
    verdict = (
        "<span class='pass'>PASSED</span>"
        if summary.get("passed")
        else "<span class='fail'>FAILED</span>"
    )
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p>Evaluation {evaluation_id or ''}: {verdict}. "
        f"{summary['num_studies']} studies ({summary['positives']} positive, "
        f"{summary['negatives']} negative analysed; "
        f"{summary['num_not_analysed']} not analysed).</p>",
    ]
    parts += [f"<div class='warn'>{escape(w)}</div>" for w in summary.get("warnings", [])]
    parts += [f"<div class='warn fail'>{escape(f)}</div>" for f in summary.get("failures", [])]
    if "auroc" in summary:
        op = summary["at_threshold"]
        parts.append("<h2>Headline figures</h2>")
        parts.append(
            table(
                ["figure", "value (95% CI)", "method"],
                [
                    ["AUROC", _ci(summary["auroc"]), "DeLong"],
                    *[
                        [k, _ci(op[k]), "Wilson"]
                        for k in ("sensitivity", "specificity", "ppv", "npv")
                    ],
                    ["TP / FP / TN / FN", f"{op['tp']} / {op['fp']} / {op['tn']} / {op['fn']}", ""],
                ],
            )
        )
        parts.append(
            "<p>Operating thresholds in force: "
            + escape(", ".join(f"{k} = {v}" for k, v in summary["thresholds"].items()))
            + "; acceptance bar AUROC &ge; "
            + f"{summary['bars']['min_auroc']:.2f}</p>"
        )
        parts.append(f"<img alt='ROC curve' src='{charts.data_uri(charts.roc_png(summary))}'>")
        parts.append(
            f"<img alt='calibration curve' "
            f"src='{charts.data_uri(charts.calibration_png(summary))}'>"
        )
    parts.append("<h2>Subgroups</h2>")
    parts.append(
        table(
            [
                "group",
                "value",
                "studies",
                "positives",
                "AUROC (95% CI)",
                "sensitivity",
                "specificity",
            ],
            [
                [
                    r["group"],
                    r["value"],
                    r["n"],
                    r["positives"],
                    _ci(r["auroc"]),
                    _ci(r["sensitivity"]),
                    _ci(r["specificity"]),
                ]
                for r in summary.get("subgroups", [])
            ],
        )
    )
    t = summary["time_per_study_s"]
    parts.append("<h2>Time per study</h2>")
    parts.append(
        table(
            ["mean s", "median s", "p95 s", "total s"],
            [[t["mean"], t["median"], t["p95"], t["total"]]],
        )
    )
    if summary.get("not_analysed"):
        parts.append("<h2>Not analysed</h2>")
        parts.append(
            table(["case", "reason"], [[r["case"], r["reason"]] for r in summary["not_analysed"]])
        )
    return page(title, "\n".join(parts))
