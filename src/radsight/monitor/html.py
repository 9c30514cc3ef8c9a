"""The calibration test report: a page of the page system (:mod:`radsight.page_system`).

The report is written once, when the test ends, to the object store (served at
``/api/evaluations/{id}/report.html``) and by ``radsight evaluate --out``. Its plots
are PNG data URIs; its stylesheet is the web app's ``/static/app.css``.
"""

from __future__ import annotations

from typing import Any

from radsight.monitor import charts
from radsight.page_system import render_page


def _ci(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    lo, hi = e.get("lower"), e.get("upper")
    return f"{e['value']:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None else f"{e['value']:.3f}"


def report_tables(summary: dict) -> list[dict[str, Any]]:
    """The report's tables, in page order (the headline table only when AUROC was measured).

    Parameters
    ----------
    summary
        What :func:`radsight.monitor.calibration.summarise` returns, or evidence a package
        ships in its shape (figures it lacks are left out).

    Returns
    -------
    list of dict
        ``{"id", "heading", "head", "rows"}`` per table; ``None`` cells show as "-".
    """
    tables = []
    if "auroc" in summary:
        op = summary.get("at_threshold") or {}
        rows = [
            ["AUROC", _ci(summary["auroc"]), "DeLong"],
            *[
                [k, _ci(op[k]), "Wilson"]
                for k in ("sensitivity", "specificity", "ppv", "npv")
                if k in op
            ],
        ]
        if all(k in op for k in ("tp", "fp", "tn", "fn")):
            rows.append(
                ["TP / FP / TN / FN", f"{op['tp']} / {op['fp']} / {op['tn']} / {op['fn']}", ""]
            )
        tables.append(
            {
                "id": "headline",
                "heading": "Headline figures",
                "head": ["figure", "value (95% CI)", "method"],
                "rows": rows,
            }
        )
    if "localisation" in summary:
        tables.append(localisation_table(summary["localisation"]))
    tables.append(
        {
            "id": "subgroups",
            "heading": "Subgroups",
            "head": [
                "group",
                "value",
                "studies",
                "positives",
                "AUROC (95% CI)",
                "sensitivity",
                "specificity",
            ],
            "rows": [
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
        }
    )
    t = summary.get("time_per_study_s")
    if t:
        tables.append(
            {
                "id": "time-per-study",
                "heading": "Time per study",
                "head": ["mean s", "median s", "p95 s", "total s"],
                "rows": [[t["mean"], t["median"], t["p95"], t["total"]]],
            }
        )
    if summary.get("not_analysed"):
        tables.append(
            {
                "id": "not-analysed",
                "heading": "Not analysed",
                "head": ["case", "reason"],
                "rows": [[r["case"], r["reason"]] for r in summary["not_analysed"]],
            }
        )
    return tables


def localisation_table(loc: dict) -> dict[str, Any]:
    """Pointing game, the FROC summary and the marks at the thresholds in force (a shipped
    evidence file may give the pointing game alone)."""
    pg = loc["pointing_game"]
    rows: list[list[Any]] = [
        [f"pointing game ({pg['n']} positives with regions)", _ci(pg), "Wilson"]
    ]
    froc = loc.get("froc")
    if froc:
        boot = froc["bootstrap"]
        method = f"case bootstrap, {boot['resamples']} resamples, seed {boot['seed']}"
        op = froc["at_threshold"]
        rows += [
            *[
                [
                    f"lesion sensitivity at {r['fp_per_case']:g} FP per case",
                    _ci(r["sensitivity"]),
                    method,
                ]
                for r in froc["at_fp_rates"]
            ],
            [
                "lesion sensitivity, marks at the thresholds in force",
                _ci(op["sensitivity"]),
                method,
            ],
            ["FP marks per case, at the thresholds in force", _ci(op["fp_per_case"]), method],
            ["lesions / cases", f"{froc['lesions']} / {froc['cases']}", ""],
        ]
    return {
        "id": "localisation",
        "heading": "Localisation",
        "head": ["figure", "value (95% CI)", "method"],
        "rows": rows,
    }


def evaluation_report(summary: dict, evaluation_id: int | None = None) -> str:
    """The calibration test report as an HTML page (``evaluation_report.html``)."""
    a = summary["algorithm"]
    # evidence a package ships may carry only some figures (a model card's, say)
    plots = []
    if "roc" in summary:
        plots.append({"title": "ROC curve", "src": charts.data_uri(charts.roc_png(summary))})
    if (summary.get("calibration") or {}).get("bins"):
        plots.append(
            {"title": "calibration curve", "src": charts.data_uri(charts.calibration_png(summary))}
        )
    localisation_plots = []
    if "froc" in summary.get("localisation", {}):
        localisation_plots = [
            {"title": "FROC curve", "src": charts.data_uri(charts.froc_png(summary))}
        ]
    return render_page(
        "evaluation_report.html",
        title=f"Calibration test: {a['name']} {a['version']} on {summary['reference']}",
        evaluation_id=evaluation_id,
        summary=summary,
        tables=report_tables(summary),
        plots=plots,
        localisation_plots=localisation_plots,
    )
