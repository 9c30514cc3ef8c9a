"""A calibration test: one algorithm version over a labelled reference set.

Each case takes the path of an analysis job (:func:`radsight.pipeline.inputs.study_input_from`,
``algorithm.check``, ``algorithm.analyse``, :meth:`AnalysisReport.from_analysis` with the
thresholds in force); :func:`summarise` turns the scores into the figures of the report:
AUROC with its DeLong 95 % CI, sensitivity / specificity / PPV / NPV at the operating
threshold with Wilson CIs, ROC and calibration curves, subgroups, time per study,
localisation where the set outlines its lesions (pointing game and FROC:
:mod:`radsight.monitor.localisation`), and pass / fail against the acceptance bars.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from radsight.admission import AcceptanceRule
from radsight.algorithms.contract import Algorithm, Analysis
from radsight.errors import InstanceRejected, InvalidInput, NotAnalysable
from radsight.monitor import metrics
from radsight.monitor.localisation import LocalisedCase, Mark, ReferenceRegion, localisation
from radsight.monitor.reference import ReferenceCase, age_band
from radsight.operating_points import region_probability
from radsight.pipeline.inputs import study_input_from
from radsight.results.report import AnalysisReport

#: the acceptance bars of a calibration test are the admission's acceptance rule (one home)
Bars = AcceptanceRule
DEFAULT_BARS = Bars()


@dataclass
class CaseResult:
    case_id: str
    label: int
    score: float | None = None
    verdict: str = ""
    refused: str = ""
    seconds: float = 0.0
    subgroups: dict[str, str] = field(default_factory=dict)
    #: input characteristics for drift baselines
    features: dict[str, object] = field(default_factory=dict)
    #: the reference set's lesion outlines for this case (``regions.csv``)
    regions: tuple[ReferenceRegion, ...] = ()
    #: every candidate region of the located findings, with its probability
    marks: tuple[Mark, ...] = ()


def marks_of(report: AnalysisReport, analysis: Analysis) -> tuple[Mark, ...]:
    """The candidate regions of the report's located findings as marks, in the algorithm's
    order, each flagged when the report keeps it at the operating point in force."""
    candidates = {f.key: f.regions for f in analysis.findings}
    return tuple(
        Mark.of(
            finding.spec.key,
            region_probability(region, finding.probability),
            region,
            marked=region in finding.regions,
        )
        for finding in report.findings
        if finding.spec.located
        for region in candidates.get(finding.spec.key, ())
    )


def input_features(datasets: list) -> dict[str, object]:  # type: ignore[type-arg]
    """What drift monitoring compares: manufacturer, pixel spacing, image size, age."""
    ds = datasets[0]
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    age = str(ds.get("PatientAge", "") or "")
    years: float | None = None
    if age[:-1].isdigit() and age.endswith("Y"):
        years = float(age[:-1])
    return {
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "pixel_spacing": float(spacing[0]) if spacing else None,
        "rows": int(ds.get("Rows", 0) or 0),
        "columns": int(ds.get("Columns", 0) or 0),
        "patient_age": years,
    }


def run_cases(
    algorithm: Algorithm,
    cases: Iterable[ReferenceCase],
    thresholds: dict[str, float] | None = None,
    *,
    study_type: str | None = None,
    progress: bool = True,
    total: int | None = None,
    max_frame_pixels: int,
    max_instance_pixels: int,
) -> list[CaseResult]:
    """Analyse every case as a job would; a refused case is kept with its reason.

    ``max_frame_pixels`` and ``max_instance_pixels`` bound decoding as in a job (the
    settings of those names)."""
    study_type = study_type or algorithm.study_types[0]
    out = []
    bar = tqdm(
        cases,
        total=total,
        desc=f"{algorithm.name} {algorithm.version}",
        unit="study",
        disable=not progress,
    )
    for case in bar:
        res = CaseResult(
            case.case_id, case.label, subgroups=dict(case.subgroups), regions=case.regions
        )
        t0 = time.perf_counter()
        try:
            datasets = case.datasets(study_type)
            res.features = input_features(datasets)
            study = study_input_from(
                datasets,
                study_type,
                max_frame_pixels=max_frame_pixels,
                max_instance_pixels=max_instance_pixels,
            )
            algorithm.check(study)
            analysis = algorithm.analyse(study)
            report = AnalysisReport.from_analysis(algorithm, analysis, thresholds)
            res.score = report.study_score
            res.verdict = report.verdict
            res.marks = marks_of(report, analysis)
        except (NotAnalysable, InstanceRejected) as exc:
            res.refused = exc.message
        res.seconds = time.perf_counter() - t0
        if "age_band" not in res.subgroups and res.features.get("patient_age") is not None:
            res.subgroups["age_band"] = age_band(res.features["patient_age"])  # type: ignore[arg-type]
        out.append(res)
    return out


def _roc_json(labels: np.ndarray, scores: np.ndarray, max_points: int = 400) -> dict:
    fpr, tpr, thr = metrics.roc_points(labels, scores)
    if len(fpr) > max_points:  # keep the ends, thin the middle
        idx = np.unique(
            np.r_[0, np.linspace(0, len(fpr) - 1, max_points).astype(int), len(fpr) - 1]
        )
        fpr, tpr, thr = fpr[idx], tpr[idx], thr[idx]
    return {
        "fpr": [round(float(v), 5) for v in fpr],
        "tpr": [round(float(v), 5) for v in tpr],
        "thresholds": [None if math.isinf(v) else round(float(v), 6) for v in thr],
    }


def summarise(
    algorithm_name: str,
    algorithm_version: str,
    reference_name: str,
    results: list[CaseResult],
    thresholds: dict[str, float],
    bars: Bars = DEFAULT_BARS,
) -> dict:
    """The report's figures as JSON (stored on the evaluation row)."""
    done = [r for r in results if r.score is not None]
    refused = [r for r in results if r.score is None]
    labels = np.array([r.label for r in done], dtype=int)
    scores = np.array([r.score for r in done], dtype=float)
    called = np.array([r.verdict == "abnormal" for r in done], dtype=bool)
    n_pos, n_neg = int(labels.sum()), int(len(labels) - labels.sum())
    warnings_, failures = [], []
    if len(results) < bars.min_studies:
        warnings_.append(
            f"the reference set has {len(results)} studies; at least {bars.min_studies} are needed "
            "for a conclusive test"
        )
    n_all = max(1, len(results))
    for name, n in (
        ("positive", sum(r.label for r in results)),
        ("negative", sum(1 - r.label for r in results)),
    ):
        if n / n_all < bars.min_class_fraction:
            warnings_.append(
                f"only {n / n_all:.1%} of the studies are {name}; at least "
                f"{bars.min_class_fraction:.0%} are needed in each class"
            )
    if refused:
        warnings_.append(
            f"{len(refused)} of {len(results)} studies were not analysed and are left out "
            "of the figures"
        )
    summary: dict = {
        "algorithm": {"name": algorithm_name, "version": algorithm_version},
        "reference": reference_name,
        "num_studies": len(results),
        "num_analysed": len(done),
        "num_not_analysed": len(refused),
        "not_analysed": [{"case": r.case_id, "reason": r.refused} for r in refused[:50]],
        "positives": n_pos,
        "negatives": n_neg,
        "thresholds": thresholds,
        "bars": asdict(bars),
    }
    if n_pos and n_neg:
        auc = metrics.auroc_ci(labels, scores)
        conf = metrics.Confusion.of(labels.astype(bool), called)
        cal = metrics.calibration_curve(labels, np.clip(scores, 0, 1))
        summary.update(
            auroc=auc.to_json(),
            at_threshold=conf.to_json(),
            roc=_roc_json(labels, scores),
            calibration={
                "bins": [list(b) for b in cal.bins],
                "ece": round(cal.ece, 4),
                "brier": round(cal.brier, 4),
            },
        )
        if auc.value < bars.min_auroc:
            failures.append(f"AUROC {auc.value:.3f} is below the bar {bars.min_auroc:.2f}")
    else:
        failures.append("the analysed studies do not include both classes: AUROC is undefined")
    located = localisation_of(done)
    if located is not None:
        summary["localisation"] = located
    if bars.min_pointing_game is not None:
        pg = located["pointing_game"]["value"] if located else None
        if pg is None:
            failures.append(
                "the acceptance bar has a pointing game but the reference set outlines no "
                "lesions of analysed positives (regions.csv)"
            )
        elif pg < bars.min_pointing_game:
            failures.append(f"pointing game {pg:.3f} is below the bar {bars.min_pointing_game:.2f}")
    passed = not failures
    summary["subgroups"] = subgroup_table(done)
    secs = np.array([r.seconds for r in results], dtype=float)
    summary["time_per_study_s"] = {
        "mean": round(float(secs.mean()), 4) if len(secs) else None,
        "median": round(float(np.median(secs)), 4) if len(secs) else None,
        "p95": round(float(np.percentile(secs, 95)), 4) if len(secs) else None,
        "total": round(float(secs.sum()), 2),
    }
    summary["warnings"] = warnings_
    summary["failures"] = failures
    summary["passed"] = passed
    summary["cases"] = [
        {
            "id": r.case_id,
            "label": r.label,
            "score": None if r.score is None else round(r.score, 6),
            "verdict": r.verdict,
            "seconds": round(r.seconds, 4),
            "features": r.features,
        }
        for r in results
    ]
    return summary


def localisation_of(done: list[CaseResult]) -> dict | None:
    """Pointing game and FROC of the analysed cases, or None when no positive has regions.

    When a reference region names a finding, only the named findings' marks count."""
    named = sorted({r.finding for c in done for r in c.regions if r.finding})
    return localisation([LocalisedCase(c.label, c.regions, c.marks) for c in done], named)


def subgroup_table(done: list[CaseResult]) -> list[dict]:
    names: list[str] = []
    for r in done:
        names += [k for k in r.subgroups if k not in names]
    rows = []
    for name in names:
        values = sorted({r.subgroups.get(name, "") for r in done})
        for value in values:
            part = [r for r in done if r.subgroups.get(name, "") == value]
            y = np.array([r.label for r in part], dtype=int)
            x = np.array([r.score for r in part], dtype=float)
            conf = metrics.Confusion.of(y.astype(bool), [r.verdict == "abnormal" for r in part])
            auc = metrics.auroc_ci(y, x) if 0 < y.sum() < len(y) else metrics.NAN
            rows.append(
                {
                    "group": name,
                    "value": value or "(unknown)",
                    "n": len(part),
                    "positives": int(y.sum()),
                    "auroc": auc.to_json(),
                    "sensitivity": conf.sensitivity().to_json(),
                    "specificity": conf.specificity().to_json(),
                }
            )
    return rows


def threshold_performance(summary: dict, threshold: float) -> dict:
    """How a study-score threshold performs on an evaluation's cases (recalibration)."""
    cases = [c for c in summary.get("cases", []) if c.get("score") is not None]
    if not cases:
        raise InvalidInput("the evaluation has no analysed cases")
    y = np.array([c["label"] for c in cases], dtype=int)
    x = np.array([c["score"] for c in cases], dtype=float)
    return {"threshold": threshold, **metrics.Confusion.at(y, x, threshold).to_json()}


def labels_and_scores(summary: dict) -> tuple[np.ndarray, np.ndarray]:
    cases = [c for c in summary.get("cases", []) if c.get("score") is not None]
    return (
        np.array([c["label"] for c in cases], dtype=int),
        np.array([c["score"] for c in cases], dtype=float),
    )
